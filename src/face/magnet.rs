//! The magnet phase of `download MAGNET`: the session's fetch of the
//! metadata (`Session::resolve_magnet`) with its spinner or events, stopped
//! by a signal or `--stall-timeout` as the download phase would be.

use anyhow::{Context, Result};
use serde_json::json;

use crate::face::cli::{emit_done, plural, Interrupted, RunArgs};
use crate::face::single::Stop;
use crate::face::ui::{human_bytes, Display};
use crate::metainfo::magnet::Magnet;
use crate::out::escape as esc;
use crate::session::{ResolveError, Resolved, Session};

/// The magnet phase of `download MAGNET`: the session fetches the info
/// dictionary from peers (BEP 9, `Session::resolve_magnet`); this shows
/// how it goes, and returns the torrent it makes, with the peers learned
/// on the way. Stopped by a signal or `--stall-timeout` it ends as the
/// download phase would: with `--json`, a `done` event first.
pub(crate) async fn resolve(
    session: &Session,
    magnet: &Magnet,
    a: &RunArgs,
    peers: &[std::net::SocketAddr],
    display: Display,
    stop: &Stop,
) -> Result<Resolved> {
    let started = std::time::Instant::now();
    let r = match fetch_metadata(session, magnet, a, peers, display, stop).await {
        Ok(r) => r,
        Err(MagnetEnd::Failed(e)) => return Err(e.into()),
        Err(end) => {
            let (outcome, err): (&str, anyhow::Error) = match end {
                MagnetEnd::Interrupted(signal) => (
                    "interrupted",
                    Interrupted {
                        signal,
                        message: "interrupted while fetching metadata".into(),
                    }
                    .into(),
                ),
                MagnetEnd::Stalled(why) => ("stalled", anyhow::anyhow!(why)),
                MagnetEnd::Failed(e) => return Err(e.into()),
            };
            if display == Display::Json {
                // Where the data would have gone: the name the metadata
                // would give it is not known, so the magnet's `dn`, cleaned
                // as a torrent's name is (else the info-hash).
                let name = magnet
                    .name
                    .as_deref()
                    .and_then(|n| crate::metainfo::sanitize_element(n.as_bytes()))
                    .unwrap_or_else(|| magnet.info_hash.hex());
                let progress = crate::torrent::Progress::default();
                let secs = started.elapsed().as_secs_f64();
                emit_done(outcome, &a.dir.join(name), &progress, secs);
            }
            return Err(err);
        }
    };
    if let Some(path) = &a.save_torrent {
        std::fs::write(path, &r.torrent).with_context(|| format!("writing {}", path.display()))?;
    }
    let m = &r.meta;
    match display {
        Display::Json => crate::face::ui::emit(
            "metadata",
            json!({"name": m.name, "info_hash": m.info_hash.hex(), "size": r.info_len, "saved_to": a.save_torrent}),
        ),
        Display::Bars | Display::Plain => crate::face::ui::say(&format!(
            "metadata: {} ({}, {}) from the swarm",
            esc(&m.name),
            human_bytes(m.total_length),
            plural(
                m.files.iter().filter(|f| f.is_data()).count() as u64,
                "file",
                "files"
            )
        )),
        Display::Silent => {}
    }
    Ok(r)
}

/// How the magnet phase ended without the metadata.
enum MagnetEnd {
    /// Ctrl-C or SIGTERM (the signal's number).
    Interrupted(i32),
    /// `--stall-timeout` passed without a metadata byte; why, as one line.
    Stalled(String),
    Failed(ResolveError),
}

/// Runs the fetch with its spinner, until it ends, a signal comes or
/// `--stall-timeout` passes with no metadata received.
async fn fetch_metadata(
    session: &Session,
    magnet: &Magnet,
    a: &RunArgs,
    peers: &[std::net::SocketAddr],
    display: Display,
    stop: &Stop,
) -> Result<Resolved, MagnetEnd> {
    use crate::discovery::fetch::Status;
    let (status_tx, mut status_rx) = tokio::sync::watch::channel(Status::default());
    let label = magnet
        .name
        .clone()
        .unwrap_or_else(|| magnet.info_hash.hex()[..8].to_string());
    if display == Display::Json {
        crate::face::ui::emit(
            "state",
            json!({"state": "fetching metadata", "status": "fetching metadata"}),
        );
    }
    // As under the download's bars: an echoed ^C would leave the spinner
    // behind. Safe to turn off, the signals being caught (`stop`).
    let _no_echo = (display == Display::Bars).then(crate::face::ui::NoEcho::new);
    // One line among the bars, made anew for the width ten times a
    // second (a resize takes effect at once) and on each change.
    let bar = (display == Display::Bars).then(crate::face::ui::line_bar);
    let mut stall_rx = status_rx.clone();
    let stalled = async {
        let Some(limit) = a.stall_timeout.map(std::time::Duration::from_secs) else {
            return std::future::pending().await;
        };
        let s =
            crate::session::wait_stalled(&mut stall_rx, limit, |s: &Status| Some(s.received)).await;
        format!(
            "stalled: no metadata for {} ({} peers, {} known; {})",
            crate::units::human_duration(limit),
            s.connected,
            s.known,
            esc(s.last_error.as_deref().unwrap_or("no peers found"))
        )
    };
    let show = async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let mut last_width = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = status_rx.changed() => if r.is_err() {
                    break;
                },
            }
            let s = status_rx.borrow_and_update().clone();
            if let Some(pb) = &bar {
                let width = crate::face::term::width();
                if width != last_width {
                    crate::face::log::refit(width);
                    last_width = width;
                }
                pb.set_message(crate::face::lines::magnet_line(
                    &label,
                    s.connected,
                    s.known,
                    s.last_error.as_deref(),
                    width,
                ));
            }
        }
        std::future::pending::<()>().await;
    };
    let r = tokio::select! {
        r = session.resolve_magnet(magnet, peers, status_tx, stop.flag()) => r.map_err(|e| match e {
            ResolveError::Interrupted => MagnetEnd::Interrupted(stop.which().unwrap_or(libc::SIGINT)),
            e => MagnetEnd::Failed(e),
        }),
        why = stalled => Err(MagnetEnd::Stalled(why)),
        _ = show => unreachable!("show never ends"),
    };
    if let Some(pb) = bar {
        crate::face::ui::remove(&pb);
    }
    r
}
