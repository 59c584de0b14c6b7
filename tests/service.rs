//! `shoal serve` and its HTTP API (docs/api.md), against the real binary:
//! torrents added as a file and as a magnet complete from local seeders,
//! file selection, pause/resume, removal with data, restart with every
//! torrent restored, and the access checks (token, Host, Origin, folders
//! outside the download root).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::service::*;
use common::*;
use serde_json::Value;

#[test]
fn torrents_and_magnets_complete_pause_resume_remove_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(
        &src,
        &[
            ("single.bin", 3_000_000),
            ("pack/x.bin", 300_000),
            ("pack/y.bin", 700_000),
            ("pack/z.bin", 500_000),
        ],
    );
    let tracker = Tracker::start();
    let single = create_torrent(
        &src.join("single.bin"),
        &d.join("single.torrent"),
        &[tracker.url()],
        65536,
    );
    let pack = create_torrent(&src.join("pack"), &d.join("pack.torrent"), &[], 16384);
    let (_s1, _) = seeder(d, &single, &src, &["--quiet"]);
    let (_s2, pack_port) = seeder(d, &pack, &src, &["--quiet"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    let mut svc = serve(d, &state, &dl, &[], "serve1");
    let port = svc.port;

    // A .torrent upload, found through its tracker.
    let bytes = std::fs::read(&single).unwrap();
    let (status, _, body) = http(
        port,
        "POST",
        "/api/torrents",
        &[("Content-Type", "application/x-bittorrent")],
        &bytes,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let h1 = hex::encode(info_hash(&single));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["info_hash"],
        h1
    );
    // The same again: 409, naming it.
    let (status, _, body) = http(
        port,
        "POST",
        "/api/torrents",
        &[("Content-Type", "application/x-bittorrent")],
        &bytes,
    );
    assert_eq!(status, 409);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["info_hash"],
        h1
    );

    // A magnet with the seeder's address, files 0 and 2 only.
    let h2 = hex::encode(info_hash(&pack));
    let magnet = format!("magnet:?xt=urn:btih:{h2}&dn=pack&x.pe=127.0.0.1:{pack_port}");
    let (status, v) = json(
        port,
        "POST",
        "/api/torrents",
        Some(serde_json::json!({"magnet": magnet, "only": [0, 2]})),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["info_hash"], h2);

    wait_for(port, &h1, "complete", complete);
    wait_for(port, &h2, "complete", complete);
    assert_eq!(
        std::fs::read(dl.join("single.bin")).unwrap(),
        std::fs::read(src.join("single.bin")).unwrap()
    );
    for f in ["x.bin", "z.bin"] {
        assert_eq!(
            std::fs::read(dl.join("pack").join(f)).unwrap(),
            std::fs::read(src.join("pack").join(f)).unwrap(),
            "{f}"
        );
    }
    // The skipped file was never created, nor anything its size.
    assert!(!dl.join("pack/y.bin").exists());
    for f in list_files(&dl) {
        let len = std::fs::metadata(dl.join(&f)).unwrap().len();
        assert_ne!(len, 700_000, "{f:?} looks like the skipped file");
    }

    // One torrent's details: files with priorities, pieces.
    let (status, detail) = json(port, "GET", &format!("/api/torrents/{h2}"), None);
    assert_eq!(status, 200);
    let prio: Vec<&str> = detail["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["priority"].as_str().unwrap())
        .collect();
    assert_eq!(prio, ["normal", "skip", "normal"], "{detail}");
    let (_, pieces) = json(port, "GET", &format!("/api/torrents/{h1}/pieces"), None);
    let bits = data_encoding::BASE64
        .decode(pieces["have"].as_str().unwrap().as_bytes())
        .unwrap();
    let count = pieces["piece_count"].as_u64().unwrap() as usize;
    assert_eq!(count, 3_000_000usize.div_ceil(65536));
    assert!((0..count).all(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0));

    // Selecting the skipped file later completes it.
    let (status, files) = json(
        port,
        "POST",
        &format!("/api/torrents/{h2}/files"),
        Some(serde_json::json!({"priorities": {"1": "high"}})),
    );
    assert_eq!(status, 200, "{files}");
    wait_for(port, &h2, "complete with file 1", |t| {
        complete(t) && t["total"].as_u64() == Some(1_500_000)
    });
    assert_eq!(
        std::fs::read(dl.join("pack/y.bin")).unwrap(),
        std::fs::read(src.join("pack/y.bin")).unwrap()
    );

    // Pause and resume.
    let (status, t) = json(port, "POST", &format!("/api/torrents/{h1}/pause"), None);
    assert_eq!((status, t["state"].as_str()), (200, Some("paused")), "{t}");
    let (_, peers) = json(port, "GET", &format!("/api/torrents/{h1}/peers"), None);
    assert_eq!(peers, serde_json::json!([]));
    let (status, _) = json(port, "POST", &format!("/api/torrents/{h1}/resume"), None);
    assert_eq!(status, 200);
    let before = wait_for(port, &h1, "seeding again", complete);

    // Live updates: the first event is the list.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(&h2) {
        let n = s.read(&mut buf).expect("events stream");
        assert!(n > 0, "events stream closed");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("text/event-stream") && text.contains("event: torrents"));
    drop(s);

    // The client verbs against the same service.
    let url = format!("http://127.0.0.1:{port}");
    let o = shoal(&["list", "--url", &url]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&h1[..8]) && out.contains("seeding"), "{out}");
    let o = shoal(&["pause", "--url", &url, &h2[..6]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Restart: every torrent is back, the paused one paused, and verified
    // data is checked, not downloaded again.
    assert!(svc.proc.stop().success(), "{}", svc.proc.stderr());
    drop(svc);
    svc = serve(d, &state, &dl, &[], "serve2");
    let port = svc.port;
    let t2 = wait_for(port, &h2, "restored", |t| t["state"] == "paused");
    assert_eq!(t2["total"].as_u64(), Some(1_500_000), "{t2}");
    let t1 = wait_for(port, &h1, "seeding after the restart", complete);
    assert_eq!(t1["downloaded"], before["downloaded"], "{t1} vs {before}");

    // Remove with data: the torrent's file goes, the user's stays.
    std::fs::write(dl.join("notes.txt"), b"mine").unwrap();
    let (status, _, _) = http(
        port,
        "DELETE",
        &format!("/api/torrents/{h1}?delete_data=true"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert!(!dl.join("single.bin").exists());
    assert_eq!(std::fs::read(dl.join("notes.txt")).unwrap(), b"mine");
    let (status, _) = json(port, "GET", &format!("/api/torrents/{h1}"), None);
    assert_eq!(status, 404);
    // Without data: the files stay.
    let url = format!("http://127.0.0.1:{port}");
    let o = shoal(&["remove", "--url", &url, &h2]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dl.join("pack/y.bin").exists());
    let (_, list) = json(port, "GET", "/api/torrents", None);
    assert_eq!(list, serde_json::json!([]));
    assert!(svc.proc.stop().success());
}

#[test]
fn requests_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &["--token", "s3cret"], "serve");
    let port = svc.port;
    let auth = ("Authorization", "Bearer s3cret");

    let (status, _, _) = http(port, "GET", "/api/torrents", &[], b"");
    assert_eq!(status, 401);
    let (status, _, _) = http(
        port,
        "GET",
        "/api/torrents",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(status, 401);
    let (status, _, body) = http(port, "GET", "/api/torrents", &[auth], b"");
    assert_eq!((status, body.as_slice()), (200, &b"[]"[..]));
    // The page's login: a cookie that works like the header.
    let (status, head, _) = http(
        port,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        br#"{"token": "s3cret"}"#,
    );
    assert_eq!(status, 204);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        head.contains("HttpOnly") && head.contains("SameSite=Strict"),
        "{head}"
    );
    let (status, _, _) = http(port, "GET", "/api/torrents", &[("Cookie", &cookie)], b"");
    assert_eq!(status, 200);

    // DNS rebinding and other sites.
    let (status, _, _) = http(
        port,
        "GET",
        "/api/torrents",
        &[auth, ("Host", "evil.example")],
        b"",
    );
    assert_eq!(status, 403);
    let evil_host = format!("evil.example:{port}");
    let (status, _, _) = http(port, "GET", "/", &[("Host", &evil_host)], b"");
    assert_eq!(status, 403);
    let (status, _, _) = http(
        port,
        "POST",
        "/api/torrents",
        &[
            auth,
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        br#"{"magnet": "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"}"#,
    );
    assert_eq!(status, 403);
    let own = format!("http://127.0.0.1:{port}");
    let (status, _, _) = http(port, "GET", "/api/torrents", &[auth, ("Origin", &own)], b"");
    assert_eq!(status, 200);
    // The page itself needs no token, and sends no CORS header.
    let (status, head, body) = http(port, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<html"));
    assert!(!head
        .to_ascii_lowercase()
        .contains("access-control-allow-origin"));

    // Folders outside the download root.
    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567";
    let outside = d.join("elsewhere");
    for bad in [
        "../elsewhere",
        "a/../../elsewhere",
        outside.to_str().unwrap(),
        "/etc",
    ] {
        let body = serde_json::json!({"magnet": magnet, "download_dir": bad}).to_string();
        let (status, _, resp) = http(
            port,
            "POST",
            "/api/torrents",
            &[auth, ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(status, 403, "{bad}: {}", String::from_utf8_lossy(&resp));
    }
    assert!(!outside.exists());

    // Malformed and unknown things.
    let j = [auth, ("Content-Type", "application/json")];
    let (status, _, body) = http(port, "POST", "/api/torrents", &j, b"{not json");
    assert_eq!(status, 400);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"].is_string());
    let (status, _, _) = http(
        port,
        "POST",
        "/api/torrents",
        &j,
        br#"{"magnet": "magnet:?xt=nonsense"}"#,
    );
    assert_eq!(status, 400);
    let (status, _, _) = http(
        port,
        "POST",
        "/api/torrents",
        &[auth, ("Content-Type", "application/x-bittorrent")],
        b"d4:infod6:lengthi-1eee",
    );
    assert_eq!(status, 400);
    let big = vec![b'd'; 17 << 20];
    let (status, _, _) = http(
        port,
        "POST",
        "/api/torrents",
        &[auth, ("Content-Type", "application/x-bittorrent")],
        &big,
    );
    assert_eq!(status, 413);
    let (status, _, _) = http(
        port,
        "GET",
        &format!("/api/torrents/{}", "ab".repeat(20)),
        &[auth],
        b"",
    );
    assert_eq!(status, 404);
    let (status, _, _) = http(port, "GET", "/api/torrents/not-a-hash", &[auth], b"");
    assert_eq!(status, 404);
    let (status, _, _) = http(port, "GET", "/api/nothing", &[auth], b"");
    assert_eq!(status, 404);

    // A second service on the same state folder is refused.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut other = Proc::spawn(
        &[
            "serve",
            "--listen",
            &listen,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        d,
        "serve-dup",
    );
    assert_eq!(other.wait(Duration::from_secs(10)).code(), Some(1));
    assert!(
        other.stderr().contains("state folder"),
        "{}",
        other.stderr()
    );
}

/// `GET /api/network`: the peer port, its families, and the port mapping
/// (off here: `cargo test` sets SHOAL_NO_PORT_MAPPING; tests/portmap.rs
/// has the service with a router).
#[test]
fn the_network_request_says_where_peers_reach_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let svc = serve(d, &d.join("state"), &d.join("dl"), &[], "serve");
    let (status, v) = json(svc.port, "GET", "/api/network", None);
    assert_eq!(status, 200, "{v}");
    assert!(v["port"].as_u64().is_some_and(|p| p > 0), "{v}");
    assert!(v["ipv4"].is_boolean() && v["ipv6"].is_boolean(), "{v}");
    assert_eq!(v["port_mapping"]["state"], "off", "{v}");
    assert_eq!(v["port_mapping"]["message"], "port mapping off", "{v}");
}

#[test]
fn usage_and_unreachable_service() {
    // Not loopback without --allow-remote: a usage error.
    let o = shoal(&["serve", "--listen", "0.0.0.0:3999"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--allow-remote"));
    // Client verbs with no service: one line, exit 1.
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = shoal(&["list", "--url", &url]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach the shoal service"), "{err}");
    let o = shoal(&["pause", "--url", &url, "xyz"]);
    assert_eq!(o.status.code(), Some(1));
}

/// `--seed-time`: a torrent seeds that long, then is `done`, and stays
/// done across a restart until resumed.
#[test]
fn seeding_stops_at_the_services_seed_time_and_stays_done() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(&src, &[("one.bin", 400_000)]);
    let t = create_torrent(&src.join("one.bin"), &d.join("one.torrent"), &[], 16384);
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &["--seed-time", "2s"], "serve1");
    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&x.pe=127.0.0.1:{seed_port}");
    let (status, v) = json(
        svc.port,
        "POST",
        "/api/torrents",
        Some(serde_json::json!({ "magnet": magnet })),
    );
    assert_eq!(status, 201, "{v}");
    let done = wait_for(svc.port, &h, "done", |t| t["state"] == "done");
    assert_eq!(done["progress"].as_f64(), Some(1.0), "{done}");
    let mut svc = svc;
    assert!(svc.proc.stop().success());
    let svc = serve(d, &state, &dl, &["--seed-time", "2s"], "serve2");
    std::thread::sleep(Duration::from_secs(1));
    let (_, list) = json(svc.port, "GET", "/api/torrents", None);
    assert_eq!(torrent_of(&list, &h)["state"], "done", "{list}");
    let (_, t) = json(svc.port, "POST", &format!("/api/torrents/{h}/resume"), None);
    assert_ne!(t["state"], "done", "{t}");
}

/// A v2-only magnet (`urn:btmh:`) added to the service: the metadata and
/// the piece layers come from the seeder, the data completes. After a
/// restart the saved torrent has no piece layers (they are not part of
/// the metadata), so they are asked for again; the data on disk is
/// checked then and kept, not downloaded again.
#[test]
fn a_v2_magnet_completes_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(&src, &[("pack/a.bin", 700_000), ("pack/b.txt", 3_000)]);
    let t = d.join("v2.torrent");
    let o = shoal(&[
        "create",
        "--v2",
        src.join("pack").to_str().unwrap(),
        "-o",
        t.to_str().unwrap(),
        "--piece-length",
        "16384",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = shoal::store::load_torrent(&t).unwrap();
    let v2 = hex::encode(m.v2.as_ref().unwrap().info_hash);
    let short = &v2[..40];
    let (mut seeder, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    let mut svc = serve(d, &state, &dl, &[], "serve1");
    let magnet = format!("magnet:?xt=urn:btmh:1220{v2}&dn=pack&x.pe=127.0.0.1:{seed_port}");
    let (status, v) = json(
        svc.port,
        "POST",
        "/api/torrents",
        Some(serde_json::json!({ "magnet": magnet })),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        v["info_hash"], short,
        "the swarm's hash: the v2 hash cut to 20 bytes"
    );
    let before = wait_for(svc.port, short, "complete", complete);
    for f in ["a.bin", "b.txt"] {
        assert_eq!(
            std::fs::read(dl.join("pack").join(f)).unwrap(),
            std::fs::read(src.join("pack").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(svc.proc.stop().success(), "{}", svc.proc.stderr());
    drop(svc);
    svc = serve(d, &state, &dl, &[], "serve2");
    let after = wait_for(svc.port, short, "seeding after the restart", complete);
    assert_eq!(
        after["downloaded"], before["downloaded"],
        "{after} vs {before}"
    );
    assert!(
        svc.proc.stderr().contains("43 pieces already on disk"),
        "{}",
        tail(&svc.proc.stderr(), 30)
    );
    assert!(svc.proc.stop().success(), "{}", svc.proc.stderr());
    assert!(seeder.stop().success(), "{}", tail(&seeder.stderr(), 30));
}

/// Files in the way: refused with a message that says how to overwrite
/// (no flag that does not exist), `shoal resume --overwrite` and `shoal
/// add --overwrite` replace them; `shoal add --only` and the API number
/// files as `download --list` does (from 0); `shoal list` into a pipe
/// prints whole names; `shoal add` takes a bare info-hash.
#[test]
fn overwrite_numbers_and_list_as_the_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    let long = "a-long-folder-name-that-is-much-wider-than-any-terminal-a-table-would-cut-it-at-0123456789";
    make_tree(
        &src,
        &[
            ("pack/a.bin", 200_000),
            ("pack/b.bin", 100_000),
            ("pack/c.bin", 50_000),
            (&format!("{long}/x.bin"), 60_000),
        ],
    );
    let tracker = Tracker::start();
    let pack = create_torrent(
        &src.join("pack"),
        &d.join("pack.torrent"),
        &[tracker.url()],
        16384,
    );
    let other = create_torrent(
        &src.join(long),
        &d.join("long.torrent"),
        &[tracker.url()],
        16384,
    );
    let (_s1, _) = seeder(d, &pack, &src, &["--quiet"]);
    let (_s2, _) = seeder(d, &other, &src, &["--quiet"]);
    let list = shoal(&["download", pack.to_str().unwrap(), "--list"]);
    let listed: Vec<(String, String)> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[f.len() - 1].to_string())
        })
        .collect();
    assert_eq!(
        listed[0],
        ("0".to_string(), "pack/a.bin".to_string()),
        "{listed:?}"
    );

    let (state, dl) = (d.join("state"), d.join("dl"));
    std::fs::create_dir_all(dl.join("pack")).unwrap();
    std::fs::write(dl.join("pack/a.bin"), b"my own a.bin").unwrap();
    let svc = serve(d, &state, &dl, &[], "serve");
    let url = format!("http://127.0.0.1:{}", svc.port);
    let add = |args: &[&str]| {
        let mut a = vec!["add", "--url", &url];
        a.extend_from_slice(args);
        let o = shoal(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    add(&["--only", "0-1", pack.to_str().unwrap()]);
    let h = hex::encode(info_hash(&pack));
    let t = wait_for(svc.port, &h, "refused", |t| t["state"] == "error");
    assert_eq!(t["clash"], true, "{t}");
    let msg = t["error"].as_str().unwrap();
    assert!(
        msg.contains("a.bin") && msg.contains(&format!("shoal resume --overwrite {h}")),
        "{msg}"
    );
    assert!(!msg.contains("pass --overwrite"), "{msg}");
    assert_eq!(
        std::fs::read(dl.join("pack/a.bin")).unwrap(),
        b"my own a.bin"
    );
    // The API's numbers are --list's: 0 and 1 chosen, 2 left out.
    let (_, detail) = json(svc.port, "GET", &format!("/api/torrents/{h}"), None);
    for f in detail["files"].as_array().unwrap() {
        let n = f["index"].as_u64().unwrap() as usize;
        assert_eq!(f["path"], listed[n].1.as_str(), "{detail}");
        let want = if n < 2 { "normal" } else { "skip" };
        assert_eq!(f["priority"], want, "{detail}");
    }
    let o = shoal(&["resume", "--url", &url, "--overwrite", &h[..8]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = wait_for(svc.port, &h, "complete", |t| {
        t["progress"].as_f64() == Some(1.0)
    });
    assert_eq!(t["clash"], false, "{t}");
    assert_eq!(
        std::fs::read(dl.join("pack/a.bin")).unwrap(),
        std::fs::read(src.join("pack/a.bin")).unwrap()
    );
    assert!(!dl.join("pack/c.bin").exists(), "file 2 was not chosen");

    // `add --overwrite`: no refusal at all.
    std::fs::create_dir_all(dl.join(long)).unwrap();
    std::fs::write(dl.join(long).join("x.bin"), b"mine too").unwrap();
    add(&["--overwrite", other.to_str().unwrap()]);
    let h2 = hex::encode(info_hash(&other));
    wait_for(svc.port, &h2, "complete", complete);
    assert_same_tree(&src.join(long), &dl.join(long));

    // A bare info-hash is a magnet link naming only it.
    let bare = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    add(&[bare]);
    wait_for(svc.port, bare, "added", |t| t["state"] == "metadata");

    // Into a pipe, `shoal list` prints names whole.
    let o = shoal(&["list", "--url", &url]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines().any(|l| l.ends_with(&format!("  {long}"))),
        "{out}"
    );
}

/// What the page's add dialog and Re-check stand on: a magnet added with
/// `stop_after_metadata` fetches its metadata and pauses before any data
/// (its `magnet` then built from the metainfo); its files are chosen,
/// it is resumed and downloads only those; `…/recheck` finds a byte
/// changed on disk behind its back; `GET /api/categories` lists the
/// categories adds made.
#[test]
fn a_magnet_stops_after_its_metadata_and_a_recheck_finds_a_changed_byte() {
    const PIECE: usize = 16384;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(
        &src,
        &[("pack/a.bin", 5 * PIECE), ("pack/b.bin", 3 * PIECE)],
    );
    let t = create_torrent(&src.join("pack"), &d.join("p.torrent"), &[], PIECE as u32);
    let hash = hex::encode(info_hash(&t));
    let (mut seeder, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let dl = d.join("dl");
    let mut svc = serve(d, &d.join("state"), &dl, &[], "serve");
    let magnet = format!("magnet:?xt=urn:btih:{hash}&dn=pack&x.pe=127.0.0.1:{seed_port}");
    let (status, v) = json(
        svc.port,
        "POST",
        "/api/torrents",
        Some(
            serde_json::json!({"magnet": magnet, "stop_after_metadata": true, "category": "kept"}),
        ),
    );
    assert_eq!(status, 201, "{v}");
    let paused = wait_for(svc.port, &hash, "paused once its files are known", |t| {
        t["state"] == "paused"
    });
    assert_eq!(paused["have_bytes"], 0, "{paused}");
    assert_eq!(
        paused["magnet"],
        format!("magnet:?xt=urn:btih:{hash}&dn=pack"),
        "built from the metainfo now"
    );
    let (_, detail) = json(svc.port, "GET", &format!("/api/torrents/{hash}"), None);
    assert_eq!(
        detail["files"].as_array().map(Vec::len),
        Some(2),
        "{detail}"
    );
    let (status, v) = json(
        svc.port,
        "POST",
        &format!("/api/torrents/{hash}/files"),
        Some(serde_json::json!({"priorities": {"1": "skip"}})),
    );
    assert_eq!(status, 200, "{v}");
    post_ok(svc.port, &format!("/api/torrents/{hash}/resume"));
    let done = wait_for(svc.port, &hash, "complete", complete);
    let a = dl.join("kept/pack/a.bin");
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(src.join("pack/a.bin")).unwrap()
    );
    assert!(!dl.join("kept/pack/b.bin").exists(), "b.bin was left out");
    let (_, cats) = json(svc.port, "GET", "/api/categories", None);
    assert_eq!(cats, serde_json::json!({"kept": {"save_path": ""}}));

    // No peer any more: a re-check finds the changed piece and keeps it lost.
    assert!(seeder.stop().success(), "{}", tail(&seeder.stderr(), 30));
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[PIECE + 7] ^= 0x5a;
    std::fs::write(&a, bytes).unwrap();
    post_ok(svc.port, &format!("/api/torrents/{hash}/recheck"));
    let have = done["have_bytes"].as_u64().unwrap();
    wait_for(svc.port, &hash, "a piece short after the re-check", |t| {
        t["state"] != "checking" && t["have_bytes"].as_u64() == Some(have - PIECE as u64)
    });

    // Paused, a re-check hashes the data where it stands and leaves the
    // torrent paused: the second changed piece is found, nothing starts.
    post_ok(svc.port, &format!("/api/torrents/{hash}/pause"));
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[3 * PIECE + 1] ^= 0x5a;
    std::fs::write(&a, &bytes).unwrap();
    post_ok(svc.port, &format!("/api/torrents/{hash}/recheck"));
    let after = wait_for(svc.port, &hash, "two pieces short, still paused", |t| {
        t["have_bytes"].as_u64() == Some(have - 2 * PIECE as u64)
    });
    assert_eq!(after["state"], "paused", "{after}");
    let (_, map) = json(
        svc.port,
        "GET",
        &format!("/api/torrents/{hash}/pieces"),
        None,
    );
    let have_map = data_encoding::BASE64
        .decode(map["have"].as_str().unwrap_or_default().as_bytes())
        .unwrap();
    // a.bin is pieces 0–4 (1 and 3 changed), b.bin (left out) 5–7.
    assert_eq!(have_map, vec![0b1010_1000], "{map}");
    assert_eq!(
        std::fs::read(&a).unwrap(),
        bytes,
        "a paused re-check writes nothing"
    );
    assert!(!dl.join("kept/pack/b.bin").exists(), "and creates nothing");
    let (status, _) = json(
        svc.port,
        "POST",
        &format!("/api/torrents/{}/recheck", "0".repeat(40)),
        None,
    );
    assert_eq!(status, 404);
    assert!(svc.proc.stop().success(), "{}", svc.proc.stderr());
}

/// POSTs to `path` with no body; the answer must be 200.
fn post_ok(port: u16, path: &str) -> serde_json::Value {
    let (status, v) = json(port, "POST", path, None);
    assert_eq!(status, 200, "POST {path}: {v}");
    v
}
