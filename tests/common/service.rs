//! Talking to `shoal serve` over its HTTP API: raw HTTP/1.1 requests (so
//! a test controls every header and byte), JSON requests, polling the list,
//! and starting the service on free ports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, shoal_bin, wait_listening, Proc};

/// One HTTP/1.1 request with `Connection: close`; (status, head, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Generous: a 3 MB .torrent of 100,000 files takes seconds to add on a
    // busy machine.
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    // A refused upload may close before reading it all.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&resp)));
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = resp[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, head, body)
}

pub fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
    out
}

pub fn json(port: u16, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (bytes, headers): (Vec<u8>, Vec<(&str, &str)>) = match &body {
        Some(v) => (
            v.to_string().into_bytes(),
            vec![("Content-Type", "application/json")],
        ),
        None => (Vec::new(), vec![]),
    };
    let (status, _, body) = http(port, method, path, &headers, &bytes);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub fn torrent_of(list: &Value, hash: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|t| t["info_hash"] == hash)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls the list until `f` holds for torrent `hash`.
pub fn wait_for(port: u16, hash: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_within(Duration::from_secs(90), port, hash, what, f)
}

/// `wait_for` with another deadline.
pub fn wait_within(
    limit: Duration,
    port: u16,
    hash: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (_, list) = json(port, "GET", "/api/torrents", None);
        let t = torrent_of(&list, hash);
        if f(&t) {
            return t;
        }
        assert!(
            start.elapsed() < limit,
            "{hash}: not {what} after {limit:?}: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn complete(t: &Value) -> bool {
    t["progress"].as_f64() == Some(1.0) && t["state"] == "seeding"
}

pub struct Service {
    pub proc: Proc,
    pub port: u16,
}

pub fn serve(d: &Path, state: &Path, dl: &Path, extra: &[&str], name: &str) -> Service {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let peer_port = free_port().to_string();
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--state-dir",
        state.to_str().unwrap(),
        "--download-dir",
        dl.to_str().unwrap(),
        "--port",
        &peer_port,
    ];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(&args, d, name);
    wait_listening(port);
    Service { proc, port }
}

pub fn shoal(args: &[&str]) -> std::process::Output {
    std::process::Command::new(shoal_bin())
        .args(args)
        .env("SHOAL_NO_DHT", "1")
        .output()
        .unwrap()
}
