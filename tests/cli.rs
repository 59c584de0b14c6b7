//! The real `shoal` binary: create → info → verify round-trip, exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn shoal(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run shoal")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_tree(root: &Path) {
    let data = |n: usize, seed: u8| -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    };
    std::fs::create_dir_all(root.join("folder/sub")).unwrap();
    std::fs::write(root.join("folder/a.bin"), data(100_000, 1)).unwrap();
    std::fs::write(root.join("folder/empty"), b"").unwrap();
    std::fs::write(root.join("folder/sub/b.bin"), data(70_001, 2)).unwrap();
    std::fs::write(root.join("folder/.hidden"), b"junk").unwrap();
}

#[test]
fn create_info_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tree(&d.join("some"));
    let out = shoal(
        &[
            "create",
            "some/folder",
            "-o",
            "x.torrent",
            "-t",
            "http://127.0.0.1:1/announce",
            "-t",
            "udp://127.0.0.1:2",
            "--piece-length",
            "16384",
            "--comment",
            "hello",
            "--private",
            "--web-seed",
            "http://127.0.0.1:3/files",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = shoal(&["info", "x.torrent", "--json"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "folder");
    assert_eq!(v["total_size"], 170_001);
    assert_eq!(v["piece_length"], 16384);
    assert_eq!(v["piece_count"], 11);
    assert_eq!(v["private"], true);
    assert_eq!(v["comment"], "hello");
    assert_eq!(
        v["trackers"],
        serde_json::json!([["http://127.0.0.1:1/announce"], ["udp://127.0.0.1:2"]])
    );
    assert_eq!(
        v["web_seeds"],
        serde_json::json!(["http://127.0.0.1:3/files/"])
    );
    let files: Vec<(String, u64)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        files,
        vec![
            ("folder/a.bin".to_string(), 100_000),
            ("folder/empty".to_string(), 0),
            ("folder/sub/b.bin".to_string(), 70_001)
        ]
    );
    assert_eq!(v["info_hash"].as_str().unwrap().len(), 40);

    let human = shoal(&["info", "x.torrent"], d);
    let s = text(&human.stdout);
    assert!(
        s.contains("info-hash:") && s.contains("tier 2: udp://127.0.0.1:2"),
        "{s}"
    );

    // Verified in place: DIR is the folder that holds `folder`.
    let out = shoal(&["verify", "x.torrent", "some"], d);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("11 pieces: 11 good, 0 missing, 0 bad"));

    // Corrupt one byte of b.bin: verify fails, names the file.
    let b = d.join("some/folder/sub/b.bin");
    let mut bytes = std::fs::read(&b).unwrap();
    bytes[5] ^= 0xff;
    std::fs::write(&b, &bytes).unwrap();
    let out = shoal(&["verify", "x.torrent", "some", "--json"], d);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bad"], 1);
    assert_eq!(v["complete"], false);
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: incomplete") && err.lines().count() == 1,
        "{err}"
    );

    // A missing file counts as missing.
    std::fs::remove_file(d.join("some/folder/a.bin")).unwrap();
    let out = shoal(&["verify", "x.torrent", "some", "--json"], d);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["missing"], 7);
}

#[test]
fn create_single_file_and_auto_piece_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("one.bin"), vec![9u8; 3_000_000]).unwrap();
    let out = shoal(&["create", "one.bin"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = shoal(&["info", "one.bin.torrent", "--json"], d);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["multi_file"], false);
    assert_eq!(v["piece_length"], 16384); // 3 MB / 1500 is under the 16 KiB floor
    assert!(shoal(&["verify", "one.bin.torrent", "."], d)
        .status
        .success());
    // Refuses to overwrite without --force.
    let out = shoal(&["create", "one.bin"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(shoal(&["create", "one.bin", "--force"], d).status.success());
}

#[test]
fn exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(shoal(&["info"], d).status.code(), Some(2));
    assert_eq!(shoal(&["bogus"], d).status.code(), Some(2));
    assert_eq!(
        shoal(&["create", "x", "--piece-length", "abc"], d)
            .status
            .code(),
        Some(2)
    );
    for cmd in ["info", "create", "verify"] {
        let out = shoal(&[cmd, "--help"], d);
        assert_eq!(out.status.code(), Some(0), "{cmd} --help");
    }
    std::fs::write(d.join("bad.torrent"), b"d4:infoi1ee").unwrap();
    let out = shoal(&["info", "bad.torrent"], d);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`info` should be a dictionary"), "{err}");
    assert_eq!(shoal(&["create", "missing-dir"], d).status.code(), Some(1));
    let out = shoal(
        &[
            "info",
            "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x",
            "--json",
        ],
        d,
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["info_hash"], "c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
    assert_eq!(shoal(&["info", "magnet:?dn=x"], d).status.code(), Some(1));
}
