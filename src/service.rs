//! `shoal serve`: many torrents in one session, driven by requests (the
//! HTTP API in `api`), kept in a state folder so a restarted service comes
//! back with every torrent.
//!
//! Each torrent is an entry with a task that runs it (fetch the metadata
//! of a magnet, then `Session::run_torrent`). Pause, resume, a change of
//! file priorities and removal stop that task and, where needed, start a
//! new one; the task's end is recorded in the entry. The entries live
//! behind one mutex that is never held across an await.

pub mod api;

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::metainfo::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::peer::Shared;
use crate::session::{Control, Session, TorrentOptions};
use crate::store::ownership;
use crate::torrent::{Outcome, PeerView, Progress, State};

/// The biggest .torrent accepted, uploaded or fetched from a URL.
pub const MAX_TORRENT_SIZE: usize = 16 << 20;
/// A magnet whose metadata could not be fetched is tried again after this.
const METADATA_RETRY: Duration = Duration::from_secs(30);
/// Stats are saved this often (and at every change and at exit).
const SAVE_EVERY: Duration = Duration::from_secs(30);
const STATE_FILE: &str = "torrents.json";
const STATE_VERSION: u64 = 1;

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("no torrent {0} in this service")]
    NotFound(String),
    #[error("torrent {0} is already in this service")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Failed(String),
}

/// A file's priority: left out, or asked for normally or first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Skip,
    Normal,
    High,
}

pub struct ServiceConfig {
    pub state_dir: PathBuf,
    /// Every torrent's data goes under this folder.
    pub download_root: PathBuf,
    pub max_peers: usize,
    pub pex: bool,
    /// Stop seeding a torrent once it uploaded this many times its size,
    /// or after this long (state `done`); never without.
    pub seed_ratio: Option<f64>,
    pub seed_time: Option<Duration>,
}

/// What to add.
pub enum AddSource {
    Torrent(Vec<u8>),
    Magnet(String),
    Url(String),
}

pub struct AddRequest {
    pub source: AddSource,
    /// Inside the download root; relative paths are taken from it.
    pub download_dir: Option<String>,
    /// Files to download, by the index the API lists them with; None: all.
    pub only: Option<Vec<usize>>,
    pub paused: bool,
}

/// A torrent as the list shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TorrentView {
    pub info_hash: String,
    pub name: String,
    pub state: &'static str,
    pub error: Option<String>,
    pub progress: f64,
    pub total: u64,
    pub have_bytes: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub peers: usize,
    pub known_peers: usize,
    pub eta: Option<u64>,
    pub download_dir: String,
    pub added: u64,
    /// While checking: the share of the data hashed so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_progress: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FileView {
    pub index: usize,
    pub path: String,
    pub length: u64,
    pub done: u64,
    pub priority: Priority,
}

#[derive(Clone, Debug, Serialize)]
pub struct TorrentDetail {
    #[serde(flatten)]
    pub torrent: TorrentView,
    pub piece_count: u32,
    pub files: Vec<FileView>,
    pub trackers: Vec<String>,
}

/// What changed, for the live stream.
#[derive(Clone, Debug)]
pub enum ServiceEvent {
    Added(String),
    Removed(String),
}

/// One torrent as saved in the state folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Saved {
    info_hash: String,
    name: String,
    dir: PathBuf,
    /// For a torrent added by magnet whose metadata is not fetched yet.
    #[serde(default)]
    magnet: Option<String>,
    /// Peers the magnet named (`x.pe`), dialled on every run.
    #[serde(default)]
    peers: Vec<SocketAddr>,
    /// One per data file (the API's file indices); empty until known.
    #[serde(default)]
    priorities: Vec<Priority>,
    #[serde(default)]
    paused: bool,
    /// Seeding reached its ratio or time: not started again until resumed.
    #[serde(default)]
    done: bool,
    added: u64,
    /// Payload totals of earlier runs.
    #[serde(default)]
    uploaded: u64,
    #[serde(default)]
    downloaded: u64,
    /// Last known verified bytes and total, shown while not running.
    #[serde(default)]
    have_bytes: u64,
    #[serde(default)]
    total: u64,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u64,
    torrents: Vec<Saved>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    generation: u64,
}

struct Entry {
    saved: Saved,
    hash: [u8; 20],
    meta: Option<Arc<Metainfo>>,
    run: Option<Running>,
    error: Option<String>,
    /// The run ended on its own: complete, and seeding is over.
    finished: bool,
    progress: watch::Receiver<Progress>,
    shared: watch::Receiver<Option<Arc<Shared>>>,
    checked: Arc<AtomicU64>,
    /// While fetching a magnet's metadata: how it goes.
    fetching: Option<watch::Receiver<crate::discovery::fetch::Status>>,
}

impl Entry {
    fn state(&self) -> &'static str {
        if self.error.is_some() {
            return "error";
        }
        if self.saved.paused {
            return "paused";
        }
        if self.meta.is_none() {
            return "metadata";
        }
        if self.run.is_none() {
            return if self.finished { "done" } else { "checking" };
        }
        if self.shared.borrow().is_none() {
            return "checking";
        }
        match self.progress.borrow().state {
            State::Checking => "checking",
            State::Seeding => "seeding",
            State::Done => "done",
            _ => "downloading",
        }
    }

    fn view(&self) -> TorrentView {
        let p = self.progress.borrow().clone();
        let running = self.run.is_some() && self.shared.borrow().is_some();
        let state = self.state();
        let (have, total) = if running {
            (p.have_bytes, p.total)
        } else {
            (self.saved.have_bytes, self.saved.total)
        };
        let (down_rate, up_rate, peers, known) = if running {
            (p.down_rate, p.up_rate, p.peers, p.known_peers)
        } else if let (Some(f), true) = (&self.fetching, self.run.is_some()) {
            let s = f.borrow();
            (0, 0, s.connected, s.known)
        } else {
            (0, 0, 0, 0)
        };
        let (run_up, run_down) = if self.run.is_some() {
            (p.uploaded, p.downloaded)
        } else {
            (0, 0)
        };
        let eta = (running && down_rate > 0 && total > have).then(|| (total - have) / down_rate);
        let check_progress = (state == "checking").then(|| {
            let all = self.meta.as_ref().map_or(0, |m| m.total_length);
            self.checked.load(Ordering::Relaxed) as f64 / all.max(1) as f64
        });
        TorrentView {
            info_hash: self.saved.info_hash.clone(),
            name: self.saved.name.clone(),
            state,
            error: self.error.clone(),
            progress: if total == 0 {
                0.0
            } else {
                have as f64 / total as f64
            },
            total,
            have_bytes: have,
            downloaded: self.saved.downloaded + run_down,
            uploaded: self.saved.uploaded + run_up,
            down_rate,
            up_rate,
            peers,
            known_peers: known,
            eta,
            download_dir: self.saved.dir.display().to_string(),
            added: self.saved.added,
            check_progress,
        }
    }
}

struct Inner {
    session: Session,
    cfg: ServiceConfig,
    root: PathBuf,
    entries: Mutex<Vec<Entry>>,
    events: broadcast::Sender<ServiceEvent>,
    generation: AtomicU64,
    /// Held for the service's life: one service per state folder.
    _lock: std::fs::File,
}

/// The running service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock_state_dir(dir: &Path) -> Result<std::fs::File, ServiceError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir.join("torrents"))
        .map_err(|e| ServiceError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ServiceError::Failed(format!("{}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(ServiceError::Failed(format!(
            "another shoal service uses the state folder {}",
            dir.display()
        )));
    }
    Ok(f)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Where `request` (relative to `root`, or absolute inside it) points,
/// created if missing. Refused if it leaves the root, also through a
/// symbolic link.
pub fn resolve_dir(root: &Path, request: Option<&str>) -> Result<PathBuf, ServiceError> {
    let Some(req) = request.filter(|r| !r.trim().is_empty()) else {
        return Ok(root.to_path_buf());
    };
    let req = Path::new(req);
    if req
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(ServiceError::Forbidden(format!(
            "download_dir {} may not contain '..'",
            req.display()
        )));
    }
    let wanted = if req.is_absolute() {
        req.to_path_buf()
    } else {
        root.join(req)
    };
    if !wanted.starts_with(root) {
        return Err(ServiceError::Forbidden(format!(
            "download_dir {} is outside the service's download folder {}",
            wanted.display(),
            root.display()
        )));
    }
    // The deepest folder that exists must resolve inside the root: a link
    // inside it to elsewhere does not count as inside.
    let mut existing = wanted.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(root);
    }
    let real = existing
        .canonicalize()
        .map_err(|e| ServiceError::Failed(format!("{}: {e}", existing.display())))?;
    if !real.starts_with(root) {
        return Err(ServiceError::Forbidden(format!(
            "download_dir {} leads outside the service's download folder {}",
            wanted.display(),
            root.display()
        )));
    }
    std::fs::create_dir_all(&wanted)
        .map_err(|e| ServiceError::Failed(format!("cannot create {}: {e}", wanted.display())))?;
    Ok(wanted)
}

fn parse_hash(hex_hash: &str) -> Result<[u8; 20], ServiceError> {
    let mut out = [0u8; 20];
    hex::decode_to_slice(hex_hash, &mut out)
        .map_err(|_| ServiceError::NotFound(crate::out::escape(hex_hash).into_owned()))?;
    Ok(out)
}

/// Data files of `meta` by API index → index in `meta.files`.
fn data_files(meta: &Metainfo) -> Vec<usize> {
    crate::torrent::selection::data_files(meta)
}

impl Service {
    /// Opens the state folder, starts the session and every torrent that
    /// was not paused.
    pub async fn start(session: Session, cfg: ServiceConfig) -> Result<Service, ServiceError> {
        let lock = lock_state_dir(&cfg.state_dir)?;
        std::fs::create_dir_all(&cfg.download_root).map_err(|e| {
            ServiceError::Failed(format!(
                "cannot create {}: {e}",
                cfg.download_root.display()
            ))
        })?;
        let root = cfg
            .download_root
            .canonicalize()
            .map_err(|e| ServiceError::Failed(format!("{}: {e}", cfg.download_root.display())))?;
        let svc = Service {
            inner: Arc::new(Inner {
                session,
                root,
                entries: Mutex::new(Vec::new()),
                events: broadcast::channel(256).0,
                generation: AtomicU64::new(0),
                _lock: lock,
                cfg,
            }),
        };
        svc.restore()?;
        let saver = Arc::downgrade(&svc.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                let Some(inner) = saver.upgrade() else { return };
                Service { inner }.save();
            }
        });
        Ok(svc)
    }

    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    pub fn download_root(&self) -> &Path {
        &self.inner.root
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ServiceEvent> {
        self.inner.events.subscribe()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn restore(&self) -> Result<(), ServiceError> {
        let path = self.inner.cfg.state_dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ServiceError::Failed(format!("{}: {e}", path.display()))),
        };
        let state: StateFile = serde_json::from_slice(&bytes)
            .map_err(|e| ServiceError::Failed(format!("{} is damaged: {e}", path.display())))?;
        for saved in state.torrents {
            let Ok(hash) = parse_hash(&saved.info_hash) else {
                tracing::warn!("state: skipping a torrent with a bad info-hash");
                continue;
            };
            let torrent_file = self.torrent_path(&saved.info_hash);
            let mut error = None;
            let meta = match std::fs::read(&torrent_file) {
                Ok(b) => match Metainfo::from_bytes(&b) {
                    // A hybrid added by its v2 magnet is kept under its
                    // v2 hash, one of the two it answers to.
                    Ok(m) if m.info_hashes().iter().any(|h| h.0 == hash) => Some(Arc::new(m)),
                    Ok(_) => {
                        error = Some(format!("{}: another torrent", torrent_file.display()));
                        None
                    }
                    Err(e) => {
                        error = Some(format!("{}: {e}", torrent_file.display()));
                        None
                    }
                },
                Err(_) if saved.magnet.is_some() => None,
                Err(e) => {
                    error = Some(format!("{}: {e}", torrent_file.display()));
                    None
                }
            };
            self.insert(saved, hash, meta, error);
        }
        let hashes: Vec<[u8; 20]> = self.entries().iter().map(|e| e.hash).collect();
        for h in hashes {
            self.start_entry(h);
        }
        Ok(())
    }

    fn torrent_path(&self, hex_hash: &str) -> PathBuf {
        self.inner
            .cfg
            .state_dir
            .join("torrents")
            .join(format!("{hex_hash}.torrent"))
    }

    fn insert(
        &self,
        saved: Saved,
        hash: [u8; 20],
        meta: Option<Arc<Metainfo>>,
        error: Option<String>,
    ) {
        let entry = Entry {
            finished: saved.done,
            saved,
            hash,
            meta,
            run: None,
            error,
            progress: watch::channel(Progress::default()).1,
            shared: watch::channel(None).1,
            checked: Arc::default(),
            fetching: None,
        };
        self.entries().push(entry);
    }

    /// Saves the list of torrents (atomically) with their current totals.
    pub fn save(&self) {
        let torrents: Vec<Saved> = self
            .entries()
            .iter()
            .map(|e| {
                let mut s = e.saved.clone();
                let v = e.view();
                s.uploaded = v.uploaded;
                s.downloaded = v.downloaded;
                if v.total > 0 {
                    s.have_bytes = v.have_bytes;
                    s.total = v.total;
                }
                s
            })
            .collect();
        let state = StateFile {
            version: STATE_VERSION,
            torrents,
        };
        let path = self.inner.cfg.state_dir.join(STATE_FILE);
        match serde_json::to_vec_pretty(&state) {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&path, &bytes) {
                    tracing::warn!("saving {}: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("saving {}: {e}", path.display()),
        }
    }

    /// Adds a torrent; returns its info-hash in hex.
    pub async fn add(&self, req: AddRequest) -> Result<String, ServiceError> {
        let dir = resolve_dir(&self.inner.root, req.download_dir.as_deref())?;
        let (meta, magnet, raw) = match req.source {
            AddSource::Torrent(bytes) => {
                let m = Metainfo::from_bytes(&bytes)
                    .map_err(|e| ServiceError::Invalid(e.to_string()))?;
                (Some(m), None, Some(bytes))
            }
            AddSource::Magnet(uri) => {
                let m = Magnet::parse(&uri)
                    .map_err(|e| ServiceError::Invalid(format!("bad magnet link: {e}")))?;
                (None, Some((m, uri)), None)
            }
            AddSource::Url(url) => {
                if url.trim_start().to_ascii_lowercase().starts_with("magnet:") {
                    let m = Magnet::parse(&url)
                        .map_err(|e| ServiceError::Invalid(format!("bad magnet link: {e}")))?;
                    (None, Some((m, url)), None)
                } else {
                    let bytes = fetch_torrent(&url).await?;
                    let m = Metainfo::from_bytes(&bytes)
                        .map_err(|e| ServiceError::Invalid(format!("{url}: {e}")))?;
                    (Some(m), None, Some(bytes))
                }
            }
        };
        let (hash, name) = match (&meta, &magnet) {
            (Some(m), _) => (m.info_hash.0, m.name.clone()),
            (None, Some((m, _))) => (
                m.info_hash.0,
                m.name.clone().unwrap_or_else(|| m.info_hash.hex()),
            ),
            (None, None) => unreachable!("a source gives a torrent or a magnet"),
        };
        let hex_hash = hex::encode(hash);
        if self.entries().iter().any(|e| e.hash == hash) {
            return Err(ServiceError::Duplicate(hex_hash));
        }
        let mut priorities = Vec::new();
        if let Some(m) = &meta {
            priorities = initial_priorities(data_files(m).len(), req.only.as_deref())?;
        }
        if let Some(bytes) = &raw {
            write_atomic(&self.torrent_path(&hex_hash), bytes)
                .map_err(|e| ServiceError::Failed(format!("saving the torrent: {e}")))?;
        }
        let saved = Saved {
            info_hash: hex_hash.clone(),
            name: crate::out::escape(&name).into_owned(),
            dir,
            magnet: magnet.as_ref().map(|(_, uri)| uri.clone()),
            peers: magnet
                .as_ref()
                .map(|(m, _)| m.peers.clone())
                .unwrap_or_default(),
            priorities,
            paused: req.paused,
            done: false,
            added: now_secs(),
            uploaded: 0,
            downloaded: 0,
            have_bytes: 0,
            total: meta.as_ref().map_or(0, |m| m.total_length),
        };
        {
            // Checked again under the lock: two adds of one torrent race.
            let mut entries = self.entries();
            if entries.iter().any(|e| e.hash == hash) {
                return Err(ServiceError::Duplicate(hex_hash));
            }
            entries.push(Entry {
                saved,
                hash,
                meta: meta.map(Arc::new),
                run: None,
                error: None,
                finished: false,
                progress: watch::channel(Progress::default()).1,
                shared: watch::channel(None).1,
                checked: Arc::default(),
                fetching: None,
            });
        }
        // A magnet's `only` applies once its files are known.
        if let (Some(only), true) = (req.only, magnet.is_some()) {
            self.pending_only(hash, only);
        }
        self.start_entry(hash);
        self.save();
        let _ = self
            .inner
            .events
            .send(ServiceEvent::Added(hex_hash.clone()));
        Ok(hex_hash)
    }

    fn pending_only(&self, hash: [u8; 20], only: Vec<usize>) {
        // Kept as "skip everything but these" in the priorities of a
        // torrent whose file count is not known yet: the indices listed,
        // with a length one past the largest, are fixed up on metadata.
        let mut entries = self.entries();
        if let Some(e) = entries.iter_mut().find(|e| e.hash == hash) {
            let n = only.iter().max().map_or(0, |m| m + 1);
            let mut p = vec![Priority::Skip; n];
            for i in only {
                p[i] = Priority::Normal;
            }
            e.saved.priorities = p;
        }
    }

    pub fn list(&self) -> Vec<TorrentView> {
        self.entries().iter().map(Entry::view).collect()
    }

    pub fn detail(&self, hex_hash: &str) -> Result<TorrentDetail, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let mut entries = self.entries();
        let e = find_entry(&mut entries, hash, hex_hash)?;
        let p = e.progress.borrow();
        let (files, trackers, piece_count) = match &e.meta {
            Some(m) => {
                let files = data_files(m)
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| FileView {
                        index: i,
                        path: crate::out::escape(&m.files[f].path.to_string_lossy()).into_owned(),
                        length: m.files[f].length,
                        done: p.file_done.get(f).copied().unwrap_or(0),
                        priority: e
                            .saved
                            .priorities
                            .get(i)
                            .copied()
                            .unwrap_or(Priority::Normal),
                    })
                    .collect();
                let trackers = m
                    .tracker_tiers()
                    .into_iter()
                    .flatten()
                    .map(|t| crate::out::escape(&t).into_owned())
                    .collect();
                (files, trackers, m.piece_count())
            }
            None => (Vec::new(), Vec::new(), 0),
        };
        drop(p);
        Ok(TorrentDetail {
            torrent: e.view(),
            piece_count,
            files,
            trackers,
        })
    }

    pub fn peers(&self, hex_hash: &str) -> Result<Arc<Vec<PeerView>>, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let mut entries = self.entries();
        let e = find_entry(&mut entries, hash, hex_hash)?;
        if e.run.is_none() {
            return Ok(Arc::default());
        }
        let list = e.progress.borrow().peer_list.clone();
        Ok(list)
    }

    /// The piece bitfield (BEP 3 layout) and the piece count.
    pub fn pieces(&self, hex_hash: &str) -> Result<(u32, Vec<u8>), ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let mut entries = self.entries();
        let e = find_entry(&mut entries, hash, hex_hash)?;
        let count = e.meta.as_ref().map_or(0, |m| m.piece_count());
        let bits = match &*e.shared.borrow() {
            Some(s) => s.have.snapshot().as_bytes().to_vec(),
            None => vec![0; (count as usize).div_ceil(8)],
        };
        Ok((count, bits))
    }

    pub async fn pause(&self, hex_hash: &str) -> Result<TorrentView, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let run = {
            let mut entries = self.entries();
            let e = find_entry(&mut entries, hash, hex_hash)?;
            e.saved.paused = true;
            e.run.take()
        };
        finish_run(run).await;
        self.save();
        self.view_of(hash, hex_hash)
    }

    pub async fn resume(&self, hex_hash: &str) -> Result<TorrentView, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        {
            let mut entries = self.entries();
            let e = find_entry(&mut entries, hash, hex_hash)?;
            if e.saved.paused || e.error.is_some() || (e.run.is_none() && e.finished) {
                e.saved.paused = false;
                e.saved.done = false;
                e.error = None;
                e.finished = false;
            }
        }
        self.start_entry(hash);
        self.save();
        self.view_of(hash, hex_hash)
    }

    /// Removes a torrent; with `delete_data` also the files it wrote
    /// (never a file that was in the folder before it came).
    pub async fn remove(&self, hex_hash: &str, delete_data: bool) -> Result<(), ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let entry = {
            let mut entries = self.entries();
            let i = entries
                .iter()
                .position(|e| e.hash == hash)
                .ok_or_else(|| ServiceError::NotFound(hex_hash.to_string()))?;
            entries.remove(i)
        };
        let hex_hash = entry.saved.info_hash.clone();
        if let Some(run) = entry.run {
            let _ = run.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), run.task).await;
        }
        let _ = std::fs::remove_file(self.torrent_path(&hex_hash));
        self.save();
        let _ = self
            .inner
            .events
            .send(ServiceEvent::Removed(hex_hash.clone()));
        if delete_data {
            if let Some(meta) = &entry.meta {
                let dir = entry.saved.dir.clone();
                let meta = meta.clone();
                tokio::task::spawn_blocking(move || delete_data_of(&meta, &dir))
                    .await
                    .map_err(|e| ServiceError::Failed(e.to_string()))??;
            }
        }
        Ok(())
    }

    /// Sets file priorities (API file index → priority); a running torrent
    /// restarts with them.
    pub async fn set_priorities(
        &self,
        hex_hash: &str,
        changes: &[(usize, Priority)],
    ) -> Result<Vec<FileView>, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let run = {
            let mut entries = self.entries();
            let e = find_entry(&mut entries, hash, hex_hash)?;
            let Some(meta) = &e.meta else {
                return Err(ServiceError::Invalid(
                    "the torrent's files are not known yet (fetching metadata)".into(),
                ));
            };
            let n = data_files(meta).len();
            let mut p = e.saved.priorities.clone();
            p.resize(n, Priority::Normal);
            for &(i, pr) in changes {
                if i >= n {
                    return Err(ServiceError::Invalid(format!(
                        "no file {i}: the torrent has {n} files (0 to {})",
                        n.saturating_sub(1)
                    )));
                }
                p[i] = pr;
            }
            if p.iter().all(|x| *x == Priority::Skip) {
                return Err(ServiceError::Invalid(
                    "every file would be skipped; pause the torrent instead".into(),
                ));
            }
            if p == e.saved.priorities {
                (false, None)
            } else {
                e.saved.priorities = p;
                e.finished = false;
                e.saved.done = false;
                (true, e.run.take())
            }
        };
        let (changed, run) = run;
        finish_run(run).await;
        if changed {
            // Not if paused: the new priorities apply when it resumes.
            self.start_entry(hash);
        }
        self.save();
        Ok(self.detail(hex_hash)?.files)
    }

    /// Stops every torrent (each announces `stopped`) and saves the state.
    pub async fn shutdown(&self) {
        let runs: Vec<([u8; 20], Running)> = self
            .entries()
            .iter_mut()
            .filter_map(|e| e.run.take().map(|r| (e.hash, r)))
            .collect();
        let mut waits = Vec::new();
        for (hash, run) in runs {
            let _ = run.stop.send(true);
            waits.push((hash, run.task));
        }
        for (_, task) in waits {
            let _ = tokio::time::timeout(Duration::from_secs(8), task).await;
        }
        self.save();
    }

    fn view_of(&self, hash: [u8; 20], hex_hash: &str) -> Result<TorrentView, ServiceError> {
        self.entries()
            .iter()
            .find(|e| e.hash == hash)
            .map(Entry::view)
            .ok_or_else(|| ServiceError::NotFound(hex_hash.to_string()))
    }

    /// Starts the entry's task unless it runs, is paused or failed.
    fn start_entry(&self, hash: [u8; 20]) {
        let mut entries = self.entries();
        let Some(e) = entries.iter_mut().find(|e| e.hash == hash) else {
            return;
        };
        if e.run.is_some() || e.saved.paused || e.error.is_some() || e.finished {
            return;
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let (stop_tx, stop_rx) = watch::channel(false);
        let progress_tx = watch::channel(Progress::default()).0;
        let shared_tx = watch::channel(None).0;
        e.progress = progress_tx.subscribe();
        e.shared = shared_tx.subscribe();
        e.checked = Arc::default();
        e.finished = false;
        let ctl = Control {
            stop: stop_rx,
            progress: progress_tx,
            shared: shared_tx,
            checked: e.checked.clone(),
            notices: None,
        };
        let task = tokio::spawn(drive(self.clone(), hash, generation, ctl));
        e.run = Some(Running {
            stop: stop_tx,
            task,
            generation,
        });
    }

    /// Records the end of run `generation` (unless a newer run replaced it).
    fn ended(&self, hash: [u8; 20], generation: u64, error: Option<String>, finished: bool) {
        {
            let mut entries = self.entries();
            let Some(e) = entries.iter_mut().find(|e| e.hash == hash) else {
                return;
            };
            let p = e.progress.borrow().clone();
            e.saved.uploaded += p.uploaded;
            e.saved.downloaded += p.downloaded;
            if p.total > 0 {
                e.saved.have_bytes = p.have_bytes;
                e.saved.total = p.total;
            }
            // Counted: a later view of this run's progress must not add it again.
            e.progress = watch::channel(Progress {
                file_done: p.file_done,
                ..Progress::default()
            })
            .1;
            if e.run.as_ref().is_some_and(|r| r.generation == generation) {
                e.run = None;
                e.error = error;
                e.finished = finished;
                e.saved.done = finished;
            }
        }
        self.save();
    }

    fn set_meta(&self, hash: [u8; 20], meta: Arc<Metainfo>, bytes: &[u8]) {
        let hex_hash = hex::encode(hash);
        if let Err(e) = write_atomic(&self.torrent_path(&hex_hash), bytes) {
            tracing::warn!("saving the torrent of {hex_hash}: {e}");
        }
        {
            let mut entries = self.entries();
            if let Some(e) = entries.iter_mut().find(|e| e.hash == hash) {
                let n = data_files(&meta).len();
                // `only` given with the magnet: indices past the end are dropped.
                let pending = std::mem::take(&mut e.saved.priorities);
                let mut p = vec![
                    if pending.is_empty() {
                        Priority::Normal
                    } else {
                        Priority::Skip
                    };
                    n
                ];
                for (i, pr) in pending.into_iter().enumerate().take(n) {
                    p[i] = pr;
                }
                if p.iter().all(|x| *x == Priority::Skip) {
                    p = vec![Priority::Normal; n];
                }
                e.saved.priorities = p;
                e.saved.name = crate::out::escape(&meta.name).into_owned();
                e.saved.total = meta.total_length;
                e.saved.magnet = None;
                e.meta = Some(meta);
                e.fetching = None;
            }
        }
        self.save();
    }
}

/// The entry of `hash` (named `hex_hash` in the request), or NotFound.
fn find_entry<'a>(
    entries: &'a mut [Entry],
    hash: [u8; 20],
    hex_hash: &str,
) -> Result<&'a mut Entry, ServiceError> {
    entries
        .iter_mut()
        .find(|e| e.hash == hash)
        .ok_or_else(|| ServiceError::NotFound(hex_hash.to_string()))
}

/// Stops a run taken out of its entry and waits for it to end (its task
/// adds its totals to the entry's as it ends).
async fn finish_run(run: Option<Running>) {
    let Some(run) = run else { return };
    let _ = run.stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), run.task).await;
}

fn initial_priorities(n: usize, only: Option<&[usize]>) -> Result<Vec<Priority>, ServiceError> {
    let Some(only) = only else {
        return Ok(vec![Priority::Normal; n]);
    };
    let mut p = vec![Priority::Skip; n];
    for &i in only {
        if i >= n {
            return Err(ServiceError::Invalid(format!(
                "no file {i}: the torrent has {n} files (0 to {})",
                n.saturating_sub(1)
            )));
        }
        p[i] = Priority::Normal;
    }
    if only.is_empty() {
        return Err(ServiceError::Invalid("\"only\" lists no file".into()));
    }
    Ok(p)
}

/// Fetches a .torrent over HTTP(S), capped in size and time.
async fn fetch_torrent(url: &str) -> Result<Vec<u8>, ServiceError> {
    let parsed =
        url::Url::parse(url).map_err(|e| ServiceError::Invalid(format!("bad url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ServiceError::Invalid(format!(
            "url must be http, https or magnet, not {}",
            parsed.scheme()
        )));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| ServiceError::Failed(e.to_string()))?;
    let mut resp = client
        .get(parsed)
        .send()
        .await
        .map_err(|e| ServiceError::Invalid(format!("fetching {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(ServiceError::Invalid(format!(
            "fetching {url}: HTTP {}",
            resp.status()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ServiceError::Invalid(format!("fetching {url}: {e}")))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_TORRENT_SIZE {
            return Err(ServiceError::Invalid(format!(
                "{url}: larger than {} MiB, not a torrent",
                MAX_TORRENT_SIZE >> 20
            )));
        }
    }
    Ok(body)
}

/// Deletes the files of `meta` under `dir` that shoal's record says it
/// created or took over, its part file and record, and the folders left
/// empty by that (never `dir` itself).
fn delete_data_of(meta: &Metainfo, dir: &Path) -> Result<(), ServiceError> {
    let hex_hash = meta.info_hash.hex();
    let record = ownership::Record::load(dir, &hex_hash);
    let mut parents = Vec::new();
    for f in meta.files.iter().filter(|f| f.is_data()) {
        if !record.owns(&f.path) {
            continue;
        }
        let path = dir.join(&f.path);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ServiceError::Failed(format!("{}: {e}", path.display()))),
        }
        let mut p = path.parent();
        while let Some(d) = p.filter(|d| d.starts_with(dir) && *d != dir) {
            parents.push(d.to_path_buf());
            p = d.parent();
        }
    }
    let state = dir.join(ownership::DIR_NAME);
    for ext in ["part", "json", "lock"] {
        let _ = std::fs::remove_file(state.join(format!("{hex_hash}.{ext}")));
    }
    parents.push(state);
    // Deepest first; a folder with anything else in it stays.
    parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    parents.dedup();
    for d in parents {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

/// The life of one torrent in the service: its metadata first if it came
/// as a magnet, then the run; its end is recorded in the entry.
async fn drive(svc: Service, hash: [u8; 20], generation: u64, ctl: Control) {
    let mut stop = ctl.stop.clone();
    let (meta, magnet, dir, priorities, peers) = {
        let entries = svc.entries();
        let Some(e) = entries.iter().find(|e| e.hash == hash) else {
            return;
        };
        (
            e.meta.clone(),
            e.saved.magnet.clone(),
            e.saved.dir.clone(),
            e.saved.priorities.clone(),
            e.saved.peers.clone(),
        )
    };
    let mut learned = Vec::new();
    let meta = match meta {
        Some(m) => m,
        None => {
            let Some(Ok(magnet)) = magnet.as_deref().map(Magnet::parse) else {
                svc.ended(
                    hash,
                    generation,
                    Some("no torrent file and no magnet link".into()),
                    false,
                );
                return;
            };
            loop {
                let (status_tx, status_rx) =
                    watch::channel(crate::discovery::fetch::Status::default());
                if let Some(e) = svc.entries().iter_mut().find(|e| e.hash == hash) {
                    e.fetching = Some(status_rx);
                }
                let got = crate::discovery::fetch::fetch(
                    &magnet,
                    &[],
                    svc.session().dht(),
                    crate::discovery::fetch::Dialling {
                        peer_id: crate::peer::new_peer_id(),
                        encryption: svc.session().encryption(),
                        net: svc.session().net().clone(),
                    },
                    status_tx,
                    stop.clone(),
                )
                .await;
                match got {
                    Ok((info, found)) => {
                        let bytes = crate::peer::metadata::torrent_file(
                            &info,
                            &magnet.trackers,
                            &magnet.web_seeds,
                        );
                        match Metainfo::from_bytes(&bytes) {
                            Ok(m) => {
                                let m = Arc::new(m);
                                svc.set_meta(hash, m.clone(), &bytes);
                                learned = found;
                                break m;
                            }
                            Err(e) => {
                                svc.ended(
                                    hash,
                                    generation,
                                    Some(format!(
                                        "the fetched metadata is not a valid torrent: {e}"
                                    )),
                                    false,
                                );
                                return;
                            }
                        }
                    }
                    Err(crate::discovery::fetch::FetchError::Interrupted) => {
                        svc.ended(hash, generation, None, false);
                        return;
                    }
                    Err(e) => {
                        tracing::info!("{}: {e}; trying again", hex::encode(hash));
                        tokio::select! {
                            _ = tokio::time::sleep(METADATA_RETRY) => {}
                            _ = stop.wait_for(|s| *s) => {
                                svc.ended(hash, generation, None, false);
                                return;
                            }
                        }
                    }
                }
            }
        }
    };
    let priorities = if priorities.is_empty() {
        svc.entries()
            .iter()
            .find(|e| e.hash == hash)
            .map(|e| e.saved.priorities.clone())
            .unwrap_or_default()
    } else {
        priorities
    };
    let (selection, high) = selection_of(&meta, &priorities);
    let opts = TorrentOptions {
        dir,
        peers: peers.clone(),
        keep_seeding: true,
        require_complete: false,
        max_peers: svc.inner.cfg.max_peers,
        overwrite: false,
        pex: svc.inner.cfg.pex,
        selection,
        high,
        seed_ratio: svc.inner.cfg.seed_ratio,
        seed_time: svc.inner.cfg.seed_time,
        super_seed: false,
        stall_timeout: None,
        learned: learned
            .into_iter()
            .filter(|(a, _): &(SocketAddr, _)| !a.ip().is_unspecified() && !peers.contains(a))
            .collect(),
        web_seeds: true,
    };
    let result = svc.session().run_torrent(meta, opts, ctl).await;
    match result {
        Ok(summary) => {
            let finished = matches!(summary.outcome, Outcome::Complete);
            svc.ended(hash, generation, None, finished);
        }
        Err(e) => {
            let msg = format!("{e:#}").replace(['\n', '\r'], " ");
            svc.ended(
                hash,
                generation,
                Some(crate::out::escape(&msg).into_owned()),
                false,
            );
        }
    }
}

/// The session's file selection and high-priority files (over all of
/// `meta.files`) from the API's priorities (over its data files).
fn selection_of(
    meta: &Metainfo,
    priorities: &[Priority],
) -> (Option<Vec<bool>>, Option<Vec<bool>>) {
    let files = data_files(meta);
    let pr = |i: usize| priorities.get(i).copied().unwrap_or(Priority::Normal);
    let mut selected = vec![false; meta.files.len()];
    let mut high = vec![false; meta.files.len()];
    for (i, &f) in files.iter().enumerate() {
        selected[f] = pr(i) != Priority::Skip;
        high[f] = pr(i) == Priority::High;
    }
    let all = files.iter().all(|&f| selected[f]);
    (
        (!all).then_some(selected),
        high.iter().any(|h| *h).then_some(high),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_dirs_stay_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(resolve_dir(&root, None).unwrap(), root);
        assert_eq!(resolve_dir(&root, Some("a/b")).unwrap(), root.join("a/b"));
        assert!(root.join("a/b").is_dir());
        let inside = root.join("c");
        assert_eq!(
            resolve_dir(&root, Some(inside.to_str().unwrap())).unwrap(),
            inside
        );
        for bad in ["../x", "a/../../x", "/etc", "/tmp"] {
            assert!(
                matches!(
                    resolve_dir(&root, Some(bad)),
                    Err(ServiceError::Forbidden(_))
                ),
                "{bad}"
            );
        }
        // A link inside the root to a folder outside it is outside.
        let outside = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert!(matches!(
            resolve_dir(&root, Some("link/sub")),
            Err(ServiceError::Forbidden(_))
        ));
        assert!(!outside.join("sub").exists());
    }

    #[test]
    fn priorities_become_a_selection() {
        use crate::metainfo::NewTorrent;
        let t = NewTorrent {
            name: "pack".into(),
            files: Some(vec![
                (vec!["a".into()], 20),
                (vec!["b".into()], 20),
                (vec!["c".into()], 24),
            ]),
            piece_length: 16,
            pieces: vec![0; 20 * 4],
            ..Default::default()
        };
        let m = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let p = [Priority::Normal, Priority::Skip, Priority::High];
        let (sel, high) = selection_of(&m, &p);
        assert_eq!(sel, Some(vec![true, false, true]));
        assert_eq!(high, Some(vec![false, false, true]));
        assert_eq!(selection_of(&m, &[Priority::Normal; 3]), (None, None));
        assert!(initial_priorities(3, Some(&[3])).is_err());
        assert_eq!(
            initial_priorities(3, Some(&[0, 2])).unwrap(),
            vec![Priority::Normal, Priority::Skip, Priority::Normal]
        );
    }
}
