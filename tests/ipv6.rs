//! IPv6 end to end, on `::1` only (issue 21): a tracker that answers
//! `peers6` alone, reached over IPv6, brings two shoal processes together
//! over IPv6; and IPv6 peers travel in PEX (`added6`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// An HTTP tracker on `[::1]` that answers every announce with `peers6`
/// only (no IPv4 `peers`): the seeder at `[::1]:seed_port`. Returns its
/// announce URL and the query strings it got.
fn peers6_tracker(seed_port: u16) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            log.lock().unwrap().push(line.clone());
            let mut peers6 = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
            peers6.extend_from_slice(&seed_port.to_be_bytes());
            let mut body = b"d8:intervali60e6:peers618:".to_vec();
            body.extend_from_slice(&peers6);
            body.push(b'e');
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    (format!("http://[::1]:{port}/announce"), seen)
}

fn ipv6_seeder(d: &Path, t: &Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let (port_s, from) = (port.to_string(), d.join("src"));
    let mut args = vec![
        "seed",
        t.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
        "--port",
        &port_s,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args, d, "seeder");
    wait_listening(port);
    (p, port)
}

#[test]
fn a_peers6_only_tracker_brings_two_shoals_together_over_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 600_000)]);
    // The seeder needs no tracker; its port must be known to the tracker.
    let plain = create_torrent(&d.join("src/pack"), &d.join("plain.torrent"), &[], 16384);
    let (_seeder, sport) = ipv6_seeder(d, &plain, &["--quiet"]);
    let (url, seen) = peers6_tracker(sport);
    let t = create_torrent(&d.join("src/pack"), &d.join("v6.torrent"), &[url], 16384);
    let mut l = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--json",
        ],
        d,
        "leecher",
    );
    assert!(
        l.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&l.stderr(), 30)
    );
    assert_same_tree(&d.join("src"), &d.join("out"));
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|q| q.contains("info_hash=")),
        "the tracker was never asked"
    );
    let log = l.stderr();
    assert!(
        log.contains(&format!("[::1]:{sport}: client shoal")),
        "{}",
        tail(&log, 30)
    );
    // Only IPv6 was there to use.
    assert!(!log.contains("127.0.0.1:"), "{}", tail(&log, 30));
}

/// A leecher that knows only another leecher (by `[::1]`) learns of the
/// seeder's IPv6 address through that leecher's `ut_pex` (`added6`).
#[test]
fn ipv6_peers_travel_in_pex() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 2_000_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 32768);
    // A slow seeder keeps everyone busy long enough to talk.
    let (_seed, sport) = ipv6_seeder(d, &t, &["--quiet", "--upload-limit", "400k"]);
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
            &format!("[::1]:{sport}"),
            "--seed",
            "--quiet",
        ],
        d,
        "a",
    );
    wait_listening(a_port);
    let mut b = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            d.join("b").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--peer",
            &format!("[::1]:{a_port}"),
            "--json",
        ],
        d,
        "b",
    );
    assert!(
        b.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&b.stderr(), 30)
    );
    assert_same_tree(&d.join("src"), &d.join("b"));
    let log = b.stderr();
    assert!(log.contains("pex named"), "{}", tail(&log, 40));
    // B talked with the seeder at its IPv6 address, which only A's PEX
    // could have told it (or the seeder dialled B after A named B to it).
    let met: std::collections::HashSet<&str> = log
        .lines()
        .filter(|l| l.contains(": client shoal"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("[::1]:")))
        .collect();
    assert!(met.len() >= 2, "B met only {met:?}:\n{}", tail(&log, 40));
    assert!(!log.contains("127.0.0.1:"), "{}", tail(&log, 30));
}
