//! `download` and `seed`: one torrent in a session of its own, stopped by
//! Ctrl-C or SIGTERM, shown by bars, JSON events or nothing. The display
//! follows what the session publishes (notices, progress snapshots); the
//! session never calls it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::face::ui::{self, Display};
use crate::metainfo::Metainfo;
use crate::session::{self, Control, Notice, Session, SessionConfig, Summary};
use crate::torrent::Outcome;
use crate::torrent::PeerSource;
use crate::units::human_bytes;

/// One `download` or `seed` run: the session's settings and the torrent's.
pub struct Options {
    pub dir: PathBuf,
    pub port: Option<u16>,
    pub peers: Vec<SocketAddr>,
    pub keep_seeding: bool,
    /// `seed`: the data must already be complete.
    pub require_complete: bool,
    pub max_peers: usize,
    /// How the run is shown (the caller's business).
    pub display: Display,
    /// Upload limit in bytes per second.
    pub upload_limit: Option<u64>,
    /// Download limit in bytes per second.
    pub download_limit: Option<u64>,
    /// Replace files in the way that shoal did not create (`--overwrite`).
    pub overwrite: bool,
    /// The process's DHT node, unless turned off.
    pub dht: Option<crate::discovery::dht::Dht>,
    /// Peer exchange (BEP 11), unless turned off; never for private torrents.
    pub pex: bool,
    /// The process's local discovery socket (BEP 14), unless turned off.
    pub lsd: Option<crate::discovery::lsd::Lsd>,
    /// The files to download (`--only`, `--select`); None: all.
    pub selection: Option<Vec<bool>>,
    /// When to stop seeding (`--seed-ratio`, `--seed-time`); never without.
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<Duration>,
    /// Super-seed (BEP 16) when the data is complete at the start.
    pub super_seed: bool,
    /// Pieces in order instead of rarest first (`--sequential`).
    pub sequential: bool,
    /// Give up when an incomplete download got no data for this long.
    pub stall_timeout: Option<Duration>,
    /// Peers a magnet's metadata phase found, with where from.
    pub learned: Vec<(SocketAddr, PeerSource)>,
    /// Fetch from the torrent's web seeds (BEP 19), unless `--no-web-seeds`.
    pub web_seeds: bool,
    /// Which connections are encrypted (`--encryption`).
    pub encryption: crate::peer::mse::Policy,
}

/// Runs the torrent until it is done or a signal stops it.
pub async fn run(meta: Metainfo, opts: Options) -> Result<Summary> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = Arc::new(AtomicI32::new(0));
    // Signals are watched from the start: the check of a big folder can
    // take minutes and must stop on Ctrl-C like everything else.
    let signals = {
        let signal = signal.clone();
        tokio::spawn(async move {
            signal.store(session::wait_for_signal().await, Ordering::SeqCst);
            let _ = stop_tx.send(true);
            // Keep the sender: the torrent sees `true`, not a closed channel.
            std::future::pending::<()>().await;
        })
    };
    let display = opts.display;
    let session = Session::start(SessionConfig {
        port: opts.port,
        dht: opts.dht,
        lsd: opts.lsd,
        upload_limit: opts.upload_limit,
        download_limit: opts.download_limit,
        max_connections: None,
        encryption: opts.encryption,
    })
    .await;
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            signals.abort();
            return Err(e);
        }
    };
    let meta = Arc::new(meta);
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let mut ctl = Control::new(stop_rx);
    ctl.notices = Some(notice_tx);
    let progress_rx = ctl.progress.subscribe();
    let plan = ui::SeedPlan {
        ratio: opts.seed_ratio,
        time: opts.seed_time,
    };
    let shower = tokio::spawn(show(
        session.clone(),
        meta.clone(),
        (display, plan),
        notice_rx,
        progress_rx,
        ctl.checked.clone(),
    ));
    let topts = session::TorrentOptions {
        dir: opts.dir,
        base: None,
        peers: opts.peers,
        keep_seeding: opts.keep_seeding,
        require_complete: opts.require_complete,
        max_peers: opts.max_peers,
        overwrite: opts.overwrite,
        pex: opts.pex,
        selection: opts.selection,
        high: None,
        seed_ratio: opts.seed_ratio,
        seed_time: opts.seed_time,
        super_seed: opts.super_seed,
        sequential: opts.sequential,
        readers: None,
        stall_timeout: opts.stall_timeout,
        learned: opts.learned,
        web_seeds: opts.web_seeds,
    };
    let result = session.run_torrent(meta, topts, ctl).await;
    signals.abort();
    // The torrent is gone, so the display sees its channels close and
    // clears its bars; cut it short only if it hangs.
    let abort = shower.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), shower)
        .await
        .is_err()
    {
        abort.abort();
    }
    let mut summary = result?;
    if matches!(summary.outcome, Outcome::Interrupted) {
        summary.signal = Some(signal.load(Ordering::SeqCst)).filter(|s| *s != 0);
    }
    Ok(summary)
}

/// Shows one run: the check of the data on disk, "resuming", where the
/// session listens, then the progress display until the run ends.
async fn show(
    session: Session,
    meta: Arc<Metainfo>,
    (display, plan): (Display, ui::SeedPlan),
    mut notices: mpsc::UnboundedReceiver<Notice>,
    progress: watch::Receiver<crate::torrent::Progress>,
    checked: Arc<AtomicU64>,
) {
    let mut check: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)> = None;
    while let Some(n) = notices.recv().await {
        match n {
            Notice::Checking { total } => {
                let over = Arc::new(AtomicBool::new(false));
                let (src, end) = (checked.clone(), over.clone());
                let task = tokio::task::spawn_blocking(move || {
                    let mirror = |dst: &AtomicU64| {
                        while !end.load(Ordering::Relaxed) {
                            dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
                    };
                    match display {
                        Display::Bars => ui::with_counter_bar(total, "checking", mirror),
                        Display::Json => ui::with_counter_events(total, mirror),
                        Display::Plain | Display::Silent => {}
                    }
                });
                check = Some((over, task));
            }
            Notice::Checked => {
                if let Some((over, task)) = check.take() {
                    over.store(true, Ordering::Relaxed);
                    let _ = task.await;
                }
            }
            Notice::Resuming {
                have_bytes,
                total,
                pieces_have,
                piece_count,
            } => ui::report(
                display,
                "resuming",
                serde_json::json!({
                    "have_bytes": have_bytes,
                    "total": total,
                    "pieces_have": pieces_have,
                    "piece_count": piece_count,
                }),
                &format!(
                    "resuming: {} of {} already verified",
                    human_bytes(have_bytes),
                    human_bytes(total)
                ),
            ),
            Notice::Ready => {
                let (v4, v6) = session.families();
                let port = session.port();
                ui::report(
                    display,
                    "listening",
                    serde_json::json!({"port": port, "ipv4": v4, "ipv6": v6}),
                    &format!("listening on port {port} ({})", session.families_label()),
                );
                ui::show(meta, progress, display, plan).await;
                return;
            }
        }
    }
    // The run ended before it was ready (an error, or stopped while
    // checking): take the checking bar away.
    if let Some((over, task)) = check {
        over.store(true, Ordering::Relaxed);
        let _ = task.await;
    }
}
