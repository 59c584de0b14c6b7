//! What shoal prints: text from torrents and trackers never carries raw
//! control characters to the terminal, and stdout that goes away (a closed
//! pipe) or fills up (/dev/full) ends the command cleanly, never in a panic.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Bytes that would drive a terminal: ESC (colours, titles, cursor moves),
/// BEL, CR (overwrites the start of the line).
const EVIL: &[u8] = b"\x1b]0;owned\x07\x1b[2J\r";

fn bstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{}:", s.len()).as_bytes());
    out.extend_from_slice(s);
}

fn with_evil(prefix: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(EVIL);
    v
}

/// A two-file torrent whose comment, creator, names, tracker URLs and web
/// seed all carry `EVIL`; `announce` is given as is.
fn evil_torrent(announce: &[u8]) -> Vec<u8> {
    let mut info = b"d5:filesl".to_vec();
    for (name, len) in [(&b"a"[..], 5), (b"b", 7)] {
        info.extend_from_slice(format!("d6:lengthi{len}e4:pathl").as_bytes());
        bstr(&mut info, &with_evil(name));
        info.extend_from_slice(b"ee");
    }
    info.extend_from_slice(b"e4:name");
    bstr(&mut info, &with_evil(b"dir"));
    info.extend_from_slice(b"12:piece lengthi16384e6:pieces20:");
    info.extend_from_slice(&[7u8; 20]);
    info.push(b'e');
    let mut t = b"d8:announce".to_vec();
    bstr(&mut t, announce);
    t.extend_from_slice(b"13:announce-listll");
    bstr(&mut t, announce);
    bstr(&mut t, &with_evil(b"udp://x.example:1/"));
    t.extend_from_slice(b"ee7:comment");
    bstr(&mut t, &with_evil(b"hello"));
    t.extend_from_slice(b"10:created by");
    bstr(&mut t, &with_evil(b"maker"));
    t.extend_from_slice(b"4:info");
    t.extend_from_slice(&info);
    t.extend_from_slice(b"8:url-list");
    bstr(&mut t, &with_evil(b"http://w.example/"));
    t.push(b'e');
    t
}

fn assert_no_controls(what: &str, b: &[u8]) {
    let bad: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| matches!(c, 0x1b | 0x07 | b'\r'))
        .collect();
    assert!(
        bad.is_empty(),
        "{what} carries raw control bytes {bad:x?}:\n{}",
        String::from_utf8_lossy(b).escape_debug()
    );
}

#[test]
fn info_escapes_control_characters_from_the_torrent() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("evil.torrent");
    std::fs::write(&t, evil_torrent(&with_evil(b"http://t.example/a"))).unwrap();
    let o = Command::new(shoal_bin())
        .arg("info")
        .arg(&t)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_controls("stdout", &o.stdout);
    assert_no_controls("stderr", &o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    // Shown, escaped, on each line that carried them.
    // (Names are sanitised when the torrent loads: controls become `_`.)
    for field in ["comment:", "created by:", "tier 1:", "http://w.example/"] {
        let line = out.lines().find(|l| l.contains(field)).unwrap_or("");
        assert!(line.contains("\\x1b]0;owned\\x07"), "{field}: {out}");
    }
}

/// A tracker refusing every announce with a `failure reason` full of
/// control characters.
fn evil_tracker() -> (String, std::thread::JoinHandle<()>, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/announce",
        l.local_addr().unwrap().port()
    );
    let l2 = l.try_clone().unwrap();
    l2.set_nonblocking(false).unwrap();
    let thread = std::thread::spawn(move || {
        for s in l2.incoming() {
            let Ok(mut s) = s else { return };
            let mut req = [0u8; 4096];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            if s.read(&mut req).unwrap_or(0) == 0 {
                return; // the test's wake-up connection: time to stop
            }
            let mut body = b"d14:failure reason".to_vec();
            bstr(&mut body, &with_evil(b"go away"));
            body.push(b'e');
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            let _ = s.write_all(&r);
        }
    });
    (url, thread, l)
}

#[test]
fn tracker_failure_reason_is_escaped_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (url, thread, listener) = evil_tracker();
    let t = d.join("evil.torrent");
    std::fs::write(&t, evil_torrent(url.as_bytes())).unwrap();
    let out = d.join("out");
    let mut p = Proc::spawn(
        &["download", t.to_str().unwrap(), "-o", out.to_str().unwrap()],
        d,
        "leecher",
    );
    let start = Instant::now();
    while !p.stderr().contains("go away") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no tracker failure logged:\n{}",
            tail(&p.stderr(), 40)
        );
        if let Some(s) = p.child.try_wait().unwrap() {
            panic!("shoal exited ({s}):\n{}", tail(&p.stderr(), 40));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    p.stop();
    let err = std::fs::read(&p.err).unwrap();
    assert_no_controls("stderr", &err);
    assert!(
        String::from_utf8_lossy(&err).contains("go away\\x1b]0;owned\\x07"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    // Wake the tracker's accept loop so its thread ends.
    drop(std::net::TcpStream::connect(listener.local_addr().unwrap()));
    thread.join().unwrap();
}

fn sample_torrent(dir: &Path) -> std::path::PathBuf {
    // Many files, so the listing is longer than any pipe buffer.
    let files: Vec<(String, usize)> = (0..3000).map(|i| (format!("f/{i:05}.bin"), 1)).collect();
    let refs: Vec<(&str, usize)> = files.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    make_tree(&dir.join("src"), &refs);
    create_torrent(&dir.join("src/f"), &dir.join("t.torrent"), &[], 16384)
}

/// Runs shoal with stdout on a pipe whose reading end is already closed.
fn run_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(shoal_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample_torrent(dir.path());
    let t = t.to_str().unwrap();
    for args in [
        &["info", t][..],
        &["info", "--json", t],
        &["completions", "bash"],
    ] {
        let o = run_into_closed_pipe(args);
        assert_eq!(
            o.status.code(),
            Some(141),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A download whose `--json` reader went away stops too (exit 141),
/// instead of a panicking progress task and a download nobody watches.
#[test]
fn closed_pipe_ends_a_json_download() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample_torrent(dir.path());
    let out = dir.path().join("out");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(shoal_bin())
        .args([
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ])
        .env("SHOAL_NO_DHT", "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.and_then(|s| s.code()), Some(141), "{status:?}");
}

#[test]
fn full_stdout_is_one_error_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample_torrent(dir.path());
    let t = t.to_str().unwrap();
    for args in [&["info", t][..], &["info", "--json", t], &["man"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(shoal_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err, "error: stdout: No space left on device (os error 28)\n",
            "{args:?}"
        );
    }
}

/// File names on the user's own disk can carry controls too (a hidden
/// file named by a downloaded archive, say): `shoal create` lists the
/// files it skips.
#[test]
fn create_escapes_skipped_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.bin"), b"data").unwrap();
    std::fs::write(src.join(".x\x1b]0;owned\x07\r"), b"hidden").unwrap();
    let o = Command::new(shoal_bin())
        .arg("create")
        .arg(&src)
        .arg("-o")
        .arg(dir.path().join("t.torrent"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_controls("stderr", &o.stderr);
    assert_no_controls("stdout", &o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(".x\\x1b]0;owned\\x07\\r"), "{err}");
}
