//! The client verbs (`shoal add`, `list`, `pause`, `resume`, `remove`):
//! requests to a running `shoal serve` over its HTTP API, like
//! transmission-remote.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::face::ui::human_bytes;
use crate::out::escape as esc;

/// Default address of the service (`--url`, SHOAL_URL).
pub const DEFAULT_URL: &str = "http://127.0.0.1:3030";

pub struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// What the service said, when it said no.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

impl Remote {
    pub fn new(url: &str, token: Option<String>) -> Result<Remote> {
        let parsed = url::Url::parse(url).with_context(|| format!("--url {url}: not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--url {url}: must be http:// or https://");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Remote {
            base: url.trim_end_matches('/').to_string(),
            token,
            client,
            rt,
        })
    }

    fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        self.rt.block_on(async {
            let resp = req.send().await.map_err(|e| {
                if e.is_connect() {
                    anyhow::anyhow!(
                        "cannot reach the shoal service at {} (is `shoal serve` running? --url picks another)",
                        self.base
                    )
                } else {
                    anyhow::anyhow!("{}: {e}", self.base)
                }
            })?;
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            let value: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            };
            if !status.is_success() {
                let why = value
                    .get("error")
                    .and_then(Value::as_str)
                    .map(|s| esc(s).into_owned())
                    .unwrap_or_else(|| format!("HTTP {status}"));
                if status == reqwest::StatusCode::UNAUTHORIZED {
                    return Err(Refused(format!(
                        "{why} (give --token or set SHOAL_TOKEN)"
                    ))
                    .into());
                }
                return Err(Refused(why).into());
            }
            Ok(value)
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn list(&self) -> Result<Vec<Value>> {
        let v = self.send(self.client.get(self.url("/api/torrents")))?;
        match v {
            Value::Array(a) => Ok(a),
            _ => bail!("{}: the answer is not a list of torrents", self.base),
        }
    }

    /// The full info-hash of `prefix` (at least 4 hex digits, unique).
    fn resolve(&self, prefix: &str) -> Result<String> {
        let p = prefix.to_ascii_lowercase();
        if p.len() == 40 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(p);
        }
        if p.len() < 4 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "{}: expected an info-hash or at least its first 4 hex digits",
                esc(prefix)
            );
        }
        let all = self.list()?;
        let found: Vec<&str> = all
            .iter()
            .filter_map(|t| t.get("info_hash").and_then(Value::as_str))
            .filter(|h| h.starts_with(&p))
            .collect();
        match found.as_slice() {
            [one] => Ok(one.to_string()),
            [] => bail!("no torrent {p} in the service"),
            _ => bail!("{p} matches {} torrents; give more digits", found.len()),
        }
    }
}

pub struct AddArgs<'a> {
    pub sources: &'a [String],
    pub dir: Option<String>,
    pub only: Option<String>,
    pub paused: bool,
    /// Replace files in the way that shoal did not create.
    pub overwrite: bool,
    /// The torrents' category (by default also their sub-folder).
    pub category: Option<String>,
}

/// `shoal add`: .torrent files, magnet links, URLs or bare info-hashes.
pub fn add(r: &Remote, a: AddArgs<'_>) -> Result<()> {
    // File numbers as `download --list` shows them (from 0), ranges too.
    let only: Option<Vec<usize>> = match &a.only {
        Some(s) => Some(
            crate::torrent::selection::parse_numbers(s, usize::MAX)
                .map_err(|_| anyhow::anyhow!("--only {s}: expected file numbers like 0,2-4"))?,
        ),
        None => None,
    };
    for src in a.sources {
        // A file of that name wins over a bare info-hash.
        let magnet = (!Path::new(src).exists())
            .then(|| crate::metainfo::magnet::from_bare_hash(src))
            .flatten();
        let src = magnet.as_ref().unwrap_or(src);
        let lower = src.to_ascii_lowercase();
        let req = if lower.starts_with("magnet:")
            || lower.starts_with("http://")
            || lower.starts_with("https://")
        {
            let key = if lower.starts_with("magnet:") {
                "magnet"
            } else {
                "url"
            };
            let mut body = json!({ key: src, "paused": a.paused, "overwrite": a.overwrite });
            if let Some(d) = &a.dir {
                body["download_dir"] = json!(d);
            }
            if let Some(c) = &a.category {
                body["category"] = json!(c);
            }
            if let Some(o) = &only {
                body["only"] = json!(o);
            }
            r.client
                .post(r.url("/api/torrents"))
                .header("Content-Type", "application/json")
                .body(body.to_string())
        } else {
            let path = Path::new(src);
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", esc(src)))?;
            let mut q: Vec<(&str, String)> = vec![
                ("paused", a.paused.to_string()),
                ("overwrite", a.overwrite.to_string()),
            ];
            if let Some(d) = &a.dir {
                q.push(("download_dir", d.clone()));
            }
            if let Some(c) = &a.category {
                q.push(("category", c.clone()));
            }
            if let Some(o) = &only {
                let list: Vec<String> = o.iter().map(usize::to_string).collect();
                q.push(("only", list.join(",")));
            }
            r.client
                .post(r.url("/api/torrents"))
                .query(&q)
                .header("Content-Type", "application/x-bittorrent")
                .body(bytes)
        };
        let v = r
            .send(req)
            .with_context(|| format!("adding {}", esc(src)))?;
        let hash = v.get("info_hash").and_then(Value::as_str).unwrap_or("?");
        crate::outln!("added {hash} {}", esc(src));
    }
    Ok(())
}

fn rate(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{}/s", human_bytes(n))
    }
}

fn eta(v: &Value) -> String {
    match v.get("eta").and_then(Value::as_u64) {
        Some(s) => crate::units::human_eta(Duration::from_secs(s)),
        None => "-".into(),
    }
}

/// `shoal list`: a table (or `--json`, the API's list as is).
pub fn list(r: &Remote, as_json: bool) -> Result<()> {
    let all = r.list()?;
    if as_json {
        crate::outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        crate::outln!("no torrents (add one with `shoal add FILE|MAGNET`)");
        return Ok(());
    }
    // On a terminal names are cut to its width; into a pipe or a file they
    // are whole, for whatever reads them.
    let width = crate::face::ui::stdout_is_terminal().then(|| crate::face::term::width().max(40));
    crate::outln!(
        "{:<8}  {:<11}  {:>6}  {:>11}  {:>11}  {:>5}  {:>7}  NAME",
        "HASH",
        "STATE",
        "DONE",
        "DOWN",
        "UP",
        "PEERS",
        "ETA"
    );
    for t in &all {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let n = |k: &str| t.get(k).and_then(Value::as_u64).unwrap_or(0);
        let hash = s("info_hash");
        let line = format!(
            "{:<8}  {:<11}  {:>5.1}%  {:>11}  {:>11}  {:>5}  {:>7}  ",
            hash.get(..8).unwrap_or(&hash),
            s("state"),
            t.get("progress").and_then(Value::as_f64).unwrap_or(0.0) * 100.0,
            rate(n("down_rate")),
            rate(n("up_rate")),
            n("peers"),
            eta(t),
        );
        let name = esc(&s("name")).into_owned();
        let name = match width {
            Some(w) => crate::face::term::cut_end(
                &name,
                w.saturating_sub(1 + crate::face::term::width_of(&line))
                    .max(10),
            ),
            None => name,
        };
        crate::outln!("{line}{name}");
        if let Some(e) = t.get("error").and_then(Value::as_str) {
            crate::outln!("          error: {}", esc(e));
        }
    }
    Ok(())
}

/// `shoal pause|resume HASH…`; `resume --overwrite` lets the next run
/// replace files in the way.
pub fn pause_resume(r: &Remote, hashes: &[String], verb: &str, overwrite: bool) -> Result<()> {
    for h in hashes {
        let full = r.resolve(h)?;
        let mut req = r
            .client
            .post(r.url(&format!("/api/torrents/{full}/{verb}")));
        if overwrite {
            req = req.query(&[("overwrite", "true")]);
        }
        let v = r.send(req)?;
        let state = v.get("state").and_then(Value::as_str).unwrap_or("?");
        crate::outln!("{full} {state}");
    }
    Ok(())
}

/// `shoal remove HASH… [--delete-data]`.
pub fn remove(r: &Remote, hashes: &[String], delete_data: bool) -> Result<()> {
    for h in hashes {
        let full = r.resolve(h)?;
        let v = r.send(
            r.client
                .delete(r.url(&format!("/api/torrents/{full}")))
                .query(&[("delete_data", delete_data)]),
        )?;
        if !delete_data {
            crate::outln!("removed {full}");
            continue;
        }
        let deleted = v
            .get("deleted")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let kept = v
            .get("kept")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        crate::outln!(
            "removed {full} and its data: {} deleted{}",
            crate::face::cli::plural(deleted as u64, "file", "files"),
            if kept.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} kept",
                    crate::face::cli::plural(kept.len() as u64, "file", "files")
                )
            }
        );
        for k in &kept {
            let s = |key: &str| k.get(key).and_then(Value::as_str).unwrap_or("?");
            crate::outln!("kept {}: {}", esc(s("path")), esc(s("why")));
        }
    }
    Ok(())
}
