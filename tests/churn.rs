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

    let mut seeder = Proc::spawn(
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
    // Leechers 0..3 stay. Wait until they hold every piece between them.
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "pieces never spread to the leechers that stay"
        );
        std::thread::sleep(Duration::from_millis(300));
        let mut union = vec![0u8; full.len()];
        for i in 0..3 {
            for (u, b) in union
                .iter_mut()
                .zip(have_bits(&t, &d.join(format!("l{i}"))))
            {
                *u |= b;
            }
        }
        if union == full {
            break;
        }
    }
    let incomplete = (0..3)
        .filter(|i| have_bits(&t, &d.join(format!("l{i}"))) != full)
        .count();
    assert!(
        incomplete > 0,
        "every staying leecher finished before the churn; the test proves nothing"
    );
    seeder.signal(libc::SIGKILL);
    for l in &mut leechers[3..] {
        l.signal(libc::SIGKILL);
    }
    for i in 0..3 {
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
    for l in &mut leechers[..3] {
        assert!(l.stop().success());
    }
}
