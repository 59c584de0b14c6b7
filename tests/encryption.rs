//! Encrypted connections (MSE/PE, `--encryption`) against the real binary:
//! shoal↔shoal with RC4 required, hostile MSE peers, and the interop cells
//! with Transmission (`"encryption": 2`) and aria2 (`--bt-require-crypto`)
//! both ways. Where shoal dials, the connection goes through a relay in the
//! test that reads every byte: no plain handshake from a shoal and no
//! sample of the torrent's content may cross it, so "encrypted" is checked
//! on the wire, not taken from a log (and a plain attempt of the other
//! client's own, which shoal refuses, is not mistaken for a leak). The interop cells need the programs of `.ci/deps`
//! (`SHOAL_SKIP_INTEROP=1` skips them); docs/interop.md has the rows.

mod common;
#[path = "common/interop.rs"]
#[allow(dead_code)]
mod interop;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{make_tree, tail, Proc};
use interop::*;
use shoal::peer::mse::{self, Policy};
use shoal::peer::wire::{self, Handshake, Message};
use tokio::io::AsyncReadExt;

const FILES: &[(&str, usize)] = &[
    ("pack/a.bin", 3_000_001),
    ("pack/b.bin", 2_500_000),
    ("pack/c.txt", 4_321),
];
const TOTAL: u64 = 5_504_322;
const PIECE: u32 = 64 * 1024;
const PROTOCOL: &[u8] = b"\x13BitTorrent protocol";
const TRANSFER: Duration = Duration::from_secs(90);
const SEEDER_UP: Duration = Duration::from_secs(30);

/// What a relay saw, both directions together.
#[derive(Default, Debug)]
struct Seen {
    connections: usize,
    /// Bytes towards the relay's target, and back.
    to_target: u64,
    from_target: u64,
    /// The peer ids of the plain handshakes that crossed (either way).
    plain_from: Vec<String>,
    /// A piece of the torrent's content crossed in the clear.
    clear_payload: bool,
}

/// The peer-id prefix of every shoal.
const SHOAL_ID: &[u8] = b"-SH";

/// A TCP relay on a free port in front of `target` that copies bytes both
/// ways and looks at each of them: for plain handshakes (and whose peer
/// id they carry), and for `needles`, pieces of the torrent's content,
/// which an RC4 stream never shows.
struct Relay {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Relay {
    fn start(target: u16, needles: Vec<Vec<u8>>) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        let needles = Arc::new(needles);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let Ok(t) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                s2.lock().unwrap().connections += 1;
                let (c2, t2) = (c.try_clone().unwrap(), t.try_clone().unwrap());
                let (sa, sb) = (s2.clone(), s2.clone());
                let (na, nb) = (needles.clone(), needles.clone());
                std::thread::spawn(move || pump(c, t, sa, &na, true));
                std::thread::spawn(move || pump(t2, c2, sb, &nb, false));
            }
        });
        Relay { port, seen }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Panics unless at least `bytes` went one way, no plain handshake
    /// from a shoal crossed, and no piece of the content crossed in the
    /// clear. (A plain attempt of the other client's own, which shoal
    /// refuses, is not a leak of ours: it is only reported.)
    fn assert_encrypted(&self, what: &str, bytes: u64) {
        if let Some(why) = self.not_encrypted(bytes) {
            panic!("{what}: {why}");
        }
        eprintln!("{what}: relay saw {:?}", self.seen.lock().unwrap());
    }

    /// What `assert_encrypted` finds wrong, if anything.
    fn not_encrypted(&self, bytes: u64) -> Option<String> {
        let s = self.seen.lock().unwrap();
        if s.connections == 0 {
            return Some("nothing went through the relay".into());
        }
        if s.to_target.max(s.from_target) < bytes {
            return Some(format!("the data did not go through the relay: {s:?}"));
        }
        if s.plain_from
            .iter()
            .any(|id| id.as_bytes().starts_with(SHOAL_ID))
        {
            return Some(format!(
                "shoal sent a plain BitTorrent handshake across the relay: {s:?}"
            ));
        }
        if s.clear_payload {
            return Some(format!(
                "the torrent's content crossed the relay unencrypted: {s:?}"
            ));
        }
        None
    }
}

/// 32-byte samples of the content of the files under `src` (one from
/// inside each of its first blocks' worth of every file over 64 KiB).
fn needles(src: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (path, len) in FILES {
        if *len < 1 << 16 {
            continue;
        }
        let bytes = std::fs::read(src.join(path)).unwrap();
        for at in [1000, len / 2 + 1000] {
            out.push(bytes[at..at + 32].to_vec());
        }
    }
    out
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    seen: Arc<Mutex<Seen>>,
    needles: &[Vec<u8>],
    towards: bool,
) {
    let mut buf = vec![0u8; 64 << 10];
    // The end of the previous chunk, so a handshake or sample split across
    // reads is found: at least a whole handshake's length.
    let keep = Handshake::LEN + 32;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let mut ids = Vec::new();
        for (i, w) in carry.windows(PROTOCOL.len()).enumerate() {
            if w == PROTOCOL && i + Handshake::LEN <= carry.len() {
                ids.push(String::from_utf8_lossy(&carry[i + 48..i + 68]).into_owned());
            }
        }
        let clear = needles
            .iter()
            .any(|needle| carry.windows(needle.len()).any(|w| w == &needle[..]));
        carry.drain(..carry.len().saturating_sub(keep));
        {
            let mut s = seen.lock().unwrap();
            for id in ids {
                if !s.plain_from.contains(&id) {
                    s.plain_from.push(id);
                }
            }
            s.clear_payload |= clear;
            if towards {
                s.to_target += n as u64;
            } else {
                s.from_target += n as u64;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn make_data(d: &Path) -> PathBuf {
    let src = d.join("src");
    make_tree(&src, FILES);
    src
}

/// `shoal create` of `src/pack`, announcing to `tracker` (none: the peers
/// only meet through `--peer`).
fn torrent(d: &Path, src: &Path, tracker: Option<&str>) -> PathBuf {
    let trackers: Vec<String> = tracker.into_iter().map(str::to_string).collect();
    common::create_torrent(&src.join("pack"), &d.join("pack.torrent"), &trackers, PIECE)
}

fn shoal_seeder(d: &Path, t: &Path, src: &Path, name: &str, extra: &[&str]) -> (Proc, u16) {
    let port = common::free_port();
    let port_s = port.to_string();
    let mut args = vec![
        "seed",
        t.to_str().unwrap(),
        "--from",
        src.to_str().unwrap(),
        "--port",
        &port_s,
        "--json",
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args, d, name);
    common::wait_listening(port);
    (p, port)
}

fn shoal_leecher(d: &Path, t: &Path, name: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let out = d.join(name);
    let port = common::free_port().to_string();
    let mut args = vec![
        "download",
        t.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--port",
        &port,
        "--json",
    ];
    args.extend_from_slice(extra);
    (Proc::spawn(&args, d, name), out)
}

fn finish_download(p: &mut Proc, what: &str) {
    let status = p.wait(TRANSFER);
    assert!(
        status.success(),
        "{what} failed ({status}):\n{}",
        tail(&p.stderr(), 40)
    );
    let done = p.done_event();
    assert_eq!(done["have_bytes"].as_u64(), Some(TOTAL), "{what}: {done}");
}

fn assert_log(p: &Proc, what: &str, needle: &str) {
    let log = p.stderr();
    assert!(
        log.contains(needle),
        "{what}: no `{needle}` in the log:\n{}",
        tail(&log, 40)
    );
}

/// shoal → shoal, both `--encryption require`, through the relay: the files
/// arrive whole, and the wire never shows the plain handshake. A leecher
/// with `--encryption plain` gets nothing from that seeder.
#[test]
fn shoal_to_shoal_with_rc4_required() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = make_data(d);
    let t = torrent(d, &src, None);
    let (mut seeder, port) = shoal_seeder(d, &t, &src, "seeder", &["--encryption", "require"]);
    let relay = Relay::start(port, needles(&src));
    let (mut leech, out) = shoal_leecher(
        d,
        &t,
        "leecher",
        &["--peer", &relay.addr(), "--encryption", "require"],
    );
    finish_download(&mut leech, "require leecher");
    common::assert_same_tree(&src.join("pack"), &out.join("pack"));
    relay.assert_encrypted("shoal↔shoal require", TOTAL);
    assert_log(
        &leech,
        "require leecher",
        "encrypted handshake, RC4 selected",
    );

    let (mut plain, out) = shoal_leecher(
        d,
        &t,
        "plain-leecher",
        &[
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--encryption",
            "plain",
            "--stall-timeout",
            "5",
        ],
    );
    let status = plain.wait(Duration::from_secs(60));
    assert!(
        !status.success(),
        "a plain leecher got data from a require seeder"
    );
    assert!(plain.stdout().contains("stalled"), "{}", plain.stdout());
    drop(out);
    assert_log(&seeder, "seeder", "plain-text handshake refused");
    assert_running(&mut seeder, "seeder");
}

/// The relay's check can fail: a plain shoal↔shoal transfer through it
/// is caught twice over, by shoal's plain handshake and by the content
/// crossing in the clear.
#[test]
fn the_relay_catches_a_plain_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = make_data(d);
    let t = torrent(d, &src, None);
    let (_seeder, port) = shoal_seeder(d, &t, &src, "seeder", &["--encryption", "plain"]);
    let relay = Relay::start(port, needles(&src));
    let (mut leech, _) = shoal_leecher(
        d,
        &t,
        "leecher",
        &["--peer", &relay.addr(), "--encryption", "plain"],
    );
    finish_download(&mut leech, "plain leecher");
    let why = relay.not_encrypted(TOTAL);
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("plain BitTorrent handshake")),
        "a plain transfer passed for encrypted: {why:?}"
    );
    let s = relay.seen.lock().unwrap();
    assert!(s.clear_payload, "{s:?}");
    assert_eq!(
        s.plain_from
            .iter()
            .filter(|id| id.as_bytes().starts_with(SHOAL_ID))
            .count(),
        2,
        "both shoals' plain handshakes: {s:?}"
    );
}

/// Reads until the peer closes or `limit` passes; true if it closed.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Hostile MSE peers against a seeder (default policy): junk, a valid
/// exchange naming another torrent, a peer that stops after its key. Each
/// is dropped (the last at the handshake deadline), and afterwards an RC4
/// session with the same seeder works: its handshake and first message
/// decrypt right.
#[test]
fn hostile_mse_peers_are_dropped_and_rc4_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = make_data(d);
    let t = torrent(d, &src, None);
    let ih = common::info_hash(&t);
    let (mut seeder, port) = shoal_seeder(d, &t, &src, "seeder", &[]);
    // Serving (its check done), so the real session at the end cannot
    // meet a torrent not running yet.
    drop(common::fake::Fake::connect(
        port,
        ih,
        *b"-XX0001-readyprobe00",
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dial = || tokio::net::TcpStream::connect(("127.0.0.1", port));

        // Junk: no marker within the longest padding.
        let mut s = dial().await.unwrap();
        let junk: Vec<u8> = (0..3000u32).map(|i| (i * 31 + 7) as u8).collect();
        tokio::io::AsyncWriteExt::write_all(&mut s, &junk)
            .await
            .unwrap();
        assert!(
            closed_within(&mut s, Duration::from_secs(10)).await,
            "junk kept"
        );

        // A correct exchange for a torrent not running there.
        let mut s = dial().await.unwrap();
        let r = mse::initiate(&mut s, &[0xee; 20], Policy::Prefer, b"").await;
        assert!(r.is_err(), "an exchange for another torrent completed");

        // A key, then silence: dropped at the 20 s handshake deadline.
        let mut s = dial().await.unwrap();
        let key = mse::KeyPair::generate().public;
        tokio::io::AsyncWriteExt::write_all(&mut s, &key)
            .await
            .unwrap();
        let start = Instant::now();
        assert!(
            closed_within(&mut s, Duration::from_secs(30)).await,
            "stalled peer kept"
        );
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "dropped before its deadline"
        );

        // A real RC4 session still works.
        let ours = Handshake::new(ih, *b"-XX0001-encrypted000");
        let mut tcp = dial().await.unwrap();
        let rc4 = mse::initiate(&mut tcp, &ih, Policy::Require, &ours.encode())
            .await
            .unwrap();
        assert!(rc4.is_some());
        let mut s = mse::Stream::new(tcp, rc4);
        let mut hs = [0u8; 68];
        s.read_exact(&mut hs).await.unwrap();
        let theirs = Handshake::decode(&hs).unwrap();
        assert_eq!(theirs.info_hash, ih);
        let mut buf = bytes::BytesMut::new();
        let first = loop {
            if let Some(m) = wire::decode(&mut buf, 1 << 20).unwrap() {
                break m;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed");
        };
        assert!(
            matches!(
                first,
                Message::HaveAll | Message::Bitfield(_) | Message::Extended { .. }
            ),
            "{first:?}"
        );
    });
    assert_running(&mut seeder, "seeder");
}

// ------------------------------------------------------------ interop cells

fn transmission_requiring(d: &Path) -> Transmission {
    Transmission::start_with(d, "transmission", serde_json::json!({"encryption": 2}))
}

/// Flags that make aria2 take nothing but RC4.
fn aria2_rc4_only() -> Vec<String> {
    vec![
        "--bt-require-crypto=true".into(),
        "--bt-min-crypto-level=arc4".into(),
    ]
}

/// Transmission requiring encryption seeds; shoal (default `prefer`) dials
/// it through the relay and downloads.
#[test]
fn shoal_leeches_from_transmission_requiring_encryption() {
    if !should_run(
        "shoal_leeches_from_transmission_mse",
        &[TR_DAEMON, TR_REMOTE],
    ) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_transmission_mse");
    let d = cell.path();
    let src = make_data(d);
    let t = torrent(d, &src, None);
    let tr = transmission_requiring(d);
    tr.add(&t, &src);
    tr.wait_complete("Transmission to check the data", SEEDER_UP);
    let relay = Relay::start(tr.peer_port, needles(&src));
    let (mut leech, out) = shoal_leecher(d, &t, "shoal-leecher", &["--peer", &relay.addr()]);
    finish_download(&mut leech, "shoal leecher");
    assert_tree_matches(&src, &out, false);
    relay.assert_encrypted("shoal ← Transmission", TOTAL);
    assert_log(&leech, "shoal leecher", "encrypted handshake, RC4 selected");
    assert_log(&leech, "shoal leecher", ": client Transmission ");
}

/// Transmission requiring encryption leeches; shoal (`--encryption
/// require`) seeds and dials it through the relay (Transmission 3.00 would
/// not dial a loopback address anyway).
#[test]
fn transmission_requiring_encryption_leeches_from_shoal() {
    if !should_run(
        "transmission_mse_leeches_from_shoal",
        &[TR_DAEMON, TR_REMOTE],
    ) {
        return;
    }
    let cell = Cell::new("transmission_mse_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let t = torrent(d, &src, None);
    let tr = transmission_requiring(d);
    let dl = d.join("transmission-dl");
    std::fs::create_dir_all(&dl).unwrap();
    tr.add(&t, &dl);
    let relay = Relay::start(tr.peer_port, needles(&src));
    let (mut seeder, _) = shoal_seeder(
        d,
        &t,
        &src,
        "shoal-seeder",
        &["--peer", &relay.addr(), "--encryption", "require"],
    );
    tr.wait_complete("Transmission to download from shoal", TRANSFER);
    assert_tree_matches(&src, &dl, true);
    relay.assert_encrypted("Transmission ← shoal", TOTAL);
    assert_log(&seeder, "shoal seeder", ": client Transmission ");
    assert_running(&mut seeder, "shoal seeder");
}

/// aria2 taking only RC4 seeds (it needs a tracker); shoal leeches. aria2
/// refuses anything but RC4, so the download completing is the proof; the
/// log says which side selected it.
#[test]
fn shoal_leeches_from_aria2_requiring_rc4() {
    if !should_run("shoal_leeches_from_aria2_mse", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_aria2_mse");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = torrent(d, &src, Some(&tracker.http_url()));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let (mut aria, _) = aria2_seeder(d, "aria2-seeder", &t, &src, &aria2_rc4_only());
    tracker.wait_scrape(&hash, "aria2 to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    let (mut leech, out) = shoal_leecher(d, &t, "shoal-leecher", &[]);
    finish_download(&mut leech, "shoal leecher");
    assert_tree_matches(&src, &out, false);
    assert_log(&leech, "shoal leecher", ": client aria2/");
    assert_log(&leech, "shoal leecher", "RC4 selected");
    assert_running(&mut aria, "aria2 seeder");
}

/// aria2 taking only RC4 leeches from a shoal seeder (`--encryption
/// require`) that it finds through the tracker.
#[test]
fn aria2_requiring_rc4_leeches_from_shoal() {
    if !should_run("aria2_mse_leeches_from_shoal", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("aria2_mse_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = torrent(d, &src, Some(&tracker.http_url()));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let (mut seeder, port) =
        shoal_seeder(d, &t, &src, "shoal-seeder", &["--encryption", "require"]);
    wait_for(
        "shoal's `started`",
        SEEDER_UP,
        || (!tracker.events_of(port).is_empty()).then_some(()),
        || tail(&seeder.stderr(), 20),
    );
    let out = d.join("aria2-dl");
    let (mut aria, _) = aria2_leecher_with(d, "aria2-leecher", &t, &out, &aria2_rc4_only());
    let status = wait_exit(&mut aria, "aria2 leecher", TRANSFER);
    assert!(
        status.success(),
        "aria2 leecher exited with {status}:\n{}",
        tail(&aria.stdout(), 30)
    );
    assert_tree_matches(&src, &out, false);
    assert_log(&seeder, "shoal seeder", ": client aria2/");
    assert_log(&seeder, "shoal seeder", "RC4 selected");
    assert_running(&mut seeder, "shoal seeder");
}
