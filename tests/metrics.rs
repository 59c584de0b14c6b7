//! `GET /metrics` of `shoal serve`: the Prometheus text format, checked by
//! the real `promtool check metrics` (Debian's prometheus, installed by
//! .ci/deps), its values after a real download from a local seeder with a
//! lying peer beside it (hash failures), and the API's access rules.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::service::*;
use common::*;
use shoal::peer::wire::{self, Handshake, Message};

const PIECE: usize = 32 * 1024;

/// The metrics as text, with `headers`.
fn metrics(port: u16, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, _, body) = http(port, "GET", "/metrics", headers, b"");
    (status, String::from_utf8(body).unwrap())
}

/// Sample lines (name with labels → value).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// `promtool check metrics` on `text`: its output, empty when clean.
fn promtool(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt prometheus; .ci/deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{text}");
    said.trim().to_string()
}

/// A peer that has everything and serves every block with its first byte
/// flipped (as in tests/corrupt_peer.rs).
fn liar(listener: TcpListener, content: Vec<u8>) {
    for conn in listener.incoming() {
        let Ok(s) = conn else { return };
        let content = content.clone();
        std::thread::spawn(move || {
            let _ = lie(s, &content);
        });
    }
}

fn lie(mut s: TcpStream, content: &[u8]) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    let theirs = Handshake::decode(&hs).map_err(std::io::Error::other)?;
    s.write_all(&Handshake::new(theirs.info_hash, *b"-LI0001-liarliarliar").encode())?;
    let pieces = content.len().div_ceil(PIECE);
    let mut bits = vec![0xffu8; pieces.div_ceil(8)];
    let spare = bits.len() * 8 - pieces;
    if let Some(last) = bits.last_mut() {
        *last &= !((1u16 << spare) - 1) as u8;
    }
    let mut out = BytesMut::new();
    wire::encode(&Message::Bitfield(bits.into()), &mut out);
    wire::encode(&Message::Unchoke, &mut out);
    s.write_all(&out)?;
    let (mut buf, mut chunk) = (BytesMut::new(), [0u8; 65536]);
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(m) = wire::decode(&mut buf, 1 << 20).map_err(std::io::Error::other)? {
            if let Message::Request(b) = m {
                let start = b.index as usize * PIECE + b.begin as usize;
                let mut data = content[start..start + b.length as usize].to_vec();
                data[0] ^= 0xff;
                out.clear();
                let piece = Message::Piece {
                    index: b.index,
                    begin: b.begin,
                    data: data.into(),
                };
                wire::encode(&piece, &mut out);
                s.write_all(&out)?;
            }
        }
    }
}

/// Announces `port` for `hash` to the test tracker, as a seed.
fn announce(tracker: &Tracker, hash: [u8; 20], port: u16) {
    let q = percent_encoding::percent_encode(&hash, percent_encoding::NON_ALPHANUMERIC);
    let path = format!("/announce?info_hash={q}&peer_id=-LI0001-liarliarliar&port={port}&left=0");
    let (status, _, _) = http(tracker.port, "GET", &path, &[], b"");
    assert_eq!(status, 200);
}

#[test]
fn metrics_pass_promtool_and_count_a_real_download() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = 800_000usize;
    make_tree(&d.join("src"), &[("one.bin", size)]);
    let tracker = Tracker::start();
    let t = create_torrent(
        &d.join("src/one.bin"),
        &d.join("one.torrent"),
        &[tracker.url()],
        PIECE as u32,
    );
    let hash = info_hash(&t);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let liar_port = listener.local_addr().unwrap().port();
    let content = std::fs::read(d.join("src/one.bin")).unwrap();
    std::thread::spawn(move || liar(listener, content));
    announce(&tracker, hash, liar_port);
    // The honest seeder is slow, so the liar gets asked for plenty.
    let (_seeder, _) = seeder(
        d,
        &t,
        &d.join("src"),
        &["--quiet", "--upload-limit", "400000"],
    );
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &[], "serve");
    let port = svc.port;

    // Empty: clean, and every family there at 0.
    let (status, text) = metrics(port, &[]);
    assert_eq!(status, 200);
    assert_eq!(promtool(&text), "");
    let m = samples(&text);
    assert_eq!(m["shoal_torrents{state=\"seeding\"}"], 0.0);
    assert_eq!(m["shoal_downloaded_bytes_total"], 0.0);

    let (status, _, body) = http(
        port,
        "POST",
        "/api/torrents",
        &[("Content-Type", "application/x-bittorrent")],
        &std::fs::read(&t).unwrap(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // Both peers come from the tracker; some of the data is lies.
    let h = hex::encode(hash);
    wait_within(Duration::from_secs(120), port, &h, "complete", complete);
    assert_eq!(std::fs::read(dl.join("one.bin")).unwrap().len(), size);

    let (_, text) = metrics(port, &[]);
    assert_eq!(promtool(&text), "");
    let m = samples(&text);
    assert_eq!(m["shoal_torrents{state=\"seeding\"}"], 1.0, "{text}");
    assert_eq!(m["shoal_torrents{state=\"downloading\"}"], 0.0, "{text}");
    assert!(m["shoal_downloaded_bytes_total"] >= size as f64, "{text}");
    assert!(m["shoal_hash_failures_total"] >= 1.0, "{text}");
    assert_eq!(m["shoal_trackers{status=\"working\"}"], 1.0, "{text}");
    assert_eq!(m["shoal_dht_enabled"], 0.0);
    for src in ["tracker", "dht", "pex", "lsd", "manual", "incoming"] {
        assert!(
            m.contains_key(&format!(
                "shoal_peers{{source=\"{src}\",transport=\"tcp\"}}"
            )),
            "{src}: {text}"
        );
    }
    // The global limits show as set over the API.
    let (status, _) = json(
        port,
        "PUT",
        "/api/limits",
        Some(serde_json::json!({"download": 123000, "upload": null})),
    );
    assert_eq!(status, 200);
    let m = samples(&metrics(port, &[]).1);
    assert_eq!(m["shoal_rate_limit_bytes{direction=\"down\"}"], 123000.0);
    assert_eq!(m["shoal_rate_limit_bytes{direction=\"up\"}"], 0.0);
}

#[test]
fn metrics_take_the_token_as_the_api_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &["--token", "s3cret"], "serve");
    let port = svc.port;
    assert_eq!(metrics(port, &[]).0, 401);
    assert_eq!(metrics(port, &[("Authorization", "Bearer wrong")]).0, 401);
    let (status, text) = metrics(port, &[("Authorization", "Bearer s3cret")]);
    assert_eq!(status, 200);
    assert_eq!(promtool(&text), "");
    // Prometheus' basic_auth: the token as the password.
    let basic = format!(
        "Basic {}",
        data_encoding::BASE64.encode(b"prometheus:s3cret")
    );
    assert_eq!(metrics(port, &[("Authorization", &basic)]).0, 200);
    let (status, _) = metrics(port, &[("Host", "evil.example"), ("Authorization", &basic)]);
    assert_eq!(status, 403);
}
