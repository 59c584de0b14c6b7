//! Runs a torrent end to end: checks what is on disk, listens for peers,
//! announces to trackers, drives the coordinator and the display, and shuts
//! down cleanly (stopped announce, data left resumable) on Ctrl-C.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bitfield::{AtomicBitfield, Bitfield};
use crate::metainfo::Metainfo;
use crate::ownership;
use crate::peer::{read_incoming_handshake, Shared};
use crate::store::{hash_threads, Layout, PieceCheck, Store};
use crate::torrent::{Config, Event, Outcome, PeerSource, Progress, Torrent};
use crate::tracker::{self, AnnounceRequest, TrackerList};
use crate::ui::{self, Display};

pub struct Options {
    pub dir: PathBuf,
    pub port: Option<u16>,
    pub peers: Vec<SocketAddr>,
    pub keep_seeding: bool,
    /// `seed`: the data must already be complete.
    pub require_complete: bool,
    pub max_peers: usize,
    pub display: Display,
    /// Upload limit in bytes per second.
    pub upload_limit: Option<u64>,
    /// Download limit in bytes per second.
    pub download_limit: Option<u64>,
    /// Replace files in the way that shoal did not create (`--overwrite`).
    pub overwrite: bool,
    /// The process's DHT node, unless turned off.
    pub dht: Option<crate::dht::Dht>,
    /// Peer exchange (BEP 11), unless turned off; never for private torrents.
    pub pex: bool,
    /// The process's local discovery socket (BEP 14), unless turned off.
    pub lsd: Option<crate::lsd::Lsd>,
    /// The files to download (`--only`, `--select`); None: all.
    pub selection: Option<Vec<bool>>,
    /// When to stop seeding (`--seed-ratio`, `--seed-time`); never without.
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<Duration>,
    /// Give up when an incomplete download got no data for this long.
    pub stall_timeout: Option<Duration>,
    /// Peers a magnet's metadata phase found, with where from.
    pub learned: Vec<(SocketAddr, PeerSource)>,
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

pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-SH0100-000000000000";
    for b in &mut id[8..] {
        *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random::<usize>() % 36];
    }
    id
}

/// Hashes what is already on disk, on all cores, so a restart fetches only
/// what is missing. Stops early (StoreError::Interrupted) once `cancel` is set.
fn initial_check(store: &Store, display: Display, cancel: &AtomicBool) -> Result<Vec<PieceCheck>> {
    let count = store.layout().piece_count() as usize;
    let any_file = (0..store.layout().files.len()).any(|i| {
        store.layout().files[i].length > 0
            && store.file_path(i).map(|p| p.exists()).unwrap_or(false)
    });
    if !any_file {
        return Ok(vec![PieceCheck::Missing; count]);
    }
    let total = store.layout().total_length;
    let checks = match display {
        Display::Bars => ui::with_counter_bar(total, "checking", |done| {
            store.check_all_until(hash_threads(), done, cancel)
        })?,
        Display::Json => ui::with_counter_events(total, |done| {
            store.check_all_until(hash_threads(), done, cancel)
        })?,
        _ => store.check_all_until(hash_threads(), &AtomicU64::new(0), cancel)?,
    };
    Ok(checks)
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

pub async fn run(meta: Metainfo, opts: Options) -> Result<Summary> {
    let started = std::time::Instant::now();
    let meta = Arc::new(meta);
    let layout = Layout::from_metainfo(&meta);
    let display = opts.display;
    let count = meta.piece_count();

    // Signals are watched from the start: the check of a big folder can
    // take minutes and must stop on Ctrl-C like everything else.
    let (stop_tx, stop_rx) = watch::channel(false);
    let cancel = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicI32::new(0));
    // `--stall-timeout` stops the run the same way, saying why here.
    let stalled: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let (stall_tx, stall_rx) = oneshot::channel::<()>();
    let signals = {
        let (cancel, signal) = (cancel.clone(), signal.clone());
        tokio::spawn(async move {
            tokio::select! {
                s = wait_for_signal() => signal.store(s, Ordering::SeqCst),
                Ok(()) = stall_rx => {}
            }
            cancel.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
    };
    let interrupted = |progress: Progress| Summary {
        outcome: Outcome::Interrupted,
        complete: progress.complete,
        progress,
        elapsed: started.elapsed(),
        signal: Some(signal.load(Ordering::SeqCst)).filter(|s| *s != 0),
        stalled: stalled.lock().ok().and_then(|s| s.clone()),
    };

    // Everything on disk is checked through a read-only store first: a
    // download decides whether it may write into the folder (ownership)
    // before it creates or changes a single file.
    if !opts.require_complete {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    }
    // Files left out are never created; the bytes they share with wanted
    // pieces live in a sparse part file beside the ownership record.
    let skip = opts.selection.as_ref().map(|sel| {
        let skipped: Vec<bool> = sel.iter().map(|s| !s).collect();
        let part = opts
            .dir
            .join(ownership::DIR_NAME)
            .join(format!("{}.part", meta.info_hash.hex()));
        (skipped, part)
    });
    let mut reader = Store::open_read(layout.clone(), &opts.dir);
    if let Some((skipped, part)) = &skip {
        reader.set_skipped(skipped.clone(), part.clone());
    }
    let reader = Arc::new(reader);
    let checks = {
        let (reader, cancel) = (reader.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || initial_check(&reader, display, &cancel))
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
            signals.abort();
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
            &opts.dir,
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
            Arc::new(Store::open_write_selected(layout, &opts.dir, skip)?),
            Some(claim),
        )
    };
    let have_bytes: u64 = have.iter_ones().map(|i| meta.piece_size(i as u32)).sum();
    if have.count_ones() > 0 && !opts.require_complete {
        ui::report(
            display,
            "resuming",
            serde_json::json!({
                "have_bytes": have_bytes,
                "total": meta.total_length,
                "pieces_have": have.count_ones(),
                "piece_count": count,
            }),
            &format!(
                "resuming: {} of {} already verified",
                ui::human_bytes(have_bytes),
                ui::human_bytes(meta.total_length)
            ),
        );
    }

    let listener = bind(opts.port).await?;
    let listen_port = listener.local_addr()?.port();
    let dual = listen_dual_stack(&listener);
    ui::report(
        display,
        "listening",
        serde_json::json!({
            "port": listen_port,
            "ipv4": dual || !listener.local_addr()?.is_ipv6(),
            "ipv6": listener.local_addr()?.is_ipv6(),
        }),
        &format!(
            "listening on port {listen_port} ({})",
            match (listener.local_addr()?.is_ipv6(), dual) {
                (true, true) => "IPv4 and IPv6",
                (true, false) => "IPv6 only",
                _ => "IPv4 only",
            }
        ),
    );
    let shared = Arc::new(Shared {
        info_hash: meta.info_hash.0,
        peer_id: new_peer_id(),
        piece_count: count,
        piece_length: meta.piece_length,
        total_length: meta.total_length,
        store,
        have: Arc::new(AtomicBitfield::from_bitfield(&have)),
        listen_port,
        upload_limit: opts.upload_limit.map(crate::limit::RateLimit::new),
        download_limit: opts.download_limit.map(crate::limit::RateLimit::new),
        pex: opts.pex && !meta.private,
        metadata: match meta.info_bytes() {
            Ok(b) if b.len() as u64 <= crate::metadata::MAX_SIZE => Arc::from(&b[..]),
            _ => Arc::from(&[][..]),
        },
        uploaded: AtomicU64::new(0),
        downloaded: AtomicU64::new(0),
        have_bytes: AtomicU64::new(0),
    });

    let (events_tx, events_rx) = mpsc::channel(1024);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (complete_tx, complete_rx) = oneshot::channel();

    let listen_task = tokio::spawn(accept_loop(listener, shared.clone(), events_tx.clone()));

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
    if let Some(sel) = &opts.selection {
        torrent.set_unwanted(&crate::selection::unwanted_pieces(&meta, sel));
    }
    // Started after the coordinator published its first snapshot, so the
    // display never shows a torrent of 0 bytes.
    let display_task = tokio::spawn(ui::show(meta.clone(), progress_rx.clone(), display));
    torrent.add_peers(PeerSource::Manual, opts.peers.clone());
    for (addr, source) in &opts.learned {
        torrent.add_peers(*source, vec![*addr]);
    }

    let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
    let (tracker_ctl, tracker_ctl_rx) = mpsc::channel(4);
    let tracker_task = if trackers.is_empty() || meta.tracker_tiers().is_empty() {
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
    let dht_task = match (&opts.dht, meta.private) {
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
    let lsd_task = match (&opts.lsd, meta.private) {
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
    signals.abort();
    stall_task.abort();
    listen_task.abort();
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
    // The coordinator is gone, so the display sees its channel close and
    // clears its bars; cut it short only if it hangs.
    let abort = display_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), display_task)
        .await
        .is_err()
    {
        abort.abort();
    }
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
    let mut last = (0, 0);
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = rx.borrow_and_update().clone();
        let now = tokio::time::Instant::now();
        if p.complete || (p.have_bytes, p.downloaded) != last {
            last = (p.have_bytes, p.downloaded);
            since = now;
        } else if now.duration_since(since) >= limit {
            return format!(
                "stalled: no data for {} ({} peers; {})",
                ui::human_duration(limit),
                p.peers,
                crate::out::escape(&p.status)
            );
        }
    }
}

/// Waits for Ctrl-C or SIGTERM and says which (its number).
pub async fn wait_for_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    if let Ok(mut term) = signal(SignalKind::terminate()) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return libc::SIGINT,
            _ = term.recv() => return libc::SIGTERM,
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    libc::SIGINT
}

/// Accepts connections, reads their handshake with a deadline, and hands
/// the ones for our torrent to the coordinator. Encrypted (MSE) handshakes
/// are answered with plain text selected; anything else (another torrent, a
/// peer that insists on RC4) is dropped at once, so the other side can
/// retry in plain text.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, events: mpsc::Sender<Event>) {
    loop {
        let (mut stream, addr) = match listener.accept().await {
            // IPv4 peers on a dual-stack socket show up as ::ffff:a.b.c.d.
            Ok((s, a)) => (s, SocketAddr::new(a.ip().to_canonical(), a.port())),
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let events = events.clone();
        tokio::spawn(async move {
            match read_incoming_handshake(&mut stream, &shared.info_hash).await {
                Ok(hs) if hs.info_hash == shared.info_hash => {
                    let _ = events
                        .send(Event::Incoming {
                            stream,
                            addr,
                            handshake: hs,
                        })
                        .await;
                }
                Ok(_) => tracing::debug!("{addr}: handshake for another torrent"),
                Err(e) => tracing::debug!("{addr}: bad handshake: {e}"),
            }
        });
    }
}

/// Announces the torrent on the LAN (BEP 14) at once and every five
/// minutes, and passes on the peers that announce it.
async fn lsd_loop(
    lsd: crate::lsd::Lsd,
    info_hash: [u8; 20],
    port: u16,
    events: mpsc::Sender<Event>,
) {
    let mut heard = lsd.subscribe();
    let mut tick = tokio::time::interval(crate::lsd::INTERVAL);
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
                    if events.send(Event::Peers(PeerSource::Lsd, vec![peer])).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Announces the torrent on the DHT and asks it for peers: at once, then
/// every 30 s while there are few peers and every 15 minutes after.
async fn dht_loop(
    dht: crate::dht::Dht,
    info_hash: [u8; 20],
    port: u16,
    events: mpsc::Sender<Event>,
    progress: watch::Receiver<Progress>,
    max_peers: usize,
) {
    let mut announced: Option<std::time::Instant> = None;
    loop {
        if announced.is_none_or(|t| t.elapsed() >= Duration::from_secs(15 * 60)) {
            match dht.announce(info_hash, port).await {
                Ok(()) => announced = Some(std::time::Instant::now()),
                Err(e) => tracing::debug!("DHT announce: {e}"),
            }
        }
        let peers = dht.get_peers(info_hash).await;
        tracing::debug!("DHT: {} peers", peers.len());
        if !peers.is_empty()
            && events
                .send(Event::Peers(PeerSource::Dht, peers))
                .await
                .is_err()
        {
            return;
        }
        let connected = progress.borrow().peers;
        tokio::time::sleep(crate::dht::next_lookup(connected, max_peers)).await;
    }
}

/// Announces `started`, re-announces on the tracker's interval, `completed`
/// when the download finishes, and `stopped` when asked to stop (the ack is
/// sent once the tracker answered or gave up). Failures are retried with
/// back-off and never stop the download.
async fn announce_loop(
    mut trackers: TrackerList,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
    mut stop: mpsc::Receiver<oneshot::Sender<()>>,
    mut complete: oneshot::Receiver<()>,
    complete_at_start: bool,
    progress: Option<watch::Receiver<Progress>>,
) {
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
            port: shared.listen_port,
            uploaded: shared.uploaded.load(Ordering::Relaxed),
            downloaded: shared.downloaded.load(Ordering::Relaxed),
            left: shared.total_length.saturating_sub(have),
            event,
            numwant: 80,
            key,
        }
    };
    loop {
        let req = request(event);
        // A leecher with no peer asks again once `min interval` allows
        // (never under 30 s) instead of waiting out the whole interval.
        let mut early = None;
        let wait = match trackers.announce(&req).await {
            Ok((url, resp)) => {
                failures = 0;
                let _ = events.send(Event::TrackerStatus(None)).await;
                early = Some(tracker::earliest_reannounce(resp.min_interval));
                let wait = tracker::reannounce_after(resp.interval, resp.min_interval);
                tracing::info!(
                    "{url}: {} peers, next announce in {:?}",
                    resp.peers.len(),
                    wait
                );
                if let Some(w) = resp.warning {
                    let _ = events.send(Event::TrackerWarning(w)).await;
                }
                let _ = events
                    .send(Event::Peers(PeerSource::Tracker, resp.peers))
                    .await;
                event = tracker::Event::None;
                wait
            }
            Err(e) => {
                failures += 1;
                let wait = tracker::retry_delay(failures);
                tracing::info!("announce failed: {e}; retrying in {}s", wait.as_secs());
                let who = trackers.last_failed().unwrap_or("?");
                let why = crate::torrent::short_reason(&e.to_string());
                let status = format!("tracker {who}: {why}, retry in {}s", wait.as_secs());
                let _ = events.send(Event::TrackerStatus(Some(status))).await;
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
                        let _ = tokio::time::timeout_at(deadline, trackers.announce(&req)).await;
                    }
                    if event != tracker::Event::Started {
                        let req = request(tracker::Event::Stopped);
                        let _ = tokio::time::timeout_at(deadline, trackers.announce(&req)).await;
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
    use crate::metainfo::NewTorrent;
    use crate::tracker::fake::FakeHttp;

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
            info_hash: meta.info_hash.0,
            peer_id: new_peer_id(),
            piece_count: meta.piece_count(),
            piece_length: meta.piece_length,
            total_length: total,
            store: Arc::new(store),
            have: Arc::new(AtomicBitfield::from_bitfield(&Bitfield::new(7))),
            listen_port: 6881,
            upload_limit: None,
            download_limit: None,
            metadata: Arc::from(&[][..]),
            pex: false,
            uploaded: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            have_bytes: AtomicU64::new(0),
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
                false,
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
                false,
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
            false,
            None,
        ));
        // `started` answered: the tracker's peers arrive as an event.
        while !matches!(ev_rx.recv().await, Some(Event::Peers(..))) {}
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
