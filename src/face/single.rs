//! `download` and `seed`: one torrent in a session of its own, stopped by
//! Ctrl-C or SIGTERM, shown by bars, JSON events or nothing. The display
//! follows what the session publishes (notices, progress snapshots); the
//! session never calls it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use crate::face::ui::{self, Display};
use crate::metainfo::Metainfo;
use crate::session::{self, Control, Notice, Session, Summary, TorrentOptions};
use crate::torrent::Outcome;
use crate::units::human_bytes;

/// Ctrl-C and SIGTERM, caught from the start of a run to its end (the
/// magnet phase and the check of a big folder must stop on them like
/// everything else): they set the stop flag, and which one came is kept.
pub struct Stop {
    stop: watch::Receiver<bool>,
    signal: Arc<AtomicI32>,
    task: tokio::task::JoinHandle<()>,
}

impl Stop {
    /// Caught from here on (needs a tokio runtime).
    pub fn on_signals() -> Stop {
        let mut signals = session::Signals::new();
        let (stop_tx, stop) = watch::channel(false);
        let signal = Arc::new(AtomicI32::new(0));
        let task = {
            let signal = signal.clone();
            tokio::spawn(async move {
                signal.store(signals.next().await, Ordering::SeqCst);
                let _ = stop_tx.send(true);
                // Keep the sender: the torrent sees `true`, not a closed channel.
                std::future::pending::<()>().await;
            })
        };
        Stop { stop, signal, task }
    }

    /// Set once a signal came.
    pub fn flag(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// The signal that came, if one did.
    pub fn which(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the torrent in `session` until it is done or a signal stops it,
/// showing it as `display` says.
pub async fn run(
    session: &Session,
    meta: Metainfo,
    opts: TorrentOptions,
    display: Display,
    stop: &Stop,
) -> Result<Summary> {
    let meta = Arc::new(meta);
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let mut ctl = Control::new(stop.flag());
    ctl.notices = Some(notice_tx);
    let progress_rx = ctl.progress.subscribe();
    let plan = ui::SeedPlan {
        ratio: opts.torrent.seed_ratio,
        time: opts.torrent.seed_time,
    };
    let shower = tokio::spawn(show(
        session.clone(),
        meta.clone(),
        (display, plan),
        notice_rx,
        progress_rx,
        ctl.checked.clone(),
    ));
    let result = session.run_torrent(meta, opts, ctl).await;
    // The router forgets the mapping before we go (also after Ctrl-C).
    session.close().await;
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
        summary.signal = stop.which();
    }
    Ok(summary)
}

/// Says what the port mapping does each time that changes (nothing when
/// it is off): "port 6881 open via UPnP (external 203.0.113.7:6881)".
async fn show_mapping(mut rx: watch::Receiver<session::portmap::MappingStatus>, display: Display) {
    loop {
        let s = rx.borrow_and_update().clone();
        if s != session::portmap::MappingStatus::Off {
            ui::report(display, "port_mapping", s.json(), &s.line());
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
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
                let transport = session.transport();
                let how = match transport {
                    crate::peer::transport::Mode::Both => "TCP+uTP",
                    crate::peer::transport::Mode::Tcp => "TCP",
                    crate::peer::transport::Mode::Utp => "uTP",
                };
                ui::report(
                    display,
                    "listening",
                    serde_json::json!({"port": port, "ipv4": v4, "ipv6": v6, "transport": transport.name()}),
                    // Short enough for one line at 50 columns.
                    &format!(
                        "listening on port {port}: {how}, {}",
                        session.families_label()
                    ),
                );
                let mapping = tokio::spawn(show_mapping(session.port_mapping(), display));
                ui::show(meta, progress, display, plan).await;
                mapping.abort();
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
