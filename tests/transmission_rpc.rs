//! The Transmission RPC of `shoal serve` (`/transmission/rpc`), driven by
//! the real `transmission-remote` (Debian's transmission-cli, installed by
//! .ci/deps): adds of a .torrent file and of a magnet link that complete
//! from local shoal seeders, the list, files, details, session info and
//! stats, speed limits, stop/start/verify, file wanted and priority,
//! remove with and without data, and the access rules (token as the Basic
//! password, the 409 session-id handshake, Host and Origin).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::service::*;
use common::*;
use serde_json::Value;

/// Runs transmission-remote against the service on `port`; (success,
/// stdout, stderr). Killed after 60 s.
fn tr(port: u16, auth: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let host = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("transmission-remote");
    cmd.arg(&host);
    if let Some(a) = auth {
        cmd.args(["-n", a]);
    }
    let mut child = cmd
        .args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("transmission-remote (apt transmission-cli; .ci/deps installs it)");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("transmission-remote {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// transmission-remote that must succeed; its stdout.
fn ok(port: u16, args: &[&str]) -> String {
    let (good, out, err) = tr(port, None, args);
    assert!(good, "transmission-remote {args:?}: {out}{err}");
    out
}

/// The `-l` row of the torrent named `name`, split on white space.
fn row(list: &str, name: &str) -> Option<Vec<String>> {
    list.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|w| w.last().map(String::as_str) == Some(name))
}

/// Polls `-l` until the row of `name` satisfies `f`.
fn wait_row(port: u16, name: &str, what: &str, f: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let list = ok(port, &["-l"]);
        if let Some(r) = row(&list, name).filter(|r| f(r)) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{name}: not {what} after 90 s:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn api_torrent(port: u16, hash: &str) -> Value {
    let (status, v) = json(port, "GET", &format!("/api/torrents/{hash}"), None);
    assert_eq!(status, 200, "{v}");
    v
}

/// One raw RPC call with the handshake done by hand: (status, answer).
fn raw_rpc(port: u16, body: &str, extra: &[(&str, &str)]) -> (u16, String, Value) {
    let (status, head, _) = http(port, "POST", "/transmission/rpc", extra, body.as_bytes());
    assert_eq!(status, 409, "{head}");
    let id = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-transmission-session-id:")
                .then(|| l.split_once(':').unwrap().1.trim().to_string())
        })
        .expect("the 409 names the session id");
    let mut headers = extra.to_vec();
    headers.push(("X-Transmission-Session-Id", &id));
    let (status, head, body) = http(port, "POST", "/transmission/rpc", &headers, body.as_bytes());
    (
        status,
        head,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

struct Swarm {
    _dir: tempfile::TempDir,
    d: std::path::PathBuf,
    src: std::path::PathBuf,
    single: std::path::PathBuf,
    pack: std::path::PathBuf,
    _tracker: Tracker,
    _seeders: Vec<Proc>,
    pack_port: u16,
}

/// single.bin (found through a tracker) and pack/ (two files, found
/// through the magnet's x.pe), each served by a shoal seeder.
fn swarm() -> Swarm {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("src");
    make_tree(
        &src,
        &[
            ("single.bin", 1_500_000),
            ("pack/a.bin", 300_000),
            ("pack/b.bin", 200_000),
        ],
    );
    let tracker = Tracker::start();
    let single = create_torrent(
        &src.join("single.bin"),
        &d.join("single.torrent"),
        &[tracker.url()],
        32768,
    );
    let pack = create_torrent(&src.join("pack"), &d.join("pack.torrent"), &[], 16384);
    let (s1, _) = seeder(&d, &single, &src, &["--quiet"]);
    let (s2, pack_port) = seeder(&d, &pack, &src, &["--quiet"]);
    Swarm {
        _dir: dir,
        d,
        src,
        single,
        pack,
        _tracker: tracker,
        _seeders: vec![s1, s2],
        pack_port,
    }
}

fn same(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

#[test]
fn transmission_remote_adds_lists_limits_stops_starts_and_removes() {
    let s = swarm();
    let (state, dl) = (s.d.join("state"), s.d.join("dl"));
    let svc = serve(&s.d, &state, &dl, &[], "serve");
    let port = svc.port;

    // -a with a .torrent file (sent as metainfo) and with a magnet link.
    ok(port, &["-a", s.single.to_str().unwrap()]);
    let h_pack = hex::encode(info_hash(&s.pack));
    let magnet = format!(
        "magnet:?xt=urn:btih:{h_pack}&dn=pack&x.pe=127.0.0.1:{}",
        s.pack_port
    );
    ok(port, &["-a", &magnet]);
    // The same torrent again is no error, as with Transmission.
    ok(port, &["-a", s.single.to_str().unwrap()]);

    // -l: ids 1 and 2, both complete from the seeders.
    let r1 = wait_row(port, "single.bin", "complete", |r| r[1] == "100%");
    let r2 = wait_row(port, "pack", "complete", |r| r[1] == "100%");
    assert_eq!((r1[0].as_str(), r2[0].as_str()), ("1", "2"));
    same(&dl.join("single.bin"), &s.src.join("single.bin"));
    same(&dl.join("pack/a.bin"), &s.src.join("pack/a.bin"));
    same(&dl.join("pack/b.bin"), &s.src.join("pack/b.bin"));
    let list = ok(port, &["-l"]);
    assert!(list.starts_with("    ID   Done"), "{list}");
    assert!(list.contains("Sum:"), "{list}");

    // -f: the files, with their state.
    let files = ok(port, &["-t", "2", "-f"]);
    assert!(files.starts_with("pack (2 files):"), "{files}");
    for name in ["pack/a.bin", "pack/b.bin"] {
        let line = files.lines().find(|l| l.ends_with(name)).unwrap_or("");
        assert!(line.contains("100% Normal   Yes"), "{name}:\n{files}");
    }
    // -i by hash: the details transmission-remote prints.
    let h_single = hex::encode(info_hash(&s.single));
    let info = ok(port, &["-t", &h_single, "-i"]);
    for want in [
        "Id: 1",
        "Name: single.bin",
        &format!("Hash: {h_single}"),
        &format!("Location: {}", dl.canonicalize().unwrap().display()),
        "Percent Done: 100%",
        "Total size: 1.50 MB",
    ] {
        assert!(info.contains(want), "{want:?} missing in\n{info}");
    }
    // -it: the tracker, announced to.
    let trackers = ok(port, &["-t", "1", "-it"]);
    assert!(trackers.contains("127.0.0.1"), "{trackers}");

    // -si, -st.
    let si = ok(port, &["-si"]);
    assert!(si.contains("RPC version: 16"), "{si}");
    assert!(
        si.contains(&format!(
            "Download directory: {}",
            dl.canonicalize().unwrap().display()
        )),
        "{si}"
    );
    let st = ok(port, &["-st"]);
    assert!(st.contains("CURRENT SESSION"), "{st}");

    // -d/-u: the service's global limits, in kB/s of 1000 bytes.
    ok(port, &["-d", "100"]);
    ok(port, &["-u", "50"]);
    let (_, limits) = json(port, "GET", "/api/limits", None);
    assert_eq!(
        limits,
        serde_json::json!({"download": 100_000, "upload": 50_000})
    );
    let si = ok(port, &["-si"]);
    assert!(si.contains("Download speed limit: 100 kB/s"), "{si}");
    ok(port, &["-D"]);
    ok(port, &["-U"]);
    let (_, limits) = json(port, "GET", "/api/limits", None);
    assert_eq!(
        limits,
        serde_json::json!({"download": null, "upload": null})
    );

    // -S stops, -s starts, -v checks again.
    ok(port, &["-t", "1", "-S"]);
    assert_eq!(api_torrent(port, &h_single)["state"], "paused");
    wait_row(port, "single.bin", "stopped", |r| {
        r.contains(&"Stopped".into())
    });
    ok(port, &["-t", "1", "-s"]);
    wait_for(port, &h_single, "seeding again", complete);
    ok(port, &["-t", "1", "-v"]);
    wait_for(port, &h_single, "seeding after the check", complete);

    // -G/-g/-ph: wanted and priority fold into the service's priorities.
    ok(port, &["-t", "2", "-G", "1"]);
    let prio = |v: &Value| -> Vec<String> {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["priority"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(prio(&api_torrent(port, &h_pack)), ["normal", "skip"]);
    let files = ok(port, &["-t", "2", "-f"]);
    assert!(
        files
            .lines()
            .any(|l| l.ends_with("pack/b.bin") && l.contains(" No ")),
        "{files}"
    );
    ok(port, &["-t", "2", "-g", "1"]);
    ok(port, &["-t", "2", "-ph", "0"]);
    assert_eq!(prio(&api_torrent(port, &h_pack)), ["high", "normal"]);

    // An unknown method is answered, not a failure.
    let (status, _, v) = raw_rpc(port, r#"{"method":"port-test","tag":7}"#, &[]);
    assert_eq!(status, 200);
    assert_eq!(v["result"], "method not supported", "{v}");
    assert_eq!(v["tag"], 7);
    // The table format and session-get's fields.
    let (_, _, v) = raw_rpc(
        port,
        r#"{"method":"torrent-get","arguments":{"format":"table","fields":["id","name","noSuch"]}}"#,
        &[],
    );
    assert_eq!(
        v["arguments"]["torrents"],
        serde_json::json!([
            ["id", "name", "noSuch"],
            [1, "single.bin", null],
            [2, "pack", null]
        ]),
        "{v}"
    );
    let (_, _, v) = raw_rpc(
        port,
        r#"{"method":"session-get","arguments":{"fields":["rpc-version","version"]}}"#,
        &[],
    );
    assert_eq!(v["arguments"].as_object().unwrap().len(), 2, "{v}");

    // -r keeps the data; --remove-and-delete deletes it.
    ok(port, &["-t", "1", "-r"]);
    assert!(dl.join("single.bin").exists());
    ok(port, &["-t", "2", "--remove-and-delete"]);
    assert!(!dl.join("pack/a.bin").exists());
    let (_, list) = json(port, "GET", "/api/torrents", None);
    assert_eq!(list, serde_json::json!([]));
    // Ids are not reused: the torrent added again (by URL this time) is
    // number 3.
    // -w names its folder (inside the download root); --start-paused
    // makes the RPC's adds paused.
    let web = HttpServer::serve("/single.torrent", std::fs::read(&s.single).unwrap());
    ok(port, &["--start-paused"]);
    ok(port, &["-a", &web.url("/single.torrent"), "-w", "again"]);
    ok(port, &["--no-start-paused"]);
    let r = wait_row(port, "single.bin", "listed", |_| true);
    assert_eq!(r[0], "3");
    let t = api_torrent(port, &h_single);
    assert_eq!(t["state"], "paused", "{t}");
    assert!(
        t["download_dir"].as_str().unwrap().ends_with("/again"),
        "{t}"
    );
}

#[test]
fn the_token_is_the_basic_password_and_the_api_rules_hold() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &["--token", "s3cret"], "serve");
    let port = svc.port;

    // Any user name, the token as password.
    let (good, out, err) = tr(port, Some("anyone:s3cret"), &["-l"]);
    assert!(good, "{out}{err}");
    assert!(out.contains("Sum:"), "{out}");
    // A wrong password, or none: refused, and transmission-remote fails.
    for auth in [Some("anyone:wrong"), None] {
        let (good, out, err) = tr(port, auth, &["-l"]);
        assert!(!good, "{auth:?}: {out}");
        assert!(
            err.contains("401") || err.contains("token"),
            "{auth:?}: {err}"
        );
    }
    // The handshake, by hand: 409 without the session id, then success;
    // with the token as a Bearer token too.
    let auth = [("Authorization", "Bearer s3cret")];
    let (status, _, v) = raw_rpc(port, r#"{"method":"session-get"}"#, &auth);
    assert_eq!(
        (status, v["result"].as_str()),
        (200, Some("success")),
        "{v}"
    );
    assert_eq!(v["arguments"]["rpc-version"], 16);
    // No credentials: 401 asking for Basic auth (not counted as a wrong
    // token: curl asks that way first).
    let (status, head, _) = http(port, "POST", "/transmission/rpc", &[], b"{}");
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    // Another site's page, or a name that is not this service: 403.
    let (status, _, _) = http(
        port,
        "POST",
        "/transmission/rpc",
        &[("Origin", "http://evil.example"), auth[0]],
        b"{}",
    );
    assert_eq!(status, 403);
    let (status, _, _) = http(
        port,
        "POST",
        "/transmission/rpc",
        &[("Host", &format!("evil.example:{port}")), auth[0]],
        b"{}",
    );
    assert_eq!(status, 403);
}
