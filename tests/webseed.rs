//! Web seeds (BEP 19): a small HTTP server on loopback, with `Range`
//! support, serves the torrent's files. Alone it delivers single- and
//! multi-file torrents byte for byte; with a shoal seeder both serve; a
//! server sending wrong bytes is banned while the peer finishes the job; a
//! broken server (404, wrong `Content-Range`, a body that never ends, a
//! redirect loop) is survived with a status that says what is wrong; a
//! server that ignores `Range` (ours, and `python3 -m http.server`) is
//! read whole and used; a magnet's `ws=` is used once the metadata came.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Honest,
    /// Every answer has its first byte flipped.
    Lying,
    /// The right bytes, then junk without end (no Content-Length).
    Huge,
    /// A `Content-Range` one byte off what was asked.
    WrongRange,
    NotFound,
    /// Every request is redirected to itself.
    RedirectLoop,
    /// 200 and the whole file, whatever the range.
    IgnoresRange,
    /// The same, with the file's byte 1000 from its end flipped.
    IgnoresRangeAndLies,
}

/// An HTTP/1.1 server of the files under `root`, one thread per
/// connection, closed after each answer. Stops when dropped.
struct WebServer {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebServer {
    fn start(root: &Path, mode: Mode) -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (root, requests, stop) = (root.to_path_buf(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (root, requests, stop) =
                                (root.clone(), requests.clone(), stop.clone());
                            std::thread::spawn(move || {
                                let _ = answer(s, &root, mode, &requests, &stop);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        WebServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(
    mut s: TcpStream,
    root: &Path,
    mode: Mode,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 || head.len() > 16384 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    requests.fetch_add(1, Ordering::Relaxed);
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let range = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.eq_ignore_ascii_case("range") {
            return None;
        }
        let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
    });
    if mode == Mode::NotFound {
        return s.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        );
    }
    if mode == Mode::RedirectLoop {
        let r = format!(
            "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return s.write_all(r.as_bytes());
    }
    let decoded = percent_encoding::percent_decode_str(&path).decode_utf8_lossy();
    let rel = decoded.trim_start_matches('/');
    let file = root.join(rel);
    let mut content = match std::fs::read(&file) {
        Ok(c) if !rel.split('/').any(|e| e == "..") => c,
        _ => {
            return s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        }
    };
    let len = content.len() as u64;
    if mode == Mode::IgnoresRangeAndLies && len > 1000 {
        content[len as usize - 1000] ^= 1;
    }
    let ignores = matches!(mode, Mode::IgnoresRange | Mode::IgnoresRangeAndLies);
    let (a, b) = match range {
        Some((a, b)) if a < len && !ignores => (a, b.min(len - 1)),
        _ => {
            let h =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            s.write_all(h.as_bytes())?;
            return s.write_all(&content);
        }
    };
    let mut body = content[a as usize..=b as usize].to_vec();
    let h = match mode {
        Mode::WrongRange => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            a + 1,
            b + 1,
            body.len()
        ),
        Mode::Huge => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\nConnection: close\r\n\r\n"
        ),
        _ => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ),
    };
    if mode == Mode::Lying {
        body[0] ^= 0xff;
    }
    s.write_all(h.as_bytes())?;
    s.write_all(&body)?;
    if mode == Mode::Huge {
        // Junk until the client hangs up (or 1 GiB).
        let junk = vec![0x5au8; 1 << 16];
        for _ in 0..(1 << 14) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            s.write_all(&junk)?;
        }
    }
    Ok(())
}

/// `shoal create` with web seeds.
fn create(src: &Path, out: &Path, piece_length: u32, web_seeds: &[String]) -> PathBuf {
    create_torrent_with(src, out, piece_length, &[], web_seeds)
}

fn download(d: &Path, torrent: &str, out: &Path, extra: &[&str], name: &str) -> Proc {
    let port = free_port().to_string();
    let mut args = vec![
        "download",
        torrent,
        "-o",
        out.to_str().unwrap(),
        "--json",
        "--port",
        &port,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args, d, name)
}

fn finish(p: &mut Proc) -> serde_json::Value {
    assert!(
        p.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&p.stderr(), 30)
    );
    let done = p.done_event();
    assert_eq!(done["complete"], true, "{done}");
    done
}

/// Waits for a `state` event whose status contains `needle`.
fn wait_for_status(p: &Proc, needle: &str) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let found = p
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "state")
            .filter_map(|v| v["status"].as_str().map(str::to_string))
            .find(|s| s.contains(needle));
        if let Some(s) = found {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no status with {needle:?}\nstdout:\n{}\nstderr:\n{}",
        p.stdout(),
        tail(&p.stderr(), 30)
    );
}

/// `shoal create --web-seed URL` then a download from that server alone:
/// a single-file torrent whose URL names the file itself (under another
/// name), pieces not a multiple of 16 KiB long at the end.
#[test]
fn single_file_from_a_web_seed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("disk.img", 2_500_003)]);
    let www = d.join("www");
    std::fs::create_dir_all(www.join("mirror")).unwrap();
    std::fs::copy(d.join("src/disk.img"), www.join("mirror/other name.img")).unwrap();
    let server = WebServer::start(&www, Mode::Honest);
    let url = server.url("mirror/other%20name.img");
    let t = create(
        &d.join("src/disk.img"),
        &d.join("disk.torrent"),
        32768,
        std::slice::from_ref(&url),
    );
    let info = Command::new(shoal_bin())
        .args(["info", t.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains(&url));

    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &[], "leecher");
    let done = finish(&mut p);
    assert_eq!(done["banned"], 0, "{done}");
    assert_eq!(done["hash_failures"], 0, "{done}");
    assert_same_tree(&d.join("src"), &out);
    assert!(server.requests() > 0);
}

/// A multi-file torrent: `URL/name/path`, percent-encoded, and pieces that
/// span files (several range requests each); an empty file too.
#[test]
fn multi_file_from_a_web_seed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    make_tree(
        &www.join("m"),
        &[
            ("pack/a b.bin", 100_000),
            ("pack/sub/c#1.bin", 300_001),
            ("pack/sub/empty", 0),
            ("pack/z.bin", 65_536),
        ],
    );
    let server = WebServer::start(&www, Mode::Honest);
    // No trailing slash: for a multi-file torrent it names a folder anyway.
    let t = create(
        &www.join("m/pack"),
        &d.join("pack.torrent"),
        32768,
        &[server.url("m")],
    );
    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &[], "leecher");
    finish(&mut p);
    assert_same_tree(&www.join("m"), &out);
}

/// A web seed and a (slow) shoal seeder together: both serve.
#[test]
fn web_seed_and_peer_together() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 1_500_000), ("pack/b.bin", 700_001)],
    );
    let server = WebServer::start(&d.join("src"), Mode::Honest);
    let t = create(
        &d.join("src/pack"),
        &d.join("pack.torrent"),
        32768,
        &[server.url("")],
    );
    let (_seeder, sport) = seeder(
        d,
        &t,
        &d.join("src"),
        &["--quiet", "--upload-limit", "300000"],
    );
    let out = d.join("out");
    let peer = format!("127.0.0.1:{sport}");
    let mut p = download(
        d,
        t.to_str().unwrap(),
        &out,
        &["--peer", &peer, "--download-limit", "1M"],
        "leecher",
    );
    finish(&mut p);
    assert_same_tree(&d.join("src"), &out);
    assert!(server.requests() > 0);
    // Both sources were counted while it ran.
    let sources: Vec<serde_json::Value> = p
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "progress")
        .map(|v| v["peer_sources"].clone())
        .collect();
    assert!(
        sources
            .iter()
            .any(|s| s["webseed"] == 1 && s["manual"] == 1),
        "{sources:?}"
    );
    let seen = p.stderr();
    assert!(!seen.contains("banning"), "{}", tail(&seen, 30));
}

/// A server sending wrong bytes is banned after its first bad piece; the
/// honest peer completes the download.
#[test]
fn lying_web_seed_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 400_000), ("pack/b.bin", 300_001)],
    );
    let server = WebServer::start(&d.join("src"), Mode::Lying);
    let t = create(
        &d.join("src/pack"),
        &d.join("pack.torrent"),
        32768,
        &[server.url("")],
    );
    // The seeder is slow, so the liar gets to send plenty.
    let (_seeder, sport) = seeder(
        d,
        &t,
        &d.join("src"),
        &["--quiet", "--upload-limit", "500000"],
    );
    let out = d.join("out");
    let peer = format!("127.0.0.1:{sport}");
    let mut p = download(d, t.to_str().unwrap(), &out, &["--peer", &peer], "leecher");
    let done = finish(&mut p);
    assert!(done["hash_failures"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(done["banned"], 1, "{done}");
    let err = p.stderr();
    assert!(
        err.contains("banning web seed http://127.0.0.1:"),
        "{}",
        tail(&err, 30)
    );
    assert_same_tree(&d.join("src"), &out);
}

/// Each kind of broken server, alone: the download stays up, the status
/// says what is wrong and when it tries again, and Ctrl-C still ends it.
fn broken(mode: Mode, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // More than CONNECTIONS runs of RUN_BYTES: a connection must read past
    // the end of its first answer before the torrent can complete, so a
    // server that sends too much is always caught (with 3 MB, three runs
    // could finish the file before anyone read the surplus).
    make_tree(&d.join("src"), &[("big.bin", 5_000_000)]);
    let server = WebServer::start(&d.join("src"), mode);
    let url = server.url("big.bin");
    let t = create(
        &d.join("src/big.bin"),
        &d.join("big.torrent"),
        65536,
        std::slice::from_ref(&url),
    );
    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &[], "leecher");
    let status = wait_for_status(&p, &format!("web seed {url}: "));
    assert!(status.contains(expect), "{status}");
    assert!(status.contains("retry in 5s"), "{status}");
    // SIGTERM: 128 + 15, and a clean `done`.
    assert_eq!(p.stop().code(), Some(143), "{}", tail(&p.stderr(), 30));
    let done = p.done_event();
    assert_eq!(done["outcome"], "interrupted", "{done}");
    assert_eq!(done["complete"], false, "{done}");
}

#[test]
fn web_seed_answering_404() {
    broken(Mode::NotFound, "HTTP 404 Not Found");
}

#[test]
fn web_seed_with_wrong_content_range() {
    broken(Mode::WrongRange, "wrong Content-Range");
}

#[test]
fn web_seed_sending_a_huge_body() {
    broken(Mode::Huge, "sent more than the");
}

#[test]
fn web_seed_in_a_redirect_loop() {
    broken(Mode::RedirectLoop, "too many redirects");
}

/// A server that answers every `Range` request with 200 and the whole
/// file: its answer is read from the start and every piece in it kept
/// (issue 19: it used to be backed off as "ignores Range requests" and
/// retried forever). The first wave of requests (one per connection) is
/// all it takes: the last answer back is read, the others dropped.
#[test]
fn web_seed_ignoring_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("big.bin", 5_000_000)]);
    let server = WebServer::start(&d.join("src"), Mode::IgnoresRange);
    let url = server.url("big.bin");
    let t = create(
        &d.join("src/big.bin"),
        &d.join("big.torrent"),
        65536,
        std::slice::from_ref(&url),
    );
    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &[], "leecher");
    let done = finish(&mut p);
    assert_same_tree(&d.join("src"), &out);
    assert_eq!(done["hash_failures"], 0, "{done}");
    let err = p.stderr();
    assert!(
        err.contains("ignores Range requests; reading whole files"),
        "{}",
        tail(&err, 30)
    );
    assert!(!err.contains("retry in"), "{}", tail(&err, 30));
    // One whole read of the file, give or take the dropped answers.
    let downloaded = done["downloaded"].as_u64().unwrap();
    assert!(downloaded < 2 * 5_000_000, "{done}");
    assert!(server.requests() <= 6, "{} requests", server.requests());
}

/// A whole-file server whose last piece is wrong: every other piece it
/// sent is kept, the bad one names it and it is banned (alone, the
/// download then stalls one piece short).
#[test]
fn whole_file_server_sending_a_bad_piece_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("f.bin", 1_000_000)]);
    let server = WebServer::start(&d.join("src"), Mode::IgnoresRangeAndLies);
    let t = create(
        &d.join("src/f.bin"),
        &d.join("f.torrent"),
        65536,
        &[server.url("f.bin")],
    );
    let out = d.join("out");
    let mut p = download(
        d,
        t.to_str().unwrap(),
        &out,
        &["--stall-timeout", "3"],
        "leecher",
    );
    let status = p.wait(Duration::from_secs(60));
    assert!(!status.success(), "{}", tail(&p.stderr(), 30));
    let done = p.done_event();
    assert_eq!(done["outcome"], "stalled", "{done}");
    assert_eq!(done["banned"], 1, "{done}");
    assert_eq!(done["hash_failures"], 1, "{done}");
    // Pieces 0..15 (15 × 64 KiB) kept; the last (16 960 bytes) not.
    assert_eq!(done["have_bytes"], 15 * 65536, "{done}");
}

/// A whole-file server and a file selection: the file left out is read
/// only as far as the piece it shares with the selected one, then the
/// connection is dropped; the rest of it never comes.
#[test]
fn whole_file_server_is_read_only_as_far_as_needed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 1_000_000), ("pack/b.bin", 20_000_000)],
    );
    let server = WebServer::start(&d.join("src"), Mode::IgnoresRange);
    let t = create(
        &d.join("src/pack"),
        &d.join("pack.torrent"),
        65536,
        &[server.url("")],
    );
    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &["--select", "0"], "leecher");
    let done = finish(&mut p);
    assert_eq!(done["hash_failures"], 0, "{done}");
    let a = std::fs::read(out.join("pack/a.bin")).unwrap();
    assert!(a == std::fs::read(d.join("src/pack/a.bin")).unwrap());
    // a.bin (read whole, perhaps twice by the first wave of requests) and
    // b.bin's first piece: far less than b.bin's 20 MB.
    let downloaded = done["downloaded"].as_u64().unwrap();
    assert!(downloaded < 5_000_000, "{done}");
}

/// Python's own web server (`python3 -m http.server`, which has no
/// `Range` support) as the only source, single-file and multi-file
/// torrents: both complete byte for byte.
#[test]
fn python_http_server_as_the_web_seed() {
    if std::env::var("SHOAL_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("note: python_http_server_as_the_web_seed skipped: SHOAL_SKIP_INTEROP=1");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    make_tree(
        &www,
        &[
            ("one.bin", 3_000_001),
            ("pack/a b.bin", 1_000_000),
            ("pack/sub/c#1.bin", 7_777_777),
            ("pack/z.bin", 40_000),
        ],
    );
    let port = free_port();
    let py = common::python();
    let server = std::process::Command::new(py)
        .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
        .arg(&www)
        .arg(port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(d.join("http.out")).unwrap())
        .stderr(std::fs::File::create(d.join("http.err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{py} -m http.server: {e}"));
    let _server = Kill(server);
    wait_listening(port);
    let base = format!("http://127.0.0.1:{port}/");
    for (what, src, url) in [
        ("single", www.join("one.bin"), format!("{base}one.bin")),
        ("multi", www.join("pack"), base.clone()),
    ] {
        let t = create(&src, &d.join(format!("{what}.torrent")), 32768, &[url]);
        let out = d.join(format!("out-{what}"));
        let mut p = download(d, t.to_str().unwrap(), &out, &[], what);
        let done = finish(&mut p);
        assert_eq!(done["hash_failures"], 0, "{what}: {done}");
        let name = src.file_name().unwrap();
        let (want, got) = (src.clone(), out.join(name));
        if src.is_dir() {
            assert_same_tree(&want, &got);
        } else {
            assert!(
                std::fs::read(&want).unwrap() == std::fs::read(&got).unwrap(),
                "{what}"
            );
        }
        assert!(
            p.stderr().contains("ignores Range requests"),
            "{what}: {}",
            tail(&p.stderr(), 30)
        );
    }
    // The server's own log: whole files (200), never a 206.
    let log = std::fs::read_to_string(d.join("http.err")).unwrap_or_default();
    assert!(log.contains("\" 200 ") && !log.contains("\" 206 "), "{log}");
}

/// A child process killed (and reaped) when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// All the broken servers and one good one in the same torrent: the good
/// one delivers everything.
#[test]
fn broken_web_seeds_beside_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 1_000_000), ("pack/b.bin", 200_001)],
    );
    let servers: Vec<WebServer> = [
        Mode::NotFound,
        Mode::WrongRange,
        Mode::Huge,
        Mode::RedirectLoop,
        Mode::IgnoresRange,
        Mode::Honest,
    ]
    .into_iter()
    .map(|m| WebServer::start(&d.join("src"), m))
    .collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url("")).collect();
    let t = create(&d.join("src/pack"), &d.join("pack.torrent"), 32768, &urls);
    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &[], "leecher");
    let done = finish(&mut p);
    assert_eq!(done["banned"], 0, "{done}");
    assert_same_tree(&d.join("src"), &out);
}

/// `--no-web-seeds`: the server is never asked.
#[test]
fn no_web_seeds_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("f.bin", 100_000)]);
    let server = WebServer::start(&d.join("src"), Mode::Honest);
    let t = create(
        &d.join("src/f.bin"),
        &d.join("f.torrent"),
        32768,
        &[server.url("f.bin")],
    );
    let out = d.join("out");
    let mut p = download(
        d,
        t.to_str().unwrap(),
        &out,
        &["--no-web-seeds", "--stall-timeout", "2"],
        "leecher",
    );
    assert!(!p.wait(Duration::from_secs(30)).success());
    assert_eq!(p.done_event()["outcome"], "stalled");
    assert_eq!(server.requests(), 0);
}

/// A peer that has no pieces but serves the metadata (BEP 9), so a magnet
/// link's data can only come from its web seed.
fn metadata_only_peer(info_hash: [u8; 20], info: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let info = Arc::new(info);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let info = info.clone();
            std::thread::spawn(move || {
                let _ = serve_metadata(s, info_hash, &info);
            });
        }
    });
    port
}

fn serve_metadata(mut s: TcpStream, info_hash: [u8; 20], info: &[u8]) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    let mut out = vec![19];
    out.extend_from_slice(b"BitTorrent protocol");
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, 0]);
    out.extend_from_slice(&info_hash);
    out.extend_from_slice(b"-MD0001-metadataonly");
    let size = info.len();
    let ext = format!("d1:md11:ut_metadatai9ee13:metadata_sizei{size}ee");
    let mut msg = vec![20, 0];
    msg.extend_from_slice(ext.as_bytes());
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    s.write_all(&out)?;
    // The id shoal gave ut_metadata in its extended handshake.
    let mut theirs = 0u8;
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let mut m = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut m)?;
        if m.len() < 2 || m[0] != 20 {
            continue;
        }
        let text = String::from_utf8_lossy(&m[2..]).into_owned();
        if m[1] == 0 {
            theirs = text
                .split("11:ut_metadatai")
                .nth(1)
                .and_then(|r| r.split('e').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            continue;
        }
        if m[1] != 9 || theirs == 0 {
            continue;
        }
        let piece: usize = text
            .split("5:piecei")
            .nth(1)
            .and_then(|r| r.split('e').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let chunk = &info[(piece * 16384).min(size)..((piece + 1) * 16384).min(size)];
        let head = format!("d8:msg_typei1e5:piecei{piece}e10:total_sizei{size}ee");
        let mut msg = vec![20, theirs];
        msg.extend_from_slice(head.as_bytes());
        msg.extend_from_slice(chunk);
        let mut frame = (msg.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&msg);
        s.write_all(&frame)?;
    }
}

/// A magnet's `ws=`: once the metadata came from a peer with no data, the
/// web seed delivers everything.
#[test]
fn magnet_web_seed_is_used_after_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 300_000), ("pack/sub/b.bin", 123_457)],
    );
    let server = WebServer::start(&d.join("src"), Mode::Honest);
    // The torrent itself names no web seed: only the magnet does.
    let t = create(&d.join("src/pack"), &d.join("pack.torrent"), 16384, &[]);
    let meta = shoal::store::load_torrent(&t).unwrap();
    let info = meta.info_bytes().unwrap().into_owned();
    let port = metadata_only_peer(meta.info_hash.0, info);
    let ws: String =
        percent_encoding::utf8_percent_encode(&server.url(""), percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=pack&x.pe=127.0.0.1:{port}&ws={ws}",
        meta.info_hash.hex()
    );
    let out = d.join("out");
    let mut p = download(d, &magnet, &out, &[], "leecher");
    finish(&mut p);
    assert_same_tree(&d.join("src"), &out);
    assert!(server.requests() > 0);
}

/// nginx as the web seed: a real server's `Range` answers, percent-decoded
/// names, a file boundary inside a piece. Like the other interop tests it
/// needs the program (Debian: nginx-light; `.ci/deps` installs it) and is
/// skipped with `SHOAL_SKIP_INTEROP=1`.
#[test]
fn nginx_as_the_web_seed() {
    if std::env::var("SHOAL_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("note: nginx_as_the_web_seed skipped: SHOAL_SKIP_INTEROP=1");
        return;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let nginx = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .expect(
            "nginx_as_the_web_seed needs nginx. Install with `sudo apt-get install -y nginx-light` \
             (or run `bash .ci/deps` as root), or set SHOAL_SKIP_INTEROP=1 to skip the interop tests.",
        );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let www = d.join("www");
    make_tree(
        &www.join("pub"),
        &[
            ("pack/a b.bin", 1_000_000),
            ("pack/sub/c#1.bin", 777_777),
            ("pack/z.bin", 40_000),
        ],
    );
    let port = free_port();
    std::fs::create_dir_all(d.join("nginx")).unwrap();
    let conf = d.join("nginx/nginx.conf");
    let n = d.join("nginx");
    let n = n.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1;\n\
             pid {n}/nginx.pid; error_log {n}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               access_log {n}/access.log;\n\
               client_body_temp_path {n}/body; proxy_temp_path {n}/proxy;\n\
               fastcgi_temp_path {n}/fastcgi; uwsgi_temp_path {n}/uwsgi; scgi_temp_path {n}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {}; }}\n\
             }}\n",
            www.display()
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new(nginx)
        .args(["-p", &n.to_string(), "-c", conf.to_str().unwrap(), "-e"])
        .arg(d.join("nginx/error.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut server);
    wait_listening(port);

    let t = create(
        &www.join("pub/pack"),
        &d.join("pack.torrent"),
        32768,
        &[format!("http://127.0.0.1:{port}/pub/")],
    );
    let out = d.join("out");
    let mut p = download(d, t.to_str().unwrap(), &out, &[], "leecher");
    let done = finish(&mut p);
    assert_eq!(done["hash_failures"], 0, "{done}");
    assert_same_tree(&www.join("pub"), &out);
    let log = std::fs::read_to_string(d.join("nginx/access.log")).unwrap_or_default();
    assert!(log.contains("\" 206 "), "{log}");
}
