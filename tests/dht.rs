//! A swarm without trackers: a seeder and five leechers of shoal, given
//! only a magnet link (no tracker, no peer address) and a DHT bootstrap
//! node on loopback, all finish; then the bootstrap node is gone, the
//! seeder's node gets a burst of junk datagrams, and newcomers still join
//! through the swarm's own DHT nodes and finish.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn leecher(d: &Path, magnet: &str, bootstrap: &str, i: usize) -> Proc {
    let out = d.join(format!("l{i}"));
    let state = d.join(format!("state{i}"));
    Proc::spawn_dht(
        &[
            "download",
            magnet,
            "-o",
            out.to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--dht-bootstrap",
            bootstrap,
            "--state-dir",
            state.to_str().unwrap(),
            "--json",
        ],
        d,
        &format!("l{i}"),
    )
}

fn wait_all(d: &Path, ls: &mut [(usize, Proc)]) {
    for (i, l) in ls.iter_mut() {
        let st = l.wait(Duration::from_secs(120));
        assert!(st.success(), "leecher {i}: {}", tail(&l.stderr(), 30));
        assert_same_tree(&d.join("src"), &d.join(format!("l{i}")));
    }
}

#[test]
fn trackerless_swarm_finishes_and_outlives_its_bootstrap_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 3_000_000), ("pack/b.bin", 1_234_567)],
    );
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 65536);
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=pack", hex::encode(info_hash(&t)));

    let boot_port = free_port();
    let boot = mainline::Dht::builder()
        .server_mode()
        .no_bootstrap()
        .bind_address(Ipv4Addr::LOCALHOST)
        .port(boot_port)
        .build()
        .unwrap();
    let boot_addr = format!("127.0.0.1:{boot_port}");

    // The seeder's DHT node has a UDP port of its own (uTP has the UDP
    // side of the peer port).
    let seed_port = free_port();
    let seed_dht = free_port();
    let seed_state = d.join("state-seed");
    let mut seeder = Proc::spawn_dht(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &seed_port.to_string(),
            "--upload-limit",
            "4M",
            "--dht-port",
            &seed_dht.to_string(),
            "--dht-bootstrap",
            &boot_addr,
            "--state-dir",
            seed_state.to_str().unwrap(),
            "--quiet",
        ],
        d,
        "seeder",
    );
    wait_listening(seed_port);

    let mut first: Vec<(usize, Proc)> = (0..5)
        .map(|i| (i, leecher(d, &magnet, &boot_addr, i)))
        .collect();
    wait_all(d, &mut first);
    for (i, l) in &first {
        let ev = last_event(&l.stdout(), "metadata");
        assert!(ev.is_some(), "leecher {i} had no metadata phase");
    }
    // The bootstrap node goes away. Newcomers know only the seeder's DHT
    // node, and find the seeder and each other through the DHT.
    drop(boot);
    // Junk at the seeder's DHT node first: it must shrug it off.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000u32 {
        let mut d = vec![b'd'; (i as usize * 7) % 1400];
        d.extend_from_slice(&i.to_be_bytes());
        let _ = junk.send_to(&d, ("127.0.0.1", seed_dht));
    }
    let _ = junk.send_to(
        b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe",
        ("127.0.0.1", seed_dht),
    );
    let start = Instant::now();
    let via = format!("127.0.0.1:{seed_dht}");
    let mut late: Vec<(usize, Proc)> = (5..8).map(|i| (i, leecher(d, &magnet, &via, i))).collect();
    wait_all(d, &mut late);
    assert!(start.elapsed() < Duration::from_secs(120));
    // At exit the seeder keeps the nodes it knew, for its next start.
    assert!(seeder.stop().success());
    let saved = std::fs::read_to_string(seed_state.join("dht-nodes")).unwrap_or_default();
    assert!(
        saved.lines().any(|l| l.starts_with("127.0.0.1:")),
        "no DHT nodes saved: {saved:?}"
    );
}
