//! A hundred torrents in one `shoal serve` (issue 24; the figures for a
//! thousand come from `benches/scale.sh --service 1000`): 99 complete on
//! disk and one downloaded from a local seeder, 1–20 files each, added
//! through the API under a descriptor limit of 256. All seed, without
//! "too many open files" and without a descriptor per torrent. After a
//! restart they seed again without hashing anything (the fast-resume
//! record is trusted: the metrics count it and no byte is hashed), except
//! a torrent whose file was rewritten while the service was stopped,
//! which is checked again, and one whose files were moved away, which
//! stops with an error naming them while the rest keep seeding. Killed
//! (SIGKILL) while it saves its state, it comes back with all of them.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::service::*;
use common::*;
use serde_json::Value;

const TORRENTS: usize = 100;
/// The one downloaded from a seeder.
const DOWNLOADED: usize = 50;
/// Rewritten while the service is stopped, and moved away.
const CHANGED: usize = 7;
const MOVED: usize = 8;
/// Descriptors the service may open.
const NOFILE: u64 = 256;

fn name(i: usize) -> String {
    format!("t{i:03}")
}

/// Torrent i's files: 1–20 of 1–6 kB.
fn files_of(i: usize) -> Vec<(String, usize)> {
    (0..i % 20 + 1)
        .map(|k| {
            (
                format!("{}/f{k:02}.bin", name(i)),
                1000 + (i * 131 + k * 977) % 5000,
            )
        })
        .collect()
}

/// `shoal serve` with RLIMIT_NOFILE set to `NOFILE` (soft and hard).
fn serve_limited(d: &Path, state: &Path, dl: &Path, name: &str) -> Service {
    let port = free_port();
    let log = |ext: &str| std::fs::File::create(d.join(format!("{name}.{ext}"))).unwrap();
    let mut cmd = Command::new(shoal_bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(state)
        .arg("--download-dir")
        .arg(dl)
        .args(["--port", &free_port().to_string()])
        .env("SHOAL_NO_DHT", "1")
        .env("SHOAL_NO_LSD", "1")
        .env("SHOAL_NO_PORT_MAPPING", "1")
        .env("SHOAL_LOG", "shoal=info")
        .stdin(Stdio::null())
        .stdout(log("out"))
        .stderr(log("err"));
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn shoal serve");
    let proc = Proc {
        child,
        out: d.join(format!("{name}.out")),
        err: d.join(format!("{name}.err")),
    };
    wait_listening(port);
    Service { proc, port }
}

fn list(port: u16) -> Vec<Value> {
    let (status, v) = json(port, "GET", "/api/torrents", None);
    assert_eq!(status, 200);
    v.as_array().cloned().unwrap_or_default()
}

/// Polls the list until `done` holds for it (bounded; no timing asserted).
fn wait_list(port: u16, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let l = list(port);
        if done(&l) {
            return l;
        }
        let states: Vec<String> = l
            .iter()
            .filter(|t| t["state"] != "seeding")
            .map(|t| format!("{} {} {}", t["name"], t["state"], t["error"]))
            .collect();
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not {what} after 600 s; not seeding: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn seeding(l: &[Value]) -> usize {
    l.iter().filter(|t| t["state"] == "seeding").count()
}

fn metric(port: u16, name: &str) -> u64 {
    let (status, _, body) = http(port, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn assert_no_fd_exhaustion(svc: &Service) {
    let err = svc.proc.stderr().to_ascii_lowercase();
    assert!(
        !err.contains("too many open files") && !err.contains("os error 24"),
        "descriptors ran out:\n{}",
        tail(&err, 40)
    );
}

/// The torrents, made: (path of the .torrent, its folder of data).
fn make_torrents(d: &Path, dl: &Path, src: &Path, tracker: &str) -> Vec<PathBuf> {
    (0..TORRENTS)
        .map(|i| {
            let root = if i == DOWNLOADED { src } else { dl };
            let files = files_of(i);
            let refs: Vec<(&str, usize)> = files.iter().map(|(p, n)| (p.as_str(), *n)).collect();
            make_tree(root, &refs);
            let trackers = if i == DOWNLOADED {
                vec![tracker.to_string()]
            } else {
                Vec::new()
            };
            let out = d.join("torrents").join(format!("{}.torrent", name(i)));
            create_torrent(&root.join(name(i)), &out, &trackers, 16384)
        })
        .collect()
}

#[test]
fn a_hundred_torrents_seed_under_a_low_descriptor_limit_and_restart_without_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (dl, src, state) = (d.join("dl"), d.join("src"), d.join("state"));
    for p in [&dl, &src, &d.join("torrents")] {
        std::fs::create_dir_all(p).unwrap();
    }
    let tracker = Tracker::start();
    let torrents = make_torrents(d, &dl, &src, &tracker.url());
    let (_seeder, _) = seeder(d, &torrents[DOWNLOADED], &src, &["--quiet"]);

    let mut svc = serve_limited(d, &state, &dl, "serve1");
    let mut hashes = Vec::new();
    for t in &torrents {
        let bytes = std::fs::read(t).unwrap();
        let (status, _, body) = http(
            svc.port,
            "POST",
            "/api/torrents",
            &[("Content-Type", "application/x-bittorrent")],
            &bytes,
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        hashes.push(v["info_hash"].as_str().unwrap().to_string());
    }
    let l = wait_list(svc.port, "all seeding", |l| seeding(l) == TORRENTS);
    assert_eq!(l.len(), TORRENTS);
    assert_no_fd_exhaustion(&svc);
    // Seeding torrents hold no descriptor of their own (no folder lock,
    // no open file while nobody asks for data).
    let fds = open_fds(svc.proc.child.id());
    assert!(
        fds < TORRENTS / 2,
        "{fds} descriptors open for {TORRENTS} torrents"
    );
    assert_eq!(metric(svc.port, "shoal_fast_resumed_total"), 0);
    assert!(svc.proc.stop().success());

    // While stopped: one torrent's file rewritten in place (same length),
    // another's folder moved away.
    let changed = dl.join(name(CHANGED)).join("f00.bin");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes.iter_mut().for_each(|b| *b = !*b);
    std::fs::write(&changed, &bytes).unwrap();
    std::fs::rename(dl.join(name(MOVED)), d.join("moved-away")).unwrap();

    let mut svc = serve_limited(d, &state, &dl, "serve2");
    let l = wait_list(svc.port, "back after the restart", |l| {
        let by = |i: usize| l.iter().find(|t| t["info_hash"] == hashes[i]).cloned();
        seeding(l) == TORRENTS - 2
            && by(MOVED).is_some_and(|t| t["state"] == "error")
            && by(CHANGED).is_some_and(|t| t["state"] == "downloading")
    });
    let by = |i: usize| l.iter().find(|t| t["info_hash"] == hashes[i]).unwrap();
    // Moved away: an error that says so, for that torrent alone.
    let error = by(MOVED)["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("gone since the last run") && error.contains(&name(MOVED)),
        "{error}"
    );
    // Rewritten: checked again, and its changed piece is missing now.
    assert!(by(CHANGED)["progress"].as_f64().unwrap() < 1.0);
    // Every other one trusted its record: nothing hashed but the one
    // torrent whose file changed.
    assert_eq!(
        metric(svc.port, "shoal_fast_resumed_total"),
        TORRENTS as u64 - 2
    );
    assert_eq!(metric(svc.port, "shoal_fast_resume_distrusted_total"), 2);
    let changed_total = by(CHANGED)["total"].as_u64().unwrap();
    let hashed = metric(svc.port, "shoal_checked_bytes_total");
    assert!(
        hashed > 0 && hashed <= changed_total,
        "{hashed} bytes hashed; only the changed torrent's {changed_total} should be"
    );
    assert!(
        svc.proc.stderr().contains("checking the data again"),
        "{}",
        tail(&svc.proc.stderr(), 20)
    );
    assert_no_fd_exhaustion(&svc);

    // SIGKILL while the state file is being saved over and over (each
    // pause asks for a save): the restart still has every torrent.
    for h in &hashes[..TORRENTS / 2] {
        let (status, _, _) = http(
            svc.port,
            "POST",
            &format!("/api/torrents/{h}/pause"),
            &[],
            b"",
        );
        assert_eq!(status, 200);
    }
    svc.proc.signal(libc::SIGKILL);
    svc.proc.wait(Duration::from_secs(15));
    let svc = serve_limited(d, &state, &dl, "serve3");
    let l = list(svc.port);
    let mut back: Vec<&str> = l.iter().filter_map(|t| t["info_hash"].as_str()).collect();
    back.sort_unstable();
    let mut all: Vec<&str> = hashes.iter().map(String::as_str).collect();
    all.sort_unstable();
    assert_eq!(back, all, "torrents lost to a SIGKILL during a save");
}
