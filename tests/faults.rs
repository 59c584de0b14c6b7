//! Disk faults and hostile paths, through the real binary: a clear error
//! naming the path and the cause, exit code 1, no panic, and the data
//! already written stays valid for a later resume. Nothing is ever written
//! outside the output folder.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use shoal::metainfo::NewTorrent;

const PIECE: u32 = 32 * 1024;

/// A tmpfs mounted for the test (we run as root in CI); unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "these tests mount a small tmpfs and need root: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Mount(dir.to_path_buf())
    }
    fn remount(&self, opts: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn seeded(d: &Path, files: &[(&str, usize)]) -> (PathBuf, u16, Proc) {
    seeded_with(d, files, PIECE)
}

fn seeded_with(d: &Path, files: &[(&str, usize)], piece: u32) -> (PathBuf, u16, Proc) {
    make_tree(&d.join("src"), files);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], piece);
    let (p, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    (t, port, p)
}

fn download(d: &Path, t: &Path, out: &Path, seed_port: u16, name: &str) -> Proc {
    Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--port",
            &free_port().to_string(),
            "--peer",
            &format!("127.0.0.1:{seed_port}"),
        ],
        d,
        name,
    )
}

fn one_line_error(p: &Proc) -> String {
    let err = p.stderr();
    let line = err
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    line.to_string()
}

/// With small pieces every write goes through the page cache; with 512 KiB
/// pieces most go straight to the disk (O_DIRECT). Both must fail cleanly.
#[test]
fn disk_full_then_resume_after_space_is_freed() {
    disk_full_then_resume(PIECE);
    disk_full_then_resume(512 * 1024);
}

fn disk_full_then_resume(piece: u32) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let files = [("pack/a.bin", 1_500_000), ("pack/b.bin", 1_000_000)];
    let (t, port, _seeder) = seeded_with(d, &files, piece);
    let mnt = Mount::tmpfs(&d.join("small"), "size=1m");
    let out = d.join("small/out");
    let mut l = download(d, &t, &out, port, "full");
    let status = l.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", l.stderr());
    let err = one_line_error(&l);
    assert!(
        err.contains("No space left on device") && err.contains("pack/"),
        "{err}"
    );
    assert!(!l.stderr().contains("panicked"));
    // Every piece reported verified is there. The only bad one is the
    // piece whose write hit the full disk (the store writes nothing after
    // a failure): never reported as had, and re-checked on resume.
    let had = last_event(&l.stdout(), "progress").map_or(0, |p| p["pieces_have"].as_u64().unwrap());
    let v = Command::new(shoal_bin())
        .args(["verify", "--json"])
        .arg(&t)
        .arg(&out)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert!(v["bad"].as_u64().unwrap() <= 1, "{v}");
    assert!(
        v["good"].as_u64().unwrap() > 0 && v["good"].as_u64().unwrap() >= had,
        "{v} had {had}"
    );
    // More room: the same command resumes and completes.
    mnt.remount("size=8m");
    let mut l = download(d, &t, &out, port, "resumed");
    assert!(l.wait(Duration::from_secs(60)).success(), "{}", l.stderr());
    assert!(l.done_event()["downloaded"].as_u64().unwrap() < 2_500_000);
    assert_same_tree(&d.join("src"), &out);
}

#[test]
fn output_folder_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, port, _seeder) = seeded(d, &[("pack/a.bin", 100_000), ("pack/empty", 0)]);
    let _mnt = Mount::tmpfs(&d.join("ro"), "size=1m,ro");
    let out = d.join("ro");
    let mut l = download(d, &t, &out, port, "ro");
    assert_eq!(l.wait(Duration::from_secs(30)).code(), Some(1));
    let err = one_line_error(&l);
    assert!(
        err.contains("Read-only file system") && err.contains(out.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn a_directory_where_a_file_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, port, _seeder) = seeded(d, &[("pack/a.bin", 100_000), ("pack/b.bin", 50_000)]);
    let out = d.join("out");
    std::fs::create_dir_all(out.join("pack/b.bin/inner")).unwrap();
    let mut l = download(d, &t, &out, port, "dir");
    assert_eq!(l.wait(Duration::from_secs(30)).code(), Some(1));
    let err = one_line_error(&l);
    assert!(
        err.contains("pack/b.bin") && err.contains("not a regular file"),
        "{err}"
    );
    assert!(
        out.join("pack/b.bin/inner").is_dir(),
        "the user's folder was touched"
    );
}

#[test]
fn symlink_planted_in_the_output_folder_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, port, _seeder) = seeded(d, &[("pack/a.bin", 100_000), ("pack/sub/b.bin", 50_000)]);
    let outside = d.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = d.join("out");
    std::fs::create_dir_all(out.join("pack")).unwrap();
    // The folder and a file both point out of the output folder.
    std::os::unix::fs::symlink(&outside, out.join("pack/sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("a.bin"), out.join("pack/a.bin")).unwrap();
    let mut l = download(d, &t, &out, port, "symlink");
    assert_eq!(l.wait(Duration::from_secs(30)).code(), Some(1));
    let err = one_line_error(&l);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through a symlink"
    );
}

#[test]
fn hostile_paths_in_a_torrent_stay_inside_the_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content = data(70_000, 3);
    let pieces: Vec<u8> = content
        .chunks(PIECE as usize)
        .flat_map(|c| {
            use sha1::Digest;
            <[u8; 20]>::from(sha1::Sha1::digest(c))
        })
        .collect();
    let t = NewTorrent {
        name: "..".into(),
        files: Some(vec![
            (vec!["..".into(), "..".into(), "escape.txt".into()], 30_000),
            (vec!["/etc".into(), "passwd".into()], 20_000),
            (vec!["C:".into(), "x\\..\\y".into()], 20_000),
        ]),
        piece_length: PIECE as u64,
        pieces,
        ..Default::default()
    };
    let tpath = d.join("evil.torrent");
    std::fs::write(&tpath, t.to_bytes()).unwrap();
    // Where shoal puts each file (sanitised), per `info --json`.
    let o = Command::new(shoal_bin())
        .args(["info", "--json"])
        .arg(&tpath)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let paths: Vec<String> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let src = d.join("src");
    let mut off = 0;
    for (p, len) in paths.iter().zip([30_000usize, 20_000, 20_000]) {
        assert!(
            Path::new(p)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "{p}"
        );
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, &content[off..off + len]).unwrap();
        off += len;
    }
    let port = free_port();
    let _s = Proc::spawn(
        &[
            "seed",
            tpath.to_str().unwrap(),
            "--from",
            src.to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--quiet",
        ],
        d,
        "seeder",
    );
    wait_listening(port);
    let out = d.join("a/b/out");
    std::fs::create_dir_all(&out).unwrap();
    let mut l = download(d, &tpath, &out, port, "leecher");
    assert!(l.wait(Duration::from_secs(30)).success(), "{}", l.stderr());
    assert_same_tree(&src, &out);
    assert!(
        !d.join("escape.txt").exists()
            && !d.join("a/escape.txt").exists()
            && !d.join("a/b/escape.txt").exists()
    );
}
