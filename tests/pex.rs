//! Peer exchange (BEP 11): a leecher that knows only one other leecher
//! learns of the seeder through that leecher's `ut_pex` message and
//! connects to it; with `--no-pex` it never does. The same over IPv6
//! (`::1`), where the seeder travels in `added6`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// B learns of the seeder through A; every address given is on `host`
/// (`127.0.0.1`, or `[::1]` for IPv6 peers in `added6`).
fn run(d: &Path, host: &str, extra: &[&str]) -> (String, u16) {
    make_tree(&d.join("src"), &[("pack/a.bin", 2_000_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 32768);
    // A slow seeder keeps everyone busy long enough to talk.
    let (_seed, seed_port) = seeder(
        d,
        &t,
        &d.join("src"),
        &["--quiet", "--upload-limit", "400k"],
    );
    let a_port = free_port();
    let _a = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            d.join("a").to_str().unwrap(),
            "--port",
            &a_port.to_string(),
            "--peer",
            &format!("{host}:{seed_port}"),
            "--seed",
            "--quiet",
        ],
        d,
        "a",
    );
    wait_listening(a_port);
    let mut args = vec![
        "download".to_string(),
        t.to_str().unwrap().into(),
        "-o".into(),
        d.join("b").to_str().unwrap().into(),
        "--port".into(),
        free_port().to_string(),
        "--peer".into(),
        format!("{host}:{a_port}"),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut b = Proc::spawn(&args, d, "b");
    assert!(
        b.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&b.stderr(), 30)
    );
    assert_same_tree(&d.join("src"), &d.join("b"));
    (b.stderr(), seed_port)
}

#[test]
fn a_leecher_learns_the_seeder_through_pex() {
    let dir = tempfile::tempdir().unwrap();
    let (log, seed_port) = run(dir.path(), "127.0.0.1", &[]);
    assert!(log.contains("pex named"), "{log}");
    // B knew only A, yet talked with a second peer: the seeder, which it
    // dialled after A named it (or which dialled B, after A named B to it;
    // the second connection between the two is then dropped as a duplicate).
    let peers: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains(": client shoal"))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(
        peers.len() >= 2 || log.contains(&format!("127.0.0.1:{seed_port}")),
        "B met only {peers:?}:\n{}",
        tail(&log, 40)
    );
}

#[test]
fn no_pex_means_no_pex() {
    let dir = tempfile::tempdir().unwrap();
    // Over TCP: the seeder (which has PEX) may dial B, and over uTP its
    // connection would come from its listening port, as B's own dial
    // would; over TCP it comes from another port.
    let (log, seed_port) = run(dir.path(), "127.0.0.1", &["--no-pex", "--transport", "tcp"]);
    assert!(!log.contains("pex named"), "{log}");
    // B never dials the seeder: nobody told it of it.
    assert!(!log.contains(&format!("127.0.0.1:{seed_port}: client shoal")));
}

/// IPv6 peers travel in PEX (`added6`): on `::1` only, B still meets the
/// seeder, at its IPv6 address.
#[test]
fn ipv6_peers_travel_in_pex() {
    let dir = tempfile::tempdir().unwrap();
    let (log, seed_port) = run(dir.path(), "[::1]", &[]);
    assert!(log.contains("pex named"), "{log}");
    let met: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains(": client shoal"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("[::1]:")))
        .collect();
    assert!(
        met.len() >= 2 || log.contains(&format!("[::1]:{seed_port}: client")),
        "B met only {met:?}:\n{}",
        tail(&log, 40)
    );
    assert!(!log.contains("127.0.0.1:"), "{}", tail(&log, 30));
}
