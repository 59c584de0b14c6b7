//! What a running torrent shows the outside: its state, the progress
//! snapshot it publishes about ten times a second, its peers as the
//! service's API lists them, and why it stopped. Plain data, shared by the
//! core that fills it and the faces and service that read it.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

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
    /// Connected peers by what their connection runs over (`tcp`, `utp`).
    pub peer_transports: std::collections::BTreeMap<&'static str, usize>,
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
    /// `tcp` or `utp`.
    pub transport: crate::peer::transport::Transport,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Interrupted,
}

/// The printable start of a peer id: Azureus style "-TR3000-", else the
/// printable ASCII prefix (it is untrusted text, shown in a browser).
pub(crate) fn client_name(id: &[u8; 20]) -> String {
    if id[0] == b'-' && id[7] == b'-' && id[1..7].iter().all(|b| b.is_ascii_alphanumeric()) {
        return String::from_utf8_lossy(&id[..8]).into_owned();
    }
    id.iter()
        .take_while(|b| b.is_ascii_graphic())
        .take(8)
        .map(|&b| b as char)
        .collect()
}

/// The last part of an error chain, without the OS error number.
fn last_cause(reason: &str) -> &str {
    let last = reason.rsplit(": ").next().unwrap_or(reason);
    match last.find(" (os error") {
        Some(i) => &last[..i],
        None => last,
    }
}

/// The gist of a web seed's error for a status line: the last cause,
/// without the OS error number ("connection refused", "HTTP 404 Not
/// Found"); a word in capitals (HTTP) keeps them.
pub(crate) fn web_reason(why: &str) -> String {
    let last = last_cause(why);
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
    let last = last_cause(reason);
    let mut c = last.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons() {
        assert_eq!(
            short_reason("connect: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(short_reason("connect timed out"), "connect timed out");
        assert_eq!(short_reason(""), "");
        assert_eq!(
            web_reason("error sending request: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(
            web_reason("HTTP 503 Service Unavailable"),
            "HTTP 503 Service Unavailable"
        );
    }

    #[test]
    fn client_names() {
        assert_eq!(client_name(b"-TR3000-abcdefghijkl"), "-TR3000-");
        assert_eq!(client_name(b"M7-2-1--\x01bcdefghijkl"), "M7-2-1--");
    }
}
