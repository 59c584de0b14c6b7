#![no_main]
//! Torrent files: parse, and for those that load, exercise the piece map.
use libfuzzer_sys::fuzz_target;
use shoal::metainfo::Metainfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metainfo::from_bytes(data) {
        let n = m.piece_count();
        for p in [0, n / 2, n.saturating_sub(1)] {
            let covered: u64 = m.piece_slices(p).iter().map(|s| s.len).sum();
            assert_eq!(covered, m.piece_size(p));
        }
        let bytes = m.to_bytes().expect("re-serialised");
        let again = Metainfo::from_bytes(&bytes).expect("re-serialised torrent loads");
        assert_eq!(again.info_hash, m.info_hash);
    }
});
