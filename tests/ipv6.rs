//! IPv6 end to end, on `::1` only (issue 21): a tracker that answers
//! `peers6` alone, reached over IPv6, brings two shoal processes together
//! over IPv6. (IPv6 peers in PEX, `added6`: tests/pex.rs.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
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

#[test]
fn a_peers6_only_tracker_brings_two_shoals_together_over_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 600_000)]);
    // The seeder needs no tracker; its port must be known to the tracker.
    let plain = create_torrent(&d.join("src/pack"), &d.join("plain.torrent"), &[], 16384);
    let (_seeder, sport) = seeder(d, &plain, &d.join("src"), &["--quiet"]);
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
