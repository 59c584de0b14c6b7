//! Property tests: written torrents read back the same, and the parser
//! never panics on arbitrary bytes.

use proptest::prelude::*;
use shoal::metainfo::{Metainfo, NewTorrent};

fn element() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ -]{1,12}"
}

prop_compose! {
    fn new_torrent()(
        name in element(),
        files in proptest::option::of(proptest::collection::vec(
            (proptest::collection::vec(element(), 1..4), 0u64..100_000), 1..8)),
        length in 1u64..1_000_000,
        piece_pow in 14u32..20,
        trackers in proptest::collection::vec(proptest::collection::vec("http://[a-z]{1,8}/announce", 1..3), 0..3),
        private in any::<bool>(),
        comment in proptest::option::of("[ -~]{0,30}"),
    ) -> NewTorrent {
        let piece_length = 1u64 << piece_pow;
        // Unique paths so no renaming happens.
        let files = files.map(|fs| {
            let mut seen = std::collections::HashSet::new();
            fs.into_iter().enumerate().map(|(i, (mut p, l))| {
                p.insert(0, format!("d{i}"));
                assert!(seen.insert(p.clone()));
                (p, l)
            }).collect::<Vec<_>>()
        });
        // A torrent needs at least one byte.
        let files = files.map(|mut f| { if f.iter().all(|x| x.1 == 0) { f[0].1 = 1; } f });
        let total = match &files { Some(f) => f.iter().map(|x| x.1).sum::<u64>(), None => length };
        NewTorrent {
            name, files, length: total, piece_length,
            pieces: vec![0xab; 20 * total.div_ceil(piece_length) as usize],
            trackers: trackers.into_iter().map(|t| { let mut t = t; t.dedup(); t }).collect(),
            web_seeds: vec![], private, comment, created_by: Some("proptest".into()), creation_date: Some(1),
            ..Default::default()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn write_then_read_round_trips(t in new_torrent()) {
        let bytes = t.to_bytes();
        let m = Metainfo::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&m.name, &t.name);
        prop_assert_eq!(m.piece_length, t.piece_length);
        prop_assert_eq!(m.private, t.private);
        prop_assert_eq!(&m.comment, &t.comment);
        match &t.files {
            None => {
                prop_assert!(!m.multi_file);
                prop_assert_eq!(m.total_length, t.length);
            }
            Some(files) => {
                prop_assert!(m.multi_file);
                prop_assert_eq!(m.files.len(), files.len());
                for (f, (p, l)) in m.files.iter().zip(files) {
                    let mut want = std::path::PathBuf::from(&t.name);
                    want.extend(p);
                    prop_assert_eq!(&f.path, &want);
                    prop_assert_eq!(f.length, *l);
                }
            }
        }
        let tiers: Vec<Vec<String>> = t.trackers.iter().filter(|x| !x.is_empty()).cloned().collect();
        let mut seen = std::collections::HashSet::new();
        let tiers: Vec<Vec<String>> = tiers.into_iter().map(|t| t.into_iter().filter(|u| seen.insert(u.clone())).collect::<Vec<_>>()).filter(|t| !t.is_empty()).collect();
        prop_assert_eq!(m.tracker_tiers(), tiers);
        // Writing the parsed torrent again keeps the info-hash.
        let again = Metainfo::from_bytes(&m.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(again.info_hash, m.info_hash);
        // Piece slices cover every piece exactly.
        for p in 0..m.piece_count() {
            let n: u64 = m.piece_slices(p).iter().map(|s| s.len).sum();
            prop_assert_eq!(n, m.piece_size(p));
        }
    }

    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::from_bytes(&bytes);
    }

    #[test]
    fn parser_never_panics_on_mutated_torrents(t in new_torrent(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = t.to_bytes();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = Metainfo::from_bytes(&bytes);
    }
}
