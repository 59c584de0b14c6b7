//! The watch folder (`shoal serve --watch-dir DIR`): each `.torrent` or
//! `.magnet` file that appears in it is added to the service, then renamed
//! `NAME.added`, or `NAME.invalid` with the reason in `NAME.invalid.txt`
//! beside it. A file in a sub-folder goes to that sub-folder of the
//! download folder (`DIR/films/x.torrent` → `films/`).
//!
//! The folder is polled once a second rather than watched with inotify:
//! no new dependency, it works on network and FUSE file systems (where a
//! browser or another machine may write and inotify sees nothing), and a
//! file must be seen twice at the same size and time anyway before it is
//! read, so a file still being written is waited for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{AddRequest, AddSource, Service, ServiceError, MAX_TORRENT_SIZE};

/// How often the folder is looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// A magnet file longer than this is refused (the API's cap on a magnet).
const MAX_MAGNET_FILE: u64 = 64 << 10;
/// Sub-folders looked into, at most this deep (`DIR/a/b/x.torrent`).
const MAX_DEPTH: usize = 4;

/// What a listing says of one file: its size and modification time.
pub type Seen = (u64, Option<SystemTime>);

/// Files seen, until they stop changing. Pure: fed listings, it says
/// which files are ready to read.
#[derive(Default)]
pub struct Settle {
    last: HashMap<PathBuf, Seen>,
}

impl Settle {
    /// The files of `listing` that had the same size and time in the
    /// previous listing (and are not empty). Files gone are forgotten.
    pub fn ready(&mut self, listing: HashMap<PathBuf, Seen>) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = listing
            .iter()
            .filter(|(p, s)| s.0 > 0 && self.last.get(*p) == Some(s))
            .map(|(p, _)| p.clone())
            .collect();
        out.sort();
        self.last = listing;
        for p in &out {
            self.last.remove(p);
        }
        out
    }
}

/// Whether `name` is one to add: `*.torrent` or `*.magnet`, not hidden.
pub fn wanted(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.') && (lower.ends_with(".torrent") || lower.ends_with(".magnet"))
}

/// The regular files to add under `dir` (links are not followed), with
/// their size and time.
fn list(dir: &Path, depth: usize, out: &mut HashMap<PathBuf, Seen>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if md.is_dir() && depth < MAX_DEPTH && !name.starts_with('.') {
            list(&e.path(), depth + 1, out);
        } else if md.is_file() && wanted(&name) {
            out.insert(e.path(), (md.len(), md.modified().ok()));
        }
    }
}

/// Reads a file without following a link, at most `cap` bytes.
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > cap {
        return Err(format!("larger than {} KiB", cap >> 10));
    }
    Ok(buf)
}

/// What to add for the file at `path`: a .torrent's bytes, or the magnet
/// link a .magnet file holds (its first line that is not empty).
fn source_of(path: &Path) -> Result<AddSource, String> {
    let magnet = path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("magnet"));
    if !magnet {
        return read_capped(path, MAX_TORRENT_SIZE as u64).map(AddSource::Torrent);
    }
    let bytes = read_capped(path, MAX_MAGNET_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("empty")?;
    if !line.to_ascii_lowercase().starts_with("magnet:") {
        return Err("its first line is not a magnet: link".into());
    }
    Ok(AddSource::Magnet(line.to_string()))
}

/// `NAME` + `suffix`, beside it.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The download folder of a file found in a sub-folder of the watch
/// folder: that sub-folder's path, relative to the download root.
fn folder_of(watch: &Path, file: &Path) -> Option<String> {
    let rel = file.parent()?.strip_prefix(watch).ok()?;
    (!rel.as_os_str().is_empty()).then(|| rel.to_string_lossy().into_owned())
}

/// Where a file of the sub-folder `folder` goes: a sub-folder that makes
/// a category name is that category (its torrents go to the folder of
/// that name); a deeper one is only a download folder.
fn category_or_dir(folder: Option<String>) -> (Option<String>, Option<String>) {
    match folder {
        Some(f) if super::categories::check_name(&f).is_ok() => (Some(f), None),
        dir => (None, dir),
    }
}

/// Adds one file; renames it by the outcome.
async fn take(svc: &Service, watch: &Path, path: &Path) {
    let shown = path.display().to_string();
    let result = match source_of(path) {
        Ok(source) => {
            let (category, download_dir) = category_or_dir(folder_of(watch, path));
            svc.add(AddRequest {
                source,
                download_dir,
                only: None,
                paused: false,
                stop_after_metadata: false,
                overwrite: false,
                category,
            })
            .await
            .map_err(|e| match e {
                ServiceError::Duplicate(h) => format!("torrent {h} is already in the service"),
                e => e.to_string(),
            })
        }
        Err(e) => Err(e),
    };
    let renamed = match &result {
        Ok(hash) => {
            tracing::info!(hash = %hash, "watch folder: added {shown}");
            std::fs::rename(path, with_suffix(path, ".added"))
        }
        Err(why) => {
            tracing::warn!("watch folder: {shown}: {why}");
            let note = with_suffix(path, ".invalid.txt");
            if let Err(e) = std::fs::write(&note, format!("{why}\n")) {
                tracing::warn!("watch folder: {}: {e}", note.display());
            }
            std::fs::rename(path, with_suffix(path, ".invalid"))
        }
    };
    if let Err(e) = renamed {
        tracing::warn!(
            "watch folder: cannot rename {shown}: {e}; removing it from the folder is up to you"
        );
    }
}

/// Watches `dir` for the service's life.
pub async fn run(svc: Service, dir: PathBuf) {
    let mut settle = Settle::default();
    // A file that could not be renamed is not added again and again.
    let mut done: HashMap<PathBuf, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let d = dir.clone();
        let Ok(mut listing) = tokio::task::spawn_blocking(move || {
            let mut out = HashMap::new();
            list(&d, 0, &mut out);
            out
        })
        .await
        else {
            continue;
        };
        done.retain(|p, s| listing.get(p) == Some(s));
        listing.retain(|p, _| !done.contains_key(p));
        let seen = listing.clone();
        for path in settle.ready(listing) {
            take(&svc, &dir, &path).await;
            if path.exists() {
                if let Some(s) = seen.get(&path) {
                    done.insert(path, *s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(files: &[(&str, u64, u64)]) -> HashMap<PathBuf, Seen> {
        files
            .iter()
            .map(|(p, len, t)| {
                (
                    PathBuf::from(p),
                    (*len, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(*t))),
                )
            })
            .collect()
    }

    #[test]
    fn a_file_is_ready_once_it_stops_changing() {
        let mut s = Settle::default();
        assert!(s.ready(listing(&[("a.torrent", 10, 1)])).is_empty());
        // Still growing.
        assert!(s.ready(listing(&[("a.torrent", 20, 2)])).is_empty());
        // Same size, touched again: not yet.
        assert!(s.ready(listing(&[("a.torrent", 20, 3)])).is_empty());
        assert_eq!(
            s.ready(listing(&[("a.torrent", 20, 3), ("b.magnet", 0, 3)])),
            [PathBuf::from("a.torrent")]
        );
        // Empty files wait (a browser makes the file before it writes).
        assert!(s.ready(listing(&[("b.magnet", 0, 3)])).is_empty());
        // Taken once: not offered again while it stays the same.
        assert!(s.ready(listing(&[("b.magnet", 5, 4)])).is_empty());
        assert_eq!(
            s.ready(listing(&[("b.magnet", 5, 4)])),
            [PathBuf::from("b.magnet")]
        );
    }

    #[test]
    fn names_and_folders() {
        for ok in ["x.torrent", "X.TORRENT", "a b.magnet"] {
            assert!(wanted(ok), "{ok}");
        }
        for no in [
            ".x.torrent",
            "x.torrent.added",
            "x.torrent.invalid",
            "x.torrent.invalid.txt",
            "x.torrent.part",
            "x.txt",
        ] {
            assert!(!wanted(no), "{no}");
        }
        let w = Path::new("/w");
        assert_eq!(folder_of(w, Path::new("/w/x.torrent")), None);
        assert_eq!(
            folder_of(w, Path::new("/w/films/x.torrent")).as_deref(),
            Some("films")
        );
        assert_eq!(
            with_suffix(Path::new("/w/x.torrent"), ".added"),
            Path::new("/w/x.torrent.added")
        );
    }
}
