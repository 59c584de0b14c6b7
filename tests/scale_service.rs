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
use serde_json::{json, Value};

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
    serve_in(d, state, dl, name, None)
}

/// `serve_limited`, with the state folder on a tmpfs of `tmpfs_kib` KiB
/// if asked: mounted in a mount namespace of the service's own, so it
/// goes when the service does; the test reaches it through
/// /proc/PID/root.
fn serve_in(d: &Path, state: &Path, dl: &Path, name: &str, tmpfs_kib: Option<u64>) -> Service {
    let target = std::ffi::CString::new(state.as_os_str().as_encoded_bytes()).unwrap();
    let opts = std::ffi::CString::new(format!("size={}k", tmpfs_kib.unwrap_or(0))).unwrap();
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
    // SAFETY: setrlimit, unshare and mount only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if tmpfs_kib.is_some() {
                let c = |r: libc::c_int| match r {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                };
                c(libc::unshare(libc::CLONE_NEWNS))?;
                let root = c"/";
                let (none, tmpfs) = (std::ptr::null(), c"tmpfs");
                let private = libc::MS_REC | libc::MS_PRIVATE;
                c(libc::mount(
                    none,
                    root.as_ptr(),
                    none,
                    private,
                    std::ptr::null(),
                ))?;
                c(libc::mount(
                    tmpfs.as_ptr(),
                    target.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    opts.as_ptr().cast(),
                ))?;
            }
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

/// The state folder's disk fills up: the add that cannot be saved is
/// refused with the disk's error and leaves nothing behind, the list on
/// disk stays whole, the metrics say saving fails, changes made meanwhile
/// still count; once there is room again the next save holds everything.
#[test]
fn a_full_state_disk_refuses_adds_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (state, dl) = (d.join("state"), d.join("dl"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&dl).unwrap();
    let svc = serve_in(d, &state, &dl, "svc", Some(512));
    // The tmpfs as the service sees it.
    let seen = PathBuf::from(format!("/proc/{}/root", svc.proc.child.id()))
        .join(state.strip_prefix("/").unwrap());
    let saved = || -> Vec<String> {
        let text = std::fs::read(seen.join("torrents.json")).unwrap();
        let v: Value = serde_json::from_slice(&text).expect("torrents.json is whole");
        let list = v["torrents"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|t| t["info_hash"].as_str().unwrap().to_string())
            .collect()
    };
    let magnet = |c: char| {
        let hash: String = std::iter::repeat_n(c, 40).collect();
        (
            hash.clone(),
            json!({ "magnet": format!("magnet:?xt=urn:btih:{hash}&dn={c}"), "paused": true }),
        )
    };
    let (a, add_a) = magnet('a');
    let (status, v) = json(svc.port, "POST", "/api/torrents", Some(add_a));
    assert_eq!(status, 201, "{v}");
    assert_eq!(saved(), vec![a.clone()]);
    assert_eq!(metric(svc.port, "shoal_state_save_failing"), 0);

    // Fill the disk.
    let filler = seen.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let full = loop {
        if let Err(e) = std::io::Write::write_all(&mut f, &chunk) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    drop(f);

    let (b, add_b) = magnet('b');
    let (status, v) = json(svc.port, "POST", "/api/torrents", Some(add_b.clone()));
    assert_eq!(status, 500, "{v}");
    let err = v["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("No space left") && err.contains("not added"),
        "{v}"
    );
    let hashes: Vec<String> = list(svc.port)
        .iter()
        .map(|t| t["info_hash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hashes, vec![a.clone()], "the refused add left an entry");
    assert_eq!(
        saved(),
        vec![a.clone()],
        "the list on disk changed or broke"
    );
    assert_eq!(metric(svc.port, "shoal_state_save_failing"), 1);
    // A change while the disk is full still counts in memory.
    let (status, v) = json(svc.port, "POST", &format!("/api/torrents/{a}/resume"), None);
    assert_eq!(status, 200, "{v}");

    // Room again: the next add is saved, and with it everything since.
    std::fs::remove_file(&filler).unwrap();
    let (status, v) = json(svc.port, "POST", "/api/torrents", Some(add_b));
    assert_eq!(status, 201, "{v}");
    assert_eq!(saved(), vec![a.clone(), b]);
    let text = std::fs::read_to_string(seen.join("torrents.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["torrents"][0]["paused"], false,
        "the resume was lost: {text}"
    );
    assert_eq!(metric(svc.port, "shoal_state_save_failing"), 0);
    let err = svc.proc.stderr();
    assert!(
        err.contains("No space left"),
        "the failure was not logged:\n{}",
        tail(&err, 20)
    );
}
