//! The HTTP API and web page of `shoal serve` (docs/api.md): JSON over
//! HTTP on top of `service`, with server-sent events for live updates.
//!
//! Every request passes one guard first: the Host header must name this
//! service (against DNS rebinding), an Origin header must be its own
//! (against other pages' requests; no CORS headers are ever sent), and
//! with a token configured `/api` needs it; a source that sends too many
//! wrong tokens waits (`http::Attempts`). Then its body is read whole,
//! under deadlines (`http::read_body`), before a handler runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::service::http::{self, Attempts, Uploads};
use crate::service::qbit;
use crate::service::stream::{self, RangeAsk};
use crate::service::{AddRequest, AddSource, Priority, Service, ServiceError, ServiceEvent};

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const TABLE_JS: &str = include_str!("../web/table.js");
const DIALOGS_JS: &str = include_str!("../web/dialogs.js");
const STYLE_CSS: &str = include_str!("../web/style.css");
const FAVICON: &str = include_str!("../web/favicon.svg");
const COOKIE: &str = "shoal_token";

pub struct ApiConfig {
    /// Required on every `/api` request when set.
    pub token: Option<String>,
    /// Host names besides IP addresses and localhost (`--allow-host`).
    pub allowed_hosts: Vec<String>,
    /// The address the API listens on: its port is the one Hosts must name.
    pub listen: SocketAddr,
}

pub(super) struct AppState {
    pub(super) svc: Service,
    pub(super) token: Option<String>,
    hosts: Vec<String>,
    port: u16,
    pub(super) attempts: Attempts,
    /// Sessions of the qBittorrent API's login (`qbit`).
    pub(super) qbit: qbit::Sids,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Duplicate(h) => {
                let body = json!({ "error": self.to_string(), "info_hash": h });
                return (StatusCode::CONFLICT, Json(body)).into_response();
            }
            ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServiceError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

/// The API and the page, ready for `axum::serve`.
pub fn router(svc: Service, cfg: ApiConfig) -> Router {
    let rpc = crate::service::transmission::router(svc.clone());
    let state = Arc::new(AppState {
        svc,
        token: cfg.token,
        hosts: cfg
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        port: cfg.listen.port(),
        attempts: Attempts::default(),
        qbit: qbit::Sids::default(),
    });
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/table.js",
            get(|| async { page(TABLE_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dialogs.js",
            get(|| async { page(DIALOGS_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        // Browsers ask for /favicon.ico on their own; the page names the SVG.
        .route(
            "/favicon.svg",
            get(|| async { page(FAVICON, "image/svg+xml") }),
        )
        .route(
            "/favicon.ico",
            get(|| async { page(FAVICON, "image/svg+xml") }),
        )
        .route("/api/torrents", get(list).post(add))
        .route("/api/torrents/{hash}", get(detail).delete(remove))
        .route("/api/torrents/{hash}/peers", get(peers))
        .route("/api/torrents/{hash}/pieces", get(pieces))
        .route("/api/torrents/{hash}/pause", post(pause))
        .route("/api/torrents/{hash}/resume", post(resume))
        .route("/api/torrents/{hash}/recheck", post(recheck))
        .route("/api/torrents/{hash}/files", post(set_files))
        .route("/api/torrents/{hash}/files/{index}/stream", get(stream))
        .route("/api/limits", get(get_limits).put(put_limits))
        .route("/api/categories", get(categories))
        .route("/api/network", get(network))
        .route("/api/events", get(events))
        .route("/api/login", post(login))
        .route("/metrics", get(metrics))
        .route_service("/transmission/rpc", rpc.clone())
        .route_service("/transmission/rpc/", rpc)
        .nest("/api/v2", qbit::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(crate::service::MAX_TORRENT_SIZE))
        .layer(middleware::from_fn_with_state(
            Arc::new(Uploads::default()),
            http::read_body,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// Whether `host` (a Host header) names this service: an IP address or
/// localhost with our port, or a name given with `--allow-host`.
fn host_allowed(host: &str, port: u16, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let (name, p) = match host.strip_prefix('[').and_then(|h| h.split_once(']')) {
        Some((v6, rest)) => (v6, rest.strip_prefix(':')),
        None => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host.as_str(), None),
        },
    };
    if allowed.iter().any(|a| *a == host || *a == name) {
        return true;
    }
    if p != Some(port.to_string().as_str()) {
        return false;
    }
    name == "localhost" || name.parse::<IpAddr>().is_ok()
}

pub(super) fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
        // Basic auth (Transmission clients, Prometheus): the password is
        // the token, the user name is not looked at.
        if let Some(b64) = v.strip_prefix("Basic ") {
            let raw = data_encoding::BASE64.decode(b64.trim().as_bytes()).ok()?;
            let pair = String::from_utf8(raw).ok()?;
            return Some(
                pair.split_once(':')
                    .map_or(pair.clone(), |(_, p)| p.to_string()),
            );
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return error(StatusCode::FORBIDDEN, "a Host header is required");
    };
    if !host_allowed(host, st.port, &st.hosts) {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "Host {} is not this service (use --allow-host to add a name)",
                crate::out::escape(host)
            ),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = format!("http://{}", host.to_ascii_lowercase());
        if !origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&own)) {
            return error(
                StatusCode::FORBIDDEN,
                "requests from other sites are refused",
            );
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return error(
            StatusCode::FORBIDDEN,
            "requests from other sites are refused",
        );
    }
    let path = req.uri().path();
    if let Some(want) = &st.token {
        if needs_token(path) {
            let ip = source_ip(&req);
            if let Some(wait) = st.attempts.blocked(ip, Instant::now()) {
                return http::too_many(ip, wait);
            }
            if path.starts_with("/transmission/") && !headers.contains_key(header::AUTHORIZATION) {
                // curl (transmission-remote) sends its credentials only
                // when asked: the question is not a wrong token.
                return basic_challenge();
            }
            // An empty token never matches, even an empty one configured.
            let ok = token_of(headers).is_some_and(|t| !t.is_empty() && constant_eq(&t, want));
            if !ok && path.starts_with("/api/v2/") && path != "/api/v2/auth/login" {
                // The qBittorrent API's session cookie (`auth/login`);
                // qBittorrent answers 403 without one.
                match st.qbit.check(headers) {
                    Some(true) => return next.run(req).await,
                    Some(false) => st.attempts.failed(ip, Instant::now()),
                    None => {}
                }
                return (StatusCode::FORBIDDEN, "Forbidden").into_response();
            }
            if !ok && path != "/api/login" && path != "/api/v2/auth/login" {
                st.attempts.failed(ip, Instant::now());
                if path.starts_with("/transmission/") {
                    return basic_challenge();
                }
                return error(
                    StatusCode::UNAUTHORIZED,
                    "an access token is required (Authorization: Bearer TOKEN)",
                );
            }
        }
    }
    next.run(req).await
}

/// The paths behind the token: the API, the Transmission RPC, metrics.
fn needs_token(path: &str) -> bool {
    path.starts_with("/api") || path.starts_with("/transmission/") || path == "/metrics"
}

/// 401 asking for Basic auth, which Transmission clients answer with
/// the token as the password.
fn basic_challenge() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "an access token is required (as the password of Basic auth, or Authorization: Bearer TOKEN)",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"shoal\""),
    );
    r
}

/// Where a request came from (unknown: one source for all).
fn source_ip(req: &Request) -> IpAddr {
    http::peer_of(req).map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip())
}

async fn list(State(st): State<Arc<AppState>>) -> Response {
    Json(st.svc.list()).into_response()
}

#[derive(Deserialize, Default)]
struct AddQuery {
    download_dir: Option<String>,
    /// "0,2"
    only: Option<String>,
    paused: Option<bool>,
    stop_after_metadata: Option<bool>,
    overwrite: Option<bool>,
    category: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    magnet: Option<String>,
    url: Option<String>,
    download_dir: Option<String>,
    only: Option<Vec<usize>>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    stop_after_metadata: bool,
    #[serde(default)]
    overwrite: bool,
    category: Option<String>,
}

fn parse_only(s: &str) -> Result<Vec<usize>, ServiceError> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| ServiceError::Invalid(format!("only: {x:?} is not a file index")))
        })
        .collect()
}

async fn add(
    State(st): State<Arc<AppState>>,
    query: Result<Query<AddQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query string");
    };
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let req = if kind.starts_with("application/json") {
        let j: AddJson = match serde_json::from_slice(&body) {
            Ok(j) => j,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        };
        let source = match (j.magnet, j.url) {
            (Some(m), None) => AddSource::Magnet(m),
            (None, Some(u)) => AddSource::Url(u),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "give exactly one of \"magnet\" and \"url\"",
                )
            }
        };
        AddRequest {
            source,
            download_dir: j.download_dir,
            only: j.only,
            paused: j.paused,
            stop_after_metadata: j.stop_after_metadata,
            overwrite: j.overwrite,
            category: j.category,
        }
    } else if kind.starts_with("application/x-bittorrent") || body.first() == Some(&b'd') {
        let only = match q.only.as_deref().map(parse_only).transpose() {
            Ok(o) => o,
            Err(e) => return e.into_response(),
        };
        AddRequest {
            source: AddSource::Torrent(Vec::from(body)),
            download_dir: q.download_dir,
            only,
            paused: q.paused.unwrap_or(false),
            stop_after_metadata: q.stop_after_metadata.unwrap_or(false),
            overwrite: q.overwrite.unwrap_or(false),
            category: q.category,
        }
    } else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a .torrent as application/x-bittorrent, or JSON {\"magnet\": …} / {\"url\": …}",
        );
    };
    match st.svc.add(req).await {
        Ok(h) => (StatusCode::CREATED, Json(json!({ "info_hash": h }))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn detail(State(st): State<Arc<AppState>>, Path(hash): Path<String>) -> Response {
    match st.svc.detail(&hash) {
        Ok(d) => Json(d).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn peers(State(st): State<Arc<AppState>>, Path(hash): Path<String>) -> Response {
    match st.svc.peers(&hash) {
        Ok(p) => Json(&*p).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn pieces(State(st): State<Arc<AppState>>, Path(hash): Path<String>) -> Response {
    match st.svc.pieces(&hash) {
        Ok((count, bits)) => Json(json!({
            "piece_count": count,
            "have": data_encoding::BASE64.encode(&bits),
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    delete_data: bool,
}

async fn remove(
    State(st): State<Arc<AppState>>,
    Path(hash): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "delete_data must be true or false");
    };
    match st.svc.remove(&hash, q.delete_data).await {
        Ok(gone) if q.delete_data => Json(json!({
            "info_hash": hash.to_ascii_lowercase(),
            "deleted": gone.deleted,
            "kept": gone.kept,
        }))
        .into_response(),
        Ok(_) => Json(json!({ "info_hash": hash.to_ascii_lowercase() })).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn pause(State(st): State<Arc<AppState>>, Path(hash): Path<String>) -> Response {
    match st.svc.pause(&hash).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize, Default)]
struct ResumeQuery {
    #[serde(default)]
    overwrite: bool,
}

async fn resume(
    State(st): State<Arc<AppState>>,
    Path(hash): Path<String>,
    query: Result<Query<ResumeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "overwrite must be true or false");
    };
    match st.svc.resume(&hash, q.overwrite).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Checks the data again (`Service::recheck`): a running torrent's run
/// starts over and hashes what is on disk; a stopped one is hashed where
/// it stands and stays stopped.
async fn recheck(State(st): State<Arc<AppState>>, Path(hash): Path<String>) -> Response {
    match st.svc.recheck(&hash).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every category: its name and the folder its torrents' data goes to
/// ("" for the folder of its name).
async fn categories(State(st): State<Arc<AppState>>) -> Response {
    Json(st.svc.categories()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesBody {
    priorities: HashMap<String, Priority>,
}

async fn set_files(
    State(st): State<Arc<AppState>>,
    Path(hash): Path<String>,
    body: Result<Json<FilesBody>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    let mut changes = Vec::new();
    for (k, p) in body.priorities {
        match k.parse::<usize>() {
            Ok(i) => changes.push((i, p)),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("{:?} is not a file index", crate::out::escape(&k)),
                )
            }
        }
    }
    match st.svc.set_priorities(&hash, &changes).await {
        Ok(files) => Json(files).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A file's bytes, whole or one `Range`, as its pieces are verified
/// (`service::stream`). HEAD answers the same headers without reading.
async fn stream(
    State(st): State<Arc<AppState>>,
    Path((hash, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(index) = index.parse::<usize>() else {
        return error(StatusCode::BAD_REQUEST, "the file index must be a number");
    };
    let file = match st.svc.stream_file(&hash, index) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let len = file.length;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match stream::parse_range(range, len) {
        RangeAsk::Whole => (StatusCode::OK, 0, len),
        RangeAsk::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        RangeAsk::Bad => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (header::CONTENT_RANGE, format!("bytes */{len}")),
                    (header::ACCEPT_RANGES, "bytes".to_string()),
                ],
            )
                .into_response()
        }
    };
    let name = file.path.rsplit('/').next().unwrap_or("").to_string();
    let kind = stream::content_type(&file.path);
    let mut resp = Response::new(axum::body::Body::from_stream(stream::body(
        st.svc.clone(),
        file,
        start,
        end,
    )));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Data from strangers: never run as a page of this origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    // RFC 5987's attr-char stays as it is.
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'-')
        .remove(b'_')
        .remove(b'~');
    let disposition = format!(
        "inline; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(&name, ATTR)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

fn limits_json(svc: &Service) -> serde_json::Value {
    json!({
        "download": svc.session().download_limit().rate(),
        "upload": svc.session().upload_limit().rate(),
    })
}

/// How peers reach this service: the port, its families, the router's
/// port mapping.
async fn network(State(st): State<Arc<AppState>>) -> Response {
    let session = st.svc.session();
    let (ipv4, ipv6) = session.families();
    let mapping = session.port_mapping().borrow().json();
    Json(json!({
        "port": session.port(),
        "ipv4": ipv4,
        "ipv6": ipv6,
        "port_mapping": mapping,
    }))
    .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let text = crate::service::metrics::render(&st.svc).await;
    (
        [(header::CONTENT_TYPE, crate::service::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

async fn get_limits(State(st): State<Arc<AppState>>) -> Response {
    Json(limits_json(&st.svc)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[serde(default)]
    download: Option<u64>,
    #[serde(default)]
    upload: Option<u64>,
}

async fn put_limits(
    State(st): State<Arc<AppState>>,
    body: Result<Json<Limits>, JsonRejection>,
) -> Response {
    let l = match body {
        Ok(Json(l)) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed request: {e}")),
    };
    let session = st.svc.session();
    session.download_limit().set(l.download.filter(|r| *r > 0));
    session.upload_limit().set(l.upload.filter(|r| *r > 0));
    Json(limits_json(&st.svc)).into_response()
}

async fn events(State(st): State<Arc<AppState>>) -> Response {
    let svc = st.svc.clone();
    let rx = svc.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold(
        (svc, rx, tick),
        |(svc, mut rx, mut tick)| async move {
            let list = |svc: &Service| Event::default().event("torrents").json_data(svc.list());
            let ev = tokio::select! {
                _ = tick.tick() => list(&svc),
                m = rx.recv() => match m {
                    Ok(ServiceEvent::Added(h)) => Event::default().event("added").json_data(json!({"info_hash": h})),
                    Ok(ServiceEvent::Removed(h)) => Event::default().event("removed").json_data(json!({"info_hash": h})),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => list(&svc),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            };
            let ev = ev.unwrap_or_else(|_| Event::default().comment("unencodable"));
            Some((Ok::<_, Infallible>(ev), (svc, rx, tick)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let ip = source_ip(&req);
    let body = axum::body::to_bytes(req.into_body(), http::SMALL_BODY).await;
    let Some(l) = body
        .ok()
        .and_then(|b| serde_json::from_slice::<Login>(&b).ok())
    else {
        return error(StatusCode::BAD_REQUEST, "send {\"token\": \"…\"}");
    };
    match &st.token {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(want) if !l.token.is_empty() && constant_eq(&l.token, want) => {
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", l.token);
            match HeaderValue::from_str(&cookie) {
                Ok(v) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, v)]).into_response(),
                Err(_) => error(
                    StatusCode::BAD_REQUEST,
                    "the token has characters a cookie cannot hold",
                ),
            }
        }
        Some(_) => {
            st.attempts.failed(ip, Instant::now());
            error(StatusCode::UNAUTHORIZED, "wrong token")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let allowed = vec!["box.lan".to_string()];
        for ok in [
            "127.0.0.1:3030",
            "localhost:3030",
            "LOCALHOST:3030",
            "[::1]:3030",
            "10.0.0.5:3030",
            "box.lan",
            "box.lan:3030",
        ] {
            assert!(host_allowed(ok, 3030, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:3030",
            "127.0.0.1:80",
            "127.0.0.1",
            "localhost",
            "localhost.evil.example:3030",
            "",
        ] {
            assert!(!host_allowed(bad, 3030, &allowed), "{bad}");
        }
    }

    #[test]
    fn tokens_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; shoal_token=xyz"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("xyz"));
        assert!(
            constant_eq("abc", "abc") && !constant_eq("abc", "abd") && !constant_eq("ab", "abc")
        );
    }
}
