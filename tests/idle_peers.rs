//! 200 idle peers (a handshake, then keep-alives only) against the real
//! binary with the default 50 connection slots: a real peer must still get
//! in and download, whether the crowd sits on the seeder or the leecher.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shoal::peer::wire::Handshake;

const PIECE: u32 = 32 * 1024;
const IDLE: usize = 200;

/// Idle connections to `port`, kept alive by a thread until dropped.
struct Crowd {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Crowd {
    fn start(port: u16, info_hash: [u8; 20]) -> Crowd {
        let mut socks = Vec::new();
        for i in 0..IDLE {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let mut id = *b"-ID0001-idle00000000";
            id[12..].copy_from_slice(format!("{i:08}").as_bytes());
            let _ = s.write_all(&Handshake::new(info_hash, id).encode());
            socks.push(s);
        }
        assert!(socks.len() > 100, "only {} idle sockets", socks.len());
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            // Their handshakes and bitfields are never read; a keep-alive
            // every few seconds is all they say.
            while !st.load(Ordering::Relaxed) {
                for s in &mut socks {
                    let _ = s.write_all(&[0, 0, 0, 0]);
                }
                for _ in 0..20 {
                    if st.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Crowd {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until a `--json` shoal reports `n` connected peers: every slot
/// held by the crowd.
fn wait_for_peers(p: &Proc, n: u64) {
    let start = Instant::now();
    loop {
        let peers = p
            .stdout()
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["peers"].as_u64());
        if peers == Some(n) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "peers {peers:?}, want {n}\n{}",
            tail(&p.stderr(), 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until a `--json` shoal runs its torrent (its first `progress`
/// event): a connection before that finds no torrent there and is closed,
/// which under load made the crowd miss a slow start.
fn wait_running(p: &Proc) {
    let start = Instant::now();
    while last_event(&p.stdout(), "progress").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not running\n{}",
            tail(&p.stderr(), 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Past the grace period in which a new peer cannot be closed for another.
const GRACE: Duration = Duration::from_secs(11);

#[test]
fn idle_crowd_on_the_seeder_does_not_lock_out_a_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 300_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("t.torrent"), &[], PIECE);
    let ih = info_hash(&t);
    let (seeder, port) = seeder(d, &t, &d.join("src"), &["--json"]);
    wait_running(&seeder);
    let crowd = Crowd::start(port, ih);
    wait_for_peers(&seeder, 50);
    std::thread::sleep(GRACE);
    let out = d.join("out");
    let mut l = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--json",
        ],
        d,
        "leecher",
    );
    let status = l.wait(Duration::from_secs(90));
    assert!(status.success(), "{}", tail(&l.stderr(), 30));
    assert_same_tree(&d.join("src"), &out);
    drop(crowd);
}

#[test]
fn idle_crowd_on_the_leecher_does_not_lock_out_a_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 300_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("t.torrent"), &[], PIECE);
    let ih = info_hash(&t);
    // The leecher knows no one: the seeder will come to it.
    let lport = free_port();
    let out = d.join("out");
    let mut l = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--port",
            &lport.to_string(),
            "--json",
        ],
        d,
        "leecher",
    );
    wait_listening(lport);
    wait_running(&l);
    let crowd = Crowd::start(lport, ih);
    wait_for_peers(&l, 50);
    std::thread::sleep(GRACE);
    let (_seeder, _) = seeder(
        d,
        &t,
        &d.join("src"),
        &["--quiet", "--peer", &format!("127.0.0.1:{lport}")],
    );
    let status = l.wait(Duration::from_secs(90));
    assert!(status.success(), "{}", tail(&l.stderr(), 30));
    assert_same_tree(&d.join("src"), &out);
    drop(crowd);
}
