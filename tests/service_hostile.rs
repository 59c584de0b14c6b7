//! `shoal serve` against requests meant to crash, trick or confuse it
//! (issue 19, part 2), with the real binary: `only` lists that overflowed
//! or allocated without bound, folders replaced by symbolic links, files
//! that were there before shoal, a torrent of 100,000 empty files, bodies
//! that never end, token guessing, huge magnet names, overlapping saves of
//! the state file, and a paused torrent's pieces.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::service::*;
use common::*;
use serde_json::{json, Value};

const MAGNET: &str = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567";

fn post_json(port: u16, body: &str) -> (u16, Value) {
    let (status, _, b) = http(
        port,
        "POST",
        "/api/torrents",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn upload(port: u16, query: &str, torrent: &[u8]) -> (u16, Value) {
    let (status, _, b) = http(
        port,
        "POST",
        &format!("/api/torrents{query}"),
        &[("Content-Type", "application/x-bittorrent")],
        torrent,
    );
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn list(port: u16) -> Vec<Value> {
    let (status, v) = json(port, "GET", "/api/torrents", None);
    assert_eq!(status, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

/// A fresh folder, the service's state folder and download folder in it.
fn folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (state, dl) = (dir.path().join("state"), dir.path().join("dl"));
    (dir, state, dl)
}

/// A pack of three files and its torrent.
fn pack(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = d.join("src");
    make_tree(
        &src,
        &[
            ("pack/x.bin", 300_000),
            ("pack/y.bin", 200_000),
            ("pack/z.bin", 100_000),
        ],
    );
    let t = create_torrent(&src.join("pack"), &d.join("pack.torrent"), &[], 16384);
    (src, t)
}

/// A refused add (a bad magnet, a bad .torrent, a bad `only`) leaves no
/// torrent and no folder behind.
#[test]
fn refused_adds_leave_no_folders() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let (_, t) = pack(d);
    let svc = serve(d, &state, &dl, &[], "serve");
    let port = svc.port;
    let (status, v) = upload(port, "?download_dir=made/q3", b"d4:infod6:lengthi-1eee");
    assert_eq!(status, 400, "{v}");
    let (status, v) = post_json(
        port,
        r#"{"magnet": "magnet:?xt=urn:btih:nonsense", "download_dir": "made/m"}"#,
    );
    assert_eq!(status, 400, "{v}");
    let torrent = std::fs::read(&t).unwrap();
    let (status, v) = upload(port, "?only=3&download_dir=made/q2", &torrent);
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no file 3"), "{v}");
    assert!(list(port).is_empty(), "no ghost torrent");
    assert!(!dl.join("made").exists(), "a refused add made its folder");
    // An accepted one makes it when it runs, not before.
    let (status, v) = upload(port, "?download_dir=made/ok&paused=true", &torrent);
    assert_eq!(status, 201, "{v}");
    assert!(!dl.join("made").exists());
}

/// `only` lists that aborted (4e12: an allocation), panicked (u64::MAX)
/// or were stored whole (2e7: 20 M priorities, a 320 MB torrents.json)
/// are refused with a clear error, no torrent left behind; an index past
/// the end of a magnet's files puts that torrent in `error` with nothing
/// written, until its files are chosen and it is resumed.
#[test]
fn only_lists_are_bounded() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let (src, t) = pack(d);
    let svc = serve(d, &state, &dl, &[], "serve");
    let port = svc.port;
    for only in [
        "[4000000000000]",
        "[18446744073709551615]",
        "[20000000]",
        "[0, 50000]",
        "[]",
    ] {
        let body = format!(r#"{{"magnet": "{MAGNET}", "only": {only}}}"#);
        let (status, v) = post_json(port, &body);
        assert_eq!(status, 400, "{only}: {v}");
        let err = v["error"].as_str().unwrap_or("");
        assert!(err.contains("--max-files") || only == "[]", "{only}: {err}");
    }
    let torrent = std::fs::read(&t).unwrap();
    let (status, v) = upload(port, "?only=18446744073709551615", &torrent);
    assert_eq!(status, 400, "{v}");
    assert!(list(port).is_empty(), "no ghost torrent");
    if let Ok(md) = std::fs::metadata(state.join("torrents.json")) {
        assert!(md.len() < 4096, "torrents.json is {} bytes", md.len());
    }

    // Adding still takes moments (it took 8 s with 20 M entries stored).
    let started = Instant::now();
    let (status, v) = post_json(
        port,
        &format!(r#"{{"magnet": "{MAGNET}", "only": [49999], "paused": true}}"#),
    );
    assert_eq!(status, 201, "{v}");
    eprintln!("add with only [49999]: {:?}", started.elapsed());
    let saved = std::fs::read(state.join("torrents.json")).unwrap();
    assert!(saved.len() < 4096, "{} bytes", saved.len());

    // Past the end once the metadata is in: `error`, nothing written.
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&x.pe=127.0.0.1:{seed_port}");
    let (status, v) = post_json(
        port,
        &json!({"magnet": magnet, "only": [1, 7], "download_dir": "p"}).to_string(),
    );
    assert_eq!(status, 201, "{v}");
    let t1 = wait_for(port, &h, "in error", |t| t["state"] == "error");
    let err = t1["error"].as_str().unwrap();
    assert!(err.contains("file 7") && err.contains("3 files"), "{err}");
    assert!(!dl.join("p/pack").exists(), "nothing written");
    let (status, files) = json(
        port,
        "POST",
        &format!("/api/torrents/{h}/files"),
        Some(json!({"priorities": {"0": "skip"}})),
    );
    assert_eq!(status, 200, "{files}");
    let (status, _) = json(port, "POST", &format!("/api/torrents/{h}/resume"), None);
    assert_eq!(status, 200);
    wait_for(port, &h, "complete", complete);
    assert_eq!(
        std::fs::read(dl.join("p/pack/y.bin")).unwrap(),
        std::fs::read(src.join("pack/y.bin")).unwrap()
    );
    assert!(!dl.join("p/pack/x.bin").exists() && !dl.join("p/pack/z.bin").exists());
}

/// A torrent's folder replaced by a link to a folder outside the download
/// root, after it was added or while the service was stopped: nothing is
/// written there, nothing deleted there; the torrent says why.
#[test]
fn a_folder_replaced_by_a_link_leads_nowhere_outside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, t) = pack(d);
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    let outside = d.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let peer = format!("127.0.0.1:{seed_port}");
    let mut svc = serve(d, &state, &dl, &[], "serve1");
    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&x.pe={peer}");

    // Added paused; the folder becomes a link before it runs.
    let (status, v) = post_json(
        svc.port,
        &json!({"magnet": magnet, "download_dir": "sub", "paused": true}).to_string(),
    );
    assert_eq!(status, 201, "{v}");
    let _ = std::fs::remove_dir_all(dl.join("sub"));
    std::os::unix::fs::symlink(&outside, dl.join("sub")).unwrap();
    let (status, _) = json(svc.port, "POST", &format!("/api/torrents/{h}/resume"), None);
    assert_eq!(status, 200);
    let t1 = wait_for(svc.port, &h, "refused", |t| t["state"] == "error");
    assert!(
        t1["error"].as_str().unwrap().contains("symbolic link"),
        "{t1}"
    );
    assert_eq!(list_files(&outside), Vec::<std::path::PathBuf>::new());
    let (status, _, body) = http(
        svc.port,
        "DELETE",
        &format!("/api/torrents/{h}?delete_data=true"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let gone: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(gone["deleted"], json!([]), "{gone}");

    // Completed into a real folder, which is moved outside and replaced
    // by a link while the service is stopped.
    std::fs::remove_file(dl.join("sub")).unwrap();
    let (status, v) = post_json(
        svc.port,
        &json!({"magnet": magnet, "download_dir": "real"}).to_string(),
    );
    assert_eq!(status, 201, "{v}");
    wait_for(svc.port, &h, "complete", complete);
    assert!(svc.proc.stop().success(), "{}", svc.proc.stderr());
    drop(svc);
    std::fs::rename(dl.join("real"), outside.join("real")).unwrap();
    std::os::unix::fs::symlink(outside.join("real"), dl.join("real")).unwrap();
    let before = list_files(&outside);
    assert_eq!(before.len(), 4, "{before:?}"); // 3 files, record (the lock went with the run)
    let svc = serve(d, &state, &dl, &[], "serve2");
    let t2 = wait_for(svc.port, &h, "refused", |t| t["state"] == "error");
    assert!(
        t2["error"].as_str().unwrap().contains("symbolic link"),
        "{t2}"
    );
    let (status, _, body) = http(
        svc.port,
        "DELETE",
        &format!("/api/torrents/{h}?delete_data=true"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let gone: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(gone["deleted"], json!([]), "{gone}");
    assert!(
        gone["kept"][0]["why"]
            .as_str()
            .unwrap()
            .contains("symbolic link"),
        "{gone}"
    );
    assert_eq!(list_files(&outside), before, "deleted through the link");
    assert_same_tree(&src.join("pack"), &outside.join("real/pack"));
}

/// Files that were in the folder, complete, before the torrent was added
/// are taken over but stay the user's: removing the torrent with its data
/// deletes only what shoal wrote, and the answer (API and `shoal remove`)
/// names what it kept.
#[test]
fn files_that_were_there_before_are_kept_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, t) = pack(d);
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    std::fs::create_dir_all(dl.join("pack")).unwrap();
    let mine = dl.join("pack/x.bin");
    std::fs::copy(src.join("pack/x.bin"), &mine).unwrap();
    let svc = serve(d, &state, &dl, &[], "serve");
    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&x.pe=127.0.0.1:{seed_port}");
    let add = || {
        let (status, v) = post_json(svc.port, &json!({ "magnet": magnet }).to_string());
        assert_eq!(status, 201, "{v}");
        wait_for(svc.port, &h, "complete", complete);
        assert_same_tree(&src.join("pack"), &dl.join("pack"));
    };

    add();
    let (status, _, body) = http(
        svc.port,
        "DELETE",
        &format!("/api/torrents/{h}?delete_data=true"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let gone: Value = serde_json::from_slice(&body).unwrap();
    let deleted: Vec<&str> = gone["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(deleted.len(), 2, "{gone}");
    assert!(deleted.iter().all(|p| !p.ends_with("x.bin")), "{gone}");
    assert_eq!(
        gone["kept"][0]["path"],
        mine.display().to_string(),
        "{gone}"
    );
    assert_eq!(
        gone["kept"][0]["why"], "it was there before shoal",
        "{gone}"
    );
    assert_eq!(
        std::fs::read(&mine).unwrap(),
        std::fs::read(src.join("pack/x.bin")).unwrap()
    );
    assert!(!dl.join("pack/y.bin").exists() && !dl.join("pack/z.bin").exists());

    // Again, removed with `shoal remove --delete-data`.
    add();
    let url = format!("http://127.0.0.1:{}", svc.port);
    let o = shoal(&["remove", "--delete-data", "--url", &url, &h]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2 files deleted, 1 file kept")
            && out.contains(&format!(
                "kept {}: it was there before shoal",
                mine.display()
            )),
        "{out}"
    );
    assert!(mine.exists() && !dl.join("pack/y.bin").exists());
}

/// A .torrent of `n` empty files and one file of `data` (pieces of 16 KiB).
fn many_files_torrent(n: usize, data: &[u8]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    let mut files = format!("ld6:lengthi{}e4:pathl4:dataee", data.len()).into_bytes();
    for i in 0..n {
        let name = format!("e{i:06}");
        files.extend(format!("d6:lengthi0e4:pathl{}:{name}ee", name.len()).bytes());
    }
    files.push(b'e');
    let pieces: Vec<u8> = data
        .chunks(16384)
        .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
        .collect();
    let mut t = b"d4:infod5:files".to_vec();
    t.extend(files);
    t.extend(
        format!(
            "4:name4:many12:piece lengthi16384e6:pieces{}:",
            pieces.len()
        )
        .bytes(),
    );
    t.extend(pieces);
    t.extend(b"ee");
    t
}

/// Whether the service's log says a save of its state failed.
fn failed_save(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.contains("WARN") && l.contains("saving"))
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// 100,000 empty files (a 3.4 MB .torrent): refused by default, naming
/// the flag; with `--max-files` raised the torrent runs without a
/// descriptor per file, another torrent still completes, and the state
/// file is saved.
#[test]
fn a_torrent_of_100000_empty_files_is_capped_and_costs_no_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, t) = pack(d);
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let many = many_files_torrent(100_000, &data(20_000, 5));
    assert!(many.len() > 3_000_000, "{}", many.len());
    let (state, dl) = (d.join("state"), d.join("dl"));
    let mut svc = serve(d, &state, &dl, &[], "serve1");
    let (status, v) = upload(svc.port, "", &many);
    assert_eq!(status, 400, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("100001 files") && err.contains("--max-files"),
        "{err}"
    );
    assert!(svc.proc.stop().success());
    drop(svc);

    let svc = serve(d, &state, &dl, &["--max-files", "200000"], "serve2");
    let (status, v) = upload(svc.port, "", &many);
    assert_eq!(status, 201, "{v}");
    let hm = v["info_hash"].as_str().unwrap().to_string();
    // Making 100,000 inodes takes the filesystem a while on a busy machine
    // (40 s seen with two CPU hogs beside it).
    wait_within(Duration::from_secs(400), svc.port, &hm, "running", |t| {
        t["state"] == "downloading"
    });
    // The empty files are made at the start; the other at its first write.
    assert!(std::fs::read_dir(dl.join("many")).unwrap().count() >= 100_000);
    let fds = open_descriptors(svc.proc.child.id());
    eprintln!("descriptors with 100,000 empty files running: {fds}");
    assert!(fds < 500, "{fds} descriptors open");

    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&x.pe=127.0.0.1:{seed_port}");
    let started = Instant::now();
    let (status, v) = post_json(svc.port, &json!({ "magnet": magnet }).to_string());
    assert_eq!(status, 201, "{v}");
    eprintln!("add beside it: {:?}", started.elapsed());
    wait_for(svc.port, &h, "complete", complete);
    assert_same_tree(&src.join("pack"), &dl.join("pack"));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(state.join("torrents.json")).unwrap()).unwrap();
    let hashes: Vec<&str> = saved["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["info_hash"].as_str().unwrap())
        .collect();
    assert!(hashes.contains(&h.as_str()) && hashes.contains(&hm.as_str()));
    let err = svc.proc.stderr();
    assert!(
        !failed_save(&err) && !err.contains("Too many open files"),
        "{}",
        tail(&err, 20)
    );
}

/// Sends a request head and `body`, leaves the connection open.
fn start_request(port: u16, len: usize, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /api/torrents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-bittorrent\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    s.write_all(body).unwrap();
    s
}

/// The status of the answer on `s`, or None if it closed without one.
fn status_of(s: &mut TcpStream) -> Option<u16> {
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn wait_rss_below(pid: u32, limit_kib: u64) -> u64 {
    let start = Instant::now();
    loop {
        let rss = rss_kib(pid);
        if rss <= limit_kib || start.elapsed() > Duration::from_secs(60) {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Requests that stop short: a header that never ends and a body that
/// stops are dropped after their deadline (408 for the body); only 4 big
/// bodies are read at once (503 for more).
#[test]
fn unfinished_requests_are_cut_off() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let svc = serve(d, &state, &dl, &[], "serve");
    let port = svc.port;

    // A header that never ends, and a body that stops.
    let mut half_head = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half_head
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    write!(half_head, "GET /api/torrents HTTP/1.1\r\nHost: 127.0.0").unwrap();
    let mut stalled = start_request(port, 1000, b"d4:info");
    assert_eq!(status_of(&mut stalled), Some(408));
    let mut rest = Vec::new();
    let closed = half_head.read_to_end(&mut rest);
    assert!(closed.is_ok(), "not closed by the server: {closed:?}");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    // Uploads in progress take every slot: a further one gets 503 before
    // a byte of its body is read. (A request that got a slot instead waits
    // for its body and is kept open, holding it, until one is refused.)
    let mb = 1 << 20;
    let mut holding: Vec<TcpStream> = (0..4)
        .map(|_| start_request(port, 2 * mb, &vec![b'd'; mb]))
        .collect();
    let start = Instant::now();
    let refused = loop {
        let mut next = start_request(port, 2 * mb, b"");
        next.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        match status_of(&mut next) {
            Some(status) => break status,
            None => holding.push(next),
        }
        assert!(start.elapsed() < Duration::from_secs(120), "never refused");
    };
    assert_eq!(refused, 503);
    holding.clear();
    let (status, _) = json(port, "GET", "/api/torrents", None);
    assert_eq!(status, 200);
}

/// 30 connections stopping one byte short of a 16 MB body hold at most the
/// 4 being read (480 MB before), and the memory is given back once they
/// close.
#[test]
fn unfinished_big_bodies_hold_little_memory_and_give_it_back() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let svc = serve(d, &state, &dl, &[], "serve");
    let (port, pid) = (svc.port, svc.proc.child.id());
    let base = wait_rss_below(pid, u64::MAX);
    let size = 16 << 20;
    let threads: Vec<_> = (0..30)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let head = format!(
                    "POST /api/torrents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-bittorrent\r\nContent-Length: {size}\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&vec![b'd'; size - 1]);
                s
            })
        })
        .collect();
    let conns: Vec<TcpStream> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_kib(pid);
    drop(conns);
    let after = wait_rss_below(pid, base + 24 * 1024);
    eprintln!(
        "RSS: {base} KiB before, {held} KiB with 30 bodies held, {after} KiB after they closed"
    );
    assert!(
        held < base + 4 * 16 * 1024 + 48 * 1024,
        "{held} KiB held (from {base})"
    );
    assert!(after <= base + 24 * 1024, "{after} KiB after (from {base})");
    let (status, _) = json(port, "GET", "/api/torrents", None);
    assert_eq!(status, 200);
}

/// `--token ''`, `SHOAL_TOKEN=` (an empty cookie would get in): a usage
/// error, exit 2.
#[test]
fn an_empty_token_is_a_usage_error() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    for (i, (args, env)) in [
        (vec!["serve", "--token", ""], None),
        (vec!["serve"], Some("")),
        (vec!["serve", "--token", "  "], None),
    ]
    .into_iter()
    .enumerate()
    {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut cmd = std::process::Command::new(shoal_bin());
        cmd.args(&args)
            .args(["--listen", &listen, "--state-dir"])
            .arg(&state)
            .arg("--download-dir")
            .arg(&dl)
            .env("SHOAL_NO_DHT", "1");
        if let Some(v) = env {
            cmd.env("SHOAL_TOKEN", v);
        }
        let (out, err) = (d.join(format!("{i}.out")), d.join(format!("{i}.err")));
        let mut p = Proc {
            child: cmd
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .unwrap(),
            out,
            err,
        };
        let status = p.wait(Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{args:?} {env:?}: {}", p.stderr());
        assert!(p.stderr().contains("token is empty"), "{}", p.stderr());
    }
}

/// A magnet of 15 MB is refused, and a long name is cut before it is kept
/// (and sent in every live update).
#[test]
fn magnet_names_are_capped() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let svc = serve(d, &state, &dl, &["--token", "s3cret"], "serve");
    let port = svc.port;
    let auth = ("Authorization", "Bearer s3cret");
    let j = [auth, ("Content-Type", "application/json")];
    let huge = json!({ "magnet": format!("{MAGNET}&dn={}", "x".repeat(15 << 20)) }).to_string();
    let (status, _, body) = http(port, "POST", "/api/torrents", &j, huge.as_bytes());
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("over 65536 is refused"));
    let long = json!({ "magnet": format!("{MAGNET}&dn={}", "y".repeat(3000)), "paused": true });
    let (status, _, body) = http(
        port,
        "POST",
        "/api/torrents",
        &j,
        long.to_string().as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (_, _, body) = http(port, "GET", "/api/torrents", &[auth], b"");
    let listed: Value = serde_json::from_slice(&body).unwrap();
    let name = listed[0]["name"].as_str().unwrap();
    assert!(
        name.len() <= 1024 && name.starts_with("yyy"),
        "{}",
        name.len()
    );
}

/// Wrong tokens (login or header) are limited per source: 429 with
/// Retry-After, while other sources go on.
#[test]
fn wrong_tokens_are_limited_per_source() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let svc = serve(d, &state, &dl, &["--token", "s3cret"], "serve");
    let port = svc.port;
    // Guessing: 10 wrong tokens, then 429 for this source, right or wrong.
    // One more try is earned every 2 s, so a slow machine may see a 401
    // where a fast one sees 429: each check drains the tries first.
    let login = |token: &str| {
        http(
            port,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            json!({ "token": token }).to_string().as_bytes(),
        )
    };
    let drain = || {
        let mut let_through = 0;
        loop {
            match login("guess").0 {
                401 => let_through += 1,
                429 => return let_through,
                s => panic!("{s}"),
            }
            assert!(let_through < 500, "never limited");
        }
    };
    let first = drain();
    assert!(first >= 10, "only {first} wrong tokens before 429");
    let blocked = |request: &dyn Fn() -> (u16, String, Vec<u8>), allowed: u16| {
        for _ in 0..50 {
            drain();
            let (status, head, body) = request();
            if status == 429 {
                assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
                assert!(String::from_utf8_lossy(&body).contains("try again in"));
                return;
            }
            assert_eq!(status, allowed, "{}", String::from_utf8_lossy(&body));
        }
        panic!("never 429");
    };
    blocked(&|| login("s3cret"), 204);
    let guess = [("Authorization", "Bearer guess")];
    blocked(&|| http(port, "GET", "/api/torrents", &guess, b""), 401);
    // Another source is not held up (127.0.0.2 is loopback too).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let mut s: TcpStream = sock.into();
    write!(
        s,
        "GET /api/torrents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(status_of(&mut s), Some(200));
}

/// Many adds and removes at once: every save is whole (one writer, a
/// temporary file of its own), torrents.json matches the list at the end,
/// no save fails. Then a torrents.json cut short: the service starts from
/// the previous good copy, with a warning, instead of refusing to start.
#[test]
fn state_saves_never_overlap_and_a_damaged_file_starts_from_its_backup() {
    let (dir, state, dl) = folders();
    let d = dir.path();
    let mut svc = serve(d, &state, &dl, &[], "serve1");
    let port = svc.port;
    let workers: Vec<_> = (0..8u8)
        .map(|w| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..12u8 {
                    let h = format!("{w:02x}{i:02x}{}", "ab".repeat(18));
                    let magnet = format!("magnet:?xt=urn:btih:{h}&dn=t{w}-{i}");
                    let (status, v) =
                        post_json(port, &json!({"magnet": magnet, "paused": true}).to_string());
                    assert_eq!(status, 201, "{v}");
                    if i % 3 == 0 {
                        let (status, _, _) =
                            http(port, "DELETE", &format!("/api/torrents/{h}"), &[], b"");
                        assert_eq!(status, 200);
                    } else {
                        kept.push(h);
                    }
                }
                kept
            })
        })
        .collect();
    let mut kept: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    kept.sort();
    let on_disk = |path: &Path| -> Vec<String> {
        let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut h: Vec<String> = v["torrents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["info_hash"].as_str().unwrap().to_string())
            .collect();
        h.sort();
        h
    };
    assert_eq!(
        on_disk(&state.join("torrents.json")),
        kept,
        "after the last answer"
    );
    let mut listed: Vec<String> = list(port)
        .iter()
        .map(|t| t["info_hash"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, kept);
    assert!(svc.proc.stop().success());
    let err = svc.proc.stderr();
    assert!(!failed_save(&err), "{}", tail(&err, 20));
    assert_eq!(on_disk(&state.join("torrents.json")), kept);
    let temps: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    drop(svc);

    // Cut short (a full disk, a crash of the disk): the backup is used.
    let main = state.join("torrents.json");
    let len = std::fs::metadata(&main).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&main)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let svc = serve(d, &state, &dl, &[], "serve2");
    let listed = list(svc.port);
    assert_eq!(listed.len(), kept.len(), "from the backup");
    let err = svc.proc.stderr();
    assert!(
        err.contains("is damaged") && err.contains("torrents.json.bak"),
        "{}",
        tail(&err, 20)
    );
    assert!(state.join("torrents.json.damaged").exists());
}

/// A paused torrent shows the pieces it has, and after a restart its
/// files' progress, not 0 % beside "have everything".
#[test]
fn a_paused_torrent_shows_its_pieces_and_files_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (src, t) = pack(d);
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    let mut svc = serve(d, &state, &dl, &[], "serve1");
    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&x.pe=127.0.0.1:{seed_port}");
    let (status, v) = post_json(svc.port, &json!({ "magnet": magnet }).to_string());
    assert_eq!(status, 201, "{v}");
    wait_for(svc.port, &h, "complete", complete);
    let (status, t1) = json(svc.port, "POST", &format!("/api/torrents/{h}/pause"), None);
    assert_eq!(
        (status, t1["state"].as_str()),
        (200, Some("paused")),
        "{t1}"
    );
    let all_pieces = |port: u16| {
        let (_, p) = json(port, "GET", &format!("/api/torrents/{h}/pieces"), None);
        let bits = data_encoding::BASE64
            .decode(p["have"].as_str().unwrap().as_bytes())
            .unwrap();
        let n = p["piece_count"].as_u64().unwrap() as usize;
        assert_eq!(n, 600_000usize.div_ceil(16384));
        (0..n).all(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0)
    };
    assert!(all_pieces(svc.port), "paused: the piece map is empty");
    assert!(svc.proc.stop().success());
    drop(svc);
    let svc = serve(d, &state, &dl, &[], "serve2");
    let t2 = wait_for(svc.port, &h, "restored", |t| t["state"] == "paused");
    assert_eq!(t2["have_bytes"], 600_000, "{t2}");
    assert!(all_pieces(svc.port), "after a restart");
    let (_, detail) = json(svc.port, "GET", &format!("/api/torrents/{h}"), None);
    for f in detail["files"].as_array().unwrap() {
        assert_eq!(f["done"], f["length"], "{detail}");
    }
}
