//! The session: what every torrent of one process shares (one listening
//! port whose connections are routed to their torrent by the handshake's
//! info-hash, the DHT node, local discovery, the global rate limits), and
//! the life of one torrent in it (`run`: check what is on disk, claim the
//! folder, run the torrent with its trackers and discovery, stop cleanly),
//! and the one way a magnet link becomes a torrent (`magnet`).
//!
//! `shoal download` runs one torrent in a session of its own; `shoal
//! serve` runs many in one (see `service`). Either way the session starts
//! its engine parts itself (the DHT node, local discovery); its owner only
//! says which, and watches.
//! The session also keeps the listening port open from outside
//! (`portmap`: UPnP, NAT-PMP/PCP), and its owner calls `close` at the end
//! so the router forgets the mapping.

pub mod portmap;

mod listen;
mod magnet;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::discovery::dht::{self, Dht};
use crate::discovery::lsd::Lsd;
use crate::limit::{ConnectionCap, RateLimit};
use crate::peer::transport::{Mode, Net};
use crate::peer::Shared;
use crate::torrent::{Outcome, PeerSource, Progress};

pub use magnet::{ResolveError, Resolved};
pub use run::check_data;

/// What the torrents of a session share, set when it starts.
#[derive(Default)]
pub struct SessionConfig {
    /// Listening port; None: the first free of 6881–6889, else any.
    pub port: Option<u16>,
    /// The DHT node to start (None: no DHT). Without a port of its own it
    /// takes the number of `port` when one was given (a free one if that
    /// is taken), else a free one.
    pub dht: Option<dht::Config>,
    /// Local peer discovery (BEP 14).
    pub lsd: bool,
    /// Bytes per second for all torrents together.
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    /// Connections of all torrents together, at most.
    pub max_connections: Option<usize>,
    /// Which connections are encrypted (MSE), both ways.
    pub encryption: crate::peer::mse::Policy,
    /// Ask the router to forward the port (UPnP, NAT-PMP/PCP), and where
    /// to look for it; None: off (`--no-port-mapping`).
    pub port_mapping: Option<portmap::Config>,
    /// TCP, uTP or both (`--transport`), both ways.
    pub transport: Mode,
    /// Hole punching (BEP 55) through peers connected to both, and relaying
    /// for others; needs uTP. Off: `--no-holepunch`.
    pub holepunch: bool,
}

/// One torrent's run in a session: where its data goes, where its first
/// peers come from, what of it is wanted, and its knobs.
#[derive(Clone)]
pub struct TorrentOptions {
    pub dir: PathBuf,
    /// The trusted folder `dir` lies in (the service's download root):
    /// `dir` and everything below it are reached from there without
    /// following links (`store::confine`). None: `dir` itself.
    pub base: Option<PathBuf>,
    /// Peers given by hand (`--peer`).
    pub peers: Vec<SocketAddr>,
    /// Peers a magnet's metadata phase found, with where from.
    pub learned: Vec<(SocketAddr, PeerSource)>,
    /// `seed`: the data must already be complete (served read-only).
    pub require_complete: bool,
    /// Replace files in the way that shoal did not create (`--overwrite`).
    pub overwrite: bool,
    /// The files to download (`--only`, `--select`); None: all.
    pub selection: Option<Vec<bool>>,
    /// Files whose pieces are asked for first (the service's `high`).
    pub high: Option<Vec<bool>>,
    /// Give up when an incomplete download got no data for this long.
    pub stall_timeout: Option<Duration>,
    /// The torrent's own knobs, as given on the command line or by the
    /// service.
    pub torrent: crate::torrent::Options,
    /// New pieces in index order instead of rarest first (`--sequential`).
    pub sequential: bool,
    /// Streaming readers, whose next pieces are asked for first.
    pub readers: Option<Arc<crate::torrent::deadline::Readers>>,
    /// The last run's fast-resume record: trusted instead of hashing the
    /// data when every file is as it recorded (`store::resume`).
    pub resume: Option<crate::store::resume::Resume>,
    /// Complete at its start: hold no lock on the folder until it writes
    /// (`Store::lock_on_write`). The service's thousand seeds would
    /// otherwise hold a thousand descriptors; a lone `download` keeps the
    /// lock, so a second process on the same files is refused at once.
    pub lazy_lock: bool,
}

/// How the start-up checks of a session's runs went, since it started.
#[derive(Default, Debug)]
pub struct CheckStats {
    /// Bytes hashed by start-up checks.
    pub hashed: AtomicU64,
    /// Runs that trusted their fast-resume record instead of hashing.
    pub trusted: AtomicU64,
    /// Runs whose record was not trusted (files changed): checked in full.
    pub distrusted: AtomicU64,
}

/// How the owner of a running torrent steers and watches it.
pub struct Control {
    /// Set to true to stop the torrent (it announces `stopped` and ends).
    pub stop: watch::Receiver<bool>,
    /// Where the torrent publishes its progress, about ten times a second.
    pub progress: watch::Sender<Progress>,
    /// The running torrent's shared state (its piece bitfield, counters),
    /// once the check of its data is over; None again when it ends.
    pub shared: watch::Sender<Option<Arc<Shared>>>,
    /// Bytes checked so far by the check of the data on disk.
    pub checked: Arc<AtomicU64>,
    /// What happens once, for whoever shows it (the engine never calls
    /// the screen).
    pub notices: Option<mpsc::UnboundedSender<Notice>>,
}

/// Things a torrent's run tells its owner once, in this order.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Hashing `total` bytes found on disk; `Control::checked` counts.
    Checking { total: u64 },
    /// The check is over.
    Checked,
    /// Verified data was found: a resumed download.
    Resuming {
        have_bytes: u64,
        total: u64,
        pieces_have: usize,
        piece_count: u32,
    },
    /// The data is checked and the folder claimed: the torrent takes peers
    /// and publishes progress from now on.
    Ready,
}

impl Control {
    /// A control nobody else watches, stopped by `stop`.
    pub fn new(stop: watch::Receiver<bool>) -> Control {
        Control {
            stop,
            progress: watch::channel(Progress::default()).0,
            shared: watch::channel(None).0,
            checked: Arc::default(),
            notices: None,
        }
    }
}

/// What a finished run reports.
pub struct Summary {
    pub outcome: Outcome,
    pub complete: bool,
    pub progress: Progress,
    pub elapsed: Duration,
    /// The signal that stopped the run (SIGINT, SIGTERM), if one did.
    pub signal: Option<i32>,
    /// Why the run gave up (`--stall-timeout`), as one line.
    pub stalled: Option<String>,
}

/// The resources a process's torrents share. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    ipv4: bool,
    ipv6: bool,
    routes: listen::Routes,
    dht: Option<Dht>,
    lsd: Option<Lsd>,
    upload_limit: Arc<RateLimit>,
    download_limit: Arc<RateLimit>,
    connections: Arc<ConnectionCap>,
    encryption: crate::peer::mse::Policy,
    net: Arc<Net>,
    accept: Vec<tokio::task::AbortHandle>,
    reach: Arc<crate::reach::Reach>,
    portmap: Option<portmap::PortMap>,
    holepunch: bool,
    checks: CheckStats,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for a in &self.accept {
            a.abort();
        }
    }
}

/// uTP connections at once when the session has no `--max-connections`.
const UTP_CONNECTIONS: usize = 1024;

impl Session {
    /// Binds the listening port, starts the DHT node and local discovery
    /// if asked, and starts taking connections.
    pub async fn start(cfg: SessionConfig) -> Result<Session> {
        let dht = match cfg.dht {
            Some(d) => Some(start_dht(d, cfg.port, cfg.transport)?),
            None => None,
        };
        let lsd = cfg.lsd.then(|| {
            Lsd::start()
                .inspect_err(|e| tracing::info!("no local discovery: {e}"))
                .ok()
        });
        // Bound last: a peer that finds the port open finds the torrents
        // about to be routed, not still waiting for the DHT to start.
        // The uTP table holds handshaking connections too: some room
        // above the cap on established ones.
        let utp_cap = cfg
            .max_connections
            .map_or(UTP_CONNECTIONS, |m| m.saturating_add(64));
        let (listener, utp) =
            listen::bind(cfg.port, cfg.transport.utp().then_some(utp_cap)).await?;
        let local = listener.local_addr()?;
        let dual = listen::listen_dual_stack(&listener);
        let routes = listen::Routes::default();
        let ctx = listen::AcceptCtx {
            routes: routes.clone(),
            encryption: cfg.encryption,
        };
        let mut accept = Vec::new();
        // `--transport utp` keeps no TCP listener: a TCP dial is refused
        // at once instead of waiting in a backlog nobody reads.
        if cfg.transport.tcp() {
            accept.push(tokio::spawn(listen::accept_loop(listener, ctx.clone())).abort_handle());
        }
        let utp = utp.map(Arc::new);
        if let Some(u) = &utp {
            accept.push(tokio::spawn(listen::utp_accept_loop(u.clone(), ctx)).abort_handle());
        }
        let net = Arc::new(Net::new(cfg.transport, utp));
        let reach = Arc::new(crate::reach::Reach::default());
        if local.is_ipv6() {
            reach.set_ipv6(listen::global_ipv6());
        }
        // Both the TCP and the UDP side are mapped: uTP listens on the
        // UDP side of the same port.
        let portmap = cfg
            .port_mapping
            .map(|c| portmap::PortMap::start(local.port(), c, reach.clone()));
        Ok(Session {
            inner: Arc::new(Inner {
                port: local.port(),
                ipv4: dual || !local.is_ipv6(),
                ipv6: local.is_ipv6(),
                routes,
                dht,
                lsd: lsd.flatten(),
                upload_limit: Arc::new(RateLimit::with(cfg.upload_limit)),
                download_limit: Arc::new(RateLimit::with(cfg.download_limit)),
                connections: Arc::new(ConnectionCap::new(cfg.max_connections)),
                encryption: cfg.encryption,
                net,
                accept,
                reach,
                portmap,
                holepunch: cfg.holepunch && cfg.transport.utp(),
                checks: CheckStats::default(),
            }),
        })
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Torrents whose connections the session routes now (running ones).
    pub(crate) fn torrents(&self) -> usize {
        self.inner.routes.lock().map_or(0, |r| r.len())
    }

    /// How the start-up checks went: bytes hashed, records trusted.
    pub fn check_stats(&self) -> &CheckStats {
        &self.inner.checks
    }

    /// Which families the port takes: (IPv4, IPv6).
    pub fn families(&self) -> (bool, bool) {
        (self.inner.ipv4, self.inner.ipv6)
    }

    /// Whether the session has a DHT node.
    pub fn has_dht(&self) -> bool {
        self.inner.dht.is_some()
    }

    /// Which connections are encrypted (`--encryption`).
    pub fn encryption(&self) -> crate::peer::mse::Policy {
        self.inner.encryption
    }

    /// The session's DHT node, for what it can tell (its routing table's
    /// size for the metrics).
    pub fn dht(&self) -> Option<&Dht> {
        self.inner.dht.as_ref()
    }

    /// How peers are dialled (TCP, uTP): the magnet phase dials with it too.
    pub fn net(&self) -> &Arc<Net> {
        &self.inner.net
    }

    /// The transports peers can reach us over, and dial with.
    pub fn transport(&self) -> Mode {
        self.inner.net.mode()
    }

    pub fn upload_limit(&self) -> &RateLimit {
        &self.inner.upload_limit
    }

    pub fn download_limit(&self) -> &RateLimit {
        &self.inner.download_limit
    }

    /// What the port mapping is doing (`Off` when turned off); watch it
    /// for changes.
    pub fn port_mapping(&self) -> watch::Receiver<portmap::MappingStatus> {
        match &self.inner.portmap {
            Some(p) => p.status(),
            None => watch::channel(portmap::MappingStatus::Off).1,
        }
    }

    /// How others reach this session (the mapped external address).
    pub fn reach(&self) -> &Arc<crate::reach::Reach> {
        &self.inner.reach
    }

    /// Ends the session's ties to the outside before the process exits:
    /// the router's mappings are removed (a few seconds at most). The
    /// owner calls it once its torrents have stopped.
    pub async fn close(&self) {
        if let Some(p) = &self.inner.portmap {
            p.close().await;
        }
    }

    /// "IPv4+IPv6", "IPv6 only" or "IPv4 only".
    pub fn families_label(&self) -> &'static str {
        match (self.inner.ipv4, self.inner.ipv6) {
            (true, true) => "IPv4+IPv6",
            (false, true) => "IPv6 only",
            _ => "IPv4 only",
        }
    }

    /// Gives uTP connections up to `within` to send what was queued on
    /// them before the process exits: TCP's queued bytes go on from the
    /// kernel, uTP's would be dropped with the process.
    pub async fn flush_uploads(&self, within: std::time::Duration) -> bool {
        match self.inner.net.utp() {
            Some(utp) => utp.flushed(within).await,
            None => true,
        }
    }

    /// Keeps what is worth keeping for the next run (the DHT's nodes).
    pub async fn save(&self) {
        if let Some(dht) = &self.inner.dht {
            dht.save().await;
        }
    }
}

/// Starts the process's DHT node: on its own port (`--dht-port`); else,
/// given the session's port P, on UDP P+1 when uTP is on (uTP has the UDP
/// side of P: the DHT is a separate node with its own socket, see
/// docs/design.md) or on UDP P itself with `--transport tcp` (another free
/// port if that one is taken); else on a free port.
fn start_dht(cfg: dht::Config, port: Option<u16>, transport: Mode) -> Result<Dht> {
    let port = match port {
        Some(p) if transport.utp() => p.checked_add(1),
        p => p,
    };
    let dht = match (cfg.port, port) {
        (None, Some(p)) => match Dht::start(dht::Config {
            port: Some(p),
            ..cfg.clone()
        }) {
            Err(dht::DhtError::Bind { .. }) => Dht::start(cfg)?,
            r => r?,
        },
        _ => Dht::start(cfg)?,
    };
    Ok(dht)
}

/// Resolves once `moved` of the watched value has stayed the same for
/// `limit`, with the value then. `moved` is what grows while data comes
/// in; None (a complete download) never stalls. The one clock behind
/// `--stall-timeout`, for the download and for a magnet's metadata.
pub async fn wait_stalled<T: Clone, K: PartialEq>(
    rx: &mut watch::Receiver<T>,
    limit: Duration,
    moved: impl Fn(&T) -> Option<K>,
) -> T {
    let mut last = None;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let v = rx.borrow_and_update().clone();
        let now = tokio::time::Instant::now();
        let key = moved(&v);
        if key.is_none() || key != last {
            last = key;
            since = now;
        } else if now.duration_since(since) >= limit {
            return v;
        }
    }
}

/// Waits for Ctrl-C or SIGTERM and says which (its number).
pub async fn wait_for_signal() -> i32 {
    Signals::new().next().await
}

/// Ctrl-C and SIGTERM, caught from the moment this is made (not from the
/// first wait): a run that says it started can be stopped cleanly at once.
/// Needs a tokio runtime.
pub struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next of them to come, by number.
    pub async fn next(&mut self) -> i32 {
        async fn on(s: &mut Option<tokio::signal::unix::Signal>) {
            let got = match s {
                Some(s) => s.recv().await,
                None => None,
            };
            // None: no handler, or the runtime is going away; no signal.
            if got.is_none() {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            _ = on(&mut self.int) => libc::SIGINT,
            _ = on(&mut self.term) => libc::SIGTERM,
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}
