//! Tracker client: HTTP(S) announces (BEP 3, compact peers per BEP 23), UDP announces
//! (BEP 15) and multi-tracker tiers (BEP 12).
//!
//! Encoding and parsing are plain functions without sockets (like quinn-proto), so they are
//! unit-tested byte for byte; [`HttpTracker`], [`UdpTracker`] and [`TrackerList`] do the I/O.
//! Re-announce scheduling belongs to the torrent layer: it uses [`AnnounceResponse::interval`]
//! after a success and [`retry_delay`] after failures.

mod http;
#[cfg(test)]
pub(crate) use http::fake;
mod udp;

pub use http::{build_announce_url, http_client, parse_http_response, HttpTracker};
pub use udp::{
    encode_announce, encode_connect, parse_announce, parse_connect, UdpConfig, UdpTracker,
    CONNECTION_ID_TTL, PROTOCOL_ID,
};

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use url::Url;

/// Interval used when a tracker does not say (BEP 3 makes it mandatory, some omit it).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1800);
/// Lower clamp for intervals: a tracker saying 0 must not make us hammer it.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Upper clamp for intervals: a huge value must not make a torrent go silent for days.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest HTTP response body we read; real answers are a few KiB, so more is hostile or broken.
pub const MAX_RESPONSE_SIZE: usize = 4 * 1024 * 1024;
/// Longest wait [`retry_delay`] returns.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 60);
/// Shortest regular re-announce: a tracker saying `interval` 0, 1 or -1
/// (broken, or hostile) made us announce every second. libtorrent's
/// `min_announce_interval` is the same 5 minutes.
pub const MIN_REANNOUNCE: Duration = Duration::from_secs(5 * 60);
/// No re-announce, regular or early, comes sooner than this after an
/// answer (`completed` and `stopped` are events, sent when they happen).
pub const HARD_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// One announce, as the torrent layer fills it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `u32::MAX` is sent as -1 ("tracker default") over UDP.
    pub numwant: u32,
    /// Random per-session value that lets a tracker recognise us across IP changes.
    pub key: u32,
    /// Our external address, when the port mapping learnt a public one
    /// (HTTP `ip=`, the UDP announce's IP field); trackers may ignore it.
    pub ip: Option<std::net::IpAddr>,
    /// Our global IPv6 address (HTTP `ipv6=`, BEP 7), so a tracker reached
    /// over IPv4 can give it to IPv6 peers.
    pub ipv6: Option<std::net::Ipv6Addr>,
}

/// Announce event (BEP 3 names, BEP 15 codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Event {
    /// A regular re-announce.
    #[default]
    None,
    Started,
    Completed,
    Stopped,
}

impl Event {
    /// The HTTP `event` value; `None` for a regular announce, where the parameter is omitted.
    pub fn as_http_str(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    /// The BEP 15 event code (note: completed = 1, started = 2).
    pub fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

/// What a tracker answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// When to re-announce, clamped to [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
    pub interval: Duration,
    /// Floor for manual re-announces, same clamp.
    pub min_interval: Option<Duration>,
    /// Peers in tracker order; entries with port 0 are dropped. May contain our own address.
    pub peers: Vec<SocketAddr>,
    /// `warning message`, to show to the user; the announce still succeeded.
    pub warning: Option<String>,
    /// HTTP `tracker id`, to be echoed on later announces (kept by [`HttpTracker`]).
    pub tracker_id: Option<Vec<u8>>,
    /// Seeders (`complete`).
    pub seeders: Option<u32>,
    /// Leechers (`incomplete`).
    pub leechers: Option<u32>,
}

/// Why an announce failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The HTTP tracker answered with a non-2xx status.
    #[error("tracker answered HTTP status {0}")]
    HttpStatus(u16),
    /// The HTTP request failed below the status line (connect, TLS, redirects...).
    #[error("HTTP request failed: {0}")]
    Http(String),
    /// No (valid) answer in time.
    #[error("tracker timed out")]
    Timeout,
    /// The tracker refused the announce and said why (`failure reason` or UDP error action).
    #[error("tracker failure: {}", crate::out::escape(.0))]
    Failure(String),
    /// The answer could not be understood.
    #[error("invalid tracker response: {}", crate::out::escape(.0))]
    InvalidResponse(String),
    /// Scheme other than http, https or udp.
    #[error("unsupported tracker URL scheme: {}", crate::out::escape(.0))]
    UnsupportedScheme(String),
    /// URL without host, UDP URL without port, and similar.
    #[error("invalid tracker URL: {}", crate::out::escape(.0))]
    InvalidUrl(String),
    /// The tracker host name did not resolve.
    #[error("could not resolve tracker host {}", crate::out::escape(.0))]
    Resolve(String),
    /// Socket error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP body exceeded the given cap in bytes.
    #[error("tracker response larger than {0} bytes")]
    ResponseTooLarge(usize),
    /// The torrent has no usable tracker.
    #[error("no usable trackers")]
    NoTrackers,
}

/// Clamps a tracker-supplied interval in seconds; negative values count as 0.
fn clamp_interval(secs: i64) -> Duration {
    let secs = u64::try_from(secs).unwrap_or(0);
    Duration::from_secs(secs).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Parses BEP 23 compact IPv4 peers (6 bytes each). A trailing partial entry is ignored:
/// trackers that truncate the string still gave us good peers before it.
fn parse_compact_v4(buf: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    buf.chunks_exact(6).filter_map(|c| {
        let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
        let port = u16::from_be_bytes([c[4], c[5]]);
        (port != 0).then(|| SocketAddr::V4(SocketAddrV4::new(ip, port)))
    })
}

/// Parses compact IPv6 peers (18 bytes each, BEP 7 / BEP 15); same leniency as IPv4.
fn parse_compact_v6(buf: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    buf.chunks_exact(18).filter_map(|c| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&c[..16]);
        let port = u16::from_be_bytes([c[16], c[17]]);
        (port != 0).then(|| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0)))
    })
}

/// The earliest moment, after an answer, that any announce may follow: the
/// tracker's `min interval`, but never under [`HARD_MIN_INTERVAL`]. Kept
/// apart so that an early re-announce (a leecher short of peers) can use
/// it as its floor.
pub fn earliest_reannounce(min_interval: Option<Duration>) -> Duration {
    min_interval
        .unwrap_or(Duration::ZERO)
        .clamp(HARD_MIN_INTERVAL, MAX_INTERVAL)
}

/// When to re-announce after a successful answer: the tracker's
/// `interval`, floored at [`MIN_REANNOUNCE`] (or its `min interval` if that
/// says more), and at most [`MAX_INTERVAL`].
pub fn reannounce_after(interval: Duration, min_interval: Option<Duration>) -> Duration {
    let floor = earliest_reannounce(min_interval).max(MIN_REANNOUNCE);
    interval.clamp(floor, MAX_INTERVAL.max(floor))
}

/// Back-off before retrying after `failures` consecutive failed announces (0 is treated as 1).
///
/// Steps like Transmission's but shorter for a desktop client: 5 s, 15 s, 30 s, 1 min, 2 min,
/// 5 min, 10 min, then 30 min. ±10 % jitter keeps many torrents from retrying in lockstep.
pub fn retry_delay(failures: u32) -> Duration {
    const STEPS: [u64; 8] = [5, 15, 30, 60, 120, 300, 600, 1800];
    let idx = (failures.saturating_sub(1) as usize).min(STEPS.len() - 1);
    let jitter: f64 = rand::thread_rng().gen_range(0.9..=1.1);
    Duration::from_secs_f64(STEPS[idx] as f64 * jitter).min(MAX_RETRY_DELAY)
}

/// Timeouts for the trackers of a [`TrackerList`].
#[derive(Clone, Copy, Debug)]
pub struct TrackerConfig {
    pub udp: UdpConfig,
    /// TCP (and TLS) connect timeout for HTTP trackers.
    pub http_connect_timeout: Duration,
    /// Whole-request timeout for HTTP trackers, body included.
    pub http_timeout: Duration,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            udp: UdpConfig::default(),
            http_connect_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(20),
        }
    }
}

enum Backend {
    Http(HttpTracker),
    Udp(UdpTracker),
}

/// A tracker plus the per-tracker state its backend keeps (tracker id, UDP connection id).
struct Entry {
    url: String,
    backend: Backend,
    /// Set once its failure was shown: a torrent with thousands of dead
    /// trackers would otherwise print a warning for each at every retry.
    warned: bool,
    /// What its last announce got, for [`TrackerList::views`].
    seen: Seen,
}

/// A tracker's last announce, as the API's tracker table shows it.
#[derive(Clone, Debug, Default)]
struct Seen {
    tier: usize,
    /// Its last announce was answered (`Some(true)`) or failed.
    answered: Option<bool>,
    at: Option<u64>,
    seeders: Option<u32>,
    leechers: Option<u32>,
    peers: Option<usize>,
    error: Option<String>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The trackers of one torrent, in BEP 12 tiers.
pub struct TrackerList {
    tiers: Vec<Vec<Entry>>,
    config: TrackerConfig,
    /// Built on first HTTP use, so UDP-only torrents never set up TLS.
    http_client: Option<reqwest::Client>,
    /// The trackers that failed in the last announce, for [`Self::log_failures`].
    failures: Vec<Failure>,
    /// When the next announce is due (Unix seconds), as its owner said.
    next: Option<u64>,
}

/// A tracker that failed an announce: its host (and port), why, whether
/// it could not be reached at all, and whether it is the first failure
/// since it last answered.
#[derive(Clone, Debug)]
struct Failure {
    tracker: String,
    reason: String,
    unreachable: bool,
    first: bool,
}

impl TrackerError {
    /// The tracker could not be reached (no answer at all), as opposed
    /// to one that answered with a refusal or nonsense.
    fn unreachable(&self) -> bool {
        match self {
            TrackerError::Timeout | TrackerError::Resolve(_) | TrackerError::Io(_) => true,
            TrackerError::Http(s) => {
                let s = s.to_ascii_lowercase();
                ["connect", "dns", "timed out", "timeout"]
                    .iter()
                    .any(|w| s.contains(w))
            }
            _ => false,
        }
    }
}

/// `host:port` of a tracker URL (never the rest, which may hold a passkey).
pub fn host_of(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?").to_string();
            match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        }
        Err(_) => "?".into(),
    }
}

impl TrackerList {
    /// Builds the list from a torrent's `announce` and `announce-list` with default timeouts.
    pub fn new(announce: Option<String>, announce_list: Vec<Vec<String>>) -> Self {
        Self::with_config(announce, announce_list, TrackerConfig::default())
    }

    /// Like [`TrackerList::new`] with explicit timeouts.
    ///
    /// Per BEP 12 a non-empty `announce-list` replaces `announce` (unless none of its URLs is
    /// usable, then `announce` is still tried). URLs are trimmed; empty,
    /// unparseable and unsupported ones are dropped with a warning; duplicates are dropped;
    /// each tier is shuffled so that all clients don't pile onto the first tracker.
    pub fn with_config(
        announce: Option<String>,
        announce_list: Vec<Vec<String>>,
        config: TrackerConfig,
    ) -> Self {
        Self::build(announce, announce_list, config, true)
    }

    fn build(
        announce: Option<String>,
        announce_list: Vec<Vec<String>>,
        config: TrackerConfig,
        shuffle: bool,
    ) -> Self {
        let mut seen = HashSet::new();
        let mut tiers = Self::parse_tiers(announce_list, config, shuffle, &mut seen);
        if tiers.is_empty() {
            // Nothing usable in announce-list (absent, or e.g. only wss:// trackers): rather
            // than giving up, fall back to `announce`.
            tiers = Self::parse_tiers(
                announce.into_iter().map(|a| vec![a]),
                config,
                false,
                &mut seen,
            );
        }
        TrackerList {
            tiers,
            config,
            http_client: None,
            failures: Vec::new(),
            next: None,
        }
    }

    fn parse_tiers(
        raw_tiers: impl IntoIterator<Item = Vec<String>>,
        config: TrackerConfig,
        shuffle: bool,
        seen: &mut HashSet<String>,
    ) -> Vec<Vec<Entry>> {
        let mut tiers = Vec::new();
        for raw_tier in raw_tiers {
            let mut tier = Vec::new();
            for raw in raw_tier {
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let url = match Url::parse(trimmed) {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(tracker = %crate::out::escape(trimmed), error = %e, "ignoring unparseable tracker URL");
                        continue;
                    }
                };
                let backend = match url.scheme() {
                    "http" | "https" => HttpTracker::new(&url).map(Backend::Http),
                    "udp" => UdpTracker::new(&url, config.udp).map(Backend::Udp),
                    other => Err(TrackerError::UnsupportedScheme(other.to_string())),
                };
                let backend = match backend {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(tracker = %crate::out::escape(trimmed), error = %e, "ignoring tracker");
                        continue;
                    }
                };
                let key = url.as_str().to_string();
                if seen.insert(key.clone()) {
                    tier.push(Entry {
                        url: key,
                        backend,
                        warned: false,
                        seen: Seen {
                            tier: tiers.len(),
                            ..Seen::default()
                        },
                    });
                }
            }
            if shuffle {
                tier.shuffle(&mut rand::thread_rng());
            }
            if !tier.is_empty() {
                tiers.push(tier);
            }
        }
        tiers
    }

    /// Logs each tracker that failed in the last announce once, as one
    /// cause: a warning the first time since it last answered, info for
    /// the repeats (which a terminal counts on the warning's line), with
    /// when it is tried again.
    pub fn log_failures(&mut self, retry: Duration) {
        for f in self.failures.drain(..) {
            let retry_in = retry.as_secs();
            if f.first {
                tracing::warn!(retry_in, "tracker {}: {}", f.tracker, f.reason);
            } else {
                tracing::info!(retry_in, "tracker {}: {}", f.tracker, f.reason);
            }
        }
    }

    /// Why the last announce, which no tracker answered, brought no
    /// peers: "tracker H:P unreachable" (or "trackers unreachable" when
    /// several were tried), or "tracker H:P: what it said".
    pub fn failure_summary(&self) -> Option<String> {
        let last = self.failures.last()?;
        if self.failures.len() > 1 && self.failures.iter().all(|f| f.unreachable) {
            return Some(format!("{} trackers unreachable", self.failures.len()));
        }
        Some(if last.unreachable {
            format!("tracker {} unreachable", last.tracker)
        } else {
            format!("tracker {}: {}", last.tracker, last.reason)
        })
    }

    /// Records when the next announce is due.
    pub fn schedule(&mut self, wait: Duration) {
        self.next = Some(unix_now() + wait.as_secs());
    }

    /// Each tracker's state after its last announce, tier by tier.
    pub fn views(&self) -> Vec<crate::torrent::TrackerView> {
        self.tiers
            .iter()
            .flatten()
            .map(|e| crate::torrent::TrackerView {
                url: crate::out::escape(&e.url).into_owned(),
                tier: e.seen.tier,
                status: match e.seen.answered {
                    Some(true) => "working",
                    Some(false) => "failing",
                    None => "not contacted",
                },
                last_announce: e.seen.at,
                next_announce: self.next,
                seeders: e.seen.seeders,
                leechers: e.seen.leechers,
                peers: e.seen.peers,
                error: e.seen.error.clone(),
            })
            .collect()
    }

    /// True when no usable tracker remains (e.g. a trackerless or DHT-only torrent).
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The tracker URLs, tier by tier, in the order they will be tried.
    pub fn tiers(&self) -> Vec<Vec<String>> {
        self.tiers
            .iter()
            .map(|t| t.iter().map(|e| e.url.clone()).collect())
            .collect()
    }

    /// Announces per BEP 12: tiers in order, trackers in tier order, stopping at the first
    /// success, which moves to the front of its tier. Returns the URL that answered.
    /// If every tracker fails, the last error is returned.
    ///
    /// A dead UDP tracker can take up to ~45 s with default settings; wrap `Stopped`
    /// announces at shutdown in a timeout.
    pub async fn announce(
        &mut self,
        req: &AnnounceRequest,
    ) -> Result<(String, AnnounceResponse), TrackerError> {
        let mut last_err = TrackerError::NoTrackers;
        self.failures.clear();
        for t in 0..self.tiers.len() {
            for i in 0..self.tiers[t].len() {
                let result = match &mut self.tiers[t][i].backend {
                    Backend::Udp(u) => u.announce(req).await,
                    Backend::Http(h) => {
                        let client = match self.http_client.clone() {
                            Some(c) => Ok(c),
                            None => http_client(
                                self.config.http_connect_timeout,
                                self.config.http_timeout,
                            )
                            .inspect(|c| self.http_client = Some(c.clone())),
                        };
                        match client {
                            Ok(c) => h.announce(&c, req).await,
                            Err(e) => Err(e),
                        }
                    }
                };
                match result {
                    Ok(resp) => {
                        let mut entry = self.tiers[t].remove(i);
                        entry.warned = false;
                        entry.seen = Seen {
                            tier: entry.seen.tier,
                            answered: Some(true),
                            at: Some(unix_now()),
                            seeders: resp.seeders,
                            leechers: resp.leechers,
                            peers: Some(resp.peers.len()),
                            error: None,
                        };
                        let url = entry.url.clone();
                        self.tiers[t].insert(0, entry);
                        if let Some(w) = &resp.warning {
                            tracing::debug!(tracker = %url, warning = %crate::out::escape(w), "tracker warning");
                        }
                        return Ok((url, resp));
                    }
                    Err(e) => {
                        let entry = &mut self.tiers[t][i];
                        tracing::debug!(tracker = %entry.url, error = %e, "announce failed");
                        let tracker = host_of(&entry.url);
                        let reason = crate::torrent::short_reason(&e.to_string());
                        entry.seen.answered = Some(false);
                        entry.seen.at = Some(unix_now());
                        entry.seen.error = Some(reason.clone());
                        self.failures.push(Failure {
                            tracker,
                            reason,
                            unreachable: e.unreachable(),
                            first: !entry.warned,
                        });
                        entry.warned = true;
                        last_err = e;
                    }
                }
            }
        }
        Err(last_err)
    }
}

#[cfg(test)]
pub(crate) fn sample_request() -> AnnounceRequest {
    let mut info_hash = [0u8; 20];
    for (i, b) in info_hash.iter_mut().enumerate() {
        *b = i as u8;
    }
    info_hash[0] = 0x00;
    info_hash[1] = 0xff;
    info_hash[2] = b' ';
    info_hash[3] = b'~';
    info_hash[4] = b'-';
    info_hash[5] = b'A';
    AnnounceRequest {
        info_hash,
        peer_id: *b"-SH0010-abcdefghij.~",
        port: 6881,
        uploaded: 10,
        downloaded: 20,
        left: 30,
        event: Event::Started,
        numwant: 50,
        key: 0xdead_beef,
        ip: None,
        ipv6: None,
    }
}

#[cfg(test)]
mod tests {
    use super::http::fake::{dead_port, FakeHttp};
    use super::udp::fake::SilentUdp;
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn announce_list_replaces_announce_and_filters() {
        let list = TrackerList::build(
            Some(s("http://ignored.example/announce")),
            vec![
                vec![s("  http://a.example/announce \n"), s(""), s("not a url")],
                vec![
                    s("wss://ws.example/announce"),
                    s("udp://b.example:6969/announce"),
                    s("http://a.example/announce"),
                ],
                vec![s("   "), s("udp://noport.example/announce")],
            ],
            TrackerConfig::default(),
            false,
        );
        assert_eq!(
            list.tiers(),
            vec![
                vec![s("http://a.example/announce")],
                vec![s("udp://b.example:6969/announce")],
            ]
        );
        assert!(!list.is_empty());
    }

    #[test]
    fn announce_used_without_list() {
        let list = TrackerList::new(Some(s(" udp://t.example:80 ")), vec![vec![s(" ")]]);
        assert_eq!(list.tiers(), vec![vec![s("udp://t.example:80")]]);
        let empty = TrackerList::new(None, vec![]);
        assert!(empty.is_empty());
        let bad = TrackerList::new(Some(s("magnet:?xt=foo")), vec![]);
        assert!(bad.is_empty());
    }

    #[test]
    fn shuffle_keeps_tier_members() {
        let tier: Vec<String> = (0..8)
            .map(|i| format!("http://t{i}.example/announce"))
            .collect();
        let list = TrackerList::new(None, vec![tier.clone()]);
        let mut got = list.tiers().remove(0);
        got.sort();
        let mut want = tier;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn retry_delay_steps_and_jitter() {
        for _ in 0..50 {
            let d0 = retry_delay(0).as_secs_f64();
            assert!((4.5..=5.5).contains(&d0), "{d0}");
            let d1 = retry_delay(1).as_secs_f64();
            assert!((4.5..=5.5).contains(&d1), "{d1}");
            let d2 = retry_delay(2).as_secs_f64();
            assert!((13.5..=16.5).contains(&d2), "{d2}");
            let d6 = retry_delay(6).as_secs_f64();
            assert!((270.0..=330.0).contains(&d6), "{d6}");
            let big = retry_delay(u32::MAX);
            assert!(big <= MAX_RETRY_DELAY && big >= Duration::from_secs(1620));
        }
    }

    #[test]
    fn reannounce_floor() {
        let s = Duration::from_secs;
        assert_eq!(reannounce_after(s(1), None), s(300));
        assert_eq!(reannounce_after(s(1800), None), s(1800));
        assert_eq!(reannounce_after(s(60), Some(s(900))), s(900));
        assert_eq!(reannounce_after(s(60), Some(s(0))), s(300));
        assert_eq!(reannounce_after(MAX_INTERVAL * 2, None), MAX_INTERVAL);
        assert_eq!(earliest_reannounce(None), s(30));
        assert_eq!(earliest_reannounce(Some(s(1))), s(30));
        assert_eq!(earliest_reannounce(Some(s(120))), s(120));
    }

    #[test]
    fn interval_clamp() {
        assert_eq!(clamp_interval(-5), MIN_INTERVAL);
        assert_eq!(clamp_interval(0), MIN_INTERVAL);
        assert_eq!(clamp_interval(900), Duration::from_secs(900));
        assert_eq!(clamp_interval(i64::MAX), MAX_INTERVAL);
    }

    #[test]
    fn unusable_list_falls_back_to_announce() {
        let list = TrackerList::new(
            Some(s("http://main.example/announce")),
            vec![vec![s("wss://a.example")], vec![s("bogus")]],
        );
        assert_eq!(list.tiers(), vec![vec![s("http://main.example/announce")]]);
    }

    #[test]
    fn announce_future_is_send() {
        fn is_send<T: Send>(_: &T) {}
        let mut list = TrackerList::new(None, vec![]);
        let req = sample_request();
        let fut = list.announce(&req);
        is_send(&fut);
    }

    #[tokio::test]
    async fn empty_list_reports_no_trackers() {
        let mut list = TrackerList::new(None, vec![]);
        let err = list.announce(&sample_request()).await.unwrap_err();
        assert!(matches!(err, TrackerError::NoTrackers));
    }

    #[tokio::test]
    async fn dead_first_tracker_falls_over_and_winner_moves_front() {
        let good = FakeHttp::start(|_| {
            (
                200,
                b"d8:intervali900e5:peers6:\x7f\x00\x00\x01\x1a\xe1e".to_vec(),
            )
        })
        .await;
        let dead = format!("http://127.0.0.1:{}/announce", dead_port().await);
        let good_url = good.url();
        let mut list = TrackerList::build(
            None,
            vec![vec![dead.clone(), good_url.clone()]],
            TrackerConfig::default(),
            false,
        );
        let started = Instant::now();
        let (used, resp) =
            tokio::time::timeout(Duration::from_secs(15), list.announce(&sample_request()))
                .await
                .unwrap()
                .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(used, good_url);
        assert_eq!(resp.interval, Duration::from_secs(900));
        assert_eq!(resp.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        assert_eq!(list.tiers(), vec![vec![good_url.clone(), dead]]);
        // Next time the working tracker is asked first.
        let (used, _) = list.announce(&sample_request()).await.unwrap();
        assert_eq!(used, good_url);
        assert_eq!(good.requests().len(), 2);
    }

    #[tokio::test]
    async fn later_tier_used_when_first_tier_fails() {
        let udp = SilentUdp::start().await;
        let good = FakeHttp::start(|_| (200, b"d8:intervali60e5:peers0:e".to_vec())).await;
        let config = TrackerConfig {
            udp: UdpConfig {
                base_timeout: Duration::from_millis(50),
                max_tries: 2,
            },
            ..TrackerConfig::default()
        };
        let mut list =
            TrackerList::build(None, vec![vec![udp.url()], vec![good.url()]], config, false);
        let (used, resp) =
            tokio::time::timeout(Duration::from_secs(10), list.announce(&sample_request()))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(used, good.url());
        assert!(resp.peers.is_empty());
        // Tiers themselves are not reordered (BEP 12 moves trackers only within a tier).
        assert_eq!(list.tiers(), vec![vec![udp.url()], vec![good.url()]]);
        assert_eq!(udp.received(), 2);
    }

    /// Log lines written while the returned guard lives (this thread only).
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        (buf, tracing::subscriber::set_default(sub))
    }

    /// Regression (issue 15): a torrent with 5 000 dead trackers printed
    /// a warning per tracker at every retry (20 000 lines); now each bad
    /// tracker is reported once (until it answers again).
    #[tokio::test]
    async fn a_failing_tracker_is_reported_once() {
        let (logs, _guard) = capture_logs();
        let mut tiers = Vec::new();
        for _ in 0..10 {
            tiers.push(vec![format!(
                "http://127.0.0.1:{}/announce",
                dead_port().await
            )]);
        }
        let mut list = TrackerList::build(None, tiers, TrackerConfig::default(), false);
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_secs(15), list.announce(&sample_request()))
                .await
                .unwrap();
            assert!(r.is_err());
            list.log_failures(Duration::from_secs(5));
        }
        let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches(" WARN ").count(), 10, "{text}");
        assert_eq!(text.matches(": connection refused").count(), 10, "{text}");
    }

    /// Trackers may gzip their answers (large peer lists, or a proxy in
    /// front); reqwest decodes them only with its `gzip` feature.
    #[tokio::test]
    async fn gzipped_answer_is_decoded() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"d8:intervali900e5:peers6:\x7f\x00\x00\x01\x1a\xe1e")
            .unwrap();
        let body = gz.finish().unwrap();
        let server = FakeHttp::start(move |_| (200, body.clone())).await;
        let mut list = TrackerList::new(Some(server.url()), vec![]);
        let (_, resp) =
            tokio::time::timeout(Duration::from_secs(15), list.announce(&sample_request()))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(resp.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        let head = server.requests()[0].to_ascii_lowercase();
        assert!(head.contains("accept-encoding: gzip"), "{head}");
    }

    #[tokio::test]
    async fn all_failing_returns_last_error() {
        let refusing = FakeHttp::start(|_| (200, b"d14:failure reason6:nope!!e".to_vec())).await;
        let dead = format!("http://127.0.0.1:{}/announce", dead_port().await);
        let mut list = TrackerList::build(
            None,
            vec![vec![dead], vec![refusing.url()]],
            TrackerConfig::default(),
            false,
        );
        let err = tokio::time::timeout(Duration::from_secs(15), list.announce(&sample_request()))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, TrackerError::Failure(ref r) if r == "nope!!"),
            "{err:?}"
        );
    }
}
