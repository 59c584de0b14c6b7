//! A user's files are never destroyed, and the first minutes give clear
//! answers: existing files, over-long files, two processes on one file,
//! big sparse files on restart, signals, and usage errors. Each runs the
//! real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn shoal(args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .args(args)
        .output()
        .expect("run shoal")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The "movie" torrent: a 13-byte README and a 1 MiB video.
fn movie(d: &Path) -> PathBuf {
    let src = d.join("src/movie");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.txt"), b"hello, world\n").unwrap();
    std::fs::write(src.join("video.mkv"), data(1 << 20, 7)).unwrap();
    create_torrent(&src, &d.join("movie.torrent"), &[], 16384)
}

fn download_args<'a>(t: &'a str, out: &'a str, peer: &'a str, port: &'a str) -> Vec<&'a str> {
    vec![
        "download", t, "-o", out, "--peer", peer, "--port", port, "--quiet",
    ]
}

fn user_files(out: &Path) {
    std::fs::create_dir_all(out.join("movie")).unwrap();
    std::fs::write(
        out.join("movie/README.txt"),
        b"MY OWN NOTES - irreplaceable, 2 lines\n",
    )
    .unwrap();
    std::fs::write(out.join("movie/video.mkv"), b"my thesis draft\n").unwrap();
}

fn run_download(d: &Path, t: &Path, out: &Path, port: u16, extra: &[&str], name: &str) -> Proc {
    let t = t.to_str().unwrap().to_string();
    let out = out.to_str().unwrap().to_string();
    let peer = format!("127.0.0.1:{port}");
    let own = free_port().to_string();
    let mut args = download_args(&t, &out, &peer, &own);
    args.extend_from_slice(extra);
    Proc::spawn(&args, d, name)
}

/// The scenario: the user's README.txt and video.mkv are in the
/// way. shoal refuses, naming both and the flag, and changes nothing;
/// `--overwrite` replaces them and the result verifies.
#[test]
fn files_in_the_way_are_refused_then_replaced_with_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = movie(d);
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let out = d.join("out");
    user_files(&out);

    let mut p = run_download(d, &t, &out, port, &[], "refused");
    let status = p.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", p.stderr());
    let err = p.stderr();
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
    assert!(
        line.contains("README.txt") && line.contains("video.mkv"),
        "{err}"
    );
    assert!(line.contains("--overwrite"), "{err}");
    assert_eq!(
        std::fs::read(out.join("movie/README.txt")).unwrap(),
        b"MY OWN NOTES - irreplaceable, 2 lines\n"
    );
    assert_eq!(
        std::fs::read(out.join("movie/video.mkv")).unwrap(),
        b"my thesis draft\n"
    );
    // Nothing else was created either, not even shoal's record.
    assert!(!out.join(".shoal").exists());
    assert_eq!(
        list_files(&out),
        vec![
            PathBuf::from("movie/README.txt"),
            PathBuf::from("movie/video.mkv")
        ]
    );

    let mut p = run_download(d, &t, &out, port, &["--overwrite"], "overwrite");
    let status = p.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", p.stderr());
    assert_same_tree(&d.join("src/movie"), &out.join("movie"));
    let v = shoal(&["verify", t.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
}

/// A file that is not shoal's but holds the torrent's data (the user
/// copied it there) is used as it is; one of the right length with other
/// bytes is refused.
#[test]
fn matching_data_is_used_and_same_length_junk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = movie(d);
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let out = d.join("out");
    std::fs::create_dir_all(out.join("movie")).unwrap();
    std::fs::copy(d.join("src/movie/video.mkv"), out.join("movie/video.mkv")).unwrap();
    let mut p = run_download(d, &t, &out, port, &["--json"], "copied");
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    assert_same_tree(&d.join("src/movie"), &out.join("movie"));
    // Only the README came over the wire.
    let done = p.done_event();
    assert!(done["downloaded"].as_u64().unwrap() < 100_000, "{done}");

    let out2 = d.join("out2");
    std::fs::create_dir_all(out2.join("movie")).unwrap();
    std::fs::write(out2.join("movie/README.txt"), b"hello, WORLD\n").unwrap();
    let mut p = run_download(d, &t, &out2, port, &[], "junk");
    assert_eq!(p.wait(Duration::from_secs(60)).code(), Some(1));
    assert!(p.stderr().contains("different content"), "{}", p.stderr());
    assert_eq!(
        std::fs::read(out2.join("movie/README.txt")).unwrap(),
        b"hello, WORLD\n"
    );
}

/// shoal's own files resume (a killed download is not refused as
/// foreign), and one it owns that grew past its length is cut back;
/// `verify` reports an over-long file as bad, with both sizes.
#[test]
fn own_files_resume_and_over_long_files_are_bad() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = movie(d);
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let out = d.join("out");
    let mut p = run_download(d, &t, &out, port, &[], "first");
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("movie/README.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"tail").unwrap();
    drop(f);
    let v = shoal(&["verify", t.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(1));
    let text = String::from_utf8_lossy(&v.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("README.txt"))
        .unwrap_or("");
    assert!(line.starts_with("bad"), "{text}");
    assert!(
        line.contains("17 bytes on disk") && line.contains("says 13"),
        "{text}"
    );
    let j = shoal(&[
        "verify",
        t.to_str().unwrap(),
        out.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["files"][0]["too_long"], true, "{v}");
    assert_eq!(v["files"][0]["size_on_disk"], 17, "{v}");

    // A corrupted piece of shoal's own file is fetched again, no refusal.
    let video = out.join("movie/video.mkv");
    let mut bytes = std::fs::read(&video).unwrap();
    bytes[500_000] ^= 0xff;
    std::fs::write(&video, &bytes).unwrap();
    let mut p = run_download(d, &t, &out, port, &[], "again");
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    assert_same_tree(&d.join("src/movie"), &out.join("movie"));
    let v = shoal(&["verify", t.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
}

/// A download of `t` into `out` that must be refused at once (exit 1)
/// with `expect` in its one-line error.
fn refused_while_running(t: &Path, out: &Path, peer: &str, extra: &[&str], expect: &str) {
    let mut args = vec![
        "download",
        t.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--peer",
        peer,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let o = shoal(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(expect), "{}", stderr(&o));
}

/// Two processes on the same torrent and folder: the second is refused at
/// once with a clear error and exit 1; and a different torrent naming the
/// same file is refused even with --overwrite while the first runs.
#[test]
fn a_second_process_on_the_same_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = movie(d);
    let out = d.join("out");
    // A slow seeder keeps the first download running for a while.
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet", "--upload-limit", "32k"]);
    let first = run_download(d, &t, &out, port, &[], "first");
    let dead = format!("127.0.0.1:{}", free_port());
    let record = out.join(".shoal");
    let start = std::time::Instant::now();
    while !out.join("movie/video.mkv").exists() || !record.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            first.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    refused_while_running(
        &t,
        &out,
        &dead,
        &[],
        "another shoal process is already downloading",
    );

    // Another torrent with a file at the same path.
    let other_src = d.join("other/movie");
    std::fs::create_dir_all(&other_src).unwrap();
    std::fs::write(other_src.join("video.mkv"), data(300_000, 9)).unwrap();
    let t2 = create_torrent(&other_src, &d.join("other.torrent"), &[], 16384);
    refused_while_running(
        &t2,
        &out,
        &dead,
        &["--overwrite"],
        "being downloaded by another shoal process",
    );
    // The same file reached through another folder (a single-file torrent
    // of the video, downloaded into out/movie): its own records know
    // nothing of the first download, but the first download's record in
    // the folder above names the file, and its lock is held.
    let lone = d.join("lone.torrent");
    let video = d.join("src/movie/video.mkv");
    create_torrent(&video, &lone, &[], 16384);
    refused_while_running(
        &lone,
        &out.join("movie"),
        &dead,
        &["--overwrite"],
        "being downloaded by another shoal process",
    );
    assert_eq!(
        std::fs::metadata(out.join("movie/video.mkv"))
            .unwrap()
            .len(),
        1 << 20
    );
    drop(first);
}

/// `--download-limit` holds a download to its rate: 1 MiB at 200 KiB/s
/// cannot finish in under 3 s however fast the machine (a lower bound,
/// so a slow machine cannot make it fail).
#[test]
fn download_limit_holds_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = movie(d);
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let start = std::time::Instant::now();
    let mut p = run_download(
        d,
        &t,
        &d.join("out"),
        port,
        &["--download-limit", "200k"],
        "lim",
    );
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "1 MiB at 200 KiB/s took {took:?}"
    );
    assert_same_tree(&d.join("src/movie"), &d.join("out/movie"));
}

/// A restart over a big sparse file (shoal's own, never written) finds
/// the holes instead of hashing them: 64 GiB of holes would take minutes
/// to read; the check has to finish while the run is still young, and
/// Ctrl-C then exits 130 with a one-line message.
#[test]
fn restart_over_sparse_holes_is_quick_and_ctrl_c_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A torrent of a 64 GiB file whose hashes nothing will match.
    let len: u64 = 64 << 30;
    let piece: u64 = 16 << 20;
    let t = shoal::metainfo::NewTorrent {
        name: "big.img".into(),
        length: len,
        piece_length: piece,
        pieces: vec![0xab; 20 * (len / piece) as usize],
        ..Default::default()
    };
    let tp = d.join("big.torrent");
    std::fs::write(&tp, t.to_bytes()).unwrap();
    let out = d.join("out");
    let dead = format!("127.0.0.1:{}", free_port());
    let args = [
        "download",
        tp.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--peer",
        &dead,
        "--json",
    ];
    // The first run claims the file (its record); it is then made the
    // sparse file a download leaves, and the second run must check it.
    let mut first = Proc::spawn(&args, d, "first");
    let start = std::time::Instant::now();
    while !out.join(".shoal").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            first.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.stop();
    std::fs::File::create(out.join("big.img"))
        .unwrap()
        .set_len(len)
        .unwrap();
    let mut second = Proc::spawn(&args, d, "second");
    // Past the check, the coordinator reports progress with the full size.
    let start = std::time::Instant::now();
    loop {
        let past_check = second
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["event"] == "progress" && v["state"] != "checking");
        if past_check {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still checking 64 GiB of holes after 60 s:\n{}",
            second.stdout()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    second.signal(libc::SIGINT);
    let status = second.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{}", second.stderr());
    let err = second.stderr();
    assert!(err.contains("interrupted"), "{err}");
    assert!(!err.contains("error:"), "{err}");
}

/// SIGTERM stops a download with 143 and a one-line note, not "error:".
#[test]
fn sigterm_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = movie(d);
    let dead = format!("127.0.0.1:{}", free_port());
    let out = d.join("out");
    let mut p = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--peer",
            &dead,
            "--quiet",
        ],
        d,
        "dl",
    );
    let start = std::time::Instant::now();
    while !out.join(".shoal").exists() {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = p.stop();
    assert_eq!(status.code(), Some(143), "{}", p.stderr());
    assert!(
        p.stderr().contains("run the same command again"),
        "{}",
        p.stderr()
    );
}

/// Usage errors exit 2 with clap's message; a broken magnet link is one,
/// and `seed` of a magnet says what to do instead.
#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let t = movie(dir.path());
    let t = t.to_str().unwrap();
    for (args, expect) in [
        (
            vec!["download", "magnet:?xt=urn:btih:0123456789abcdef"],
            "neither 40 hex nor 32 base32",
        ),
        (
            vec![
                "seed",
                "MAGNET:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",
            ],
            "seed needs a .torrent file",
        ),
        (vec!["download", t, "--peer", "nonsense"], "HOST:PORT"),
        (vec!["download", t, "--peer", "127.0.0.1:0"], "HOST:PORT"),
        (vec!["download", t, "--max-peers", "0"], "max-peers"),
        (
            vec!["download", t, "--upload-limit", "0"],
            "at least 1 byte",
        ),
        (
            vec!["download", t, "--download-limit", "3 parsecs"],
            "unknown unit",
        ),
        (
            vec!["create", "x", "--piece-length", "big"],
            "expected a size",
        ),
        (vec!["download"], "TORRENT"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ] {
        let o = shoal(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
    }
}

/// Each fact once: a truncated torrent's bencode error is not repeated.
#[test]
fn errors_say_each_fact_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = movie(dir.path());
    let bytes = std::fs::read(&t).unwrap();
    let cut = dir.path().join("cut.torrent");
    std::fs::write(&cut, &bytes[..300]).unwrap();
    let o = shoal(&["info", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("unexpected end of data").count(), 1, "{err}");
}

/// `create` checks its URLs and output before hashing and counts right;
/// `verify` given the content folder itself points at its parent.
#[test]
fn create_and_verify_catch_common_slips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pack")).unwrap();
    std::fs::write(d.join("pack/a"), b"abc").unwrap();
    std::fs::write(d.join("pack/.secret"), b"x").unwrap();
    let pack = d.join("pack");
    let pack = pack.to_str().unwrap();
    let o = shoal(&["create", pack, "-o", "/nonexistent/dir/x.torrent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = shoal(&["create", pack, "-o", "/tmp/x.torrent", "-t", "htp:/nohost"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--tracker"), "{}", stderr(&o));
    let o = shoal(&[
        "create",
        pack,
        "-o",
        "/tmp/x.torrent",
        "--web-seed",
        "udp://x:1/",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--web-seed"), "{}", stderr(&o));
    let tp = d.join("pack.torrent");
    let o = shoal(&[
        "create",
        pack,
        "-o",
        tp.to_str().unwrap(),
        "--piece-length",
        "16k",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("1 piece of 16.0 KiB"), "{text}");
    assert!(stderr(&o).contains(".secret"), "{}", stderr(&o));

    let o = shoal(&["verify", tp.to_str().unwrap(), pack]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("content folder itself"), "{err}");
    assert!(
        err.contains(&format!("shoal verify TORRENT {}", d.display())),
        "{err}"
    );
}

/// Completions and the manual page are generated by the binary.
#[test]
fn completions_and_man_page() {
    let o = shoal(&["completions", "bash"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("--overwrite"));
    let o = shoal(&["man"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(".TH shoal"), "{text}");
}
