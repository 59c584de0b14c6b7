//! shoal against shoal on loopback, through the real binary: a seeder and
//! several leechers, resume, crash recovery, and a peer that lies.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A file boundary inside a piece, a zero-length file, a short last piece.
const FILES: &[(&str, usize)] = &[
    ("pack/a.bin", 700_000),
    ("pack/empty.txt", 0),
    ("pack/sub/b.bin", 1_300_001),
    ("pack/sub/c.txt", 4_321),
];
const PIECE: u32 = 32 * 1024;

fn total() -> u64 {
    FILES.iter().map(|f| f.1 as u64).sum()
}

fn setup(dir: &Path, trackers: &[String]) -> std::path::PathBuf {
    make_tree(&dir.join("src"), FILES);
    let t = create_torrent(
        &dir.join("src/pack"),
        &dir.join("pack.torrent"),
        trackers,
        PIECE,
    );
    assert_ne!(total() % PIECE as u64, 0, "last piece should be short");
    t
}

#[test]
fn seeder_and_three_leechers_through_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tracker = Tracker::start();
    let t = setup(d, &[tracker.url()]);
    let t = t.to_str().unwrap();
    let (mut seeder, sport) = seeder(d, Path::new(t), &d.join("src"), &["--json"]);
    let mut leechers = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let port = free_port();
        ports.push(port);
        let out = d.join(format!("l{i}"));
        leechers.push(Proc::spawn(
            &[
                "download",
                t,
                "-o",
                out.to_str().unwrap(),
                "--port",
                &port.to_string(),
                "--json",
            ],
            d,
            &format!("leecher{i}"),
        ));
    }
    for (i, l) in leechers.iter_mut().enumerate() {
        let status = l.wait(Duration::from_secs(90));
        assert!(status.success(), "leecher {i}: {}", tail(&l.stderr(), 30));
        let done = l.done_event();
        assert_eq!(done["complete"], true);
        assert_same_tree(&d.join("src"), &d.join(format!("l{i}")));
    }
    assert!(seeder.stop().success(), "{}", tail(&seeder.stderr(), 30));
    for port in &ports {
        let ev = tracker.events_of(*port);
        assert_eq!(ev.first().map(String::as_str), Some("started"), "{ev:?}");
        assert!(ev.contains(&"completed".to_string()), "{ev:?}");
        assert_eq!(ev.last().map(String::as_str), Some("stopped"), "{ev:?}");
    }
    let ev = tracker.events_of(sport);
    assert_eq!(ev.first().map(String::as_str), Some("started"), "{ev:?}");
    assert_eq!(ev.last().map(String::as_str), Some("stopped"), "{ev:?}");
    // Seeds announce no `completed`: they never downloaded.
    assert!(!ev.contains(&"completed".to_string()), "{ev:?}");
}

#[test]
fn leechers_through_peer_flag_without_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d, &[]);
    let t = t.to_str().unwrap();
    let (_seeder, sport) = seeder(d, Path::new(t), &d.join("src"), &["--quiet"]);
    let seed_addr = format!("127.0.0.1:{sport}");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut leechers = Vec::new();
    for i in 0..3 {
        let out = d.join(format!("l{i}"));
        let mut args = vec![
            "download".to_string(),
            t.to_string(),
            "-o".into(),
            out.display().to_string(),
            "--port".into(),
            ports[i].to_string(),
            "--json".into(),
            "--peer".into(),
            seed_addr.clone(),
        ];
        // Each leecher also knows the others, so they can trade.
        for (j, p) in ports.iter().enumerate() {
            if j != i {
                args.push("--peer".into());
                args.push(format!("127.0.0.1:{p}"));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        leechers.push(Proc::spawn(&args, d, &format!("leecher{i}")));
    }
    for (i, l) in leechers.iter_mut().enumerate() {
        assert!(
            l.wait(Duration::from_secs(90)).success(),
            "leecher {i}: {}",
            tail(&l.stderr(), 30)
        );
        assert_same_tree(&d.join("src"), &d.join(format!("l{i}")));
    }
}

#[test]
fn resume_fetches_only_missing_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d, &[]);
    let t = t.to_str().unwrap();
    // The leecher already holds the first file whole (and the empty one).
    let out = d.join("out");
    std::fs::create_dir_all(out.join("pack")).unwrap();
    std::fs::copy(d.join("src/pack/a.bin"), out.join("pack/a.bin")).unwrap();
    // Pieces lying wholly inside a.bin are had; the one straddling into b.bin is not.
    let had_pieces = 700_000 / PIECE as u64;
    let missing = total() - had_pieces * PIECE as u64;
    let (_seeder, sport) = seeder(d, Path::new(t), &d.join("src"), &["--quiet"]);
    let mut l = Proc::spawn(
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--json",
            "--peer",
            &format!("127.0.0.1:{sport}"),
        ],
        d,
        "leecher",
    );
    assert!(
        l.wait(Duration::from_secs(60)).success(),
        "{}",
        tail(&l.stderr(), 30)
    );
    let done = l.done_event();
    assert_eq!(done["downloaded"].as_u64().unwrap(), missing, "{done}");
    assert_same_tree(&d.join("src"), &out);
}

#[test]
fn killed_download_resumes_to_correct_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d, &[]);
    let t = t.to_str().unwrap();
    // A slow seeder (500 KB/s) so the kill lands mid-download.
    let (_seeder, sport) = seeder(
        d,
        Path::new(t),
        &d.join("src"),
        &["--quiet", "--upload-limit", "500000"],
    );
    let out = d.join("out");
    let peer = format!("127.0.0.1:{sport}");
    let mut had_at_kill = 0;
    for round in 0..3 {
        let mut l = Proc::spawn(
            &[
                "download",
                t,
                "-o",
                out.to_str().unwrap(),
                "--json",
                "--peer",
                &peer,
                "--port",
                &free_port().to_string(),
            ],
            d,
            &format!("leecher{round}"),
        );
        // Killed as soon as it verified more than last time (a loaded
        // machine may take its time to get there).
        let deadline = Instant::now() + Duration::from_secs(60);
        let have = loop {
            let have = last_event(&l.stdout(), "progress")
                .map_or(0, |p| p["have_bytes"].as_u64().unwrap());
            if have > had_at_kill || Instant::now() > deadline {
                break have;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(have < total(), "download finished before the kill");
        assert!(
            have >= had_at_kill,
            "verified data lost across a kill: {have} < {had_at_kill}"
        );
        l.signal(libc::SIGKILL);
        l.wait(Duration::from_secs(5));
        had_at_kill = have;
    }
    assert!(had_at_kill > 0, "nothing was verified before the kills");
    let mut l = Proc::spawn(
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--peer",
            &peer,
            "--port",
            &free_port().to_string(),
        ],
        d,
        "final",
    );
    assert!(
        l.wait(Duration::from_secs(60)).success(),
        "{}",
        tail(&l.stderr(), 30)
    );
    let done = l.done_event();
    // What was verified before the last kill is not fetched again.
    assert!(
        done["downloaded"].as_u64().unwrap() <= total() - had_at_kill,
        "{done} (had {had_at_kill} before the last kill)"
    );
    assert_same_tree(&d.join("src"), &out);
}

#[test]
fn download_over_ipv6_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d, &[]);
    let t = t.to_str().unwrap();
    let (_seeder, sport) = seeder(d, Path::new(t), &d.join("src"), &["--quiet"]);
    let out = d.join("out");
    let mut l = Proc::spawn(
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--quiet",
            "--peer",
            &format!("[::1]:{sport}"),
        ],
        d,
        "leecher",
    );
    assert!(
        l.wait(Duration::from_secs(60)).success(),
        "{}",
        tail(&l.stderr(), 30)
    );
    assert_same_tree(&d.join("src"), &out);
}
