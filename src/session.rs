//! The session: what every torrent of one process shares (one listening
//! port whose connections are routed to their torrent by the handshake's
//! info-hash, the DHT node, local discovery, the global rate limits), and
//! the life of one torrent in it: check what is on disk, claim the folder,
//! run the coordinator with its trackers and discovery, and stop cleanly
//! (stopped announce, data left resumable).
//!
//! `shoal download` runs one torrent in a session of its own; `shoal
//! serve` runs many in one (see `service`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bitfield::{AtomicBitfield, Bitfield};
use crate::discovery::tracker::TrackerList;
use crate::discovery::{announce_loop, dht_loop, lsd_loop};
use crate::limit::{ConnectionCap, RateLimit};
use crate::metainfo::Metainfo;
use crate::peer::{new_peer_id, read_incoming_handshake, Shared};
use crate::store::confine::Root;
use crate::store::ownership;
use crate::store::{hash_threads, Layout, PieceCheck, Store, StoreError};
use crate::torrent::{Config, Event, Outcome, PeerSource, Progress, Torrent};
use crate::units::human_duration;

/// What the torrents of a session share, set when it starts.
#[derive(Default)]
pub struct SessionConfig {
    /// Listening port; None: the first free of 6881–6889, else any.
    pub port: Option<u16>,
    pub dht: Option<crate::discovery::dht::Dht>,
    pub lsd: Option<crate::discovery::lsd::Lsd>,
    /// Bytes per second for all torrents together.
    pub upload_limit: Option<u64>,
    pub download_limit: Option<u64>,
    /// Connections of all torrents together, at most.
    pub max_connections: Option<usize>,
    /// Which connections are encrypted (MSE), both ways.
    pub encryption: crate::peer::mse::Policy,
}

/// The settings of one torrent in a session.
#[derive(Clone)]
pub struct TorrentOptions {
    pub dir: PathBuf,
    /// The trusted folder `dir` lies in (the service's download root):
    /// `dir` and everything below it are reached from there without
    /// following links (`store::confine`). None: `dir` itself.
    pub base: Option<PathBuf>,
    pub peers: Vec<SocketAddr>,
    pub keep_seeding: bool,
    pub require_complete: bool,
    pub max_peers: usize,
    pub overwrite: bool,
    pub pex: bool,
    pub selection: Option<Vec<bool>>,
    /// Files whose pieces are asked for first (the service's `high`).
    pub high: Option<Vec<bool>>,
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<Duration>,
    pub stall_timeout: Option<Duration>,
    pub learned: Vec<(SocketAddr, PeerSource)>,
    /// Fetch from the torrent's web seeds (BEP 19 `url-list`), if any.
    pub web_seeds: bool,
    /// Super-seed (BEP 16) if the data is complete at the start.
    pub super_seed: bool,
    /// New pieces in index order instead of rarest first (`--sequential`).
    pub sequential: bool,
    /// Streaming readers, whose next pieces are asked for first.
    pub readers: Option<Arc<crate::torrent::deadline::Readers>>,
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

/// Connections the accept loop hands on, by info-hash.
type Routes = Arc<Mutex<HashMap<[u8; 20], mpsc::Sender<Event>>>>;

/// The resources a process's torrents share. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    port: u16,
    ipv4: bool,
    ipv6: bool,
    routes: Routes,
    dht: Option<crate::discovery::dht::Dht>,
    lsd: Option<crate::discovery::lsd::Lsd>,
    upload_limit: Arc<RateLimit>,
    download_limit: Arc<RateLimit>,
    connections: Arc<ConnectionCap>,
    encryption: crate::peer::mse::Policy,
    accept: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Session {
    /// Binds the listening port and starts taking connections.
    pub async fn start(cfg: SessionConfig) -> Result<Session> {
        let listener = bind(cfg.port).await?;
        let local = listener.local_addr()?;
        let dual = listen_dual_stack(&listener);
        let routes = Routes::default();
        let accept =
            tokio::spawn(accept_loop(listener, routes.clone(), cfg.encryption)).abort_handle();
        Ok(Session {
            inner: Arc::new(Inner {
                port: local.port(),
                ipv4: dual || !local.is_ipv6(),
                ipv6: local.is_ipv6(),
                routes,
                dht: cfg.dht,
                lsd: cfg.lsd,
                upload_limit: Arc::new(RateLimit::with(cfg.upload_limit)),
                download_limit: Arc::new(RateLimit::with(cfg.download_limit)),
                connections: Arc::new(ConnectionCap::new(cfg.max_connections)),
                encryption: cfg.encryption,
                accept,
            }),
        })
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Which families the port takes: (IPv4, IPv6).
    pub fn families(&self) -> (bool, bool) {
        (self.inner.ipv4, self.inner.ipv6)
    }

    pub fn dht(&self) -> Option<&crate::discovery::dht::Dht> {
        self.inner.dht.as_ref()
    }

    /// Which connections are encrypted: the magnet phase dials with it too.
    pub fn encryption(&self) -> crate::peer::mse::Policy {
        self.inner.encryption
    }

    pub fn upload_limit(&self) -> &RateLimit {
        &self.inner.upload_limit
    }

    pub fn download_limit(&self) -> &RateLimit {
        &self.inner.download_limit
    }

    /// "IPv4 and IPv6", "IPv6 only" or "IPv4 only".
    pub fn families_label(&self) -> &'static str {
        match (self.inner.ipv4, self.inner.ipv6) {
            (true, true) => "IPv4 and IPv6",
            (false, true) => "IPv6 only",
            _ => "IPv4 only",
        }
    }
}

/// Takes the route of a torrent out of the table when its run ends.
struct RouteGuard {
    routes: Routes,
    info_hashes: Vec<[u8; 20]>,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = self.routes.lock() {
            for h in &self.info_hashes {
                r.remove(h);
            }
        }
    }
}

/// Hashes what is already on disk, on all cores, so a restart fetches only
/// what is missing. Stops early (StoreError::Interrupted) once `cancel` is set.
fn initial_check(
    store: &Store,
    notices: &Option<mpsc::UnboundedSender<Notice>>,
    done: &AtomicU64,
    cancel: &AtomicBool,
) -> Result<Vec<PieceCheck>> {
    let count = store.layout().piece_count() as usize;
    if !store.any_file_on_disk() {
        return Ok(vec![PieceCheck::Missing; count]);
    }
    let notify = |n: Notice| {
        if let Some(tx) = notices {
            let _ = tx.send(n);
        }
    };
    notify(Notice::Checking {
        total: store.layout().total_length,
    });
    let checks = store.check_all_until(hash_threads(), done, cancel);
    notify(Notice::Checked);
    Ok(checks?)
}

fn have_of(checks: &[PieceCheck]) -> Bitfield {
    let mut have = Bitfield::new(checks.len());
    for (i, c) in checks.iter().enumerate() {
        if *c == PieceCheck::Good {
            have.set(i);
        }
    }
    have
}

/// Listens on IPv6 and IPv4 at once where the system allows (a `[::]`
/// socket also takes IPv4 connections on Linux), else on IPv4 only.
async fn bind_port(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await,
    }
}

async fn bind(port: Option<u16>) -> Result<TcpListener> {
    match port {
        Some(p) => bind_port(p)
            .await
            .with_context(|| format!("cannot listen on port {p}")),
        None => {
            for p in 6881..=6889 {
                if let Ok(l) = bind_port(p).await {
                    return Ok(l);
                }
            }
            Ok(bind_port(0).await?)
        }
    }
}

impl Session {
    /// Runs one torrent until it is complete (and done seeding, if asked
    /// to seed) or `ctl.stop` stops it.
    pub async fn run_torrent(
        &self,
        meta: Arc<Metainfo>,
        opts: TorrentOptions,
        ctl: Control,
    ) -> Result<Summary> {
        let started = std::time::Instant::now();
        let layout = Layout::from_metainfo(&meta);
        let count = meta.piece_count();
        let Control {
            stop: mut outer_stop,
            progress: progress_tx,
            shared: shared_tx,
            checked,
            notices,
        } = ctl;
        let notify = |n: Notice| {
            if let Some(tx) = &notices {
                let _ = tx.send(n);
            }
        };

        // The owner's stop, or `--stall-timeout`, stop the run the same
        // way; the check of the data on disk stops through `cancel`.
        let (stop_tx, stop_rx) = watch::channel(false);
        let cancel = Arc::new(AtomicBool::new(false));
        let stalled: Arc<Mutex<Option<String>>> = Arc::default();
        let (stall_tx, stall_rx) = oneshot::channel::<()>();
        let stopper = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    Ok(_) = outer_stop.wait_for(|s| *s) => {}
                    Ok(()) = stall_rx => {}
                    else => return,
                }
                cancel.store(true, Ordering::SeqCst);
                let _ = stop_tx.send(true);
                std::future::pending::<()>().await;
            })
        };
        let _stopper = AbortOnDrop(stopper.abort_handle());
        let interrupted = |progress: Progress| Summary {
            outcome: Outcome::Interrupted,
            complete: progress.complete,
            progress,
            elapsed: started.elapsed(),
            signal: None,
            stalled: stalled.lock().ok().and_then(|s| s.clone()),
        };
        // Everything on disk is checked through a read-only store first: a
        // download decides whether it may write into the folder (ownership)
        // before it creates or changes a single file.
        let root = match &opts.base {
            Some(base) => Root::under(base, &opts.dir).with_context(|| {
                format!("{} is not inside {}", opts.dir.display(), base.display())
            })?,
            None => Root::at(&opts.dir),
        };
        if !opts.require_complete {
            root.create_dirs(Path::new("")).map_err(|e| {
                if crate::store::confine::is_link_error(&e) {
                    anyhow::Error::new(StoreError::Symlink(opts.dir.clone()))
                } else {
                    anyhow::Error::new(e).context(format!("cannot create {}", opts.dir.display()))
                }
            })?;
        }
        // Files left out are never created; the bytes they share with wanted
        // pieces live in a sparse part file beside the ownership record.
        let skip = opts.selection.as_ref().map(|sel| {
            let skipped: Vec<bool> = sel.iter().map(|s| !s).collect();
            (skipped, ownership::part_path(&meta.info_hash.hex()))
        });
        // Seeding reads the user's folder as they laid it out (links too).
        let read_root = if opts.require_complete {
            root.clone().trust_links()
        } else {
            root.clone()
        };
        let mut reader = Store::open_read_in(layout.clone(), read_root);
        if let Some((skipped, part)) = &skip {
            reader.set_skipped(skipped.clone(), part.clone());
        }
        let reader = Arc::new(reader);
        let checks = {
            let (reader, cancel) = (reader.clone(), cancel.clone());
            let (checked, notices) = (checked.clone(), notices.clone());
            tokio::task::spawn_blocking(move || initial_check(&reader, &notices, &checked, &cancel))
                .await
                .context("check task failed")?
        };
        let checks = match checks {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.downcast_ref::<crate::store::StoreError>(),
                    Some(crate::store::StoreError::Interrupted)
                ) =>
            {
                return Ok(interrupted(Progress {
                    total: meta.total_length,
                    piece_count: count,
                    ..Progress::default()
                }));
            }
            Err(e) => return Err(e),
        };
        let have = have_of(&checks);
        if opts.require_complete && !have.is_full() {
            let missing = count as usize - have.count_ones();
            bail!(
                "data under {} is incomplete: {missing} of {count} pieces missing or bad (run `shoal verify` for details)",
                opts.dir.display()
            );
        }
        let (store, _claim) = if opts.require_complete {
            (reader, None)
        } else {
            drop(reader);
            let claim = ownership::prepare(
                &meta,
                &root,
                &checks,
                opts.overwrite,
                opts.selection.as_deref(),
            )?;
            for p in &claim.truncated {
                tracing::warn!(
                    "{}: cut to the torrent's length",
                    crate::out::escape(&p.display().to_string())
                );
            }
            (
                Arc::new(Store::open_write_selected(layout, root, skip)?),
                Some(claim),
            )
        };
        let have_bytes: u64 = have.iter_ones().map(|i| meta.piece_size(i as u32)).sum();
        if have.count_ones() > 0 && !opts.require_complete {
            notify(Notice::Resuming {
                have_bytes,
                total: meta.total_length,
                pieces_have: have.count_ones(),
                piece_count: count,
            });
        }

        let shared = Arc::new(Shared {
            info_hash: meta.info_hash.0,
            peer_id: new_peer_id(),
            piece_count: count,
            piece_length: meta.piece_length,
            total_length: meta.total_length,
            store,
            have: Arc::new(AtomicBitfield::from_bitfield(&have)),
            listen_port: self.inner.port,
            upload_limit: self.inner.upload_limit.clone(),
            download_limit: self.inner.download_limit.clone(),
            connections: self.inner.connections.clone(),
            my_connections: self.inner.connections.register(),
            pex: opts.pex && !meta.private,
            encryption: self.inner.encryption,
            // BEP 16 is for an initial seeder: one that has everything.
            super_seed: (opts.super_seed && have.is_full()).into(),
            metadata: match meta.info_bytes() {
                Ok(b) if b.len() as u64 <= crate::peer::metadata::MAX_SIZE => Arc::from(&b[..]),
                _ => Arc::from(&[][..]),
            },
            uploaded: Default::default(),
            downloaded: AtomicU64::new(0),
            have_bytes: AtomicU64::new(0),
        });

        let (events_tx, events_rx) = mpsc::channel(1024);
        let progress_rx = progress_tx.subscribe();
        let (complete_tx, complete_rx) = oneshot::channel();

        // Connections for this torrent now reach its coordinator.
        let _route = {
            let mut routes = self.inner.routes.lock().unwrap_or_else(|p| p.into_inner());
            // A hybrid's swarm is known by two hashes (v1, and v2 cut to
            // 20 bytes): peers may come under either.
            let hashes: Vec<[u8; 20]> = meta.info_hashes().iter().map(|h| h.0).collect();
            if let Some(h) = hashes.iter().find(|h| routes.contains_key(*h)) {
                bail!("{} is already running in this session", hex::encode(h));
            }
            for h in &hashes {
                routes.insert(*h, events_tx.clone());
            }
            RouteGuard {
                routes: self.inner.routes.clone(),
                info_hashes: hashes,
            }
        };
        shared_tx.send_replace(Some(shared.clone()));

        let mut torrent = Torrent::new(
            meta.clone(),
            shared.clone(),
            &have,
            Config {
                max_peers: opts.max_peers,
                upload_slots: 4,
                keep_seeding: opts.keep_seeding,
                seed_ratio: opts.seed_ratio,
                seed_time: opts.seed_time,
            },
            events_tx.clone(),
            progress_tx,
            complete_tx,
        );
        let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
        let announces = !(trackers.is_empty() || meta.tracker_tiers().is_empty());
        torrent.set_sources(
            if announces {
                trackers.views()
            } else {
                Vec::new()
            },
            self.inner.dht.is_some() && !meta.private,
        );
        if let Some(sel) = &opts.selection {
            torrent.set_unwanted(&crate::torrent::selection::unwanted_pieces(&meta, sel));
        }
        if let Some(high) = &opts.high {
            torrent.set_high(&crate::torrent::selection::wanted_pieces(&meta, high));
        }
        torrent.set_sequential(opts.sequential);
        if let Some(r) = &opts.readers {
            torrent.set_readers(r.clone());
        }
        // After the coordinator published its first snapshot, so a display
        // never shows a torrent of 0 bytes.
        notify(Notice::Ready);
        torrent.add_peers(PeerSource::Manual, opts.peers.clone());
        for (addr, source) in &opts.learned {
            torrent.add_peers(*source, vec![*addr]);
        }
        if opts.web_seeds {
            torrent.add_web_seeds(&meta.url_list);
        }

        let (tracker_ctl, tracker_ctl_rx) = mpsc::channel(4);
        let tracker_task = if !announces {
            None
        } else {
            Some(tokio::spawn(announce_loop(
                trackers,
                shared.clone(),
                events_tx.clone(),
                tracker_ctl_rx,
                complete_rx,
                have.is_full(),
                Some(progress_rx.clone()),
            )))
        };
        // BEP 27: a private torrent's peers come from its trackers only.
        let listen_port = self.inner.port;
        let dht_task = match (&self.inner.dht, meta.private) {
            (Some(dht), false) => Some(tokio::spawn(dht_loop(
                dht.clone(),
                meta.info_hash.0,
                listen_port,
                events_tx.clone(),
                progress_rx.clone(),
                opts.max_peers,
            ))),
            _ => None,
        };
        let lsd_task = match (&self.inner.lsd, meta.private) {
            (Some(lsd), false) => Some(tokio::spawn(lsd_loop(
                lsd.clone(),
                meta.info_hash.0,
                listen_port,
                events_tx.clone(),
            ))),
            _ => None,
        };
        drop(events_tx);

        let stall_task = tokio::spawn({
            let (rx, limit, stalled) = (progress_rx.clone(), opts.stall_timeout, stalled.clone());
            async move {
                let why = watch_stall(rx, limit).await;
                if let Ok(mut s) = stalled.lock() {
                    *s = Some(why);
                }
                let _ = stall_tx.send(());
            }
        });

        let result = torrent.run(events_rx, stop_rx).await;
        stall_task.abort();
        shared_tx.send_replace(None);
        if let Some(task) = tracker_task {
            let (ack_tx, ack_rx) = oneshot::channel();
            if tracker_ctl.send(ack_tx).await.is_ok() {
                // A dead tracker must not hold up the exit.
                let _ = tokio::time::timeout(Duration::from_secs(6), ack_rx).await;
            }
            task.abort();
        }
        for task in [dht_task, lsd_task].into_iter().flatten() {
            task.abort();
        }
        let progress = progress_rx.borrow().clone();
        let outcome = result?;
        if matches!(outcome, Outcome::Interrupted) {
            return Ok(interrupted(progress));
        }
        let complete = progress.complete;
        Ok(Summary {
            outcome,
            complete,
            progress,
            elapsed: started.elapsed(),
            signal: None,
            stalled: None,
        })
    }
}

/// Aborts a task when dropped, on every way out of a function.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a `[::]` listener also takes IPv4 (IPV6_V6ONLY off, the Linux
/// default, but a sysctl can change it).
fn listen_dual_stack(listener: &TcpListener) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        if !listener.local_addr().is_ok_and(|a| a.is_ipv6()) {
            return false;
        }
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket, and a buffer of the option's size.
        let r = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        r == 0 && v == 0
    }
    #[cfg(not(unix))]
    {
        listener.local_addr().is_ok_and(|a| a.is_ipv6())
    }
}

/// Resolves when an incomplete download got neither a verified piece nor
/// a received byte for `limit` (never without a limit, never once
/// complete: a seed waits for leechers as long as it is asked to), with
/// the one line that says why.
async fn watch_stall(mut rx: watch::Receiver<Progress>, limit: Option<Duration>) -> String {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let p = wait_stalled(&mut rx, limit, |p| {
        (!p.complete).then_some((p.have_bytes, p.downloaded))
    })
    .await;
    format!(
        "stalled: no data for {} ({} peers; {})",
        human_duration(limit),
        p.peers,
        crate::out::escape(&p.status)
    )
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

/// Accepts connections, reads their handshake with a deadline, and hands
/// each to the coordinator of the torrent it names. Encrypted (MSE)
/// handshakes are answered for any running torrent, selecting what
/// `encryption` allows; anything refused (a torrent not running here, a
/// plain handshake under `require`, an RC4-only peer under `plain`) is
/// dropped at once, so the other side can retry the way it can.
async fn accept_loop(listener: TcpListener, routes: Routes, encryption: crate::peer::mse::Policy) {
    loop {
        let (stream, addr) = match listener.accept().await {
            // IPv4 peers on a dual-stack socket show up as ::ffff:a.b.c.d.
            Ok((s, a)) => (s, SocketAddr::new(a.ip().to_canonical(), a.port())),
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let hashes: Vec<[u8; 20]> = match routes.lock() {
                Ok(r) => r.keys().copied().collect(),
                Err(_) => return,
            };
            match read_incoming_handshake(stream, &hashes, encryption).await {
                Ok((stream, hs, keyed)) => {
                    if stream.is_encrypted() {
                        tracing::debug!("{addr}: encrypted handshake, RC4 selected");
                    }
                    let route = routes.lock().ok().and_then(|r| {
                        let to = r.get(&hs.info_hash)?;
                        // Inside MSE, the handshake may name the torrent's
                        // other hash (a hybrid's), never another torrent.
                        match keyed.map(|k| r.get(&k)) {
                            Some(Some(k)) if !k.same_channel(to) => None,
                            _ => Some(to.clone()),
                        }
                    });
                    match route {
                        Some(events) => {
                            let _ = events
                                .send(Event::Incoming {
                                    stream,
                                    addr,
                                    handshake: hs,
                                })
                                .await;
                        }
                        None => tracing::debug!("{addr}: handshake for a torrent not running here"),
                    }
                }
                Err(e) => tracing::debug!("{addr}: bad handshake: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::mse::{self, Policy};
    use crate::peer::wire::Handshake;
    use tokio::io::AsyncReadExt;

    /// Inside MSE, the handshake may name the other hash of the torrent
    /// the exchange was keyed with (a hybrid's v1 and cut v2), and is
    /// routed to it; a hash of another torrent of the session is not.
    #[tokio::test]
    async fn an_encrypted_handshake_is_routed_only_within_its_torrent() {
        let (hybrid_tx, mut hybrid_rx) = mpsc::channel(4);
        let (other_tx, mut other_rx) = mpsc::channel(4);
        let routes: Routes = Arc::default();
        {
            let mut r = routes.lock().unwrap();
            r.insert([1; 20], hybrid_tx.clone());
            r.insert([2; 20], hybrid_tx);
            r.insert([3; 20], other_tx);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(accept_loop(listener, routes, Policy::Prefer));
        for (key, named) in [([1; 20], [2; 20]), ([2; 20], [1; 20]), ([1; 20], [3; 20])] {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let hs = Handshake::new(named, [9; 20]).encode();
            mse::initiate(&mut tcp, &key, Policy::Require, &hs)
                .await
                .unwrap();
            if named == [3; 20] {
                // Dropped: the connection closes and nobody got it.
                let mut byte = [0u8; 1];
                let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte));
                assert!(matches!(closed.await, Ok(Ok(0)) | Ok(Err(_))));
                assert!(other_rx.try_recv().is_err(), "routed to another torrent");
                continue;
            }
            let got = tokio::time::timeout(Duration::from_secs(10), hybrid_rx.recv())
                .await
                .unwrap();
            match got {
                Some(Event::Incoming { handshake, .. }) => assert_eq!(handshake.info_hash, named),
                _ => panic!("not routed to the hybrid"),
            }
        }
        task.abort();
    }
}
