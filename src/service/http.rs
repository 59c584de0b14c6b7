//! What the API's HTTP server does before a handler sees a request:
//! connections with a deadline for their headers, request bodies read in
//! whole under deadlines and a cap on how many big ones are read at once,
//! and a limit on wrong tokens per source address.
//!
//! `axum::serve` sets no timer, so a client could send half a header, or
//! all but one byte of a 16 MB body, and keep its memory forever: 30 such
//! connections held 480 MB. Here a header must arrive within
//! [`HEADER_TIMEOUT`], a body may pause at most [`BODY_IDLE`] and take at
//! most [`BODY_TOTAL`], and only [`MAX_UPLOADS`] bodies larger than
//! [`SMALL_BODY`] are in memory at a time (others get 503 at once).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A request's headers must arrive within this (also the longest a kept-
/// alive connection waits idle for its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// A body that sends nothing for this long is dropped (408).
pub const BODY_IDLE: Duration = Duration::from_secs(15);
/// A body must be in within this (16 MiB at 140 kB/s).
pub const BODY_TOTAL: Duration = Duration::from_secs(120);
/// Bodies at most this long (every request but an upload) need no slot.
pub const SMALL_BODY: usize = 64 << 10;
/// Bigger bodies read at once, at most.
pub const MAX_UPLOADS: usize = 4;

/// Serves `app` on `listener` until the task is dropped: HTTP/1.1, with a
/// deadline on every request's headers. Each request carries its peer's
/// address (`ConnectInfo`), for the limit on wrong tokens.
pub async fn serve(listener: TcpListener, app: axum::Router) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, say: wait instead of spinning.
                tracing::warn!("API: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move {
                    let r: Result<Response, Infallible> =
                        tower_service::Service::call(&mut app, req).await;
                    r
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("API connection from {peer}: {e}");
            }
        });
    }
}

/// The slots for big bodies.
pub struct Uploads(Arc<Semaphore>);

impl Default for Uploads {
    fn default() -> Self {
        Uploads(Arc::new(Semaphore::new(MAX_UPLOADS)))
    }
}

fn refuse(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// The largest body `req` may have: a .torrent upload, or a little JSON.
fn body_cap(req: &Request) -> usize {
    let path = req.uri().path();
    if req.method() == Method::POST && path == "/api/torrents" {
        crate::service::MAX_TORRENT_SIZE
    } else if req.method() == Method::POST && path.starts_with("/transmission/rpc") {
        // torrent-add carries the .torrent in base64, in JSON.
        crate::service::MAX_TORRENT_SIZE / 3 * 4 + SMALL_BODY
    } else if req.method() == Method::POST && path == "/api/v2/torrents/add" {
        // .torrent files in a multipart form, with its headers.
        crate::service::MAX_TORRENT_SIZE + SMALL_BODY
    } else {
        SMALL_BODY
    }
}

/// Reads the request's body in whole, under the deadlines and caps, and
/// hands the request on with it; the handlers then never wait on a client.
/// Memory taken for a big body is given back to the system once the
/// request is over.
pub async fn read_body(State(uploads): State<Arc<Uploads>>, req: Request, next: Next) -> Response {
    let cap = body_cap(&req);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.is_some_and(|n| n > cap as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} KiB", cap >> 10),
        );
    }
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(req).await;
    }
    let big = chunked && cap > SMALL_BODY || declared.is_some_and(|n| n > SMALL_BODY as u64);
    let _slot = if big {
        match uploads.0.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let mut r = refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{MAX_UPLOADS} uploads are being received already; try again shortly"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return r;
            }
        }
    } else {
        None
    };
    let (parts, body) = req.into_parts();
    let want = declared.map_or(SMALL_BODY, |n| n as usize).min(cap);
    let bytes = match collect(body, want, cap).await {
        Ok(b) => b,
        Err(r) => {
            if big {
                give_back_memory();
            }
            return r;
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if big {
        give_back_memory();
    }
    response
}

/// The body's bytes, at most `cap`, each chunk within `BODY_IDLE` and all
/// within `BODY_TOTAL`.
async fn collect(body: Body, want: usize, cap: usize) -> Result<Bytes, Response> {
    let deadline = tokio::time::Instant::now() + BODY_TOTAL;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(want);
    loop {
        let wait = deadline.min(tokio::time::Instant::now() + BODY_IDLE);
        let chunk = match tokio::time::timeout_at(wait, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body: {e}"),
                ))
            }
            Err(_) => {
                return Err(refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive in time ({} s without a byte, {} s in all)",
                        BODY_IDLE.as_secs(),
                        BODY_TOTAL.as_secs()
                    ),
                ))
            }
        };
        if buf.len() + chunk.len() > cap {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} KiB", cap >> 10),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
}

/// Returns freed heap memory to the system. A big body lives on the heap
/// (allocations under 64 MiB are not mapped of their own, see `main`), and
/// glibc keeps what was freed for later unless told: after 30 uploads of
/// 16 MB the process would stay 480 MB large.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Wrong tokens allowed from one source in a burst, and how fast it earns
/// another try: guessing a token at 0.5 a second is hopeless.
const BURST: f64 = 10.0;
const REFILL_PER_SEC: f64 = 0.5;
/// Sources remembered at most; the fullest buckets go first.
const MAX_SOURCES: usize = 4096;

/// Tries per source address (an IPv6 source by its /64, which one machine
/// usually has whole): a token bucket that only wrong tokens drain.
#[derive(Default)]
pub struct Attempts {
    sources: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// The address that counts as one source.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl Attempts {
    fn bucket(
        map: &mut HashMap<IpAddr, (f64, Instant)>,
        ip: IpAddr,
        now: Instant,
    ) -> &mut (f64, Instant) {
        let b = map.entry(source_of(ip)).or_insert((BURST, now));
        let earned = now.saturating_duration_since(b.1).as_secs_f64() * REFILL_PER_SEC;
        *b = ((b.0 + earned).min(BURST), now);
        b
    }

    /// None while `ip` may try a token; else how long until it may. Only
    /// sources that sent a wrong token are remembered.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let &(tokens, at) = map.get(&source_of(ip))?;
        let tokens = tokens + now.saturating_duration_since(at).as_secs_f64() * REFILL_PER_SEC;
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / REFILL_PER_SEC))
    }

    /// Counts a wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOURCES {
            // Sources back to a full bucket are forgotten at no cost.
            map.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * REFILL_PER_SEC < BURST
            });
            if map.len() >= MAX_SOURCES {
                map.clear();
            }
        }
        let b = Attempts::bucket(&mut map, ip, now);
        b.0 = (b.0 - 1.0).max(0.0);
    }
}

/// The 429 for a source that tried too many wrong tokens.
pub fn too_many(ip: IpAddr, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from {ip}; try again in {secs} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The peer address of a request served by [`serve`].
pub fn peer_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_tokens_are_limited_per_source() {
        let a = Attempts::default();
        let t0 = Instant::now();
        let me: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(a.blocked(me, t0), None);
            a.failed(me, t0);
        }
        let wait = a.blocked(me, t0).expect("blocked after a burst");
        assert!(wait <= Duration::from_secs(2), "{wait:?}");
        assert_eq!(a.blocked(other, t0), None, "others are not held up");
        // One more try earned in 2 s, not more.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(a.blocked(me, t1), None);
        a.failed(me, t1);
        assert!(a.blocked(me, t1).is_some());
        // An IPv6 /64 counts as one source.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2:3".parse().unwrap();
        for _ in 0..10 {
            a.failed(v6a, t0);
        }
        assert!(a.blocked(v6b, t0).is_some());
    }
}
