//! Finding peers for a running torrent: its trackers, the DHT and local
//! discovery, each a task that sends the addresses it learns to the
//! torrent's coordinator as events.

pub mod dht;
pub mod fetch;
pub mod lsd;
pub mod tracker;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::peer::Shared;
use crate::torrent::{Event, Input, PeerSource, Progress};
use tracker::{AnnounceRequest, TrackerList};

/// Announces the torrent on the LAN (BEP 14) at once and every five
/// minutes, and passes on the peers that announce it.
pub async fn lsd_loop(
    lsd: crate::discovery::lsd::Lsd,
    info_hash: [u8; 20],
    port: u16,
    events: mpsc::Sender<Event>,
) {
    let mut heard = lsd.subscribe();
    let mut tick = tokio::time::interval(crate::discovery::lsd::INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = lsd.announce(info_hash, port).await {
                    tracing::debug!("LSD announce: {e}");
                }
            }
            got = heard.recv() => match got {
                Ok((a, ip)) if a.info_hashes.contains(&info_hash) && !ip.is_unspecified() => {
                    let peer = SocketAddr::new(ip.to_canonical(), a.port);
                    tracing::debug!("LSD: {peer}");
                    if events.send(Input::Peers(PeerSource::Lsd, vec![peer]).into()).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Announces the torrent on the DHT and asks it for peers: after `first`
/// (a seed's spread, as for its trackers), then every 30 s while there
/// are few peers and every 15 minutes after. The lookups of all torrents
/// wait in the DHT's one queue ([`crate::discovery::dht::Dht`]).
#[allow(clippy::too_many_arguments)]
pub async fn dht_loop(
    dht: crate::discovery::dht::Dht,
    info_hash: [u8; 20],
    port: u16,
    reach: Arc<crate::reach::Reach>,
    events: mpsc::Sender<Event>,
    progress: watch::Receiver<Progress>,
    max_peers: usize,
    first: Duration,
) {
    tokio::time::sleep(first).await;
    let mut announced: Option<std::time::Instant> = None;
    loop {
        // The router's external port once mapped, as for trackers.
        let port = reach.announce_port(port);
        let seeding = {
            let p = progress.borrow();
            p.piece_count > 0 && p.pieces_have == p.piece_count
        };
        let turn = dht.turn(seeding).await;
        if announced.is_none_or(|t| t.elapsed() >= Duration::from_secs(15 * 60)) {
            match dht.announce(info_hash, port).await {
                Ok(()) => announced = Some(std::time::Instant::now()),
                Err(e) => tracing::debug!("DHT announce: {e}"),
            }
        }
        let peers = dht.get_peers(info_hash).await;
        drop(turn);
        tracing::debug!("DHT: {} peers", peers.len());
        if !peers.is_empty()
            && events
                .send(Input::Peers(PeerSource::Dht, peers).into())
                .await
                .is_err()
        {
            return;
        }
        let connected = progress.borrow().peers;
        tokio::time::sleep(crate::discovery::dht::next_lookup(connected, max_peers)).await;
    }
}

/// Announces `started`, re-announces on the tracker's interval, `completed`
/// when the download finishes, and `stopped` when asked to stop (the ack is
/// sent once the tracker answered or gave up). Failures are retried with
/// back-off and never stop the download.
/// How a torrent's announces begin: whether it is complete from the start
/// (it then never sends `completed`), and how long it waits before its
/// first announce ([`first_announce_delay`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AnnounceStart {
    pub complete: bool,
    pub delay: Duration,
}

impl From<bool> for AnnounceStart {
    fn from(complete: bool) -> AnnounceStart {
        AnnounceStart {
            complete,
            delay: Duration::ZERO,
        }
    }
}

/// Most time a seed's first announce is spread over.
const ANNOUNCE_SPREAD_MAX: Duration = Duration::from_secs(30);
/// Spread per torrent running in the session: a thousand seeds starting
/// together announce over 20 s, some 50 a second, not a thousand at once.
const ANNOUNCE_SPREAD_PER_TORRENT: Duration = Duration::from_millis(20);

/// How long a torrent waits before its first announce: a download at once
/// (it needs peers), a seed from the start at a point drawn by `fraction`
/// (0.0–1.0) of a window that grows with the torrents the session runs.
pub fn first_announce_delay(complete: bool, torrents: usize, fraction: f64) -> Duration {
    if !complete || torrents <= 1 {
        return Duration::ZERO;
    }
    let window = ANNOUNCE_SPREAD_PER_TORRENT
        .saturating_mul(u32::try_from(torrents).unwrap_or(u32::MAX))
        .min(ANNOUNCE_SPREAD_MAX);
    window.mul_f64(fraction.clamp(0.0, 1.0))
}

/// Announces in flight at once in the process: a thousand torrents
/// starting or stopping together must not open a thousand sockets (a
/// service runs under a descriptor limit of 1,024) nor hit a tracker with
/// a thousand requests at once.
const ANNOUNCES_AT_ONCE: usize = 32;

/// Runs `announce` once one of the process's announce slots is free.
async fn bounded<T>(announce: impl std::future::Future<Output = T>) -> T {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ANNOUNCES_AT_ONCE);
    // The semaphore is never closed: acquire only fails once it is.
    let _slot = SLOTS.acquire().await.ok();
    announce.await
}

pub async fn announce_loop(
    mut trackers: TrackerList,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    mut stop: mpsc::Receiver<oneshot::Sender<()>>,
    mut complete: oneshot::Receiver<()>,
    start: AnnounceStart,
    progress: Option<watch::Receiver<Progress>>,
) {
    let complete_at_start = start.complete;
    let key: u32 = rand::random();
    let mut event = tracker::Event::Started;
    let mut failures = 0u32;
    // A seed from the start never sends `completed`: it downloaded nothing.
    let mut was_complete = complete_at_start;
    let request = |event| {
        let have = shared.have_bytes.load(Ordering::Acquire);
        AnnounceRequest {
            info_hash: shared.info_hash,
            peer_id: shared.peer_id,
            port: shared.reach.announce_port(shared.listen_port),
            uploaded: shared.uploaded.load(Ordering::Relaxed),
            downloaded: shared.downloaded.load(Ordering::Relaxed),
            left: shared.meta.total_length.saturating_sub(have),
            event,
            numwant: 80,
            key,
            ip: shared.reach.announce_ip(),
            ipv6: shared.reach.ipv6(),
        }
    };
    // A new external port or address (the router's port mapping) is
    // announced at once, not at the next interval.
    let mut mapped = shared.reach.watch_mapped();
    let mut mapped_alive = true;
    if !start.delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(start.delay) => {}
            ack = stop.recv() => {
                // Never announced: nothing to say `stopped` about.
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
        }
    }
    loop {
        let req = request(event);
        mapped.mark_unchanged();
        let announced = (req.port, req.ip);
        // A leecher with no peer asks again once `min interval` allows
        // (never under 30 s) instead of waiting out the whole interval.
        let mut early = None;
        let wait = match bounded(trackers.announce(&req)).await {
            Ok((url, resp)) => {
                failures = 0;
                let why = resp
                    .peers
                    .is_empty()
                    .then(|| format!("no peers from tracker {}", tracker::host_of(&url)));
                let _ = events.send(Input::TrackerStatus(why).into()).await;
                early = Some(tracker::earliest_reannounce(resp.min_interval));
                let wait = tracker::reannounce_after(resp.interval, resp.min_interval);
                trackers.log_failures(wait);
                trackers.schedule(wait);
                let _ = events.send(Input::Trackers(trackers.views()).into()).await;
                tracing::info!(
                    "{url}: {} peers, next announce in {:?}",
                    resp.peers.len(),
                    wait
                );
                if let Some(w) = resp.warning {
                    let _ = events.send(Input::TrackerWarning(w).into()).await;
                }
                let _ = events
                    .send(Input::Peers(PeerSource::Tracker, resp.peers).into())
                    .await;
                event = tracker::Event::None;
                wait
            }
            Err(e) => {
                failures += 1;
                let wait = tracker::retry_delay(failures);
                tracing::debug!("announce failed: {e}");
                let status = trackers.failure_summary();
                trackers.log_failures(wait);
                trackers.schedule(wait);
                let _ = events.send(Input::TrackerStatus(status).into()).await;
                let _ = events.send(Input::Trackers(trackers.views()).into()).await;
                wait
            }
        };
        let until = tokio::time::Instant::now() + wait;
        let mut check = early.map(|e| tokio::time::Instant::now() + e);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = tokio::time::sleep_until(check.unwrap_or(until)), if check.is_some() => {
                    let starving = progress.as_ref().is_some_and(|p| {
                        let p = p.borrow();
                        p.peers == 0 && !p.complete
                    });
                    if starving {
                        tracing::info!("no peers: asking the tracker again before its interval");
                        break;
                    }
                    check = early.map(|e| tokio::time::Instant::now() + e);
                }
                r = mapped.changed(), if mapped_alive => {
                    mapped_alive = r.is_ok();
                    let now = (
                        shared.reach.announce_port(shared.listen_port),
                        shared.reach.announce_ip(),
                    );
                    if now != announced {
                        tracing::info!("announcing the router's port {} to trackers", now.0);
                        break;
                    }
                }
                r = &mut complete, if !was_complete => {
                    was_complete = true;
                    if r.is_ok() {
                        event = tracker::Event::Completed;
                    }
                    break;
                }
                ack = stop.recv() => {
                    // A download that just finished still owes `completed`
                    // (trackers count it); then `stopped`, but only if the
                    // tracker ever heard of us.
                    if !was_complete && complete.try_recv().is_ok() {
                        event = tracker::Event::Completed;
                    }
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                    if event == tracker::Event::Completed {
                        let req = request(tracker::Event::Completed);
                        let _ = tokio::time::timeout_at(deadline, bounded(trackers.announce(&req))).await;
                    }
                    if event != tracker::Event::Started {
                        let req = request(tracker::Event::Stopped);
                        let _ = tokio::time::timeout_at(deadline, bounded(trackers.announce(&req))).await;
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_spread_their_first_announce_downloads_do_not_wait() {
        assert_eq!(first_announce_delay(false, 1000, 0.9), Duration::ZERO);
        assert_eq!(first_announce_delay(true, 1, 0.9), Duration::ZERO);
        assert_eq!(
            first_announce_delay(true, 1000, 1.0),
            Duration::from_secs(20)
        );
        assert_eq!(
            first_announce_delay(true, 1000, 0.5),
            Duration::from_secs(10)
        );
        // Capped, however many; a fraction out of range is clamped.
        assert_eq!(
            first_announce_delay(true, 1_000_000, 2.0),
            ANNOUNCE_SPREAD_MAX
        );
        assert_eq!(first_announce_delay(true, 10, -1.0), Duration::ZERO);
        assert_eq!(
            first_announce_delay(true, 10, 1.0),
            Duration::from_millis(200)
        );
    }
    use crate::bitfield::{AtomicBitfield, Bitfield};
    use crate::discovery::tracker::fake::FakeHttp;
    use crate::metainfo::Metainfo;
    use crate::metainfo::NewTorrent;
    use crate::peer::new_peer_id;
    use crate::store::{Layout, Store};

    /// A torrent of `total` bytes announcing to `tracker`, nothing on disk.
    fn shared_for(tracker: String, total: u64) -> (Metainfo, Arc<Shared>, tempfile::TempDir) {
        let t = NewTorrent {
            name: "t".into(),
            length: total,
            piece_length: 16384,
            pieces: vec![0; 20 * 7],
            trackers: vec![vec![tracker]],
            ..Default::default()
        };
        let meta = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_read(Layout::from_metainfo(&meta), dir.path());
        let shared = Arc::new(Shared {
            peer_id: new_peer_id(),
            listen_port: 6881,
            ..Shared::for_test(
                &meta,
                store,
                AtomicBitfield::from_bitfield(&Bitfield::new(7)),
            )
        });
        (meta, shared, dir)
    }

    /// Regression (issue 15): a tracker answering `interval` 0, 1 or -1
    /// (even with a small `min interval`) made us announce every second.
    /// The floor is 5 minutes: in 3 s there is one announce, not three.
    #[tokio::test]
    async fn tiny_tracker_intervals_are_floored() {
        let bodies: [&[u8]; 4] = [
            b"d8:intervali0e5:peers0:e",
            b"d8:intervali1e5:peers0:e",
            b"d8:intervali-1e5:peers0:e",
            b"d8:intervali0e12:min intervali1e5:peers0:e",
        ];
        let mut runs = Vec::new();
        for body in bodies {
            let server = FakeHttp::start(move |_| (200, body.to_vec())).await;
            let (meta, shared, dir) = shared_for(server.url(), 100_000);
            let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
            let (ev_tx, ev_rx) = mpsc::channel(16);
            let (stop_tx, stop_rx) = mpsc::channel(1);
            let (complete_tx, complete_rx) = oneshot::channel();
            let task = tokio::spawn(announce_loop(
                trackers,
                shared,
                ev_tx,
                stop_rx,
                complete_rx,
                false.into(),
                None,
            ));
            runs.push((server, task, stop_tx, complete_tx, ev_rx, dir));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (server, task, stop_tx, _complete, _ev, _dir) in runs {
            let n = server.requests().len();
            let (ack_tx, ack_rx) = oneshot::channel();
            stop_tx.send(ack_tx).await.unwrap();
            ack_rx.await.unwrap();
            task.await.unwrap();
            assert_eq!(n, 1, "{:?}", server.requests());
        }
    }

    /// A leecher with no peer asks the tracker again once `min interval`
    /// (floored at 30 s) has passed, not after the 30-minute interval; one
    /// with peers waits. Real time: about 31 s.
    #[tokio::test]
    async fn a_leecher_without_peers_asks_again_early() {
        let body = b"d8:intervali1800e12:min intervali1e5:peers0:e";
        let mut runs = Vec::new();
        for peers in [0usize, 3] {
            let server = FakeHttp::start(move |_| (200, body.to_vec())).await;
            let (meta, shared, dir) = shared_for(server.url(), 100_000);
            let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
            let (ev_tx, ev_rx) = mpsc::channel(16);
            let (stop_tx, stop_rx) = mpsc::channel(1);
            let (complete_tx, complete_rx) = oneshot::channel();
            let (progress_tx, progress_rx) = watch::channel(Progress {
                peers,
                ..Progress::default()
            });
            let task = tokio::spawn(announce_loop(
                trackers,
                shared,
                ev_tx,
                stop_rx,
                complete_rx,
                false.into(),
                Some(progress_rx),
            ));
            runs.push((
                server,
                task,
                stop_tx,
                complete_tx,
                ev_rx,
                dir,
                progress_tx,
                peers,
            ));
        }
        tokio::time::sleep(Duration::from_secs(32)).await;
        for (server, task, stop_tx, _c, _ev, _dir, _p, peers) in runs {
            let n = server.requests().len();
            let (ack_tx, ack_rx) = oneshot::channel();
            stop_tx.send(ack_tx).await.unwrap();
            ack_rx.await.unwrap();
            task.await.unwrap();
            let want = if peers == 0 { 2 } else { 1 };
            assert_eq!(n, want, "{peers} peers: {:?}", server.requests());
        }
    }

    /// Regression (interop with opentracker): `left` must be what is on
    /// disk at the moment of each announce: the whole size for `started`
    /// of an empty download, 0 for `completed` sent right at completion.
    #[tokio::test]
    async fn announces_carry_the_current_left() {
        let server = FakeHttp::start(|_| (200, b"d8:intervali900e5:peers0:e".to_vec())).await;
        let total = 100_000u64;
        let (meta, shared, _dir) = shared_for(server.url(), total);
        let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
        let (ev_tx, mut ev_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = mpsc::channel(1);
        let (complete_tx, complete_rx) = oneshot::channel();
        let task = tokio::spawn(announce_loop(
            trackers,
            shared.clone(),
            ev_tx,
            stop_rx,
            complete_rx,
            false.into(),
            None,
        ));
        // `started` answered: the tracker's peers arrive as an event.
        while !matches!(ev_rx.recv().await, Some(Event::Input(Input::Peers(..)))) {}
        // The download completes and the process stops at once.
        shared.have_bytes.store(total, Ordering::Release);
        complete_tx.send(()).unwrap();
        let (ack_tx, ack_rx) = oneshot::channel();
        stop_tx.send(ack_tx).await.unwrap();
        ack_rx.await.unwrap();
        task.await.unwrap();
        let reqs = server.requests();
        let lines: Vec<&str> = reqs
            .iter()
            .map(|r| r.lines().next().unwrap_or(""))
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains("event=started") && lines[0].contains("left=100000"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("event=completed") && lines[1].contains("left=0&"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("event=stopped") && lines[2].contains("left=0&"),
            "{}",
            lines[2]
        );
    }
}
