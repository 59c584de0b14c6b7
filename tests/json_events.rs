//! `--json` is an interface: every line real runs print must match the
//! schema in docs/json.md, which this test reads, so the two cannot drift.

mod common;

use std::time::Duration;

use common::schema::{check_lines, schema};
use common::*;
use serde_json::Value;

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|v| v["event"].as_str()).collect()
}

#[test]
fn every_event_matches_docs_json_md() {
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src/pack"),
        &[
            ("a.bin", 300_000),
            ("sub/b.bin", 200_000),
            ("c.bin", 70_001),
        ],
    );
    let torrent = create_torrent(&d.join("src/pack"), &d.join("t.torrent"), &[], 16384);
    let total = 570_001u64;
    let pieces = total.div_ceil(16384);
    let (_seeder, port) = seeder(d, &torrent, &d.join("src"), &["--quiet"]);
    let out = d.join("out");
    let (t, o) = (torrent.to_str().unwrap(), out.to_str().unwrap());
    let peer = format!("127.0.0.1:{port}");

    // 1. A download from the seeder.
    let mut l = Proc::spawn(
        &["download", t, "-o", o, "--peer", &peer, "--json"],
        d,
        "dl",
    );
    assert!(l.wait(Duration::from_secs(60)).success(), "{}", l.stderr());
    let run1 = check_lines(&l.stdout(), &schema, "download");
    let k = kinds(&run1);
    assert_eq!(k.first(), Some(&"listening"), "{k:?}");
    assert_eq!(k.last(), Some(&"done"), "{k:?}");
    for want in ["state", "progress"] {
        assert!(k.contains(&want), "no {want}: {k:?}");
    }
    let first = run1.iter().find(|v| v["event"] == "progress").unwrap();
    assert_eq!(first["total"], total, "{first}");
    assert_eq!(first["piece_count"], pieces, "{first}");
    let done = run1.last().unwrap();
    assert_eq!(done["complete"], true);
    assert_eq!(done["outcome"], "complete");
    assert_eq!(done["have_bytes"], total);
    let ts: Vec<f64> = run1.iter().map(|v| v["ts"].as_f64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "ts goes back: {ts:?}");

    // 2. The same download again, with --seed: resumes complete, seeds.
    let mut s = Proc::spawn(
        &["download", t, "-o", o, "--peer", &peer, "--json", "--seed"],
        d,
        "reseed",
    );
    let start = std::time::Instant::now();
    while !s.stdout().contains(r#""event":"seeding""#) {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", s.stdout());
        std::thread::sleep(Duration::from_millis(50));
    }
    s.stop();
    let run2 = check_lines(&s.stdout(), &schema, "download --seed");
    let k = kinds(&run2);
    for want in ["checking", "listening", "resuming", "seeding", "done"] {
        assert!(k.contains(&want), "no {want}: {k:?}");
    }
    let checking = run2.iter().find(|v| v["event"] == "checking").unwrap();
    assert_eq!(checking["total"], total, "{checking}");
    let resuming = run2.iter().find(|v| v["event"] == "resuming").unwrap();
    assert_eq!(resuming["have_bytes"], total, "{resuming}");
    // The order the docs give is the order printed.
    let order = ["checking", "resuming", "listening", "seeding", "state"];
    let seen_at: Vec<usize> = order
        .iter()
        .map(|e| k.iter().position(|x| x == e).unwrap())
        .collect();
    assert!(seen_at.windows(2).all(|w| w[0] < w[1]), "{k:?}");
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md")).unwrap();
    let para = doc
        .split("\n\n")
        .find(|p| p.starts_with("Order of a run"))
        .expect("docs/json.md's order of a run");
    let doc_at: Vec<usize> = order[..4]
        .iter()
        .map(|e| {
            para.find(&format!("`{e}`"))
                .unwrap_or_else(|| panic!("docs/json.md's order lacks `{e}`"))
        })
        .collect();
    assert!(
        doc_at.windows(2).all(|w| w[0] < w[1]),
        "docs/json.md's order: {para}"
    );
    assert!(para.contains("130 or 143"), "{para}");

    // 3. A partial copy and a peer that refuses: stalls, with an error event.
    std::fs::remove_file(out.join("pack/c.bin")).unwrap();
    let closed = free_port();
    let mut x = Proc::spawn(
        &[
            "download",
            t,
            "-o",
            o,
            "--peer",
            &format!("127.0.0.1:{closed}"),
            "--json",
            "--stall-timeout",
            "2",
        ],
        d,
        "stall",
    );
    let status = x.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", x.stderr());
    let run3 = check_lines(&x.stdout(), &schema, "stalled download");
    let k = kinds(&run3);
    for want in ["listening", "resuming", "state", "done", "error"] {
        assert!(k.contains(&want), "no {want}: {k:?}");
    }
    let err = run3.iter().find(|v| v["event"] == "error").unwrap();
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("stalled: no data for") && msg.contains("connection refused"),
        "{msg}"
    );
    assert!(
        x.stderr().contains(msg),
        "stderr lacks {msg}: {}",
        x.stderr()
    );
    assert!(
        run3.iter().all(|v| v["state"] != "endgame"),
        "endgame without peers: {}",
        x.stdout()
    );

    // 3b. Interrupted (SIGTERM) before it completed: `done`, then `error`
    // saying how far it got, and exit 143, as docs/json.md says.
    let mut y = Proc::spawn(
        &[
            "download",
            t,
            "-o",
            o,
            "--peer",
            &format!("127.0.0.1:{closed}"),
            "--json",
        ],
        d,
        "interrupted",
    );
    let start = std::time::Instant::now();
    while !y.stdout().contains(r#""event":"state""#) {
        assert!(start.elapsed() < Duration::from_secs(30), "{}", y.stdout());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = y.stop();
    assert_eq!(status.code(), Some(143), "{}", y.stderr());
    let run5 = check_lines(&y.stdout(), &schema, "interrupted download");
    let k = kinds(&run5);
    assert_eq!(k[k.len() - 2..], ["done", "error"], "{k:?}");
    assert_eq!(run5[k.len() - 2]["outcome"], "interrupted");
    let msg = run5.last().unwrap()["message"].as_str().unwrap();
    assert!(msg.starts_with("interrupted with "), "{msg}");

    // 4. A magnet link: the metadata comes first.
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=pack&x.pe={peer}",
        hex::encode(info_hash(&torrent))
    );
    let out4 = d.join("out4");
    let mut g = Proc::spawn(
        &["download", &magnet, "-o", out4.to_str().unwrap(), "--json"],
        d,
        "magnet",
    );
    assert!(g.wait(Duration::from_secs(60)).success(), "{}", g.stderr());
    let run4 = check_lines(&g.stdout(), &schema, "magnet download");
    let k = kinds(&run4);
    assert_eq!(k.first(), Some(&"state"), "{k:?}");
    assert_eq!(run4[0]["state"], "fetching metadata");
    let meta_at = k.iter().position(|e| *e == "metadata");
    let listen_at = k.iter().position(|e| *e == "listening");
    assert!(
        meta_at.is_some() && meta_at < listen_at,
        "metadata before listening: {k:?}"
    );
    assert_eq!(run4[meta_at.unwrap()]["saved_to"], Value::Null);

    // Every documented event was seen in one of the runs; `port_mapping`
    // needs a router, so tests/portmap.rs checks its runs against the
    // same schema.
    let seen: Vec<&str> = [&run1, &run2, &run3, &run4]
        .iter()
        .flat_map(|r| kinds(r))
        .collect();
    for ev in schema.keys().filter(|e| *e != "*" && *e != "port_mapping") {
        assert!(seen.contains(&ev.as_str()), "no run printed `{ev}`");
    }
}

/// A magnet stopped while its metadata is sought (a tracker that knows no
/// peers keeps that phase going) ends like any run: a `done` event with
/// the outcome, then `error`; exit 130 for SIGINT, 143 for SIGTERM, 1 for
/// `--stall-timeout`. No `done` was printed before.
#[test]
fn a_magnet_stopped_before_its_metadata_prints_done() {
    let schema = schema();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tracker = Tracker::start();
    let hash = "ef".repeat(20);
    let magnet = format!(
        "magnet:?xt=urn:btih:{hash}&dn=some/../thing&tr={}",
        tracker.url()
    );
    let out = d.join("out");
    let run = |name: &str, extra: &[&str]| {
        let port = free_port().to_string();
        let mut args = vec!["download", &magnet, "-o", out.to_str().unwrap()];
        args.extend_from_slice(&["--port", &port, "--json"]);
        args.extend_from_slice(extra);
        Proc::spawn(&args, d, name)
    };
    for (sig, code, name) in [
        (libc::SIGINT, 130, "sigint"),
        (libc::SIGTERM, 143, "sigterm"),
    ] {
        let mut p = run(name, &[]);
        // The phase said it started: its signals are caught from then on.
        let start = std::time::Instant::now();
        while !p.stdout().contains(r#""state":"fetching metadata""#) {
            assert!(start.elapsed() < Duration::from_secs(30), "{}", p.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        p.signal(sig);
        let st = p.wait(Duration::from_secs(30));
        assert_eq!(st.code(), Some(code), "{name}: {}", p.stderr());
        let events = check_lines(&p.stdout(), &schema, name);
        assert_eq!(kinds(&events), ["state", "done", "error"], "{name}");
        let done = &events[1];
        assert_eq!(done["outcome"], "interrupted", "{done}");
        assert_eq!(done["complete"], false, "{done}");
        assert_eq!(done["total"], 0, "{done}");
        // The magnet's name, cleaned as a torrent's would be.
        let path = out.join("some..thing");
        assert_eq!(done["path"], path.to_str().unwrap(), "{done}");
        assert_eq!(events[2]["message"], "interrupted while fetching metadata");
    }
    let mut p = run("stalled", &["--stall-timeout", "2"]);
    let st = p.wait(Duration::from_secs(60));
    assert_eq!(st.code(), Some(1), "{}", p.stderr());
    let events = check_lines(&p.stdout(), &schema, "stalled");
    assert_eq!(kinds(&events), ["state", "done", "error"]);
    assert_eq!(events[1]["outcome"], "stalled", "{}", events[1]);
    let msg = events[2]["message"].as_str().unwrap();
    assert!(msg.starts_with("stalled: no metadata for 2.0s ("), "{msg}");
    assert!(
        p.stderr().ends_with(&format!("error: {msg}\n")),
        "{}",
        p.stderr()
    );
    assert!(!out.exists() || list_files(&out).is_empty());
}
