//! One torrent's coordinator: a single task that owns the picker, the
//! choker, the pieces being assembled and the table of peers. Peer tasks,
//! the tracker task and the listener talk to it only by messages, so no
//! lock guards the swarm state.

pub mod choker;
pub mod deadline;
pub mod hashes;
pub mod leaves;
pub mod picker;
pub mod selection;
pub mod superseed;
pub mod webseed;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sha1::{Digest, Sha1};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bitfield::Bitfield;
use crate::metainfo::merkle;
use crate::metainfo::Metainfo;
use crate::peer::wire::{BlockRef, Handshake, HashRequest};
use crate::peer::{self, PeerCmd, PeerEvent, PeerKey, PeerStats, Shared};
use crate::store::{PieceData, StoreError};
use crate::torrent::choker::{Choker, PeerSnapshot};
use crate::torrent::picker::{BlockOutcome, PeerHas, Picker, BLOCK_LEN};
use crate::torrent::webseed::{WebCmd, WebEvent};

/// Requests kept in flight to one peer at first; grows with its rate.
const MIN_QUEUE: usize = 32;
const MAX_QUEUE: usize = 500;
/// Assumed `reqq` of peers that do not advertise one. aria2 (which does not)
/// serves a 1 GiB torrent ~10 % faster with 500 in flight than with 250,
/// and queues them all.
const DEFAULT_REQQ: usize = 500;
/// Seconds of data we keep requested from a peer: its bandwidth-delay product
/// with room for jitter.
const QUEUE_SECONDS: u64 = 1;
/// No block for this long while requests are out: the peer is snubbing us.
const SNUB_AFTER: Duration = Duration::from_secs(30);
const RECHOKE_EVERY: Duration = Duration::from_secs(10);
/// Outgoing connection attempts in progress at once.
const MAX_HALF_OPEN: usize = 16;
/// When every slot is taken, a peer connected this long that neither wants
/// our pieces nor has any we want is closed to make room for a newcomer
/// (libtorrent also drops its least useful peer when full). Otherwise idle
/// sockets sending keep-alives hold every slot forever. Long enough for a
/// real peer's bitfield and `interested` to have arrived.
const EVICT_AFTER: Duration = Duration::from_secs(10);
/// A connection that ends sooner than this counts as a failure for the
/// reconnect back-off: a peer that accepts and closes at once would
/// otherwise be dialled every 10 s forever.
const SHORT_LIVED: Duration = Duration::from_secs(60);
/// Hash failures a peer may be involved in before we stop trusting it, when
/// the smart check could not single it out.
const MAX_STRIKES: u32 = 5;
/// Bytes of complete pieces allowed to wait for their hash check and write.
const MAX_VERIFY_BYTES: usize = 8 << 20;
/// Piece buffers kept for reuse after their piece is written. Enough to
/// cover a burst of hash results: a buffer freed and allocated again costs
/// a zero-fill (the memset was 2-3 % of a download with 2 kept).
const SPARE_BUFFERS: usize = 8;
/// Failed v2 pieces held at once (each keeps its buffer) while their leaf
/// hashes are asked for; past this, a failed piece is fetched again whole.
const MAX_LEAF_CHECKS: usize = 16;
/// Peer addresses remembered at most, from all sources together.
const MAX_KNOWN: usize = 2000;
/// Pieces hashed by one blocking job, at most (at least one piece).
const HASH_BATCH_BYTES: usize = 1 << 20;

/// Blocks kept requested from a web seed: at least a full run for each of
/// its connections, more as its rate grows (two seconds of data).
const WEB_MIN_QUEUE: usize =
    webseed::CONNECTIONS * (webseed::RUN_BYTES / BLOCK_LEN as u64) as usize + 64;
const WEB_MAX_QUEUE: usize = 1024;
const WEB_QUEUE_SECONDS: u64 = 2;

/// Wait before asking a web seed again after `failures` failed requests in
/// a row: 5 s, 10 s, 20 s … capped at 10 min.
fn web_retry_delay(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.saturating_sub(1).min(7)).min(600))
}

/// Wait before dialling a peer again after `failures` connections in a row
/// that ended early: 10 s, 20 s, 40 s … capped at 10 min.
fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_secs((10u64 << failures.min(6)).min(600))
}

#[derive(Debug)]
pub enum Event {
    Peer(PeerKey, PeerEvent),
    Incoming {
        stream: peer::mse::Stream,
        addr: SocketAddr,
        handshake: Handshake,
    },
    Peers(PeerSource, Vec<SocketAddr>),
    TrackerWarning(String),
    /// What the trackers say about the lack of peers (`Some`: none
    /// answered, "tracker H:P unreachable", or the one that answered had
    /// no peer), or `None` (peers came); shown while no peer is connected.
    TrackerStatus(Option<String>),
    /// Each tracker's state after an announce, for the service's API.
    Trackers(Vec<TrackerView>),
    Verified(Vec<Verified>),
    /// What `range` (pieces of a file whose layer just came) holds on
    /// disk: the pieces in `good` passed their check.
    Rechecked {
        range: std::ops::Range<u32>,
        good: Vec<u32>,
    },
    /// From the task of the web seed with this key.
    Web(PeerKey, WebEvent),
}

impl From<(PeerKey, PeerEvent)> for Event {
    fn from((key, ev): (PeerKey, PeerEvent)) -> Event {
        Event::Peer(key, ev)
    }
}

#[derive(Debug)]
pub struct Verified {
    piece: u32,
    ok: bool,
    write: Result<(), StoreError>,
    /// SHA-1 of each block, when the piece failed or had suspects.
    block_hashes: Vec<[u8; 20]>,
    /// A failed piece of a v2 file: our SHA-256 leaf of each block of the
    /// file's part, and padding blocks that are not zeros
    /// ([`leaves::our_leaves`]).
    leaves: Vec<merkle::Hash>,
    pad_bad: Vec<usize>,
    senders: Vec<PeerKey>,
    /// The buffer, handed back for reuse.
    data: PieceData,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Checking,
    Connecting,
    Downloading,
    Endgame,
    Seeding,
    Done,
    Stopping,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Checking => "checking",
            State::Connecting => "connecting",
            State::Downloading => "downloading",
            State::Endgame => "endgame",
            State::Seeding => "seeding",
            State::Done => "done",
            State::Stopping => "stopping",
        }
    }
}

/// What the progress display shows; published about ten times a second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    pub state: State,
    /// One line on what is going on, for a person: the state, or while no
    /// peer is connected, why not ("peer H:P: connection refused, retry
    /// in 10s"). It changes only when the situation does (no countdown),
    /// so each change can be an event.
    pub status: String,
    pub total: u64,
    pub have_bytes: u64,
    pub pieces_have: u32,
    pub piece_count: u32,
    pub down_rate: u64,
    pub up_rate: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub peers: usize,
    pub known_peers: usize,
    pub hash_failures: u32,
    pub banned: u32,
    /// Bytes verified per file (same order as the torrent's files).
    pub file_done: Vec<u64>,
    /// Connected peers by where their address came from.
    pub peer_sources: std::collections::BTreeMap<&'static str, usize>,
    /// Every wanted piece is verified (all of them, or those of the
    /// selected files).
    pub complete: bool,
    /// The connected peers, refreshed about once a second.
    #[serde(skip)]
    pub peer_list: Arc<Vec<PeerView>>,
    /// The trackers' states after their last announce.
    pub trackers: Vec<TrackerView>,
}

/// One tracker of a torrent after its last announce, as the service's
/// API shows it. Times are Unix seconds.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TrackerView {
    pub url: String,
    /// Its BEP 12 tier, from 0.
    pub tier: usize,
    /// `working` (its last announce was answered), `failing`, or `not
    /// contacted` (not asked yet, or another of its tier answered first).
    pub status: &'static str,
    pub last_announce: Option<u64>,
    pub next_announce: Option<u64>,
    /// Seeders and leechers it counted (`complete`, `incomplete`).
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// Peers in its last answer.
    pub peers: Option<usize>,
    /// Why its last announce failed.
    pub error: Option<String>,
}

impl TrackerView {
    /// A tracker not asked yet.
    pub fn not_contacted(url: String, tier: usize) -> TrackerView {
        TrackerView {
            url,
            tier,
            status: "not contacted",
            last_announce: None,
            next_announce: None,
            seeders: None,
            leechers: None,
            peers: None,
            error: None,
        }
    }
}

/// One connected peer, as the service's API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    pub addr: SocketAddr,
    pub source: &'static str,
    /// The printable start of its peer id ("-TR3000-"), as sent.
    pub client: String,
    /// Share of the torrent it has, 0.0–1.0.
    pub progress: f64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// It chokes us / we are interested in it.
    pub choked: bool,
    pub interested: bool,
}

pub struct Config {
    pub max_peers: usize,
    pub upload_slots: usize,
    /// Keep running (seeding) once complete.
    pub keep_seeding: bool,
    /// Stop seeding once this many times the torrent's size went up.
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long.
    pub seed_time: Option<Duration>,
}

/// Where a peer's address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerSource {
    Tracker,
    Dht,
    Pex,
    Lsd,
    /// `--peer`, or a magnet's `x.pe`.
    Manual,
    /// It connected to us.
    Incoming,
}

impl PeerSource {
    pub fn label(self) -> &'static str {
        match self {
            PeerSource::Tracker => "tracker",
            PeerSource::Dht => "dht",
            PeerSource::Pex => "pex",
            PeerSource::Lsd => "lsd",
            PeerSource::Manual => "manual",
            PeerSource::Incoming => "incoming",
        }
    }
}

/// Where web seeds are counted in `Progress::peer_sources`.
pub const WEB_SEED_LABEL: &str = "webseed";

/// Why the torrent stopped.
#[derive(Debug)]
pub enum Outcome {
    Complete,
    Interrupted,
}

/// Overall rates, for people: bytes moved in the last [`WINDOW`] seconds
/// divided by the time they span. It falls to 0 once nothing moved for a
/// whole window, and a burst shows at once (an average that decays by a
/// factor each second lags both ways).
struct WindowRate {
    /// (seconds since start, counter), oldest first, one per tick.
    samples: VecDeque<(f64, u64)>,
}

const WINDOW: f64 = 5.0;

impl WindowRate {
    fn new() -> WindowRate {
        WindowRate {
            samples: VecDeque::new(),
        }
    }
    fn update(&mut self, now: f64, counter: u64) {
        self.samples.push_back((now, counter));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now - t > WINDOW + 1e-6)
        {
            self.samples.pop_front();
        }
    }
    fn get(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                (c1.saturating_sub(*c0) as f64 / (t1 - t0)) as u64
            }
            _ => 0,
        }
    }
}

struct Rate {
    last: u64,
    value: f64,
}

impl Rate {
    fn new() -> Rate {
        Rate {
            last: 0,
            value: 0.0,
        }
    }
    /// Exponential moving average over per-second samples.
    fn update(&mut self, counter: u64, secs: f64) {
        let delta = counter.saturating_sub(self.last) as f64 / secs.max(0.001);
        self.last = counter;
        self.value = self.value * 0.6 + delta * 0.4;
    }
    fn get(&self) -> u64 {
        self.value as u64
    }
}

struct PeerInfo {
    addr: SocketAddr,
    peer_id: [u8; 20],
    cmd: mpsc::UnboundedSender<PeerCmd>,
    stats: Arc<PeerStats>,
    bits: Bitfield,
    seed: bool,
    am_interested: bool,
    peer_interested: bool,
    peer_choking: bool,
    am_choking: bool,
    reqq: usize,
    depth: usize,
    last_block: Instant,
    snubbed: bool,
    down: Rate,
    up: Rate,
    strikes: u32,
    /// It speaks v2 (its handshake set the BEP 52 bit, or the swarm is
    /// v2-only) and has not answered a hash request with hashes that do
    /// not lead to the root: it may be asked for piece layers.
    hashes_ok: bool,
    /// Where others can reach it: the address we dialled, or for incoming
    /// peers their address with the listen port their handshake gave.
    listen: Option<SocketAddr>,
    /// Peer exchange: it takes part, what it was told, and when.
    pex: bool,
    pex_sent: HashSet<SocketAddr>,
    pex_at: Option<Instant>,
    source: PeerSource,
    connected_at: Instant,
}

impl PeerInfo {
    fn has(&self) -> PeerHas<'_> {
        if self.seed {
            PeerHas::All
        } else {
            PeerHas::Some(&self.bits)
        }
    }
    fn send(&self, cmd: PeerCmd) {
        let _ = self.cmd.send(cmd);
    }
}

struct PieceBuf {
    data: PieceData,
    /// Who sent each block, so a hash failure can be traced.
    senders: Vec<PeerKey>,
}

struct LeafCheck {
    pending: leaves::Pending,
    buf: PieceBuf,
    block_hashes: Vec<[u8; 20]>,
}

struct Suspect {
    key: PeerKey,
    /// A peer's address and id, so it can be banned after it left; None
    /// for a web seed.
    peer: Option<(SocketAddr, [u8; 20])>,
    block: usize,
    hash: [u8; 20],
}

/// A web seed (BEP 19) the coordinator asks for blocks; its task fetches
/// them (`torrent::webseed`).
struct WebSeed {
    url: String,
    cmd: mpsc::UnboundedSender<WebCmd>,
    stats: Arc<PeerStats>,
    down: Rate,
    depth: usize,
    /// When a block last came, or requests were first sent after none.
    last_block: Instant,
    /// Failed requests in a row (reset by a block); while backing off,
    /// when to ask again.
    failures: u32,
    retry_at: Option<Instant>,
    /// Counted by the picker as a source of every piece.
    counted: bool,
    strikes: u32,
    /// It ignores `Range` and is read whole: any byte it sends shows it
    /// is alive, a block or not (it may be reading past pieces we have).
    whole_files: bool,
    /// Its byte count at the last second's look.
    seen_bytes: u64,
}

impl WebSeed {
    fn new(url: String, cmd: mpsc::UnboundedSender<WebCmd>, stats: Arc<PeerStats>) -> WebSeed {
        WebSeed {
            url,
            cmd,
            stats,
            down: Rate::new(),
            depth: WEB_MIN_QUEUE,
            last_block: Instant::now(),
            failures: 0,
            retry_at: None,
            counted: true,
            strikes: 0,
            whole_files: false,
            seen_bytes: 0,
        }
    }

    fn active(&self) -> bool {
        self.retry_at.is_none()
    }
}

struct Candidate {
    failures: u32,
    next_try: Instant,
    source: PeerSource,
}

pub struct Torrent {
    meta: Arc<Metainfo>,
    shared: Arc<Shared>,
    cfg: Config,
    events_tx: mpsc::Sender<Event>,
    picker: Picker,
    choker: Choker,
    peers: HashMap<PeerKey, PeerInfo>,
    connecting: HashMap<PeerKey, SocketAddr>,
    known: HashMap<SocketAddr, Candidate>,
    queue: VecDeque<SocketAddr>,
    banned_addrs: HashSet<SocketAddr>,
    banned_ids: HashSet<[u8; 20]>,
    partial: HashMap<u32, PieceBuf>,
    /// Pieces verified since peers were last told.
    pending_haves: Vec<u32>,
    /// Complete pieces waiting for, or under, their hash check.
    verifying: usize,
    hash_queue: VecDeque<(u32, PieceBuf)>,
    hashing: usize,
    max_hashing: usize,
    /// Piece buffers kept for reuse: fresh ones cost page faults and zeroing.
    spare: Vec<PieceData>,
    suspects: HashMap<u32, Vec<Suspect>>,
    next_key: PeerKey,
    started: Instant,
    last_tick: Instant,
    last_rechoke: Instant,
    rechoke_soon: bool,
    progress: Progress,
    progress_tx: watch::Sender<Progress>,
    peer_list_at: Option<Instant>,
    down_rate: WindowRate,
    up_rate: WindowRate,
    state: State,
    /// The newest failed outgoing connection: who, why, and the wait
    /// before the next try.
    last_failure: Option<(SocketAddr, String, u64)>,
    tracker_status: Option<String>,
    /// Where peers may come from, for the status that says why there are
    /// none: the torrent has usable trackers, the DHT is on for it.
    sources: (bool, bool),
    complete_tx: Option<tokio::sync::oneshot::Sender<()>>,
    /// Verified bytes of pieces left out by a file selection.
    have_unwanted_bytes: u64,
    /// Web seeds in use (banned ones are dropped), keyed like peers.
    webseeds: HashMap<PeerKey, WebSeed>,
    /// The newest web seed failure: its URL, why, and the wait before the
    /// next try (None: banned).
    web_failure: Option<(String, String, Option<u64>)>,
    /// Piece layers still to be fetched from peers (a v2 torrent from a
    /// magnet); their files' pieces are held back in the picker.
    layers: Option<hashes::LayerFetch>,
    /// Failed v2 pieces held (with their data) while a peer is asked for
    /// their leaf hashes, to find the bad blocks; and the SHA-1 of each
    /// block, for the whole-piece fallback's suspects.
    leaf_checks: HashMap<u32, LeafCheck>,
    /// Set while super-seeding (BEP 16): what each peer has been shown.
    super_seed: Option<superseed::SuperSeed>,
    /// Streaming readers, and the version of their windows last given to
    /// the picker.
    readers: Option<(Arc<deadline::Readers>, u64)>,
}

impl Torrent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: Arc<Metainfo>,
        shared: Arc<Shared>,
        have: &Bitfield,
        cfg: Config,
        events_tx: mpsc::Sender<Event>,
        progress_tx: watch::Sender<Progress>,
        complete_tx: tokio::sync::oneshot::Sender<()>,
    ) -> Torrent {
        let picker = Picker::new(
            meta.piece_count(),
            meta.piece_length as u32,
            meta.total_length,
            have,
        );
        let mut file_done = vec![0u64; meta.files.len()];
        for p in have.iter_ones() {
            for s in meta.piece_slices(p as u32) {
                file_done[s.file] += s.len;
            }
        }
        let progress = Progress {
            total: meta.total_length,
            piece_count: meta.piece_count(),
            file_done,
            ..Default::default()
        };
        let now = Instant::now();
        let choker = Choker::new(cfg.upload_slots);
        let mut t = Torrent {
            meta,
            shared,
            cfg,
            events_tx,
            picker,
            choker,
            peers: HashMap::new(),
            connecting: HashMap::new(),
            known: HashMap::new(),
            queue: VecDeque::new(),
            banned_addrs: HashSet::new(),
            banned_ids: HashSet::new(),
            partial: HashMap::new(),
            pending_haves: Vec::new(),
            verifying: 0,
            hash_queue: VecDeque::new(),
            hashing: 0,
            // One more job than cores: a job waiting on its (direct) write
            // leaves a core free to hash the next.
            max_hashing: crate::store::hash_threads() + 1,
            spare: Vec::new(),
            suspects: HashMap::new(),
            next_key: 1,
            started: now,
            last_tick: now,
            last_rechoke: now,
            rechoke_soon: false,
            progress,
            progress_tx,
            peer_list_at: None,
            down_rate: WindowRate::new(),
            up_rate: WindowRate::new(),
            state: State::Connecting,
            last_failure: None,
            tracker_status: None,
            sources: (false, false),
            complete_tx: Some(complete_tx),
            have_unwanted_bytes: 0,
            webseeds: HashMap::new(),
            web_failure: None,
            layers: None,
            leaf_checks: HashMap::new(),
            super_seed: None,
            readers: None,
        };
        t.start_layer_fetch();
        if t.shared.super_seed.load(Ordering::Relaxed) {
            tracing::info!("super-seeding until every piece is in the swarm");
            t.super_seed = Some(superseed::SuperSeed::new(t.meta.piece_count()));
        }
        t.recount_have();
        t.down_rate
            .update(0.0, t.shared.downloaded.load(Ordering::Relaxed));
        t.up_rate
            .update(0.0, t.shared.uploaded.load(Ordering::Relaxed));
        if t.picker.is_complete() {
            t.state = State::Seeding;
            t.signal_complete();
        }
        // The display's first look must show the real totals.
        t.publish();
        t
    }

    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// For a v2-only torrent missing piece layers: holds back the pieces
    /// that cannot be checked until peers give their file's layer (a
    /// single-piece file is checked against its root and never waits).
    fn start_layer_fetch(&mut self) {
        let Some(v2) = self.meta.v2.as_ref().filter(|_| self.meta.v2_only()) else {
            return;
        };
        let Some(fetch) = hashes::LayerFetch::new(v2) else {
            return;
        };
        let mut held = Bitfield::new(self.meta.piece_count() as usize);
        for r in fetch.waiting() {
            for p in r {
                held.set(p as usize);
            }
        }
        tracing::info!(
            "{} file(s) need their piece layer from peers; {} pieces wait for it",
            fetch.waiting().count(),
            held.count_ones()
        );
        self.picker.hold(&held);
        self.layers = Some(fetch);
    }

    /// Tops up the hash requests in flight to `key`, if it may be asked.
    fn request_hashes(&mut self, key: PeerKey) {
        let (Some(fetch), Some(p)) = (self.layers.as_mut(), self.peers.get(&key)) else {
            return;
        };
        if !p.hashes_ok {
            return;
        }
        let now = Instant::now();
        while fetch.in_flight(key) < hashes::PER_PEER {
            let Some(req) = fetch.next(key, |i| p.seed || p.bits.get(i as usize), now) else {
                break;
            };
            tracing::debug!(
                "{}: asking for piece hashes {}..{} of a file",
                p.addr,
                req.index,
                req.index + req.length
            );
            p.send(PeerCmd::HashRequest(req));
        }
    }

    fn request_hashes_all(&mut self) {
        if self.layers.is_none() {
            return;
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.request_hashes(k);
        }
    }

    fn on_hashes(&mut self, key: PeerKey, req: HashRequest, got: Vec<[u8; 32]>) {
        let Some(fetch) = self.layers.as_mut() else {
            return;
        };
        match fetch.on_hashes(key, &req, &got, Instant::now()) {
            hashes::Outcome::Kept | hashes::Outcome::Unknown => {}
            hashes::Outcome::Bad => {
                if let Some(p) = self.peers.get_mut(&key) {
                    tracing::warn!(
                        "{}: sent piece hashes that do not lead to the file's root; not asked again",
                        p.addr
                    );
                    p.hashes_ok = false;
                    p.strikes += 1;
                }
                self.progress.hash_failures += 1;
                self.request_hashes_all();
            }
            hashes::Outcome::Layer { files, layer } => self.on_layer(&files, layer),
        }
        self.request_hashes(key);
    }

    /// Checks what is on disk of pieces whose layer just came (a resumed
    /// download has them: they could not be checked at start), off the
    /// runtime; they stay held until the answer, so nothing is written
    /// to them meanwhile.
    fn recheck(&mut self, range: std::ops::Range<u32>) {
        let store = self.shared.store.clone();
        let tx = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = Vec::new();
            let mut good = Vec::new();
            for p in range.clone() {
                match store.check_piece(p, &mut buf) {
                    Ok(crate::store::PieceCheck::Good) => good.push(p),
                    Ok(_) => {}
                    Err(e) => tracing::debug!("piece {p}: {e}"),
                }
            }
            let _ = tx.blocking_send(Event::Rechecked { range, good });
        });
    }

    /// The pieces of a file whose layer came: those found good on disk
    /// are had, the rest may be asked for.
    fn on_rechecked(&mut self, range: std::ops::Range<u32>, good: Vec<u32>) {
        if !good.is_empty() {
            tracing::info!("{} pieces already on disk", good.len());
        }
        for p in good {
            if !self.picker.have().get(p as usize) {
                self.piece_had(p);
            }
        }
        self.picker.release_held(range);
        self.recount_have();
        if self.picker.is_complete() {
            self.on_complete();
        } else {
            self.fill_all();
        }
    }

    /// A piece layer came in whole: the pieces of the files that have it
    /// can be checked now.
    fn on_layer(&mut self, files: &[usize], layer: Vec<[u8; 32]>) {
        let Some(v2) = self.meta.v2.clone() else {
            return;
        };
        for f in files.iter().filter_map(|i| v2.files.get(*i)) {
            match f.set_layer(layer.clone(), self.meta.piece_length) {
                Ok(()) => {
                    tracing::info!(
                        "piece layer of file {} is in: pieces {}..{} can be checked",
                        f.file,
                        f.first_piece,
                        f.first_piece + f.pieces
                    );
                    self.recheck(f.first_piece..f.first_piece + f.pieces);
                }
                Err(e) => {
                    // Each chunk was checked against the root, so this
                    // should not happen; start over rather than stall.
                    tracing::warn!("piece layer of file {}: {e}; fetching it again", f.file);
                    if let Some(l) = self.layers.as_mut() {
                        l.restart(&v2, f.root);
                    }
                    self.request_hashes_all();
                    return;
                }
            }
        }
        if self.layers.as_ref().is_some_and(|l| l.is_done()) {
            self.layers = None;
        }
    }

    /// Leaves out the pieces in `unwanted` (they touch only files the user
    /// did not select): never asked for, not needed for completion, and
    /// not counted in the progress totals.
    /// Asks for the pieces in `high` before any other (file priorities).
    pub fn set_high(&mut self, high: &Bitfield) {
        self.picker.set_high(high);
    }

    /// Streaming readers whose windows get pieces first (deadlines).
    pub fn set_readers(&mut self, readers: Arc<deadline::Readers>) {
        self.readers = Some((readers, u64::MAX));
    }

    /// New pieces in index order instead of rarest first.
    pub fn set_sequential(&mut self, on: bool) {
        self.picker.set_sequential(on);
    }

    /// Hands the picker the pieces the readers need next; when the
    /// readers moved, asks every peer for more at once (nearest first).
    fn update_deadlines(&mut self) {
        let Some((readers, seen)) = &mut self.readers else {
            return;
        };
        let version = readers.version();
        let windows = readers.windows();
        if windows.is_empty() && version == *seen {
            return;
        }
        let have = self.picker.have();
        let pieces =
            deadline::deadline_pieces(&windows, |p| have.get(p as usize), deadline::MAX_DEADLINES);
        self.picker.set_deadlines(&pieces);
        if version != *seen {
            *seen = version;
            if !pieces.is_empty() {
                tracing::debug!("stream deadlines: {:?}", &pieces[..pieces.len().min(8)]);
                self.make_room_for_deadlines();
            }
            self.fill_all();
        }
    }

    /// Cancels requests for other pieces queued at peers that have
    /// deadline pieces, so the next fill asks for those first.
    fn make_room_for_deadlines(&mut self) {
        for (key, p) in self.peers.iter() {
            if p.peer_choking || p.snubbed {
                continue;
            }
            let depth = p.depth.min(p.reqq);
            for b in self.picker.make_room(*key, p.has(), depth) {
                p.send(PeerCmd::Cancel(b));
            }
        }
    }

    pub fn set_unwanted(&mut self, unwanted: &Bitfield) {
        self.picker.set_unwanted(unwanted);
        let size = |p: usize| self.meta.piece_size(p as u32);
        let out: u64 = unwanted.iter_ones().map(size).sum();
        self.have_unwanted_bytes = unwanted
            .iter_ones()
            .filter(|&p| self.picker.have().get(p))
            .map(size)
            .sum();
        self.progress.total = self.meta.total_length - out;
        self.recount_have();
        if self.picker.is_complete() && self.state != State::Seeding {
            self.state = State::Seeding;
            self.signal_complete();
        }
    }

    fn recount_have(&mut self) {
        let have = self.picker.have();
        self.progress.pieces_have = have.count_ones() as u32;
        let full = have.count_ones() as u64 * self.meta.piece_length;
        // The last piece is usually short.
        let last = self.meta.piece_count().saturating_sub(1);
        let all = if have.get(last as usize) {
            full - self.meta.piece_length + self.meta.piece_size(last)
        } else {
            full
        };
        // With a file selection, bytes of pieces left out do not count.
        self.progress.have_bytes = all.saturating_sub(self.have_unwanted_bytes);
        self.progress.complete = self.picker.is_complete();
        // Trackers read this for `left`; it must be current the moment
        // completion is signalled, not at the next progress snapshot.
        self.shared
            .have_bytes
            .store(self.progress.have_bytes, Ordering::Release);
    }

    /// Runs until complete (unless seeding) or until `stop` fires.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Outcome, StoreError> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seeding_since: Option<Instant> = None;
        let outcome = loop {
            if self.picker.is_complete() && self.verifying == 0 {
                let since = *seeding_since.get_or_insert_with(Instant::now);
                if !self.cfg.keep_seeding || self.seed_goal_reached(since) {
                    break Outcome::Complete;
                }
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev)?,
                    None => break Outcome::Interrupted,
                },
                _ = tick.tick() => self.on_tick(),
                _ = stop.changed() => break Outcome::Interrupted,
            }
        };
        self.state = State::Stopping;
        for p in self.peers.values() {
            p.send(PeerCmd::Close("shutting down".into()));
        }
        self.publish();
        Ok(outcome)
    }

    /// Adds peers from any source; an address keeps the source that named
    /// it first.
    pub fn add_peers(&mut self, source: PeerSource, addrs: Vec<SocketAddr>) {
        for a in addrs {
            let a = SocketAddr::new(a.ip().to_canonical(), a.port());
            if self.is_self(a) || self.banned_addrs.contains(&a) || a.port() == 0 {
                continue;
            }
            // Every source together (trackers, DHT, PEX) is held to a cap,
            // so a flood of addresses cannot grow memory without bound.
            if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&a) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = self.known.entry(a) {
                e.insert(Candidate {
                    failures: 0,
                    next_try: Instant::now(),
                    source,
                });
                self.queue.push_back(a);
            }
        }
        self.connect_more();
    }

    /// Trackers list us among the peers; on loopback every peer shares the
    /// address, so our own listening port is what gives us away.
    fn is_self(&self, a: SocketAddr) -> bool {
        a.port() == self.shared.listen_port && (a.ip().is_loopback() || a.ip().is_unspecified())
    }

    fn on_event(&mut self, ev: Event) -> Result<(), StoreError> {
        match ev {
            Event::Peer(key, pe) => self.on_peer_event(key, pe),
            Event::Incoming {
                stream,
                addr,
                handshake,
            } => self.on_incoming(stream, addr, handshake),
            Event::Peers(source, addrs) => self.add_peers(source, addrs),
            Event::TrackerWarning(w) => tracing::warn!("tracker: {}", crate::out::escape(&w)),
            Event::TrackerStatus(s) => self.tracker_status = s,
            Event::Trackers(t) => self.progress.trackers = t,
            Event::Verified(batch) => return self.on_verified_batch(batch),
            Event::Rechecked { range, good } => self.on_rechecked(range, good),
            Event::Web(key, ev) => self.on_web_event(key, ev),
        }
        Ok(())
    }

    fn on_incoming(&mut self, stream: peer::mse::Stream, addr: SocketAddr, hs: Handshake) {
        if self.banned_ids.contains(&hs.peer_id) || hs.peer_id == self.shared.peer_id {
            return;
        }
        if self.at_capacity() && !self.evict_one() {
            tracing::debug!("refusing {addr}: peer limit reached");
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.connecting.insert(key, addr);
        self.count_connections();
        tokio::spawn(peer::run_incoming(
            key,
            stream,
            addr,
            hs,
            self.shared.clone(),
            self.events_tx.clone(),
        ));
    }

    fn connect_more(&mut self) {
        let now = Instant::now();
        let mut tries = self.queue.len();
        while tries > 0 && self.connecting.len() < MAX_HALF_OPEN {
            tries -= 1;
            let Some(addr) = self.queue.pop_front() else {
                break;
            };
            let Some(c) = self.known.get(&addr) else {
                continue;
            };
            if c.next_try > now {
                self.queue.push_back(addr);
                continue;
            }
            if self.banned_addrs.contains(&addr)
                || self.peers.values().any(|p| p.addr == addr)
                || self.connecting.values().any(|a| *a == addr)
            {
                continue;
            }
            if self.at_capacity() && !self.evict_one() {
                self.queue.push_front(addr);
                break;
            }
            let key = self.next_key;
            self.next_key += 1;
            self.connecting.insert(key, addr);
            self.count_connections();
            tokio::spawn(peer::run_outgoing(
                key,
                addr,
                self.shared.clone(),
                self.events_tx.clone(),
            ));
        }
    }

    fn on_peer_event(&mut self, key: PeerKey, ev: PeerEvent) {
        match ev {
            PeerEvent::Connected {
                addr,
                peer_id,
                fast: _,
                v2,
                incoming,
                cmd,
                stats,
            } => {
                self.connecting.remove(&key);
                let refuse =
                    if self.banned_ids.contains(&peer_id) || self.banned_addrs.contains(&addr) {
                        Some("banned")
                    } else if self.peers.values().any(|p| p.peer_id == peer_id) {
                        Some("duplicate connection")
                    } else if self.peers.len() >= self.cfg.max_peers && !self.evict_one() {
                        Some("peer limit reached")
                    } else {
                        None
                    };
                if let Some(why) = refuse {
                    let _ = cmd.send(PeerCmd::Close(why.into()));
                    return;
                }
                // The peer id's client tag (e.g. -TR3000-): names clients
                // that send no BEP 10 handshake.
                tracing::debug!(
                    "{addr}: connected, peer id {}",
                    crate::out::escape(&String::from_utf8_lossy(&peer_id[..8]))
                );
                self.peers.insert(
                    key,
                    PeerInfo {
                        addr,
                        peer_id,
                        cmd,
                        stats,
                        bits: Bitfield::new(self.meta.piece_count() as usize),
                        seed: false,
                        am_interested: false,
                        peer_interested: false,
                        peer_choking: true,
                        am_choking: true,
                        reqq: DEFAULT_REQQ,
                        depth: MIN_QUEUE,
                        last_block: Instant::now(),
                        snubbed: false,
                        down: Rate::new(),
                        up: Rate::new(),
                        strikes: 0,
                        // In a v2-only swarm every peer speaks v2 (libtorrent
                        // sets the bit only for hybrids, where it upgrades).
                        hashes_ok: v2 || self.meta.v2_only(),
                        listen: (!incoming).then_some(addr),
                        pex: false,
                        pex_sent: HashSet::new(),
                        pex_at: None,
                        source: if incoming {
                            PeerSource::Incoming
                        } else {
                            self.known
                                .get(&addr)
                                .map_or(PeerSource::Manual, |c| c.source)
                        },
                        connected_at: Instant::now(),
                    },
                );
                if self.state == State::Connecting {
                    self.state = State::Downloading;
                }
                // Hash requests need no unchoke (BEP 52): ask at once.
                self.request_hashes(key);
            }
            PeerEvent::Gone(reason) => {
                if let Some(addr) = self.connecting.remove(&key) {
                    tracing::debug!("{addr}: {reason}");
                    self.connect_failed(addr, &reason);
                }
                self.remove_peer(key, &reason);
                self.connect_more();
            }
            PeerEvent::Bitfield(bits) => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                // A later bitfield replaces what we knew (aria2 sends them
                // as updates): take back the old counts first.
                if p.seed {
                    self.picker.remove_seed();
                    p.seed = false;
                } else {
                    self.picker.remove_bitfield(&p.bits);
                }
                if bits.is_full() {
                    p.seed = true;
                    self.picker.add_seed();
                    p.bits = Bitfield::new(bits.len());
                } else {
                    self.picker.add_bitfield(&bits);
                    p.bits = bits;
                }
                self.after_availability(key);
            }
            PeerEvent::HaveAll => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                if !p.seed {
                    self.picker.remove_bitfield(&p.bits);
                    p.bits = Bitfield::new(p.bits.len());
                    p.seed = true;
                    self.picker.add_seed();
                }
                self.after_availability(key);
            }
            PeerEvent::HaveNone => {}
            PeerEvent::Have(i) => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                if p.seed || !p.bits.set(i as usize) {
                    return;
                }
                self.picker.add_have(i);
                if p.bits.is_full() {
                    self.picker.remove_bitfield(&p.bits);
                    p.bits = Bitfield::new(p.bits.len());
                    p.seed = true;
                    self.picker.add_seed();
                }
                self.after_availability(key);
                if self
                    .super_seed
                    .as_mut()
                    .is_some_and(|ss| ss.announced(key, i))
                {
                    self.reveal(key);
                }
            }
            PeerEvent::Extended {
                reqq,
                client,
                listen_port,
                pex,
            } => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.pex = pex;
                if let (None, Some(port)) = (p.listen, listen_port.filter(|p| *p != 0)) {
                    p.listen = Some(SocketAddr::new(p.addr.ip(), port));
                }
                if let Some(q) = reqq {
                    p.reqq = (q as usize).clamp(1, MAX_QUEUE);
                    p.depth = p.depth.min(p.reqq);
                }
                if let Some(c) = client {
                    tracing::debug!("{}: client {c}", p.addr);
                }
            }
            PeerEvent::Pex(added) => {
                let Some(p) = self.peers.get(&key) else {
                    return;
                };
                let ours = [SocketAddr::new(
                    std::net::Ipv4Addr::LOCALHOST.into(),
                    self.shared.listen_port,
                )];
                let found = crate::peer::pex::accept(p.addr, &ours, &added);
                tracing::debug!(
                    "{}: pex named {} peers, {} usable",
                    p.addr,
                    added.len(),
                    found.len()
                );
                self.add_peers(PeerSource::Pex, found);
            }
            PeerEvent::Choked => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.peer_choking = true;
                // Its requests are void; hand the blocks to others.
                self.picker.peer_gone(key);
                self.fill_all();
            }
            PeerEvent::Unchoked => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.peer_choking = false;
                p.last_block = Instant::now();
                self.fill(key);
            }
            PeerEvent::Interested(yes) => {
                let Some(p) = self.peers.get_mut(&key) else {
                    return;
                };
                p.peer_interested = yes;
                if !yes && !p.am_choking {
                    // Done with us: its slot is free for someone who wants it.
                    self.rechoke(Instant::now());
                } else if yes && p.am_choking {
                    // A free upload slot is given at once rather than at
                    // the next 10 s round; a full house waits its turn.
                    let unchoked = self.peers.values().filter(|p| !p.am_choking).count();
                    if unchoked <= self.cfg.upload_slots {
                        self.rechoke(Instant::now());
                    } else {
                        self.rechoke_soon = true;
                    }
                }
            }
            PeerEvent::Block { block, data } => self.on_block(key, block, data),
            PeerEvent::PieceLost(piece) => self.on_piece_lost(piece),
            PeerEvent::Rejected(b) => {
                self.picker.release(key, b);
                self.fill_all();
            }
            PeerEvent::Hashes { req, hashes } => {
                if !self.on_leaf_hashes(key, req, &hashes) {
                    self.on_hashes(key, req, hashes);
                }
            }
            PeerEvent::HashRejected(req) if self.is_leaf_request(&req) => {
                self.leaf_refused(key, Some(req))
            }
            PeerEvent::HashRejected(req) => {
                if let Some(l) = self.layers.as_mut() {
                    l.on_reject(key, &req, Instant::now());
                }
                self.request_hashes_all();
            }
        }
    }

    /// After a peer's pieces became known: drop two-seed pairs, update
    /// interest, and request if we can.
    fn after_availability(&mut self, key: PeerKey) {
        let complete = self.picker.is_complete();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if complete && p.seed {
            p.send(PeerCmd::Close("both seeds".into()));
            return;
        }
        let want = !complete && self.picker.interesting(p.has());
        if want != p.am_interested {
            p.am_interested = want;
            p.send(PeerCmd::Interested(want));
        }
        self.request_hashes(key);
        self.fill(key);
    }

    /// Tops up the requests in flight to `key` to its queue depth.
    fn fill(&mut self, key: PeerKey) {
        if self.webseeds.contains_key(&key) {
            return self.fill_web(key);
        }
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if p.peer_choking || !p.am_interested || self.picker.is_complete() {
            return;
        }
        if self.verify_backlog() {
            return;
        }
        let depth = if p.snubbed { 1 } else { p.depth.min(p.reqq) };
        let out_now = self.picker.outstanding(key);
        if out_now >= depth {
            return;
        }
        let mut out = Vec::new();
        self.picker.pick(key, p.has(), depth - out_now, &mut out);
        if !out.is_empty() {
            p.send(PeerCmd::Request(out));
        }
    }

    /// Hashing is behind the network: it catches up before more pieces
    /// are asked for or started, so memory stays bounded.
    fn verify_backlog(&self) -> bool {
        self.verifying * self.meta.piece_length as usize > MAX_VERIFY_BYTES && self.verifying >= 4
    }

    fn fill_all(&mut self) {
        let keys: Vec<PeerKey> = self
            .peers
            .keys()
            .chain(self.webseeds.keys())
            .copied()
            .collect();
        for k in keys {
            self.fill(k);
        }
    }

    fn on_block(&mut self, key: PeerKey, block: BlockRef, data: Bytes) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.last_block = Instant::now();
            p.snubbed = false;
            // Slow start: until the first rate sample, each block received
            // widens the window by one, doubling it every round trip.
            if p.down.get() == 0 {
                p.depth = (p.depth + 1).min(p.reqq).min(MAX_QUEUE);
            }
        }
        match self.picker.on_block(key, block) {
            BlockOutcome::Duplicate => {}
            BlockOutcome::Accepted {
                piece_complete,
                cancel,
            } => {
                for other in cancel {
                    if let Some(p) = self.peers.get(&other) {
                        p.send(PeerCmd::Cancel(block));
                    } else if let Some(w) = self.webseeds.get(&other) {
                        let _ = w.cmd.send(WebCmd::Cancel(block));
                    }
                }
                let size = self.meta.piece_size(block.index) as usize;
                let blocks = self.picker.blocks_in_piece(block.index) as usize;
                let spare = &mut self.spare;
                let store = &self.shared.store;
                let buf = self.partial.entry(block.index).or_insert_with(|| {
                    let mut data = spare.pop().unwrap_or_default();
                    data.set_len(size, store.layout().piece_phase(block.index));
                    PieceBuf {
                        data,
                        senders: vec![0; blocks],
                    }
                });
                let start = block.begin as usize;
                let end = start + data.len();
                if end <= buf.data.len() {
                    buf.data[start..end].copy_from_slice(&data);
                    if let Some(s) = buf.senders.get_mut(start / BLOCK_LEN as usize) {
                        *s = key;
                    }
                }
                if piece_complete {
                    if let Some(buf) = self.partial.remove(&block.index) {
                        self.verify(block.index, buf);
                    }
                }
            }
        }
        self.fill(key);
    }

    /// Queues a complete piece for its hash check.
    fn verify(&mut self, piece: u32, buf: PieceBuf) {
        self.verifying += 1;
        self.hash_queue.push_back((piece, buf));
        self.pump_hashing();
    }

    /// Hashes queued pieces off the runtime, one job per core, and writes the
    /// good ones; each answer comes back as an event.
    fn pump_hashing(&mut self) {
        while self.hashing < self.max_hashing && !self.hash_queue.is_empty() {
            // Small pieces go in batches: a job per 16 KiB piece would spend
            // more on waking threads than on hashing.
            let mut jobs = Vec::new();
            let mut bytes = 0usize;
            while bytes < HASH_BATCH_BYTES {
                let Some((piece, buf)) = self.hash_queue.pop_front() else {
                    break;
                };
                bytes += buf.data.len();
                let with_blocks = self.suspects.contains_key(&piece);
                jobs.push((piece, buf, with_blocks));
            }
            self.hashing += 1;
            let store = self.shared.store.clone();
            let tx = self.events_tx.clone();
            tokio::task::spawn_blocking(move || {
                // After a failed write (disk full, say) the store refuses
                // every later one, so at most one half-written piece is left.
                let done: Vec<Verified> = jobs
                    .into_iter()
                    .map(|(piece, buf, with_blocks)| {
                        let PieceBuf { data, senders } = buf;
                        // Read here, off the runtime: large torrents keep
                        // their hashes in the .torrent file. If that fails,
                        // the download stops; no peer is blamed.
                        // SHA-1, or the merkle tree of a v2-only torrent.
                        let (ok, expected_err) = match store.layout().verify(piece, &data) {
                            Ok(ok) => (ok, None),
                            Err(e) => (false, Some(e)),
                        };
                        let write = if let Some(e) = expected_err {
                            Err(e)
                        } else if !ok {
                            Ok(())
                        } else {
                            store.write_piece(piece, &data)
                        };
                        let (leaves, pad_bad) = match &store.layout().v2 {
                            Some(v2) if !ok && write.is_ok() => {
                                leaves::our_leaves(v2, piece, &data)
                            }
                            _ => (Vec::new(), Vec::new()),
                        };
                        let block_hashes = if !ok || with_blocks {
                            data.chunks(BLOCK_LEN as usize)
                                .map(|c| <[u8; 20]>::from(Sha1::digest(c)))
                                .collect()
                        } else {
                            Vec::new()
                        };
                        Verified {
                            piece,
                            ok,
                            write,
                            block_hashes,
                            leaves,
                            pad_bad,
                            senders,
                            data,
                        }
                    })
                    .collect();
                let _ = tx.blocking_send(Event::Verified(done));
            });
        }
    }

    fn on_verified_batch(&mut self, batch: Vec<Verified>) -> Result<(), StoreError> {
        self.hashing = self.hashing.saturating_sub(1);
        let mut result = Ok(());
        for v in batch {
            if result.is_ok() {
                result = self.on_verified(v);
            } else {
                self.verifying = self.verifying.saturating_sub(1);
            }
        }
        // After a failed write the download stops: starting another job
        // would only leave one more half-written piece behind.
        if result.is_ok() {
            self.pump_hashing();
        }
        result
    }

    /// A piece we had changed on disk. While downloading it is fetched
    /// again; a complete torrent (seeding, perhaps from a read-only store),
    /// or a piece a file selection left out, just stops being served,
    /// which the peer tasks already do.
    fn on_piece_lost(&mut self, piece: u32) {
        if self.picker.is_complete()
            || !self.picker.wants(piece)
            || !self.picker.have().get(piece as usize)
        {
            return;
        }
        self.picker.piece_failed(piece);
        for s in self.meta.piece_slices(piece) {
            self.progress.file_done[s.file] = self.progress.file_done[s.file].saturating_sub(s.len);
        }
        self.recount_have();
        self.fill_all();
        self.publish();
    }

    fn on_verified(&mut self, mut v: Verified) -> Result<(), StoreError> {
        self.verifying = self.verifying.saturating_sub(1);
        let data = std::mem::take(&mut v.data);
        let senders = std::mem::take(&mut v.senders);
        if let Err(e) = v.write {
            self.recycle(data);
            return Err(e);
        }
        if !v.ok {
            self.progress.hash_failures += 1;
            let mut buf = PieceBuf { data, senders };
            let mut block_hashes = std::mem::take(&mut v.block_hashes);
            // A v2 piece: its leaf hashes may name the bad blocks.
            if !v.leaves.is_empty() {
                let leaves = std::mem::take(&mut v.leaves);
                let pad_bad = std::mem::take(&mut v.pad_bad);
                match self.start_leaf_check(v.piece, buf, block_hashes, leaves, pad_bad) {
                    Ok(()) => return Ok(()),
                    Err(back) => (buf, block_hashes) = back,
                }
            }
            self.recycle(buf.data);
            tracing::warn!("piece {} failed its hash check; fetching it again", v.piece);
            self.picker.piece_failed(v.piece);
            self.blame_failed(v.piece, &buf.senders, &block_hashes);
            self.fill_all();
            return Ok(());
        }
        self.recycle(data);
        self.piece_had(v.piece);
        self.recount_have();
        // Blocks that differ from the good copy name who sent bad data.
        if let Some(list) = self.suspects.remove(&v.piece) {
            for s in list {
                if v.block_hashes.get(s.block) != Some(&s.hash) {
                    match s.peer {
                        Some((addr, id)) => self.ban(s.key, addr, id, "sent corrupt data"),
                        None => self.ban_web(s.key, "sent corrupt data"),
                    }
                }
            }
        }
        if self.picker.is_complete() {
            self.on_complete();
        } else {
            self.fill_all();
        }
        Ok(())
    }

    /// A piece checked good (just downloaded, or found on disk once its
    /// layer came): had from now on, and told to peers at the next tick.
    fn piece_had(&mut self, p: u32) {
        self.picker.piece_passed(p);
        self.shared.have.set(p as usize);
        if !self.picker.wants(p) {
            // Kept out of the totals, as a file selection wants.
            self.have_unwanted_bytes += self.meta.piece_size(p);
        }
        for s in self.meta.piece_slices(p) {
            self.progress.file_done[s.file] += s.len;
        }
        self.pending_haves.push(p);
    }

    fn recycle(&mut self, data: PieceData) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(data);
        }
    }

    /// After a piece failed and was put back whole: a single sender is
    /// banned; several become suspects, named when a good copy shows
    /// which block differed.
    fn blame_failed(&mut self, piece: u32, senders: &[PeerKey], block_hashes: &[[u8; 20]]) {
        let distinct: HashSet<PeerKey> = senders.iter().copied().collect();
        if distinct.len() == 1 {
            if let Some(&k) = distinct.iter().next() {
                self.ban_sender(k, "sent corrupt data");
            }
        } else {
            let mut list = Vec::new();
            for (block, &k) in senders.iter().enumerate() {
                let peer = if let Some(p) = self.peers.get_mut(&k) {
                    p.strikes += 1;
                    Some((p.addr, p.peer_id))
                } else if let Some(w) = self.webseeds.get_mut(&k) {
                    w.strikes += 1;
                    None
                } else {
                    continue;
                };
                list.push(Suspect {
                    key: k,
                    peer,
                    block,
                    hash: block_hashes.get(block).copied().unwrap_or([0; 20]),
                });
            }
            let web_struck: Vec<PeerKey> = self
                .webseeds
                .iter()
                .filter(|(_, w)| w.strikes >= MAX_STRIKES)
                .map(|(k, _)| *k)
                .collect();
            for k in web_struck {
                self.ban_web(k, "involved in too many hash failures");
            }
            let struck: Vec<(PeerKey, SocketAddr, [u8; 20])> = self
                .peers
                .iter()
                .filter(|(_, p)| p.strikes >= MAX_STRIKES)
                .map(|(k, p)| (*k, p.addr, p.peer_id))
                .collect();
            for (k, a, id) in struck {
                self.ban(k, a, id, "involved in too many hash failures");
            }
            self.suspects.insert(piece, list);
        }
    }

    /// A v2 piece failed: keeps its data and asks a peer for its leaf
    /// hashes, which name the bad blocks. Hands the piece back when that
    /// cannot be done (no plan for it, a left-out piece, too many held).
    fn start_leaf_check(
        &mut self,
        piece: u32,
        buf: PieceBuf,
        block_hashes: Vec<[u8; 20]>,
        ours: Vec<merkle::Hash>,
        pad_bad: Vec<usize>,
    ) -> Result<(), (PieceBuf, Vec<[u8; 20]>)> {
        let plan = self
            .meta
            .v2
            .as_ref()
            .and_then(|v2| leaves::plan(v2, piece))
            .filter(|_| {
                self.picker.wants(piece)
                    && !self.leaf_checks.contains_key(&piece)
                    && self.leaf_checks.len() < MAX_LEAF_CHECKS
            });
        let Some(plan) = plan else {
            return Err((buf, block_hashes));
        };
        self.picker.piece_failed(piece);
        let mut one = Bitfield::new(self.meta.piece_count() as usize);
        one.set(piece as usize);
        self.picker.hold(&one);
        let pending =
            leaves::Pending::new(plan.req, plan.expected, ours, pad_bad, buf.senders.clone());
        let alone = (!plan.ask).then(|| pending.judge_alone());
        self.leaf_checks.insert(
            piece,
            LeafCheck {
                pending,
                buf,
                block_hashes,
            },
        );
        match alone {
            Some(verdict) => self.on_leaf_verdict(piece, verdict),
            None => {
                tracing::warn!("piece {piece} failed its hash check; asking for its leaf hashes");
                self.ask_leaves(piece);
            }
        }
        Ok(())
    }

    /// Asks a peer that has the piece for its leaf hashes, or gives up on
    /// them when nobody is left to ask.
    fn ask_leaves(&mut self, piece: u32) {
        let Some(c) = self.leaf_checks.get_mut(&piece) else {
            return;
        };
        let mut keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.hashes_ok && (p.seed || p.bits.get(piece as usize)))
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        match c.pending.choose(keys) {
            Some(k) => {
                c.pending.asked(k, Instant::now());
                if let Some(p) = self.peers.get(&k) {
                    tracing::debug!("{}: asking for the leaf hashes of piece {piece}", p.addr);
                    p.send(PeerCmd::HashRequest(c.pending.req));
                }
            }
            None => self.leaf_fallback(piece, "no peer to ask for its leaf hashes"),
        }
    }

    /// The leaf hashes cannot be had or do not explain the failure: the
    /// piece is fetched again whole, as for a v1 piece.
    fn leaf_fallback(&mut self, piece: u32, why: &str) {
        let Some(c) = self.leaf_checks.remove(&piece) else {
            return;
        };
        tracing::warn!("piece {piece}: {why}; fetching it again whole");
        self.picker.release_held(piece..piece + 1);
        self.blame_failed(piece, &c.buf.senders, &c.block_hashes);
        self.recycle(c.buf.data);
        self.fill_all();
    }

    fn is_leaf_request(&self, req: &HashRequest) -> bool {
        self.leaf_checks.values().any(|c| c.pending.req == *req)
    }

    /// A leaf-hash answer (base layer 0) to one of our failed pieces;
    /// false when `req` is not one (with 16 KiB pieces base layer 0 is
    /// also the piece layer a magnet's download asks for).
    fn on_leaf_hashes(&mut self, key: PeerKey, req: HashRequest, got: &[merkle::Hash]) -> bool {
        let Some((&piece, c)) = self
            .leaf_checks
            .iter_mut()
            .find(|(_, c)| c.pending.req == req)
        else {
            return false;
        };
        let verdict = c.pending.on_answer(key, got);
        if verdict == leaves::Verdict::Lie {
            if let Some(p) = self.peers.get_mut(&key) {
                tracing::warn!(
                    "{}: sent leaf hashes of piece {piece} that do not lead to its hash",
                    p.addr
                );
                p.strikes += 1;
            }
            self.ask_leaves(piece);
            return true;
        }
        self.on_leaf_verdict(piece, verdict);
        true
    }

    /// The peer asked for a piece's leaves refused or left: someone else
    /// is asked.
    fn leaf_refused(&mut self, key: PeerKey, req: Option<HashRequest>) {
        let pieces: Vec<u32> = self
            .leaf_checks
            .iter()
            .filter(|(_, c)| {
                c.pending.asked_peer() == Some(key) && req.is_none_or(|r| r == c.pending.req)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in pieces {
            if let Some(c) = self.leaf_checks.get_mut(&p) {
                c.pending.refused(key);
            }
            self.ask_leaves(p);
        }
    }

    /// Proven leaves named the bad blocks: their senders are banned (the
    /// proof is cryptographic, one failure is enough), the good blocks
    /// are kept and only the bad ones asked for again.
    fn on_leaf_verdict(&mut self, piece: u32, verdict: leaves::Verdict) {
        let bad = match verdict {
            leaves::Verdict::Bad(bad) => bad,
            leaves::Verdict::Lie | leaves::Verdict::Unexplained => {
                return self.leaf_fallback(piece, "its leaf hashes do not show a bad block");
            }
        };
        let Some(c) = self.leaf_checks.remove(&piece) else {
            return;
        };
        let kept: Vec<Option<PeerKey>> = c
            .buf
            .senders
            .iter()
            .enumerate()
            .map(|(i, k)| (!bad.contains(&i)).then_some(*k))
            .collect();
        let culprits: HashSet<PeerKey> = bad
            .iter()
            .filter_map(|i| c.buf.senders.get(*i).copied())
            .collect();
        tracing::warn!(
            "piece {piece}: leaf hashes show {} bad block(s) of {}; fetching only those",
            bad.len(),
            kept.len()
        );
        for k in culprits {
            self.ban_sender(k, "sent a block its leaf hash proves corrupt");
        }
        if self.picker.resume(piece, &kept) {
            self.partial.insert(piece, c.buf);
        } else {
            self.picker.release_held(piece..piece + 1);
            self.recycle(c.buf.data);
        }
        self.fill_all();
    }

    /// Leaf requests unanswered for [`leaves::TIMEOUT`]: the pieces are
    /// fetched again whole.
    fn expire_leaf_checks(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .leaf_checks
            .iter()
            .filter(|(_, c)| c.pending.expired(now))
            .map(|(p, _)| *p)
            .collect();
        for p in late {
            self.leaf_fallback(p, "no answer to the request for its leaf hashes");
        }
    }

    /// Bans whoever sent blocks under `key`: a connected peer or a web seed.
    fn ban_sender(&mut self, key: PeerKey, why: &str) {
        if let Some(p) = self.peers.get(&key) {
            let (addr, id) = (p.addr, p.peer_id);
            self.ban(key, addr, id, why);
        } else if self.webseeds.contains_key(&key) {
            self.ban_web(key, why);
        }
    }

    fn ban(&mut self, key: PeerKey, addr: SocketAddr, peer_id: [u8; 20], why: &str) {
        if !self.banned_ids.insert(peer_id) && self.banned_addrs.contains(&addr) {
            return;
        }
        self.banned_addrs.insert(addr);
        self.progress.banned += 1;
        tracing::warn!("banning peer {addr}: {why}");
        if let Some(p) = self.peers.get(&key) {
            p.send(PeerCmd::Close(format!("banned: {why}")));
        }
    }

    /// Starts a task for each usable web seed (BEP 19) among `urls`. A URL
    /// that cannot be used (not http(s)) is logged and left out.
    pub fn add_web_seeds(&mut self, urls: &[String]) {
        if urls.is_empty() || self.picker.is_complete() {
            return;
        }
        let client = match webseed::client() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("web seeds not used: {e}");
                return;
            }
        };
        for url in urls {
            let shown = crate::out::escape(url).into_owned();
            if self.webseeds.values().any(|w| w.url == shown) {
                continue;
            }
            let files = match webseed::file_urls(url, &self.meta) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("web seed {shown}: {e}; not used");
                    continue;
                }
            };
            let key = self.next_key;
            self.next_key += 1;
            let (cmd, cmd_rx) = mpsc::unbounded_channel();
            let stats = Arc::new(PeerStats::default());
            tokio::spawn(webseed::run(
                webseed::Seed {
                    key,
                    files,
                    meta: self.meta.clone(),
                    shared: self.shared.clone(),
                    stats: stats.clone(),
                    client: client.clone(),
                    events: self.events_tx.clone(),
                    unwanted: self.picker.unwanted().cloned(),
                },
                cmd_rx,
            ));
            tracing::debug!("web seed {shown}: in use");
            self.picker.add_seed();
            self.webseeds.insert(key, WebSeed::new(shown, cmd, stats));
            if self.state == State::Connecting {
                self.state = State::Downloading;
            }
            self.fill_web(key);
        }
    }

    /// Web seeds not backing off.
    fn active_web_seeds(&self) -> usize {
        self.webseeds.values().filter(|w| w.active()).count()
    }

    fn on_web_event(&mut self, key: PeerKey, ev: WebEvent) {
        // A banned server's late data is not taken.
        let Some(w) = self.webseeds.get_mut(&key) else {
            return;
        };
        match ev {
            WebEvent::Block { block, data } => {
                w.last_block = Instant::now();
                if w.active() {
                    w.failures = 0;
                }
                self.on_block(key, block, data);
            }
            WebEvent::Offered { block, data } => {
                w.last_block = Instant::now();
                if w.active() {
                    w.failures = 0;
                }
                // A new piece only while hashing keeps up (memory stays
                // bounded); a later read of the file brings it again.
                // Asked of it a moment ago: the ask is answered.
                if self.picker.is_requested(key, block) {
                    let _ = w.cmd.send(WebCmd::Cancel(block));
                }
                if !self.verify_backlog() {
                    self.picker.start_if_free(block.index);
                }
                self.on_block(key, block, data);
            }
            WebEvent::IgnoresRanges => {
                w.whole_files = true;
                tracing::info!(
                    "web seed {}: ignores Range requests; reading whole files from the start",
                    w.url
                );
            }
            WebEvent::Failed { blocks, why } => {
                let active = w.active();
                for b in blocks {
                    self.picker.release(key, b);
                }
                if active {
                    self.web_failed(key, &why);
                }
                self.fill_all();
            }
        }
    }

    /// Tops up the blocks asked of a web seed to its queue depth.
    fn fill_web(&mut self, key: PeerKey) {
        if self.picker.is_complete() || self.verify_backlog() {
            return;
        }
        let Some(w) = self.webseeds.get_mut(&key) else {
            return;
        };
        let out_now = self.picker.outstanding(key);
        if !w.active() || out_now >= w.depth {
            return;
        }
        let mut out = Vec::new();
        self.picker
            .pick(key, PeerHas::All, w.depth - out_now, &mut out);
        if !out.is_empty() {
            if out_now == 0 {
                // The wait for data starts now, not at the last block.
                w.last_block = Instant::now();
            }
            let _ = w.cmd.send(WebCmd::Fetch(out));
        }
    }

    /// A request to a web seed failed: its blocks go back to the picker and
    /// it is left alone for a while, longer after each failure in a row.
    fn web_failed(&mut self, key: PeerKey, why: &str) {
        let Some(w) = self.webseeds.get_mut(&key) else {
            return;
        };
        w.failures += 1;
        let wait = web_retry_delay(w.failures);
        w.retry_at = Some(Instant::now() + wait);
        let _ = w.cmd.send(WebCmd::Reset);
        let counted = std::mem::replace(&mut w.counted, false);
        let url = w.url.clone();
        if counted {
            self.picker.remove_seed();
        }
        self.picker.peer_gone(key);
        tracing::warn!(retry_in = wait.as_secs(), "web seed {url}: {why}");
        self.web_failure = Some((url, web_reason(why), Some(wait.as_secs())));
    }

    /// Stops using a web seed that sent bad data, for the rest of the run.
    fn ban_web(&mut self, key: PeerKey, why: &str) {
        let Some(w) = self.webseeds.remove(&key) else {
            return;
        };
        // Dropping it closes its command channel: the task ends.
        if w.counted {
            self.picker.remove_seed();
        }
        self.picker.peer_gone(key);
        self.progress.banned += 1;
        tracing::warn!("banning web seed {}: {why}", w.url);
        self.web_failure = Some((w.url, why.to_string(), None));
    }

    /// Once a second for web seeds: rates and queue depths, a server that
    /// stopped sending fails, a backed-off one is asked again.
    fn web_second(&mut self, secs: f64, now: Instant) {
        let mut stalled = Vec::new();
        let mut again = Vec::new();
        for (k, w) in self.webseeds.iter_mut() {
            let bytes = w.stats.downloaded.load(Ordering::Relaxed);
            w.down.update(bytes, secs);
            if w.whole_files && bytes != w.seen_bytes {
                w.last_block = now;
            }
            w.seen_bytes = bytes;
            let bdp = (w.down.get() * WEB_QUEUE_SECONDS / BLOCK_LEN as u64) as usize;
            w.depth = bdp.clamp(WEB_MIN_QUEUE, WEB_MAX_QUEUE);
            match w.retry_at {
                Some(t) if t <= now => again.push(*k),
                None if self.picker.outstanding(*k) > 0
                    && now.duration_since(w.last_block) > SNUB_AFTER =>
                {
                    stalled.push(*k)
                }
                _ => {}
            }
        }
        for k in stalled {
            self.web_failed(k, &format!("no data for {}s", SNUB_AFTER.as_secs()));
        }
        for k in again {
            if let Some(w) = self.webseeds.get_mut(&k) {
                w.retry_at = None;
                w.last_block = now;
                if !w.counted {
                    w.counted = true;
                    self.picker.add_seed();
                }
            }
        }
    }

    fn on_complete(&mut self) {
        self.flush_haves();
        self.state = if self.cfg.keep_seeding {
            State::Seeding
        } else {
            State::Done
        };
        self.partial.clear();
        self.signal_complete();
        // Web seeds have nothing more for us; their tasks end.
        for (_, w) in self.webseeds.drain() {
            if w.counted {
                self.picker.remove_seed();
            }
        }
        // Peers that only seed have nothing more for us.
        for p in self.peers.values_mut() {
            if p.seed {
                p.send(PeerCmd::Close("both seeds".into()));
            } else if p.am_interested {
                p.am_interested = false;
                p.send(PeerCmd::Interested(false));
            }
        }
        self.publish();
    }

    /// `--seed-ratio` or `--seed-time` reached (seeding forever without them).
    fn seed_goal_reached(&self, since: Instant) -> bool {
        let up = self.shared.uploaded.load(Ordering::Relaxed) as f64;
        let ratio = self
            .cfg
            .seed_ratio
            .is_some_and(|r| up >= r * self.meta.total_length as f64);
        let time = self.cfg.seed_time.is_some_and(|t| since.elapsed() >= t);
        ratio || time
    }

    fn signal_complete(&mut self) {
        if let Some(tx) = self.complete_tx.take() {
            let _ = tx.send(());
        }
    }

    /// Forgets a connected peer (its task is gone or told to close) and
    /// schedules a reconnect to it: after 10 s if it stayed a while,
    /// doubling per connection that ended within [`SHORT_LIVED`].
    fn remove_peer(&mut self, key: PeerKey, reason: &str) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        tracing::debug!("{}: disconnected: {reason}", p.addr);
        if let Some(ss) = self.super_seed.as_mut() {
            ss.release(key);
        }
        if p.seed {
            self.picker.remove_seed();
        } else {
            self.picker.remove_bitfield(&p.bits);
        }
        self.picker.peer_gone(key);
        if let Some(l) = self.layers.as_mut() {
            l.peer_gone(key);
        }
        self.leaf_refused(key, None);
        if let Some(c) = self.known.get_mut(&p.addr) {
            if p.connected_at.elapsed() < SHORT_LIVED {
                c.failures += 1;
            } else {
                c.failures = 0;
            }
            c.next_try = Instant::now() + reconnect_delay(c.failures);
        }
        if self.known.contains_key(&p.addr) && !self.banned_addrs.contains(&p.addr) {
            self.queue.push_back(p.addr);
        }
        // Its upload slot goes to a waiting peer now, not at the
        // next 10 s round: a leecher that finished and left must
        // not leave the last ones choked for seconds.
        if !p.am_choking {
            self.rechoke(Instant::now());
        }
        self.fill_all();
    }

    /// Makes room by closing the least useful peer that has had
    /// [`EVICT_AFTER`] to show interest: one neither side is interested in,
    /// fewest bytes exchanged first, then the oldest. False if every peer is
    /// worth keeping (or too new to judge).
    /// No room for another connection: this torrent's limit, or the
    /// session's for all torrents together.
    fn at_capacity(&self) -> bool {
        self.peers.len() + self.connecting.len() >= self.cfg.max_peers
            || self.shared.connections.full()
    }

    /// Tells the session's cap how many connections this torrent holds.
    fn count_connections(&self) {
        self.shared
            .my_connections
            .store(self.peers.len() + self.connecting.len(), Ordering::Relaxed);
    }

    fn evict_one(&mut self) -> bool {
        let now = Instant::now();
        let victim = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.am_interested
                    && !p.peer_interested
                    && now.duration_since(p.connected_at) >= EVICT_AFTER
            })
            .min_by_key(|(_, p)| {
                let bytes = p.stats.downloaded.load(Ordering::Relaxed)
                    + p.stats.uploaded.load(Ordering::Relaxed);
                (bytes, p.connected_at)
            })
            .map(|(k, _)| *k);
        let Some(key) = victim else {
            return false;
        };
        if let Some(p) = self.peers.get(&key) {
            p.send(PeerCmd::Close("making room for another peer".into()));
        }
        self.remove_peer(key, "idle; made room for another peer");
        true
    }

    fn connect_failed(&mut self, addr: SocketAddr, reason: &str) {
        if let Some(c) = self.known.get_mut(&addr) {
            c.failures += 1;
            // 5 s, 10 s, 20 s … capped at 10 min.
            let wait = (5u64 << c.failures.min(7)).min(600);
            c.next_try = Instant::now() + Duration::from_secs(wait);
            self.queue.push_back(addr);
            self.last_failure = Some((addr, short_reason(reason), wait));
        }
    }

    /// The state and the line that explains it. Endgame needs peers with
    /// blocks in flight: with nobody to ask, every piece merely looks
    /// "requested by no one", which is not the end of anything.
    fn status(&self) -> (State, String) {
        let state = match self.state {
            State::Endgame | State::Downloading | State::Connecting => {
                let in_flight = self
                    .peers
                    .keys()
                    .chain(self.webseeds.keys())
                    .any(|k| self.picker.outstanding(*k) > 0);
                if self.peers.is_empty() && self.active_web_seeds() == 0 {
                    State::Connecting
                } else if self.picker.in_endgame() && in_flight {
                    State::Endgame
                } else {
                    State::Downloading
                }
            }
            s => s,
        };
        if state == State::Seeding && self.super_seed.is_some() {
            return (state, "super-seeding".to_string());
        }
        if state != State::Connecting {
            return (state, state.label().to_string());
        }
        let text = if !self.connecting.is_empty() {
            match self.last_failure.as_ref() {
                Some((addr, why, _)) if self.connecting.len() == 1 => {
                    format!("connecting (last: peer {addr}: {why})")
                }
                _ if self.connecting.len() == 1 => "connecting to 1 peer".to_string(),
                _ => format!("connecting to {} peers", self.connecting.len()),
            }
        } else if let Some((addr, why, wait)) = &self.last_failure {
            let wait = crate::units::human_eta(Duration::from_secs(*wait));
            format!("peer {addr}: {why}, retry in {wait}")
        } else if let Some((url, why, wait)) = &self.web_failure {
            match wait {
                Some(wait) => format!(
                    "web seed {url}: {why}, retry in {}",
                    crate::units::human_eta(Duration::from_secs(*wait))
                ),
                None => format!("web seed {url}: banned: {why}"),
            }
        } else {
            self.waiting_for_peers()
        };
        (state, text)
    }

    /// "waiting for peers: tracker 10.0.0.1:6969 unreachable, DHT off":
    /// why no peer came, from what the trackers said and which sources
    /// are off.
    fn waiting_for_peers(&self) -> String {
        let (trackers, dht) = self.sources;
        let mut why: Vec<String> = Vec::new();
        match &self.tracker_status {
            Some(t) => why.push(t.clone()),
            None if !trackers => why.push("no tracker".into()),
            None => {}
        }
        if self.meta.private {
            why.push("private: trackers only".into());
        } else if !dht {
            why.push("DHT off".into());
        }
        if why.is_empty() {
            "waiting for peers".into()
        } else {
            format!("waiting for peers: {}", why.join(", "))
        }
    }

    /// Where peers may come from (see `sources`), as the session set up:
    /// the trackers (none yet contacted) and whether the DHT is on.
    pub fn set_sources(&mut self, trackers: Vec<TrackerView>, dht: bool) {
        self.sources = (!trackers.is_empty(), dht);
        self.progress.trackers = trackers;
        self.publish();
    }

    /// Tells peers about new pieces, batched per tick: one command (and one
    /// write) per peer instead of one per piece per peer. A peer that has
    /// the piece is told too: a super-seeder (BEP 16) shows us the next
    /// piece only once we announce the one it showed us.
    fn flush_haves(&mut self) {
        if self.pending_haves.is_empty() {
            return;
        }
        let haves = std::mem::take(&mut self.pending_haves);
        for p in self.peers.values() {
            if !p.seed {
                p.send(PeerCmd::Haves(haves.clone()));
            }
        }
    }

    fn on_tick(&mut self) {
        self.update_deadlines();
        self.count_connections();
        self.flush_haves();
        let now = Instant::now();
        self.expire_leaf_checks(now);
        // Sampled every tick, so the shown rate moves within a tick of the
        // data (the per-peer ones, for choking, stay per second).
        let t = now.duration_since(self.started).as_secs_f64();
        self.down_rate
            .update(t, self.shared.downloaded.load(Ordering::Relaxed));
        self.up_rate
            .update(t, self.shared.uploaded.load(Ordering::Relaxed));
        let secs = now.duration_since(self.last_tick).as_secs_f64();
        if secs >= 1.0 {
            self.last_tick = now;
            self.second(secs, now);
        }
        if self.rechoke_soon || now.duration_since(self.last_rechoke) >= RECHOKE_EVERY {
            self.rechoke(now);
        }
        self.publish();
    }

    /// BEP 11: each peer that takes part hears, at most once a minute, which
    /// peers we gained and lost since it last heard.
    fn exchange_peers(&mut self, now: Instant) {
        let everyone: Vec<(PeerKey, SocketAddr, u8)> = self
            .peers
            .iter()
            .filter_map(|(k, p)| {
                let flags = if p.seed {
                    crate::peer::pex::flags::SEED
                } else {
                    0
                };
                p.listen
                    .map(|l| (*k, l, flags | crate::peer::pex::flags::OUTGOING_OK))
            })
            .collect();
        for (key, p) in self.peers.iter_mut() {
            if !p.pex
                || p.pex_at
                    .is_some_and(|t| now.duration_since(t) < crate::peer::pex::INTERVAL)
            {
                continue;
            }
            let others: Vec<(SocketAddr, u8)> = everyone
                .iter()
                .filter(|(k, _, _)| k != key)
                .map(|(_, a, f)| (*a, *f))
                .collect();
            if let Some(m) = crate::peer::pex::next_message(&mut p.pex_sent, &others) {
                p.pex_at = Some(now);
                p.send(PeerCmd::Pex(m.encode()));
            }
        }
    }

    /// Once a second: rates, queue depths, snubs, interest, connections.
    fn second(&mut self, secs: f64, now: Instant) {
        self.exchange_peers(now);
        let complete = self.picker.is_complete();
        let mut snubbed = Vec::new();
        for (k, p) in self.peers.iter_mut() {
            p.down
                .update(p.stats.downloaded.load(Ordering::Relaxed), secs);
            p.up.update(p.stats.uploaded.load(Ordering::Relaxed), secs);
            let bdp = (p.down.get() * QUEUE_SECONDS / BLOCK_LEN as u64) as usize;
            p.depth = bdp.clamp(MIN_QUEUE, MAX_QUEUE).min(p.reqq);
            if !p.snubbed
                && self.picker.outstanding(*k) > 0
                && now.duration_since(p.last_block) > SNUB_AFTER
            {
                p.snubbed = true;
                snubbed.push(*k);
            }
            let want = !complete && self.picker.interesting(p.has());
            if want != p.am_interested {
                p.am_interested = want;
                p.send(PeerCmd::Interested(want));
            }
        }
        self.web_second(secs, now);
        if let Some(l) = self.layers.as_mut() {
            let expired = l.expire(now);
            if expired > 0 {
                tracing::debug!("{expired} hash request(s) timed out; asking others");
            }
        }
        self.request_hashes_all();
        for k in snubbed {
            // Hand its blocks to others; it keeps a queue of one.
            tracing::debug!("peer {k} is snubbing us");
            let blocks = self.picker.peer_gone(k);
            if let Some(p) = self.peers.get(&k) {
                for b in blocks {
                    p.send(PeerCmd::Cancel(b));
                }
            }
        }
        if !complete {
            self.state = self.status().0;
        }
        self.fill_all();
        self.connect_more();
        self.reveal_all();
    }

    /// Super-seeding: shows each peer pieces it lacks, a window's worth to
    /// those we upload to and one to the rest (so they stay interested and
    /// get their turn).
    fn reveal(&mut self, key: PeerKey) {
        let (Some(ss), Some(p)) = (self.super_seed.as_mut(), self.peers.get(&key)) else {
            return;
        };
        if p.seed {
            return;
        }
        let want = if p.am_choking {
            1
        } else {
            superseed::window(self.meta.piece_length, self.meta.piece_count())
        };
        let picker = &self.picker;
        let new = ss.reveal(
            key,
            want,
            &p.bits,
            |i| picker.availability(i),
            &mut rand::thread_rng(),
        );
        if !new.is_empty() {
            p.send(PeerCmd::Haves(new));
        }
    }

    fn reveal_all(&mut self) {
        let Some(ss) = &self.super_seed else {
            return;
        };
        if ss.finished(|i| self.picker.availability(i)) {
            // Every piece is out there: from now on, a plain seeder.
            tracing::info!(
                "super-seeding done: every piece is in the swarm, {} bytes sent",
                self.shared.uploaded.load(Ordering::Relaxed)
            );
            self.super_seed = None;
            self.shared.super_seed.store(false, Ordering::Relaxed);
            for p in self.peers.values().filter(|p| !p.seed) {
                let missing: Vec<u32> = (0..self.meta.piece_count())
                    .filter(|&i| !p.bits.get(i as usize))
                    .collect();
                p.send(PeerCmd::Haves(missing));
            }
            return;
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.reveal(k);
        }
    }

    fn rechoke(&mut self, now: Instant) {
        self.rechoke_soon = false;
        self.last_rechoke = now;
        let snaps: Vec<PeerSnapshot> = self
            .peers
            .iter()
            .map(|(k, p)| PeerSnapshot {
                key: *k,
                interested: p.peer_interested,
                download_rate: p.down.get(),
                upload_rate: p.up.get(),
                snubbed: p.snubbed,
            })
            .collect();
        let secs = now.duration_since(self.started).as_secs();
        let unchoke: HashSet<u64> = self
            .choker
            .rechoke(&snaps, self.picker.is_complete(), secs)
            .into_iter()
            .collect();
        for (k, p) in self.peers.iter_mut() {
            let choke = !unchoke.contains(k);
            if choke != p.am_choking {
                p.am_choking = choke;
                p.send(if choke {
                    PeerCmd::Choke
                } else {
                    PeerCmd::Unchoke
                });
                if choke {
                    if let Some(ss) = self.super_seed.as_mut() {
                        ss.release(*k);
                    }
                }
            }
        }
        self.reveal_all();
    }

    fn publish(&mut self) {
        let (state, status) = self.status();
        self.progress.state = state;
        self.progress.status = status;
        self.progress.down_rate = self.down_rate.get();
        self.progress.up_rate = self.up_rate.get();
        self.progress.downloaded = self.shared.downloaded.load(Ordering::Relaxed);
        self.progress.uploaded = self.shared.uploaded.load(Ordering::Relaxed);
        let web = self.active_web_seeds();
        self.progress.peers = self.peers.len() + web;
        self.progress.known_peers = self.known.len().max(self.peers.len());
        self.progress.peer_sources.clear();
        for p in self.peers.values() {
            *self
                .progress
                .peer_sources
                .entry(p.source.label())
                .or_default() += 1;
        }
        if web > 0 {
            self.progress.peer_sources.insert(WEB_SEED_LABEL, web);
        }
        if self
            .peer_list_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.peer_list_at = Some(Instant::now());
            self.progress.peer_list = Arc::new(self.peer_views());
        }
        self.progress_tx.send_replace(self.progress.clone());
    }

    fn peer_views(&self) -> Vec<PeerView> {
        let count = self.meta.piece_count().max(1) as f64;
        let mut v: Vec<PeerView> = self
            .peers
            .values()
            .map(|p| PeerView {
                addr: p.addr,
                source: p.source.label(),
                client: client_name(&p.peer_id),
                progress: if p.seed {
                    1.0
                } else {
                    p.bits.count_ones() as f64 / count
                },
                down_rate: p.down.get(),
                up_rate: p.up.get(),
                downloaded: p.stats.downloaded.load(Ordering::Relaxed),
                uploaded: p.stats.uploaded.load(Ordering::Relaxed),
                choked: p.peer_choking,
                interested: p.am_interested,
            })
            .collect();
        v.sort_by(|a, b| b.down_rate.cmp(&a.down_rate).then(a.addr.cmp(&b.addr)));
        v
    }
}

/// The printable start of a peer id: Azureus style "-TR3000-", else the
/// printable ASCII prefix (it is untrusted text, shown in a browser).
fn client_name(id: &[u8; 20]) -> String {
    if id[0] == b'-' && id[7] == b'-' && id[1..7].iter().all(|b| b.is_ascii_alphanumeric()) {
        return String::from_utf8_lossy(&id[..8]).into_owned();
    }
    id.iter()
        .take_while(|b| b.is_ascii_graphic())
        .take(8)
        .map(|&b| b as char)
        .collect()
}

/// The gist of a web seed's error for a status line: the last cause,
/// without the OS error number ("connection refused", "HTTP 404 Not Found").
fn web_reason(why: &str) -> String {
    let last = why.rsplit(": ").next().unwrap_or(why);
    let last = match last.find(" (os error") {
        Some(i) => &last[..i],
        None => last,
    };
    let mut c = last.chars();
    match (c.next(), c.next()) {
        (Some(f), Some(s)) if s.is_lowercase() => f
            .to_lowercase()
            .chain(last[f.len_utf8()..].chars())
            .collect(),
        _ => last.to_string(),
    }
}

/// The gist of an error chain for a status line: its last part, without
/// the OS error number ("connect: Connection refused (os error 111)" →
/// "connection refused").
pub fn short_reason(reason: &str) -> String {
    let last = reason.rsplit(": ").next().unwrap_or(reason);
    let last = match last.find(" (os error") {
        Some(i) => &last[..i],
        None => last,
    };
    let mut c = last.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::bitfield::AtomicBitfield;
    use crate::metainfo::NewTorrent;
    use crate::store::{Layout, Store};

    const PIECE: usize = 2 * BLOCK_LEN as usize;

    struct Harness {
        t: Torrent,
        events: mpsc::Receiver<Event>,
        data: Vec<u8>,
        _dir: tempfile::TempDir,
    }

    /// A coordinator over `pieces` pieces of two blocks, with no sockets:
    /// the test plays the peers by sending their events and reading the
    /// commands they would get.
    fn harness(pieces: usize) -> Harness {
        harness_with(pieces, false)
    }

    /// `hashes_on_disk`: the torrent is loaded from a file in the test's
    /// folder and reads its piece hashes from there, as a torrent of more
    /// than 52k pieces does.
    fn harness_with(pieces: usize, hashes_on_disk: bool) -> Harness {
        let data: Vec<u8> = (0..pieces * PIECE).map(|i| (i * 7 % 251) as u8).collect();
        let hashes = data
            .chunks(PIECE)
            .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
            .collect();
        let nt = NewTorrent {
            name: "t".into(),
            length: data.len() as u64,
            piece_length: PIECE as u64,
            pieces: hashes,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let meta = if hashes_on_disk {
            let path = dir.path().join("t.torrent");
            std::fs::write(&path, nt.to_bytes()).unwrap();
            let m = Metainfo::from_file_with(&path, 0).unwrap();
            assert!(m.hashes_on_disk());
            m
        } else {
            Metainfo::from_bytes(&nt.to_bytes()).unwrap()
        };
        let meta = Arc::new(meta);
        let store = Store::open_write(Layout::from_metainfo(&meta), dir.path()).unwrap();
        let empty = Bitfield::new(pieces);
        let shared = Arc::new(Shared::for_test(
            &meta,
            store,
            AtomicBitfield::from_bitfield(&empty),
        ));
        let (tx, events) = mpsc::channel(1024);
        let (progress_tx, _) = watch::channel(Progress::default());
        let (complete_tx, _) = tokio::sync::oneshot::channel();
        let cfg = Config {
            max_peers: 10,
            upload_slots: 4,
            keep_seeding: false,
            seed_ratio: None,
            seed_time: None,
        };
        let t = Torrent::new(meta, shared, &empty, cfg, tx, progress_tx, complete_tx);
        Harness {
            t,
            events,
            data,
            _dir: dir,
        }
    }

    impl Harness {
        /// A seed connects; returns its command queue.
        fn seed(&mut self, key: PeerKey) -> mpsc::UnboundedReceiver<PeerCmd> {
            let (cmd, rx) = mpsc::unbounded_channel();
            let addr: SocketAddr = format!("127.0.0.{key}:6881").parse().unwrap();
            self.peer(
                key,
                PeerEvent::Connected {
                    addr,
                    peer_id: [key as u8; 20],
                    fast: true,
                    v2: false,
                    incoming: false,
                    cmd,
                    stats: Arc::default(),
                },
            );
            self.peer(key, PeerEvent::HaveAll);
            rx
        }

        fn peer(&mut self, key: PeerKey, ev: PeerEvent) {
            self.t.on_event(Event::Peer(key, ev)).unwrap();
        }

        fn block(&self, b: BlockRef, corrupt: bool) -> PeerEvent {
            let start = b.index as usize * PIECE + b.begin as usize;
            let mut data = self.data[start..start + b.length as usize].to_vec();
            if corrupt {
                data[0] ^= 0xff;
            }
            PeerEvent::Block {
                block: b,
                data: Bytes::from(data),
            }
        }

        /// Peer `key` answers every request honestly until the download is
        /// complete; it must never be banned.
        async fn serve_until_complete(
            &mut self,
            key: PeerKey,
            rx: &mut mpsc::UnboundedReceiver<PeerCmd>,
        ) {
            for _ in 0..20 {
                let (asked, banned) = requests(rx);
                assert!(!banned, "peer {key} was banned");
                for b in asked {
                    let ev = self.block(b, false);
                    self.peer(key, ev);
                }
                self.settle().await;
                if self.t.is_complete() {
                    break;
                }
            }
            assert!(self.t.is_complete());
        }

        /// Feeds back hash results until none are pending.
        async fn settle(&mut self) {
            while self.t.verifying > 0 {
                let ev = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
                    .await
                    .expect("hash result")
                    .expect("channel open");
                self.t.on_event(ev).unwrap();
            }
        }
    }

    /// Blocks requested so far, and whether the peer was banned.
    fn requests(rx: &mut mpsc::UnboundedReceiver<PeerCmd>) -> (Vec<BlockRef>, bool) {
        let mut blocks = Vec::new();
        let mut banned = false;
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                PeerCmd::Request(b) => blocks.extend(b),
                PeerCmd::Close(why) => banned |= why.starts_with("banned"),
                _ => {}
            }
        }
        (blocks, banned)
    }

    /// A v2-only torrent without piece layers (as from a magnet): a file
    /// of 6 pieces and one of a single piece.
    fn harness_v2() -> (Harness, Vec<crate::metainfo::merkle::Hash>) {
        harness_v2_with(false)
    }

    /// `with_layers`: the torrent carries its piece layers (as a .torrent
    /// file does).
    fn harness_v2_with(with_layers: bool) -> (Harness, Vec<crate::metainfo::merkle::Hash>) {
        use crate::metainfo::{merkle, NewV2};
        let a: Vec<u8> = (0..6 * PIECE - 100).map(|i| (i * 13 % 251) as u8).collect();
        let b: Vec<u8> = vec![7; 1000];
        let pl = PIECE as u64;
        let layer: Vec<merkle::Hash> = a
            .chunks(PIECE)
            .map(|p| merkle::piece_hash(p, pl, a.len() as u64))
            .collect();
        let nt = NewTorrent {
            name: "t".into(),
            piece_length: pl,
            v2: Some(NewV2 {
                tree: vec![
                    (
                        vec!["a".into()],
                        a.len() as u64,
                        Some(merkle::file_root(&a, pl)),
                    ),
                    (
                        vec!["b".into()],
                        b.len() as u64,
                        Some(merkle::file_root(&b, pl)),
                    ),
                ],
                layers: if with_layers {
                    vec![(merkle::file_root(&a, pl), layer.concat())]
                } else {
                    Vec::new()
                },
            }),
            ..Default::default()
        };
        let meta = Arc::new(Metainfo::from_bytes(&nt.to_bytes()).unwrap());
        assert_eq!(meta.piece_count(), 7);
        // The piece space: each file padded to a whole piece.
        let mut data = a;
        data.resize(6 * PIECE, 0);
        data.extend_from_slice(&b);
        data.resize(7 * PIECE, 0);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_write(Layout::from_metainfo(&meta), dir.path()).unwrap();
        let empty = Bitfield::new(7);
        let shared = Arc::new(Shared::for_test(
            &meta,
            store,
            AtomicBitfield::from_bitfield(&empty),
        ));
        let (tx, events) = mpsc::channel(1024);
        let (progress_tx, _) = watch::channel(Progress::default());
        let (complete_tx, _) = tokio::sync::oneshot::channel();
        let cfg = Config {
            max_peers: 10,
            upload_slots: 4,
            keep_seeding: false,
            seed_ratio: None,
            seed_time: None,
        };
        let t = Torrent::new(meta, shared, &empty, cfg, tx, progress_tx, complete_tx);
        let h = Harness {
            t,
            events,
            data,
            _dir: dir,
        };
        (h, layer)
    }

    /// Every hash request and block request sent so far.
    fn v2_requests(rx: &mut mpsc::UnboundedReceiver<PeerCmd>) -> (Vec<HashRequest>, Vec<BlockRef>) {
        let (mut hashes, mut blocks) = (Vec::new(), Vec::new());
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                PeerCmd::HashRequest(r) => hashes.push(r),
                PeerCmd::Request(b) => blocks.extend(b),
                _ => {}
            }
        }
        (hashes, blocks)
    }

    /// The coordinator with a lying and an honest v2 seed: before the
    /// layer is known only the one-piece file is asked for; the liar's
    /// hashes are refused and it is not asked again; the honest answer
    /// releases the file's pieces, which then download and verify.
    #[tokio::test]
    async fn piece_layers_come_from_peers_and_lies_are_refused() {
        use crate::metainfo::merkle;
        let (mut h, layer) = harness_v2();
        let mut liar = h.seed(1);
        h.peer(1, PeerEvent::Unchoked);
        let (hash_reqs, blocks) = v2_requests(&mut liar);
        // The seed helper connects without the v2 bit: in a v2-only swarm
        // it is asked all the same.
        assert_eq!(hash_reqs.len(), 1);
        let req = hash_reqs[0];
        assert_eq!((req.index, req.length, req.proof_layers), (0, 8, 2));
        assert!(!blocks.is_empty());
        assert!(blocks.iter().all(|b| b.index == 6), "{blocks:?}");
        let lie = vec![[0x5a; 32]; 8];
        h.peer(1, PeerEvent::Hashes { req, hashes: lie });
        assert_eq!(h.t.progress.hash_failures, 1);
        assert!(!h.t.peers[&1].hashes_ok);
        let (again, _) = v2_requests(&mut liar);
        assert!(again.is_empty(), "the liar is asked again: {again:?}");
        for b in blocks {
            let ev = h.block(b, false);
            h.peer(1, ev);
        }
        h.settle().await;
        assert!(h.t.picker.have().get(6));
        assert!(!h.t.picker.have().get(0));

        let mut honest = h.seed(2);
        h.peer(2, PeerEvent::Unchoked);
        let (hash_reqs, blocks) = v2_requests(&mut honest);
        assert_eq!(hash_reqs, vec![req]);
        assert!(blocks.is_empty(), "{blocks:?}");
        let upper = merkle::upper_layers(&layer, layer.len(), 1);
        let answer = merkle::hashes_with_proof(&layer, &upper, 1, 0, 8, 2).unwrap();
        h.peer(
            2,
            PeerEvent::Hashes {
                req,
                hashes: answer,
            },
        );
        // The file's data on disk is checked (nothing there) before its
        // pieces are released.
        let ev = tokio::time::timeout(Duration::from_secs(10), h.events.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ev, Event::Rechecked { ref good, .. } if good.is_empty()));
        h.t.on_event(ev).unwrap();
        assert!(h.t.layers.is_none());
        h.serve_until_complete(2, &mut honest).await;
        assert_eq!(h.t.progress.hash_failures, 1);
    }

    /// One corrupt block of a v2 piece: the piece's leaf hashes are asked
    /// of a peer that sent none of it (a lying answer is not believed and
    /// the next peer is asked), the sender of the bad block is banned
    /// after this one failure, and only that block is fetched again.
    #[tokio::test]
    async fn leaf_hashes_name_the_bad_block_of_a_v2_piece() {
        use crate::metainfo::merkle;
        let (mut h, _) = harness_v2_with(true);
        let mut corrupter = h.seed(1);
        let mut liar = h.seed(2);
        let mut honest = h.seed(3);
        h.peer(1, PeerEvent::Unchoked);
        let (asked, _) = requests(&mut corrupter);
        let target = asked
            .iter()
            .find(|b| b.begin == BLOCK_LEN && b.index < 6)
            .map(|b| b.index)
            .expect("a second block of file a asked");
        for b in &asked {
            let ev = h.block(*b, b.index == target && b.begin == BLOCK_LEN);
            h.peer(1, ev);
        }
        h.settle().await;
        assert_eq!(h.t.progress.hash_failures, 1);
        assert!(h.t.leaf_checks.contains_key(&target));
        let (_, banned) = requests(&mut corrupter);
        assert!(!banned, "banned before the leaves came");
        // The first peer that sent nothing of the piece is asked.
        let (reqs, _) = v2_requests(&mut liar);
        let req = *reqs.first().expect("leaf hashes asked of peer 2");
        assert_eq!(
            (req.base, req.index, req.length, req.proof_layers),
            (0, 2 * target, 2, 0)
        );
        // File a ends 100 bytes short of its last piece: its leaves cover
        // the file's bytes only.
        let start = target as usize * PIECE;
        let end = (start + PIECE).min(6 * PIECE - 100);
        let truth = merkle::leaves(&h.data[start..end]);
        // Leaves that would put the blame on the first block: they do not
        // lead to the piece hash, so nobody is blamed for them.
        let mut lie = truth.clone();
        lie[0] = [9; 32];
        h.peer(2, PeerEvent::Hashes { req, hashes: lie });
        assert_eq!(h.t.progress.banned, 0);
        assert_eq!(h.t.peers[&2].strikes, 1);
        let (reqs, _) = v2_requests(&mut honest);
        assert_eq!(reqs, vec![req]);
        h.peer(3, PeerEvent::Hashes { req, hashes: truth });
        let (_, banned) = requests(&mut corrupter);
        assert!(banned, "the sender of the bad block is banned at once");
        assert_eq!(h.t.progress.banned, 1);
        h.peer(1, PeerEvent::Gone("banned".into()));
        // Only the bad block of the piece is asked for again.
        h.peer(3, PeerEvent::Unchoked);
        let mut again = Vec::new();
        for _ in 0..20 {
            let (asked, banned) = requests(&mut honest);
            assert!(!banned);
            for b in asked {
                if b.index == target {
                    again.push(b);
                }
                let ev = h.block(b, false);
                h.peer(3, ev);
            }
            h.settle().await;
            if h.t.is_complete() {
                break;
            }
        }
        assert!(h.t.is_complete());
        assert_eq!(
            again,
            vec![BlockRef {
                index: target,
                begin: BLOCK_LEN,
                length: BLOCK_LEN
            }]
        );
        assert_eq!(h.t.progress.hash_failures, 1);
        let (_, liar_banned) = requests(&mut liar);
        assert!(!liar_banned);
        // What is on disk is the torrent's data.
        for p in 0..7u32 {
            let mut buf = Vec::new();
            assert!(h.t.shared.store.read_piece(p, &mut buf).unwrap());
            let from = p as usize * PIECE;
            assert_eq!(buf[..], h.data[from..from + buf.len()], "piece {p}");
        }
    }

    /// Nobody answers the leaf request: after the timeout the piece is
    /// fetched again whole, as without leaf hashes.
    #[tokio::test]
    async fn unanswered_leaf_hashes_fall_back_to_the_whole_piece() {
        let (mut h, _) = harness_v2_with(true);
        let mut corrupter = h.seed(1);
        let mut quiet = h.seed(2);
        h.peer(1, PeerEvent::Unchoked);
        let (asked, _) = requests(&mut corrupter);
        let target = asked
            .iter()
            .find(|b| b.begin == BLOCK_LEN && b.index < 6)
            .map(|b| b.index)
            .unwrap();
        for b in &asked {
            let ev = h.block(*b, b.index == target && b.begin == BLOCK_LEN);
            h.peer(1, ev);
        }
        h.settle().await;
        let (reqs, _) = v2_requests(&mut quiet);
        assert_eq!(reqs.len(), 1);
        h.t.expire_leaf_checks(Instant::now() + leaves::TIMEOUT);
        assert!(h.t.leaf_checks.is_empty());
        // One sender: banned as before, and the piece is free again.
        let (_, banned) = requests(&mut corrupter);
        assert!(banned);
        h.peer(1, PeerEvent::Gone("banned".into()));
        h.peer(2, PeerEvent::Unchoked);
        h.serve_until_complete(2, &mut quiet).await;
    }

    /// Pieces made of blocks from two peers fail their check; once fetched
    /// again from the honest one, the block that differs names the liar.
    /// A piece found changed on disk while downloading is fetched again.
    #[tokio::test]
    async fn a_lost_piece_is_fetched_again() {
        let mut h = harness(4);
        let mut seed = h.seed(1);
        h.peer(1, PeerEvent::Unchoked);
        let (asked, _) = requests(&mut seed);
        let p = asked[0].index;
        for b in asked.into_iter().filter(|b| b.index == p) {
            let ev = h.block(b, false);
            h.peer(1, ev);
        }
        h.settle().await;
        assert!(h.t.picker.have().get(p as usize));
        assert!(!h.t.is_complete());
        h.peer(1, PeerEvent::PieceLost(p));
        assert!(!h.t.picker.have().get(p as usize));
        assert_eq!(h.t.progress.pieces_have, 0);
        assert_eq!(h.t.shared.have_bytes.load(Ordering::Acquire), 0);
        // Whatever else is outstanding, the lost piece is asked for again.
        let (again, _) = requests(&mut seed);
        assert!(again.iter().any(|b| b.index == p), "{again:?}");
    }

    impl Harness {
        /// A peer with no pieces connects and says nothing more.
        fn idle(&mut self, key: PeerKey) -> mpsc::UnboundedReceiver<PeerCmd> {
            let (cmd, rx) = mpsc::unbounded_channel();
            let addr: SocketAddr = format!("127.0.1.{key}:6881").parse().unwrap();
            self.peer(
                key,
                PeerEvent::Connected {
                    addr,
                    peer_id: [key as u8; 20],
                    fast: true,
                    v2: false,
                    incoming: true,
                    cmd,
                    stats: Arc::default(),
                },
            );
            rx
        }

        /// Pretends every connected peer has been there for `ago`.
        fn age_peers(&mut self, ago: Duration) {
            for p in self.t.peers.values_mut() {
                p.connected_at -= ago;
            }
        }
    }

    fn closed(rx: &mut mpsc::UnboundedReceiver<PeerCmd>) -> bool {
        std::iter::from_fn(|| rx.try_recv().ok()).any(|c| matches!(c, PeerCmd::Close(_)))
    }

    /// Regression (issue 15): idle peers held every slot forever and a
    /// real peer was refused. Now the least useful peer that had its
    /// chance makes room; a peer too new to judge, or one we want data
    /// from, is kept.
    #[tokio::test]
    async fn idle_peers_make_room_for_new_ones() {
        let mut h = harness(4);
        let mut idle: Vec<_> = (1..=10).map(|k| h.idle(k)).collect();
        assert_eq!(h.t.peers.len(), 10);
        // All too new: the 11th is refused.
        let mut eleventh = h.idle(11);
        assert!(!h.t.peers.contains_key(&11));
        assert!(closed(&mut eleventh));
        h.age_peers(EVICT_AFTER);
        let _seed = h.seed(12);
        assert!(h.t.peers.contains_key(&12), "a seed is refused");
        assert_eq!(h.t.peers.len(), 10);
        assert_eq!(idle.iter_mut().map(closed).filter(|c| *c).count(), 1);
        // Peers we are interested in are never made room from.
        for k in 1..=10 {
            if let Some(p) = h.t.peers.get_mut(&k) {
                p.am_interested = true;
            }
        }
        h.age_peers(EVICT_AFTER);
        let mut late = h.idle(13);
        assert!(!h.t.peers.contains_key(&13));
        assert!(closed(&mut late));
    }

    /// Regression (issue 15): a peer that accepts our connection and
    /// closes it at once was dialled again every 10 s forever; now the
    /// wait doubles with each such connection.
    #[tokio::test]
    async fn reconnect_back_off_grows_for_peers_that_close_at_once() {
        let mut h = harness(4);
        let addr: SocketAddr = "127.0.1.1:6881".parse().unwrap();
        h.t.known.insert(
            addr,
            Candidate {
                failures: 0,
                next_try: Instant::now(),
                source: PeerSource::Manual,
            },
        );
        let mut waits = Vec::new();
        for _ in 0..4 {
            let _rx = h.idle(1);
            h.peer(1, PeerEvent::Gone("closed".into()));
            let c = &h.t.known[&addr];
            waits.push(
                c.next_try
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    + 1,
            );
        }
        assert_eq!(waits, vec![20, 40, 80, 160]);
        // One that stayed a while is back to the short wait.
        let _rx = h.idle(1);
        h.age_peers(SHORT_LIVED);
        h.peer(1, PeerEvent::Gone("closed".into()));
        let c = &h.t.known[&addr];
        assert_eq!(c.failures, 0);
        assert!(c.next_try <= Instant::now() + Duration::from_secs(10));
    }

    #[tokio::test]
    async fn smart_ban_names_the_sender_of_the_bad_block() {
        let mut h = harness(4);
        let mut liar = h.seed(1);
        let mut honest = h.seed(2);
        // The liar is unchoked first and gets asked for everything; it
        // answers the first block of each piece (corrupt), then chokes.
        h.peer(1, PeerEvent::Unchoked);
        let (asked, _) = requests(&mut liar);
        assert!(!asked.is_empty());
        for b in asked.iter().filter(|b| b.begin == 0) {
            let ev = h.block(*b, true);
            h.peer(1, ev);
        }
        h.peer(1, PeerEvent::Choked);
        // The honest seed fills in the rest, and whatever is asked again.
        h.peer(2, PeerEvent::Unchoked);
        h.serve_until_complete(2, &mut honest).await;
        assert!(h.t.progress.hash_failures >= 1);
        let (_, liar_closed) = requests(&mut liar);
        assert!(liar_closed, "the liar was not banned");
        assert_eq!(h.t.progress.banned, 1);
        let (_, honest_closed) = requests(&mut honest);
        assert!(!honest_closed);
    }

    /// Pieces are checked against hashes read from the .torrent file; if
    /// that file is rewritten meanwhile, the download stops with an error
    /// instead of failing pieces and banning the peers who sent them.
    #[tokio::test]
    async fn hashes_read_from_the_torrent_file() {
        let mut h = harness_with(8, true);
        let mut a = h.seed(1);
        h.peer(1, PeerEvent::Unchoked);
        h.serve_until_complete(1, &mut a).await;
        assert_eq!(h.t.progress.hash_failures, 0);

        let mut h = harness_with(8, true);
        let mut a = h.seed(1);
        h.peer(1, PeerEvent::Unchoked);
        std::fs::write(h._dir.path().join("t.torrent"), b"d4:spami1ee").unwrap();
        let (asked, _) = requests(&mut a);
        for b in asked {
            let ev = h.block(b, false);
            h.peer(1, ev);
        }
        let ev = tokio::time::timeout(Duration::from_secs(10), h.events.recv())
            .await
            .expect("hash result")
            .expect("channel open");
        let err = h.t.on_event(ev).unwrap_err().to_string();
        assert!(err.contains("changed on disk"), "{err}");
        let (_, banned) = requests(&mut a);
        assert!(!banned);
        assert_eq!(h.t.progress.hash_failures, 0);
    }

    impl Harness {
        /// A web seed joins (no task: the test reads its commands).
        fn web(&mut self, key: PeerKey) -> mpsc::UnboundedReceiver<WebCmd> {
            let (cmd, rx) = mpsc::unbounded_channel();
            let url = format!("http://127.0.0.{key}/t");
            self.t.picker.add_seed();
            self.t
                .webseeds
                .insert(key, WebSeed::new(url, cmd, Arc::default()));
            self.t.fill_web(key);
            rx
        }

        fn web_block(&mut self, key: PeerKey, b: BlockRef, corrupt: bool) {
            let PeerEvent::Block { block, data } = self.block(b, corrupt) else {
                unreachable!()
            };
            let ev = Event::Web(key, WebEvent::Block { block, data });
            self.t.on_event(ev).unwrap();
        }
    }

    /// Blocks a web seed was asked for, and whether it was reset.
    fn fetches(rx: &mut mpsc::UnboundedReceiver<WebCmd>) -> (Vec<BlockRef>, bool) {
        let mut blocks = Vec::new();
        let mut reset = false;
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                WebCmd::Fetch(b) => blocks.extend(b),
                WebCmd::Reset => reset = true,
                WebCmd::Cancel(_) => {}
            }
        }
        (blocks, reset)
    }

    /// A web seed alone downloads everything; the progress counts it.
    #[tokio::test]
    async fn a_web_seed_alone_completes_the_download() {
        let mut h = harness(4);
        let mut web = h.web(1);
        h.t.publish();
        assert_eq!(h.t.progress.peer_sources.get(WEB_SEED_LABEL), Some(&1));
        assert_eq!(h.t.progress.peers, 1);
        // (Endgame already: every block of this small torrent is asked.)
        assert_ne!(h.t.progress.state, State::Connecting);
        let (asked, _) = fetches(&mut web);
        assert_eq!(asked.len(), 8, "every block at once");
        for b in asked {
            h.web_block(1, b, false);
        }
        h.settle().await;
        assert!(h.t.is_complete());
        // Done with it: its task is told to end (its channel closes).
        assert!(h.t.webseeds.is_empty());
        assert!(web.recv().await.is_none());
    }

    /// A failed request: the server's blocks go to others at once, it is
    /// left alone for 5 s (then 10 s …), the status says why, and it is
    /// asked again once the wait is over.
    #[tokio::test]
    async fn a_failing_web_seed_backs_off() {
        let mut h = harness(4);
        let mut web = h.web(1);
        let (asked, _) = fetches(&mut web);
        let why = "error sending request: tcp connect error: Connection refused (os error 111)";
        let ev = WebEvent::Failed {
            blocks: asked.clone(),
            why: why.into(),
        };
        h.t.on_event(Event::Web(1, ev)).unwrap();
        assert_eq!(h.t.picker.outstanding(1), 0);
        let (again, reset) = fetches(&mut web);
        assert!(again.is_empty() && reset);
        h.t.publish();
        assert_eq!(h.t.progress.peers, 0);
        assert_eq!(h.t.progress.state, State::Connecting);
        assert_eq!(
            h.t.progress.status,
            "web seed http://127.0.0.1/t: connection refused, retry in 5s"
        );
        // A peer takes over what the server had.
        let mut seed = h.seed(2);
        h.peer(2, PeerEvent::Unchoked);
        let (theirs, _) = requests(&mut seed);
        assert_eq!(theirs.len(), asked.len());
        // Wait over: asked again (the peer holds every block, so endgame
        // duplicates some).
        h.t.webseeds.get_mut(&1).unwrap().retry_at = Some(Instant::now());
        h.t.second(1.0, Instant::now());
        assert!(!fetches(&mut web).0.is_empty());
        // A second failure in a row waits twice as long.
        let ev = WebEvent::Failed {
            blocks: Vec::new(),
            why: "HTTP 503 Service Unavailable".into(),
        };
        h.t.on_event(Event::Web(1, ev)).unwrap();
        let w = &h.t.webseeds[&1];
        assert_eq!(w.failures, 2);
        let wait = w
            .retry_at
            .unwrap()
            .saturating_duration_since(Instant::now());
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(10));
    }

    /// A web seed that sends the only copy of a bad piece is banned; one
    /// whose bad block is found by comparing with the good copy is too.
    #[tokio::test]
    async fn a_lying_web_seed_is_banned() {
        for whole_pieces in [true, false] {
            let mut h = harness(4);
            let mut web = h.web(1);
            let (asked, _) = fetches(&mut web);
            for b in asked.iter().filter(|b| whole_pieces || b.begin == 0) {
                h.web_block(1, *b, true);
            }
            if !whole_pieces {
                // The rest comes from a peer: mixed pieces fail, and the
                // good copy names the web seed's block.
                let ev = WebEvent::Failed {
                    blocks: Vec::new(),
                    why: "timed out".into(),
                };
                h.t.on_event(Event::Web(1, ev)).unwrap();
            }
            h.settle().await;
            let mut seed = h.seed(2);
            h.peer(2, PeerEvent::Unchoked);
            h.serve_until_complete(2, &mut seed).await;
            assert!(h.t.progress.hash_failures >= 1);
            assert_eq!(h.t.progress.banned, 1, "whole pieces: {whole_pieces}");
            assert!(h.t.webseeds.is_empty());
            let (_, closed) = requests(&mut seed);
            assert!(!closed, "the honest peer was banned");
        }
    }

    /// A peer's advertised `reqq` caps the requests we keep in flight to it.
    #[tokio::test]
    async fn requests_in_flight_respect_the_peers_reqq() {
        let mut h = harness(64);
        let mut a = h.seed(1);
        h.peer(
            1,
            PeerEvent::Extended {
                reqq: Some(5),
                listen_port: None,
                client: None,
                pex: false,
            },
        );
        h.peer(1, PeerEvent::Unchoked);
        let (asked, _) = requests(&mut a);
        assert_eq!(asked.len(), 5);
        // Each answer makes room for exactly one more, never more than 5 out.
        for b in asked {
            let ev = h.block(b, false);
            h.peer(1, ev);
            let (more, _) = requests(&mut a);
            assert_eq!(more.len(), 1);
            assert!(h.t.picker.outstanding(1) <= 5);
        }
    }

    /// Endgame: the last blocks go to a second peer too, and whichever copy
    /// arrives first cancels the other.
    #[tokio::test]
    async fn endgame_requests_twice_and_cancels_the_loser() {
        let mut h = harness(1);
        let mut a = h.seed(1);
        let mut b = h.seed(2);
        h.peer(1, PeerEvent::Unchoked);
        let (to_a, _) = requests(&mut a);
        assert_eq!(to_a.len(), 2);
        h.peer(2, PeerEvent::Unchoked);
        let (to_b, _) = requests(&mut b);
        assert_eq!(to_b.len(), 2, "endgame should ask the second peer too");
        let ev = h.block(to_a[0], false);
        h.peer(1, ev);
        let cancelled: Vec<BlockRef> = std::iter::from_fn(|| b.try_recv().ok())
            .filter_map(|c| match c {
                PeerCmd::Cancel(x) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, vec![to_a[0]]);
    }

    /// Regression (issue 10): with no peer at all the picker sees every
    /// piece as unavailable, which used to read as "endgame" at 0 bytes.
    #[tokio::test]
    async fn without_peers_the_status_says_why() {
        let mut h = harness(4);
        h.t.second(1.0, Instant::now());
        h.t.publish();
        assert_eq!(h.t.progress.state, State::Connecting);
        assert_eq!(
            h.t.progress.status,
            "waiting for peers: no tracker, DHT off"
        );
        let tracker = TrackerView::not_contacted("http://127.0.0.1:1/announce".into(), 0);
        h.t.set_sources(vec![tracker.clone()], true);
        h.t.publish();
        assert_eq!(h.t.progress.status, "waiting for peers");
        h.t.set_sources(vec![tracker], false);
        h.t.on_event(Event::TrackerStatus(Some(
            "tracker 127.0.0.1:1 unreachable".into(),
        )))
        .unwrap();
        h.t.publish();
        assert_eq!(
            h.t.progress.status,
            "waiting for peers: tracker 127.0.0.1:1 unreachable, DHT off"
        );
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        h.t.known.insert(
            addr,
            Candidate {
                failures: 0,
                next_try: Instant::now(),
                source: PeerSource::Manual,
            },
        );
        h.t.connect_failed(addr, "connect: Connection refused (os error 111)");
        h.t.second(1.0, Instant::now());
        h.t.publish();
        assert_eq!(h.t.progress.state, State::Connecting);
        assert_eq!(
            h.t.progress.status,
            "peer 127.0.0.1:9: connection refused, retry in 10s"
        );
        // A seed arrives: downloading, with the seed's blocks in flight.
        let _rx = h.seed(1);
        h.t.publish();
        assert_eq!(h.t.progress.state, State::Downloading);
        assert_eq!(h.t.progress.status, "downloading");
        assert_eq!(h.t.progress.total, 4 * PIECE as u64);
        assert_eq!(h.t.progress.piece_count, 4);
    }

    #[test]
    fn window_rate_follows_the_last_seconds() {
        let mut r = WindowRate::new();
        assert_eq!(r.get(), 0);
        r.update(0.0, 0);
        // 15 MiB in one second shows at once, not as a fraction of it.
        r.update(1.0, 15 << 20);
        assert_eq!(r.get(), 15 << 20);
        for t in 2..=6 {
            r.update(t as f64, 15 << 20);
        }
        // Nothing for a whole window: 0, not a decaying tail.
        r.update(7.0, 15 << 20);
        assert_eq!(r.get(), 0);
        r.update(8.0, (15 << 20) + 1000);
        assert_eq!(r.get(), 1000 / 5);
    }

    #[test]
    fn short_reasons() {
        assert_eq!(
            short_reason("connect: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(short_reason("connect timed out"), "connect timed out");
        assert_eq!(short_reason(""), "");
    }
}
