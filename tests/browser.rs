//! The web page of `shoal serve` in a real browser: Debian's headless
//! Chromium driven by chromedriver over WebDriver (plain HTTP on loopback).
//! Against the real binary and local seeders, the page:
//! - adds torrent A from a pasted magnet link (x.pe names its seeder) and B
//!   from a .torrent given to its file input; shows both reaching 100 %
//!   (and the files on disk are byte-checked);
//! - shows B's HTML-looking name as plain text;
//! - shows the API's error for a duplicate in a line that can be dismissed;
//! - pauses A from its row (the API agrees);
//! - opens B's detail pane: its files, a full piece map; a file unticked
//!   and ticked again changes its priority in the service;
//! - has no sideways scroll at 800 and 360 px, and drops columns at 360;
//! - removes A with its data through its in-page confirmation dialog;
//! - adds C from a .torrent dropped on the page;
//! - shows the "disconnected" banner while the service is stopped, and when
//!   it comes back with a token, asks for it (a wrong one is refused), then
//!   shows the restored torrents and live updates again.
//!
//! The table's sorting, filters, selection, limits, add dialog, copy
//! magnet and re-check are in browser/features.rs; a list of hundreds in
//! browser/many.rs; the WebDriver helpers
//! all tests share in browser/driver.rs.
//!
//! Screenshots go to target/tmp/browser/; on failure the scratch folder
//! (logs of every process) is kept and its path printed.
//!
//! Chromium and chromedriver come from `apt-get install chromium
//! chromium-driver` (`.ci/deps`); without them the test fails and says so.

mod common;
#[path = "common/interop.rs"]
#[allow(dead_code)]
mod interop;

#[path = "browser/driver.rs"]
mod driver;
#[path = "browser/features.rs"]
mod features;
#[path = "browser/many.rs"]
mod many;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use common::{create_torrent, free_port, make_tree, seeder, tail, wait_listening, Proc, Tracker};
use driver::{browser_cell, http, http_as, row, Browser};
use interop::wait_for;

/// A torrent name that reads differently once parsed as HTML: the page must
/// show it as it is. (shoal turns `<` and `>` in names into `_`, so it
/// holds entities instead of tags.)
const HOSTILE: &str = "beta &lt;img src=x onerror=alert(1)&gt; &amp; co";

#[test]
fn the_web_page_adds_downloads_and_pauses() {
    let (chromium, cell, shots) = browser_cell("browser");
    let d = cell.path();

    // Torrent A: one file, no tracker; the magnet link names its seeder.
    make_tree(&d.join("src-a"), &[("alpha.bin", 3 * 1024 * 1024 + 12_345)]);
    let ta = create_torrent(
        &d.join("src-a/alpha.bin"),
        &d.join("alpha.torrent"),
        &[],
        65536,
    );
    let hash_a = hex::encode(common::info_hash(&ta));
    std::fs::create_dir_all(d.join("log-a")).unwrap();
    let (_seed_a, port_a) = seeder(&d.join("log-a"), &ta, &d.join("src-a"), &["--quiet"]);
    let magnet = format!("magnet:?xt=urn:btih:{hash_a}&dn=alpha&x.pe=127.0.0.1:{port_a}");

    // Torrent B: two files in a folder with a hostile name, found through a tracker.
    let tracker = Tracker::start();
    make_tree(
        &d.join("src-b"),
        &[
            (&format!("{HOSTILE}/one.bin"), 1_500_000),
            (&format!("{HOSTILE}/sub/two.bin"), 700_001),
        ],
    );
    let tb = create_torrent(
        &d.join("src-b").join(HOSTILE),
        &d.join("beta.torrent"),
        &[tracker.url()],
        65536,
    );
    let hash_b = hex::encode(common::info_hash(&tb));
    std::fs::create_dir_all(d.join("log-b")).unwrap();
    let (_seed_b, _) = seeder(&d.join("log-b"), &tb, &d.join("src-b"), &["--quiet"]);

    // The service; started again later, with a token, on the same ports.
    let api = free_port();
    let peer_port = free_port();
    let dl = d.join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    let start_serve = |token, name| serve(d, &dl, api, peer_port, token, name);
    let mut serve = start_serve(None, "serve");
    wait_listening(api);
    let serve_log = || {
        let mut s = String::new();
        for name in ["serve", "serve-again"] {
            if let Ok(log) = std::fs::read_to_string(d.join(format!("{name}.err"))) {
                s += &format!("{name}'s log (tail):\n{}\n", tail(&log, 40));
            }
        }
        s
    };

    let b = Browser::start(d, &chromium, &shots);
    let context = |what: &str| {
        let shot = b.screenshot(&format!("failed-{what}.png"));
        format!(
            "table: {:#?}\nscreenshot: {}\n{}",
            b.rows(),
            shot.display(),
            serve_log()
        )
    };
    b.goto(&format!("http://127.0.0.1:{api}/"));
    assert_eq!(b.js("return document.title"), "shoal");
    wait_for(
        "the page to load its list",
        Duration::from_secs(20),
        || {
            let v = b.js("return !!document.getElementById('rows') && \
                 document.getElementById('offline').hidden && \
                 !document.getElementById('empty').hidden");
            (v == true).then_some(())
        },
        || context("load"),
    );

    // A: paste the magnet link and press Add.
    b.type_into("#magnet", &magnet);
    b.click("#add-button");
    wait_for(
        "the magnet's row",
        Duration::from_secs(20),
        || row(&b.rows(), &hash_a).map(|_| ()),
        || context("magnet-row"),
    );
    assert_eq!(
        b.js("return document.getElementById('magnet').value"),
        "",
        "the input is cleared once the link is added"
    );

    // B: pick the .torrent in the file input.
    b.type_into("#file-input", tb.to_str().unwrap());
    wait_for(
        "the uploaded torrent's row",
        Duration::from_secs(20),
        || row(&b.rows(), &hash_b).map(|_| ()),
        || context("upload-row"),
    );

    // Both complete, as the table shows it.
    wait_for(
        "both torrents at 100 %",
        Duration::from_secs(120),
        || {
            let rows = b.rows();
            let done = |h: &str| {
                row(&rows, h).is_some_and(|r| {
                    r.progress.starts_with("100 %")
                        && ["Seeding", "Done"].contains(&r.state.as_str())
                })
            };
            (done(&hash_a) && done(&hash_b)).then_some(())
        },
        || context("complete"),
    );
    assert_eq!(
        std::fs::read(dl.join("alpha.bin")).unwrap(),
        std::fs::read(d.join("src-a/alpha.bin")).unwrap(),
        "alpha.bin as downloaded"
    );
    common::assert_same_tree(&d.join("src-b").join(HOSTILE), &dl.join(HOSTILE));

    // The hostile name is shown as text, and nothing of it ran.
    let rows = b.rows();
    assert_eq!(row(&rows, &hash_b).unwrap().name, HOSTILE);
    assert_eq!(b.js("return document.title"), "shoal");
    assert_eq!(b.js("return document.querySelectorAll('img').length"), 0);

    // Adding A again: the API's 409 shows in a line that can be dismissed.
    b.type_into("#magnet", &magnet);
    b.click("#add-button");
    let msg = wait_for(
        "the duplicate's error line",
        Duration::from_secs(10),
        || {
            let v = b.js("const e = document.querySelector('#errors .error .msg'); \
                 return e ? e.innerText : null");
            v.as_str().map(str::to_string)
        },
        || context("duplicate"),
    );
    assert!(msg.starts_with("Could not add the link: "), "{msg}");
    b.click("#errors .error .dismiss");
    assert_eq!(
        b.js("return document.querySelectorAll('#errors .error').length"),
        0
    );

    // Pause A from its row; the table and the API agree it is paused.
    b.click(&format!("tr[data-hash='{hash_a}'] .c-act button"));
    wait_for(
        "A shown paused",
        Duration::from_secs(15),
        || {
            row(&b.rows(), &hash_a)
                .is_some_and(|r| r.state == "Paused")
                .then_some(())
        },
        || context("pause"),
    );
    let (status, t) = http(api, "GET", &format!("/api/torrents/{hash_a}"), None).unwrap();
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["state"], "paused", "{t}");
    assert_eq!(
        b.js(&format!(
            "return document.querySelector(\"tr[data-hash='{hash_a}'] .c-act button\").innerText"
        )),
        "Resume"
    );

    // B's detail pane: its two files, its complete piece map.
    b.click(&format!("tr[data-hash='{hash_b}'] .name-button"));
    let pieces = wait_for(
        "B's detail pane",
        Duration::from_secs(15),
        || {
            let v = b.js(
                "return { files: Array.from(document.querySelectorAll('#files tr label'))
                            .map(l => l.innerText),
                          checked: document.querySelectorAll('#files input:checked').length,
                          name: document.getElementById('detail-name').innerText,
                          pieces: document.getElementById('pieces-count').textContent }",
            );
            (v["files"].as_array().is_some_and(|f| f.len() == 2)
                && !v["pieces"].as_str().unwrap_or("").is_empty())
            .then_some(v)
        },
        || context("detail"),
    );
    assert_eq!(pieces["name"], HOSTILE);
    assert_eq!(pieces["checked"], 2, "{pieces}");
    // A Stream link per file (`…/files/{index}/stream`).
    let links = b.js(
        "return Array.from(document.querySelectorAll('#files td.f-play a'))
                        .map(a => a.getAttribute('href'))",
    );
    assert_eq!(
        links,
        serde_json::json!([
            format!("/api/torrents/{hash_b}/files/0/stream"),
            format!("/api/torrents/{hash_b}/files/1/stream")
        ])
    );
    let files: Vec<&str> = pieces["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("one.bin"))
            && files.iter().any(|f| f.ends_with("two.bin")),
        "{files:?}"
    );
    // 2,200,001 bytes in 64 KiB pieces: 34 pieces, all here.
    assert_eq!(pieces["pieces"], "(34 of 34)", "{pieces}");

    let shot = b.screenshot("page.png");
    eprintln!(
        "browser: screenshots in {}",
        shot.parent().unwrap().display()
    );

    // Narrower screens: never a sideways scroll; the state column gives way
    // to a line under the name at phone width.
    for (width, state_column) in [(800, "table-cell"), (360, "none")] {
        b.s(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false}}),
            ),
        );
        let v = b.js("return { inner: window.innerWidth,
                      scroll: document.documentElement.scrollWidth,
                      state: getComputedStyle(document.querySelector('#rows .c-state')).display,
                      sub: getComputedStyle(document.querySelector('#rows .sub')).display }");
        assert_eq!(v["inner"], width, "{v}");
        assert!(v["scroll"].as_u64() <= v["inner"].as_u64(), "{v}");
        assert_eq!(v["state"], state_column, "at {width} px: {v}");
        b.screenshot(&format!("page-{width}.png"));
    }
    b.s(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}})),
    );

    // B's second file: unticked, then ticked again; the service follows.
    let (_, detail) = http(api, "GET", &format!("/api/torrents/{hash_b}"), None).unwrap();
    let two = detail["files"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with("two.bin")))
        })
        .unwrap_or_else(|| panic!("no two.bin in {detail}"))["index"]
        .as_u64()
        .unwrap();
    for want in ["skip", "normal"] {
        b.click(&format!("#file-{two}"));
        wait_for(
            &format!("two.bin's priority to be {want}"),
            Duration::from_secs(15),
            || {
                let (_, d) = http(api, "GET", &format!("/api/torrents/{hash_b}"), None).ok()?;
                (d["files"][two as usize]["priority"] == want).then_some(())
            },
            || context("priority"),
        );
        let select = b.js(&format!(
            "return document.querySelector('#files tr:has(#file-{two}) select').value"
        ));
        assert_eq!(select, want);
    }

    // Remove A with its data through the in-page dialog.
    b.click(&format!("tr[data-hash='{hash_a}'] .name-button"));
    b.click("#detail-remove");
    assert_eq!(
        b.js("return document.getElementById('remove-dialog').open"),
        true
    );
    b.click("#remove-data");
    b.click("#remove-confirm");
    wait_for(
        "A's row to go",
        Duration::from_secs(15),
        || row(&b.rows(), &hash_a).is_none().then_some(()),
        || context("remove"),
    );
    wait_for(
        "A's data to go",
        Duration::from_secs(15),
        || (!dl.join("alpha.bin").exists()).then_some(()),
        || context("remove-data"),
    );
    let (status, _) = http(api, "GET", &format!("/api/torrents/{hash_a}"), None).unwrap();
    assert_eq!(status, 404);
    assert!(dl.join(HOSTILE).join("one.bin").exists(), "B's data stays");

    // C: a .torrent dropped on the page (no peer has it; it just waits).
    make_tree(&d.join("src-c"), &[("gamma.bin", 100_000)]);
    let tc = create_torrent(
        &d.join("src-c/gamma.bin"),
        &d.join("gamma.torrent"),
        &[],
        16384,
    );
    let hash_c = hex::encode(common::info_hash(&tc));
    let bytes = data_encoding::BASE64.encode(&std::fs::read(&tc).unwrap());
    b.s(
        "POST",
        "/execute/sync",
        Some(json!({"script": "
            const raw = atob(arguments[0]);
            const buf = new Uint8Array(raw.length);
            for (let i = 0; i < raw.length; i++) buf[i] = raw.charCodeAt(i);
            const dt = new DataTransfer();
            dt.items.add(new File([buf], 'gamma.torrent', {type: 'application/x-bittorrent'}));
            for (const type of ['dragenter', 'dragover', 'drop']) {
              document.body.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
            }", "args": [bytes]})),
    );
    wait_for(
        "the dropped torrent's row",
        Duration::from_secs(15),
        || row(&b.rows(), &hash_c).map(|_| ()),
        || context("drop"),
    );

    // The service stops: the page says so. It comes back with a token:
    // the page asks for it, then shows the torrents it restored.
    assert!(serve.stop().success(), "{}", serve_log());
    wait_for(
        "the disconnected banner",
        Duration::from_secs(15),
        || (b.js("return !document.getElementById('offline').hidden") == true).then_some(()),
        || context("banner"),
    );
    b.screenshot("page-disconnected.png");
    const TOKEN: &str = "browser-test-token";
    let _serve = start_serve(Some(TOKEN), "serve-again");
    wait_listening(api);
    wait_for(
        "the login form",
        Duration::from_secs(20),
        || (b.js("return !document.getElementById('login').hidden") == true).then_some(()),
        || context("login"),
    );
    assert_eq!(
        b.js("return document.getElementById('offline').hidden"),
        true
    );
    b.type_into("#token", "not the token");
    b.click("#login-form button[type=submit]");
    wait_for(
        "the wrong token's error line",
        Duration::from_secs(10),
        || (b.js("return document.querySelectorAll('#errors .error').length") == 1).then_some(()),
        || context("wrong-token"),
    );
    b.click("#errors .error .dismiss");
    b.js("document.getElementById('token').value = ''");
    b.type_into("#token", TOKEN);
    b.click("#login-form button[type=submit]");
    wait_for(
        "B and C back in the table",
        Duration::from_secs(30),
        || {
            let rows = b.rows();
            (b.js("return document.getElementById('login').hidden") == true
                && row(&rows, &hash_b).is_some()
                && row(&rows, &hash_c).is_some())
            .then_some(())
        },
        || context("restored"),
    );
    // Live updates flow again (the event stream rides on the login's
    // cookie): a pause made through the API shows up in the page.
    let (status, t) = http_as(
        api,
        "POST",
        &format!("/api/torrents/{hash_c}/pause"),
        None,
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(status, 200, "{t}");
    wait_for(
        "C shown paused after a pause from outside the page",
        Duration::from_secs(15),
        || {
            row(&b.rows(), &hash_c)
                .is_some_and(|r| r.state == "Paused")
                .then_some(())
        },
        || context("live"),
    );
    b.screenshot("page-after-restart.png");

    // No script error on the way (failed requests, like the 409, are not
    // script errors).
    let errors: Vec<Value> = b
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] == "javascript")
        .collect();
    assert!(errors.is_empty(), "script errors: {errors:#?}");
}

/// `shoal create` with tiers of trackers given as they are.
/// `shoal serve` on loopback port `api` with its state in `d/state`,
/// data under `dl`, peers on `peer_port`; logs in `d/NAME.{out,err}`.
fn serve(d: &Path, dl: &Path, api: u16, peer_port: u16, token: Option<&str>, name: &str) -> Proc {
    let (listen, state) = (format!("127.0.0.1:{api}"), d.join("state"));
    let (state, dl, port) = (
        state.display().to_string(),
        dl.display().to_string(),
        peer_port.to_string(),
    );
    let mut args = vec!["serve", "--listen", &listen, "--state-dir", &state];
    args.extend(["--download-dir", &dl, "--port", &port]);
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    Proc::spawn(&args, d, name)
}

fn create_with_tiers(src: &Path, out: &Path, tiers: &[String]) -> PathBuf {
    let mut args = vec![
        "create".to_string(),
        src.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--piece-length".into(),
        "16384".into(),
    ];
    for t in tiers {
        args.extend(["-t".to_string(), t.clone()]);
    }
    let o = std::process::Command::new(common::shoal_bin())
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.to_path_buf()
}

/// What the page says when something is wrong, in a real browser:
/// - a torrent with no peer says why in its row ("Waiting for peers",
///   "tracker 127.0.0.1:P unreachable, DHT off"), not "Downloading";
/// - the detail pane has a tracker table: a failing tracker with its
///   error, a working one with its seeders and leechers, when each was
///   last asked and will be next;
/// - an error of the add bar goes once an add succeeds;
/// - the page has a favicon (and /favicon.ico answers);
/// - files in the way of a download are offered to be overwritten, and
///   the button does it: the download completes over them.
///
/// Screenshots at 1280 and 800 px go to target/tmp/browser/.
#[test]
fn the_page_says_why_and_offers_overwrite() {
    let (chromium, cell, shots) = browser_cell("browser-why");
    let d = cell.path();

    // W: its only tracker refuses; the DHT is off (tests set SHOAL_NO_DHT).
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    make_tree(&d.join("src-w"), &[("wait.bin", 50_000)]);
    let tw = create_with_tiers(
        &d.join("src-w/wait.bin"),
        &d.join("w.torrent"),
        std::slice::from_ref(&dead),
    );
    let hash_w = hex::encode(common::info_hash(&tw));
    let dead_port = dead
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/announce")
        .to_string();
    // T: a dead tracker in the first tier, a counting one in the second.
    // A tracker that answers with no peers, and counts of 3 and 7.
    let counting = common::HttpServer::serve(
        "/announce",
        b"d8:completei3e10:incompletei7e8:intervali1800e5:peers0:e".to_vec(),
    );
    make_tree(&d.join("src-t"), &[("tracked.bin", 50_000)]);
    let tt = create_with_tiers(
        &d.join("src-t/tracked.bin"),
        &d.join("t.torrent"),
        &[dead.clone(), counting.url("/announce")],
    );
    let hash_t = hex::encode(common::info_hash(&tt));
    // C: seeded here; a file of the same name, not shoal's, is in the way.
    make_tree(&d.join("src-c"), &[("clash.bin", 300_000)]);
    let tc = create_torrent(&d.join("src-c/clash.bin"), &d.join("c.torrent"), &[], 16384);
    let hash_c = hex::encode(common::info_hash(&tc));
    std::fs::create_dir_all(d.join("log-c")).unwrap();
    let (_seed_c, port_c) = seeder(&d.join("log-c"), &tc, &d.join("src-c"), &["--quiet"]);
    let dl = d.join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("clash.bin"), b"my own notes, not the torrent's").unwrap();

    let api = free_port();
    let _serve = serve(d, &dl, api, free_port(), None, "serve");
    wait_listening(api);
    let serve_log = || {
        std::fs::read_to_string(d.join("serve.err"))
            .map(|l| tail(&l, 40))
            .unwrap_or_default()
    };
    let b = Browser::start(d, &chromium, &shots);
    let context = |what: &str| {
        let shot = b.screenshot(&format!("failed-why-{what}.png"));
        format!(
            "table: {:#?}\nscreenshot: {}\nserve's log (tail):\n{}",
            b.rows(),
            shot.display(),
            serve_log()
        )
    };
    b.goto(&format!("http://127.0.0.1:{api}/"));

    // The favicon: named by the page, served, and /favicon.ico too.
    let icon = b.js("const l = document.querySelector('link[rel=icon]'); \
         return l ? l.getAttribute('href') : null");
    assert_eq!(icon, "/favicon.svg");
    for path in ["/favicon.svg", "/favicon.ico"] {
        let (status, body) = http(api, "GET", path, None).unwrap();
        assert_eq!(status, 200, "{path}");
        assert!(
            body.as_str().is_some_and(|s| s.starts_with("<svg")),
            "{path}: {body}"
        );
    }

    // An add that fails leaves a line; the next add that works takes it away.
    b.type_into("#magnet", "not a link at all");
    b.click("#add-button");
    wait_for(
        "the add bar's error",
        Duration::from_secs(10),
        || (b.js("return document.querySelectorAll('#errors .error').length") == 1).then_some(()),
        || context("add-error"),
    );
    b.js("document.getElementById('magnet').value = ''");
    b.type_into("#file-input", tw.to_str().unwrap());
    wait_for(
        "W's row, and the error gone",
        Duration::from_secs(20),
        || {
            (row(&b.rows(), &hash_w).is_some()
                && b.js("return document.querySelectorAll('#errors .error').length") == 0)
                .then_some(())
        },
        || context("add-cleared"),
    );
    b.type_into("#file-input", tt.to_str().unwrap());
    // C by a magnet link naming its seeder (it has no tracker).
    b.type_into(
        "#magnet",
        &format!("magnet:?xt=urn:btih:{hash_c}&dn=clash.bin&x.pe=127.0.0.1:{port_c}"),
    );
    b.click("#add-button");

    // W says why it has no peer.
    let why = wait_for(
        "W to say why it waits",
        Duration::from_secs(30),
        || {
            let v = b.js(&format!(
                "const tr = document.querySelector(\"tr[data-hash='{hash_w}']\"); \
                 return tr ? [tr.querySelector('.c-state .state').innerText, \
                              tr.querySelector('.c-state .why').innerText] : null"
            ));
            let l = v.as_array()?;
            (l[1].as_str()?.contains("unreachable")).then(|| {
                (
                    l[0].as_str().unwrap_or("").to_string(),
                    l[1].as_str().unwrap_or("").to_string(),
                )
            })
        },
        || context("why"),
    );
    assert_eq!(why.0, "Waiting for peers", "{why:?}");
    assert_eq!(
        why.1,
        format!("tracker 127.0.0.1:{dead_port} unreachable, DHT off"),
        "{why:?}"
    );

    // T's trackers: the failing one with its error, the working one with
    // its counts, and when they were and will be asked.
    b.click(&format!("tr[data-hash='{hash_t}'] .name-button"));
    let trackers = wait_for(
        "T's tracker table",
        Duration::from_secs(30),
        || {
            let v = b.js(
                "const t = (tr, c) => { const e = tr.querySelector(c); return e ? e.innerText : ''; };
                 return Array.from(document.querySelectorAll('#trackers tr')).map(tr =>
                   [t(tr, '.t-url .mono'), t(tr, '.t-status'), t(tr, '.t-last'),
                    t(tr, '.t-next'), t(tr, '.t-counts'), t(tr, '.t-error')])",
            );
            let rows = v.as_array()?.clone();
            let ready = rows.len() == 2
                && rows.iter().any(|r| r[1] == "Working")
                && rows.iter().any(|r| r[1] == "Failing");
            ready.then_some(rows)
        },
        || context("trackers"),
    );
    let by = |status: &str| {
        trackers
            .iter()
            .find(|r| r[1] == status)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let failing = by("Failing");
    assert_eq!(failing[0], format!("127.0.0.1:{dead_port}"), "{failing:?}");
    assert_eq!(failing[5], "connection refused", "{failing:?}");
    assert!(failing[2].ends_with(" ago"), "{failing:?}");
    let working = by("Working");
    assert_eq!(working[4], "3 / 7", "{working:?}");
    assert!(
        working[2].ends_with(" ago") && working[3].starts_with("next in "),
        "{working:?}"
    );
    assert_eq!(working[5], "", "{working:?}");
    for (width, name) in [(1280, "page-why-1280.png"), (800, "page-why-800.png")] {
        b.s(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": false}}),
            ),
        );
        let v = b.js("return [window.innerWidth, document.documentElement.scrollWidth]");
        assert!(
            v[1].as_u64() <= v[0].as_u64(),
            "sideways scroll at {width}: {v}"
        );
        b.screenshot(name);
    }
    b.s(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}})),
    );

    // C: refused for the file in the way, with an Overwrite button that
    // does it; the download then completes over that file.
    b.click(&format!("tr[data-hash='{hash_c}'] .name-button"));
    wait_for(
        "C's overwrite offer",
        Duration::from_secs(30),
        || {
            (b.js("const e = document.getElementById('detail-overwrite'); \
                   return !!e && !e.hidden && e.offsetParent !== null")
                == true)
                .then_some(())
        },
        || context("clash"),
    );
    let msg = b.js("return document.getElementById('detail-error').innerText");
    let msg = msg.as_str().unwrap_or("");
    assert!(
        msg.contains("clash.bin")
            && msg.contains("resume with overwrite")
            && msg.contains(&format!("shoal resume --overwrite {hash_c}")),
        "{msg}"
    );
    b.screenshot("page-clash.png");
    b.click("#detail-overwrite");
    wait_for(
        "C complete over the file that was in the way",
        Duration::from_secs(60),
        || {
            row(&b.rows(), &hash_c)
                .is_some_and(|r| {
                    r.progress.starts_with("100 %")
                        && ["Seeding", "Done"].contains(&r.state.as_str())
                })
                .then_some(())
        },
        || context("overwrite"),
    );
    assert_eq!(
        std::fs::read(dl.join("clash.bin")).unwrap(),
        std::fs::read(d.join("src-c/clash.bin")).unwrap(),
        "clash.bin as downloaded"
    );
    let errors: Vec<Value> = b
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] == "javascript")
        .collect();
    assert!(errors.is_empty(), "script errors: {errors:#?}");
}
