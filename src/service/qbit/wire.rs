//! The pure half of the qBittorrent API: form and multipart bodies,
//! torrent states as qBittorrent names them, the `torrents/info` filters
//! and sort. No I/O; unit-tested.

use std::collections::HashMap;

use serde_json::Value;

use crate::service::TorrentView;

/// qBittorrent's "no ETA".
pub const ETA_NONE: u64 = 8_640_000;

/// `application/x-www-form-urlencoded` fields (or a query string); the
/// last of a repeated name wins.
pub fn form(s: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(s).into_owned().collect()
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70)
            .then(|| v.to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A header parameter (`name="x"`) of a part's Content-Disposition.
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a multipart body (RFC 7578) into its parts.
pub fn multipart(boundary: &str, body: &[u8]) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delim, 0).ok_or("no first boundary")? + delim.len();
    let mut parts = Vec::new();
    let next_delim = [b"\r\n".as_slice(), &delim].concat();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err("a boundary is not followed by a line end".into());
        }
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or("a part has no end of headers")?;
        let head = String::from_utf8_lossy(&body[at..head_end]);
        let end = find(body, &next_delim, head_end + 4).ok_or("a part has no closing boundary")?;
        let disposition = head
            .split("\r\n")
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then_some(v)
            })
            .ok_or("a part has no Content-Disposition")?;
        parts.push(Part {
            name: param(disposition, "name").ok_or("a part has no name")?,
            filename: param(disposition, "filename"),
            data: body[head_end + 4..end].to_vec(),
        });
        at = end + next_delim.len();
    }
}

/// A torrent's state as qBittorrent 4.x names it.
pub fn state(t: &TorrentView) -> &'static str {
    let complete = t.total > 0 && t.have_bytes >= t.total;
    match t.state {
        "error" => "error",
        "metadata" => "metaDL",
        "paused" if complete => "pausedUP",
        "paused" => "pausedDL",
        // Seeding stopped at its ratio or time.
        "done" => "pausedUP",
        "checking" if complete => "checkingUP",
        "checking" => "checkingDL",
        "seeding" if t.up_rate > 0 => "uploading",
        "seeding" => "stalledUP",
        _ if t.down_rate > 0 => "downloading",
        _ => "stalledDL",
    }
}

/// Whether a torrent in qBittorrent state `s` passes `torrents/info`'s
/// `filter` (None: an unknown filter, which qBittorrent treats as all).
pub fn passes(filter: &str, s: &str) -> Option<bool> {
    let dl = matches!(
        s,
        "downloading" | "metaDL" | "stalledDL" | "checkingDL" | "pausedDL"
    );
    let up = matches!(s, "uploading" | "stalledUP" | "checkingUP");
    let paused = matches!(s, "pausedDL" | "pausedUP");
    Some(match filter {
        "all" | "" => true,
        "downloading" => dl,
        "seeding" => up,
        "completed" => up || s == "pausedUP",
        "paused" | "stopped" => paused,
        "resumed" | "running" => !paused,
        "active" => matches!(s, "downloading" | "uploading"),
        "inactive" => !matches!(s, "downloading" | "uploading"),
        "stalled" => matches!(s, "stalledDL" | "stalledUP"),
        "stalled_uploading" => s == "stalledUP",
        "stalled_downloading" => s == "stalledDL",
        "checking" => matches!(s, "checkingDL" | "checkingUP"),
        "errored" => s == "error",
        _ => return None,
    })
}

/// Sorts `torrents/info` rows by one of their fields (numbers as
/// numbers, text as text), then applies `reverse`, `offset` (negative:
/// from the end) and `limit` (0 or less: all).
pub fn sort_and_page(
    rows: &mut Vec<Value>,
    sort: Option<&str>,
    reverse: bool,
    offset: i64,
    limit: i64,
) {
    if let Some(key) = sort {
        rows.sort_by(|a, b| {
            let (x, y) = (&a[key], &b[key]);
            match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p.total_cmp(&q),
                _ => x
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .cmp(&y.as_str().unwrap_or("").to_lowercase()),
            }
        });
    }
    if reverse {
        rows.reverse();
    }
    let n = rows.len() as i64;
    let start = if offset < 0 {
        (n + offset).max(0)
    } else {
        offset.min(n)
    } as usize;
    rows.drain(..start);
    if limit > 0 {
        rows.truncate(limit as usize);
    }
}

/// A file priority as qBittorrent numbers them (0 skip, 1 normal, 6 high,
/// 7 maximal) from ours.
pub fn file_priority(p: crate::service::Priority) -> u8 {
    match p {
        crate::service::Priority::Skip => 0,
        crate::service::Priority::Normal => 1,
        crate::service::Priority::High => 6,
    }
}

/// A tracker's status number: 1 not contacted, 2 working, 4 not working.
pub fn tracker_status(s: &str) -> u8 {
    match s {
        "working" => 2,
        "failing" => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multipart_parts() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"urls\"\r\n\r\nmagnet:?a\nhttp://b\r\n--XyZ\r\nContent-Disposition: form-data; name=\"torrents\"; filename=\"a.torrent\"\r\nContent-Type: application/x-bittorrent\r\n\r\nd4:ab\r\n--c\r\ne\r\n--XyZ--\r\n";
        let b = boundary("multipart/form-data; boundary=XyZ").unwrap();
        let parts = multipart(&b, body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "urls");
        assert_eq!(parts[0].data, b"magnet:?a\nhttp://b");
        assert_eq!(parts[1].filename.as_deref(), Some("a.torrent"));
        assert_eq!(parts[1].data, b"d4:ab\r\n--c\r\ne");
        assert_eq!(
            boundary("multipart/form-data; boundary=\"q r\"").as_deref(),
            Some("q r")
        );
        assert!(boundary("application/json").is_none());
        for bad in [
            &b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"[..],
            b"nothing",
            b"--XyZ\r\nX: y\r\n\r\nv\r\n--XyZ--",
            b"--XyZjunk",
        ] {
            assert!(multipart("XyZ", bad).is_err());
        }
    }

    fn view(state: &'static str, have: u64, down: u64, up: u64) -> TorrentView {
        TorrentView {
            info_hash: "00".repeat(20),
            name: "x".into(),
            magnet: String::new(),
            state,
            error: None,
            progress: 0.0,
            total: 100,
            have_bytes: have,
            downloaded: 0,
            uploaded: 0,
            down_rate: down,
            up_rate: up,
            peers: 0,
            known_peers: 0,
            eta: None,
            download_dir: "/d".into(),
            added: 0,
            check_progress: None,
            status: None,
            clash: false,
            category: None,
        }
    }

    #[test]
    fn states_and_filters() {
        assert_eq!(state(&view("downloading", 5, 10, 0)), "downloading");
        assert_eq!(state(&view("downloading", 5, 0, 0)), "stalledDL");
        assert_eq!(state(&view("seeding", 100, 0, 3)), "uploading");
        assert_eq!(state(&view("seeding", 100, 0, 0)), "stalledUP");
        assert_eq!(state(&view("paused", 5, 0, 0)), "pausedDL");
        assert_eq!(state(&view("paused", 100, 0, 0)), "pausedUP");
        assert_eq!(state(&view("metadata", 0, 0, 0)), "metaDL");
        assert_eq!(state(&view("checking", 0, 0, 0)), "checkingDL");
        assert_eq!(state(&view("error", 0, 0, 0)), "error");
        assert_eq!(passes("downloading", "pausedDL"), Some(true));
        assert_eq!(passes("seeding", "pausedUP"), Some(false));
        assert_eq!(passes("completed", "pausedUP"), Some(true));
        assert_eq!(passes("paused", "stalledDL"), Some(false));
        assert_eq!(passes("stopped", "pausedUP"), Some(true));
        assert_eq!(passes("active", "stalledUP"), Some(false));
        assert_eq!(passes("errored", "error"), Some(true));
        assert_eq!(passes("nonsense", "error"), None);
    }

    #[test]
    fn sorting_and_paging() {
        let mut rows = vec![
            json!({"name": "b", "size": 10}),
            json!({"name": "A", "size": 2}),
            json!({"name": "c", "size": 5}),
        ];
        sort_and_page(&mut rows, Some("size"), false, 0, 0);
        assert_eq!(rows[0]["name"], "A");
        sort_and_page(&mut rows, Some("name"), true, 0, 2);
        assert_eq!(
            rows,
            vec![
                json!({"name": "c", "size": 5}),
                json!({"name": "b", "size": 10})
            ]
        );
        sort_and_page(&mut rows, None, false, -1, 0);
        assert_eq!(rows, vec![json!({"name": "b", "size": 10})]);
        sort_and_page(&mut rows, None, false, 5, 1);
        assert!(rows.is_empty());
    }
}
