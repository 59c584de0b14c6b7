//! Hostile peers against the real binary, over real sockets: each protocol
//! violation gets the connection dropped (or the message ignored, where the
//! spec says so), memory stays bounded, and the swarm goes on.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::fake::Fake;
use common::*;
use shoal::peer::wire::{BlockRef, Handshake, Message};

const PIECE: u32 = 32 * 1024;
const FILES: &[(&str, usize)] = &[("pack/a.bin", 400_000), ("pack/b.bin", 250_000)];
const PIECES: u32 = 20; // 650_000 / 32 KiB, rounded up

fn setup(d: &std::path::Path) -> std::path::PathBuf {
    make_tree(&d.join("src"), FILES);
    create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], PIECE)
}

const SHORT: Duration = Duration::from_secs(5);

#[test]
fn seeder_drops_each_protocol_violation_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d);
    let ih = info_hash(&t);
    let (seeder, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let id = *b"-XX0001-hostilepeer0";

    // Each case: what the peer sends after the handshake, and whether the
    // seeder must drop the connection.
    let unchoked = |f: &mut Fake| {
        f.send(&Message::Interested);
        assert!(
            f.wait_for(Duration::from_secs(15), |m| *m == Message::Unchoke)
                .is_some(),
            "never unchoked"
        );
    };
    type Case = (&'static str, Box<dyn Fn(&mut Fake)>, bool);
    let cases: Vec<Case> = vec![
        (
            "length prefix of 4 GiB",
            Box::new(|f| {
                f.send_raw(&[0xff, 0xff, 0xff, 0xff]);
            }),
            true,
        ),
        (
            "message longer than the cap",
            Box::new(|f| {
                let mut m = vec![0, 3, 0, 0, 7];
                m.extend(vec![0u8; 1000]);
                f.send_raw(&m);
            }),
            true,
        ),
        (
            "bitfield of the wrong length",
            Box::new(|f| {
                f.send(&Message::Bitfield(Bytes::from(vec![0u8; 9])));
            }),
            true,
        ),
        (
            "bitfield with spare bits set",
            Box::new(|f| {
                f.send(&Message::Bitfield(Bytes::from(vec![0, 0, 0x0f])));
            }),
            true,
        ),
        (
            "have out of range",
            Box::new(|f| {
                f.send(&Message::Have(PIECES));
            }),
            true,
        ),
        (
            "request out of range",
            Box::new(move |f| {
                unchoked(f);
                f.send(&Message::Request(BlockRef {
                    index: PIECES,
                    begin: 0,
                    length: 16384,
                }));
            }),
            true,
        ),
        (
            "request past the end of a piece",
            Box::new(move |f| {
                unchoked(f);
                f.send(&Message::Request(BlockRef {
                    index: 0,
                    begin: PIECE - 100,
                    length: 16384,
                }));
            }),
            true,
        ),
        (
            "request larger than 128 KiB",
            Box::new(move |f| {
                unchoked(f);
                f.send(&Message::Request(BlockRef {
                    index: 0,
                    begin: 0,
                    length: 256 << 10,
                }));
            }),
            true,
        ),
        (
            "request of length zero",
            Box::new(move |f| {
                unchoked(f);
                f.send(&Message::Request(BlockRef {
                    index: 0,
                    begin: 0,
                    length: 0,
                }));
            }),
            true,
        ),
        (
            "unknown message id is ignored",
            Box::new(move |f| {
                f.send_raw(&[0, 0, 0, 3, 99, 1, 2]);
                unchoked(f);
                f.send(&Message::Request(BlockRef {
                    index: 1,
                    begin: 0,
                    length: 16384,
                }));
                assert!(f
                    .wait_for(SHORT, |m| matches!(m, Message::Piece { index: 1, .. }))
                    .is_some());
            }),
            false,
        ),
    ];
    for (name, act, drop) in cases {
        let (mut f, _) = Fake::connect(port, ih, id);
        act(&mut f);
        let closed = f.closed_within(if drop { SHORT } else { Duration::from_secs(1) });
        assert_eq!(
            closed,
            drop,
            "{name}: expected {}",
            if drop {
                "a drop"
            } else {
                "the connection kept"
            }
        );
    }

    // Fast-extension messages without the fast bit negotiated.
    let mut hs = Handshake::new(ih, id);
    hs.reserved = [0; 8];
    let mut f = Fake::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    f.send_raw(&hs.encode());
    f.read_handshake().unwrap();
    f.send(&Message::HaveAll);
    assert!(f.closed_within(SHORT), "have-all without fast");

    // Wrong info-hash: dropped before anything.
    let mut f = Fake::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    f.send_raw(&Handshake::new([9; 20], id).encode());
    assert!(f.closed_within(SHORT), "wrong info-hash");
    // A wrong protocol string could be the start of an encrypted (MSE)
    // key exchange, so it is read as one: junk never carries the sync
    // marker, and the connection is dropped past the longest padding.
    let mut f = Fake::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut raw = Handshake::new(ih, id).encode().to_vec();
    raw[1..20].copy_from_slice(b"BitTorrent protocoX");
    raw.extend_from_slice(&[0x5a; 1000]);
    f.send_raw(&raw);
    assert!(f.closed_within(SHORT), "bad protocol string");

    // Our own peer id coming back (a self-connection).
    let (_, theirs) = Fake::connect(port, ih, id);
    let mut f = Fake::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    f.send_raw(&Handshake::new(ih, theirs.peer_id).encode());
    assert!(f.closed_within(SHORT), "own peer id");

    // A flood of requests: the queue is bounded, memory does not grow.
    let (mut f, _) = Fake::connect(port, ih, id);
    unchoked(&mut f);
    let before = rss_kib(seeder.child.id());
    for _ in 0..20 {
        for i in 0..1000u32 {
            f.send(&Message::Request(BlockRef {
                index: i % PIECES,
                begin: 0,
                length: 16384,
            }));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(seeder.child.id());
    assert!(
        after < before + 24 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // Still served afterwards (once the backlog drains).
    assert!(f
        .wait_for(SHORT, |m| matches!(m, Message::Piece { .. }))
        .is_some());
    drop(f);

    // A slow-loris peer that never finishes its handshake is dropped.
    let mut f = Fake::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    f.send_raw(&[19]);
    assert!(f.closed_within(Duration::from_secs(30)), "slow loris kept");

    // And the seeder still serves an honest leecher.
    let out = d.join("out");
    let mut l = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--quiet",
            "--port",
            &free_port().to_string(),
            "--peer",
            &format!("127.0.0.1:{port}"),
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

type Outcomes = Arc<Mutex<HashMap<&'static str, bool>>>;

/// Listens for the leecher and runs `act` on its connection; records
/// whether the leecher dropped it within `wait`.
fn hostile_seed(
    name: &'static str,
    ih: [u8; 20],
    wait: Duration,
    outcomes: Outcomes,
    act: impl Fn(&mut Fake, &Handshake) + Send + 'static,
) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // A peer without encryption: shoal dials with an encrypted (MSE)
        // handshake first, which it drops, then retries in plain text.
        let (mut f, theirs) = loop {
            let Ok((s, _)) = l.accept() else { return };
            let mut f = Fake::new(s);
            if let Ok(theirs) = f.read_handshake() {
                break (f, theirs);
            }
        };
        let _ = ih;
        act(&mut f, &theirs);
        let closed = f.closed_within(wait);
        outcomes.lock().unwrap().insert(name, closed);
    });
    port
}

fn full_bitfield() -> Message {
    let mut b = vec![0xffu8; (PIECES as usize).div_ceil(8)];
    let spare = b.len() * 8 - PIECES as usize;
    *b.last_mut().unwrap() &= !((1u16 << spare) - 1) as u8;
    Message::Bitfield(Bytes::from(b))
}

#[test]
fn leecher_survives_hostile_seeders_and_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d);
    let ih = info_hash(&t);
    let outcomes: Outcomes = Arc::default();
    // Each fake has its own peer id: two with one id would be dropped as
    // duplicate connections, which is not what these cases test.
    let ids: [[u8; 20]; 6] = std::array::from_fn(|i| {
        let mut id = *b"-XX0001-hostileseed0";
        id[19] = b'0' + i as u8;
        id
    });
    let mut peers = Vec::new();
    let reply = move |f: &mut Fake, id: [u8; 20]| {
        f.send_raw(&Handshake::new(ih, id).encode());
    };
    peers.push(hostile_seed(
        "length prefix of 4 GiB",
        ih,
        SHORT,
        outcomes.clone(),
        move |f, _| {
            reply(f, ids[0]);
            f.send_raw(&[0xff, 0xff, 0xff, 0xff]);
        },
    ));
    peers.push(hostile_seed(
        "unrequested data while choking",
        ih,
        SHORT,
        outcomes.clone(),
        move |f, _| {
            reply(f, ids[1]);
            f.send(&full_bitfield());
            let block = Bytes::from(vec![0u8; 16384]);
            for _ in 0..700 {
                if !f.send(&Message::Piece {
                    index: 0,
                    begin: 0,
                    data: block.clone(),
                }) {
                    break;
                }
            }
        },
    ));
    peers.push(hostile_seed(
        "our own peer id echoed",
        ih,
        SHORT,
        outcomes.clone(),
        move |f, theirs| {
            reply(f, theirs.peer_id);
        },
    ));
    peers.push(hostile_seed(
        "wrong info-hash",
        ih,
        SHORT,
        outcomes.clone(),
        move |f, _| {
            f.send_raw(&Handshake::new([7; 20], ids[2]).encode());
        },
    ));
    peers.push(hostile_seed(
        "piece for an index out of range is ignored",
        ih,
        Duration::from_secs(1),
        outcomes.clone(),
        move |f, _| {
            reply(f, ids[3]);
            f.send(&Message::Unchoke);
            f.send(&Message::Piece {
                index: 999,
                begin: 0,
                data: Bytes::from(vec![1u8; 100]),
            });
        },
    ));
    peers.push(hostile_seed(
        "disconnect in the middle of a block",
        ih,
        Duration::from_secs(1),
        outcomes.clone(),
        move |f, _| {
            reply(f, ids[4]);
            f.send(&full_bitfield());
            f.send(&Message::Unchoke);
            if let Some(Message::Request(b)) =
                f.wait_for(SHORT, |m| matches!(m, Message::Request(_)))
            {
                // Header and half the data, then gone.
                let mut half = vec![0, 0, 0x40, 0x09, 7];
                half.extend_from_slice(&b.index.to_be_bytes());
                half.extend_from_slice(&b.begin.to_be_bytes());
                half.extend(vec![0u8; 8000]);
                f.send_raw(&half);
            }
            let _ = f.s.shutdown(std::net::Shutdown::Both);
        },
    ));
    // The honest seeder is slow, so the leecher is still at work while the
    // hostile peers do their thing.
    let sport = free_port();
    let _seeder = Proc::spawn(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &sport.to_string(),
            "--quiet",
            "--upload-limit",
            "200000",
        ],
        d,
        "seeder",
    );
    wait_listening(sport);
    let out = d.join("out");
    let mut args: Vec<String> = vec![
        "download".into(),
        t.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
        "--port".into(),
        free_port().to_string(),
        "--peer".into(),
        format!("127.0.0.1:{sport}"),
    ];
    for p in &peers {
        args.push("--peer".into());
        args.push(format!("127.0.0.1:{p}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut l = Proc::spawn(&args, d, "leecher");
    assert!(
        l.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&l.stderr(), 40)
    );
    assert_same_tree(&d.join("src"), &out);
    std::thread::sleep(Duration::from_millis(300));
    let o = outcomes.lock().unwrap();
    let expect = [
        ("length prefix of 4 GiB", true),
        ("unrequested data while choking", true),
        ("our own peer id echoed", true),
        ("wrong info-hash", true),
        ("piece for an index out of range is ignored", false),
    ];
    for (name, dropped) in expect {
        assert_eq!(o.get(name).copied(), Some(dropped), "{name}: {o:?}");
    }
    assert!(
        o.contains_key("disconnect in the middle of a block"),
        "{o:?}"
    );
}

/// An idle connection is kept alive: with nothing to say for 90 s, shoal
/// sends a keep-alive, and it does not drop a peer that sends keep-alives.
#[test]
fn keepalives_over_an_idle_minute_and_a_half() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = setup(d);
    let ih = info_hash(&t);
    let (_seeder, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let (mut f, _) = Fake::connect(port, ih, *b"-XX0001-idlepeer0000");
    let start = std::time::Instant::now();
    let mut got_keepalive = false;
    while start.elapsed() < Duration::from_secs(110) {
        match f.recv(Duration::from_secs(30)) {
            Ok(Some(Message::KeepAlive)) => {
                got_keepalive = true;
                break;
            }
            Ok(_) => {
                // Our side of the idle link: a keep-alive every 30 s.
                assert!(
                    f.send(&Message::KeepAlive),
                    "shoal dropped an idle peer that keeps alive"
                );
            }
            Err(e) => panic!("connection lost after {:?}: {e}", start.elapsed()),
        }
    }
    assert!(
        got_keepalive,
        "no keep-alive from shoal within 110 s of silence"
    );
    assert!(
        start.elapsed() >= Duration::from_secs(85),
        "keep-alive too early: {:?}",
        start.elapsed()
    );
}
