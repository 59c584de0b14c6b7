//! UDP trackers (BEP 15): connect, then announce with the connection id.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use url::{Host, Url};

use super::{
    clamp_interval, parse_compact_v4, parse_compact_v6, AnnounceRequest, AnnounceResponse,
    TrackerError,
};

/// Magic constant that starts every connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// How long we reuse a connection id; BEP 15 lets clients use it for one minute.
pub const CONNECTION_ID_TTL: Duration = Duration::from_secs(60);

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;
/// Host name lookups get this long; a hung resolver must not stall the tier walk.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect request: protocol id, action 0, transaction id.
pub fn encode_connect(txid: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    out[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    out[12..16].copy_from_slice(&txid.to_be_bytes());
    out
}

/// Transaction id of a response, if it is long enough to have one.
fn packet_txid(buf: &[u8]) -> Option<u32> {
    let b = buf.get(4..8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Checks action and transaction id shared by all responses; error action → `Failure`.
fn check_header(buf: &[u8], txid: u32, action: u32) -> Result<(), TrackerError> {
    if buf.len() < 8 {
        return Err(TrackerError::InvalidResponse(format!(
            "short UDP packet ({} bytes)",
            buf.len()
        )));
    }
    let got_txid = be_u32(buf, 4);
    if got_txid != txid {
        return Err(TrackerError::InvalidResponse(format!(
            "transaction id {got_txid:#x}, expected {txid:#x}"
        )));
    }
    match be_u32(buf, 0) {
        ACTION_ERROR => {
            let msg = String::from_utf8_lossy(&buf[8..]);
            Err(TrackerError::Failure(
                msg.trim_end_matches('\0').trim().to_string(),
            ))
        }
        a if a == action => Ok(()),
        a => Err(TrackerError::InvalidResponse(format!(
            "UDP action {a}, expected {action}"
        ))),
    }
}

/// Parses a connect response (16 bytes) into the connection id.
pub fn parse_connect(buf: &[u8], txid: u32) -> Result<u64, TrackerError> {
    check_header(buf, txid, ACTION_CONNECT)?;
    let id = buf.get(8..16).ok_or_else(|| {
        TrackerError::InvalidResponse(format!("short connect response ({} bytes)", buf.len()))
    })?;
    let mut b = [0u8; 8];
    b.copy_from_slice(id);
    Ok(u64::from_be_bytes(b))
}

/// Announce request (98 bytes). IP is 0 ("use the sender's") unless the request names a
/// public IPv4 address; `numwant` goes out as is, so `u32::MAX` reads as -1 (tracker default).
pub fn encode_announce(conn_id: u64, txid: u32, req: &AnnounceRequest) -> Vec<u8> {
    let mut out = Vec::with_capacity(98);
    out.extend_from_slice(&conn_id.to_be_bytes());
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&txid.to_be_bytes());
    out.extend_from_slice(&req.info_hash);
    out.extend_from_slice(&req.peer_id);
    out.extend_from_slice(&req.downloaded.to_be_bytes());
    out.extend_from_slice(&req.left.to_be_bytes());
    out.extend_from_slice(&req.uploaded.to_be_bytes());
    out.extend_from_slice(&req.event.udp_code().to_be_bytes());
    let ip = match req.ip {
        Some(std::net::IpAddr::V4(v4)) => v4.octets(),
        _ => [0; 4],
    };
    out.extend_from_slice(&ip);
    out.extend_from_slice(&req.key.to_be_bytes());
    out.extend_from_slice(&req.numwant.to_be_bytes());
    out.extend_from_slice(&req.port.to_be_bytes());
    out
}

/// Parses an announce response. Peers are 6-byte entries, or 18-byte ones when the tracker
/// was reached over IPv6 (`ipv6`), as BEP 15 says; a trailing partial entry is ignored.
pub fn parse_announce(buf: &[u8], txid: u32, ipv6: bool) -> Result<AnnounceResponse, TrackerError> {
    check_header(buf, txid, ACTION_ANNOUNCE)?;
    if buf.len() < 20 {
        return Err(TrackerError::InvalidResponse(format!(
            "short announce response ({} bytes)",
            buf.len()
        )));
    }
    let interval = clamp_interval(i64::from(be_u32(buf, 8)));
    let leechers = be_u32(buf, 12);
    let seeders = be_u32(buf, 16);
    let peers = if ipv6 {
        parse_compact_v6(&buf[20..]).collect()
    } else {
        parse_compact_v4(&buf[20..]).collect()
    };
    Ok(AnnounceResponse {
        interval,
        min_interval: None,
        peers,
        warning: None,
        tracker_id: None,
        seeders: Some(seeders),
        leechers: Some(leechers),
    })
}

/// Retransmission schedule. BEP 15 says 15·2ⁿ s up to n = 8; that is far too slow for a
/// desktop client, so the base is shorter while the doubling stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Wait for the first try; each retry doubles it.
    pub base_timeout: Duration,
    /// Tries in total (0 counts as 1). Default 4: 3 + 6 + 12 + 24 = 45 s for a dead tracker.
    pub max_tries: u32,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            base_timeout: Duration::from_secs(3),
            max_tries: 4,
        }
    }
}

struct Connection {
    id: u64,
    addr: SocketAddr,
    obtained: Instant,
}

/// How waiting for one response ended without a usable answer.
enum WaitError {
    /// Nothing in time.
    TimedOut,
    /// A malformed answer to this very transaction (right address and transaction id).
    /// Retried at once rather than after the timeout: opentracker, for one, answers a
    /// refused announce with a bare 8-byte header, and waiting would not change that.
    Malformed(TrackerError),
    /// An answer that retrying won't change (tracker error message, socket error).
    Fatal(TrackerError),
}

/// One UDP tracker, with its socket and cached connection id.
#[derive(Debug)]
pub struct UdpTracker {
    host: Host<String>,
    port: u16,
    config: UdpConfig,
    socket: Option<UdpSocket>,
    conn: Option<Connection>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl UdpTracker {
    /// Accepts `udp://host:port[/...]`; the port is required (BEP 15 has no default).
    pub fn new(url: &Url, config: UdpConfig) -> Result<Self, TrackerError> {
        if url.scheme() != "udp" {
            return Err(TrackerError::UnsupportedScheme(url.scheme().to_string()));
        }
        let host = match url.host() {
            Some(Host::Domain(d)) if !d.is_empty() => Host::Domain(d.to_string()),
            Some(Host::Ipv4(ip)) => Host::Ipv4(ip),
            Some(Host::Ipv6(ip)) => Host::Ipv6(ip),
            _ => return Err(TrackerError::InvalidUrl(format!("no host in {url}"))),
        };
        let port = url
            .port()
            .filter(|p| *p != 0)
            .ok_or_else(|| TrackerError::InvalidUrl(format!("no port in {url}")))?;
        Ok(UdpTracker {
            host,
            port,
            config,
            socket: None,
            conn: None,
        })
    }

    /// Resolves the host, preferring IPv4 (the address family nearly every tracker serves).
    async fn resolve(&self) -> Result<SocketAddr, TrackerError> {
        let name = match &self.host {
            Host::Ipv4(ip) => return Ok(SocketAddr::new(IpAddr::V4(*ip), self.port)),
            Host::Ipv6(ip) => return Ok(SocketAddr::new(IpAddr::V6(*ip), self.port)),
            Host::Domain(d) => d.as_str(),
        };
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, self.port)))
                .await
                .map_err(|_| TrackerError::Resolve(format!("{name}: timed out")))?
                .map_err(|e| TrackerError::Resolve(format!("{name}: {e}")))?
                .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| TrackerError::Resolve(format!("{name}: no addresses")))
    }

    /// The socket, (re)bound for `addr`'s family. Kept across announces because some trackers
    /// tie the connection id to the source address and port.
    async fn ensure_socket(&mut self, addr: SocketAddr) -> Result<(), TrackerError> {
        let family_ok = match &self.socket {
            Some(s) => s.local_addr()?.is_ipv4() == addr.is_ipv4(),
            None => false,
        };
        if !family_ok {
            let local: SocketAddr = if addr.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            self.socket = Some(UdpSocket::bind(local).await?);
            self.conn = None;
        }
        Ok(())
    }

    /// Connects if needed, then announces, retransmitting with doubling timeouts.
    /// A tracker error message fails at once; a malformed answer only after all tries
    /// (each malformed answer uses up a try, without waiting out its timeout).
    pub async fn announce(
        &mut self,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let addr = self.resolve().await?;
        if self.conn.as_ref().is_some_and(|c| c.addr != addr) {
            self.conn = None;
        }
        self.ensure_socket(addr).await?;
        let config = self.config;
        let mut last_err = None;
        for attempt in 0..config.max_tries.max(1) {
            let wait = config
                .base_timeout
                .saturating_mul(2u32.saturating_pow(attempt));
            let Some(socket) = &self.socket else {
                return Err(TrackerError::Io(std::io::Error::other("socket missing")));
            };
            let cached = self
                .conn
                .as_ref()
                .filter(|c| c.obtained.elapsed() < CONNECTION_ID_TTL)
                .map(|c| c.id);
            let conn_id = match cached {
                Some(id) => id,
                None => {
                    let txid: u32 = rand::random();
                    let sent_at = Instant::now();
                    socket.send_to(&encode_connect(txid), addr).await?;
                    match exchange(socket, addr, txid, wait, |b| parse_connect(b, txid)).await {
                        Ok(id) => {
                            self.conn = Some(Connection {
                                id,
                                addr,
                                obtained: sent_at,
                            });
                            id
                        }
                        Err(WaitError::TimedOut) => continue,
                        Err(WaitError::Malformed(e)) => {
                            last_err = Some(e);
                            continue;
                        }
                        Err(WaitError::Fatal(e)) => return Err(e),
                    }
                }
            };
            let txid: u32 = rand::random();
            socket
                .send_to(&encode_announce(conn_id, txid, req), addr)
                .await?;
            let ipv6 = addr.is_ipv6();
            match exchange(socket, addr, txid, wait, |b| parse_announce(b, txid, ipv6)).await {
                Ok(resp) => return Ok(resp),
                Err(WaitError::TimedOut) => {
                    // The tracker may have restarted and forgotten our id: get a fresh one.
                    self.conn = None;
                }
                Err(WaitError::Malformed(e)) => last_err = Some(e),
                Err(WaitError::Fatal(e)) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap_or(TrackerError::Timeout))
    }
}

/// Waits up to `wait` for the response to `txid` from `addr`. Datagrams from elsewhere, too
/// short to carry a transaction id, or for other transactions (late answers to earlier
/// tries) are skipped.
async fn exchange<T>(
    socket: &UdpSocket,
    addr: SocketAddr,
    txid: u32,
    wait: Duration,
    parse: impl Fn(&[u8]) -> Result<T, TrackerError>,
) -> Result<T, WaitError> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Err(WaitError::TimedOut),
            Ok(Err(e)) => return Err(WaitError::Fatal(e.into())),
            Ok(Ok(r)) => r,
        };
        if from != addr {
            tracing::debug!(%from, expected = %addr, "ignoring datagram from unexpected address");
            continue;
        }
        let pkt = &buf[..n];
        if packet_txid(pkt) != Some(txid) {
            continue;
        }
        match parse(pkt) {
            Ok(v) => return Ok(v),
            Err(e @ TrackerError::Failure(_)) => return Err(WaitError::Fatal(e)),
            Err(e) => return Err(WaitError::Malformed(e)),
        }
    }
}

/// Fake UDP trackers on 127.0.0.1 for tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::net::UdpSocket;

    /// Receives and counts datagrams, never answers.
    pub(crate) struct SilentUdp {
        port: u16,
        count: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for SilentUdp {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl SilentUdp {
        pub(crate) async fn start() -> Self {
            let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = sock.local_addr().unwrap().port();
            let count = Arc::new(AtomicUsize::new(0));
            let c = count.clone();
            let task = tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while sock.recv_from(&mut buf).await.is_ok() {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            });
            SilentUdp { port, count, task }
        }

        pub(crate) fn url(&self) -> String {
            format!("udp://127.0.0.1:{}/announce", self.port)
        }

        pub(crate) fn received(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::SilentUdp;
    use super::*;
    use crate::discovery::tracker::{sample_request, Event};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn fast() -> UdpConfig {
        UdpConfig {
            base_timeout: Duration::from_millis(200),
            max_tries: 4,
        }
    }

    #[test]
    fn connect_packet_bytes() {
        assert_eq!(
            encode_connect(0x0102_0304),
            [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn connect_response() {
        let mut r = vec![0, 0, 0, 0, 0, 0, 0, 9];
        r.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        assert_eq!(parse_connect(&r, 9).unwrap(), 0x1122_3344_5566_7788);
        // Wrong transaction id.
        assert!(matches!(
            parse_connect(&r, 8),
            Err(TrackerError::InvalidResponse(_))
        ));
        // Short packets.
        for n in 0..16 {
            assert!(matches!(
                parse_connect(&r[..n], 9),
                Err(TrackerError::InvalidResponse(_))
            ));
        }
        // Wrong action.
        let mut a = r.clone();
        a[3] = 1;
        assert!(matches!(
            parse_connect(&a, 9),
            Err(TrackerError::InvalidResponse(_))
        ));
        // Longer than needed is fine.
        r.push(0);
        assert!(parse_connect(&r, 9).is_ok());
    }

    #[test]
    fn error_action() {
        let mut r = vec![0, 0, 0, 3, 0, 0, 0, 9];
        r.extend_from_slice(b"torrent not registered\0");
        match parse_announce(&r, 9, false) {
            Err(TrackerError::Failure(m)) => assert_eq!(m, "torrent not registered"),
            other => panic!("{other:?}"),
        }
        match parse_connect(&r, 9) {
            Err(TrackerError::Failure(m)) => assert_eq!(m, "torrent not registered"),
            other => panic!("{other:?}"),
        }
        // Error for another transaction is not ours.
        assert!(matches!(
            parse_announce(&r, 10, false),
            Err(TrackerError::InvalidResponse(_))
        ));
        // Bare error header, invalid UTF-8.
        let r = [0, 0, 0, 3, 0, 0, 0, 9, 0xff];
        assert!(matches!(
            parse_announce(&r, 9, false),
            Err(TrackerError::Failure(_))
        ));
    }

    #[test]
    fn announce_packet_layout() {
        let mut req = sample_request();
        req.numwant = u32::MAX;
        let p = encode_announce(0xAABB_CCDD_EEFF_0011, 0x5566_7788, &req);
        assert_eq!(p.len(), 98);
        assert_eq!(&p[0..8], &0xAABB_CCDD_EEFF_0011u64.to_be_bytes());
        assert_eq!(&p[8..12], &[0, 0, 0, 1]);
        assert_eq!(&p[12..16], &[0x55, 0x66, 0x77, 0x88]);
        assert_eq!(&p[16..36], &req.info_hash);
        assert_eq!(&p[36..56], &req.peer_id);
        assert_eq!(&p[56..64], &20u64.to_be_bytes()); // downloaded
        assert_eq!(&p[64..72], &30u64.to_be_bytes()); // left
        assert_eq!(&p[72..80], &10u64.to_be_bytes()); // uploaded
        assert_eq!(&p[80..84], &[0, 0, 0, 2]); // started
        assert_eq!(&p[84..88], &[0, 0, 0, 0]); // ip
        assert_eq!(&p[88..92], &0xdead_beefu32.to_be_bytes());
        assert_eq!(&p[92..96], &[0xff, 0xff, 0xff, 0xff]); // num_want -1
        assert_eq!(&p[96..98], &6881u16.to_be_bytes());
        req.ip = Some("198.51.100.4".parse().unwrap());
        let p = encode_announce(1, 2, &req);
        assert_eq!(&p[84..88], &[198, 51, 100, 4]); // a public IPv4 is sent
        req.ip = Some("2a00::1".parse().unwrap());
        let p = encode_announce(1, 2, &req);
        assert_eq!(&p[84..88], &[0, 0, 0, 0]); // the field has no room for IPv6
        req.ip = None;
        for (ev, code) in [
            (Event::None, 0u8),
            (Event::Completed, 1),
            (Event::Started, 2),
            (Event::Stopped, 3),
        ] {
            req.event = ev;
            assert_eq!(encode_announce(1, 2, &req)[80..84], [0, 0, 0, code]);
        }
    }

    fn announce_reply(txid: u32, interval: u32, peers: &[u8]) -> Vec<u8> {
        let mut r = vec![0, 0, 0, 1];
        r.extend_from_slice(&txid.to_be_bytes());
        r.extend_from_slice(&interval.to_be_bytes());
        r.extend_from_slice(&4u32.to_be_bytes()); // leechers
        r.extend_from_slice(&9u32.to_be_bytes()); // seeders
        r.extend_from_slice(peers);
        r
    }

    #[test]
    fn announce_response() {
        let r = announce_reply(
            7,
            1800,
            &[127, 0, 0, 1, 0x1a, 0xe1, 1, 2, 3, 4, 0, 0, 5, 5, 5],
        );
        let a = parse_announce(&r, 7, false).unwrap();
        assert_eq!(a.interval, Duration::from_secs(1800));
        assert_eq!(a.leechers, Some(4));
        assert_eq!(a.seeders, Some(9));
        assert_eq!(a.peers, vec!["127.0.0.1:6881".parse().unwrap()]);

        let mut v6 = vec![0u8; 18];
        v6[15] = 1;
        v6[17] = 80;
        let r = announce_reply(7, 0, &v6);
        let a = parse_announce(&r, 7, true).unwrap();
        assert_eq!(a.peers, vec!["[::1]:80".parse().unwrap()]);
        assert_eq!(a.interval, Duration::from_secs(1));

        assert!(matches!(
            parse_announce(&r, 8, true),
            Err(TrackerError::InvalidResponse(_))
        ));
        for n in 0..20 {
            assert!(matches!(
                parse_announce(&r[..n], 7, false),
                Err(TrackerError::InvalidResponse(_))
            ));
        }
    }

    #[test]
    fn url_checks() {
        let ok = Url::parse("udp://tracker.example:1337/announce").unwrap();
        assert!(UdpTracker::new(&ok, UdpConfig::default()).is_ok());
        let v6 = Url::parse("udp://[::1]:1337").unwrap();
        assert!(UdpTracker::new(&v6, UdpConfig::default()).is_ok());
        let no_port = Url::parse("udp://tracker.example/announce").unwrap();
        assert!(matches!(
            UdpTracker::new(&no_port, UdpConfig::default()),
            Err(TrackerError::InvalidUrl(_))
        ));
        let http = Url::parse("http://tracker.example/announce").unwrap();
        assert!(matches!(
            UdpTracker::new(&http, UdpConfig::default()),
            Err(TrackerError::UnsupportedScheme(_))
        ));
    }

    #[derive(Default)]
    struct Counts {
        connects: AtomicUsize,
        announces: AtomicUsize,
    }

    /// What the scripted fake does with each request.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Normal,
        /// Send a reply with a wrong transaction id first, then the right one.
        WrongTxidFirst,
        /// Send the connect reply from a second socket first (ignored), then the real one.
        OtherSourceFirst,
        /// Answer every connect with a too-short packet that has the right txid.
        Short,
        /// Answer connects with an error message.
        Error,
        /// Answer announces with a bare 8-byte header (opentracker's "not whitelisted").
        BareAnnounce,
    }

    const CONN_ID: u64 = 0x0102_0304_0506_0708;

    async fn scripted(mode: Mode) -> (String, Arc<Counts>, tokio::task::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "udp://127.0.0.1:{}/announce",
            sock.local_addr().unwrap().port()
        );
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let p = &buf[..n];
                let txid = u32::from_be_bytes([p[12], p[13], p[14], p[15]]);
                if n == 16 && p[..8] == PROTOCOL_ID.to_be_bytes() {
                    c.connects.fetch_add(1, Ordering::SeqCst);
                    let mut reply = vec![0, 0, 0, 0];
                    reply.extend_from_slice(&txid.to_be_bytes());
                    match mode {
                        Mode::Short => {
                            reply.extend_from_slice(&[0, 0]);
                            sock.send_to(&reply, from).await.unwrap();
                            continue;
                        }
                        Mode::Error => {
                            let mut e = vec![0, 0, 0, 3];
                            e.extend_from_slice(&txid.to_be_bytes());
                            e.extend_from_slice(b"go away");
                            sock.send_to(&e, from).await.unwrap();
                            continue;
                        }
                        _ => {}
                    }
                    if mode == Mode::OtherSourceFirst {
                        let mut spoof = reply.clone();
                        spoof.extend_from_slice(&0xBADu64.to_be_bytes());
                        other.send_to(&spoof, from).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    reply.extend_from_slice(&CONN_ID.to_be_bytes());
                    if mode == Mode::WrongTxidFirst {
                        let mut wrong = reply.clone();
                        wrong[7] ^= 0xff;
                        sock.send_to(&wrong, from).await.unwrap();
                    }
                    sock.send_to(&reply, from).await.unwrap();
                } else if n == 98 {
                    c.announces.fetch_add(1, Ordering::SeqCst);
                    let conn = u64::from_be_bytes(p[..8].try_into().unwrap());
                    assert_eq!(conn, CONN_ID);
                    assert_eq!(&p[16..36], &sample_request().info_hash);
                    let event = u32::from_be_bytes(p[80..84].try_into().unwrap());
                    let port = u16::from_be_bytes([p[96], p[97]]);
                    let mut peers = vec![127, 0, 0, 1];
                    peers.extend_from_slice(&port.to_be_bytes());
                    peers.extend_from_slice(&[10, 0, 0, event as u8, 0, 7]);
                    let reply = announce_reply(txid, 600, &peers);
                    if mode == Mode::BareAnnounce {
                        sock.send_to(&reply[..8], from).await.unwrap();
                        continue;
                    }
                    if mode == Mode::WrongTxidFirst {
                        let wrong = announce_reply(txid.wrapping_add(1), 1, &[]);
                        sock.send_to(&wrong, from).await.unwrap();
                    }
                    sock.send_to(&reply, from).await.unwrap();
                }
            }
        });
        (url, counts, task)
    }

    async fn run(
        t: &mut UdpTracker,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        tokio::time::timeout(Duration::from_secs(10), t.announce(req))
            .await
            .expect("announce hung")
    }

    #[tokio::test]
    async fn connect_then_announce_and_reuse_connection_id() {
        let (url, counts, task) = scripted(Mode::Normal).await;
        let mut t = UdpTracker::new(&Url::parse(&url).unwrap(), fast()).unwrap();
        let r = run(&mut t, &sample_request()).await.unwrap();
        assert_eq!(r.interval, Duration::from_secs(600));
        assert_eq!(r.seeders, Some(9));
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "10.0.0.2:7".parse().unwrap()
            ]
        );
        let mut req = sample_request();
        req.event = Event::Stopped;
        let r = run(&mut t, &req).await.unwrap();
        assert_eq!(r.peers[1], "10.0.0.3:7".parse().unwrap());
        assert_eq!(counts.connects.load(Ordering::SeqCst), 1);
        assert_eq!(counts.announces.load(Ordering::SeqCst), 2);
        task.abort();
    }

    #[tokio::test]
    async fn expired_connection_id_is_renewed() {
        let (url, counts, task) = scripted(Mode::Normal).await;
        let mut t = UdpTracker::new(&Url::parse(&url).unwrap(), fast()).unwrap();
        run(&mut t, &sample_request()).await.unwrap();
        if let Some(c) = t.conn.as_mut() {
            match c.obtained.checked_sub(CONNECTION_ID_TTL) {
                Some(past) => c.obtained = past,
                None => return, // clock too young to back-date; nothing to test
            }
        }
        run(&mut t, &sample_request()).await.unwrap();
        assert_eq!(counts.connects.load(Ordering::SeqCst), 2);
        task.abort();
    }

    #[tokio::test]
    async fn wrong_txid_then_right_one() {
        let (url, counts, task) = scripted(Mode::WrongTxidFirst).await;
        let mut t = UdpTracker::new(&Url::parse(&url).unwrap(), fast()).unwrap();
        let r = run(&mut t, &sample_request()).await.unwrap();
        assert_eq!(r.interval, Duration::from_secs(600));
        assert_eq!(counts.connects.load(Ordering::SeqCst), 1);
        assert_eq!(counts.announces.load(Ordering::SeqCst), 1);
        task.abort();
    }

    #[tokio::test]
    async fn datagram_from_other_address_ignored() {
        let (url, counts, task) = scripted(Mode::OtherSourceFirst).await;
        let mut t = UdpTracker::new(&Url::parse(&url).unwrap(), fast()).unwrap();
        // The fake asserts the announce carries CONN_ID, not the spoofed id.
        let r = run(&mut t, &sample_request()).await.unwrap();
        assert_eq!(r.interval, Duration::from_secs(600));
        assert_eq!(counts.announces.load(Ordering::SeqCst), 1);
        task.abort();
    }

    #[tokio::test]
    async fn silent_tracker_times_out_after_doubling_retries() {
        let server = SilentUdp::start().await;
        let mut t = UdpTracker::new(&Url::parse(&server.url()).unwrap(), fast()).unwrap();
        let started = std::time::Instant::now();
        let err = run(&mut t, &sample_request()).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, TrackerError::Timeout), "{err:?}");
        // 200 + 400 + 800 + 1600 ms.
        assert!(took >= Duration::from_millis(2900), "{took:?}");
        assert!(took < Duration::from_millis(5000), "{took:?}");
        assert_eq!(server.received(), 4);
    }

    #[tokio::test]
    async fn short_packets_fail_only_after_retries() {
        // Long timeouts: a malformed answer must use up a try without waiting them out.
        let cfg = UdpConfig {
            base_timeout: Duration::from_secs(2),
            max_tries: 3,
        };
        for mode in [Mode::Short, Mode::BareAnnounce] {
            let (url, counts, task) = scripted(mode).await;
            let mut t = UdpTracker::new(&Url::parse(&url).unwrap(), cfg).unwrap();
            let started = std::time::Instant::now();
            let err = run(&mut t, &sample_request()).await.unwrap_err();
            assert!(matches!(err, TrackerError::InvalidResponse(_)), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
            if mode == Mode::Short {
                assert_eq!(counts.connects.load(Ordering::SeqCst), 3);
            } else {
                // The connection id stays valid: one connect, three announces.
                assert_eq!(counts.connects.load(Ordering::SeqCst), 1);
                assert_eq!(counts.announces.load(Ordering::SeqCst), 3);
            }
            task.abort();
        }
    }

    #[tokio::test]
    async fn error_action_fails_immediately() {
        let (url, counts, task) = scripted(Mode::Error).await;
        let mut t = UdpTracker::new(&Url::parse(&url).unwrap(), fast()).unwrap();
        let err = run(&mut t, &sample_request()).await.unwrap_err();
        assert!(
            matches!(err, TrackerError::Failure(ref m) if m == "go away"),
            "{err:?}"
        );
        assert_eq!(counts.connects.load(Ordering::SeqCst), 1);
        task.abort();
    }
}
