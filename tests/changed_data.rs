//! A seeder whose files change under it (edited in place, truncated) never
//! sends bytes that do not match the torrent: it re-checks, refuses what
//! is lost, keeps serving what is still good, and stops advertising the
//! lost pieces.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::fake::Fake;
use common::*;
use shoal::peer::wire::{BlockRef, Message};

const PIECE: u32 = 32 * 1024;
const LEN: usize = 650_000;
const PIECES: u32 = 20; // 650_000 / 32 KiB, rounded up
const BLOCK: u32 = 16 * 1024;

fn blocks() -> Vec<BlockRef> {
    let mut out = Vec::new();
    for index in 0..PIECES {
        let size = (LEN as u32 - index * PIECE).min(PIECE);
        let mut begin = 0;
        while begin < size {
            out.push(BlockRef {
                index,
                begin,
                length: BLOCK.min(size - begin),
            });
            begin += BLOCK;
        }
    }
    out
}

/// Asks for `want` and returns what came back for each: the data, or None
/// for a reject.
fn fetch(f: &mut Fake, want: &[BlockRef]) -> HashMap<BlockRef, Option<Vec<u8>>> {
    for b in want {
        assert!(
            f.send(&Message::Request(*b)),
            "seeder closed the connection"
        );
    }
    let mut got = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() && Instant::now() < deadline {
        match f.recv(Duration::from_secs(1)) {
            Ok(Some(Message::Piece { index, begin, data })) => {
                let b = BlockRef {
                    index,
                    begin,
                    length: data.len() as u32,
                };
                got.insert(b, Some(data.to_vec()));
            }
            Ok(Some(Message::Reject(b))) => {
                got.insert(b, None);
            }
            Ok(_) => {}
            // Checked by the caller: what arrived before must be right.
            Err(_) => break,
        }
    }
    got
}

#[test]
fn seeder_never_serves_data_changed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", LEN)]);
    let file = d.join("src/pack/a.bin");
    let original = std::fs::read(&file).unwrap();
    let t = create_torrent(&d.join("src/pack"), &d.join("t.torrent"), &[], PIECE);
    let ih = info_hash(&t);
    let (mut seeder, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);

    let (mut f, _) = Fake::connect(port, ih, *b"-XX0001-changeddata0");
    f.send(&Message::Interested);
    assert!(
        f.wait_for(Duration::from_secs(15), |m| *m == Message::Unchoke)
            .is_some(),
        "never unchoked"
    );
    // Pieces 0 and 5 are served (and checked) before they change.
    let first: Vec<BlockRef> = blocks()
        .into_iter()
        .filter(|b| b.index == 0 || b.index == 5)
        .collect();
    let got = fetch(&mut f, &first);
    assert!(got.values().all(Option::is_some), "{:?}", got.keys());

    // Someone edits pieces 0 and 7 in place and cuts the file inside piece 15.
    let w = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    w.write_all_at(b"garbage", 100).unwrap();
    w.write_all_at(b"garbage", 7 * PIECE as u64 + 20_000)
        .unwrap();
    w.set_len(15 * PIECE as u64 + 1000).unwrap();
    drop(w);
    let lost = |i: u32| i == 0 || i == 7 || i >= 15;

    let all = blocks();
    let got = fetch(&mut f, &all);
    for b in &all {
        match got.get(b) {
            None => panic!("no answer for {b:?}"),
            Some(Some(data)) => {
                let start = (b.index * PIECE + b.begin) as usize;
                assert!(
                    *data == original[start..start + b.length as usize],
                    "wrong bytes served for {b:?}"
                );
                assert!(!lost(b.index), "{b:?} served from a changed piece");
            }
            Some(None) => assert!(lost(b.index), "{b:?} of a good piece refused"),
        }
    }

    // A new peer is not told about the lost pieces.
    let (mut g, _) = Fake::connect(port, ih, *b"-XX0001-changeddata1");
    let bits = g.wait_for(Duration::from_secs(10), |m| {
        matches!(m, Message::Bitfield(_) | Message::HaveAll)
    });
    let Some(Message::Bitfield(bits)) = bits else {
        panic!("expected a bitfield, got {bits:?}");
    };
    for i in 0..PIECES {
        let has = bits[i as usize / 8] & (0x80 >> (i % 8)) != 0;
        assert_eq!(has, !lost(i), "piece {i} in the new bitfield");
    }
    assert!(seeder.stop().success(), "{}", tail(&seeder.stderr(), 30));
}
