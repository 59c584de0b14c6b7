//! The torrent core: every decision about one torrent, with no I/O.
//!
//! In the style of quinn-proto: the core owns the state and is driven from
//! outside. Its runner feeds it what happened as an [`Input`] with the
//! time it happened ([`Core::handle`]), calls [`Core::tick`] about ten
//! times a second, and carries out what the core asks for, one
//! [`Action`] at a time ([`Core::poll_action`]): dial a peer, send a peer
//! a command, hash and write a piece, publish progress. The core never
//! reads a clock, a socket, a file or the environment, and every random
//! choice comes from a generator seeded by its [`Config`], so a run is a
//! function of its inputs: the real client runs it in one tokio task
//! (`torrent::task`), a test or a simulator feeds it by hand on virtual
//! time (`core/tests/harness.rs` plays the peers of one core;
//! `core/tests/pair.rs` wires two cores to each other, a swarm simulator
//! at its smallest).
//!
//! Inside, each part owns its fields: the table of block sources (peers
//! and web seeds alike, `sources`), the dialer (known addresses, back-off,
//! bans, eviction, `dialer`), piece assembly and the hash queue
//! (`assembly`), blame and repair of failed pieces (`repair`), v2 piece
//! layers (`layers`), rates, and the pure picker, choker and super-seeder.

mod assembly;
mod dialer;
mod layers;
mod peers;
mod punching;
mod rate;
mod repair;
mod report;
mod sources;
#[cfg(test)]
mod tests;
mod web;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::bitfield::Bitfield;
use crate::limit::ConnectionCap;
use crate::metainfo::Metainfo;
use crate::peer::transport::Transport;
use crate::peer::{PeerCmd, PeerEvent, PeerKey};
use crate::store::{Layout, StoreError};
use crate::torrent::choker::Choker;
use crate::torrent::hashes;
use crate::torrent::picker::Picker;
use crate::torrent::status::{Outcome, PeerSource, Progress, State, TrackerView};
use crate::torrent::webseed::WebEvent;
use crate::torrent::{deadline, holepunch, superseed};

pub use assembly::{PieceJob, Verified};

use assembly::Assembly;
use dialer::Dialer;
use rate::WindowRate;
use repair::Repair;
use sources::Sources;

const RECHOKE_EVERY: Duration = Duration::from_secs(10);

/// The knobs of one torrent: set once, from the command line or the
/// service's settings, and read by the core (and, for `pex` and
/// `web_seeds`, by its runner).
#[derive(Clone, Debug)]
pub struct Options {
    /// Most peers connected at once (at least 1).
    pub max_peers: usize,
    /// Regular upload slots of the choker.
    pub upload_slots: usize,
    /// Keep running (seeding) once complete.
    pub keep_seeding: bool,
    /// Stop seeding once this many times the torrent's size went up.
    pub seed_ratio: Option<f64>,
    /// Stop seeding after this long.
    pub seed_time: Option<Duration>,
    /// Super-seed (BEP 16), if the data is complete at the start.
    pub super_seed: bool,
    /// Peer exchange (BEP 11); never for a private torrent.
    pub pex: bool,
    /// Fetch from the torrent's web seeds (BEP 19 `url-list`).
    pub web_seeds: bool,
    /// Never unchoke anyone: an honest free rider, for the swarm harness
    /// (benches/swarm), not a user interface.
    pub free_ride: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_peers: 50,
            upload_slots: 4,
            keep_seeding: false,
            seed_ratio: None,
            seed_time: None,
            super_seed: false,
            pex: true,
            web_seeds: true,
            free_ride: false,
        }
    }
}

/// Everything a core starts from besides the torrent and what is on disk.
pub struct Config {
    pub options: Options,
    /// Ours: a connection that shows it is to ourselves.
    pub peer_id: [u8; 20],
    /// The session's listening port: an address with it on loopback is us.
    pub listen_port: u16,
    /// Seeds every random choice (picker, choker, super-seeding).
    pub seed: u64,
    /// Hash jobs out at once.
    pub hash_jobs: usize,
    /// The session's cap on connections of all its torrents; the core
    /// keeps its own count in it.
    pub connections: Arc<ConnectionCap>,
    /// Hole punching (BEP 55): relay for others and ask relays for peers
    /// that cannot be dialled (uTP on, not a private torrent).
    pub holepunch: bool,
}

/// What happened, told to the core with the time it happened.
#[derive(Debug)]
pub enum Input {
    /// From the peer connection `key` (its task validated it).
    Peer(PeerKey, PeerEvent),
    /// A peer connected to us and sent this handshake: the core answers
    /// [`Action::Accept`] with its key, or nothing (refused).
    Incoming {
        addr: SocketAddr,
        peer_id: [u8; 20],
    },
    /// Addresses from a discovery source.
    Peers(PeerSource, Vec<SocketAddr>),
    TrackerWarning(String),
    /// What the trackers say about the lack of peers (`Some`: none
    /// answered, "tracker H:P unreachable", or the one that answered had
    /// no peer), or `None` (peers came); shown while no peer is connected.
    TrackerStatus(Option<String>),
    /// Each tracker's state after an announce, for the service's API.
    Trackers(Vec<TrackerView>),
    /// Answers to [`Action::Verify`], one per piece of the job.
    Verified(Vec<Verified>),
    /// The answer to [`Action::Recheck`]: the pieces of `range` found
    /// good on disk.
    Rechecked {
        range: std::ops::Range<u32>,
        good: Vec<u32>,
    },
    /// A web seed's URL to use (BEP 19), checked usable by the runner.
    WebSeed(String),
    /// From the web seed `key`.
    Web(PeerKey, WebEvent),
    /// Byte counters, cumulative since the start.
    Traffic(Traffic),
    /// Our address as others see it (the router's port mapping): an
    /// address that is ours when a tracker or a peer names it.
    External(Option<SocketAddr>),
}

/// Payload bytes counted where they move (peer tasks, web seed tasks):
/// the torrent's totals and each source's, cumulative.
#[derive(Debug, Default, Clone)]
pub struct Traffic {
    pub downloaded: u64,
    pub uploaded: u64,
    /// (source, downloaded from it, uploaded to it).
    pub sources: Vec<(PeerKey, u64, u64)>,
}

/// What the core asks its runner to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Dial `addr` (over `only` when given: a hole punch dials uTP alone);
    /// its events come back under `key`.
    Connect {
        key: PeerKey,
        addr: SocketAddr,
        only: Option<Transport>,
    },
    /// Run the incoming connection from `addr` under `key`.
    Accept { key: PeerKey, addr: SocketAddr },
    /// A command for the source `key`. A web seed's task takes `Request`
    /// (fetch), `Cancel` and `Close` (it ends); nothing else is sent it.
    Send(PeerKey, PeerCmd),
    /// Start fetching from the web seed `url` under `key`.
    /// `unwanted`: pieces a file selection left out, never read from a
    /// whole file.
    StartWebSeed {
        key: PeerKey,
        url: String,
        unwanted: Option<Bitfield>,
    },
    /// The web seed `key` backs off: drop its queue and requests in flight.
    ResetWebSeed(PeerKey),
    /// Check these complete pieces and write the good ones
    /// ([`PieceJob::run`]); answer with [`Input::Verified`].
    Verify(Vec<PieceJob>),
    /// Check what is on disk of these pieces (their v2 layer just came);
    /// answer with [`Input::Rechecked`].
    Recheck(std::ops::Range<u32>),
    /// The piece is verified and on disk: serve it.
    Have(u32),
    /// Verified bytes of wanted pieces (what trackers get `left` from).
    HaveBytes(u64),
    /// Every wanted piece is in (once per run).
    Complete,
    /// Super-seeding is over (every piece is in the swarm): peers may see
    /// our whole bitfield again.
    SuperSeedOver,
    /// [`Core::progress`] changed: show it.
    Publish,
    /// The run is over (complete and done seeding, or [`Core::stop`]).
    Finished(Outcome),
    /// A piece could not be written (or its hash read): the run stops
    /// with this error, leaving at most that one piece half-written.
    Failed(StoreError),
}

/// The totals of a torrent having `have`, before anything happened.
fn first_progress(meta: &Metainfo, have: &Bitfield) -> Progress {
    let mut file_done = vec![0u64; meta.files.len()];
    for p in have.iter_ones() {
        for s in meta.piece_slices(p as u32) {
            file_done[s.file] += s.len;
        }
    }
    Progress {
        total: meta.total_length,
        piece_count: meta.piece_count(),
        file_done,
        ..Default::default()
    }
}

/// One torrent's state and decisions.
pub struct Core {
    meta: Arc<Metainfo>,
    layout: Layout,
    opts: Options,
    peer_id: [u8; 20],
    listen_port: u16,
    rng: StdRng,
    picker: Picker,
    choker: Choker,
    sources: Sources,
    dialer: Dialer,
    assembly: Assembly,
    repair: Repair,
    /// Piece layers still to be fetched from peers (a v2 torrent from a
    /// magnet); their files' pieces are held back in the picker.
    layers: Option<hashes::LayerFetch>,
    /// Set while super-seeding (BEP 16): what each peer has been shown.
    super_seed: Option<superseed::SuperSeed>,
    next_key: PeerKey,
    /// The time of the input or tick being handled.
    now: Instant,
    started: Instant,
    last_second: Instant,
    last_rechoke: Instant,
    rechoke_soon: bool,
    /// Pieces verified since peers were last told.
    pending_haves: Vec<u32>,
    /// Verified bytes of pieces left out by a file selection.
    have_unwanted_bytes: u64,
    /// The last [`Action::HaveBytes`].
    told_have_bytes: Option<u64>,
    traffic: Traffic,
    down_rate: WindowRate,
    up_rate: WindowRate,
    state: State,
    progress: Progress,
    peer_list_at: Option<Instant>,
    tracker_status: Option<String>,
    /// Where peers may come from, for the status that says why there are
    /// none: the torrent has usable trackers, the DHT is on for it.
    origins: (bool, bool),
    /// The newest web seed failure: its URL, why, and the wait before the
    /// next try (None: banned).
    web_failure: Option<(String, String, Option<u64>)>,
    complete_told: bool,
    seeding_since: Option<Instant>,
    /// Finished or failed: no more jobs are started.
    over: bool,
    /// Hole punching (BEP 55) on, and its relays, asks and punches.
    holepunch: bool,
    punches: holepunch::Punches,
    /// Our address as the router shows it ([`Input::External`]).
    external: Option<SocketAddr>,
    out: VecDeque<Action>,
}

impl Core {
    /// A core for `meta` with the pieces in `have` verified on disk. Its
    /// first actions (progress, and completion if nothing is missing) wait
    /// in the queue.
    pub fn new(now: Instant, meta: Arc<Metainfo>, have: &Bitfield, cfg: Config) -> Core {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let picker = Picker::with_seed(
            meta.piece_count(),
            meta.piece_length as u32,
            meta.total_length,
            have,
            rand::Rng::gen(&mut rng),
        );
        let choker = Choker::new(
            cfg.options.upload_slots,
            cfg.options.free_ride,
            rand::Rng::gen(&mut rng),
        );
        let progress = first_progress(&meta, have);
        let super_seed = (cfg.options.super_seed && have.is_full())
            .then(|| superseed::SuperSeed::new(meta.piece_count()));
        let mut core = Core {
            layout: Layout::from_metainfo(&meta),
            dialer: Dialer::new(cfg.connections),
            assembly: Assembly::new(cfg.hash_jobs),
            meta,
            opts: cfg.options,
            peer_id: cfg.peer_id,
            listen_port: cfg.listen_port,
            rng,
            picker,
            choker,
            sources: Sources::default(),
            repair: Repair::default(),
            layers: None,
            super_seed,
            next_key: 1,
            now,
            started: now,
            last_second: now,
            last_rechoke: now,
            rechoke_soon: false,
            pending_haves: Vec::new(),
            have_unwanted_bytes: 0,
            told_have_bytes: None,
            traffic: Traffic::default(),
            down_rate: WindowRate::new(),
            up_rate: WindowRate::new(),
            state: State::Connecting,
            progress,
            peer_list_at: None,
            tracker_status: None,
            origins: (false, false),
            web_failure: None,
            complete_told: false,
            seeding_since: None,
            over: false,
            holepunch: cfg.holepunch,
            punches: holepunch::Punches::default(),
            external: None,
            out: VecDeque::new(),
        };
        if core.super_seed.is_some() {
            tracing::info!("super-seeding until every piece is in the swarm");
        }
        core.start_layer_fetch();
        core.recount_have();
        core.down_rate.update(0.0, 0);
        core.up_rate.update(0.0, 0);
        if core.picker.is_complete() {
            core.state = State::Seeding;
            core.tell_complete();
        }
        // The display's first look must show the real totals.
        core.publish();
        core.check_done();
        core
    }

    /// Takes in what happened at `now`.
    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Peer(key, ev) => self.on_peer_event(key, ev),
            Input::Incoming { addr, peer_id } => self.on_incoming(addr, peer_id),
            Input::Peers(source, addrs) => self.add_peers(source, addrs),
            Input::TrackerWarning(w) => tracing::warn!("tracker: {}", crate::out::escape(&w)),
            Input::TrackerStatus(s) => self.tracker_status = s,
            Input::Trackers(t) => self.progress.trackers = t,
            Input::Verified(batch) => self.on_verified_batch(batch),
            Input::Rechecked { range, good } => self.on_rechecked(range, good),
            Input::WebSeed(url) => self.add_web_seed(url),
            Input::Web(key, ev) => self.on_web_event(key, ev),
            Input::Traffic(t) => self.on_traffic(t),
            Input::External(a) => self.external = a,
        }
        self.check_done();
    }

    /// The clock moved to `now`: call about every 100 ms. Haves go out,
    /// rates are sampled, once a second snubs, timeouts and interest are
    /// looked at, the choker runs every 10 s, and progress is published.
    pub fn tick(&mut self, now: Instant) {
        self.now = now;
        self.dialer.count(self.sources.peer_count());
        self.flush_haves();
        self.expire_leaf_checks();
        // Sampled every tick, so the shown rate moves within a tick of the
        // data (the per-source ones, for choking, stay per second).
        let t = now.duration_since(self.started).as_secs_f64();
        self.down_rate.update(t, self.traffic.downloaded);
        self.up_rate.update(t, self.traffic.uploaded);
        let secs = now.duration_since(self.last_second).as_secs_f64();
        if secs >= 1.0 {
            self.last_second = now;
            self.second(secs);
        }
        if self.rechoke_soon || now.duration_since(self.last_rechoke) >= RECHOKE_EVERY {
            self.rechoke();
        }
        self.publish();
        self.check_done();
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Stops the run at `now`: every peer is told to close, the state
    /// becomes stopping, and [`Action::Finished`] follows unless the run
    /// already finished.
    pub fn stop(&mut self, now: Instant) {
        self.now = now;
        self.state = State::Stopping;
        let keys: Vec<PeerKey> = self.sources.keys().collect();
        for k in keys {
            self.send(k, PeerCmd::Close("shutting down".into()));
        }
        self.publish();
        if !self.over {
            self.over = true;
            self.out.push_back(Action::Finished(Outcome::Interrupted));
        }
    }

    /// The snapshot [`Action::Publish`] asks to show.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// Asks for the pieces in `high` before any other (file priorities).
    pub fn set_high(&mut self, high: &Bitfield) {
        self.picker.set_high(high);
    }

    /// Where peers may come from, as the session set up: the trackers
    /// (none yet contacted) and whether the DHT is on. Read by the status
    /// that says why no peer came.
    pub fn set_sources(&mut self, trackers: Vec<TrackerView>, dht: bool) {
        self.origins = (!trackers.is_empty(), dht);
        self.progress.trackers = trackers;
        self.publish();
    }

    /// New pieces in index order instead of rarest first (`--sequential`,
    /// for a player reading the growing file).
    pub fn set_sequential(&mut self, on: bool) {
        self.picker.set_sequential(on);
    }

    /// Streaming readers' windows ([`deadline::Window`]): the pieces at
    /// and just after each reader's position go first. `moved`: the
    /// readers changed since last told, so requests queued for other
    /// pieces are taken back and every peer is asked again at once.
    pub fn set_readers(&mut self, windows: &[deadline::Window], moved: bool) {
        let have = self.picker.have();
        let pieces =
            deadline::deadline_pieces(windows, |p| have.get(p as usize), deadline::MAX_DEADLINES);
        self.picker.set_deadlines(&pieces);
        if !moved {
            return;
        }
        if !pieces.is_empty() {
            tracing::debug!("stream deadlines: {:?}", &pieces[..pieces.len().min(8)]);
            self.make_room_for_deadlines();
        }
        self.fill_all();
    }

    /// Cancels requests for other pieces queued at peers that have
    /// deadline pieces, so the next fill asks for those first.
    fn make_room_for_deadlines(&mut self) {
        let mut cancels = Vec::new();
        for (key, s) in self.sources.iter() {
            let Some(p) = s.as_peer() else {
                continue;
            };
            if p.peer_choking || p.snubbed {
                continue;
            }
            let depth = s.depth.min(p.reqq);
            for b in self.picker.make_room(key, p.has(), depth) {
                cancels.push((key, b));
            }
        }
        for (key, b) in cancels {
            self.send(key, PeerCmd::Cancel(b));
        }
    }

    /// Leaves out the pieces in `unwanted` (they touch only files the user
    /// did not select): never asked for, not needed for completion, and
    /// not counted in the progress totals.
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
            self.tell_complete();
        }
        self.check_done();
    }

    fn send(&mut self, key: PeerKey, cmd: PeerCmd) {
        self.out.push_back(Action::Send(key, cmd));
    }

    fn new_key(&mut self) -> PeerKey {
        let key = self.next_key;
        self.next_key += 1;
        key
    }

    fn on_traffic(&mut self, t: Traffic) {
        for (key, down, up) in &t.sources {
            if let Some(s) = self.sources.get_mut(*key) {
                s.downloaded = *down;
                s.uploaded = *up;
            }
        }
        self.traffic = t;
    }

    fn tell_complete(&mut self) {
        if !std::mem::replace(&mut self.complete_told, true) {
            self.out.push_back(Action::Complete);
        }
    }

    /// Complete with nothing left to verify: done at once, or once the
    /// seeding goal (`--seed-ratio`, `--seed-time`) is reached; seeding
    /// goes on forever without one.
    fn check_done(&mut self) {
        if self.over || !self.picker.is_complete() || self.assembly.verifying > 0 {
            return;
        }
        let since = *self.seeding_since.get_or_insert(self.now);
        let up = self.traffic.uploaded as f64;
        let ratio = self
            .opts
            .seed_ratio
            .is_some_and(|r| up >= r * self.meta.total_length as f64);
        let time = self
            .opts
            .seed_time
            .is_some_and(|t| self.now.duration_since(since) >= t);
        if !self.opts.keep_seeding || ratio || time {
            self.over = true;
            self.out.push_back(Action::Finished(Outcome::Complete));
        }
    }

    /// Once a second: rates, queue depths, snubs, interest, timeouts,
    /// connections.
    fn second(&mut self, secs: f64) {
        self.exchange_peers();
        self.sources_second(secs);
        if let Some(l) = self.layers.as_mut() {
            let expired = l.expire(self.now);
            if expired > 0 {
                tracing::debug!("{expired} hash request(s) timed out; asking others");
            }
        }
        self.request_hashes_all();
        if !self.picker.is_complete() {
            self.state = self.status().0;
        }
        self.fill_all();
        self.connect_more();
        self.reveal_all();
    }

    fn on_complete(&mut self) {
        self.flush_haves();
        self.state = if self.opts.keep_seeding {
            State::Seeding
        } else {
            State::Done
        };
        self.assembly.clear_partial();
        self.tell_complete();
        // Web seeds have nothing more for us; their tasks end.
        for key in self.sources.web_keys() {
            self.drop_web_seed(key, "complete");
        }
        // Peers that only seed have nothing more for us.
        let keys: Vec<PeerKey> = self.sources.peer_keys();
        for k in keys {
            let Some(p) = self.sources.peer_mut(k) else {
                continue;
            };
            if p.seed {
                self.send(k, PeerCmd::Close("both seeds".into()));
            } else if p.am_interested {
                p.am_interested = false;
                self.send(k, PeerCmd::Interested(false));
            }
        }
        self.publish();
    }
}
