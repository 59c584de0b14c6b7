//! The magnet phase of `download MAGNET`: the fetch of the metadata
//! (`discovery::fetch`) with its spinner or events, stopped by a signal or
//! `--stall-timeout` as the download phase would be.

use anyhow::{Context, Result};
use serde_json::json;

use crate::face::cli::{emit_done, Interrupted, RunArgs};
use crate::face::ui::{human_bytes, Display};
use crate::metainfo::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::out::escape as esc;

/// The magnet phase of `download MAGNET`: fetches the info dictionary from
/// peers (BEP 9), shows how it goes, and returns the torrent it makes, with
/// the peers learned on the way. Stopped by a signal or `--stall-timeout`
/// it ends as the download phase would: with `--json`, a `done` event
/// first.
pub(crate) fn resolve(
    rt: &tokio::runtime::Runtime,
    magnet: &Magnet,
    a: &RunArgs,
    peers: &[std::net::SocketAddr],
    dht: Option<&crate::discovery::dht::Dht>,
    display: Display,
) -> Result<(
    Metainfo,
    Vec<(std::net::SocketAddr, crate::torrent::PeerSource)>,
)> {
    let started = std::time::Instant::now();
    let (info, learned) = match rt.block_on(fetch_metadata(magnet, a, peers, dht, display)) {
        Ok(x) => x,
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
    let bytes = crate::peer::metadata::torrent_file(&info, &magnet.trackers, &magnet.web_seeds);
    let m = Metainfo::from_bytes(&bytes).context("the fetched metadata is not a valid torrent")?;
    if let Some(path) = &a.save_torrent {
        std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    match display {
        Display::Json => crate::face::ui::emit(
            "metadata",
            json!({"name": m.name, "info_hash": m.info_hash.hex(), "size": info.len(), "saved_to": a.save_torrent}),
        ),
        Display::Bars | Display::Plain => crate::face::ui::say(&format!(
            "metadata: {} ({}, {} files) from the swarm",
            esc(&m.name),
            human_bytes(m.total_length),
            m.files.iter().filter(|f| f.is_data()).count()
        )),
        Display::Silent => {}
    }
    Ok((m, learned))
}

/// How the magnet phase ended without the metadata.
enum MagnetEnd {
    /// Ctrl-C or SIGTERM (the signal's number).
    Interrupted(i32),
    /// `--stall-timeout` passed without a metadata byte; why, as one line.
    Stalled(String),
    Failed(crate::discovery::fetch::FetchError),
}

type Fetched = (
    Vec<u8>,
    Vec<(std::net::SocketAddr, crate::torrent::PeerSource)>,
);

/// Runs the fetch with its spinner, until it ends, a signal comes or
/// `--stall-timeout` passes with no metadata received.
async fn fetch_metadata(
    magnet: &Magnet,
    a: &RunArgs,
    peers: &[std::net::SocketAddr],
    dht: Option<&crate::discovery::dht::Dht>,
    display: Display,
) -> Result<Fetched, MagnetEnd> {
    use crate::discovery::fetch::{fetch, FetchError, Status};
    let (status_tx, mut status_rx) = tokio::sync::watch::channel(Status::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let label = magnet
        .name
        .clone()
        .unwrap_or_else(|| magnet.info_hash.hex()[..8].to_string());
    // Caught from here on, before the phase says it started.
    let mut signals = crate::session::Signals::new();
    if display == Display::Json {
        crate::face::ui::emit(
            "state",
            json!({"state": "fetching metadata", "status": "fetching metadata"}),
        );
    }
    let sig = signal.clone();
    let watcher = tokio::spawn(async move {
        sig.store(signals.next().await, std::sync::atomic::Ordering::SeqCst);
        let _ = stop_tx.send(true);
    });
    // As under the download's bars: an echoed ^C would leave the spinner
    // behind. Safe to turn off, the signals being caught (`signals`).
    let _no_echo = (display == Display::Bars).then(crate::face::ui::NoEcho::new);
    let bar = (display == Display::Bars).then(|| {
        let pb = crate::face::ui::spinner();
        pb.set_message(crate::face::ui::fit_spinner(&format!(
            "{label}: fetching metadata"
        )));
        pb
    });
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
        while status_rx.changed().await.is_ok() {
            let s = status_rx.borrow_and_update().clone();
            if let Some(pb) = &bar {
                let mut msg = format!(
                    "{label}: fetching metadata ({} peers, {} known)",
                    s.connected, s.known
                );
                if let Some(e) = &s.last_error {
                    msg.push_str(&format!(" - {e}"));
                }
                pb.set_message(crate::face::ui::fit_spinner(&msg));
            }
        }
        std::future::pending::<()>().await;
    };
    // The download's session starts once the metadata is here: this phase
    // dials from a uTP socket of its own (any port), closed when it ends.
    let utp = match a.transport.utp() {
        true => match crate::peer::utp::UtpNet::bind(0, 256) {
            Ok(u) => Some(std::sync::Arc::new(u)),
            Err(e) => {
                tracing::warn!("no uTP for the metadata phase: {e}");
                None
            }
        },
        false => None,
    };
    let how = crate::discovery::fetch::Dialling {
        peer_id: crate::peer::new_peer_id(),
        encryption: a.encryption,
        net: std::sync::Arc::new(crate::peer::transport::Net::new(a.transport, utp)),
    };
    let r = tokio::select! {
        r = fetch(magnet, peers, dht, how, status_tx, stop_rx) => r.map_err(|e| match e {
            FetchError::Interrupted => {
                let signal = signal.load(std::sync::atomic::Ordering::SeqCst);
                MagnetEnd::Interrupted(if signal == 0 { libc::SIGINT } else { signal })
            }
            e => MagnetEnd::Failed(e),
        }),
        why = stalled => Err(MagnetEnd::Stalled(why)),
        _ = show => unreachable!("show never ends"),
    };
    if let Some(pb) = bar {
        crate::face::ui::remove(&pb);
    }
    watcher.abort();
    r
}
