//! Magnet downloads: the metadata comes from peers (BEP 9), is checked
//! against the info-hash, and the download goes on as with a .torrent.
//! A peer that lies about the metadata is dropped and the others serve.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;

fn magnet(t: &Path, peers: &[u16]) -> String {
    let hash = hex::encode(info_hash(t));
    let mut m = format!("magnet:?xt=urn:btih:{hash}&dn=pack");
    for p in peers {
        m.push_str(&format!("&x.pe=127.0.0.1:{p}"));
    }
    m
}

/// The data under `d/src/pack` and its torrent, `d/pack.torrent`.
fn pack(d: &Path) -> std::path::PathBuf {
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 300_000), ("pack/sub/b.bin", 123_457)],
    );
    create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384)
}

fn seeded(d: &Path) -> (std::path::PathBuf, Proc, u16) {
    let t = pack(d);
    let (p, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    (t, p, port)
}

#[test]
fn magnet_download_from_a_shoal_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, _seed, port) = seeded(d);
    let saved = d.join("saved.torrent");
    let mut p = Proc::spawn(
        &[
            "download",
            &magnet(&t, &[port]),
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--save-torrent",
            saved.to_str().unwrap(),
            "--json",
        ],
        d,
        "magnet",
    );
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    assert_same_tree(&d.join("src"), &d.join("out"));
    let ev = last_event(&p.stdout(), "metadata").expect("a metadata event");
    assert_eq!(ev["name"], "pack");
    assert_eq!(info_hash(&saved), info_hash(&t));
}

/// A fake peer that speaks BEP 10/9 and answers every metadata request
/// with `body` (sized as the real metadata, or claiming `size`).
fn lying_peer(info_hash: [u8; 20], size: u64, body: Vec<u8>) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        // A peer without encryption: shoal's encrypted (MSE) attempt is
        // dropped, and its plain-text retry is served the lies.
        loop {
            let Ok((mut s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            match serve_lies(&mut s, info_hash, size, &body) {
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
                _ => return,
            }
        }
    });
    (port, h)
}

fn serve_lies(
    s: &mut TcpStream,
    info_hash: [u8; 20],
    size: u64,
    body: &[u8],
) -> std::io::Result<()> {
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    if hs[..20] != *b"\x13BitTorrent protocol" {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut out = vec![19];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    out.extend_from_slice(&info_hash);
    out.extend_from_slice(b"-XX0001-liarliarliar");
    let ext = format!("d1:md11:ut_metadatai7ee13:metadata_sizei{size}ee");
    let mut msg = vec![20, 0];
    msg.extend_from_slice(ext.as_bytes());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    s.write_all(&out)?;
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut m = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut m)?;
        // Requests come under the id we gave (7); answers go under the
        // one shoal gave in its handshake (3).
        if m.len() < 2 || m[0] != 20 || m[1] != 7 {
            continue;
        }
        let text = String::from_utf8_lossy(&m[2..]).into_owned();
        let piece: usize = text
            .split("5:piecei")
            .nth(1)
            .and_then(|r| r.split('e').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let chunk = &body[(piece * 16384).min(body.len())..((piece + 1) * 16384).min(body.len())];
        let head = format!("d8:msg_typei1e5:piecei{piece}e10:total_sizei{size}ee");
        let mut msg = vec![20, 3];
        msg.extend_from_slice(head.as_bytes());
        msg.extend_from_slice(chunk);
        let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&msg);
        s.write_all(&frame)?;
    }
}

/// Wrong metadata of the right size: its hash does not match, the liar is
/// dropped with a log line, and the honest seeder's copy wins.
#[test]
fn a_peer_sending_bad_metadata_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = pack(d);
    let size = metadata_size(&t);
    let (liar, h) = lying_peer(info_hash(&t), size, vec![b'x'; size as usize]);
    // Only the liar answers at first; the honest seeder comes up a moment
    // later (its address refused until then, and tried again).
    let port = free_port();
    let mut p = Proc::spawn(
        &[
            "download",
            &magnet(&t, &[liar, port]),
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--json",
        ],
        d,
        "magnet",
    );
    std::thread::sleep(Duration::from_millis(500));
    let _seed = Proc::spawn(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--quiet",
        ],
        d,
        "seeder",
    );
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    assert_same_tree(&d.join("src"), &d.join("out"));
    let err = p.stderr();
    assert!(
        err.contains(&format!(
            "127.0.0.1:{liar}: assembled metadata does not match the info-hash"
        )),
        "{err}"
    );
    drop(p);
    let _ = h.join();
}

/// A peer claiming metadata over the 16 MiB cap is dropped before any is
/// buffered; with no other peer the download fails with the reason.
#[test]
fn oversized_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hash = [7u8; 20];
    let (liar, h) = lying_peer(hash, 1 << 30, Vec::new());
    let o = std::process::Command::new(shoal_bin())
        .args([
            "download",
            &format!(
                "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{liar}",
                hex::encode(hash)
            ),
            "-o",
            d.join("out").to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("over the 16777216-byte cap"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!d.join("out").exists() || list_files(&d.join("out")).is_empty());
    let _ = h.join();
}

/// The size of the info dictionary of torrent `t` (what an honest peer
/// advertises as `metadata_size`).
fn metadata_size(t: &Path) -> u64 {
    let m = shoal::metainfo::Metainfo::from_file(t).unwrap();
    m.info_bytes().unwrap().len() as u64
}

/// Four peers that advertise the metadata and then only send keep-alives
/// come first in the magnet; the honest seeder is the fifth. They held all
/// four metadata slots forever (any byte reset the read timeout), so the
/// seeder was never dialled. A peer that brings nothing for a few seconds
/// now leaves its slot to the next one.
#[test]
fn four_silent_metadata_peers_do_not_block_the_fifth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, _seed, port) = seeded(d);
    let secs = past_four_silent_peers(d, &t, &[port], None);
    eprintln!("complete in {secs:.1}s");
}

/// Downloads the magnet of `t` into `d/out`, four silent peers first in its
/// `x.pe`, then `after`; with the DHT through `boot` if given. Returns the
/// seconds it took.
fn past_four_silent_peers(d: &Path, t: &Path, after: &[u16], boot: Option<&str>) -> f64 {
    let silent: Vec<fake::SilentPeer> = (0..4)
        .map(|_| fake::SilentPeer::start(info_hash(t), metadata_size(t)))
        .collect();
    let mut peers: Vec<u16> = silent.iter().map(|s| s.port).collect();
    peers.extend_from_slice(after);
    let (m, out, port) = (magnet(t, &peers), d.join("out"), free_port().to_string());
    let state = d.join("state-leech");
    let mut args = vec!["download", &m, "-o", out.to_str().unwrap(), "--port", &port];
    args.push("--json");
    let start = std::time::Instant::now();
    let mut p = match boot {
        Some(b) => {
            let dht = ["--dht-bootstrap", b, "--state-dir", state.to_str().unwrap()];
            args.extend_from_slice(&dht);
            Proc::spawn_dht(&args, d, "magnet")
        }
        None => Proc::spawn(&args, d, "magnet"),
    };
    assert!(
        p.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&p.stderr(), 30)
    );
    let secs = start.elapsed().as_secs_f64();
    assert_same_tree(&d.join("src"), &out);
    let requests: Vec<u64> = silent
        .iter()
        .map(|s| s.requests.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    eprintln!("requests the silent peers got: {requests:?}");
    secs
}

/// The same with the honest seeder known only from the DHT (its
/// `get_peers` values), the four silent peers from the magnet.
#[test]
fn four_silent_metadata_peers_do_not_block_a_dht_peer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = pack(d);
    let hash = info_hash(&t);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let boot = mainline::Dht::builder()
        .server_mode()
        .no_bootstrap()
        .bind_address(std::net::Ipv4Addr::LOCALHOST)
        .build()
        .unwrap()
        .as_async();
    let boot_addr = rt.block_on(boot.info()).local_addr().to_string();
    let seed_port = free_port();
    let _seeder = Proc::spawn_dht(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &seed_port.to_string(),
            "--dht-bootstrap",
            &boot_addr,
            "--state-dir",
            d.join("state-seed").to_str().unwrap(),
            "--quiet",
        ],
        d,
        "seeder",
    );
    wait_listening(seed_port);
    // Until the seeder's announce is in: a node of the test's own asks.
    let probe = mainline::Dht::builder()
        .bootstrap(&[boot_addr.as_str()])
        .bind_address(std::net::Ipv4Addr::LOCALHOST)
        .build()
        .unwrap()
        .as_async();
    let id = mainline::Id::from_bytes(hash).unwrap();
    let start = std::time::Instant::now();
    while !rt.block_on(async {
        use futures_util::StreamExt;
        let mut s = probe.get_peers(id);
        while let Some(batch) = s.next().await {
            if batch.iter().any(|a| a.port() == seed_port) {
                return true;
            }
        }
        false
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the seeder never announced itself to the DHT"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = past_four_silent_peers(d, &t, &[], Some(&boot_addr));
    eprintln!("complete in {secs:.1}s (DHT peer)");
}

/// A peer whose extended handshake is not a bencoded dictionary is broken
/// or hostile: dropped at once and never dialled again (it was ignored,
/// and the peer kept its slot for as long as it sent keep-alives). With no
/// other peer the run fails, saying why.
#[test]
fn a_non_dictionary_extended_handshake_drops_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hash = [5u8; 20];
    let bad = fake::SilentPeer::with_handshake(hash, b"li1ei2ee".to_vec());
    let mut p = Proc::spawn(
        &[
            "download",
            &format!(
                "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{}",
                hex::encode(hash),
                bad.port
            ),
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--quiet",
        ],
        d,
        "magnet",
    );
    let st = p.wait(Duration::from_secs(60));
    let err = p.stderr();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("bad extended handshake: not a dictionary; dropped"),
        "{err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no peer has the metadata (tried 1: "),
        "{err}"
    );
    assert_eq!(
        bad.handshakes.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "dialled again"
    );
}

/// A magnet nobody serves, with a tracker that answers with no peers: the
/// metadata phase would go on forever. `--stall-timeout` ends it (it was
/// ignored until the metadata came), exit 1 with one line that says why.
#[test]
fn a_dead_magnet_stops_at_the_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tracker = Tracker::start();
    let m = format!(
        "magnet:?xt=urn:btih:{}&dn=gone&tr={}",
        "cd".repeat(20),
        tracker.url()
    );
    let out = d.join("out");
    let mut p = Proc::spawn_log(
        &[
            "download",
            &m,
            "-o",
            out.to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--stall-timeout",
            "2",
        ],
        d,
        "magnet",
        "",
    );
    let st = p.wait(Duration::from_secs(60));
    let err = p.stderr();
    assert_eq!(st.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "error: stalled: no metadata for 2.0s (0 peers, 0 known; no peers found)\n"
    );
    assert!(
        !tracker.events.lock().unwrap().is_empty(),
        "never announced"
    );
    assert!(!out.exists() || list_files(&out).is_empty());
}
