//! The table with hundreds of torrents, as a big seedbox shows it: only the
//! rows on screen (and a margin) are in the page, so a live update touches
//! a few dozen rows; scrolling brings the others, in order; the scrollbar
//! spans the whole list; select-all takes every torrent, drawn or not.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{free_port, tail, wait_listening};
use crate::driver::{browser_cell, http, Browser};
use crate::interop::wait_for;

/// Torrents in the list: several screenfuls at any width.
const N: usize = 300;

/// Rows in the DOM, and the names of the first and the last.
fn drawn(b: &Browser) -> (usize, String, String) {
    let v = b.js(
        "const rows = Array.from(document.querySelectorAll('#rows tr[data-hash]'));
                  const name = (tr) => tr ? tr.querySelector('.name-button').innerText : '';
                  return [rows.length, name(rows[0]), name(rows[rows.length - 1])]",
    );
    let s = |i: usize| v[i].as_str().unwrap_or("").to_string();
    (v[0].as_u64().unwrap_or(0) as usize, s(1), s(2))
}

#[test]
fn a_long_list_draws_only_the_rows_on_screen() {
    let (chromium, cell, shots) = browser_cell("browser-many");
    let d = cell.path();
    let (api, peer_port) = (free_port(), free_port());
    let dl = d.join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    let _serve = super::serve(d, &dl, api, peer_port, None, "serve");
    wait_listening(api);
    // Paused magnets: a name each (dn), nothing to fetch.
    for i in 0..N {
        let magnet = format!("magnet:?xt=urn:btih:{:040x}&dn=t{i:03}", i + 1);
        let body = json!({"magnet": magnet, "paused": true});
        let (status, v) = http(api, "POST", "/api/torrents", Some(&body)).unwrap();
        assert_eq!(status, 201, "{v}");
    }
    let b = Browser::start(d, &chromium, &shots);
    let context = |what: &str| {
        let shot = b.screenshot(&format!("failed-many-{what}.png"));
        let log = std::fs::read_to_string(d.join("serve.err")).unwrap_or_default();
        format!(
            "drawn: {:?}\nscreenshot: {}\nserve's log (tail):\n{}",
            drawn(&b),
            shot.display(),
            tail(&log, 40)
        )
    };
    b.goto(&format!("http://127.0.0.1:{api}/"));
    let totals = format!("{N} torrents");
    wait_for(
        "the page to list them all",
        Duration::from_secs(30),
        || {
            let t = b.js("return document.getElementById('totals').innerText");
            t.as_str()
                .is_some_and(|t| t.starts_with(&totals))
                .then_some(())
        },
        || context("load"),
    );
    // Sorted by name: t000 on top.
    b.click("#torrents thead th[data-sort='name'] button");
    wait_for(
        "t000 on top, a screenful drawn",
        Duration::from_secs(10),
        || {
            let (n, first, _) = drawn(&b);
            (first == "t000" && n > 5 && n < N / 2).then_some(n)
        },
        || context("top"),
    );
    // The page is as tall as the whole list: the scrollbar is true.
    let v = b.js(
        "return [document.documentElement.scrollHeight, window.innerHeight,
                          document.querySelector('#rows tr[data-hash]').offsetHeight]",
    );
    let (height, view, row) = (v[0].as_f64(), v[1].as_f64(), v[2].as_f64());
    let (Some(height), Some(view), Some(row)) = (height, view, row) else {
        panic!("{v}")
    };
    assert!(
        height >= row * N as f64 * 0.9 && height > 3.0 * view,
        "page {height} px for {N} rows of {row} px: {v}"
    );

    // The bottom: the last rows, still only a screenful or so drawn.
    b.js("window.scrollTo(0, document.documentElement.scrollHeight); return 0");
    let last = format!("t{:03}", N - 1);
    wait_for(
        "the last rows drawn at the bottom",
        Duration::from_secs(10),
        || {
            let (n, first, end) = drawn(&b);
            (end == last && first != "t000" && n < N / 2).then_some(())
        },
        || context("bottom"),
    );
    let on_screen = b.js(&format!(
        "const r = document.querySelector(\"#rows tr[data-hash='{:040x}']\").getBoundingClientRect();
         return r.top >= 0 && r.bottom <= window.innerHeight + 1",
        N
    ));
    assert_eq!(on_screen, Value::Bool(true), "{}", context("last-row"));
    b.screenshot("many-bottom-1280.png");

    // The middle, in order around where the scrollbar was put.
    b.js("window.scrollTo(0, document.documentElement.scrollHeight / 2); return 0");
    wait_for(
        "middle rows drawn in order",
        Duration::from_secs(10),
        || {
            let v = b.js(
                "return Array.from(document.querySelectorAll('#rows tr[data-hash]'))
                            .map(tr => tr.querySelector('.name-button').innerText)",
            );
            let names: Vec<String> = v
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            let mut sorted = names.clone();
            sorted.sort();
            let consecutive = names.windows(2).all(|w| {
                let n = |s: &str| s[1..].parse::<usize>().unwrap_or(usize::MAX);
                n(&w[1]) == n(&w[0]) + 1
            });
            (names.first().is_some_and(|f| f != "t000")
                && names.last().is_some_and(|l| *l != last)
                && names == sorted
                && consecutive)
                .then_some(())
        },
        || context("middle"),
    );

    // Select-all (in the table's head, back at the top) takes every
    // torrent, not only the drawn rows.
    b.js("window.scrollTo(0, 0); return 0");
    b.click("#select-all");
    wait_for(
        "all selected",
        Duration::from_secs(10),
        || {
            let t = b.js("return document.getElementById('sel-count').innerText");
            (t.as_str() == Some(&format!("{N} selected"))).then_some(())
        },
        || context("select-all"),
    );
}
