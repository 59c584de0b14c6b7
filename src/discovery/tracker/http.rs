//! HTTP(S) trackers: BEP 3 announce, BEP 23 compact peers, `peers6`.

use std::error::Error as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_bencode::value::Value;
use url::Url;

use super::{
    clamp_interval, parse_compact_v4, parse_compact_v6, AnnounceRequest, AnnounceResponse,
    TrackerError, DEFAULT_INTERVAL, MAX_RESPONSE_SIZE,
};

/// Everything except RFC 3986 unreserved characters gets `%XX`; info-hash and peer id are
/// raw bytes, and trackers compare them byte-exactly after decoding.
const QUERY_BYTES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// serde_bencode recurses per nesting level; deeper input is refused before it can blow the
/// stack. Real tracker answers nest 3 levels.
const MAX_NESTING: usize = 32;

/// Builds the announce URL. `base` may already carry a query (e.g. a passkey); ours is
/// appended with `&`. Any fragment is dropped.
pub fn build_announce_url(base: &Url, req: &AnnounceRequest, tracker_id: Option<&[u8]>) -> String {
    let mut base = base.clone();
    base.set_fragment(None);
    let mut out = base.as_str().to_string();
    match base.query() {
        None => out.push('?'),
        Some(q) if q.is_empty() || q.ends_with('&') => {}
        Some(_) => out.push('&'),
    }
    out.push_str("info_hash=");
    out.extend(percent_encode(&req.info_hash, QUERY_BYTES));
    out.push_str("&peer_id=");
    out.extend(percent_encode(&req.peer_id, QUERY_BYTES));
    out.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}",
        req.port, req.uploaded, req.downloaded, req.left
    ));
    if let Some(ev) = req.event.as_http_str() {
        out.push_str("&event=");
        out.push_str(ev);
    }
    out.push_str(&format!(
        "&numwant={}&key={:08X}&compact=1",
        req.numwant, req.key
    ));
    if let Some(ip) = req.ip {
        out.push_str(&format!("&ip={ip}"));
    }
    if let Some(ip) = req.ipv6 {
        out.push_str("&ipv6=");
        out.extend(percent_encode(ip.to_string().as_bytes(), QUERY_BYTES));
    }
    if let Some(id) = tracker_id {
        out.push_str("&trackerid=");
        out.extend(percent_encode(id, QUERY_BYTES));
    }
    out
}

/// Parses a bencoded announce answer. `failure reason` wins over everything else; unknown
/// keys are ignored; malformed peer entries are skipped rather than failing the announce.
pub fn parse_http_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    if !nesting_within(body, MAX_NESTING) {
        return Err(TrackerError::InvalidResponse(
            "bencode nested too deeply".into(),
        ));
    }
    let value: Value = serde_bencode::from_bytes(body)
        .map_err(|e| TrackerError::InvalidResponse(format!("not bencode: {e}")))?;
    let Value::Dict(dict) = value else {
        return Err(TrackerError::InvalidResponse(
            "top level is not a dictionary".into(),
        ));
    };
    let get = |k: &str| dict.get(k.as_bytes());

    if let Some(reason) = get("failure reason") {
        return Err(TrackerError::Failure(text(reason)));
    }
    let has_interval = get("interval").is_some();
    let has_peers = get("peers").is_some() || get("peers6").is_some();
    if !has_interval && !has_peers {
        return Err(TrackerError::InvalidResponse(
            "neither interval nor peers".into(),
        ));
    }

    let interval = match get("interval") {
        Some(Value::Int(i)) => clamp_interval(*i),
        _ => DEFAULT_INTERVAL,
    };
    let min_interval = match get("min interval") {
        Some(Value::Int(i)) => Some(clamp_interval(*i)),
        _ => None,
    };
    let count = |k: &str| match get(k) {
        Some(Value::Int(i)) => u32::try_from(*i).ok(),
        _ => None,
    };
    let mut peers = Vec::new();
    match get("peers") {
        Some(Value::Bytes(b)) => peers.extend(parse_compact_v4(b)),
        Some(Value::List(list)) => peers.extend(list.iter().filter_map(dict_peer)),
        _ => {}
    }
    if let Some(Value::Bytes(b)) = get("peers6") {
        peers.extend(parse_compact_v6(b));
    }
    Ok(AnnounceResponse {
        interval,
        min_interval,
        peers,
        warning: get("warning message").map(text),
        tracker_id: match get("tracker id") {
            Some(Value::Bytes(b)) if !b.is_empty() => Some(b.clone()),
            _ => None,
        },
        seeders: count("complete"),
        leechers: count("incomplete"),
    })
}

/// One entry of a non-compact peer list: `{ip: "1.2.3.4" | "::1", port: n}`. Host names are
/// not resolved (a tracker has no business making us do DNS per peer).
fn dict_peer(v: &Value) -> Option<SocketAddr> {
    let Value::Dict(d) = v else { return None };
    let ip = match d.get(&b"ip"[..]) {
        Some(Value::Bytes(b)) => std::str::from_utf8(b).ok()?.trim().parse::<IpAddr>().ok()?,
        _ => return None,
    };
    let port = match d.get(&b"port"[..]) {
        Some(Value::Int(p)) => u16::try_from(*p).ok().filter(|p| *p != 0)?,
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A human-readable string from a value trackers are supposed to send as a string.
fn text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        _ => "(unreadable)".into(),
    }
}

/// Iteratively scans the first bencode value and reports whether its list/dict nesting stays
/// within `max`. Malformed input passes: the real parser reports it.
fn nesting_within(buf: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < buf.len() {
        match buf[i] {
            b'l' | b'd' => {
                depth += 1;
                if depth > max {
                    return false;
                }
                i += 1;
            }
            b'e' => {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
                i += 1;
            }
            b'i' => match buf[i..].iter().position(|&c| c == b'e') {
                Some(p) => i += p + 1,
                None => return true,
            },
            b'0'..=b'9' => {
                let Some(colon) = buf[i..].iter().position(|&c| c == b':') else {
                    return true;
                };
                let digits = &buf[i..i + colon];
                let mut len = 0usize;
                for &d in digits {
                    if !d.is_ascii_digit() {
                        return true;
                    }
                    len = len.saturating_mul(10).saturating_add(usize::from(d - b'0'));
                }
                i = i.saturating_add(colon + 1).saturating_add(len);
            }
            _ => return true,
        }
        if depth == 0 {
            return true;
        }
    }
    true
}

/// The HTTP client trackers share: bounded connect and total time, at most 5 redirects.
pub fn http_client(
    connect_timeout: Duration,
    total_timeout: Duration,
) -> Result<reqwest::Client, TrackerError> {
    reqwest::Client::builder()
        .user_agent("shoal/0.1")
        .connect_timeout(connect_timeout)
        .timeout(total_timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        // A fresh connection per announce: trackers such as opentracker
        // close the connection after each answer without saying so, and a
        // pooled connection reused a moment later (`stopped` right after
        // `completed`) fails.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(map_reqwest)
}

/// Maps a reqwest error, keeping its cause chain but not the URL (it may hold a passkey).
fn map_reqwest(e: reqwest::Error) -> TrackerError {
    if e.is_timeout() {
        return TrackerError::Timeout;
    }
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    TrackerError::Http(msg)
}

/// Reads a body chunk by chunk, failing as soon as it would exceed `cap`.
async fn read_capped(resp: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, TrackerError> {
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(TrackerError::ResponseTooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(map_reqwest)? {
        if body.len() + chunk.len() > cap {
            return Err(TrackerError::ResponseTooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One HTTP(S) tracker and the `tracker id` it asked us to echo.
#[derive(Debug)]
pub struct HttpTracker {
    url: Url,
    tracker_id: Option<Vec<u8>>,
}

impl HttpTracker {
    /// Accepts `http` and `https` URLs with a host.
    pub fn new(url: &Url) -> Result<Self, TrackerError> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(TrackerError::UnsupportedScheme(other.to_string())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(TrackerError::InvalidUrl(format!("no host in {url}")));
        }
        Ok(HttpTracker {
            url: url.clone(),
            tracker_id: None,
        })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The last `tracker id` received, if any.
    pub fn tracker_id(&self) -> Option<&[u8]> {
        self.tracker_id.as_deref()
    }

    /// Sends one announce. A non-2xx answer is [`TrackerError::HttpStatus`] unless its body
    /// carries a `failure reason`, which is more useful to show.
    pub async fn announce(
        &mut self,
        client: &reqwest::Client,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let url = build_announce_url(&self.url, req, self.tracker_id.as_deref());
        let mut resp = client.get(url).send().await.map_err(map_reqwest)?;
        let status = resp.status();
        let body = read_capped(&mut resp, MAX_RESPONSE_SIZE).await;
        if !status.is_success() {
            if let Ok(body) = &body {
                if let Err(TrackerError::Failure(reason)) = parse_http_response(body) {
                    return Err(TrackerError::Failure(reason));
                }
            }
            return Err(TrackerError::HttpStatus(status.as_u16()));
        }
        let parsed = parse_http_response(&body?)?;
        if let Some(id) = &parsed.tracker_id {
            self.tracker_id = Some(id.clone());
        }
        Ok(parsed)
    }
}

/// A fake HTTP tracker on 127.0.0.1 for tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    type Handler = dyn Fn(&str) -> (u16, Vec<u8>) + Send + Sync;

    pub(crate) struct FakeHttp {
        port: u16,
        requests: Arc<Mutex<Vec<String>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeHttp {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeHttp {
        /// Serves `handler(request_target)` with a Content-Length; a body
        /// that starts with the gzip magic is sent as `Content-Encoding: gzip`.
        pub(crate) async fn start(
            handler: impl Fn(&str) -> (u16, Vec<u8>) + Send + Sync + 'static,
        ) -> Self {
            Self::start_with(handler, true).await
        }

        /// `with_length = false` sends a close-delimited body.
        pub(crate) async fn start_with(
            handler: impl Fn(&str) -> (u16, Vec<u8>) + Send + Sync + 'static,
            with_length: bool,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let handler: Arc<Handler> = Arc::new(handler);
            let reqs = requests.clone();
            let task = tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let handler = handler.clone();
                    let reqs = reqs.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).into_owned();
                        let line = head.lines().next().unwrap_or("").to_string();
                        let target = line.split(' ').nth(1).unwrap_or("").to_string();
                        reqs.lock().unwrap().push(head);
                        let (status, body) = handler(&target);
                        let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                        if with_length {
                            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
                        }
                        if body.starts_with(&[0x1f, 0x8b]) {
                            out.push_str("Content-Encoding: gzip\r\n");
                        }
                        out.push_str("\r\n");
                        let _ = sock.write_all(out.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                        let _ = sock.shutdown().await;
                    });
                }
            });
            FakeHttp {
                port,
                requests,
                task,
            }
        }

        pub(crate) fn url(&self) -> String {
            format!("http://127.0.0.1:{}/announce", self.port)
        }

        /// Full request heads received so far.
        pub(crate) fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// A loopback port with nothing listening (connections are refused).
    pub(crate) async fn dead_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHttp;
    use super::*;
    use crate::discovery::tracker::{sample_request, Event};

    const HASH_ENC: &str = "%00%FF%20~-A%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13";

    fn client() -> reqwest::Client {
        http_client(Duration::from_secs(5), Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn url_encodes_raw_bytes() {
        let base = Url::parse("http://t.example:8080/announce").unwrap();
        let url = build_announce_url(&base, &sample_request(), None);
        assert_eq!(
            url,
            format!(
                "http://t.example:8080/announce?info_hash={HASH_ENC}\
                 &peer_id=-SH0010-abcdefghij.~&port=6881&uploaded=10&downloaded=20&left=30\
                 &event=started&numwant=50&key=DEADBEEF&compact=1"
            )
        );
    }

    #[test]
    fn url_with_existing_query_and_tracker_id() {
        let mut req = sample_request();
        req.event = Event::None;
        req.peer_id = [b'x'; 20];
        req.peer_id[19] = b'/';
        let base = Url::parse("https://t.example/a?passkey=s3cr%2Bt#frag").unwrap();
        let url = build_announce_url(&base, &req, Some(b"id 1\xff"));
        assert!(
            url.starts_with(&format!(
                "https://t.example/a?passkey=s3cr%2Bt&info_hash={HASH_ENC}&peer_id=xxxxxxxxxxxxxxxxxxx%2F&"
            )),
            "{url}"
        );
        assert!(!url.contains("event="));
        assert!(!url.contains('#'));
        assert!(url.ends_with("&compact=1&trackerid=id%201%FF"), "{url}");

        let base = Url::parse("http://t.example/a?").unwrap();
        let url = build_announce_url(&base, &req, None);
        assert!(url.starts_with("http://t.example/a?info_hash="), "{url}");
    }

    #[test]
    fn url_events() {
        let base = Url::parse("http://t.example/announce").unwrap();
        let mut req = sample_request();
        for (ev, want) in [
            (Event::Started, Some("&event=started&")),
            (Event::Completed, Some("&event=completed&")),
            (Event::Stopped, Some("&event=stopped&")),
            (Event::None, None),
        ] {
            req.event = ev;
            let url = build_announce_url(&base, &req, None);
            match want {
                Some(w) => assert!(url.contains(w), "{url}"),
                None => assert!(!url.contains("event"), "{url}"),
            }
        }
    }

    #[test]
    fn url_external_addresses() {
        let base = Url::parse("http://t.example/announce").unwrap();
        let mut req = sample_request();
        let url = build_announce_url(&base, &req, None);
        assert!(!url.contains("ip=") && !url.contains("ipv6="), "{url}");
        req.ip = Some("198.51.100.4".parse().unwrap());
        req.ipv6 = Some("2a00:1450::1".parse().unwrap());
        let url = build_announce_url(&base, &req, None);
        assert!(url.contains("&ip=198.51.100.4&"), "{url}");
        assert!(url.ends_with("&ipv6=2a00%3A1450%3A%3A1"), "{url}");
    }

    #[test]
    fn parses_compact_peers_and_counts() {
        let body = b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali300e\
                     5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50e";
        let r = parse_http_response(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.min_interval, Some(Duration::from_secs(300)));
        assert_eq!(r.seeders, Some(5));
        assert_eq!(r.leechers, Some(7));
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap()
            ]
        );
        assert_eq!(r.warning, None);
        assert_eq!(r.tracker_id, None);
    }

    #[test]
    fn partial_trailing_entry_and_port_zero_ignored() {
        let body = b"d8:intervali60e5:peers16:\x01\x02\x03\x04\x00\x01\x05\x06\x07\x08\x00\x00\x09\x09\x09\x09e";
        let r = parse_http_response(body).unwrap();
        assert_eq!(r.peers, vec!["1.2.3.4:1".parse().unwrap()]);
    }

    #[test]
    fn dict_peers_skip_garbage() {
        let body = b"d8:intervali60e5:peersl\
            d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
            d2:ip3:::14:porti51413ee\
            d2:ip11:example.com4:porti1ee\
            d2:ip7:1.2.3.44:porti0ee\
            d2:ip7:1.2.3.44:porti70000ee\
            d2:ip7:1.2.3.44:port2:80e\
            d4:porti80ee\
            i5e\
            5:hello\
            d2:ip9: 5.6.7.8 4:porti8080ee\
            ee";
        let r = parse_http_response(body).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:51413".parse().unwrap(),
                "5.6.7.8:8080".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn peers6_compact() {
        let mut body = b"d8:intervali60e5:peers0:6:peers640:".to_vec();
        let mut a = [0u8; 18];
        a[15] = 1;
        a[16] = 0x1a;
        a[17] = 0xe1;
        let mut b = [0u8; 18];
        b[0] = 0x20;
        b[1] = 0x01;
        b[17] = 80;
        body.extend_from_slice(&a);
        body.extend_from_slice(&b);
        body.extend_from_slice(b"xxxx");
        body.push(b'e');
        let r = parse_http_response(&body).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "[::1]:6881".parse().unwrap(),
                "[2001::]:80".parse().unwrap()
            ]
        );
    }

    #[test]
    fn failure_reason_wins() {
        let body = b"d14:failure reason17:torrent not found8:intervali60e5:peers6:\x01\x02\x03\x04\x00\x01e";
        match parse_http_response(body) {
            Err(TrackerError::Failure(r)) => assert_eq!(r, "torrent not found"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn warning_tracker_id_and_default_interval() {
        let body = b"d10:tracker id3:abc15:warning message9:slow down5:peers0:e";
        let r = parse_http_response(body).unwrap();
        assert_eq!(r.warning.as_deref(), Some("slow down"));
        assert_eq!(r.tracker_id.as_deref(), Some(&b"abc"[..]));
        assert_eq!(r.interval, DEFAULT_INTERVAL);
        assert!(r.peers.is_empty());
    }

    #[test]
    fn interval_clamped() {
        let r = parse_http_response(b"d8:intervali0e12:min intervali-4ee").unwrap();
        assert_eq!(r.interval, Duration::from_secs(1));
        assert_eq!(r.min_interval, Some(Duration::from_secs(1)));
        let r = parse_http_response(b"d8:intervali99999999999ee").unwrap();
        assert_eq!(r.interval, Duration::from_secs(86400));
    }

    #[test]
    fn invalid_bodies() {
        for body in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"d8:interval",
            b"li1ee",
            b"de",
            b"d3:fooi1ee",
            b"5:abcde",
            b"d8:intervali1x0ee",
            b"d99999999999999999999999:x",
        ] {
            assert!(
                matches!(
                    parse_http_response(body),
                    Err(TrackerError::InvalidResponse(_))
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn deep_nesting_refused_without_stack_overflow() {
        let mut body = b"d8:intervali60e5:peers".to_vec();
        body.extend(std::iter::repeat_n(b'l', 1_000_000));
        body.extend(std::iter::repeat_n(b'e', 1_000_001));
        assert!(matches!(
            parse_http_response(&body),
            Err(TrackerError::InvalidResponse(_))
        ));
        // Moderate nesting is fine.
        let body = b"d8:intervali60e5:extrallllleeeeee";
        assert!(parse_http_response(body).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"dlie0123456789:xyz";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let _ = parse_http_response(&body);
        }
    }

    /// Regression (interop with opentracker): it answers without
    /// `Connection: close`, then closes. Two announces in quick succession
    /// must both reach it.
    #[tokio::test]
    async fn back_to_back_announces_to_a_tracker_that_closes_silently() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut served = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = b"d8:intervali900e5:peers0:e";
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body).await;
                // Like opentracker, never answer a second request on the
                // connection: read it (if the client reuses the connection)
                // and close.
                let _ = sock.read(&mut buf).await;
                drop(sock);
                served += 1;
                if served == 2 {
                    break;
                }
            }
            served
        });
        let mut t =
            HttpTracker::new(&Url::parse(&format!("http://127.0.0.1:{port}/announce")).unwrap())
                .unwrap();
        let c = client();
        let mut req = sample_request();
        req.event = Event::Completed;
        t.announce(&c, &req).await.unwrap();
        req.event = Event::Stopped;
        t.announce(&c, &req).await.unwrap();
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn announce_over_http() {
        let server = FakeHttp::start(|target| {
            if target.contains("trackerid=") {
                (
                    200,
                    b"d8:intervali120e5:peers6:\x01\x01\x01\x01\x00\x02e".to_vec(),
                )
            } else {
                (
                    200,
                    b"d10:tracker id4:T1D!8:intervali900e5:peers6:\x7f\x00\x00\x01\x1a\xe1e"
                        .to_vec(),
                )
            }
        })
        .await;
        let mut t = HttpTracker::new(&Url::parse(&server.url()).unwrap()).unwrap();
        let c = client();
        let r = tokio::time::timeout(Duration::from_secs(10), t.announce(&c, &sample_request()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        assert_eq!(t.tracker_id(), Some(&b"T1D!"[..]));

        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        let line = reqs[0].lines().next().unwrap();
        assert!(
            line.starts_with(&format!("GET /announce?info_hash={HASH_ENC}&peer_id=")),
            "{line}"
        );
        assert!(line.contains("&compact=1"), "{line}");
        assert!(reqs[0]
            .to_ascii_lowercase()
            .contains("user-agent: shoal/0.1"));

        // The tracker id is echoed next time.
        let r = t.announce(&c, &sample_request()).await.unwrap();
        assert_eq!(r.peers, vec!["1.1.1.1:2".parse().unwrap()]);
        let line2 = server.requests()[1].lines().next().unwrap().to_string();
        assert!(line2.contains("&trackerid=T1D%21"), "{line2}");
    }

    #[tokio::test]
    async fn http_error_status() {
        let server = FakeHttp::start(|_| (500, b"oops".to_vec())).await;
        let mut t = HttpTracker::new(&Url::parse(&server.url()).unwrap()).unwrap();
        let err = t.announce(&client(), &sample_request()).await.unwrap_err();
        assert!(matches!(err, TrackerError::HttpStatus(500)), "{err:?}");

        // An error status with a bencoded reason reports the reason.
        let server =
            FakeHttp::start(|_| (403, b"d14:failure reason12:unregisterede".to_vec())).await;
        let mut t = HttpTracker::new(&Url::parse(&server.url()).unwrap()).unwrap();
        let err = t.announce(&client(), &sample_request()).await.unwrap_err();
        assert!(
            matches!(err, TrackerError::Failure(ref r) if r == "unregistered"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn body_over_cap_rejected() {
        for with_length in [true, false] {
            let server = FakeHttp::start_with(
                |_| {
                    let mut body = b"d8:intervali60e5:peers5000000:".to_vec();
                    body.resize(body.len() + 5_000_000, 0);
                    body.push(b'e');
                    (200, body)
                },
                with_length,
            )
            .await;
            let mut t = HttpTracker::new(&Url::parse(&server.url()).unwrap()).unwrap();
            let err = tokio::time::timeout(
                Duration::from_secs(15),
                t.announce(&client(), &sample_request()),
            )
            .await
            .unwrap()
            .unwrap_err();
            assert!(
                matches!(err, TrackerError::ResponseTooLarge(MAX_RESPONSE_SIZE)),
                "{with_length}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn connection_refused_is_http_error() {
        let port = fake::dead_port().await;
        let url = Url::parse(&format!("http://127.0.0.1:{port}/announce")).unwrap();
        let mut t = HttpTracker::new(&url).unwrap();
        let err = t.announce(&client(), &sample_request()).await.unwrap_err();
        assert!(matches!(err, TrackerError::Http(_)), "{err:?}");
    }

    #[tokio::test]
    async fn slow_tracker_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/announce")).unwrap();
        let mut t = HttpTracker::new(&url).unwrap();
        let c = http_client(Duration::from_secs(1), Duration::from_millis(300)).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), t.announce(&c, &sample_request()))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, TrackerError::Timeout), "{err:?}");
        hold.abort();
    }

    #[test]
    fn rejects_bad_urls() {
        let u = Url::parse("udp://t.example:1").unwrap();
        assert!(matches!(
            HttpTracker::new(&u),
            Err(TrackerError::UnsupportedScheme(_))
        ));
    }
}
