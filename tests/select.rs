//! File selection: `--list`, `--select`, `--only`. A three-file torrent
//! whose files share pieces: files 0 and 2 selected download exactly
//! those (byte checks), file 1 is never created (its share of the shared
//! pieces sits in the part file under .shoal/), and a later run selecting
//! file 1 completes it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn download(d: &Path, t: &Path, port: u16, extra: &[&str], name: &str) -> Proc {
    let out = d.join("out");
    let mut args = vec![
        "download",
        t.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--peer",
    ];
    let peer = format!("127.0.0.1:{port}");
    args.push(&peer);
    let own = free_port().to_string();
    args.extend(["--port", &own, "--json"]);
    args.extend_from_slice(extra);
    Proc::spawn(&args, d, name)
}

#[test]
fn selected_files_only_then_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 16 KiB pieces; file boundaries inside pieces on both sides of b.
    make_tree(
        &d.join("src"),
        &[
            ("pack/a.mkv", 100_000),
            ("pack/b.txt", 40_000),
            ("pack/c.mkv", 70_001),
        ],
    );
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384);
    let list = Command::new(shoal_bin())
        .args(["download", t.to_str().unwrap(), "--list"])
        .output()
        .unwrap();
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].trim_start().starts_with("1 ") && lines[1].ends_with("pack/b.txt"),
        "{text}"
    );
    assert!(!d.join("out").exists(), "--list wrote something");

    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let mut p = download(d, &t, port, &["--select", "0,2"], "sel");
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    let out = d.join("out/pack");
    for f in ["a.mkv", "c.mkv"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(d.join("src/pack").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!out.join("b.txt").exists(), "a file left out was created");
    assert_eq!(p.done_event()["complete"], true);
    // Only the pieces of a and c (and the two shared with b) came over.
    let got = p.done_event()["downloaded"].as_u64().unwrap();
    assert!(got < 100_000 + 70_001 + 2 * 16384 + 1, "{got}");

    // The rest, by glob this time: b completes, a and c are not fetched again.
    let mut p = download(d, &t, port, &["--only", "*.txt"], "rest");
    assert!(p.wait(Duration::from_secs(60)).success(), "{}", p.stderr());
    assert_same_tree(&d.join("src"), &d.join("out"));
    let got = p.done_event()["downloaded"].as_u64().unwrap();
    assert!(got <= 40_000 + 2 * 16384, "{got}");
    let v = Command::new(shoal_bin())
        .args([
            "verify",
            t.to_str().unwrap(),
            d.join("out").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn bad_selections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a", 10), ("pack/b", 10)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384);
    let run = |args: &[&str]| {
        Command::new(shoal_bin())
            .args(["download", t.to_str().unwrap(), "-o"])
            .arg(d.join("out"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["--select", "1-x"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["--select", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("file 2 does not exist"));
    let o = run(&["--only", "*.iso"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("matches no file"));
    assert!(!d.join("out").join("pack").exists());
}

/// Seeding policy: `--seed-ratio 1` stops a seeder (exit 0) once it has
/// sent the torrent's size; `--seed-time 1s` stops one with no peers.
#[test]
fn seeding_stops_at_its_ratio_or_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a", 300_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384);
    let (mut seed, port) = seeder(d, &t, &d.join("src"), &["--seed-ratio", "1", "--json"]);
    let mut l = download(d, &t, port, &[], "leech");
    assert!(l.wait(Duration::from_secs(60)).success(), "{}", l.stderr());
    let st = seed.wait(Duration::from_secs(30));
    assert!(st.success(), "{}", seed.stderr());
    assert!(seed.done_event()["uploaded"].as_u64().unwrap() >= 300_000);

    let mut idle = Proc::spawn(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--seed-time",
            "1s",
            "--quiet",
        ],
        d,
        "idle",
    );
    assert!(
        idle.wait(Duration::from_secs(30)).success(),
        "{}",
        idle.stderr()
    );
}

/// A seeder that reaches `--seed-ratio 1` while a slow leecher still has
/// data queued for it lets that data go out before it exits (the writer
/// drains its queue, the socket closes gracefully): the leecher, with no
/// one else to ask, still gets the whole file.
#[test]
fn seed_ratio_stop_delivers_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a", 3_000_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 65536);
    let (mut seed, port) = seeder(d, &t, &d.join("src"), &["--seed-ratio", "1", "--json"]);
    let mut l = download(d, &t, port, &["--download-limit", "400000"], "leech");
    assert!(l.wait(Duration::from_secs(60)).success(), "{}", l.stderr());
    assert_eq!(l.done_event()["complete"], true);
    assert!(
        seed.wait(Duration::from_secs(30)).success(),
        "{}",
        seed.stderr()
    );
    assert_same_tree(&d.join("src"), &d.join("out"));
}
