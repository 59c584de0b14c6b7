//! The service's list of torrents on disk (`STATE_DIR/torrents.json`).
//!
//! One task writes it, so saves never overlap: a change asks for a save
//! ([`Saver::request`]), the writer takes a snapshot of every entry once it
//! gets to it (a burst of changes costs one or two writes) and says which
//! request is on disk ([`Saver::wait`]). Each write goes to a temporary
//! file of its own, is synced, and is renamed over the old file, which
//! becomes `torrents.json.bak` (a hard link: no copy, and `torrents.json`
//! is never missing); then the folder is synced. A damaged torrents.json
//! (cut short by a full disk, edited by hand) is moved aside and the
//! service starts from the backup, with a warning, instead of refusing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::{Priority, ServiceError};

pub(super) const STATE_FILE: &str = "torrents.json";
const BACKUP_FILE: &str = "torrents.json.bak";
const DAMAGED_FILE: &str = "torrents.json.damaged";
const STATE_VERSION: u64 = 1;
/// A save not on disk after this is reported and no longer waited for.
const SAVE_WAIT: Duration = Duration::from_secs(60);

/// One torrent as saved in the state folder.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Saved {
    pub info_hash: String,
    pub name: String,
    pub dir: PathBuf,
    /// For a torrent added by magnet whose metadata is not fetched yet.
    #[serde(default)]
    pub magnet: Option<String>,
    /// Peers the magnet named (`x.pe`), dialled on every run.
    #[serde(default)]
    pub peers: Vec<std::net::SocketAddr>,
    /// One per data file (the API's file indices); empty until known.
    /// Saved as one letter per file (`n`, `s`, `h`): a torrent of 50,000
    /// files costs 50 kB, not a line each.
    #[serde(default, with = "letters")]
    pub priorities: Vec<Priority>,
    /// A magnet's `only`, applied once its files are known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<usize>,
    #[serde(default)]
    pub paused: bool,
    /// Pause once the metadata is in (`AddRequest::stop_after_metadata`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_after_metadata: bool,
    /// The next run may replace files in the way (taken by that run).
    #[serde(default)]
    pub overwrite: bool,
    /// Seeding reached its ratio or time: not started again until resumed.
    #[serde(default)]
    pub done: bool,
    pub added: u64,
    /// Payload totals of earlier runs.
    #[serde(default)]
    pub uploaded: u64,
    #[serde(default)]
    pub downloaded: u64,
    /// Last known verified bytes and total, shown while not running.
    #[serde(default)]
    pub have_bytes: u64,
    #[serde(default)]
    pub total: u64,
    /// The piece map of the last run (base64 of the BEP 3 bitfield), shown
    /// while not running: a paused torrent's pieces and files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have: Option<String>,
    /// Its category (`categories`), a label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The fast-resume record of its last run (`store::resume`): its next
    /// run trusts it, without hashing, while every file is as recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<crate::store::resume::Saved>,
}

/// Priorities as a string of letters; the list of words older versions
/// wrote is read too.
mod letters {
    use super::Priority;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &[Priority], s: S) -> Result<S::Ok, S::Error> {
        let text: String = p
            .iter()
            .map(|p| match p {
                Priority::Skip => 's',
                Priority::Normal => 'n',
                Priority::High => 'h',
            })
            .collect();
        s.serialize_str(&text)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Letters(String),
        Words(Vec<Priority>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Priority>, D::Error> {
        match Either::deserialize(d)? {
            Either::Words(w) => Ok(w),
            Either::Letters(l) => l
                .chars()
                .map(|c| match c {
                    's' => Ok(Priority::Skip),
                    'n' => Ok(Priority::Normal),
                    'h' => Ok(Priority::High),
                    _ => Err(serde::de::Error::custom(format!("priority {c:?}"))),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct StateFile {
    version: u64,
    torrents: Vec<Saved>,
}

impl StateFile {
    pub fn new(torrents: Vec<Saved>) -> StateFile {
        StateFile {
            version: STATE_VERSION,
            torrents,
        }
    }
}

/// Which file `torrents.json` is on disk (inode and length): the copy the
/// writer made, and so a good one to keep as the backup.
type Stamp = (u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path).ok()?;
    Some((md.ino(), md.len()))
}

/// What the state folder held.
pub(super) struct Loaded {
    pub torrents: Vec<Saved>,
    /// torrents.json as loaded, when it was good.
    stamp: Option<Stamp>,
}

fn parse(path: &Path) -> Result<Vec<Saved>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(state.torrents)
}

/// Reads the list of torrents: torrents.json, or when it is damaged its
/// backup (the damaged file is kept as torrents.json.damaged). None of
/// them: no torrents. Both damaged: an error (nothing is overwritten).
pub(super) fn load(dir: &Path) -> Result<Loaded, ServiceError> {
    let main = dir.join(STATE_FILE);
    if !main.exists() {
        return Ok(Loaded {
            torrents: Vec::new(),
            stamp: None,
        });
    }
    let why = match parse(&main) {
        Ok(torrents) => {
            return Ok(Loaded {
                torrents,
                stamp: stamp(&main),
            })
        }
        Err(e) => e,
    };
    let backup = dir.join(BACKUP_FILE);
    let torrents = parse(&backup).map_err(|bak_why| {
        ServiceError::Failed(format!(
            "{} is damaged ({why}) and so is {} ({bak_why}); move them away to start with no torrents",
            main.display(),
            backup.display()
        ))
    })?;
    let aside = dir.join(DAMAGED_FILE);
    std::fs::rename(&main, &aside)
        .map_err(|e| ServiceError::Failed(format!("{}: {e}", main.display())))?;
    tracing::warn!(
        "{} is damaged ({why}); starting from its backup {} ({} torrents); the damaged file is kept as {}",
        main.display(),
        backup.display(),
        torrents.len(),
        aside.display()
    );
    Ok(Loaded {
        torrents,
        stamp: None,
    })
}

/// A unique name for a temporary file beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never half of one: a temporary file of its own, synced, renamed,
/// and the folder synced.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temp_path(path);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path)
}

/// Replaces torrents.json; the copy it replaces becomes the backup if it
/// is the one `last` says we wrote (never a file damaged since).
fn write_state(dir: &Path, bytes: &[u8], last: Option<Stamp>) -> std::io::Result<Option<Stamp>> {
    let main = dir.join(STATE_FILE);
    if last.is_some() && stamp(&main) == last {
        let tmp = temp_path(&dir.join(BACKUP_FILE));
        std::fs::hard_link(&main, &tmp)?;
        if let Err(e) = std::fs::rename(&tmp, dir.join(BACKUP_FILE)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    write_atomic(&main, bytes)?;
    Ok(stamp(&main))
}

/// Save requests and how far the writer got.
pub(super) struct Saver {
    asked: AtomicU64,
    written: watch::Sender<Written>,
    wake: Notify,
}

/// The writer's last attempt: which request it covered, and why it failed
/// (a full disk, say): the file on disk is then the one before, whole.
#[derive(Clone, Debug, Default)]
struct Written {
    n: u64,
    error: Option<String>,
}

impl Saver {
    pub fn new() -> Arc<Saver> {
        Arc::new(Saver {
            asked: AtomicU64::new(0),
            written: watch::channel(Written::default()).0,
            wake: Notify::new(),
        })
    }

    /// Asks for a save of everything changed so far; returns its number.
    pub fn request(&self) -> u64 {
        let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        n
    }

    /// Waits until save `n` (or a later one) was written; the error of
    /// the attempt that covered it, if it failed.
    pub async fn wait(&self, n: u64) -> Result<(), String> {
        let mut rx = self.written.subscribe();
        let waited = tokio::time::timeout(SAVE_WAIT, rx.wait_for(|w| w.n >= n)).await;
        match waited {
            Ok(Ok(w)) => w.error.clone().map_or(Ok(()), Err),
            Ok(Err(_)) => Err("the service is stopping".into()),
            Err(_) => {
                tracing::warn!("the state file was not saved within {SAVE_WAIT:?}");
                Err(format!("not saved within {SAVE_WAIT:?}"))
            }
        }
    }

    /// Why the last save failed, while it is the last.
    pub fn error(&self) -> Option<String> {
        self.written.borrow().error.clone()
    }

    /// The writer: one task for the service's life. `snapshot` gives the
    /// torrents to write, or None once the service is gone.
    pub async fn run(
        self: Arc<Self>,
        dir: PathBuf,
        loaded: Option<Stamp>,
        snapshot: impl Fn() -> Option<Vec<Saved>>,
    ) {
        let mut last = loaded;
        loop {
            self.wake.notified().await;
            // Every request up to `n` changed the entries before asking, so
            // a snapshot taken now holds them all.
            let n = self.asked.load(Ordering::SeqCst);
            let Some(torrents) = snapshot() else { return };
            let path = dir.join(STATE_FILE);
            let error = match serde_json::to_vec(&StateFile::new(torrents)) {
                Ok(bytes) => {
                    let dir = dir.clone();
                    let wrote =
                        tokio::task::spawn_blocking(move || write_state(&dir, &bytes, last)).await;
                    match wrote {
                        Ok(Ok(s)) => {
                            last = s;
                            None
                        }
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(e.to_string()),
                    }
                }
                Err(e) => Some(e.to_string()),
            };
            let error = error.map(|e| format!("saving {}: {e}", path.display()));
            match (&error, self.error()) {
                (Some(e), None) => tracing::error!("{e}; kept the last list saved, trying again"),
                (None, Some(_)) => tracing::info!("saved {} again", path.display()),
                _ => {}
            }
            self.written.send_replace(Written { n, error });
        }
    }
}

impl Loaded {
    pub fn stamp(&self) -> Option<Stamp> {
        self.stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(name: &str) -> Saved {
        Saved {
            info_hash: "ab".repeat(20),
            name: name.into(),
            priorities: vec![Priority::Normal, Priority::Skip, Priority::High],
            ..Saved::default()
        }
    }

    fn write(dir: &Path, names: &[&str], last: Option<Stamp>) -> Option<Stamp> {
        let state = StateFile::new(names.iter().map(|n| saved(n)).collect());
        write_state(dir, &serde_json::to_vec(&state).unwrap(), last).unwrap()
    }

    #[test]
    fn priorities_are_letters_and_old_words_still_read() {
        let s = serde_json::to_value(saved("x")).unwrap();
        assert_eq!(s["priorities"], "nsh");
        let mut old = s.clone();
        old["priorities"] = serde_json::json!(["normal", "skip", "high"]);
        let back: Saved = serde_json::from_value(old).unwrap();
        assert_eq!(back.priorities, saved("x").priorities);
        let mut bad = s;
        bad["priorities"] = serde_json::json!("nq");
        assert!(serde_json::from_value::<Saved>(bad).is_err());
    }

    /// The previous good copy is the backup; a damaged torrents.json is
    /// set aside and the backup used; a damaged file is never backed up.
    #[test]
    fn a_damaged_state_file_starts_from_its_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(load(dir).unwrap().torrents.is_empty());
        let s1 = write(dir, &["one"], None);
        assert!(!dir.join(BACKUP_FILE).exists(), "no earlier copy to keep");
        let s2 = write(dir, &["one", "two"], s1);
        assert_eq!(parse(&dir.join(BACKUP_FILE)).unwrap().len(), 1);
        // Cut short behind our back: not taken as the backup next time.
        let main = dir.join(STATE_FILE);
        let len = std::fs::metadata(&main).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&main).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let loaded = load(dir).unwrap();
        assert_eq!(loaded.torrents.len(), 1, "from the backup");
        assert!(loaded.stamp().is_none());
        assert!(dir.join(DAMAGED_FILE).exists() && !main.exists());
        write(dir, &["three"], s2);
        assert_eq!(parse(&dir.join(BACKUP_FILE)).unwrap().len(), 1);
        assert_eq!(parse(&main).unwrap()[0].name, "three");
        // Both damaged: refused, nothing overwritten.
        std::fs::write(&main, b"{").unwrap();
        std::fs::write(dir.join(BACKUP_FILE), b"").unwrap();
        let err = load(dir).err().expect("refused");
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(std::fs::read(&main).unwrap(), b"{");
        // No temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
