//! Super-seeding (BEP 16, `--super-seed`): what a super-seeder tells a
//! peer on the wire, and a small swarm that completes from one.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::fake::Fake;
use common::*;
use shoal::peer::wire::{BlockRef, Message};

const PIECE: u32 = 128 * 1024;
const PIECES: u32 = 64;
/// 512 KiB of 128 KiB pieces: what an unchoked peer is shown at a time.
const WINDOW: usize = 4;

/// The `have`s that arrive within `limit`, in order; panics on anything
/// that reveals more (a bitfield or have-all).
fn haves(f: &mut Fake, limit: Duration) -> Vec<u32> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match f.recv(left) {
            Ok(Some(Message::Have(i))) => out.push(i),
            Ok(Some(m @ (Message::Bitfield(_) | Message::HaveAll))) => {
                panic!("a super-seeder sent {m:?}")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// Haves until `n` distinct pieces were shown (or 15 s).
fn shown_until(f: &mut Fake, n: usize, seen: &mut Vec<u32>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < n && std::time::Instant::now() < deadline {
        for i in haves(f, Duration::from_millis(200)) {
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
    }
}

#[test]
fn super_seeder_shows_each_peer_a_few_pieces_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("big.bin", (PIECE * PIECES) as usize)]);
    let t = create_torrent(&d.join("src/big.bin"), &d.join("big.torrent"), &[], PIECE);
    let src = std::fs::read(d.join("src/big.bin")).unwrap();
    let (seeder_proc, port) = seeder(d, &t, &d.join("src"), &["--super-seed", "--json"]);
    // It listens before its data is checked, and drops connections for a
    // torrent not running yet.
    let start = std::time::Instant::now();
    while !seeder_proc.stdout().contains("\"state\":\"seeding\"") {
        assert!(start.elapsed() < Duration::from_secs(30), "never seeding");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (mut a, _) = Fake::connect(port, info_hash(&t), *b"-XX0001-superseed-a0");
    a.send(&Message::HaveNone);
    // Choked: one piece, so that we are interested; no bitfield, no have-all.
    let mut shown_a = Vec::new();
    shown_until(&mut a, 1, &mut shown_a);
    assert_eq!(shown_a.len(), 1, "{shown_a:?}");
    a.send(&Message::Interested);
    assert!(a
        .wait_for(Duration::from_secs(15), |m| *m == Message::Unchoke)
        .is_some());
    // Unchoked: a window's worth, and no more.
    shown_until(&mut a, WINDOW, &mut shown_a);
    shown_a.extend(haves(&mut a, Duration::from_millis(1500)));
    assert_eq!(shown_a.len(), WINDOW, "{shown_a:?}");
    assert_eq!(
        shown_a.iter().collect::<HashSet<_>>().len(),
        WINDOW,
        "{shown_a:?}"
    );

    // Download one shown piece and announce it: exactly one new piece.
    let p = shown_a[0];
    for k in 0..PIECE / 16384 {
        a.send(&Message::Request(BlockRef {
            index: p,
            begin: k * 16384,
            length: 16384,
        }));
    }
    let mut got = vec![0u8; PIECE as usize];
    let mut blocks = 0;
    while blocks < PIECE / 16384 {
        match a.recv(Duration::from_secs(10)) {
            Ok(Some(Message::Piece { index, begin, data })) if index == p => {
                got[begin as usize..begin as usize + data.len()].copy_from_slice(&data);
                blocks += 1;
            }
            Ok(Some(Message::Have(i))) => panic!("shown {i} before announcing {p}"),
            Ok(Some(_)) => {}
            other => panic!("no piece data: {other:?}"),
        }
    }
    let start = (p * PIECE) as usize;
    assert!(
        got == src[start..start + PIECE as usize],
        "piece {p} differs"
    );
    a.send(&Message::Have(p));
    let next = haves(&mut a, Duration::from_secs(3));
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(!shown_a.contains(&next[0]), "{next:?} again");
    shown_a.extend(next);

    // A second peer is shown other pieces while some were never shown.
    let (mut b, _) = Fake::connect(port, info_hash(&t), *b"-XX0001-superseed-b0");
    b.send(&Message::HaveNone);
    b.send(&Message::Interested);
    assert!(b
        .wait_for(Duration::from_secs(15), |m| *m == Message::Unchoke)
        .is_some());
    let mut shown_b = Vec::new();
    shown_until(&mut b, WINDOW, &mut shown_b);
    assert_eq!(shown_b.len(), WINDOW, "{shown_b:?}");
    assert!(
        shown_b.iter().all(|i| !shown_a.contains(i)),
        "a: {shown_a:?} b: {shown_b:?}"
    );
}

/// Three leechers that know each other and a super-seeder: everyone
/// finishes with the right bytes.
#[test]
fn swarm_completes_from_a_super_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 3_000_000), ("pack/b.bin", 1_000_000)],
    );
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 65536);
    let (mut seed, sport) = seeder(d, &t, &d.join("src"), &["--super-seed", "--json"]);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut leechers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let out = d.join(format!("out{i}"));
        let mut args: Vec<String> = vec![
            "download".into(),
            t.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--seed-time".into(),
            "10s".into(),
            "--no-dht".into(),
            "--no-lsd".into(),
            "--json".into(),
            "--peer".into(),
            format!("127.0.0.1:{sport}"),
        ];
        for other in ports.iter().filter(|p| *p != port) {
            args.push("--peer".into());
            args.push(format!("127.0.0.1:{other}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        leechers.push(Proc::spawn(&args, d, &format!("leech{i}")));
    }
    for (i, l) in leechers.iter_mut().enumerate() {
        assert!(
            l.wait(Duration::from_secs(120)).success(),
            "{}",
            tail(&l.stderr(), 20)
        );
        assert_eq!(l.done_event()["complete"], true);
        assert_same_tree(&d.join("src"), &d.join(format!("out{i}")));
    }
    // Every piece was in the swarm once the seeder had sent about one
    // copy (a plain seeder sends the same pieces to several leechers).
    // After that it seeds as usual, so its total says nothing.
    assert!(seed.stop().success(), "{}", tail(&seed.stderr(), 20));
    let err = seed.stderr();
    let sent: u64 = err
        .lines()
        .find_map(|l| {
            let rest = l
                .split("super-seeding done: every piece is in the swarm, ")
                .nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("super-seeding never ended:\n{}", tail(&err, 30)));
    assert!(
        (4_000_000..5_000_000).contains(&sent),
        "{sent} bytes sent before every piece of 4 MB was out"
    );
}
