//! A subset of the qBittorrent Web API v2 under `/api/v2/` (docs/api.md
//! lists it), for the programs that drive qBittorrent (Sonarr, Radarr,
//! phone remotes). Every endpoint maps onto the `Service`'s methods; the
//! wire details (forms, multipart, state names, filters) are in `wire`.
//!
//! Login: `auth/login` takes any username and the service's token as the
//! password, and sets a `SID` cookie the API's guard accepts on
//! `/api/v2/` requests. Without a token (loopback) everything is open, as
//! qBittorrent's "bypass authentication for localhost".

pub mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::api::AppState;
use super::{AddRequest, AddSource, Service, ServiceError, TorrentView};

/// What `app/version` and `app/webapiVersion` answer: the 4.6 API, with
/// `stop`/`start` (5.0's names) answered as well.
const APP_VERSION: &str = "v4.6.7";
const WEBAPI_VERSION: &str = "2.9.3";
/// Logged-in sessions kept at most (the oldest go first).
const MAX_SIDS: usize = 1024;
pub const SID_COOKIE: &str = "SID";

/// The SIDs handed out by `auth/login`.
#[derive(Default)]
pub struct Sids(Mutex<HashMap<String, Instant>>);

impl Sids {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self) -> String {
        let sid = hex::encode(rand::random::<[u8; 16]>());
        let mut sids = self.lock();
        if sids.len() >= MAX_SIDS {
            if let Some(old) = sids.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                sids.remove(&old);
            }
        }
        sids.insert(sid.clone(), Instant::now());
        sid
    }

    /// The request's SID cookie: None without one, else whether it is ours.
    pub fn check(&self, headers: &HeaderMap) -> Option<bool> {
        let sid = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == SID_COOKIE)
            .map(|(_, v)| v.to_string())?;
        let mut sids = self.lock();
        Some(match sids.get_mut(&sid) {
            Some(t) => {
                *t = Instant::now();
                true
            }
            None => false,
        })
    }

    fn forget(&self, headers: &HeaderMap) {
        let cookies: Vec<String> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().strip_prefix("SID="))
            .map(str::to_string)
            .collect();
        let mut sids = self.lock();
        for c in cookies {
            sids.remove(&c);
        }
    }
}

type St = State<Arc<AppState>>;

/// The routes, to nest under `/api/v2`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/app/version", get(|| async { text(APP_VERSION) }))
        .route("/app/webapiVersion", get(|| async { text(WEBAPI_VERSION) }))
        .route("/app/preferences", get(preferences))
        .route("/app/defaultSavePath", get(default_save_path))
        .route("/torrents/info", get(info).post(info))
        .route("/torrents/add", post(add))
        .route("/torrents/properties", get(properties).post(properties))
        .route("/torrents/files", get(files).post(files))
        .route("/torrents/trackers", get(trackers).post(trackers))
        .route("/torrents/pause", post(pause))
        .route("/torrents/stop", post(pause))
        .route("/torrents/resume", post(resume))
        .route("/torrents/start", post(resume))
        .route("/torrents/delete", post(delete))
        .route("/torrents/recheck", post(recheck))
        .route("/torrents/categories", get(categories))
        .route("/torrents/createCategory", post(create_category))
        .route("/torrents/editCategory", post(edit_category))
        .route("/torrents/removeCategories", post(remove_categories))
        .route("/torrents/setCategory", post(set_category))
        .route("/transfer/info", get(transfer_info))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found").into_response() })
}

fn text(s: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        s.to_string(),
    )
        .into_response()
}

fn json_response(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// A failure as qBittorrent answers it: a status and a line of text.
fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        msg.into(),
    )
        .into_response()
}

fn service_fail(e: ServiceError) -> Response {
    let status = match &e {
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Duplicate(_) => StatusCode::CONFLICT,
        ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    fail(status, e.to_string())
}

/// The request's fields: its query string and a form body, merged.
fn params(req_query: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let mut p = wire::form(req_query.unwrap_or("").as_bytes());
    if !body.is_empty() {
        p.extend(wire::form(body));
    }
    p
}

async fn fields(req: Request) -> HashMap<String, String> {
    let query = req.uri().query().map(str::to_string);
    let body = axum::body::to_bytes(req.into_body(), super::http::SMALL_BODY)
        .await
        .unwrap_or_default();
    params(query.as_deref(), &body)
}

fn flag(p: &HashMap<String, String>, key: &str) -> bool {
    p.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The torrents a `hashes` field names (`h1|h2`, or `all`).
fn hashes(svc: &Service, p: &HashMap<String, String>) -> Vec<String> {
    let Some(h) = p.get("hashes").or_else(|| p.get("hash")) else {
        return Vec::new();
    };
    if h.trim() == "all" {
        return svc.list().into_iter().map(|t| t.info_hash).collect();
    }
    h.split('|')
        .map(|x| x.trim().to_ascii_lowercase())
        .filter(|x| !x.is_empty())
        .collect()
}

async fn login(State(st): St, req: Request) -> Response {
    let ip = super::http::peer_of(&req).map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let p = fields(req).await;
    let password = p.get("password").map(String::as_str).unwrap_or("");
    let ok = match &st.token {
        None => true,
        Some(want) => !password.is_empty() && super::api::constant_eq(password, want),
    };
    if !ok {
        st.attempts.failed(ip, Instant::now());
        return text("Fails.");
    }
    let sid = st.qbit.issue();
    let cookie = format!("{SID_COOKIE}={sid}; HttpOnly; SameSite=Strict; path=/");
    let mut r = text("Ok.");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(st): St, headers: HeaderMap) -> Response {
    st.qbit.forget(&headers);
    StatusCode::OK.into_response()
}

async fn preferences(State(st): St) -> Response {
    let s = st.svc.session();
    let limit = |r: Option<u64>| r.unwrap_or(0);
    json_response(json!({
        "save_path": st.svc.download_root().display().to_string(),
        "temp_path_enabled": false,
        "temp_path": "",
        "dl_limit": limit(s.download_limit().rate()),
        "up_limit": limit(s.upload_limit().rate()),
        "listen_port": s.port(),
        "dht": s.dht().is_some(),
        "pex": st.svc.inner.cfg.options.pex,
        "queueing_enabled": false,
        "max_ratio_enabled": st.svc.inner.cfg.options.seed_ratio.is_some(),
        "max_ratio": st.svc.inner.cfg.options.seed_ratio.unwrap_or(-1.0),
        "max_seeding_time_enabled": st.svc.inner.cfg.options.seed_time.is_some(),
        "max_seeding_time": st.svc.inner.cfg.options.seed_time.map_or(-1, |t| (t.as_secs() / 60) as i64),
        "max_ratio_act": 0,
        "start_paused_enabled": false,
        "create_subfolder_enabled": true,
        "auto_tmm_enabled": false,
        "web_ui_address": "",
        "bypass_local_auth": st.token.is_none(),
    }))
}

async fn default_save_path(State(st): St) -> Response {
    st.svc.download_root().display().to_string().into_response()
}

/// One `torrents/info` row.
fn info_row(t: &TorrentView) -> Value {
    let ratio = if t.downloaded > 0 {
        t.uploaded as f64 / t.downloaded as f64
    } else if t.total > 0 {
        t.uploaded as f64 / t.total as f64
    } else {
        0.0
    };
    let path = std::path::Path::new(&t.download_dir).join(&t.name);
    let mut row = json!({
        "hash": t.info_hash,
        "infohash_v1": t.info_hash,
        "infohash_v2": "",
        "name": t.name,
        "size": t.total,
        "total_size": t.total,
        "progress": t.progress,
        "dlspeed": t.down_rate,
        "upspeed": t.up_rate,
        "priority": 0,
        "num_seeds": 0,
        "num_leechs": t.peers,
        "num_complete": -1,
        "num_incomplete": -1,
        "ratio": ratio,
        "eta": t.eta.unwrap_or(wire::ETA_NONE),
        "state": wire::state(t),
        "category": t.category.clone().unwrap_or_default(),
        "tags": "",
        "save_path": t.download_dir,
        "content_path": path.display().to_string(),
        "download_path": "",
        "added_on": t.added,
        "completion_on": -1,
        "amount_left": t.total.saturating_sub(t.have_bytes),
        "completed": t.have_bytes,
        "downloaded": t.downloaded,
        "uploaded": t.uploaded,
    });
    // Two halves: one json! of them all is past the macro's recursion limit.
    let rest = json!({
        "downloaded_session": 0,
        "uploaded_session": 0,
        "dl_limit": 0,
        "up_limit": 0,
        "seq_dl": false,
        "f_l_piece_prio": false,
        "super_seeding": false,
        "force_start": false,
        "auto_tmm": false,
        "max_ratio": -1,
        "max_seeding_time": -1,
        "ratio_limit": -2,
        "seeding_time_limit": -2,
        "availability": -1,
        "tracker": "",
        "magnet_uri": t.magnet,
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut row, rest) {
        a.extend(b);
    }
    row
}

async fn info(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let filter = p.get("filter").map(String::as_str).unwrap_or("all");
    let wanted: Option<Vec<String>> = p.contains_key("hashes").then(|| hashes(&st.svc, &p));
    let category = p.get("category");
    let mut rows: Vec<Value> = st
        .svc
        .list()
        .iter()
        .filter(|t| wire::passes(filter, wire::state(t)).unwrap_or(true))
        .filter(|t| wanted.as_ref().is_none_or(|w| w.contains(&t.info_hash)))
        // "" is the torrents without a category.
        .filter(|t| category.is_none_or(|c| t.category.as_deref().unwrap_or("") == c))
        .map(info_row)
        .collect();
    let num = |k: &str| p.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    wire::sort_and_page(
        &mut rows,
        p.get("sort").map(String::as_str),
        flag(&p, "reverse"),
        num("offset"),
        num("limit"),
    );
    json_response(Value::Array(rows))
}

/// Adds what one `torrents/add` item names; Err for its failure.
async fn add_one(svc: &Service, source: AddSource, p: &HashMap<String, String>) -> bool {
    let req = AddRequest {
        source,
        download_dir: p.get("savepath").filter(|s| !s.trim().is_empty()).cloned(),
        only: None,
        paused: flag(p, "paused") || flag(p, "stopped"),
        // qBittorrent's stop condition: paused once the files are known.
        stop_after_metadata: p.get("stopCondition").map(String::as_str) == Some("MetadataReceived"),
        overwrite: false,
        category: p.get("category").filter(|c| !c.is_empty()).cloned(),
    };
    match svc.add(req).await {
        Ok(_) => true,
        Err(e) => {
            tracing::info!("qBittorrent API add: {e}");
            false
        }
    }
}

/// `torrents/add`: `urls` (one a line: http(s) or magnet) and `torrents`
/// files, multipart or (urls only) a form. `skip_checking` is taken but
/// the data is checked anyway (quick; nothing verified is fetched again).
async fn add(State(st): St, headers: HeaderMap, body: Bytes) -> Response {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (p, files) = match wire::boundary(kind) {
        Some(b) => match wire::multipart(&b, &body) {
            Ok(parts) => {
                let mut p = HashMap::new();
                let mut files = Vec::new();
                for part in parts {
                    // Every uploaded file is a torrent, whatever its field
                    // is called, as qBittorrent takes them (clients name
                    // the field after the file).
                    if part.name == "torrents" || part.filename.is_some() {
                        files.push(part.data);
                    } else {
                        p.insert(part.name, String::from_utf8_lossy(&part.data).into_owned());
                    }
                }
                (p, files)
            }
            Err(e) => return fail(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}")),
        },
        None => (wire::form(&body), Vec::new()),
    };
    let urls: Vec<String> = p
        .get("urls")
        .map(|u| {
            u.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if urls.is_empty() && files.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "Fails.");
    }
    let mut added = 0;
    for u in urls {
        added += usize::from(add_one(&st.svc, AddSource::Url(u), &p).await);
    }
    for f in files {
        added += usize::from(add_one(&st.svc, AddSource::Torrent(f), &p).await);
    }
    text(if added > 0 { "Ok." } else { "Fails." })
}

fn one_hash(p: &HashMap<String, String>) -> Option<String> {
    p.get("hash")
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

fn missing_hash() -> Response {
    fail(StatusCode::BAD_REQUEST, "Missing hash")
}

async fn properties(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let Some(h) = one_hash(&p) else {
        return missing_hash();
    };
    let d = match st.svc.detail(&h) {
        Ok(d) => d,
        Err(_) => return fail(StatusCode::NOT_FOUND, "Not Found"),
    };
    let t = &d.torrent;
    let piece_size = st.svc.stream_file(&h, 0).map_or(0, |f| f.meta.piece_length);
    let seeds = st
        .svc
        .peers(&h)
        .map_or(0, |l| l.iter().filter(|p| p.progress >= 1.0).count());
    json_response(json!({
        "save_path": t.download_dir,
        "creation_date": -1,
        "piece_size": piece_size,
        "comment": "",
        "total_wasted": 0,
        "total_uploaded": t.uploaded,
        "total_uploaded_session": 0,
        "total_downloaded": t.downloaded,
        "total_downloaded_session": 0,
        "up_limit": -1,
        "dl_limit": -1,
        "time_elapsed": 0,
        "seeding_time": 0,
        "nb_connections": t.peers,
        "nb_connections_limit": st.svc.inner.cfg.options.max_peers,
        "share_ratio": info_row(t)["ratio"],
        "addition_date": t.added,
        "completion_date": -1,
        "created_by": "",
        "dl_speed_avg": 0,
        "dl_speed": t.down_rate,
        "eta": t.eta.unwrap_or(wire::ETA_NONE),
        "last_seen": -1,
        "peers": t.peers.saturating_sub(seeds),
        "peers_total": t.known_peers,
        "pieces_have": (t.progress * d.piece_count as f64).floor() as u64,
        "pieces_num": d.piece_count,
        "reannounce": 0,
        "seeds": seeds,
        "seeds_total": 0,
        "total_size": t.total,
        "up_speed_avg": 0,
        "up_speed": t.up_rate,
        "isPrivate": false,
    }))
}

async fn files(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let Some(h) = one_hash(&p) else {
        return missing_hash();
    };
    let d = match st.svc.detail(&h) {
        Ok(d) => d,
        Err(_) => return fail(StatusCode::NOT_FOUND, "Not Found"),
    };
    let rows: Vec<Value> = d
        .files
        .iter()
        .map(|f| {
            let range = st.svc.stream_file(&h, f.index).map_or([0, 0], |s| {
                let pl = s.meta.piece_length.max(1);
                [s.offset / pl, (s.offset + s.length.max(1) - 1) / pl]
            });
            let progress = if f.length == 0 {
                1.0
            } else {
                f.done as f64 / f.length as f64
            };
            json!({
                "index": f.index,
                "name": f.path,
                "size": f.length,
                "progress": progress,
                "priority": wire::file_priority(f.priority),
                "is_seed": progress >= 1.0,
                "piece_range": range,
                "availability": -1,
            })
        })
        .collect();
    json_response(Value::Array(rows))
}

async fn trackers(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let Some(h) = one_hash(&p) else {
        return missing_hash();
    };
    let d = match st.svc.detail(&h) {
        Ok(d) => d,
        Err(_) => return fail(StatusCode::NOT_FOUND, "Not Found"),
    };
    let n = |x: Option<u32>| x.map_or(-1, i64::from);
    let rows: Vec<Value> = d
        .tracker_status
        .iter()
        .map(|t| {
            json!({
                "url": t.url,
                "status": wire::tracker_status(t.status),
                "tier": t.tier,
                "num_peers": t.peers.map_or(-1, |p| p as i64),
                "num_seeds": n(t.seeders),
                "num_leeches": n(t.leechers),
                "num_downloaded": -1,
                "msg": t.error.clone().unwrap_or_default(),
            })
        })
        .collect();
    json_response(Value::Array(rows))
}

async fn pause(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    for h in hashes(&st.svc, &p) {
        // Unknown hashes are passed over, as qBittorrent does.
        let _ = st.svc.pause(&h).await;
    }
    StatusCode::OK.into_response()
}

async fn resume(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    for h in hashes(&st.svc, &p) {
        let _ = st.svc.resume(&h, false).await;
    }
    StatusCode::OK.into_response()
}

async fn recheck(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    for h in hashes(&st.svc, &p) {
        let _ = st.svc.recheck(&h).await;
    }
    StatusCode::OK.into_response()
}

async fn delete(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let data = flag(&p, "deleteFiles");
    for h in hashes(&st.svc, &p) {
        if let Err(e) = st.svc.remove(&h, data).await {
            tracing::info!("qBittorrent API delete {h}: {e}");
        }
    }
    StatusCode::OK.into_response()
}

async fn categories(State(st): St) -> Response {
    let all: serde_json::Map<String, Value> = st
        .svc
        .categories()
        .into_iter()
        .map(|(name, c)| {
            let v = json!({ "name": name, "savePath": c.save_path });
            (name, v)
        })
        .collect();
    json_response(Value::Object(all))
}

async fn category_change(st: &AppState, req: Request, edit: bool) -> Response {
    let p = fields(req).await;
    let name = p.get("category").map(String::as_str).unwrap_or("");
    if name.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "Category name is empty");
    }
    let save = p.get("savePath").map(String::as_str).unwrap_or("");
    match st.svc.create_category(name, save, edit) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(ServiceError::Invalid(m)) => fail(StatusCode::CONFLICT, m),
        Err(ServiceError::NotFound(m)) => fail(StatusCode::CONFLICT, m),
        Err(e) => service_fail(e),
    }
}

async fn create_category(State(st): St, req: Request) -> Response {
    category_change(&st, req, false).await
}

async fn edit_category(State(st): St, req: Request) -> Response {
    category_change(&st, req, true).await
}

async fn remove_categories(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let names: Vec<&str> = p
        .get("categories")
        .map(|c| c.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default();
    match st.svc.remove_categories(&names) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => service_fail(e),
    }
}

async fn set_category(State(st): St, req: Request) -> Response {
    let p = fields(req).await;
    let category = p.get("category").map(String::as_str).unwrap_or("");
    if !category.is_empty() && !st.svc.categories().contains_key(category) {
        return fail(StatusCode::CONFLICT, "Category does not exist");
    }
    for h in hashes(&st.svc, &p) {
        let _ = st.svc.set_category(&h, category);
    }
    StatusCode::OK.into_response()
}

async fn transfer_info(State(st): St) -> Response {
    let list = st.svc.list();
    let sum = |f: fn(&TorrentView) -> u64| list.iter().map(f).sum::<u64>();
    let s = st.svc.session();
    json_response(json!({
        "dl_info_speed": sum(|t| t.down_rate),
        "dl_info_data": sum(|t| t.downloaded),
        "up_info_speed": sum(|t| t.up_rate),
        "up_info_data": sum(|t| t.uploaded),
        "dl_rate_limit": s.download_limit().rate().unwrap_or(0),
        "up_rate_limit": s.upload_limit().rate().unwrap_or(0),
        "dht_nodes": 0,
        "connection_status": "connected",
    }))
}
