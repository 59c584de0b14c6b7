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

/// A DHT node on loopback that answers every query with a KRPC error
/// (201, "A Generic Error Ocurred", as BEP 5 spells it), counting the
/// queries it gets. Stopped and joined when dropped.
struct HostileNode {
    port: u16,
    queries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostileNode {
    fn start() -> HostileNode {
        use std::sync::atomic::Ordering;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let queries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (q, st) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(serde_bencode::value::Value::Dict(d)) =
                    serde_bencode::from_bytes::<serde_bencode::value::Value>(&buf[..n])
                else {
                    continue;
                };
                let (Some(serde_bencode::value::Value::Bytes(t)), Some(y)) =
                    (d.get(&b"t"[..]), d.get(&b"y"[..]))
                else {
                    continue;
                };
                if *y != serde_bencode::value::Value::Bytes(b"q".to_vec()) {
                    continue;
                }
                q.fetch_add(1, Ordering::Relaxed);
                let mut reply = b"d1:eli201e23:A Generic Error Ocurrede1:t".to_vec();
                reply.extend_from_slice(format!("{}:", t.len()).as_bytes());
                reply.extend_from_slice(t);
                reply.extend_from_slice(b"1:y1:ee");
                let _ = sock.send_to(&reply, from);
            }
        });
        HostileNode {
            port,
            queries,
            stop,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> u64 {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HostileNode {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The only bootstrap node answers every query with a KRPC error: the
/// node must back off (mainline 8.0.1 asked again at once, 4,400 queries
/// a second, one ERROR line each), and say so once, not once per answer.
#[test]
fn a_node_answering_errors_is_not_flooded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hostile = HostileNode::start();
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=nothing", "ab".repeat(20));
    let boot = format!("127.0.0.1:{}", hostile.port);
    let state = d.join("state");
    let p = Proc::spawn_dht_log(
        &[
            "download",
            &magnet,
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--dht-bootstrap",
            &boot,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        d,
        "leecher",
        // What a user sees.
        "",
    );
    let start = Instant::now();
    while hostile.queries() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no DHT query reached the node: {}",
            tail(&p.stderr(), 20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A window of some seconds once the node is in use. Load on the machine
    // can only make the count smaller.
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let queries = hostile.queries();
    let secs = window.elapsed().as_secs_f64();
    drop(p);
    let log = std::fs::read_to_string(d.join("leecher.err")).unwrap_or_default();
    eprintln!(
        "{queries} queries in {secs:.1}s ({:.1}/s), {} log lines",
        queries as f64 / secs,
        log.lines().count()
    );
    assert!(
        queries <= 20,
        "{queries} queries in {secs:.1}s: {}",
        tail(&log, 5)
    );
    assert!(log.lines().count() <= 5, "{}", tail(&log, 20));
}
