//! Churn: once every piece exists among the leechers that stay, the
//! original seeder and half the leechers are killed; those that stay still
//! finish with correct data, trading only among themselves.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PIECE: u32 = 32 * 1024;

fn have_bits(t: &std::path::Path, dir: &std::path::Path) -> Vec<u8> {
    let o = Command::new(shoal_bin())
        .args(["verify", "--json"])
        .arg(t)
        .arg(dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["have"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default()
}

#[test]
fn leechers_finish_after_the_seeder_and_half_the_swarm_die() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[
            ("pack/a.bin", 1_800_000),
            ("pack/empty", 0),
            ("pack/b.bin", 1_300_001),
        ],
    );
    let tracker = Tracker::start();
    let t = create_torrent(
        &d.join("src/pack"),
        &d.join("pack.torrent"),
        &[tracker.url()],
        PIECE,
    );
    let pieces = (3_100_001u64).div_ceil(PIECE as u64) as usize;
    let mut full = vec![0xffu8; pieces.div_ceil(8)];
    *full.last_mut().unwrap() &= !((1u16 << (full.len() * 8 - pieces)) - 1) as u8;

    let seeder = Proc::spawn(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--quiet",
            "--upload-limit",
            "400000",
        ],
        d,
        "seeder",
    );
    let mut leechers: Vec<Proc> = (0..6)
        .map(|i| {
            let out = d.join(format!("l{i}"));
            Proc::spawn(
                // Leechers upload slowly too, so pieces spread before anyone is done.
                &[
                    "download",
                    t.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                    "--seed",
                    "--json",
                    "--port",
                    &free_port().to_string(),
                    "--upload-limit",
                    "300000",
                ],
                d,
                &format!("leecher{i}"),
            )
        })
        .collect();
    // Wait for a moment when three leechers hold every piece between them
    // while at least one of them is still missing some: those three stay.
    let start = Instant::now();
    let stay: Vec<usize> = 'found: loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "pieces never spread among the leechers"
        );
        let bits: Vec<Vec<u8>> = (0..6)
            .map(|i| have_bits(&t, &d.join(format!("l{i}"))))
            .collect();
        for a in 0..6 {
            for b in a + 1..6 {
                for c in b + 1..6 {
                    let trio = [a, b, c];
                    let union: Vec<u8> = (0..full.len())
                        .map(|k| {
                            trio.iter()
                                .fold(0u8, |u, &i| u | bits[i].get(k).copied().unwrap_or(0))
                        })
                        .collect();
                    if union == full && trio.iter().any(|&i| bits[i] != full) {
                        break 'found trio.to_vec();
                    }
                }
            }
        }
        assert!(
            bits.iter().filter(|b| **b == full).count() < 3,
            "three leechers finished before the pieces spread; the test would prove nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    seeder.signal(libc::SIGKILL);
    for (i, l) in leechers.iter_mut().enumerate() {
        if !stay.contains(&i) {
            l.signal(libc::SIGKILL);
        }
    }
    for &i in &stay {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = leechers[i].stdout();
            if out.contains(r#""state":"seeding""#) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "leecher {i} never finished:\n{}",
                tail(&leechers[i].stderr(), 30)
            );
            assert!(
                leechers[i].child.try_wait().unwrap().is_none(),
                "leecher {i} died:\n{}",
                tail(&leechers[i].stderr(), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_same_tree(&d.join("src"), &d.join(format!("l{i}")));
    }
    for &i in &stay {
        assert!(leechers[i].stop().success());
    }
}
