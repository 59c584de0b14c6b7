//! The qBittorrent Web API v2 subset of `shoal serve` (docs/api.md),
//! spoken as its documentation writes it (form fields, multipart uploads,
//! the SID cookie, "Ok."/"Fails."), against the real binary: login and
//! a refused one, adds by multipart .torrent, by URL and by magnet, info
//! with filters, categories, sort and paging, pause/resume, files,
//! properties, trackers, transfer info, delete with files, logout.

mod common;

use std::time::{Duration, Instant};

use common::service::*;
use common::*;
use serde_json::Value;

const TOKEN: &str = "qbit-test-token";

struct Client {
    port: u16,
    sid: Option<String>,
}

impl Client {
    fn request(
        &self,
        method: &str,
        path: &str,
        kind: Option<&str>,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let cookie = self.sid.as_ref().map(|s| format!("SID={s}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &cookie {
            headers.push(("Cookie", c));
        }
        if let Some(k) = kind {
            headers.push(("Content-Type", k));
        }
        http(
            self.port,
            method,
            &format!("/api/v2/{path}"),
            &headers,
            body,
        )
    }

    /// A POST of form fields.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let (s, _, b) = self.request(
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        );
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, b) = self.request("GET", path, None, &[]);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    fn info(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("torrents/info?{query}"));
        assert_eq!(s, 200, "info?{query}");
        v.as_array().unwrap().clone()
    }

    fn wait_state(&self, hash: &str, what: &str, f: impl Fn(&str) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let rows = self.info(&format!("hashes={hash}"));
            if let Some(t) = rows.first() {
                if f(t["state"].as_str().unwrap_or("")) {
                    return t.clone();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{hash} not {what}: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A form with `fields` and one file in field `file.0` (qBittorrent's
/// documentation says `torrents`; clients such as qbittorrent-api name it
/// after the file).
fn multipart(boundary: &str, fields: &[(&str, &str)], file: (&str, &str, &[u8])) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: application/x-bittorrent\r\n\r\n",
            file.0, file.1
        )
        .as_bytes(),
    );
    b.extend_from_slice(file.2);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    b
}

#[test]
fn qbittorrent_clients_add_list_pause_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(
        &src,
        &[
            ("film/a.mkv", 400_000),
            ("film/a.srt", 3_000),
            ("song.flac", 300_000),
            ("doc.pdf", 200_000),
        ],
    );
    let tracker = Tracker::start();
    let film = create_torrent(
        &src.join("film"),
        &d.join("film.torrent"),
        &[tracker.url()],
        32768,
    );
    let song = create_torrent(
        &src.join("song.flac"),
        &d.join("song.torrent"),
        &[tracker.url()],
        32768,
    );
    let doc = create_torrent(&src.join("doc.pdf"), &d.join("doc.torrent"), &[], 32768);
    let (_s1, _) = seeder(d, &film, &src, &["--quiet"]);
    let (_s2, _) = seeder(d, &song, &src, &["--quiet"]);
    let (_s3, doc_port) = seeder(d, &doc, &src, &["--quiet"]);
    let web = HttpServer::serve("/song.torrent", std::fs::read(&song).unwrap());
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &["--token", TOKEN], "serve");
    let mut c = Client {
        port: svc.port,
        sid: None,
    };
    let (hf, hs, hd) = (
        hex::encode(info_hash(&film)),
        hex::encode(info_hash(&song)),
        hex::encode(info_hash(&doc)),
    );

    // Without a session: 403, as qBittorrent answers.
    let (s, _, body) = c.request("GET", "app/version", None, &[]);
    assert_eq!((s, body.as_slice()), (403, &b"Forbidden"[..]));
    // A wrong password: "Fails.", no cookie.
    let (s, body) = c.post("auth/login", &[("username", "admin"), ("password", "nope")]);
    assert_eq!((s, body.as_str()), (200, "Fails."));
    // The token as the password: "Ok." and a SID cookie.
    let form = format!("username=admin&password={TOKEN}");
    let (s, head, body) = http(
        c.port,
        "POST",
        "/api/v2/auth/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!((s, body.as_slice()), (200, &b"Ok."[..]), "{head}");
    let sid = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: SID=")
                .or(l.strip_prefix("Set-Cookie: SID="))
        })
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no SID cookie: {head}"));
    c.sid = Some(sid.to_string());

    let (s, _, v) = c.request("GET", "app/version", None, &[]);
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&v).starts_with('v'));
    let (_, _, v) = c.request("GET", "app/webapiVersion", None, &[]);
    assert!(String::from_utf8_lossy(&v).starts_with("2."));
    let (s, prefs) = c.get("app/preferences");
    assert_eq!(s, 200);
    assert!(
        prefs["save_path"].as_str().unwrap().ends_with("dl"),
        "{prefs}"
    );
    // Not implemented: 404.
    let (s, _, _) = c.request("GET", "rss/items", None, &[]);
    assert_eq!(s, 404);

    // A category whose torrents go to dl/films.
    let (s, _) = c.post(
        "torrents/createCategory",
        &[("category", "films"), ("savePath", "")],
    );
    assert_eq!(s, 200);
    let (s, _) = c.post("torrents/createCategory", &[("category", "../up")]);
    assert_eq!(s, 409);
    let (_, cats) = c.get("torrents/categories");
    assert_eq!(cats["films"]["name"], "films", "{cats}");

    // A .torrent as multipart, paused, in the category.
    let body = multipart(
        "----qbtest",
        &[
            ("category", "films"),
            ("paused", "true"),
            ("skip_checking", "false"),
        ],
        ("torrents", "film.torrent", &std::fs::read(&film).unwrap()),
    );
    let (s, _, b) = c.request(
        "POST",
        "torrents/add",
        Some("multipart/form-data; boundary=----qbtest"),
        &body,
    );
    assert_eq!((s, b.as_slice()), (200, &b"Ok."[..]));
    // An http URL and a magnet, as a form, one a line.
    let magnet = format!("magnet:?xt=urn:btih:{hd}&dn=doc.pdf&x.pe=127.0.0.1:{doc_port}");
    let urls = format!("http://127.0.0.1:{}/song.torrent\n{magnet}", web.port);
    let (s, b) = c.post("torrents/add", &[("urls", &urls)]);
    assert_eq!((s, b.as_str()), (200, "Ok."));
    // Nothing usable: "Fails.".
    let (s, b) = c.post(
        "torrents/add",
        &[("urls", "http://127.0.0.1:1/none.torrent")],
    );
    assert_eq!((s, b.as_str()), (200, "Fails."));

    let t = c.wait_state(&hf, "paused", |s| s == "pausedDL");
    assert_eq!(t["category"], "films");
    assert!(t["save_path"].as_str().unwrap().ends_with("films"), "{t}");
    c.wait_state(&hs, "seeding", |s| s == "stalledUP" || s == "uploading");
    c.wait_state(&hd, "seeding", |s| s == "stalledUP" || s == "uploading");

    // Filters, category, hashes, sort, paging.
    assert_eq!(c.info("").len(), 3);
    let paused = c.info("filter=paused");
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0]["hash"], hf);
    assert_eq!(c.info("filter=downloading").len(), 1);
    assert_eq!(c.info("filter=completed").len(), 2);
    assert_eq!(c.info("filter=seeding").len(), 2);
    assert_eq!(c.info("category=films").len(), 1);
    assert_eq!(c.info("category=").len(), 2);
    assert_eq!(c.info(&format!("hashes={hs}|{hd}")).len(), 2);
    let names: Vec<String> = c
        .info("sort=name&reverse=true")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["song.flac", "film", "doc.pdf"]);
    let page = c.info("sort=size&limit=1&offset=1");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["name"], "song.flac");

    // Resume the paused one: it completes into dl/films.
    let (s, _) = c.post("torrents/resume", &[("hashes", &hf)]);
    assert_eq!(s, 200);
    let t = c.wait_state(&hf, "complete", |s| s == "stalledUP" || s == "uploading");
    assert_eq!(t["progress"], 1.0);
    assert_eq!(
        std::fs::read(dl.join("films/film/a.mkv")).unwrap(),
        std::fs::read(src.join("film/a.mkv")).unwrap()
    );
    let (s, files) = c.get(&format!("torrents/files?hash={hf}"));
    assert_eq!(s, 200);
    let files = files.as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["name"], "film/a.mkv");
    assert_eq!(files[0]["size"], 400_000);
    assert_eq!(files[0]["progress"], 1.0);
    assert_eq!(files[0]["priority"], 1);
    assert_eq!(files[0]["piece_range"], serde_json::json!([0, 12]));
    let (s, p) = c.get(&format!("torrents/properties?hash={hf}"));
    assert_eq!(s, 200);
    assert_eq!(p["piece_size"], 32768);
    assert_eq!(p["total_size"], 403_000);
    assert_eq!(p["pieces_num"], 13);
    let (s, tr) = c.get(&format!("torrents/trackers?hash={hf}"));
    assert_eq!(s, 200);
    assert_eq!(tr[0]["url"], tracker.url());
    let (s, _) = c.get(&format!("torrents/properties?hash={}", "0".repeat(40)));
    assert_eq!(s, 404);
    let (_, tinfo) = c.get("transfer/info");
    assert!(
        tinfo["dl_info_data"].as_u64().unwrap() >= 900_000,
        "{tinfo}"
    );
    assert_eq!(tinfo["connection_status"], "connected");

    // stop/start (5.0's names) and pause for several.
    let both = format!("{hs}|{hd}");
    let (s, _) = c.post("torrents/stop", &[("hashes", &both)]);
    assert_eq!(s, 200);
    assert_eq!(c.info("filter=stopped").len(), 2);
    assert!(c
        .info("filter=stopped")
        .iter()
        .all(|t| t["state"] == "pausedUP"));
    let (s, _) = c.post("torrents/start", &[("hashes", "all")]);
    assert_eq!(s, 200);
    assert_eq!(c.info("filter=paused").len(), 0);

    // Categories: set to one that exists, or 409.
    let (s, _) = c.post(
        "torrents/setCategory",
        &[("hashes", &hs), ("category", "music")],
    );
    assert_eq!(s, 409);
    let (s, _) = c.post("torrents/createCategory", &[("category", "music")]);
    assert_eq!(s, 200);
    let (s, _) = c.post(
        "torrents/setCategory",
        &[("hashes", &hs), ("category", "music")],
    );
    assert_eq!(s, 200);
    assert_eq!(c.info("category=music")[0]["hash"], hs);

    // Delete with its files.
    let (s, _) = c.post(
        "torrents/delete",
        &[("hashes", &hf), ("deleteFiles", "true")],
    );
    assert_eq!(s, 200);
    assert_eq!(c.info("").len(), 2);
    assert!(!dl.join("films/film/a.mkv").exists());
    // Without: the data stays.
    let (s, _) = c.post(
        "torrents/delete",
        &[("hashes", &hd), ("deleteFiles", "false")],
    );
    assert_eq!(s, 200);
    assert!(dl.join("doc.pdf").exists());

    // Added again, its file in a field named after it (as qbittorrent-api
    // sends it): every uploaded file is a torrent.
    let body = multipart(
        "b0undary",
        &[("stopped", "true")],
        (
            "film.torrent",
            "film.torrent",
            &std::fs::read(&film).unwrap(),
        ),
    );
    let (s, _, b) = c.request(
        "POST",
        "torrents/add",
        Some("multipart/form-data; boundary=b0undary"),
        &body,
    );
    assert_eq!((s, b.as_slice()), (200, &b"Ok."[..]));
    c.wait_state(&hf, "paused", |s| s == "pausedDL");

    // Logged out: the SID no longer works.
    let (s, _) = c.post("auth/logout", &[]);
    assert_eq!(s, 200);
    let (s, _) = c.get("torrents/info");
    assert_eq!(s, 403);
}
