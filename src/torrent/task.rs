//! The thin tokio task around a torrent's [`Core`]: it turns what comes
//! in (peer and web seed tasks, discovery, the accept loop, hash jobs, a
//! timer: 100 ms while it has peers, 1 s without, 5 s for a seed without)
//! into inputs with the time they came, and carries out the
//! core's actions: it starts peer and web seed tasks and holds their
//! command channels and byte counters, runs hash jobs and rechecks on
//! blocking threads, keeps the torrent's [`Shared`] state current and
//! publishes progress. It decides nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;
use crate::peer::wire::Handshake;
use crate::peer::{self, PeerCmd, PeerEvent, PeerKey, PeerStats, Shared};
use crate::store::StoreError;
use crate::torrent::core::{Action, Config, Core, Input, Options, Traffic, Verified};
use crate::torrent::deadline;
use crate::torrent::status::{Outcome, PeerSource, Progress};
use crate::torrent::webseed::{self, WebCmd, WebEvent};

/// The timer while the torrent has peers, web seeds or streaming readers.
const TICK: Duration = Duration::from_millis(100);
/// The timer without any: a service of a thousand idle torrents must not
/// wake ten thousand times a second. A peer's connection is an event and
/// brings the short timer back at once.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// The timer of a complete torrent without any: nothing is due but its
/// seeding limits (ratio, time), which may wait that long.
const IDLE_SEED_TICK: Duration = Duration::from_secs(5);

/// What the task hears from the tasks around it (peer and web seed
/// tasks, discovery loops, hash jobs, the accept loop).
#[derive(Debug)]
pub enum Event {
    /// What the core takes as it is.
    Input(Input),
    /// A connection the accept loop took for this torrent, its handshake
    /// read: the core decides on it, the stream waits here meanwhile.
    Incoming {
        stream: peer::mse::Stream,
        addr: SocketAddr,
        handshake: Handshake,
    },
}

impl From<Input> for Event {
    fn from(input: Input) -> Event {
        Event::Input(input)
    }
}

impl From<(PeerKey, PeerEvent)> for Event {
    fn from((key, ev): (PeerKey, PeerEvent)) -> Event {
        Event::Input(Input::Peer(key, ev))
    }
}

impl From<(PeerKey, WebEvent)> for Event {
    fn from((key, ev): (PeerKey, WebEvent)) -> Event {
        Event::Input(Input::Web(key, ev))
    }
}

/// A running source's task, as the runner reaches it.
enum Link {
    Peer(mpsc::UnboundedSender<PeerCmd>, Arc<PeerStats>),
    Web(mpsc::UnboundedSender<WebCmd>, Arc<PeerStats>),
}

/// One running torrent: its core and the tasks it started.
pub struct Task {
    core: Core,
    meta: Arc<Metainfo>,
    shared: Arc<Shared>,
    events_tx: mpsc::Sender<Event>,
    progress_tx: watch::Sender<Progress>,
    complete_tx: Option<oneshot::Sender<()>>,
    links: HashMap<PeerKey, Link>,
    /// An incoming connection the core is deciding on.
    incoming: Option<(peer::mse::Stream, SocketAddr, Handshake)>,
    /// Web seeds found usable, by URL, until the core starts them.
    web_files: HashMap<String, Vec<Option<url::Url>>>,
    web_client: Option<reqwest::Client>,
    /// How the run ended, once the core said so.
    end: Option<Result<Outcome, StoreError>>,
    /// Our address as the router shows it, as last told to the core.
    external: Option<SocketAddr>,
    /// Streaming readers, and the version of their windows last told.
    readers: Option<(Arc<deadline::Readers>, u64)>,
}

impl Task {
    /// A torrent of `meta` over the store in `shared`, having `have`.
    pub fn new(
        meta: Arc<Metainfo>,
        shared: Arc<Shared>,
        have: &Bitfield,
        options: Options,
        events_tx: mpsc::Sender<Event>,
        progress_tx: watch::Sender<Progress>,
        complete_tx: oneshot::Sender<()>,
    ) -> Task {
        let cfg = Config {
            options,
            peer_id: shared.peer_id,
            listen_port: shared.listen_port,
            seed: rand::random(),
            // One more job than cores: a job waiting on its (direct) write
            // leaves a core free to hash the next.
            hash_jobs: crate::store::hash_threads() + 1,
            connections: shared.connections.clone(),
            holepunch: shared.holepunch,
        };
        let mut task = Task {
            core: Core::new(Instant::now(), meta.clone(), have, cfg),
            meta,
            shared,
            events_tx,
            progress_tx,
            complete_tx: Some(complete_tx),
            links: HashMap::new(),
            incoming: None,
            web_files: HashMap::new(),
            web_client: None,
            end: None,
            external: None,
            readers: None,
        };
        // Trackers read what we have from the start.
        task.step();
        task
    }

    /// Where peers may come from: the trackers and whether the DHT is on.
    pub fn set_sources(&mut self, trackers: Vec<crate::torrent::TrackerView>, dht: bool) {
        self.core.set_sources(trackers, dht);
        self.step();
    }

    /// Leaves out the pieces in `unwanted` (a file selection).
    pub fn set_unwanted(&mut self, unwanted: &Bitfield) {
        self.core.set_unwanted(unwanted);
        self.step();
    }

    /// Asks for the pieces in `high` first (file priorities).
    pub fn set_high(&mut self, high: &Bitfield) {
        self.core.set_high(high);
        self.step();
    }

    /// New pieces in index order instead of rarest first.
    pub fn set_sequential(&mut self, on: bool) {
        self.core.set_sequential(on);
        self.step();
    }

    /// Streaming readers whose windows get pieces first (deadlines): read
    /// at each tick and told to the core when they change.
    pub fn set_readers(&mut self, readers: Arc<deadline::Readers>) {
        self.readers = Some((readers, u64::MAX));
    }

    /// Tells the core where the streaming readers are, while there are
    /// any (the pieces they need next change as pieces come).
    fn note_readers(&mut self) {
        let Some((readers, seen)) = &mut self.readers else {
            return;
        };
        let version = readers.version();
        let windows = readers.windows();
        if windows.is_empty() && version == *seen {
            return;
        }
        let moved = version != *seen;
        *seen = version;
        self.core.set_readers(&windows, moved);
        self.step();
    }

    /// Adds peers from any source.
    pub fn add_peers(&mut self, source: PeerSource, addrs: Vec<SocketAddr>) {
        self.core
            .handle(Instant::now(), Input::Peers(source, addrs));
        self.step();
    }

    /// Offers the core each usable web seed (BEP 19) among `urls`. A URL
    /// that cannot be used (not http(s)) is logged and left out.
    pub fn add_web_seeds(&mut self, urls: &[String]) {
        if urls.is_empty() || self.core.is_complete() {
            return;
        }
        let client = match self
            .web_client
            .clone()
            .map(Ok)
            .unwrap_or_else(webseed::client)
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("web seeds not used: {e}");
                return;
            }
        };
        self.web_client = Some(client);
        for url in urls {
            match webseed::file_urls(url, &self.meta) {
                Ok(files) => {
                    self.web_files.insert(url.clone(), files);
                    self.core
                        .handle(Instant::now(), Input::WebSeed(url.clone()));
                    self.step();
                }
                Err(e) => {
                    let shown = crate::out::escape(url);
                    tracing::warn!("web seed {shown}: {e}; not used");
                }
            }
        }
    }

    /// Runs until complete (unless seeding) or until `stop` fires.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Outcome, StoreError> {
        let tick = tokio::time::sleep(TICK);
        tokio::pin!(tick);
        let mut busy = true;
        let mut stopped = false;
        let outcome = loop {
            self.step();
            if let Some(end) = self.end.take() {
                break end?;
            }
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => stopped = true,
                },
                () = &mut tick => {
                    self.count_traffic();
                    self.note_external();
                    self.note_readers();
                    self.core.tick(Instant::now());
                    busy = self.busy();
                    let period = match (busy, self.core.is_complete()) {
                        (true, _) => TICK,
                        (false, false) => IDLE_TICK,
                        (false, true) => IDLE_SEED_TICK,
                    };
                    tick.as_mut().reset(tokio::time::Instant::now() + period);
                }
                _ = stop.changed() => stopped = true,
            }
            if !busy && !self.links.is_empty() {
                busy = true;
                tick.as_mut().reset(tokio::time::Instant::now() + TICK);
            }
            if stopped {
                self.count_traffic();
                self.core.stop(Instant::now());
            }
        };
        if outcome == Outcome::Complete {
            // The last snapshot counts every byte.
            self.count_traffic();
            self.core.stop(Instant::now());
        }
        self.wind_down();
        Ok(outcome)
    }

    /// Whether something is going on that the short timer serves:
    /// connections (their rates, timeouts, choking) or streaming readers.
    fn busy(&self) -> bool {
        !self.links.is_empty()
            || self
                .readers
                .as_ref()
                .is_some_and(|(r, _)| !r.windows().is_empty())
    }

    fn on_event(&mut self, ev: Event) {
        let input = match ev {
            Event::Input(input) => {
                // A verified piece may complete the torrent: the snapshot
                // then published counts every byte that came for it.
                if matches!(input, Input::Verified(_)) {
                    self.count_traffic();
                }
                if let Input::Peer(_, PeerEvent::Pex(added)) = &input {
                    // Its flags say which of them speak uTP (0x04): the
                    // dialer's first try. Bounded, as a PEX message is.
                    for (a, f) in added.iter().take(crate::peer::pex::MAX_PER_MESSAGE) {
                        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
                        self.shared.net.pex_hint(a, *f);
                    }
                }
                if let Input::Peer(key, PeerEvent::Gone(_)) = &input {
                    self.links.remove(key);
                }
                input
            }
            Event::Incoming {
                stream,
                addr,
                handshake,
            } => {
                let peer_id = handshake.peer_id;
                self.incoming = Some((stream, addr, handshake));
                Input::Incoming { addr, peer_id }
            }
        };
        let block = match &input {
            Input::Peer(_, PeerEvent::Block { data, .. }) => data.len(),
            _ => 0,
        };
        self.core.handle(Instant::now(), input);
        if block > 0 {
            // Copied into its piece (or dropped): room for the next.
            self.shared.backlog.give(block);
        }
    }

    /// Tells the core our address as the router shows it, when it changed
    /// (the session's port mapping sets it).
    fn note_external(&mut self) {
        let now = self.shared.reach.external();
        if now != self.external {
            self.external = now;
            self.core.handle(Instant::now(), Input::External(now));
        }
    }

    /// Tells the core the byte counters of the torrent and of each
    /// running source.
    fn count_traffic(&mut self) {
        let traffic = self.traffic();
        self.core.handle(Instant::now(), Input::Traffic(traffic));
    }

    fn traffic(&self) -> Traffic {
        let sources = self
            .links
            .iter()
            .map(|(k, l)| {
                let s = match l {
                    Link::Peer(_, s) | Link::Web(_, s) => s,
                };
                (
                    *k,
                    s.downloaded.load(Ordering::Relaxed),
                    s.uploaded.load(Ordering::Relaxed),
                )
            })
            .collect();
        Traffic {
            downloaded: self.shared.downloaded.load(Ordering::Relaxed),
            uploaded: self.shared.uploaded.load(Ordering::Relaxed),
            sources,
        }
    }

    /// Carries out the core's actions, up to the end of the run.
    fn step(&mut self) {
        while self.end.is_none() {
            match self.core.poll_action() {
                Some(Action::Finished(outcome)) => self.end = Some(Ok(outcome)),
                Some(Action::Failed(e)) => self.end = Some(Err(e)),
                Some(a) => self.act(a),
                None => break,
            }
        }
        // An incoming connection the core did not take is closed.
        self.incoming = None;
    }

    /// After the end: peers are told to close and the last progress goes
    /// out; nothing new is started.
    fn wind_down(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Connect { .. }
                | Action::Accept { .. }
                | Action::StartWebSeed { .. }
                | Action::Verify(_)
                | Action::Recheck(_)
                | Action::Finished(_)
                | Action::Failed(_) => {}
                a => self.act(a),
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Connect { key, addr, only } => {
                let (rx, stats) = self.link_peer(key);
                let (shared, events) = (self.shared.clone(), self.events_tx.clone());
                tokio::spawn(peer::run_outgoing_over(
                    key, addr, only, shared, events, rx, stats,
                ));
            }
            Action::Accept { key, addr } => self.accept(key, addr),
            Action::Send(key, cmd) => self.send(key, cmd),
            Action::StartWebSeed { key, url, unwanted } => self.start_web_seed(key, url, unwanted),
            Action::ResetWebSeed(key) => {
                if let Some(Link::Web(tx, _)) = self.links.get(&key) {
                    let _ = tx.send(WebCmd::Reset);
                }
            }
            Action::Verify(jobs) => {
                let store = self.shared.store.clone();
                let tx = self.events_tx.clone();
                tokio::task::spawn_blocking(move || {
                    // After a failed write (disk full, say) the store
                    // refuses every later one, so at most one half-written
                    // piece is left.
                    let done: Vec<Verified> = jobs
                        .into_iter()
                        .map(|j| j.run(store.layout(), |p, d| store.write_piece(p, d)))
                        .collect();
                    let _ = tx.blocking_send(Input::Verified(done).into());
                });
            }
            Action::Recheck(range) => self.recheck(range),
            Action::Have(p) => self.shared.have.set(p as usize),
            Action::HaveBytes(n) => self.shared.have_bytes.store(n, Ordering::Release),
            Action::Complete => {
                if let Some(tx) = self.complete_tx.take() {
                    let _ = tx.send(());
                }
            }
            Action::SuperSeedOver => {
                tracing::info!(
                    "super-seeding done: every piece is in the swarm, {} bytes sent",
                    self.shared.uploaded.load(Ordering::Relaxed)
                );
                self.shared.super_seed.store(false, Ordering::Relaxed);
            }
            Action::Publish => {
                self.progress_tx.send_replace(self.core.progress().clone());
            }
            Action::Finished(_) | Action::Failed(_) => {}
        }
    }

    fn accept(&mut self, key: PeerKey, addr: SocketAddr) {
        let Some((stream, _, handshake)) = self.incoming.take().filter(|(_, a, _)| *a == addr)
        else {
            // Nothing to run: the core hears the connection is gone.
            let gone = PeerEvent::Gone("connection lost before it was taken".into());
            self.core.handle(Instant::now(), Input::Peer(key, gone));
            return;
        };
        let (rx, stats) = self.link_peer(key);
        tokio::spawn(peer::run_incoming(
            key,
            stream,
            addr,
            handshake,
            self.shared.clone(),
            self.events_tx.clone(),
            rx,
            stats,
        ));
    }

    /// The command channel and byte counters of a new peer task under `key`.
    fn link_peer(&mut self, key: PeerKey) -> (mpsc::UnboundedReceiver<PeerCmd>, Arc<PeerStats>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(PeerStats::default());
        self.links.insert(key, Link::Peer(tx, stats.clone()));
        (rx, stats)
    }

    /// A command to a peer goes as it is; a web seed's task takes the
    /// fetching part of it, and ends when its channel is dropped.
    fn send(&mut self, key: PeerKey, cmd: PeerCmd) {
        match self.links.get(&key) {
            Some(Link::Peer(tx, _)) => {
                let _ = tx.send(cmd);
            }
            Some(Link::Web(tx, _)) => {
                let web = match cmd {
                    PeerCmd::Request(blocks) => WebCmd::Fetch(blocks),
                    PeerCmd::Cancel(b) => WebCmd::Cancel(b),
                    PeerCmd::Close(_) => {
                        self.links.remove(&key);
                        return;
                    }
                    _ => return,
                };
                let _ = tx.send(web);
            }
            None => {}
        }
    }

    fn start_web_seed(&mut self, key: PeerKey, url: String, unwanted: Option<Bitfield>) {
        let (Some(files), Some(client)) = (self.web_files.remove(&url), self.web_client.clone())
        else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(PeerStats::default());
        self.links.insert(key, Link::Web(tx, stats.clone()));
        tokio::spawn(webseed::run(
            webseed::Seed {
                key,
                files,
                meta: self.meta.clone(),
                shared: self.shared.clone(),
                stats,
                client,
                events: self.events_tx.clone(),
                unwanted,
            },
            rx,
        ));
    }

    /// Checks what is on disk of `range`, off the runtime.
    fn recheck(&self, range: std::ops::Range<u32>) {
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
            let _ = tx.blocking_send(Input::Rechecked { range, good }.into());
        });
    }
}

#[cfg(test)]
mod tests {
    use sha1::{Digest, Sha1};

    use crate::metainfo::NewTorrent;
    use crate::store::{Layout, PieceData, StoreError};
    use crate::torrent::PieceJob;

    /// A hash job of a torrent that reads its piece hashes from its
    /// .torrent file (one of more than 52k pieces): once the file is
    /// rewritten, the job reports the error (the run stops on it; no peer
    /// is blamed) and writes nothing; before, it checks and writes.
    #[test]
    fn a_job_reports_hashes_that_cannot_be_read() {
        let piece = vec![7u8; 16384];
        let nt = NewTorrent {
            name: "t".into(),
            length: 2 * 16384,
            piece_length: 16384,
            pieces: [Sha1::digest(&piece), Sha1::digest(&piece)].concat(),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.torrent");
        std::fs::write(&path, nt.to_bytes()).unwrap();
        let meta = crate::store::load_with(&path, 0).unwrap();
        assert!(meta.hashes_on_disk());
        let layout = Layout::from_metainfo(&meta);
        let job = |p: u32| {
            let mut data = PieceData::default();
            data.set_len(piece.len(), 0);
            data.copy_from_slice(&piece);
            PieceJob {
                piece: p,
                data,
                senders: vec![1],
                with_blocks: false,
            }
        };
        let mut written = Vec::new();
        let v = job(0).run(&layout, |p, _| {
            written.push(p);
            Ok(())
        });
        assert!(v.ok && v.write.is_ok());
        std::fs::write(&path, b"d4:spami1ee").unwrap();
        let v = job(1).run(&layout, |p, _| {
            written.push(p);
            Ok(())
        });
        assert!(!v.ok);
        assert!(
            matches!(v.write, Err(StoreError::Hashes(_))),
            "{:?}",
            v.write
        );
        assert_eq!(written, vec![0]);
    }
}
