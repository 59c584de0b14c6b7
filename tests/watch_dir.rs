//! `shoal serve --watch-dir`: .torrent and .magnet files put in the folder
//! are added (renamed `.added`) and complete from local seeders; a file
//! still being written is waited for; a sub-folder's files go to that
//! sub-folder of the download folder; bad files and duplicates are
//! renamed `.invalid` with the reason beside them; other files are left
//! alone.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::service::*;
use common::*;

/// Waits until `path` exists.
fn appears(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        let dir = path.parent().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} did not appear; the folder has {:?}",
            path.display(),
            list_files(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn files_put_in_the_folder_are_added_or_set_aside_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(
        &src,
        &[
            ("single.bin", 1_000_000),
            ("pack/a.bin", 200_000),
            ("pack/b.bin", 100_000),
        ],
    );
    let tracker = Tracker::start();
    let single = create_torrent(
        &src.join("single.bin"),
        &d.join("single.torrent"),
        &[tracker.url()],
        16384,
    );
    let pack = create_torrent(&src.join("pack"), &d.join("pack.torrent"), &[], 16384);
    let (_s1, _) = seeder(d, &single, &src, &["--quiet"]);
    let (_s2, pack_port) = seeder(d, &pack, &src, &["--quiet"]);
    let (state, dl, w) = (d.join("state"), d.join("dl"), d.join("watch"));
    let svc = serve(
        d,
        &state,
        &dl,
        &["--watch-dir", w.to_str().unwrap()],
        "serve",
    );
    let port = svc.port;
    std::fs::create_dir_all(w.join("films")).unwrap();
    std::fs::write(w.join("notes.txt"), "not for shoal").unwrap();

    // A .torrent written slowly, in a sub-folder: taken once complete.
    let bytes = std::fs::read(&single).unwrap();
    let target = w.join("films/single.torrent");
    {
        let mut f = std::fs::File::create(&target).unwrap();
        let chunk = bytes.len().div_ceil(12);
        for part in bytes.chunks(chunk) {
            f.write_all(part).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                !w.join("films/single.torrent.invalid").exists(),
                "taken before it was written whole"
            );
        }
    }
    appears(&w.join("films/single.torrent.added"));
    assert!(!target.exists());
    let h1 = hex::encode(info_hash(&single));
    let t = wait_for(port, &h1, "complete", complete);
    assert!(
        t["download_dir"].as_str().unwrap().ends_with("/films"),
        "{t}"
    );
    assert_eq!(
        std::fs::read(dl.join("films/single.bin")).unwrap(),
        std::fs::read(src.join("single.bin")).unwrap()
    );

    // A .magnet file: its first line.
    let h2 = hex::encode(info_hash(&pack));
    std::fs::write(
        w.join("pack.magnet"),
        format!("\nmagnet:?xt=urn:btih:{h2}&dn=pack&x.pe=127.0.0.1:{pack_port}\n"),
    )
    .unwrap();
    appears(&w.join("pack.magnet.added"));
    wait_for(port, &h2, "complete", complete);
    assert_same_tree(&src.join("pack"), &dl.join("pack"));

    // Bad files and a duplicate: set aside, the reason beside them.
    std::fs::write(w.join("junk.torrent"), "this is not bencode").unwrap();
    std::fs::write(w.join("junk.magnet"), "https://example.org/x").unwrap();
    std::fs::copy(&single, w.join("again.torrent")).unwrap();
    for (name, why) in [
        ("junk.torrent", ""),
        ("junk.magnet", "magnet"),
        ("again.torrent", "already"),
    ] {
        appears(&w.join(format!("{name}.invalid")));
        let reason = std::fs::read_to_string(w.join(format!("{name}.invalid.txt"))).unwrap();
        assert!(
            !reason.trim().is_empty() && reason.contains(why),
            "{name}: {reason:?}"
        );
        assert!(!w.join(name).exists());
    }
    // Still two torrents, and the other file untouched.
    let (_, list) = json(port, "GET", "/api/torrents", None);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(
        std::fs::read_to_string(w.join("notes.txt")).unwrap(),
        "not for shoal"
    );
}

#[test]
fn categories_are_labels_and_sub_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("a.bin", 50_000), ("b.bin", 60_000)]);
    let ta = create_torrent(&d.join("src/a.bin"), &d.join("a.torrent"), &[], 16384);
    let tb = create_torrent(&d.join("src/b.bin"), &d.join("b.torrent"), &[], 16384);
    let (state, dl, w) = (d.join("state"), d.join("dl"), d.join("watch"));
    let svc = serve(
        d,
        &state,
        &dl,
        &["--watch-dir", w.to_str().unwrap()],
        "serve",
    );
    let port = svc.port;
    let url = format!("http://127.0.0.1:{port}");

    // shoal add --category: the label, and the sub-folder of that name.
    let o = shoal(&[
        "add",
        "--url",
        &url,
        "--paused",
        "--category",
        "films",
        ta.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ha = hex::encode(info_hash(&ta));
    let (_, list) = json(port, "GET", "/api/torrents", None);
    let t = torrent_of(&list, &ha);
    assert_eq!(t["category"], "films", "{t}");
    let root = dl.canonicalize().unwrap();
    assert_eq!(
        t["download_dir"].as_str().unwrap(),
        root.join("films").to_str().unwrap()
    );
    // A name that does not lead to a folder below the root is refused,
    // nothing added ("a/b" is a nested category, as qBittorrent's; an
    // empty one is none).
    for bad in ["../up", "a//b", "x/..", "back\\slash", "/abs"] {
        let (status, v) = json(
            port,
            "POST",
            "/api/torrents",
            Some(serde_json::json!({
                "magnet": format!("magnet:?xt=urn:btih:{}", "1".repeat(40)),
                "category": bad,
            })),
        );
        assert_eq!(status, 400, "{bad:?}: {v}");
    }
    // A watch folder's sub-folder is a category.
    std::fs::create_dir_all(w.join("music")).unwrap();
    std::fs::copy(&tb, w.join("music/b.torrent")).unwrap();
    appears(&w.join("music/b.torrent.added"));
    let hb = hex::encode(info_hash(&tb));
    let (_, list) = json(port, "GET", "/api/torrents", None);
    assert_eq!(torrent_of(&list, &hb)["category"], "music", "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}
