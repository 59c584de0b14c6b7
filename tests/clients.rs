//! shoal against qBittorrent-nox 4.5 (libtorrent 2.0), rtorrent 0.9.8
//! (libtorrent-rakshasa 0.13) and ctorrent dnh3.3.2, both ways each, on
//! loopback: more cells of the interop matrix (issue 19; tests/interop.rs
//! has aria2 and Transmission). Every cell moves the same multi-file
//! torrent (tests/common/pack.rs), compares every byte, and proves the
//! other client took part: its client name or peer id in shoal's log, or
//! its own report (qBittorrent's Web API, rtorrent's event hooks,
//! ctorrent's output). docs/interop.md has the matrix and the times.
//! `SHOAL_SKIP_INTEROP=1` skips them all.

#[path = "common/clients.rs"]
mod clients;
mod common;
#[path = "common/interop.rs"]
#[allow(dead_code)]
mod interop;
#[path = "common/pack.rs"]
#[allow(dead_code)]
mod pack;

use std::path::Path;

use clients::*;
use common::{tail, Proc};
use interop::*;
use pack::*;

/// Asserts shoal's debug log has `needle`.
fn assert_log(p: &Proc, what: &str, needle: &str) {
    let log = p.stderr();
    assert!(
        log.contains(needle),
        "{what}: no `{needle}` in shoal's log:\n{}",
        tail(&log, 40)
    );
}

/// shoal's seeder stops cleanly and says it uploaded the whole torrent.
fn stop_seeder(seeder: &mut Proc) {
    assert_running(seeder, "shoal seeder");
    let st = seeder.stop();
    assert!(st.success(), "{}", tail(&seeder.stderr(), 30));
    let up = seeder.done_event()["uploaded"].as_u64().unwrap_or(0);
    assert!(up >= TOTAL, "shoal uploaded {up} of {TOTAL}");
}

// ------------------------------------------------------------ qBittorrent

const QB: &str = ": client qBittorrent/4.5";

/// qBittorrent seeding `torrent` from `src`, checked, complete, and
/// answering handshakes.
fn qb_seeder(d: &Path, torrent: &Path, src: &Path, enc: QbEncryption) -> QBittorrent {
    let qb = QBittorrent::start(d, "qbittorrent", enc);
    qb.add_torrent(torrent, src);
    qb.wait_complete("qBittorrent to check the data", SEEDER_UP);
    qb.wait_answers(&info_hash(torrent), enc == QbEncryption::Require);
    qb
}

/// qBittorrent seeds (encryption off), shoal leeches: it finds
/// qBittorrent through the tracker and dials it.
#[test]
fn shoal_leeches_from_qbittorrent() {
    if !should_run(
        "shoal_leeches_from_qbittorrent",
        &[OPENTRACKER, QBITTORRENT],
    ) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_qbittorrent");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let _qb = qb_seeder(d, &t, &src, QbEncryption::Off);
    tracker.wait_scrape(&hash, "qBittorrent to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    let (mut leech, _, out) = shoal_leecher(d, &t, "shoal-leecher");
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_log(&leech, "shoal leecher", QB);
}

/// shoal seeds, qBittorrent (encryption off) leeches: it hears of shoal
/// from the tracker and dials it (its many-connections-per-IP setting on:
/// else it drops loopback peers once it met its own 127.0.0.1 entry).
#[test]
fn qbittorrent_leeches_from_shoal() {
    if !should_run(
        "qbittorrent_leeches_from_shoal",
        &[OPENTRACKER, QBITTORRENT],
    ) {
        return;
    }
    let cell = Cell::new("qbittorrent_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let (_tracker, t, _, mut seeder, _) = shoal_seeder_on_tracker(d, &src);
    let qb = QBittorrent::start(d, "qbittorrent", QbEncryption::Off);
    let dl = d.join("qb-dl");
    qb.add_torrent(&t, &dl);
    qb.wait_complete("qBittorrent to download from shoal", TRANSFER);
    assert_tree_matches(&src, &dl, true);
    assert_log(&seeder, "shoal seeder", QB);
    stop_seeder(&mut seeder);
}

/// qBittorrent requiring encryption seeds; shoal (default `prefer`) dials
/// it and RC4 is selected.
#[test]
fn shoal_leeches_from_qbittorrent_requiring_encryption() {
    if !should_run("shoal_leeches_from_qbittorrent_mse", &[QBITTORRENT]) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_qbittorrent_mse");
    let d = cell.path();
    let src = make_data(d);
    let t = shoal_torrent(d, &src, "", Some(PIECE));
    let qb = qb_seeder(d, &t, &src, QbEncryption::Require);
    let peer = format!("127.0.0.1:{}", qb.peer_port);
    let (mut leech, _, out) = shoal_leecher_with(d, &t, "shoal-leecher", &["--peer", &peer]);
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_log(&leech, "shoal leecher", "encrypted handshake, RC4 selected");
    assert_log(&leech, "shoal leecher", QB);
}

/// shoal (`--encryption require`) seeds; qBittorrent requiring encryption
/// is told to dial it.
#[test]
fn qbittorrent_requiring_encryption_leeches_from_shoal() {
    if !should_run("qbittorrent_mse_leeches_from_shoal", &[QBITTORRENT]) {
        return;
    }
    let cell = Cell::new("qbittorrent_mse_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let t = shoal_torrent(d, &src, "", None);
    let (mut seeder, port) =
        shoal_seeder_with(d, &t, &src, "shoal-seeder", &["--encryption", "require"]);
    let qb = QBittorrent::start(d, "qbittorrent", QbEncryption::Require);
    let dl = d.join("qb-dl");
    qb.add_torrent(&t, &dl);
    qb.add_peer(port);
    qb.wait_complete("qBittorrent to download from shoal", TRANSFER);
    assert_tree_matches(&src, &dl, true);
    assert_log(&seeder, "shoal seeder", "encrypted handshake, RC4 selected");
    assert_log(&seeder, "shoal seeder", QB);
    stop_seeder(&mut seeder);
}

/// qBittorrent seeds; shoal downloads a magnet naming only qBittorrent
/// (`x.pe`): the metadata (BEP 9) and the data come from it.
#[test]
fn shoal_fetches_a_magnet_from_qbittorrent() {
    if !should_run("shoal_magnet_from_qbittorrent", &[QBITTORRENT]) {
        return;
    }
    let cell = Cell::new("shoal_magnet_from_qbittorrent");
    let d = cell.path();
    let src = make_data(d);
    let t = shoal_torrent(d, &src, "", Some(PIECE));
    let qb = qb_seeder(d, &t, &src, QbEncryption::Off);
    shoal_magnet_download(d, &t, qb.peer_port, &src, "shoal magnet from qBittorrent");
    let log = std::fs::read_to_string(d.join("shoal-magnet.err")).unwrap_or_default();
    assert!(log.contains(QB), "{}", tail(&log, 40));
}

/// shoal seeds; qBittorrent gets a magnet link and is told to dial shoal:
/// it takes the metadata from shoal, then the data.
#[test]
fn qbittorrent_fetches_a_magnet_from_shoal() {
    if !should_run("qbittorrent_magnet_from_shoal", &[QBITTORRENT]) {
        return;
    }
    let cell = Cell::new("qbittorrent_magnet_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let t = shoal_torrent(d, &src, "", None);
    let (mut seeder, port) = shoal_seeder(d, &t, &src, "shoal-seeder");
    let qb = QBittorrent::start(d, "qbittorrent", QbEncryption::Off);
    let dl = d.join("qb-dl");
    qb.add_magnet(&magnet_of(&t, Some(port), None), &dl);
    qb.add_peer(port);
    let got = qb.wait_complete("qBittorrent to fetch the magnet from shoal", TRANSFER);
    assert_eq!(got["hash"].as_str(), Some(info_hash(&t).as_str()), "{got}");
    assert_tree_matches(&src, &dl, true);
    assert_log(&seeder, "shoal seeder", QB);
    assert_log(&seeder, "shoal seeder", "metadata piece 0 sent");
    stop_seeder(&mut seeder);
}

/// qBittorrent (libtorrent 2.0, encryption off) seeds a hybrid shoal
/// made; shoal dials it with the v1 hash and the upgrade bit, and takes
/// the answer under the v2 hash (issue 19).
#[test]
fn shoal_leeches_a_hybrid_from_qbittorrent() {
    if !should_run("shoal_leeches_a_hybrid_from_qbittorrent", &[QBITTORRENT]) {
        return;
    }
    let cell = Cell::new("shoal_leeches_a_hybrid_from_qbittorrent");
    let d = cell.path();
    let src = make_data(d);
    let tracker = "";
    let t = shoal_torrent_with(d, &src, tracker, Some(PIECE), &["--hybrid"]);
    let qb = qb_seeder(d, &t, &src, QbEncryption::Off);
    let peer = format!("127.0.0.1:{}", qb.peer_port);
    let (mut leech, _, out) = shoal_leecher_with(
        d,
        &t,
        "shoal-leecher",
        &["--peer", &peer, "--encryption", "plain"],
    );
    // The hybrid's pad files count in its size, not on disk.
    let size = shoal_info(&t)["total_size"].as_u64().unwrap();
    finish_download_of(&mut leech, "shoal leecher", TRANSFER, size);
    assert_tree_matches(&src, &out, false);
    assert_log(&leech, "shoal leecher", "(BEP 52 upgrade)");
    assert_log(&leech, "shoal leecher", QB);
}

/// shoal seeds a hybrid; qBittorrent is told to dial it and downloads.
#[test]
fn qbittorrent_leeches_a_hybrid_from_shoal() {
    if !should_run("qbittorrent_leeches_a_hybrid_from_shoal", &[QBITTORRENT]) {
        return;
    }
    let cell = Cell::new("qbittorrent_leeches_a_hybrid_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let tracker = "";
    let t = shoal_torrent_with(d, &src, tracker, None, &["--hybrid"]);
    let (mut seeder, port) = shoal_seeder(d, &t, &src, "shoal-seeder");
    let qb = QBittorrent::start(d, "qbittorrent", QbEncryption::Off);
    let dl = d.join("qb-dl");
    qb.add_torrent(&t, &dl);
    qb.add_peer(port);
    let got = qb.wait_complete("qBittorrent to download the hybrid from shoal", TRANSFER);
    assert!(
        got["infohash_v2"].as_str().is_some_and(|h| h.len() == 64),
        "qBittorrent does not see a hybrid: {got}"
    );
    assert_tree_matches(&src, &dl, true);
    assert_log(&seeder, "shoal seeder", QB);
    stop_seeder(&mut seeder);
}

// ------------------------------------------------------------ rtorrent

/// rtorrent names itself by its library.
const RT: &str = ": client libTorrent 0.13";

/// rtorrent seeds; shoal finds it through the tracker and downloads.
#[test]
fn shoal_leeches_from_rtorrent() {
    if !should_run("shoal_leeches_from_rtorrent", &[OPENTRACKER, RTORRENT]) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_rtorrent");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let rt = Rtorrent::start(d, "rtorrent", &src);
    rt.load(&t);
    rt.wait_checked(SEEDER_UP);
    tracker.wait_scrape(&hash, "rtorrent to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    let (mut leech, _, out) = shoal_leecher(d, &t, "shoal-leecher");
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_log(&leech, "shoal leecher", RT);
}

/// shoal seeds; rtorrent leeches. rtorrent ignores 127.0.0.1 peers from
/// the tracker, so shoal dials it (`--peer`); rtorrent's own
/// download-finished hook says it is done.
#[test]
fn rtorrent_leeches_from_shoal() {
    if !should_run("rtorrent_leeches_from_shoal", &[OPENTRACKER, RTORRENT]) {
        return;
    }
    let cell = Cell::new("rtorrent_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), None);
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let dl = d.join("rt-dl");
    std::fs::create_dir_all(&dl).unwrap();
    let rt = Rtorrent::start(d, "rtorrent", &dl);
    rt.load(&t);
    rt.wait_checked(SEEDER_UP);
    let peer = format!("127.0.0.1:{}", rt.port);
    let (mut seeder, _) = shoal_seeder_with(d, &t, &src, "shoal-seeder", &["--peer", &peer]);
    rt.wait_finished(TRANSFER);
    assert_tree_matches(&src, &dl, true);
    assert_log(&seeder, "shoal seeder", RT);
    stop_seeder(&mut seeder);
}

// ------------------------------------------------------------ ctorrent

/// ctorrent sends no BEP 10 handshake: its peer id names it.
const CT: &str = "connected, peer id -CD0303-";

/// ctorrent seeds (after its own check: "Seed for others"); shoal dials
/// it and downloads.
#[test]
fn shoal_leeches_from_ctorrent() {
    if !should_run("shoal_leeches_from_ctorrent", &[OPENTRACKER, CTORRENT]) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_ctorrent");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let (mut ct, port) = ctorrent(d, "ctorrent-seeder", &t, &src, true);
    wait_for(
        "ctorrent to check its data",
        SEEDER_UP,
        || {
            ctorrent_output(&ct)
                .contains("Seed for others")
                .then_some(())
        },
        || tail(&ctorrent_output(&ct), 20),
    );
    let peer = format!("127.0.0.1:{port}");
    let (mut leech, _, out) = shoal_leecher_with(d, &t, "shoal-leecher", &["--peer", &peer]);
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_log(&leech, "shoal leecher", CT);
    assert_running(&mut ct, "ctorrent seeder");
}

/// shoal seeds and dials ctorrent, which leeches and exits when it has
/// everything ("Download complete.").
#[test]
fn ctorrent_leeches_from_shoal() {
    if !should_run("ctorrent_leeches_from_shoal", &[OPENTRACKER, CTORRENT]) {
        return;
    }
    let cell = Cell::new("ctorrent_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), None);
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let dl = d.join("ct-dl");
    std::fs::create_dir_all(&dl).unwrap();
    let (mut ct, port) = ctorrent(d, "ctorrent-leecher", &t, &dl, false);
    common::wait_listening(port);
    let peer = format!("127.0.0.1:{port}");
    let (mut seeder, _) = shoal_seeder_with(d, &t, &src, "shoal-seeder", &["--peer", &peer]);
    // Its own word. (It then spends ~15 s "Quitting": its `stopped`
    // announce waits on the tracker's answer, which it does not take.)
    let said = ct.out.clone();
    let said = || {
        std::fs::read_to_string(&said)
            .unwrap_or_default()
            .replace('\r', "\n")
    };
    wait_for(
        "ctorrent to complete the download",
        TRANSFER,
        || {
            assert_running(&mut ct, "ctorrent leecher");
            said().contains("Download complete.").then_some(())
        },
        || tail(&said(), 20),
    );
    // Its cache reaches the disk soon after.
    wait_for(
        "ctorrent's files to be written",
        TRANSFER,
        || same_files(&src, &dl).then_some(()),
        || tail(&said(), 20),
    );
    assert_tree_matches(&src, &dl, true);
    assert_log(&seeder, "shoal seeder", CT);
    stop_seeder(&mut seeder);
}
