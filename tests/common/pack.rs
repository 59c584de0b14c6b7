//! The torrent every interop cell moves (tests/interop.rs, tests/clients.rs):
//! `pack/` with 5 files, one empty, a file boundary inside a piece at every
//! piece length used (16, 64 and 256 KiB), a short last piece; 16.1 MiB.
//! And shoal as a leecher or seeder of it. See docs/interop.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{self, make_tree, shoal_bin, tail, Proc};
use crate::interop::{assert_tree_matches, info_hash, shoal_info, wait_for, Tracker};

/// A file boundary inside a piece (at any piece length used here: 16, 64 and
/// 256 KiB), a zero-length file, a nested folder, a short last piece.
pub const FILES: &[(&str, usize)] = &[
    ("pack/a.bin", 6_000_001),
    ("pack/empty.txt", 0),
    ("pack/sub/b.bin", 10_800_000),
    ("pack/sub/c.txt", 4_321),
    ("pack/z.bin", 65_537),
];
pub const PIECE: u32 = 256 * 1024;
pub const TOTAL: u64 = 16_869_859;
/// How long a seeder may take to check its data and announce.
pub const SEEDER_UP: Duration = Duration::from_secs(30);
/// How long a cell's transfer may take (a few seconds on 2 cores; the
/// rest is room for a loaded machine).
pub const TRANSFER: Duration = Duration::from_secs(90);

/// Writes the data under `cell/src` and returns that folder.
pub fn make_data(cell: &Path) -> PathBuf {
    assert_eq!(FILES.iter().map(|f| f.1 as u64).sum::<u64>(), TOTAL);
    let src = cell.join("src");
    make_tree(&src, FILES);
    src
}

/// `shoal create` of `src/pack` announcing to `tracker` ("": none);
/// `piece` None lets shoal pick.
pub fn shoal_torrent(cell: &Path, src: &Path, tracker: &str, piece: Option<u32>) -> PathBuf {
    shoal_torrent_with(cell, src, tracker, piece, &[])
}

/// The same with more `shoal create` flags (e.g. `--hybrid`).
pub fn shoal_torrent_with(
    cell: &Path,
    src: &Path,
    tracker: &str,
    piece: Option<u32>,
    extra: &[&str],
) -> PathBuf {
    let out = cell.join("pack.torrent");
    let mut args = vec![
        "create".to_string(),
        src.join("pack").display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--force".into(),
    ];
    if !tracker.is_empty() {
        args.extend(["-t".to_string(), tracker.to_string()]);
    }
    if let Some(p) = piece {
        args.extend(["--piece-length".to_string(), p.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(shoal_bin()).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_shape(&shoal_info(&out), true);
    out
}

/// What issue 4 asks of every cell's torrent.
pub fn check_shape(info: &serde_json::Value, want_empty_file: bool) {
    let files = info["files"].as_array().unwrap();
    let piece = info["piece_length"].as_u64().unwrap();
    let sizes: Vec<u64> = files.iter().map(|f| f["size"].as_u64().unwrap()).collect();
    assert!(files.len() >= 3, "{info}");
    assert!(info["total_size"].as_u64().unwrap() >= 16 << 20, "{info}");
    assert!(
        !want_empty_file || sizes.contains(&0),
        "no empty file: {info}"
    );
    let mut off = 0;
    let mut inside = false;
    for s in &sizes[..sizes.len() - 1] {
        off += s;
        inside |= off % piece != 0;
    }
    assert!(inside, "no file boundary inside a piece: {info}");
}

/// `shoal download` of `torrent` into `cell/name`: (process, its port, the
/// output folder).
pub fn shoal_leecher(cell: &Path, torrent: &Path, name: &str) -> (Proc, u16, PathBuf) {
    shoal_leecher_with(cell, torrent, name, &[])
}

/// The same with more flags (e.g. `--peer`, `--encryption`).
pub fn shoal_leecher_with(
    cell: &Path,
    torrent: &Path,
    name: &str,
    extra: &[&str],
) -> (Proc, u16, PathBuf) {
    let port = common::free_port();
    let out = cell.join(name);
    let port_s = port.to_string();
    let mut args = vec![
        "download",
        torrent.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--port",
        &port_s,
        "--json",
    ];
    args.extend_from_slice(extra);
    (Proc::spawn(&args, cell, name), port, out)
}

/// `shoal seed` of `torrent` from `src`: (process, its port).
pub fn shoal_seeder(cell: &Path, torrent: &Path, src: &Path, name: &str) -> (Proc, u16) {
    shoal_seeder_with(cell, torrent, src, name, &[])
}

/// The same with more flags; returns once it listens.
pub fn shoal_seeder_with(
    cell: &Path,
    torrent: &Path,
    src: &Path,
    name: &str,
    extra: &[&str],
) -> (Proc, u16) {
    let port = common::free_port();
    let port_s = port.to_string();
    let mut args = vec![
        "seed",
        torrent.to_str().unwrap(),
        "--from",
        src.to_str().unwrap(),
        "--port",
        &port_s,
        "--json",
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args, cell, name);
    common::wait_listening(port);
    (p, port)
}

/// Waits for a shoal download to finish and checks its report.
pub fn finish_download(p: &mut Proc, what: &str, limit: Duration) {
    finish_download_of(p, what, limit, TOTAL);
}

/// The same for a torrent of `total` bytes (a hybrid's pad files count).
pub fn finish_download_of(p: &mut Proc, what: &str, limit: Duration, total: u64) {
    let status = p.wait(limit);
    assert!(
        status.success(),
        "{what} failed ({status}):\n{}",
        tail(&p.stderr(), 40)
    );
    let done = p.done_event();
    assert_eq!(done["complete"], true, "{what}: {done}");
    assert_eq!(done["have_bytes"].as_u64(), Some(total), "{what}: {done}");
}

/// Asserts shoal's debug log shows the peer's BEP 10 extended handshake.
pub fn assert_handshake_from(p: &Proc, what: &str, client: &str) {
    let log = p.stderr();
    assert!(
        log.contains(&format!(": client {client}")),
        "{what}: no extended handshake from {client} in the log:\n{}",
        tail(&log, 40)
    );
}

/// A magnet link for `torrent` naming `peer` (x.pe) and, if given, a tracker.
pub fn magnet_of(torrent: &Path, peer: Option<u16>, tracker: Option<&str>) -> String {
    let mut m = format!("magnet:?xt=urn:btih:{}&dn=pack", info_hash(torrent));
    if let Some(p) = peer {
        m.push_str(&format!("&x.pe=127.0.0.1:{p}"));
    }
    if let Some(t) = tracker {
        m.push_str("&tr=");
        m.push_str(
            &percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
    }
    m
}

/// shoal downloads a magnet link whose only peer is `seed_port`: the
/// metadata, then the data, both from that peer (issue 11).
pub fn shoal_magnet_download(cell: &Path, torrent: &Path, seed_port: u16, src: &Path, what: &str) {
    let out = cell.join("shoal-magnet");
    let saved = cell.join("fetched.torrent");
    let mut p = Proc::spawn(
        &[
            "download",
            &magnet_of(torrent, Some(seed_port), None),
            "-o",
            out.to_str().unwrap(),
            "--port",
            &common::free_port().to_string(),
            "--save-torrent",
            saved.to_str().unwrap(),
            "--json",
        ],
        cell,
        "shoal-magnet",
    );
    finish_download(&mut p, what, TRANSFER);
    assert_tree_matches(src, &out, false);
    assert_eq!(info_hash(&saved), info_hash(torrent), "{what}");
    assert!(
        common::last_event(&p.stdout(), "metadata").is_some(),
        "{what}: no metadata event"
    );
}

/// An HTTP tracker, a `shoal create` torrent of `src` with the piece length
/// shoal picks, and a shoal seeder of it that the tracker has heard from.
pub fn shoal_seeder_on_tracker(d: &Path, src: &Path) -> (Tracker, PathBuf, String, Proc, u16) {
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, src, &tracker.http_url(), None);
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let (seeder, port) = shoal_seeder(d, &t, src, "shoal-seeder");
    wait_for(
        "shoal's `started`",
        SEEDER_UP,
        || (!tracker.events_of(port).is_empty()).then_some(()),
        || tail(&seeder.stderr(), 20),
    );
    (tracker, t, hash, seeder, port)
}
