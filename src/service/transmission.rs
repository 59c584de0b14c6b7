//! The Transmission RPC at `/transmission/rpc`, so `transmission-remote`,
//! its GUIs and automation that speak it (Sonarr, Radarr, phone remotes)
//! can drive `shoal serve`. Every method maps onto the service's own
//! (`Service::add`, `pause`, `resume`, `remove`, `set_priorities`,
//! `recheck`, the session's limits): nothing is done twice.
//!
//! The access rules are the API's (`api::guard` runs first: Host, Origin,
//! the token as the Basic password). Then Transmission's own CSRF guard: a
//! request without the current `X-Transmission-Session-Id` gets 409 and
//! the id, which the client sends again.
//!
//! Torrents get Transmission's small integer ids, in the order the
//! service lists them, stable for the service's life and never reused.

mod fields;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::service::{AddRequest, AddSource, Priority, Service, ServiceError, TorrentView};

/// The header of Transmission's CSRF handshake.
pub const SESSION_HEADER: &str = "x-transmission-session-id";
/// The RPC version answered: transmission 3.00's.
const RPC_VERSION: i64 = 16;
/// Removed torrents are reported to `recently-active` for this long.
const RECENT: Duration = Duration::from_secs(60);
/// Transmission's speed unit: kB/s of 1000 bytes.
const SPEED_UNIT: u64 = 1000;

/// The RPC's state: the session id, the torrents' ids, the speed limits
/// a client set while they are turned off (the service keeps only the
/// limits in force).
pub struct Rpc {
    svc: Service,
    session_id: String,
    started: Instant,
    ids: Mutex<Ids>,
    /// kB/s shown by `session-get` for a limit that is off.
    idle_limits: Mutex<(u64, u64)>,
    /// `start-added-torrents`: RPC adds without `paused` start (true) or
    /// not (transmission-remote --start-paused / --no-start-paused).
    start_added: AtomicBool,
}

/// Small integer ids by info-hash, first come first numbered.
#[derive(Default)]
struct Ids {
    by_hash: HashMap<String, i64>,
    last: i64,
    /// Ids of torrents that left, and when they were seen gone.
    gone: Vec<(i64, Instant)>,
}

impl Ids {
    /// Numbers the torrents not seen before (in the order given) and
    /// notes the ones no longer there.
    fn sync(&mut self, hashes: &[&str], now: Instant) {
        for h in hashes {
            if !self.by_hash.contains_key(*h) {
                self.last += 1;
                self.by_hash.insert((*h).to_string(), self.last);
            }
        }
        let gone: Vec<(String, i64)> = self
            .by_hash
            .iter()
            .filter(|(h, _)| !hashes.contains(&h.as_str()))
            .map(|(h, id)| (h.clone(), *id))
            .collect();
        for (h, id) in gone {
            self.by_hash.remove(&h);
            self.gone.push((id, now));
        }
        self.gone.retain(|(_, at)| now.duration_since(*at) < RECENT);
    }

    fn id(&self, hash: &str) -> i64 {
        self.by_hash.get(hash).copied().unwrap_or(0)
    }
}

/// What a request's `ids` names.
#[derive(Debug, PartialEq)]
enum Which {
    All,
    RecentlyActive,
    These(Vec<Id>),
}

#[derive(Debug, PartialEq)]
enum Id {
    Num(i64),
    Hash(String),
}

/// Reads `ids`: absent (all), a number, a hash, "recently-active", or a
/// list of numbers and hashes.
fn which(args: &Map<String, Value>) -> Result<Which, String> {
    let one = |v: &Value| match v {
        Value::Number(n) => n.as_i64().map(Id::Num),
        Value::String(s) if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(Id::Hash(s.to_ascii_lowercase()))
        }
        // A number sent as a string, as some clients do.
        Value::String(s) => s.parse().ok().map(Id::Num),
        _ => None,
    };
    match args.get("ids") {
        None | Some(Value::Null) => Ok(Which::All),
        Some(Value::String(s)) if s == "recently-active" => Ok(Which::RecentlyActive),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| one(v).ok_or_else(|| format!("invalid id {v}")))
            .collect::<Result<_, _>>()
            .map(Which::These),
        Some(v) => one(v)
            .map(|i| Which::These(vec![i]))
            .ok_or_else(|| format!("invalid ids {v}")),
    }
}

/// The RPC's routes (`/transmission/rpc`, with or without the slash
/// transmission-remote adds), for `api::router` to mount.
pub fn router(svc: Service) -> Router {
    let rpc = Arc::new(Rpc {
        svc,
        session_id: (0..48)
            .map(|_| {
                let chars = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                chars[rand::random::<usize>() % chars.len()] as char
            })
            .collect(),
        started: Instant::now(),
        ids: Mutex::default(),
        idle_limits: Mutex::new((100, 100)),
        start_added: AtomicBool::new(true),
    });
    Router::new()
        .route("/transmission/rpc", post(handle).get(handle))
        .route("/transmission/rpc/", post(handle).get(handle))
        .with_state(rpc)
}

/// 409 with the session id: how Transmission hands it to a client.
fn conflict(id: &str) -> Response {
    let mut r = (
        StatusCode::CONFLICT,
        format!("<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p><p><code>X-Transmission-Session-Id: {id}</code></p>"),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r
}

async fn handle(State(rpc): State<Arc<Rpc>>, headers: HeaderMap, body: Bytes) -> Response {
    let sent = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    if sent != Some(rpc.session_id.as_str()) {
        return conflict(&rpc.session_id);
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"result": "the request is not a JSON object", "arguments": {}})),
            )
                .into_response()
        }
    };
    let method = req["method"].as_str().unwrap_or("").to_string();
    let args = req["arguments"].as_object().cloned().unwrap_or_default();
    let (result, arguments) = match rpc.call(&method, &args).await {
        Ok(a) => ("success".to_string(), a),
        Err(e) => (e, Map::new()),
    };
    let mut out = json!({"result": result, "arguments": arguments});
    if let Some(tag) = req.get("tag").filter(|t| t.is_number()) {
        out["tag"] = tag.clone();
    }
    Json(out).into_response()
}

type Answer = Result<Map<String, Value>, String>;
/// Torrents with their Transmission ids.
type Numbered = Vec<(i64, TorrentView)>;

fn to_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Rpc {
    async fn call(&self, method: &str, args: &Map<String, Value>) -> Answer {
        match method {
            "session-get" => {
                let mut all = self.session_get();
                // RPC 16: `fields` names the keys wanted; none, all.
                if let Some(want) = args.get("fields").and_then(Value::as_array) {
                    let want: Vec<&str> = want.iter().filter_map(Value::as_str).collect();
                    if !want.is_empty() {
                        all.retain(|k, _| want.contains(&k.as_str()));
                    }
                }
                Ok(all)
            }
            "session-set" => self.session_set(args),
            "session-stats" => Ok(self.session_stats()),
            "torrent-get" => self.torrent_get(args),
            "torrent-add" => self.torrent_add(args).await,
            "torrent-start" | "torrent-start-now" => {
                for h in self.hashes(args)? {
                    self.svc
                        .resume(&h, false)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(Map::new())
            }
            "torrent-stop" => {
                for h in self.hashes(args)? {
                    self.svc.pause(&h).await.map_err(|e| e.to_string())?;
                }
                Ok(Map::new())
            }
            "torrent-verify" => {
                for h in self.hashes(args)? {
                    self.svc.recheck(&h).await.map_err(|e| e.to_string())?;
                }
                Ok(Map::new())
            }
            "torrent-remove" => {
                let delete = args
                    .get("delete-local-data")
                    .is_some_and(|v| v.as_bool() == Some(true) || v.as_i64() == Some(1));
                for h in self.hashes(args)? {
                    self.svc
                        .remove(&h, delete)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(Map::new())
            }
            "torrent-set" => self.torrent_set(args).await,
            _ => Err("method not supported".into()),
        }
    }

    /// The service's torrents, numbered.
    fn numbered(&self) -> Numbered {
        let list = self.svc.list();
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let hashes: Vec<&str> = list.iter().map(|t| t.info_hash.as_str()).collect();
        ids.sync(&hashes, Instant::now());
        list.into_iter()
            .map(|t| (ids.id(&t.info_hash), t))
            .collect()
    }

    /// The torrents `ids` names (unknown ones are left out, as
    /// Transmission does), and for `recently-active` the ids gone lately.
    fn select(&self, args: &Map<String, Value>) -> Result<(Numbered, Vec<i64>), String> {
        let all = self.numbered();
        let w = which(args)?;
        let removed = match w {
            Which::RecentlyActive => {
                let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
                ids.gone.iter().map(|(id, _)| *id).collect()
            }
            _ => Vec::new(),
        };
        let chosen = all
            .into_iter()
            .filter(|(id, t)| match &w {
                Which::All => true,
                Which::RecentlyActive => {
                    t.down_rate + t.up_rate > 0
                        || matches!(t.state, "checking" | "metadata" | "downloading")
                }
                Which::These(list) => list.iter().any(|x| match x {
                    Id::Num(n) => n == id,
                    Id::Hash(h) => *h == t.info_hash,
                }),
            })
            .collect();
        Ok((chosen, removed))
    }

    fn hashes(&self, args: &Map<String, Value>) -> Result<Vec<String>, String> {
        Ok(self
            .select(args)?
            .0
            .into_iter()
            .map(|(_, t)| t.info_hash)
            .collect())
    }

    fn torrent_get(&self, args: &Map<String, Value>) -> Answer {
        let names: Vec<String> = args
            .get("fields")
            .and_then(Value::as_array)
            .map(|f| {
                f.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            return Err("no fields specified".into());
        }
        let (chosen, removed) = self.select(args)?;
        let detail = names.iter().any(|f| fields::needs_detail(f));
        let peers = names.iter().any(|f| fields::needs_peers(f));
        let now = crate::service::now_secs();
        // "table": the field names, then one list of values per torrent.
        let table = args.get("format").and_then(Value::as_str) == Some("table");
        let mut torrents = Vec::new();
        if table {
            torrents.push(json!(names));
        }
        for (id, view) in &chosen {
            let d = detail
                .then(|| self.svc.detail(&view.info_hash).ok())
                .flatten();
            let meta = self.svc.metainfo(&view.info_hash).ok().flatten();
            let p = peers
                .then(|| self.svc.peers(&view.info_hash).ok())
                .flatten()
                .unwrap_or_default();
            let src = fields::Source {
                id: *id,
                view,
                detail: d.as_ref(),
                meta: meta.as_deref(),
                peers: &p,
                seed_ratio: self.svc.config().options.seed_ratio,
                now,
            };
            torrents.push(if table {
                fields::row(&src, &names)
            } else {
                fields::object(&src, &names)
            });
        }
        let mut out = Map::new();
        out.insert("torrents".into(), Value::Array(torrents));
        if which(args)? == Which::RecentlyActive {
            out.insert("removed".into(), json!(removed));
        }
        Ok(out)
    }

    async fn torrent_add(&self, args: &Map<String, Value>) -> Answer {
        let source = match (args.get("metainfo"), args.get("filename")) {
            (Some(Value::String(b64)), _) => {
                let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = data_encoding::BASE64
                    .decode(clean.as_bytes())
                    .map_err(|e| format!("metainfo is not base64: {e}"))?;
                AddSource::Torrent(bytes)
            }
            (_, Some(Value::String(f))) if f.trim().to_ascii_lowercase().starts_with("magnet:") => {
                AddSource::Magnet(f.trim().to_string())
            }
            (_, Some(Value::String(f)))
                if f.starts_with("http://") || f.starts_with("https://") =>
            {
                AddSource::Url(f.clone())
            }
            (_, Some(Value::String(_))) => {
                return Err(
                    "filename must be a magnet link or an http(s) URL; send a .torrent as metainfo"
                        .into(),
                )
            }
            _ => return Err("no filename or metainfo specified".into()),
        };
        // Applied once added: the file count is not known before.
        let unwanted: Vec<usize> = index_list(args.get("files-unwanted"));
        let req = AddRequest {
            source,
            download_dir: args
                .get("download-dir")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .map(String::from),
            only: None,
            paused: match args.get("paused") {
                Some(v) => v.as_bool() == Some(true) || v.as_i64() == Some(1),
                None => !self.start_added.load(Ordering::Relaxed),
            },
            stop_after_metadata: false,
            overwrite: false,
            // Transmission 4's labels: the first is the category.
            category: args
                .get("labels")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .and_then(Value::as_str)
                .map(String::from),
        };
        let (key, hash) = match self.svc.add(req).await {
            Ok(h) => ("torrent-added", h),
            Err(ServiceError::Duplicate(h)) => ("torrent-duplicate", h),
            Err(e) => return Err(e.to_string()),
        };
        if key == "torrent-added" && !unwanted.is_empty() {
            let changes: Vec<(usize, Priority)> =
                unwanted.iter().map(|&i| (i, Priority::Skip)).collect();
            if let Err(e) = self.svc.set_priorities(&hash, &changes).await {
                tracing::info!("torrent-add {hash}: files-unwanted: {e}");
            }
        }
        let all = self.numbered();
        let (id, view) = all
            .iter()
            .find(|(_, t)| t.info_hash == hash)
            .ok_or_else(|| format!("torrent {hash} went away"))?;
        let mut out = Map::new();
        out.insert(
            key.into(),
            json!({"id": id, "hashString": hash, "name": view.name}),
        );
        Ok(out)
    }

    async fn torrent_set(&self, args: &Map<String, Value>) -> Answer {
        for hash in self.hashes(args)? {
            let files = self.svc.detail(&hash).map_err(|e| e.to_string())?.files;
            let now: Vec<Priority> = files.iter().map(|f| f.priority).collect();
            let wanted = |key: &str| -> Option<Vec<usize>> {
                let v = args.get(key)?;
                let list = index_list(Some(v));
                // An empty list means every file (rpc-spec).
                Some(if list.is_empty() {
                    (0..now.len()).collect()
                } else {
                    list
                })
            };
            let new = file_priorities(
                &now,
                &wanted("files-wanted").unwrap_or_default(),
                &wanted("files-unwanted").unwrap_or_default(),
                &wanted("priority-high").unwrap_or_default(),
                &[
                    wanted("priority-normal").unwrap_or_default(),
                    wanted("priority-low").unwrap_or_default(),
                ]
                .concat(),
            );
            let changes: Vec<(usize, Priority)> = new
                .iter()
                .enumerate()
                .filter(|(i, p)| now.get(*i) != Some(p))
                .map(|(i, p)| (i, *p))
                .collect();
            if !changes.is_empty() {
                self.svc
                    .set_priorities(&hash, &changes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(Map::new())
    }

    fn session_get(&self) -> Map<String, Value> {
        let session = self.svc.session();
        let idle = *self.idle_limits.lock().unwrap_or_else(|p| p.into_inner());
        let (down, up) = (
            session.download_limit().rate(),
            session.upload_limit().rate(),
        );
        let cfg = self.svc.config();
        let mut out = to_map(json!({
            "version": format!("3.00 (shoal {})", env!("CARGO_PKG_VERSION")),
            "rpc-version": RPC_VERSION,
            "rpc-version-minimum": 1,
            "session-id": self.session_id,
            "config-dir": cfg.state_dir.display().to_string(),
            "download-dir": self.svc.download_root().display().to_string(),
            "peer-port": session.port(),
            "peer-port-random-on-start": false,
            "port-forwarding-enabled": false,
            "utp-enabled": false,
            "dht-enabled": session.dht().is_some(),
            "lpd-enabled": false,
            "pex-enabled": cfg.options.pex,
            "encryption": match session.encryption() {
                crate::peer::mse::Policy::Require => "required",
                crate::peer::mse::Policy::Prefer => "preferred",
                _ => "tolerated",
            },
            "cache-size-mb": 0,
        }));
        out.extend(to_map(json!({
            "peer-limit-global": 500,
            "peer-limit-per-torrent": cfg.options.max_peers,
            "speed-limit-down": down.map_or(idle.0, |r| r / SPEED_UNIT),
            "speed-limit-down-enabled": down.is_some(),
            "speed-limit-up": up.map_or(idle.1, |r| r / SPEED_UNIT),
            "speed-limit-up-enabled": up.is_some(),
        })));
        out.extend(to_map(json!({
            "alt-speed-down": 50,
            "alt-speed-up": 50,
            "alt-speed-enabled": false,
            "alt-speed-time-enabled": false,
            "alt-speed-time-begin": 540,
            "alt-speed-time-end": 1020,
            "alt-speed-time-day": 127,
            "seedRatioLimit": cfg.options.seed_ratio.unwrap_or(2.0),
            "seedRatioLimited": cfg.options.seed_ratio.is_some(),
            "idle-seeding-limit": cfg.options.seed_time.map_or(30, |t| t.as_secs() / 60),
            "idle-seeding-limit-enabled": false,
            "start-added-torrents": self.start_added.load(Ordering::Relaxed),
            "trash-original-torrent-files": false,
            "rename-partial-files": false,
            "incomplete-dir-enabled": false,
            "download-queue-enabled": false,
            "download-queue-size": 0,
            "seed-queue-enabled": false,
            "seed-queue-size": 0,
            "queue-stalled-enabled": false,
            "blocklist-enabled": false,
            "blocklist-size": 0,
            "script-torrent-done-enabled": false,
            "units": {
                "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"], "speed-bytes": SPEED_UNIT,
                "size-units": ["kB", "MB", "GB", "TB"], "size-bytes": 1000,
                "memory-units": ["KiB", "MiB", "GiB", "TiB"], "memory-bytes": 1024,
            },
        })));
        out
    }

    /// Speed limits: applied to the service's global limits. Other keys
    /// are accepted and ignored (docs/api.md lists them).
    fn session_set(&self, args: &Map<String, Value>) -> Answer {
        let session = self.svc.session();
        let mut guard = self.idle_limits.lock().unwrap_or_else(|p| p.into_inner());
        let (idle_down, idle_up) = &mut *guard;
        for (limit, value_key, on_key, idle_kb) in [
            (
                session.download_limit(),
                "speed-limit-down",
                "speed-limit-down-enabled",
                idle_down,
            ),
            (
                session.upload_limit(),
                "speed-limit-up",
                "speed-limit-up-enabled",
                idle_up,
            ),
        ] {
            let value = match args.get(value_key) {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64))
                        .ok_or_else(|| format!("{value_key} must be a number of kB/s"))?,
                ),
            };
            let on = match args.get(on_key) {
                None => None,
                Some(v) => Some(
                    v.as_bool()
                        .or(v.as_i64().map(|i| i != 0))
                        .ok_or_else(|| format!("{on_key} must be true or false"))?,
                ),
            };
            let kb = value.unwrap_or_else(|| limit.rate().map_or(*idle_kb, |r| r / SPEED_UNIT));
            if value.is_some() {
                *idle_kb = kb;
            }
            let enabled = on.unwrap_or(limit.rate().is_some());
            if value.is_some() || on.is_some() {
                // 0 kB/s enabled would stop all traffic; shoal has no such
                // limit, so it is taken as the smallest one, 1 kB/s.
                limit.set(enabled.then_some(kb.max(1) * SPEED_UNIT));
            }
        }
        if let Some(v) = args.get("start-added-torrents") {
            let on = v
                .as_bool()
                .ok_or("start-added-torrents must be true or false")?;
            self.start_added.store(on, Ordering::Relaxed);
        }
        let ignored: Vec<&str> = args
            .keys()
            .map(String::as_str)
            .filter(|k| !k.starts_with("speed-limit-") && *k != "start-added-torrents")
            .collect();
        if !ignored.is_empty() {
            tracing::debug!("session-set: ignored {ignored:?}");
        }
        Ok(Map::new())
    }

    fn session_stats(&self) -> Map<String, Value> {
        let list = self.svc.list();
        let paused = list.iter().filter(|t| t.state == "paused").count();
        let active = list.iter().filter(|t| t.down_rate + t.up_rate > 0).count();
        let sum = |f: fn(&TorrentView) -> u64| list.iter().map(f).sum::<u64>();
        let stats = json!({
            "uploadedBytes": sum(|t| t.uploaded),
            "downloadedBytes": sum(|t| t.downloaded),
            "filesAdded": list.len(),
            "sessionCount": 1,
            "secondsActive": self.started.elapsed().as_secs(),
        });
        to_map(json!({
            "activeTorrentCount": active,
            "pausedTorrentCount": paused,
            "torrentCount": list.len(),
            "downloadSpeed": sum(|t| t.down_rate),
            "uploadSpeed": sum(|t| t.up_rate),
            "cumulative-stats": stats,
            "current-stats": stats,
        }))
    }
}

/// File indices from a JSON list (bad entries are left out).
fn index_list(v: Option<&Value>) -> Vec<usize> {
    v.and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as usize)
                .collect()
        })
        .unwrap_or_default()
}

/// Transmission's wanted flag and priority of each file folded into
/// shoal's one priority: unwanted is skip; a wanted file keeps high unless
/// set lower; low is normal (shoal has no low).
fn file_priorities(
    now: &[Priority],
    wanted: &[usize],
    unwanted: &[usize],
    high: &[usize],
    lower: &[usize],
) -> Vec<Priority> {
    let mut p = now.to_vec();
    for &i in wanted {
        if let Some(x) = p.get_mut(i) {
            if *x == Priority::Skip {
                *x = Priority::Normal;
            }
        }
    }
    for &i in unwanted {
        if let Some(x) = p.get_mut(i) {
            *x = Priority::Skip;
        }
    }
    for &i in high {
        if let Some(x) = p.get_mut(i).filter(|x| **x != Priority::Skip) {
            *x = Priority::High;
        }
    }
    for &i in lower {
        if let Some(x) = p.get_mut(i).filter(|x| **x == Priority::High) {
            *x = Priority::Normal;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_never_reused() {
        let mut ids = Ids::default();
        let t0 = Instant::now();
        ids.sync(&["a", "b"], t0);
        assert_eq!((ids.id("a"), ids.id("b")), (1, 2));
        ids.sync(&["b", "c"], t0);
        assert_eq!((ids.id("b"), ids.id("c"), ids.id("a")), (2, 3, 0));
        assert_eq!(ids.gone.iter().map(|g| g.0).collect::<Vec<_>>(), [1]);
        ids.sync(&["b", "c", "a"], t0 + RECENT);
        assert_eq!(ids.id("a"), 4, "a torrent added again gets a new id");
        assert!(ids.gone.is_empty(), "forgotten after {RECENT:?}");
    }

    #[test]
    fn ids_argument() {
        let args = |v: Value| to_map(json!({ "ids": v }));
        assert_eq!(which(&Map::new()), Ok(Which::All));
        assert_eq!(which(&args(json!(3))), Ok(Which::These(vec![Id::Num(3)])));
        let h = "AB".repeat(20);
        assert_eq!(
            which(&args(json!([1, h]))),
            Ok(Which::These(vec![Id::Num(1), Id::Hash("ab".repeat(20))]))
        );
        assert_eq!(
            which(&args(json!("recently-active"))),
            Ok(Which::RecentlyActive)
        );
        assert!(which(&args(json!({"x": 1}))).is_err());
        assert!(which(&args(json!(["nonsense"]))).is_err());
    }

    #[test]
    fn wanted_and_priorities_fold_into_one() {
        use Priority::*;
        let now = [Normal, Skip, High, Normal];
        assert_eq!(
            file_priorities(&now, &[1], &[3], &[1, 3], &[2]),
            [Normal, High, Normal, Skip]
        );
        assert_eq!(file_priorities(&now, &[], &[], &[9], &[]), now);
    }
}
