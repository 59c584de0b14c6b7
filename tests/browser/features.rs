//! The page's table and dialogs as users of qBittorrent's and
//! Transmission's pages expect them, in a real browser, against the real
//! binary (each step is checked against the API, not only the page):
//! - ratio and uploaded columns, filled from the API (a leecher makes the
//!   service upload);
//! - sorting by a column header: the row order changes, a second click
//!   reverses it, and it holds across the live refresh;
//! - state and category filters, with their counts;
//! - multi-select (a tick, a shift-click range, select-all) and pause,
//!   resume, re-check and remove of the selection;
//! - global speed limits set from the page (the API reports them);
//! - the add dialog: a .torrent with a folder, a category, start paused and
//!   one file left out (the service has it so, and once started downloads
//!   only the chosen files); a magnet whose file list comes from its peer
//!   before anything is downloaded;
//! - copy magnet: by the clipboard, and by the field shown when the
//!   clipboard is refused (the torrent's magnet, with its btih);
//! - force re-check, of the selection and of one torrent: a byte changed
//!   on disk behind the service's back is found.
//!
//! Screenshots at 1280 and 360 px go to target/tmp/browser/.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{
    self, create_torrent, free_port, make_tree, seeder, tail, wait_listening, Proc, Tracker,
};
use crate::driver::{browser_cell, http, request, Browser};
use crate::interop::wait_for;

const PIECE: usize = 16384;

/// Adds a .torrent through the API (the page's own add is tested apart).
fn add_torrent(api: u16, torrent: &Path, query: &str) -> String {
    let bytes = std::fs::read(torrent).unwrap();
    let (status, v) = request(
        api,
        "POST",
        &format!("/api/torrents{query}"),
        "application/x-bittorrent",
        &bytes,
        None,
    )
    .unwrap();
    assert_eq!(status, 201, "{v}");
    v["info_hash"].as_str().unwrap().to_string()
}

fn get(api: u16, path: &str) -> Value {
    let (status, v) = http(api, "GET", path, None).unwrap();
    assert_eq!(status, 200, "{path}: {v}");
    v
}

/// The names of the rows shown, top to bottom.
fn shown(b: &Browser) -> Vec<String> {
    let v = b.js(
        "return Array.from(document.querySelectorAll('#rows tr[data-hash]'))
                    .filter(tr => !tr.hidden)
                    .map(tr => tr.querySelector('.name-button').innerText)",
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap_or("").to_string())
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Sets the window's width (and a height) as a device would.
fn width(b: &Browser, w: u32, h: u32) {
    b.s(
        "POST",
        "/goog/cdp/execute",
        Some(
            json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
            "width": w, "height": h, "deviceScaleFactor": 1, "mobile": false}}),
        ),
    );
}

fn no_sideways_scroll(b: &Browser, w: u32) {
    let v = b.js("return [window.innerWidth, document.documentElement.scrollWidth]");
    assert_eq!(v[0], w, "{v}");
    assert!(
        v[1].as_u64() <= v[0].as_u64(),
        "sideways scroll at {w}: {v}"
    );
}

#[test]
fn the_page_sorts_filters_selects_and_adds_with_options() {
    let (chromium, cell, shots) = browser_cell("browser-features");
    let d = cell.path();

    // Three torrents nobody seeds, to sort and filter: names, sizes and
    // categories in different orders.
    let mut waiting = Vec::new();
    for (name, size) in [
        ("aa-small", 100_000),
        ("mm-big", 3_000_000),
        ("zz-mid", 1_000_000),
    ] {
        make_tree(&d.join("src-w"), &[(&format!("{name}.bin"), size)]);
        let t = create_torrent(
            &d.join(format!("src-w/{name}.bin")),
            &d.join(format!("{name}.torrent")),
            &[],
            PIECE as u32,
        );
        waiting.push(t);
    }
    // Q: three files, piece-aligned, seeded through a tracker; added by the
    // dialog with its middle file left out.
    let tracker = Tracker::start();
    make_tree(
        &d.join("src-q"),
        &[
            ("quiver/q0.bin", 5 * PIECE),
            ("quiver/q1.bin", 3 * PIECE),
            ("quiver/q2.bin", 4 * PIECE),
        ],
    );
    let tq = create_torrent(
        &d.join("src-q/quiver"),
        &d.join("quiver.torrent"),
        &[tracker.url()],
        PIECE as u32,
    );
    let hash_q = hex::encode(common::info_hash(&tq));
    std::fs::create_dir_all(d.join("log-q")).unwrap();
    let (seed_q, _) = seeder(&d.join("log-q"), &tq, &d.join("src-q"), &["--quiet"]);
    // M: two files, by a magnet link naming its seeder.
    make_tree(
        &d.join("src-m"),
        &[("mosaic/m0.bin", 6 * PIECE), ("mosaic/m1.bin", 2 * PIECE)],
    );
    let tm = create_torrent(
        &d.join("src-m/mosaic"),
        &d.join("mosaic.torrent"),
        &[],
        PIECE as u32,
    );
    let hash_m = hex::encode(common::info_hash(&tm));
    std::fs::create_dir_all(d.join("log-m")).unwrap();
    let (seed_m, port_m) = seeder(&d.join("log-m"), &tm, &d.join("src-m"), &["--quiet"]);
    let magnet_m = format!("magnet:?xt=urn:btih:{hash_m}&dn=mosaic&x.pe=127.0.0.1:{port_m}");

    let api = free_port();
    let peer_port = free_port();
    let dl = d.join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    let _serve = super::serve(d, &dl, api, peer_port, None, "serve");
    wait_listening(api);
    let b = Browser::start(d, &chromium, &shots);
    let context = |what: &str| {
        let shot = b.screenshot(&format!("failed-features-{what}.png"));
        let log = std::fs::read_to_string(d.join("serve.err")).unwrap_or_default();
        format!(
            "shown: {:?}\nlist: {}\nscreenshot: {}\nserve's log (tail):\n{}",
            shown(&b),
            get(api, "/api/torrents"),
            shot.display(),
            tail(&log, 40)
        )
    };
    b.goto(&format!("http://127.0.0.1:{api}/"));
    wait_for(
        "the page to load",
        Duration::from_secs(20),
        || (b.js("return !document.getElementById('empty').hidden") == true).then_some(()),
        || context("load"),
    );

    let hash_aa = add_torrent(api, &waiting[0], "?category=films");
    let hash_mm = add_torrent(api, &waiting[1], "");
    let hash_zz = add_torrent(api, &waiting[2], "?category=music");
    wait_for(
        "three rows",
        Duration::from_secs(20),
        || (shown(&b).len() == 3).then_some(()),
        || context("rows"),
    );

    // The filters start at everything.
    let f = b.js("const t = id => { const s = document.getElementById(id);
                                    return s.selectedIndex < 0 ? null : s.selectedOptions[0].innerText; };
                  return [t('filter-state'), t('filter-category')]");
    assert_eq!(f, json!(["All (3)", "Any category (3)"]));

    // Ratio and uploaded columns, at full width.
    let v = b.js(
        "const d = c => getComputedStyle(document.querySelector(c)).display;
                  return [d('thead th.c-ratio'), d('thead th.c-uploaded'),
                          document.querySelector('thead th.c-ratio').innerText,
                          document.querySelector('thead th.c-uploaded').innerText,
                          d('#rows td.c-ratio'), d('#rows td.c-uploaded')]",
    );
    assert_eq!(
        v,
        json!([
            "table-cell",
            "table-cell",
            "RATIO",
            "UPLOADED",
            "table-cell",
            "table-cell"
        ]),
        "{v}"
    );

    // Sorting: by name, reversed; by size (largest first), reversed.
    let sort_by = |key: &str, want: &[&str], dir: &str| {
        b.click(&format!("th[data-sort={key}] button"));
        wait_for(
            &format!("rows sorted by {key}, {dir}"),
            Duration::from_secs(10),
            || (shown(&b) == names(want)).then_some(()),
            || context("sort"),
        );
        let aria = b.js(&format!(
            "return document.querySelector('th[data-sort={key}]').getAttribute('aria-sort')"
        ));
        assert_eq!(aria, dir, "{key}");
    };
    sort_by(
        "name",
        &["aa-small.bin", "mm-big.bin", "zz-mid.bin"],
        "ascending",
    );
    sort_by(
        "name",
        &["zz-mid.bin", "mm-big.bin", "aa-small.bin"],
        "descending",
    );
    sort_by(
        "size",
        &["mm-big.bin", "zz-mid.bin", "aa-small.bin"],
        "descending",
    );
    sort_by(
        "size",
        &["aa-small.bin", "zz-mid.bin", "mm-big.bin"],
        "ascending",
    );
    sort_by(
        "name",
        &["aa-small.bin", "mm-big.bin", "zz-mid.bin"],
        "ascending",
    );
    // A change from outside shows up through the live refresh, and the
    // order stays (sorted by name, not by state or size).
    let (status, _) = http(api, "POST", &format!("/api/torrents/{hash_mm}/pause"), None).unwrap();
    assert_eq!(status, 200);
    wait_for(
        "mm-big.bin shown paused",
        Duration::from_secs(15),
        || {
            (b.js(&format!(
                "return document.querySelector(\"tr[data-hash='{hash_mm}'] .c-state\").innerText"
            )) == "Paused")
                .then_some(())
        },
        || context("live"),
    );
    assert_eq!(
        shown(&b),
        names(&["aa-small.bin", "mm-big.bin", "zz-mid.bin"])
    );

    // Filters: by state, then by category; each choice says how many.
    let pick = |select: &str, option: &str, want: &[&str]| {
        b.click(&format!("#{select} {option}"));
        wait_for(
            &format!("{select} {option} to show {want:?}"),
            Duration::from_secs(10),
            || (shown(&b) == names(want)).then_some(()),
            || context("filter"),
        );
    };
    pick("filter-state", "option[value=paused]", &["mm-big.bin"]);
    assert_eq!(
        b.js("return document.querySelector('#filter-state option[value=paused]').innerText"),
        "Paused (1)"
    );
    pick(
        "filter-state",
        "option[value=downloading]",
        &["aa-small.bin", "zz-mid.bin"],
    );
    pick(
        "filter-state",
        "option[value=all]",
        &["aa-small.bin", "mm-big.bin", "zz-mid.bin"],
    );
    pick("filter-category", "option[value=films]", &["aa-small.bin"]);
    pick("filter-category", "option[value=music]", &["zz-mid.bin"]);
    // The second entry: torrents with no category.
    pick("filter-category", "option:nth-child(2)", &["mm-big.bin"]);
    pick(
        "filter-category",
        "option:first-child",
        &["aa-small.bin", "mm-big.bin", "zz-mid.bin"],
    );

    // Multi-select: a tick, then a shift-click range; pause, resume all.
    b.click(&format!("tr[data-hash='{hash_aa}'] .c-sel input"));
    b.js(&format!(
        "document.querySelector(\"tr[data-hash='{hash_zz}'] .c-sel input\")
           .dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true, shiftKey: true}}))"
    ));
    let sel = b.js("return [document.getElementById('sel-count').innerText,
                            document.getElementById('select-all').checked,
                            document.querySelectorAll('#rows .c-sel input:checked').length]");
    assert_eq!(sel, json!(["3 selected", true, 3]), "{sel}");
    b.screenshot("features-selected-1280.png");
    let all = [&hash_aa, &hash_mm, &hash_zz];
    let states = || {
        all.iter()
            .map(|h| get(api, &format!("/api/torrents/{h}"))["state"].clone())
            .collect::<Vec<_>>()
    };
    b.click("#bulk-pause");
    wait_for(
        "all three paused in the API",
        Duration::from_secs(20),
        || states().iter().all(|s| s == "paused").then_some(()),
        || context("bulk-pause"),
    );
    b.click("#bulk-resume");
    wait_for(
        "none paused in the API",
        Duration::from_secs(20),
        || states().iter().all(|s| s != "paused").then_some(()),
        || context("bulk-resume"),
    );
    b.click("#select-all");
    assert_eq!(
        b.js("return document.querySelectorAll('#rows .c-sel input:checked').length"),
        0
    );

    // Speed limits set from the page; the API reports them; then none.
    b.click("#limits-open");
    wait_for(
        "the limits dialog",
        Duration::from_secs(10),
        || (b.js("return document.getElementById('limits-dialog').open") == true).then_some(()),
        || context("limits-open"),
    );
    b.type_into("#limit-down", "500");
    b.type_into("#limit-up", "200");
    b.screenshot("features-limits-1280.png");
    b.click("#limits-save");
    wait_for(
        "the limits in the API",
        Duration::from_secs(10),
        || (get(api, "/api/limits") == json!({"download": 512000, "upload": 204800})).then_some(()),
        || context("limits"),
    );
    wait_for(
        "the limits in the header",
        Duration::from_secs(10),
        || {
            let t = b.js("return document.getElementById('limits-text').innerText");
            (t == "Limits ↓ 500 KiB/s · ↑ 200 KiB/s").then_some(())
        },
        || context("limits-text"),
    );
    b.click("#limits-open");
    wait_for(
        "the limits dialog with the limits in it",
        Duration::from_secs(10),
        || {
            (b.js("return document.getElementById('limits-dialog').open
                      && document.getElementById('limit-down').value")
                == "500")
                .then_some(())
        },
        || context("limits-again"),
    );
    b.js("document.getElementById('limit-down').value = '';
          document.getElementById('limit-up').value = '0';");
    b.click("#limits-save");
    wait_for(
        "no limits in the API",
        Duration::from_secs(10),
        || (get(api, "/api/limits") == json!({"download": null, "upload": null})).then_some(()),
        || context("no-limits"),
    );

    // The add dialog: Q's .torrent into a folder and a category, paused,
    // with q1.bin left out.
    b.click("#add-open");
    b.type_into("#add-file", tq.to_str().unwrap());
    b.type_into("#add-dir", "picked/here");
    b.type_into("#add-category", "films");
    b.click("#add-paused");
    b.click("#add-submit");
    let files = wait_for(
        "Q's files in the dialog",
        Duration::from_secs(20),
        || {
            let v = b.js(
                "return Array.from(document.querySelectorAll('#add-files li label'))
                            .map(l => l.innerText)",
            );
            (v.as_array()?.len() == 3).then_some(v)
        },
        || context("add-files"),
    );
    assert_eq!(files, json!(["q0.bin", "q1.bin", "q2.bin"]));
    assert_eq!(
        b.js("return document.getElementById('add-submit').innerText"),
        "Add paused"
    );
    b.click("#add-file-1");
    b.screenshot("features-add-1280.png");
    b.click("#add-submit");
    wait_for(
        "the add dialog to close",
        Duration::from_secs(15),
        || (b.js("return document.getElementById('add-dialog').open") == false).then_some(()),
        || context("add-close"),
    );
    let q = get(api, &format!("/api/torrents/{hash_q}"));
    assert_eq!(q["state"], "paused", "{q}");
    assert_eq!(q["category"], "films", "{q}");
    assert!(
        q["download_dir"]
            .as_str()
            .is_some_and(|p| p.ends_with("picked/here")),
        "{q}"
    );
    let prios: Vec<&str> = q["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["priority"].as_str().unwrap())
        .collect();
    assert_eq!(prios, ["normal", "skip", "normal"], "{q}");
    assert_eq!(q["have_bytes"], 0, "nothing downloaded while paused: {q}");
    // Started from its row: only the chosen files come.
    b.click(&format!("tr[data-hash='{hash_q}'] .c-act button.toggle"));
    let complete = |h: &str| {
        let t = get(api, &format!("/api/torrents/{h}"));
        (t["progress"] == 1.0 && ["seeding", "done"].contains(&t["state"].as_str().unwrap_or("")))
            .then_some(())
    };
    wait_for(
        "Q complete",
        Duration::from_secs(90),
        || complete(&hash_q),
        || context("q-complete"),
    );
    let q_dir = dl.join("picked/here/quiver");
    for f in ["q0.bin", "q2.bin"] {
        assert_eq!(
            std::fs::read(q_dir.join(f)).unwrap(),
            std::fs::read(d.join("src-q/quiver").join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!q_dir.join("q1.bin").exists(), "q1.bin was left out");

    // A magnet in the dialog: its file list comes from its peer, and
    // nothing is downloaded before the files are chosen.
    b.click("#add-open");
    b.type_into("#add-link", &magnet_m);
    b.click("#add-submit");
    wait_for(
        "M's files in the dialog",
        Duration::from_secs(60),
        || (b.js("return document.querySelectorAll('#add-files li').length") == 2).then_some(()),
        || context("magnet-files"),
    );
    let m = get(api, &format!("/api/torrents/{hash_m}"));
    assert_eq!(m["state"], "paused", "stopped once its metadata came: {m}");
    assert_eq!(m["have_bytes"], 0, "{m}");
    assert_eq!(
        b.js("return document.getElementById('add-submit').innerText"),
        "Start"
    );
    b.click("#add-file-1");
    b.click("#add-submit");
    wait_for(
        "M complete",
        Duration::from_secs(90),
        || complete(&hash_m),
        || context("m-complete"),
    );
    let m_dir = dl.join("mosaic");
    assert_eq!(
        std::fs::read(m_dir.join("m0.bin")).unwrap(),
        std::fs::read(d.join("src-m/mosaic/m0.bin")).unwrap()
    );
    assert!(!m_dir.join("m1.bin").exists(), "m1.bin was left out");

    // Uploaded and ratio: a leecher takes Q's two files from the service
    // (the only peer left that has them).
    drop(seed_q);
    drop(seed_m);
    let mut leech = Proc::spawn(
        &[
            "download",
            tq.to_str().unwrap(),
            "-o",
            d.join("leech").to_str().unwrap(),
            "--select",
            "0,2",
            "--port",
            &free_port().to_string(),
            "--peer",
            &format!("127.0.0.1:{peer_port}"),
        ],
        d,
        "leecher",
    );
    assert!(
        leech.wait(Duration::from_secs(120)).success(),
        "{}",
        leech.stderr()
    );
    let q = wait_for(
        "Q's upload in the API and the row",
        Duration::from_secs(20),
        || {
            let q = get(api, &format!("/api/torrents/{hash_q}"));
            let up = q["uploaded"].as_u64()?;
            let cells = b.js(&format!(
                "const tr = document.querySelector(\"tr[data-hash='{hash_q}']\");
                 return [tr.querySelector('.c-uploaded').innerText, tr.querySelector('.c-ratio').innerText]"
            ));
            (up >= 9 * PIECE as u64 && cells[0] != "–").then_some((q, cells))
        },
        || context("uploaded"),
    );
    let (q, cells) = q;
    let up = q["uploaded"].as_f64().unwrap();
    let base = q["downloaded"]
        .as_f64()
        .unwrap()
        .max(q["have_bytes"].as_f64().unwrap());
    let shown_ratio: f64 = cells[1].as_str().unwrap().parse().unwrap();
    assert!(
        (shown_ratio - up / base).abs() < 0.0051,
        "ratio {cells} for {q}"
    );
    assert!(
        cells[0].as_str().unwrap().ends_with("KiB"),
        "uploaded {cells} for {q}"
    );

    // Copy magnet from Q's row: the clipboard (granted to the page) holds
    // Q's magnet, or the fallback field does.
    b.s(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Browser.grantPermissions", "params": {
            "origin": format!("http://127.0.0.1:{api}"),
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}})),
    );
    let want = get(api, &format!("/api/torrents/{hash_q}"))["magnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        want.starts_with(&format!("magnet:?xt=urn:btih:{hash_q}&dn=quiver&tr=")),
        "{want}"
    );
    b.click(&format!("tr[data-hash='{hash_q}'] .c-act button.copy"));
    // Either the clipboard holds it, or the field shown in its place.
    let read_clipboard = || {
        b.s(
            "POST",
            "/execute/async",
            Some(
                json!({"script": "const done = arguments[arguments.length - 1];
                navigator.clipboard.readText().then(done, e => done('error: ' + e));", "args": []}),
            ),
        )
    };
    let (how, got) = wait_for(
        "the magnet on the clipboard or in the fallback field",
        Duration::from_secs(15),
        || {
            if b.js("return document.getElementById('copy-dialog').open") == true {
                let v = b.js("return document.getElementById('copy-field').value");
                b.click("#copy-close");
                return Some(("field", v));
            }
            let v = read_clipboard();
            (v.as_str().is_some_and(|s| s.starts_with("magnet:"))).then_some(("clipboard", v))
        },
        || context("copy"),
    );
    eprintln!("browser-features: magnet copied by the {how}");
    assert_eq!(got, want.as_str(), "copied by the {how}");
    // The clipboard refused: the link is shown selected in a field.
    b.js("navigator.clipboard.writeText = () => Promise.reject(new Error('not allowed'))");
    b.click(&format!("tr[data-hash='{hash_q}'] .name-button"));
    b.click("#detail-copy");
    let field = wait_for(
        "the fallback field",
        Duration::from_secs(10),
        || {
            let v = b.js("const f = document.getElementById('copy-field');
                 return document.getElementById('copy-dialog').open
                   ? [f.value, f.selectionStart, f.selectionEnd, document.activeElement === f] : null");
            v.as_array().is_some().then_some(v)
        },
        || context("copy-field"),
    );
    assert_eq!(field, json!([want, 0, want.len(), true]), "{field}");
    b.screenshot("features-copy-1280.png");
    b.click("#copy-close");

    // Re-check finds a byte changed on disk: of the selection (Q), and of
    // one torrent from its detail pane (M). No peer has them any more.
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    };
    let have = |h: &str| get(api, &format!("/api/torrents/{h}"))["have_bytes"].as_u64();
    let (have_q, have_m) = (have(&hash_q).unwrap(), have(&hash_m).unwrap());
    flip(&q_dir.join("q0.bin"));
    flip(&m_dir.join("m0.bin"));
    assert_eq!(
        get(api, &format!("/api/torrents/{hash_q}"))["progress"],
        1.0,
        "not noticed without a check"
    );
    let lost_a_piece = |h: &str, before: u64| {
        let t = get(api, &format!("/api/torrents/{h}"));
        let have = t["have_bytes"].as_u64()?;
        (t["state"] != "checking" && have + PIECE as u64 == before && t["progress"] != 1.0)
            .then_some(())
    };
    b.click(&format!("tr[data-hash='{hash_q}'] .c-sel input"));
    b.click("#bulk-recheck");
    wait_for(
        "Q's changed piece found by the re-check",
        Duration::from_secs(60),
        || lost_a_piece(&hash_q, have_q),
        || context("recheck-selection"),
    );
    b.click(&format!("tr[data-hash='{hash_m}'] .name-button"));
    b.click("#detail-recheck");
    wait_for(
        "M's changed piece found by the re-check",
        Duration::from_secs(60),
        || lost_a_piece(&hash_m, have_m),
        || context("recheck-one"),
    );
    b.click("#detail-close");
    b.click(&format!("tr[data-hash='{hash_q}'] .c-sel input"));

    // Narrow: no sideways scroll, the ticks stay, the extra columns go.
    b.screenshot("features-1280.png");
    width(&b, 360, 800);
    no_sideways_scroll(&b, 360);
    let v = b.js(
        "const d = c => getComputedStyle(document.querySelector(c)).display;
                  return [d('#rows td.c-sel'), d('#rows td.c-ratio'), d('#rows td.c-uploaded'),
                          d('#bulk'), d('#filter-state')]",
    );
    assert_eq!(
        v,
        json!(["table-cell", "none", "none", "flex", "block"]),
        "{v}"
    );
    b.screenshot("features-360.png");
    b.click("#add-open");
    no_sideways_scroll(&b, 360);
    b.screenshot("features-add-360.png");
    b.click("#add-cancel");
    b.s(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}})),
    );

    // Remove them all: select-all, the in-page confirmation; data stays.
    b.click("#select-all");
    b.click("#bulk-remove");
    let title = b.js("return [document.getElementById('remove-dialog').open,
                              document.getElementById('remove-title').innerText]");
    assert_eq!(title, json!([true, "Remove 5 torrents?"]));
    b.click("#remove-confirm");
    wait_for(
        "no torrent left in the API",
        Duration::from_secs(30),
        || (get(api, "/api/torrents") == json!([])).then_some(()),
        || context("remove-all"),
    );
    wait_for(
        "the empty table",
        Duration::from_secs(10),
        || (b.js("return !document.getElementById('empty').hidden") == true).then_some(()),
        || context("empty"),
    );
    assert!(q_dir.join("q0.bin").exists(), "data kept");

    let errors: Vec<Value> = b
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" && e["source"] == "javascript")
        .collect();
    assert!(errors.is_empty(), "script errors: {errors:#?}");
}
