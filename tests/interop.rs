//! shoal against independent clients (aria2, Transmission 3.00) through a
//! real tracker (opentracker), all on loopback: the interop matrix of
//! issue 4. Each cell moves a multi-file torrent (5 files, one empty, a file
//! boundary inside a piece, 16.1 MiB), checks every byte, and checks what the
//! tracker was told. docs/interop.md has the matrix, versions, timings, and
//! how to run one cell by hand. `SHOAL_SKIP_INTEROP=1` skips them all.

mod common;
// Declared here rather than in common/mod.rs, so the other test binaries
// don't build it.
#[path = "common/interop.rs"]
mod interop;
#[path = "common/pack.rs"]
#[allow(dead_code)]
mod pack;

use std::path::Path;
use std::time::Duration;

use common::{tail, Proc};
use interop::*;
use pack::*;

/// Panics unless the tracker got shoal's `stopped` as its last announce.
fn assert_stopped(tracker: &Tracker, port: u16, shoal: &Proc, what: &str) {
    let ev = tracker.events_of(port);
    assert_eq!(
        ev.last().map(String::as_str),
        Some("stopped"),
        "{what}: the tracker never got `stopped` from port {port}; it saw {ev:?}\n{}",
        tail(&shoal.stderr(), 30)
    );
}

/// A leecher's announces: `started` with everything left, one `completed`
/// with nothing left, then `stopped`.
fn assert_leecher_events(tracker: &Tracker, port: u16, shoal: &Proc, what: &str) {
    let ann: Vec<Announce> = tracker
        .announces()
        .into_iter()
        .filter(|a| a.port == port)
        .collect();
    let ev: Vec<&str> = ann.iter().map(|a| a.event.as_str()).collect();
    assert_eq!(ev.first(), Some(&"started"), "{what}: {ann:?}");
    assert_eq!(ann[0].left, TOTAL, "{what}: {ann:?}");
    let done: Vec<usize> = (0..ev.len()).filter(|&i| ev[i] == "completed").collect();
    assert_eq!(done.len(), 1, "{what}: one `completed` expected: {ann:?}");
    assert_eq!(
        ann[done[0]].left, 0,
        "{what}: `completed` must say left=0: {ann:?}"
    );
    assert_stopped(tracker, port, shoal, what);
    assert!(done[0] < ev.len() - 1, "{what}: {ann:?}");
    assert_eq!(ann[ev.len() - 1].left, 0, "{what}: {ann:?}");
}

/// A seeder's announces: `started` with nothing left, never `completed`,
/// then `stopped`.
fn assert_seeder_events(tracker: &Tracker, port: u16, shoal: &Proc, what: &str) {
    let ann: Vec<Announce> = tracker
        .announces()
        .into_iter()
        .filter(|a| a.port == port)
        .collect();
    assert_eq!(
        ann.first().map(|a| a.event.as_str()),
        Some("started"),
        "{what}: {ann:?}"
    );
    assert_eq!(
        ann[0].left, 0,
        "{what}: a seed's `started` must say left=0: {ann:?}"
    );
    assert!(
        ann.iter().all(|a| a.event != "completed"),
        "{what}: {ann:?}"
    );
    assert_stopped(tracker, port, shoal, what);
}

/// What opentracker should show of these shoal clients, going by the
/// announces it accepted from them: (seeds still listed, leechers still
/// listed, downloads counted). With no known bug hitting: (0, 0, leechers).
fn tracker_view(tracker: &Tracker, ports: &[u16]) -> (u64, u64, u64) {
    let ann = tracker.announces();
    let (mut seeds, mut leechers) = (0, 0);
    for port in ports {
        match ann.iter().rev().find(|a| a.port == *port) {
            Some(a) if a.event == "stopped" => {}
            Some(a) if a.left == 0 => seeds += 1,
            Some(_) => leechers += 1,
            None => {}
        }
    }
    // opentracker counts a `completed` only with left=0.
    let downloads = ann
        .iter()
        .filter(|a| ports.contains(&a.port) && a.event == "completed" && a.left == 0)
        .count() as u64;
    (seeds, leechers, downloads)
}

// ------------------------------------------------------------------ cells

/// shoal leecher ← aria2 seeder, HTTP tracker.
#[test]
fn shoal_leeches_from_aria2_http_tracker() {
    if !should_run("shoal_leeches_from_aria2", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_aria2");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));

    let (mut aria, _) = aria2_seeder(d, "aria2-seeder", &t, &src, &[]);
    tracker.wait_scrape(&hash, "aria2 to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    let (mut leech, port, out) = shoal_leecher(d, &t, "shoal-leecher");
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_handshake_from(&leech, "shoal leecher", "aria2/");
    assert_running(&mut aria, "aria2 seeder");

    assert_leecher_events(&tracker, port, &leech, "shoal leecher");
    // opentracker's own view: shoal's `completed` counted (aria2, seeding
    // from the start, sends none), and only aria2 still listed (plus shoal,
    // if a known bug cost its `stopped`).
    let (gs, gl, gd) = tracker_view(&tracker, &[port]);
    tracker.wait_scrape(
        &hash,
        "shoal's completed/stopped",
        Duration::from_secs(5),
        |s| s.downloaded == gd && s.complete == 1 + gs && s.incomplete == gl,
    );
}

/// shoal seeder → aria2 leecher, HTTP tracker, torrent made by `shoal create`
/// with the piece length it picks (16 KiB here, 1030 pieces).
#[test]
fn aria2_leeches_from_shoal_http_tracker() {
    if !should_run("aria2_leeches_from_shoal", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("aria2_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let (tracker, t, hash, mut seeder, port) = shoal_seeder_on_tracker(d, &src);
    let out = d.join("aria2-dl");
    let (mut aria, _) = aria2_leecher(d, "aria2-leecher", &t, &out);
    let status = wait_exit(&mut aria, "aria2 leecher", TRANSFER);
    assert!(
        status.success(),
        "aria2 leecher exited with {status}:\n{}",
        tail(&aria.stdout(), 30)
    );
    assert_tree_matches(&src, &out, false);
    assert_handshake_from(&seeder, "shoal seeder", "aria2/");
    // aria2 opens with an encrypted (MSE) handshake; refused, it waits a
    // second and retries in plain text. shoal answers it instead.
    let log = std::fs::read_to_string(d.join("aria2-leecher.log")).unwrap_or_default();
    assert!(
        log.contains("Connecting to 127.0.0.1")
            && !log.contains("Retry using legacy BitTorrent handshake"),
        "aria2's encrypted handshake was not accepted:\n{}",
        tail(&log, 30)
    );
    assert_running(&mut seeder, "shoal seeder");
    let st = seeder.stop();
    assert!(st.success(), "{}", tail(&seeder.stderr(), 30));
    assert!(seeder.done_event()["uploaded"].as_u64().unwrap() >= TOTAL);

    assert_seeder_events(&tracker, port, &seeder, "shoal seeder");
    // aria2 (exited) and shoal (stopped) are gone. aria2 leaving with
    // --seed-time=0 announces `stopped` (left=0) but never `completed`,
    // so the tracker's download count is not checked here.
    let (gs, gl, gd) = tracker_view(&tracker, &[port]);
    tracker.wait_scrape(&hash, "both gone", Duration::from_secs(10), |s| {
        s.downloaded >= gd && s.complete == gs && s.incomplete == gl
    });
}

/// shoal leecher ← Transmission seeder, UDP tracker. Also: shoal copes with
/// Transmission's BEP 6 (have-all) and BEP 10 handshake.
#[test]
fn shoal_leeches_from_transmission_udp_tracker() {
    if !should_run(
        "shoal_leeches_from_transmission",
        &[OPENTRACKER, TR_DAEMON, TR_REMOTE],
    ) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_transmission");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.udp_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));

    let tr = Transmission::start(d, "transmission");
    tr.add(&t, &src);
    tr.wait_complete("Transmission to check the data", SEEDER_UP);
    tracker.wait_scrape(
        &hash,
        "Transmission to announce (UDP) as a seed",
        SEEDER_UP,
        |s| s.complete == 1,
    );
    let (mut leech, port, out) = shoal_leecher(d, &t, "shoal-leecher");
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_handshake_from(&leech, "shoal leecher", "Transmission ");

    assert_leecher_events(&tracker, port, &leech, "shoal leecher");
    let ann = tracker.announces();
    assert!(
        ann.iter().filter(|a| a.port == port).all(|a| a.udp),
        "shoal should announce over UDP: {ann:?}"
    );
    let (gs, gl, gd) = tracker_view(&tracker, &[port]);
    tracker.wait_scrape(
        &hash,
        "shoal's completed/stopped",
        Duration::from_secs(5),
        |s| s.downloaded == gd && s.complete == 1 + gs && s.incomplete == gl,
    );
}

/// shoal seeder → Transmission leecher, HTTP tracker, torrent made by `shoal
/// create` with the piece length it picks. Transmission 3.00 drops loopback
/// peers it hears of from a tracker, so the data only flows because shoal
/// connects out to the leecher the tracker names.
#[test]
fn transmission_leeches_from_shoal_http_tracker() {
    if !should_run(
        "transmission_leeches_from_shoal",
        &[OPENTRACKER, TR_DAEMON, TR_REMOTE],
    ) {
        return;
    }
    let cell = Cell::new("transmission_leeches_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), None);
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));

    let tr = Transmission::start(d, "transmission");
    let dl = d.join("transmission-dl");
    std::fs::create_dir_all(&dl).unwrap();
    tr.add(&t, &dl);
    // Transmission first: shoal learns of it from its one `started`
    // announce (the next is ~30 min away at opentracker's interval).
    tracker.wait_scrape(
        &hash,
        "Transmission to announce as a leecher",
        SEEDER_UP,
        |s| s.incomplete == 1,
    );
    let (mut seeder, port) = shoal_seeder(d, &t, &src, "shoal-seeder");
    tr.wait_complete("Transmission to download from shoal", TRANSFER);
    // Transmission 3.00 never creates zero-length files.
    assert_tree_matches(&src, &dl, true);
    assert_handshake_from(&seeder, "shoal seeder", "Transmission ");
    tracker.wait_scrape(
        &hash,
        "Transmission's completed",
        Duration::from_secs(30),
        |s| s.downloaded == 1,
    );
    assert_running(&mut seeder, "shoal seeder");
    let st = seeder.stop();
    assert!(st.success(), "{}", tail(&seeder.stderr(), 30));
    assert!(seeder.done_event()["uploaded"].as_u64().unwrap() >= TOTAL);

    assert_seeder_events(&tracker, port, &seeder, "shoal seeder");
    let (gs, gl, gd) = tracker_view(&tracker, &[port]);
    tracker.wait_scrape(
        &hash,
        "shoal gone, Transmission seeding",
        Duration::from_secs(5),
        |s| s.complete == 1 + gs && s.incomplete == gl && s.downloaded == 1 + gd,
    );
}

/// Two shoal leechers ← aria2 and Transmission seeding together, HTTP
/// tracker. aria2 is held to 512 KiB/s so that Transmission (which unchokes
/// at its 10 s rechoke) has to contribute too.
#[test]
fn shoal_leeches_from_aria2_and_transmission_with_second_shoal() {
    if !should_run(
        "shoal_leeches_from_aria2_and_transmission",
        &[OPENTRACKER, ARIA2, TR_DAEMON, TR_REMOTE],
    ) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_aria2_and_transmission");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));

    let tr = Transmission::start(d, "transmission");
    tr.add(&t, &src);
    tr.wait_complete("Transmission to check the data", SEEDER_UP);
    let rpc = common::free_port();
    let (mut aria, _) = aria2_seeder(
        d,
        "aria2-seeder",
        &t,
        &src,
        &[
            "--max-upload-limit=512K".into(),
            "--enable-rpc=true".into(),
            format!("--rpc-listen-port={rpc}"),
        ],
    );
    tracker.wait_scrape(
        &hash,
        "aria2 and Transmission to announce",
        SEEDER_UP,
        |s| s.complete == 2,
    );

    // Over TCP: this cell is the TCP path with both clients (tests/utp.rs
    // has Transmission over uTP). With uTP first, both leechers' dials
    // reached Transmission 3.00 while its own dials to them were in
    // handshake, and it dropped every one (see below).
    let tcp = ["--transport", "tcp"];
    let (mut l1, p1, o1) = shoal_leecher_with(d, &t, "shoal-leecher-1", &tcp);
    // A second apart, so they don't dial Transmission at the same instant
    // (see below); the second still hears of the first from the tracker.
    std::thread::sleep(Duration::from_secs(1));
    let (mut l2, p2, o2) = shoal_leecher_with(d, &t, "shoal-leecher-2", &tcp);
    finish_download(&mut l1, "shoal leecher 1", Duration::from_secs(90));
    finish_download(&mut l2, "shoal leecher 2", Duration::from_secs(90));
    assert_tree_matches(&src, &o1, false);
    assert_tree_matches(&src, &o2, false);
    // aria2 dials every leecher it hears of (and they dial it).
    assert_handshake_from(&l1, "shoal leecher 1", "aria2/");
    assert_handshake_from(&l2, "shoal leecher 2", "aria2/");
    // Transmission 3.00 closes an incoming connection at once while another
    // handshake from the same IP is in progress (on loopback: everyone), so
    // a leecher may miss it; between them they must have reached it.
    let (log1, log2) = (l1.stderr(), l2.stderr());
    assert!(
        log1.contains(": client Transmission ") || log2.contains(": client Transmission "),
        "neither shoal leecher got Transmission's extended handshake"
    );
    // The later of the two hears of the earlier from the tracker.
    assert!(
        log1.contains(": client shoal") || log2.contains(": client shoal"),
        "the two shoal leechers never met"
    );
    // Both independent seeders really sent data.
    let info = tr.info();
    let tr_up = Transmission::field(&info, "Uploaded").unwrap_or_default();
    assert!(
        !tr_up.is_empty() && tr_up != "None",
        "Transmission uploaded nothing:\n{info}"
    );
    assert_running(&mut aria, "aria2 seeder");
    let active = aria2_rpc(
        rpc,
        "aria2.tellActive",
        serde_json::json!([["uploadLength"]]),
    );
    let aria_up: u64 = active["result"][0]["uploadLength"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(aria_up > 0, "aria2 uploaded nothing: {active}");
    let (u1, u2) = (
        l1.done_event()["uploaded"].as_u64().unwrap(),
        l2.done_event()["uploaded"].as_u64().unwrap(),
    );
    eprintln!(
        "sources: Transmission uploaded {tr_up}, aria2 {aria_up} B, shoal leechers {u1} B and {u2} B"
    );

    assert_leecher_events(&tracker, p1, &l1, "shoal leecher 1");
    assert_leecher_events(&tracker, p2, &l2, "shoal leecher 2");
    let (gs, gl, gd) = tracker_view(&tracker, &[p1, p2]);
    tracker.wait_scrape(
        &hash,
        "both shoals' completed/stopped",
        Duration::from_secs(5),
        |s| s.downloaded == gd && s.complete == 2 + gs && s.incomplete == gl,
    );
}

/// A torrent made by `transmission-create`: `shoal info` reads it as
/// Transmission does, and shoal downloads it (from aria2, HTTP tracker).
#[test]
fn shoal_downloads_transmission_created_torrent() {
    if !should_run(
        "shoal_downloads_transmission_created_torrent",
        &[OPENTRACKER, ARIA2, TR_CREATE, TR_SHOW],
    ) {
        return;
    }
    let cell = Cell::new("shoal_downloads_transmission_created_torrent");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = d.join("tc.torrent");
    run(
        "transmission-create",
        &[
            "-o",
            t.to_str().unwrap(),
            "-t",
            &tracker.http_url(),
            "-s",
            "64",
            src.join("pack").to_str().unwrap(),
        ],
    );
    let info = shoal_info(&t);
    let hash = info["info_hash"].as_str().unwrap().to_string();
    let shown = run("transmission-show", &[t.to_str().unwrap()]);
    assert!(
        shown.contains(&format!("Hash: {hash}")),
        "shoal and transmission-show disagree on the info-hash ({hash}):\n{shown}"
    );
    assert!(
        info["created_by"]
            .as_str()
            .unwrap_or("")
            .starts_with("Transmission/"),
        "{info}"
    );
    assert_eq!(info["piece_length"], 65536, "{info}");
    assert_eq!(info["total_size"].as_u64(), Some(TOTAL), "{info}");
    // transmission-create 3.00 leaves zero-length files out of the torrent.
    let listed: Vec<String> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let non_empty: Vec<String> = FILES
        .iter()
        .filter(|f| f.1 > 0)
        .map(|f| f.0.to_string())
        .collect();
    assert!(non_empty.iter().all(|f| listed.contains(f)), "{listed:?}");
    check_shape(&info, false);
    tracker.start(std::slice::from_ref(&hash));

    let (mut aria, _) = aria2_seeder(d, "aria2-seeder", &t, &src, &[]);
    tracker.wait_scrape(&hash, "aria2 to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    let (mut leech, port, out) = shoal_leecher(d, &t, "shoal-leecher");
    finish_download(&mut leech, "shoal leecher", TRANSFER);
    assert_tree_matches(&src, &out, true);
    for f in &listed {
        assert!(out.join(f).exists(), "{f} not downloaded");
    }
    assert_running(&mut aria, "aria2 seeder");
    assert_leecher_events(&tracker, port, &leech, "shoal leecher");
    let (gs, gl, gd) = tracker_view(&tracker, &[port]);
    tracker.wait_scrape(
        &hash,
        "shoal's completed/stopped",
        Duration::from_secs(5),
        |s| s.downloaded == gd && s.complete == 1 + gs && s.incomplete == gl,
    );
}

/// A torrent made by `shoal create` reads the same in aria2 and Transmission:
/// same info-hash and piece count (offline; the cells above then trade it).
#[test]
fn shoal_created_torrent_reads_the_same_in_aria2_and_transmission() {
    if !should_run("shoal_created_torrent_reads_the_same", &[ARIA2, TR_SHOW]) {
        return;
    }
    let cell = Cell::new("shoal_created_torrent_reads_the_same");
    let d = cell.path();
    let src = make_data(d);
    for piece in [None, Some(PIECE)] {
        let t = shoal_torrent(d, &src, "http://127.0.0.1:1/announce", piece);
        let info = shoal_info(&t);
        let hash = info["info_hash"].as_str().unwrap();
        let pieces = info["piece_count"].as_u64().unwrap();
        let aria = run("aria2c", &["--no-conf=true", "-S", t.to_str().unwrap()]);
        assert!(aria.contains(&format!("Info Hash: {hash}")), "{aria}");
        assert!(
            aria.contains(&format!("The Number of Pieces: {pieces}")),
            "{aria}"
        );
        let shown = run("transmission-show", &[t.to_str().unwrap()]);
        assert!(shown.contains(&format!("Hash: {hash}")), "{shown}");
        assert!(shown.contains(&format!("Piece Count: {pieces}")), "{shown}");
        for (path, _) in FILES {
            assert!(aria.contains(&format!("./{path}")), "{path}:\n{aria}");
            assert!(shown.contains(&format!("  {path} (")), "{path}:\n{shown}");
        }
    }
}

/// Regression for two bugs found here: `stopped` lost when sent right after
/// `completed` on a connection opentracker had closed, and announces with a
/// stale `left`. Eight short downloads in a row from aria2 through
/// opentracker; every `completed` must say left=0 and every `stopped` arrive.
#[test]
fn announces_are_exact_every_time() {
    if !should_run("announces_are_exact_every_time", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("announces_are_exact_every_time");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let (_aria, _) = aria2_seeder(d, "aria2-seeder", &t, &src, &[]);
    tracker.wait_scrape(&hash, "aria2 to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    let mut wrong = Vec::new();
    for i in 0..8 {
        // Only this leecher's: an earlier one may have had the same port.
        let before = tracker.announces().len();
        let (mut leech, port, _) = shoal_leecher(d, &t, &format!("shoal-leecher-{i}"));
        finish_download(&mut leech, "shoal leecher", TRANSFER);
        let ann: Vec<(String, u64)> = tracker
            .announces()
            .into_iter()
            .skip(before)
            .filter(|a| a.port == port)
            .map(|a| (a.event, a.left))
            .collect();
        let want = vec![
            ("started".to_string(), TOTAL),
            ("completed".to_string(), 0),
            ("stopped".to_string(), 0),
        ];
        if ann != want {
            wrong.push((i, ann, tail(&leech.stderr(), 3)));
        }
    }
    assert!(wrong.is_empty(), "wrong announces: {wrong:#?}");
    let s = tracker.scrape(&hash);
    assert_eq!((s.complete, s.incomplete, s.downloaded), (1, 0, 8), "{s:?}");
}

/// aria2 seeder → shoal, by magnet link with no tracker: metadata (BEP 9)
/// and data come from aria2.
#[test]
fn shoal_fetches_a_magnet_from_aria2() {
    if !should_run("shoal_magnet_from_aria2", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("shoal_magnet_from_aria2");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.http_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let (mut aria, aria_port) = aria2_seeder(d, "aria2-seeder", &t, &src, &[]);
    tracker.wait_scrape(&hash, "aria2 to announce as a seed", SEEDER_UP, |s| {
        s.complete == 1
    });
    shoal_magnet_download(d, &t, aria_port, &src, "shoal magnet from aria2");
    assert_running(&mut aria, "aria2 seeder");
}

/// Transmission seeder → shoal, by magnet link naming only Transmission.
#[test]
fn shoal_fetches_a_magnet_from_transmission() {
    if !should_run(
        "shoal_magnet_from_transmission",
        &[OPENTRACKER, TR_DAEMON, TR_REMOTE],
    ) {
        return;
    }
    let cell = Cell::new("shoal_magnet_from_transmission");
    let d = cell.path();
    let src = make_data(d);
    let mut tracker = Tracker::new(d);
    let t = shoal_torrent(d, &src, &tracker.udp_url(), Some(PIECE));
    let hash = info_hash(&t);
    tracker.start(std::slice::from_ref(&hash));
    let tr = Transmission::start(d, "transmission");
    tr.add(&t, &src);
    tr.wait_complete("Transmission to check the data", SEEDER_UP);
    shoal_magnet_download(d, &t, tr.peer_port, &src, "shoal magnet from Transmission");
}

/// shoal seeder → aria2, by magnet link with a tracker: aria2 gets the
/// metadata from shoal (shoal serves ut_metadata), then the data.
#[test]
fn aria2_fetches_a_magnet_from_shoal() {
    if !should_run("aria2_magnet_from_shoal", &[OPENTRACKER, ARIA2]) {
        return;
    }
    let cell = Cell::new("aria2_magnet_from_shoal");
    let d = cell.path();
    let src = make_data(d);
    let (tracker, t, _, mut seeder, _) = shoal_seeder_on_tracker(d, &src);
    let out = d.join("aria2-dl");
    let uri = magnet_of(&t, None, Some(&tracker.http_url()));
    let (mut aria, _) = aria2_leecher(d, "aria2-leecher", Path::new(&uri), &out);
    let status = wait_exit(&mut aria, "aria2 leecher", TRANSFER);
    assert!(
        status.success(),
        "aria2 leecher exited with {status}:\n{}",
        tail(&aria.stdout(), 30)
    );
    assert_tree_matches(&src, &out, false);
    assert_running(&mut seeder, "shoal seeder");
}

/// aria2 seeder → shoal through the DHT alone: a bootstrap node of the
/// `mainline` crate on loopback, aria2's DHT pointed at it, and a magnet
/// link with neither tracker nor peer address. shoal finds aria2 by
/// `get_peers`, gets the metadata and the data from it.
#[test]
fn shoal_finds_an_aria2_seeder_through_the_dht() {
    if !should_run("shoal_dht_aria2", &[ARIA2]) {
        return;
    }
    let cell = Cell::new("shoal_dht_aria2");
    let d = cell.path();
    let src = make_data(d);
    // The torrent names a tracker that is never started: aria2 must find
    // no one through it.
    let t = shoal_torrent(d, &src, "http://127.0.0.1:9/announce", Some(PIECE));
    let boot_port = common::free_port();
    let _boot = mainline::Dht::builder()
        .server_mode()
        .no_bootstrap()
        .bind_address(std::net::Ipv4Addr::LOCALHOST)
        .port(boot_port)
        .build()
        .unwrap();
    let dht_port = common::free_port();
    let (mut aria, _) = aria2_seeder(
        d,
        "aria2-seeder",
        &t,
        &src,
        &[
            "--enable-dht=true".into(),
            format!("--dht-listen-port={dht_port}"),
            format!("--dht-entry-point=127.0.0.1:{boot_port}"),
            format!("--dht-file-path={}", d.join("aria2-dht.dat").display()),
        ],
    );
    // aria2 announces once it has checked its data and joined the DHT.
    wait_for(
        "aria2 to announce on the DHT",
        SEEDER_UP,
        || {
            let log = std::fs::read_to_string(d.join("aria2-seeder.log")).unwrap_or_default();
            log.contains("dht query announce_peer").then_some(())
        },
        || tail(&aria.stdout(), 20),
    );
    let out = d.join("shoal-dht");
    let mut p = Proc::spawn_dht(
        &[
            "download",
            &magnet_of(&t, None, None),
            "-o",
            out.to_str().unwrap(),
            "--port",
            &common::free_port().to_string(),
            "--dht-bootstrap",
            &format!("127.0.0.1:{boot_port}"),
            "--state-dir",
            d.join("shoal-state").to_str().unwrap(),
            "--json",
        ],
        d,
        "shoal-dht",
    );
    finish_download(&mut p, "shoal via the DHT", TRANSFER);
    assert_tree_matches(&src, &out, false);
    assert_handshake_from(&p, "shoal via the DHT", "aria2/");
    assert_running(&mut aria, "aria2 seeder");
}
