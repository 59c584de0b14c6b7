//! `shoal serve`: many torrents in one session, driven by requests (the
//! HTTP API in `api`), kept in a state folder so a restarted service comes
//! back with every torrent.
//!
//! Each torrent is an entry with a task that runs it (fetch the metadata
//! of a magnet, then `Session::run_torrent`). Pause, resume, a change of
//! file priorities and removal stop that task and, where needed, start a
//! new one; the task's end is recorded in the entry. The entries live
//! behind one mutex that is never held across an await. The list is saved
//! by one writer task (`state`).
//!
//! Every torrent's folder is reached from the download root without
//! following links (`store::confine`), when its data is written and when it
//! is deleted, so a folder replaced by a link after the torrent was added
//! leads nowhere outside the root.

pub mod api;
mod categories;
mod files;
pub mod http;
pub mod metrics;
mod qbit;
mod recheck;
mod run;
mod state;
pub mod stream;
pub mod transmission;
pub mod watch_dir;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::bitfield::Bitfield;
use crate::metainfo::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::peer::Shared;
use crate::session::{Control, Session};
use crate::store::confine::Root;
use crate::torrent::deadline::Readers;
use crate::torrent::{PeerView, Progress, State, TrackerView};
pub use categories::Category;
pub use files::{resolve_dir, DataRemoval, Kept};
use state::{Saved, Saver};

/// The biggest .torrent accepted, uploaded or fetched from a URL.
pub const MAX_TORRENT_SIZE: usize = 16 << 20;
/// Files per torrent, at most, unless `--max-files` says otherwise: a
/// torrent of 100,000 empty files is 3.4 MB.
pub const DEFAULT_MAX_FILES: usize = 50_000;
/// An http(s) URL to fetch a .torrent from longer than this is refused.
const MAX_URL_LEN: usize = 8192;
/// A magnet whose metadata could not be fetched is tried again after this.
const METADATA_RETRY: Duration = Duration::from_secs(30);
/// Stats are saved this often (and at every change and at exit).
const SAVE_EVERY: Duration = Duration::from_secs(30);

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
    /// Every torrent's knobs (`serve --max-peers`, `--seed-ratio` …). A
    /// torrent keeps seeding until `seed_ratio` or `seed_time` (state
    /// `done`); never stops without.
    pub options: crate::torrent::Options,
    /// Torrents with more files are refused (`--max-files`).
    pub max_files: usize,
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
    /// Paused as soon as its files are known, before any data comes
    /// (qBittorrent's stop condition "metadata received"): a magnet
    /// fetches its metadata first, a .torrent is added paused. Its files
    /// can then be chosen before it starts (the page's add dialog).
    pub stop_after_metadata: bool,
    /// Replace files in the way that shoal did not create (for its first
    /// run; `resume` with overwrite asks again).
    pub overwrite: bool,
    /// Its category (made if new); without `download_dir` its data goes
    /// to the category's folder.
    pub category: Option<String>,
}

/// A torrent as the list shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TorrentView {
    pub info_hash: String,
    pub name: String,
    /// A magnet link to share it: built from its metainfo once known,
    /// else the link it was added with.
    pub magnet: String,
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
    /// While running, one line on what is going on: the state, or while
    /// no peer is connected why not ("waiting for peers: tracker H:P
    /// unreachable, DHT off").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its error is files in the way that shoal did not create: resuming
    /// with overwrite replaces them.
    pub clash: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
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
    /// Each tracker's state: status, last and next announce, seeders and
    /// leechers, last error.
    pub tracker_status: Vec<TrackerView>,
}

/// What changed, for the live stream.
#[derive(Clone, Debug)]
pub enum ServiceEvent {
    Added(String),
    Removed(String),
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
    /// The error is files in the way (`TorrentView::clash`).
    clash: bool,
    /// The run ended on its own: complete, and seeding is over.
    finished: bool,
    progress: watch::Receiver<Progress>,
    shared: watch::Receiver<Option<Arc<Shared>>>,
    checked: Arc<AtomicU64>,
    /// While its data is checked but it does not run (`recheck`): set to
    /// stop that check.
    rechecking: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// While fetching a magnet's metadata: how it goes.
    fetching: Option<watch::Receiver<crate::discovery::fetch::Status>>,
    /// The piece map of the last run, shown while not running (paused,
    /// done, checking again, or restored after a restart).
    have: Option<Bitfield>,
    /// Streaming readers of its files (`stream`), across runs.
    readers: Arc<Readers>,
}

impl Entry {
    fn state(&self) -> &'static str {
        if self.rechecking.is_some() {
            return "checking";
        }
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

    /// The piece map: the running torrent's, else the last run's.
    fn piece_map(&self) -> Option<Bitfield> {
        match &*self.shared.borrow() {
            Some(s) => Some(s.have.snapshot()),
            None => self.have.clone(),
        }
    }

    /// Verified bytes per file of `meta.files`: the running torrent's, else
    /// from the last run's piece map (a paused torrent after a restart).
    fn file_done(&self, meta: &Metainfo) -> Vec<u64> {
        let p = self.progress.borrow();
        if self.shared.borrow().is_some() || self.have.is_none() {
            return p.file_done.clone();
        }
        let mut done = vec![0u64; meta.files.len()];
        for piece in self.have.iter().flat_map(|h| h.iter_ones()) {
            for s in meta.piece_slices(piece as u32) {
                done[s.file] += s.len;
            }
        }
        done
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
        let eta =
            (running && down_rate > 0 && total > have).then(|| (total - have).div_ceil(down_rate));
        let check_progress = (state == "checking").then(|| {
            let all = self.meta.as_ref().map_or(0, |m| m.total_length);
            self.checked.load(Ordering::Relaxed) as f64 / all.max(1) as f64
        });
        let status = (running && state == "downloading").then(|| p.status.clone());
        let magnet = match (&self.meta, &self.saved.magnet) {
            (Some(m), _) => crate::metainfo::magnet::link_for(m),
            (None, Some(link)) => link.clone(),
            (None, None) => format!("magnet:?xt=urn:btih:{}", self.saved.info_hash),
        };
        TorrentView {
            info_hash: self.saved.info_hash.clone(),
            name: self.saved.name.clone(),
            magnet,
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
            status,
            clash: self.clash && self.error.is_some(),
            category: self.saved.category.clone(),
        }
    }
}

struct Inner {
    session: Session,
    cfg: ServiceConfig,
    root: PathBuf,
    entries: Mutex<Vec<Entry>>,
    /// Categories by name (`categories`).
    categories: Mutex<std::collections::BTreeMap<String, Category>>,
    events: broadcast::Sender<ServiceEvent>,
    generation: AtomicU64,
    saver: Arc<Saver>,
    /// Held for the service's life: one service per state folder.
    _lock: std::fs::File,
}

/// The running service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

pub(crate) fn now_secs() -> u64 {
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
        let loaded = state::load(&cfg.state_dir)?;
        let svc = Service {
            inner: Arc::new(Inner {
                session,
                root,
                entries: Mutex::new(Vec::new()),
                categories: Mutex::new(categories::load(&cfg.state_dir)),
                events: broadcast::channel(256).0,
                generation: AtomicU64::new(0),
                saver: Saver::new(),
                _lock: lock,
                cfg,
            }),
        };
        let weak = Arc::downgrade(&svc.inner);
        tokio::spawn(svc.inner.saver.clone().run(
            svc.inner.cfg.state_dir.clone(),
            loaded.stamp(),
            move || weak.upgrade().map(|inner| Service { inner }.snapshot()),
        ));
        svc.restore(loaded.torrents);
        let weak = Arc::downgrade(&svc.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                Service { inner }.save();
            }
        });
        Ok(svc)
    }

    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.cfg
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

    fn restore(&self, torrents: Vec<Saved>) {
        for mut saved in torrents {
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
            if meta.is_none() && !saved.priorities.is_empty() {
                // Older versions kept a magnet's `only` as priorities.
                let only: Vec<usize> = (0..saved.priorities.len())
                    .filter(|&i| saved.priorities[i] != Priority::Skip)
                    .collect();
                saved.only = files::check_only(&only, self.inner.cfg.max_files).unwrap_or_default();
                saved.priorities.clear();
            }
            if let Some(m) = &meta {
                error = error.or_else(|| self.too_many_files(m).err());
            }
            let have = saved.have.as_deref().and_then(|b64| {
                let bytes = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
                Bitfield::from_wire(&bytes, meta.as_ref()?.piece_count() as usize).ok()
            });
            self.insert(saved, hash, meta, error, have);
        }
        let hashes: Vec<[u8; 20]> = self.entries().iter().map(|e| e.hash).collect();
        for h in hashes {
            self.start_entry(h);
        }
    }

    /// Refuses a torrent with more data files than `--max-files`.
    fn too_many_files(&self, meta: &Metainfo) -> Result<(), String> {
        let n = data_files(meta).len();
        let max = self.inner.cfg.max_files;
        if n > max {
            return Err(format!(
                "the torrent has {n} files; this service takes at most {max} (--max-files)"
            ));
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
        have: Option<Bitfield>,
    ) {
        let entry = Entry {
            finished: saved.done,
            saved,
            hash,
            meta,
            run: None,
            error,
            clash: false,
            progress: watch::channel(Progress::default()).1,
            shared: watch::channel(None).1,
            checked: Arc::default(),
            rechecking: None,
            fetching: None,
            have,
            readers: Arc::default(),
        };
        self.entries().push(entry);
    }

    /// The list of torrents to save, with their current totals.
    fn snapshot(&self) -> Vec<Saved> {
        self.entries()
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
                s.have = e
                    .piece_map()
                    .map(|b| data_encoding::BASE64.encode(b.as_bytes()));
                s
            })
            .collect()
    }

    /// Asks the writer to save the list of torrents; returns at once.
    pub fn save(&self) -> u64 {
        self.inner.saver.request()
    }

    /// Saves the list of torrents and waits until it is on disk. A failed
    /// save (the state folder's disk full) is logged and tried again at the
    /// next change and every 30 s; the change stands in memory meanwhile.
    pub async fn save_now(&self) {
        let _ = self.try_save().await;
    }

    /// Saves the list of torrents; the error if it is not on disk.
    async fn try_save(&self) -> Result<(), String> {
        let n = self.save();
        self.inner.saver.wait(n).await
    }

    /// Why the list of torrents could not be saved the last time it was,
    /// if it could not.
    pub fn save_error(&self) -> Option<String> {
        self.inner.saver.error()
    }

    /// Adds a torrent; returns its info-hash in hex. Everything the request
    /// names is checked before anything is stored or created, so a refused
    /// add leaves no trace (no entry, no folder, no .torrent).
    pub async fn add(&self, req: AddRequest) -> Result<String, ServiceError> {
        let max_files = self.inner.cfg.max_files;
        let only = req
            .only
            .as_deref()
            .map(|o| files::check_only(o, max_files))
            .transpose()?;
        let category_dir = match req.category.as_deref().filter(|c| !c.is_empty()) {
            Some(c) if req.download_dir.is_none() => Some(self.category_dir(c)?),
            Some(c) => categories::check_name(c).map(|_| None)?,
            None => None,
        };
        let dir = resolve_dir(
            &self.inner.root,
            req.download_dir.as_deref().or(category_dir.as_deref()),
        )?;
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
            AddSource::Url(url) if url.len() > MAX_URL_LEN => {
                return Err(ServiceError::Invalid(format!(
                    "url is {} bytes long; at most {MAX_URL_LEN}",
                    url.len()
                )));
            }
            AddSource::Url(url) => {
                if url.trim_start().to_ascii_lowercase().starts_with("magnet:") {
                    let m = Magnet::parse(&url)
                        .map_err(|e| ServiceError::Invalid(format!("bad magnet link: {e}")))?;
                    (None, Some((m, url)), None)
                } else {
                    let bytes = fetch_torrent(&url).await?;
                    let m = Metainfo::from_bytes(&bytes).map_err(|e| {
                        ServiceError::Invalid(format!("{}: {e}", crate::out::escape(&url)))
                    })?;
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
            self.too_many_files(m).map_err(ServiceError::Invalid)?;
            priorities = files::initial_priorities(data_files(m).len(), only.as_deref())
                .map_err(ServiceError::Invalid)?;
        }
        if let Some(bytes) = &raw {
            state::write_atomic(&self.torrent_path(&hex_hash), bytes)
                .map_err(|e| ServiceError::Failed(format!("saving the torrent: {e}")))?;
        }
        let saved = Saved {
            info_hash: hex_hash.clone(),
            name: crate::out::escape(&name).into_owned(),
            dir,
            magnet: magnet.as_ref().map(|(_, uri)| uri.trim().to_string()),
            peers: magnet
                .as_ref()
                .map(|(m, _)| m.peers.clone())
                .unwrap_or_default(),
            priorities,
            // A magnet's `only` applies once its files are known.
            only: if meta.is_none() {
                only.unwrap_or_default()
            } else {
                Vec::new()
            },
            paused: req.paused || (req.stop_after_metadata && meta.is_some()),
            stop_after_metadata: req.stop_after_metadata && meta.is_none(),
            overwrite: req.overwrite,
            category: req.category.clone().filter(|c| !c.is_empty()),
            added: now_secs(),
            total: meta.as_ref().map_or(0, |m| m.total_length),
            ..Saved::default()
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
                clash: false,
                finished: false,
                progress: watch::channel(Progress::default()).1,
                shared: watch::channel(None).1,
                checked: Arc::default(),
                rechecking: None,
                fetching: None,
                have: None,
                readers: Arc::default(),
            });
        }
        // An add the state file does not hold would be gone at the next
        // start: refused instead, and undone before anything runs.
        if let Err(e) = self.try_save().await {
            self.entries().retain(|e| e.hash != hash);
            if raw.is_some() {
                let _ = std::fs::remove_file(self.torrent_path(&hex_hash));
            }
            return Err(ServiceError::Failed(format!(
                "{e}; the torrent was not added"
            )));
        }
        if let Some(c) = req.category.as_deref().filter(|c| !c.is_empty()) {
            match self.create_category(c, "", false) {
                Ok(()) | Err(ServiceError::Duplicate(_)) => {}
                Err(e) => tracing::warn!("category {}: {e}", crate::out::escape(c)),
            }
        }
        self.start_entry(hash);
        let _ = self
            .inner
            .events
            .send(ServiceEvent::Added(hex_hash.clone()));
        Ok(hex_hash)
    }

    pub fn list(&self) -> Vec<TorrentView> {
        self.entries().iter().map(Entry::view).collect()
    }

    pub fn detail(&self, hex_hash: &str) -> Result<TorrentDetail, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let mut entries = self.entries();
        let e = find_entry(&mut entries, hash, hex_hash)?;
        let tracker_status = {
            let p = e.progress.borrow();
            if p.trackers.is_empty() {
                // Not running: the torrent's trackers, none contacted.
                e.meta
                    .as_ref()
                    .map(|m| m.tracker_tiers())
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .flat_map(|(tier, urls)| urls.into_iter().map(move |u| (tier, u)))
                    .map(|(tier, url)| {
                        TrackerView::not_contacted(crate::out::escape(&url).into_owned(), tier)
                    })
                    .collect()
            } else {
                p.trackers.clone()
            }
        };
        let (files, trackers, piece_count) = match &e.meta {
            Some(m) => {
                let done = e.file_done(m);
                let files = data_files(m)
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| FileView {
                        index: i,
                        path: crate::out::escape(&m.files[f].path.to_string_lossy()).into_owned(),
                        length: m.files[f].length,
                        done: done.get(f).copied().unwrap_or(0),
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
        Ok(TorrentDetail {
            torrent: e.view(),
            piece_count,
            files,
            trackers,
            tracker_status,
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
        let bits = match e.piece_map() {
            Some(b) if b.len() == count as usize => b.as_bytes().to_vec(),
            _ => vec![0; (count as usize).div_ceil(8)],
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
        self.save_now().await;
        self.view_of(hash, hex_hash)
    }

    /// Resumes a paused, failed or finished torrent; with `overwrite`, its
    /// next run replaces files in the way that shoal did not create (what
    /// a torrent stopped by such files needs).
    pub async fn resume(
        &self,
        hex_hash: &str,
        overwrite: bool,
    ) -> Result<TorrentView, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let ending = {
            let mut entries = self.entries();
            let e = find_entry(&mut entries, hash, hex_hash)?;
            if overwrite {
                e.saved.overwrite = true;
            }
            e.saved.stop_after_metadata = false;
            let was_paused = e.saved.paused;
            if e.error.is_some() {
                // Its files may have gone (`store::resume::vanished`): the
                // next run looks at what is there.
                e.saved.resume = None;
            }
            if e.saved.paused || e.error.is_some() || (e.run.is_none() && e.finished) {
                e.saved.paused = false;
                e.saved.done = false;
                e.error = None;
                e.clash = false;
                e.finished = false;
            }
            // A paused entry with a run: a magnet's metadata run that
            // paused it (`stop_after_metadata`) and is ending.
            if was_paused {
                e.run.take()
            } else {
                None
            }
        };
        finish_run(ending).await;
        self.start_entry(hash);
        self.save_now().await;
        self.view_of(hash, hex_hash)
    }

    /// Removes a torrent; with `delete_data` also the files it wrote
    /// (never a file that was in the folder before it came), and says
    /// which of its files it deleted and which it kept.
    pub async fn remove(
        &self,
        hex_hash: &str,
        delete_data: bool,
    ) -> Result<DataRemoval, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let entry = {
            let mut entries = self.entries();
            let i = entries
                .iter()
                .position(|e| e.hash == hash)
                .ok_or_else(|| ServiceError::NotFound(hex_hash.to_string()))?;
            entries.remove(i)
        };
        let mut entry = entry;
        recheck::cancel(&mut entry.rechecking);
        let hex_hash = entry.saved.info_hash.clone();
        finish_run(entry.run).await;
        let _ = std::fs::remove_file(self.torrent_path(&hex_hash));
        self.save_now().await;
        let _ = self
            .inner
            .events
            .send(ServiceEvent::Removed(hex_hash.clone()));
        let (Some(meta), true) = (entry.meta, delete_data) else {
            return Ok(DataRemoval::default());
        };
        let root = Root::under(&self.inner.root, &entry.saved.dir).ok_or_else(|| {
            ServiceError::Forbidden(format!(
                "{} is outside the service's download folder {}; its data was not deleted",
                entry.saved.dir.display(),
                self.inner.root.display()
            ))
        })?;
        tokio::task::spawn_blocking(move || files::delete_data_of(&meta, &root))
            .await
            .map_err(|e| ServiceError::Failed(e.to_string()))
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
                e.saved.resume = None;
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
        self.save_now().await;
        Ok(self.detail(hex_hash)?.files)
    }

    /// The torrent's metainfo, once known (not while a magnet's is fetched).
    pub fn metainfo(&self, hex_hash: &str) -> Result<Option<Arc<Metainfo>>, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let mut entries = self.entries();
        Ok(find_entry(&mut entries, hash, hex_hash)?.meta.clone())
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
        self.save_now().await;
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
        // The run checks the data itself.
        recheck::cancel(&mut e.rechecking);
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
        let task = tokio::spawn(run::drive(self.clone(), hash, generation, ctl));
        e.run = Some(Running {
            stop: stop_tx,
            task,
            generation,
        });
    }

    /// Records the end of run `generation` (unless a newer run replaced
    /// it), with the piece map it ended with.
    fn ended(&self, hash: [u8; 20], generation: u64, end: run::RunEnd) {
        let run::RunEnd {
            error,
            finished,
            have,
            resume,
        } = end;
        {
            let mut entries = self.entries();
            let Some(e) = entries.iter_mut().find(|e| e.hash == hash) else {
                return;
            };
            if have.is_some() {
                e.have = have;
            }
            if resume.is_some() {
                e.saved.resume = resume;
            }
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

    /// A magnet's metadata is in: saved with the torrent, and its `only`
    /// applied. An error (too many files, `only` past the end) stops the
    /// run before anything is written; the torrent stays, in `error`.
    fn set_meta(&self, hash: [u8; 20], meta: Arc<Metainfo>, bytes: &[u8]) -> Result<(), String> {
        let hex_hash = hex::encode(hash);
        if let Err(e) = state::write_atomic(&self.torrent_path(&hex_hash), bytes) {
            tracing::warn!("saving the torrent of {hex_hash}: {e}");
        }
        let result = {
            let mut entries = self.entries();
            let Some(e) = entries.iter_mut().find(|e| e.hash == hash) else {
                return Err("removed".into());
            };
            let n = data_files(&meta).len();
            let only = std::mem::take(&mut e.saved.only);
            let (priorities, error) = if only.is_empty() {
                (vec![Priority::Normal; n], None)
            } else {
                files::pending_priorities(n, &only)
            };
            e.saved.priorities = priorities;
            e.saved.name = crate::out::escape(&meta.name).into_owned();
            e.saved.total = meta.total_length;
            e.saved.magnet = None;
            if std::mem::take(&mut e.saved.stop_after_metadata) {
                e.saved.paused = true;
            }
            let result = self.too_many_files(&meta).and(error.map_or(Ok(()), Err));
            e.meta = Some(meta);
            e.fetching = None;
            result
        };
        self.save();
        result
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

/// Fetches a .torrent over HTTP(S), capped in size and time (for the
/// service's adds and `shoal download URL`).
pub async fn fetch_torrent(url: &str) -> Result<Vec<u8>, ServiceError> {
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
