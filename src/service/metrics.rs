//! `GET /metrics`: the service in the Prometheus text format (version
//! 0.0.4), for Prometheus and Grafana. Behind the same access rules as the
//! API (a token, when the service has one, as a Bearer token or the Basic
//! password).
//!
//! Totals are sums over the torrents the service holds: a removed
//! torrent's bytes leave them (Prometheus takes the drop as a counter
//! reset). Hash failures count from each torrent's current run.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::Service;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every state a torrent can be in, so each has a line even at 0.
const STATES: [&str; 7] = [
    "metadata",
    "checking",
    "downloading",
    "seeding",
    "done",
    "paused",
    "error",
];
/// Where peers' addresses come from (`PeerView::source`).
const SOURCES: [&str; 6] = ["tracker", "dht", "pex", "lsd", "manual", "incoming"];
/// What a connection runs over (`PeerView::transport`).
const TRANSPORTS: [&str; 2] = ["tcp", "utp"];
/// Tracker states (`TrackerView::status`).
const TRACKER_STATES: [&str; 3] = ["working", "failing", "not contacted"];

/// What the metrics show, gathered from the service.
#[derive(Default, Debug, PartialEq)]
pub struct Snapshot {
    pub states: BTreeMap<&'static str, u64>,
    pub downloaded: u64,
    pub uploaded: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    /// By (source, transport).
    pub peers: BTreeMap<(&'static str, &'static str), u64>,
    pub known_peers: u64,
    pub hash_failures: u64,
    pub trackers: BTreeMap<&'static str, u64>,
    pub dht_nodes: Option<usize>,
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
    /// Start-up checks since the service started: bytes hashed, runs that
    /// trusted their fast-resume record, runs that found files changed.
    pub checked_bytes: u64,
    pub fast_resumed: u64,
    pub resume_distrusted: u64,
    /// Data files open in the process (`store::handles`).
    pub open_files: u64,
    /// The last save of the list of torrents failed (a full disk).
    pub state_unsaved: bool,
}

/// Gathers the numbers (the entries' lock is held only for that).
pub fn snapshot(svc: &Service) -> Snapshot {
    let mut s = Snapshot::default();
    {
        let entries = svc.entries();
        for e in entries.iter() {
            let v = e.view();
            *s.states.entry(v.state).or_default() += 1;
            s.downloaded += v.downloaded;
            s.uploaded += v.uploaded;
            s.down_rate += v.down_rate;
            s.up_rate += v.up_rate;
            s.known_peers += v.known_peers as u64;
            if e.run.is_none() {
                continue;
            }
            let p = e.progress.borrow();
            s.hash_failures += u64::from(p.hash_failures);
            for v in p.peer_list.iter() {
                *s.peers.entry((v.source, v.transport.label())).or_default() += 1;
            }
            for t in &p.trackers {
                *s.trackers.entry(t.status).or_default() += 1;
            }
        }
    }
    let session = svc.session();
    s.download_limit = session.download_limit().rate();
    s.upload_limit = session.upload_limit().rate();
    let checks = session.check_stats();
    s.checked_bytes = checks.hashed.load(Ordering::Relaxed);
    s.fast_resumed = checks.trusted.load(Ordering::Relaxed);
    s.resume_distrusted = checks.distrusted.load(Ordering::Relaxed);
    s.open_files = crate::store::handles::open_count() as u64;
    s.state_unsaved = svc.save_error().is_some();
    s
}

/// The metrics of `svc`, as text.
pub async fn render(svc: &Service) -> String {
    let mut s = snapshot(svc);
    if let Some(dht) = svc.session().dht() {
        s.dht_nodes = Some(dht.node_count().await);
    }
    format(&s)
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The text format of a snapshot: every family with HELP and TYPE.
pub fn format(s: &Snapshot) -> String {
    let mut out = String::new();
    head(&mut out, "shoal_torrents", "gauge", "Torrents by state.");
    for st in STATES {
        let n = s.states.get(st).copied().unwrap_or(0);
        let _ = writeln!(out, "shoal_torrents{{state=\"{st}\"}} {n}");
    }
    one(
        &mut out,
        "shoal_downloaded_bytes_total",
        "counter",
        "Payload bytes downloaded by the torrents in the service, across restarts.",
        s.downloaded,
    );
    one(
        &mut out,
        "shoal_uploaded_bytes_total",
        "counter",
        "Payload bytes uploaded by the torrents in the service, across restarts.",
        s.uploaded,
    );
    one(
        &mut out,
        "shoal_download_rate_bytes",
        "gauge",
        "Download rate over the last 5 s, bytes per second.",
        s.down_rate,
    );
    one(
        &mut out,
        "shoal_upload_rate_bytes",
        "gauge",
        "Upload rate over the last 5 s, bytes per second.",
        s.up_rate,
    );
    head(
        &mut out,
        "shoal_peers",
        "gauge",
        "Connected peers by where their address came from and what their connection runs over.",
    );
    for src in SOURCES {
        for t in TRANSPORTS {
            let n = s.peers.get(&(src, t)).copied().unwrap_or(0);
            let _ = writeln!(out, "shoal_peers{{source=\"{src}\",transport=\"{t}\"}} {n}");
        }
    }
    one(
        &mut out,
        "shoal_known_peers",
        "gauge",
        "Peer addresses known to the running torrents.",
        s.known_peers,
    );
    one(
        &mut out,
        "shoal_hash_failures_total",
        "counter",
        "Pieces that failed their hash check, in the torrents' current runs.",
        s.hash_failures,
    );
    head(
        &mut out,
        "shoal_trackers",
        "gauge",
        "Trackers of running torrents by the outcome of their last announce (failing: an error).",
    );
    for st in TRACKER_STATES {
        let n = s.trackers.get(st).copied().unwrap_or(0);
        let label = st.replace(' ', "_");
        let _ = writeln!(out, "shoal_trackers{{status=\"{label}\"}} {n}");
    }
    one(
        &mut out,
        "shoal_dht_enabled",
        "gauge",
        "1 if the DHT runs.",
        u64::from(s.dht_nodes.is_some()),
    );
    one(
        &mut out,
        "shoal_dht_nodes",
        "gauge",
        "Nodes in the DHT routing table.",
        s.dht_nodes.unwrap_or(0) as u64,
    );
    head(
        &mut out,
        "shoal_rate_limit_bytes",
        "gauge",
        "Global rate limits, bytes per second; 0 for none.",
    );
    for (dir, v) in [("down", s.download_limit), ("up", s.upload_limit)] {
        let _ = writeln!(
            out,
            "shoal_rate_limit_bytes{{direction=\"{dir}\"}} {}",
            v.unwrap_or(0)
        );
    }
    one(
        &mut out,
        "shoal_checked_bytes_total",
        "counter",
        "Bytes hashed by the torrents' start-up checks since the service started.",
        s.checked_bytes,
    );
    one(
        &mut out,
        "shoal_fast_resumed_total",
        "counter",
        "Runs that trusted their fast-resume record (every file as recorded) instead of hashing.",
        s.fast_resumed,
    );
    one(
        &mut out,
        "shoal_fast_resume_distrusted_total",
        "counter",
        "Runs whose files changed since their fast-resume record: checked in full.",
        s.resume_distrusted,
    );
    one(
        &mut out,
        "shoal_open_files",
        "gauge",
        "Data files open in the process (one cache for all torrents).",
        s.open_files,
    );
    one(
        &mut out,
        "shoal_state_save_failing",
        "gauge",
        "1 while the list of torrents cannot be saved (its disk full, say); adds are refused.",
        u64::from(s.state_unsaved),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_type_and_its_lines() {
        let mut s = Snapshot {
            downloaded: 42,
            dht_nodes: Some(7),
            upload_limit: Some(1000),
            ..Snapshot::default()
        };
        s.states.insert("seeding", 2);
        s.peers.insert(("tracker", "tcp"), 3);
        s.peers.insert(("dht", "utp"), 2);
        s.trackers.insert("not contacted", 1);
        let text = format(&s);
        for line in [
            "shoal_torrents{state=\"seeding\"} 2",
            "shoal_torrents{state=\"error\"} 0",
            "shoal_downloaded_bytes_total 42",
            "shoal_peers{source=\"tracker\",transport=\"tcp\"} 3",
            "shoal_peers{source=\"dht\",transport=\"tcp\"} 0",
            "shoal_peers{source=\"dht\",transport=\"utp\"} 2",
            "shoal_trackers{status=\"not_contacted\"} 1",
            "shoal_dht_nodes 7",
            "shoal_rate_limit_bytes{direction=\"up\"} 1000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            families,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
        assert!(text.ends_with('\n'));
    }
}
