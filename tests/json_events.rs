//! `--json` is an interface: every line real runs print must match the
//! schema in docs/json.md, which this test reads, so the two cannot drift.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Field name → type, per event, from docs/json.md (`*`: every event).
fn schema() -> BTreeMap<String, BTreeMap<String, String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/json.md"))
        .expect("docs/json.md");
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### `") {
            current = Some(h.trim_end_matches('`').to_string());
            continue;
        }
        if line.starts_with("## ") {
            current = None;
        }
        let (Some(ev), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let field = cells[0].trim_end_matches('`').to_string();
        let ty = cells[1].to_string();
        let base = ty.strip_suffix(" or null").unwrap_or(&ty);
        assert!(
            ["integer", "number", "string", "boolean", "object"].contains(&base),
            "docs/json.md: {ev}.{field} has unknown type {ty:?}"
        );
        out.entry(ev.clone()).or_default().insert(field, ty);
    }
    for ev in [
        "*",
        "metadata",
        "listening",
        "checking",
        "resuming",
        "state",
        "progress",
        "seeding",
        "error",
        "done",
    ] {
        assert!(out.contains_key(ev), "docs/json.md documents no `{ev}`");
    }
    out
}

fn type_ok(v: &Value, ty: &str) -> bool {
    if let Some(base) = ty.strip_suffix(" or null") {
        return v.is_null() || type_ok(v, base);
    }
    match ty {
        "object" => v.is_object(),
        "integer" => v.is_u64() || v.is_i64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        _ => false,
    }
}

/// Checks every line of `stdout`; returns the events, parsed.
fn check_lines(
    stdout: &str,
    schema: &BTreeMap<String, BTreeMap<String, String>>,
    run: &str,
) -> Vec<Value> {
    let mut events = Vec::new();
    for line in stdout.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{run}: not JSON ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{run}: not an object: {line}"));
        let ev = obj["event"]
            .as_str()
            .unwrap_or_else(|| panic!("{run}: no event name: {line}"));
        let fields = schema
            .get(ev)
            .unwrap_or_else(|| panic!("{run}: event `{ev}` is not in docs/json.md: {line}"));
        let common = &schema["*"];
        for (name, ty) in common.iter().chain(fields.iter()) {
            let got = obj
                .get(name)
                .unwrap_or_else(|| panic!("{run}: {ev} lacks `{name}`: {line}"));
            assert!(type_ok(got, ty), "{run}: {ev}.{name} is not {ty}: {line}");
        }
        for name in obj.keys() {
            assert!(
                common.contains_key(name) || fields.contains_key(name),
                "{run}: {ev}.{name} is not in docs/json.md: {line}"
            );
        }
        assert_eq!(v["version"], 1, "{run}: {line}");
        events.push(v);
    }
    events
}

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

    // Every documented event was seen in one of the runs.
    let seen: Vec<&str> = [&run1, &run2, &run3, &run4]
        .iter()
        .flat_map(|r| kinds(r))
        .collect();
    for ev in schema.keys().filter(|e| *e != "*") {
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
