//! libtorrent's own test torrents (fixtures/libtorrent-test-torrents, BSD
//! licence, see LICENSE there): every file must load or be refused as
//! EXPECTED.md beside them says.

use std::path::{Path, PathBuf};

use shoal::metainfo::{Metainfo, Version};

const MUST_LOAD: &[&str] = &[
    "base",
    "empty_path",
    "parent_path",
    "hidden_parent_path",
    "single_multi_file",
    "backslash_path",
    "url_list",
    "url_list2",
    "url_list3",
    "httpseed",
    "empty_httpseed",
    "long_name",
    "unordered",
    "large",
    "empty_path_multi",
    "creation_date",
    "no_creation_date",
    "similar",
    "similar2",
    "collection",
    "collection2",
    "dht_nodes",
    "large_piece_size",
    "invalid_name2",
    "invalid_name3",
    "invalid_filename",
    "invalid_filename2",
    "invalid_directory_name",
    "absolute_filename",
    "slash_path",
    "slash_path2",
    "slash_path3",
    "whitespace_url",
    "duplicate_files",
    "duplicate_web_seeds",
    "pad_file",
    "pad_file_no_path",
    "url_seed",
    "url_seed_multi",
    "url_seed_multi_single_file",
    "url_seed_multi_space",
    "url_seed_multi_space_nolist",
    "symlink1",
    "symlink2",
    "symlink_zero_size",
    "symlink_filtered_path",
    "overlapping_symlinks",
    "v2",
    "v2_multipiece_file",
    "v2_hybrid",
    "empty-files-1",
    "empty-files-2",
    "empty-files-3",
    "empty-files-4",
    "empty-files-5",
];

/// v2-only (BEP 52): they load, as v2.
const V2_ONLY: &[&str] = &[
    "v2_only",
    "v2_invalid_filename",
    "v2_multiple_files",
    "v2_invalid_filename2",
    "v2_symlinks",
    "v2_no_piece_layers",
    "v2_incomplete_piece_layer",
];

/// (file, a word the error must contain)
const MUST_REFUSE: &[(&str, &str)] = &[
    ("missing_piece_len", "piece length"),
    ("invalid_piece_len", "piece length"),
    ("negative_piece_len", "piece length"),
    ("no_name", "name"),
    ("bad_name", "trailing garbage"),
    ("invalid_name", "name"),
    ("missing_path_list", "name"),
    ("invalid_info", "info"),
    ("string", "not a dictionary"),
    ("negative_size", "negative"),
    ("negative_file_size", "negative"),
    ("invalid_file_size", "length"),
    ("zero", "zero"),
    ("zero2", "zero"),
    ("invalid_path_list", "name"),
    ("invalid_symlink", "name"),
    ("invalid_pieces", "pieces"),
    ("unaligned_pieces", "multiple of 20"),
    ("many_pieces", "pieces"),
    ("no_files", "no files"),
    ("duplicate_files2", "duplicate"),
    // v2 files libtorrent refuses, with the word of its error we use too.
    ("v2_mismatching_metadata", "inconsistent files"),
    // A pad file of the wrong size: the v1 piece count no longer adds up,
    // which is found first.
    ("v2_bad_file_alignment", "pieces"),
    ("v2_no_power2_piece", "piece length"),
    ("v2_piece_size", "piece length"),
    ("v2_invalid_file", "file parse failed"),
    // Its file tree is cut short: bad bencoding before any v2 check.
    ("v2_empty_filename", "bencoding"),
    ("v2_deep_recursion", "deeper than"),
    ("v2_non_multiple_piece_layer", "invalid piece layer"),
    ("v2_piece_layer_invalid_file_hash", "invalid piece layer"),
    ("v2_invalid_piece_layer", "invalid piece layer"),
    ("v2_invalid_piece_layer_root", "invalid piece layer"),
    ("v2_unknown_piece_layer_entry", "invalid piece layer"),
    ("v2_invalid_piece_layer_size", "invalid piece layer"),
    ("v2_unordered_files", "bencoding"),
    ("v2_overlong_integer", "bencoding"),
    (
        "v2_missing_file_root_invalid_symlink",
        "missing pieces root",
    ),
    ("v2_zero_root", "missing pieces root"),
    ("v2_zero_root_small", "missing pieces root"),
    ("v2_large_file", "invalid length"),
    ("v2_large_offset", "invalid length"),
    ("v2_invalid_pad_file", "invalid pad file"),
];

/// No stated expectation: they only must not crash the parser.
const NO_EXPECTATION: &[&str] = &[
    "v2_empty_file",
    "v2_hybrid-missing-tailpad",
    "v2_invalid_root_hash",
    "sample",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/libtorrent-test-torrents")
}

fn load(name: &str) -> Result<Metainfo, shoal::metainfo::MetainfoError> {
    shoal::store::load_torrent(&dir().join(format!("{name}.torrent")))
}

#[test]
fn every_corpus_file_meets_its_expectation() {
    let mut failures = Vec::new();
    for name in MUST_LOAD {
        if let Err(e) = load(name) {
            failures.push(format!("{name}: should load, got: {e}"));
        }
    }
    for name in V2_ONLY {
        match load(name) {
            Ok(m) if m.version() != Version::V2 => {
                failures.push(format!("{name}: should load as v2, got {}", m.version()))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: v2-only, should load, got: {e}")),
        }
    }
    for (name, word) in MUST_REFUSE {
        match load(name) {
            Ok(_) => failures.push(format!("{name}: should be refused")),
            Err(e) if !e.to_string().contains(word) => {
                failures.push(format!("{name}: error should mention {word:?}, got: {e}"))
            }
            Err(_) => {}
        }
    }
    for name in NO_EXPECTATION {
        let _ = load(name);
    }
    // Every file in the folder is covered by one of the lists.
    let listed: Vec<&str> = MUST_LOAD
        .iter()
        .chain(V2_ONLY)
        .chain(MUST_REFUSE.iter().map(|(n, _)| n))
        .chain(NO_EXPECTATION)
        .copied()
        .collect();
    for entry in std::fs::read_dir(dir()).expect("fixtures/libtorrent-test-torrents is missing") {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "torrent") {
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            if !listed.contains(&stem.as_str()) {
                failures.push(format!("{stem}: not covered by the test"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn paths(m: &Metainfo) -> Vec<String> {
    m.files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn specific_facts() {
    assert_eq!(paths(&load("slash_path").unwrap()), ["temp/_/_/bar"]);
    assert_eq!(
        paths(&load("slash_path2").unwrap()),
        ["temp/abc....def/_/bar"]
    );
    assert_eq!(load("slash_path3").unwrap().name, "temp....abc");
    assert_eq!(
        paths(&load("absolute_filename").unwrap()),
        ["temp/abcde", "temp/foobar"]
    );
    assert_eq!(load("invalid_filename").unwrap().files.len(), 2);
    assert_eq!(load("invalid_filename2").unwrap().files.len(), 3);
    assert_eq!(
        paths(&load("invalid_directory_name").unwrap()),
        ["test2/_/foo", "test2/_/foo.1"]
    );
    assert_eq!(
        paths(&load("duplicate_files").unwrap()),
        ["temp/foo/bar.txt", "temp/foo/bar.1.txt"]
    );
    assert_eq!(
        load("invalid_name2").unwrap().name,
        "b61560c2918f463768cd122b6d2fdd47b77bdb35"
    );
    assert_eq!(load("invalid_name3").unwrap().name, "foobar ");
    assert_eq!(
        load("whitespace_url").unwrap().announce.as_deref(),
        Some("udp://test.com/announce")
    );
    let pad = load("pad_file").unwrap();
    assert_eq!(pad.files.len(), 2);
    let pad = load("pad_file_no_path").unwrap();
    assert!(pad.files[1].pad);
    assert_eq!(pad.files[1].path.to_string_lossy(), "temp/.pad/2124");
    assert_eq!(load("creation_date").unwrap().creation_date, Some(1234567));
    assert_eq!(load("no_creation_date").unwrap().creation_date, None);
    assert_eq!(load("url_seed").unwrap().url_list, ["http://test.com/file"]);
    assert_eq!(
        load("url_seed_multi").unwrap().url_list,
        ["http://test.com/file/"]
    );
    assert_eq!(
        load("url_seed_multi_single_file").unwrap().url_list,
        ["http://test.com/file/temp/foo/bar.txt"]
    );
    assert_eq!(
        load("url_seed_multi_space").unwrap().url_list,
        ["http://test.com/test%20file/foo%20bar/"]
    );
    assert_eq!(
        load("url_seed_multi_space_nolist").unwrap().url_list,
        ["http://test.com/test%20file/foo%20bar/"]
    );
    assert_eq!(load("duplicate_web_seeds").unwrap().url_list.len(), 3);
    assert_eq!(
        load("large_piece_size").unwrap().piece_length,
        32767 * 16384
    );
    let v2 = load("v2").unwrap();
    assert!(v2.hybrid);
    assert_eq!(paths(&v2), ["test64K"]);
    assert_eq!(v2.total_length, 65536);
    assert_eq!(v2.version(), Version::Hybrid);
    let h2 = |m: &Metainfo| hex::encode(m.v2.as_ref().unwrap().info_hash);
    assert_eq!(
        h2(&v2),
        "597b180c1a170a585dfc5e85d834d69013ceda174b8f357d5bb1a0ca509faf0a"
    );
    // A hybrid is known by both hashes; its v1 hash stays the main one.
    assert_eq!(v2.info_hashes().len(), 2);
    assert_eq!(v2.info_hashes()[1].hex(), h2(&v2)[..40]);
    let v2m = load("v2_multipiece_file").unwrap();
    assert_eq!(v2m.total_length, 1048576);
    assert_eq!(
        h2(&v2m),
        "108ac2c3718ce722e6896edc56c4afa98f1d711ecaace7aad74fca418ebd03de"
    );
    let only = load("v2_only").unwrap();
    assert_eq!(only.version(), Version::V2);
    assert_eq!(paths(&only), ["test1MB"]);
    assert_eq!(only.total_length, 1048576);
    assert_eq!(
        h2(&only),
        "95e04d0c4bad94ab206efa884666fd89777dbe4f7bd9945af1829037a85c6192"
    );
    // A v2-only torrent's swarm hash is its v2 hash cut to 20 bytes.
    assert_eq!(only.info_hash.hex(), h2(&only)[..40]);
    assert_eq!(only.info_hashes(), [only.info_hash]);
    // Its piece layer was checked against the root on load.
    assert!(only.v2.as_ref().unwrap().complete());
    assert!(!load("v2_no_piece_layers").unwrap().v2.unwrap().complete());
    // Files of a v2-only torrent start on piece boundaries: virtual pads.
    let multi = load("v2_multiple_files").unwrap();
    let data: Vec<_> = multi.files.iter().filter(|f| !f.pad).collect();
    assert_eq!(data.len(), 3);
    for f in data {
        assert_eq!(f.offset % multi.piece_length, 0);
    }
    assert_eq!(multi.piece_count(), 1000 + 1001 + 1001);
    // We do not create symlinks; they are kept in the file list, marked, and hold no data.
    let s = load("symlink1").unwrap();
    assert_eq!(s.files.len(), 2);
    assert!(s.files[1].symlink && !s.files[1].is_data());
    assert_eq!(load("symlink2").unwrap().files.len(), 5);
    assert_eq!(
        paths(&load("symlink_filtered_path").unwrap())[0],
        "temp/a/_/bar"
    );
}

#[test]
fn unordered_info_hashes_over_raw_bytes() {
    // The info dict of unordered.torrent has unsorted keys; its hash must be
    // the SHA-1 of the bytes in the file (what libtorrent computes).
    let raw = std::fs::read(dir().join("unordered.torrent")).unwrap();
    let m = Metainfo::from_bytes(&raw).unwrap();
    let pos = raw.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let info = m.info_bytes().unwrap();
    let span = &raw[pos..pos + info.len()];
    assert_eq!(span, &info[..]);
    use sha1::Digest;
    let h: [u8; 20] = sha1::Sha1::digest(span).into();
    assert_eq!(h, m.info_hash.0);
    // A re-serialisation (sorted keys) would give a different hash.
    let value: serde_bencode::value::Value = serde_bencode::from_bytes(&info).unwrap();
    let resorted = serde_bencode::to_bytes(&value).unwrap();
    assert_ne!(resorted, info.to_vec(), "fixture should have unsorted keys");
}
