//! Which files under an output folder shoal may write to.
//!
//! A download must never destroy a file the user put there. Each torrent
//! downloaded into a folder `DIR` keeps a small record,
//! `DIR/.shoal/<info-hash>.json`, listing the files shoal created or took
//! over. The record sits beside the data rather than in a global state
//! folder so it moves, and is deleted, with the data, and so a folder that
//! was never given to shoal has none. It is written before any data file is
//! created, so a process killed at any point leaves no file that shoal would
//! later refuse as foreign.
//!
//! Before a download writes anything, every file of the torrent already on
//! disk is classified: one in the record is shoal's and resumes; one that is
//! not but whose content verifies (right length, every piece touching it
//! good) is the same data and is taken over; anything else is refused
//! unless `--overwrite` is given. `DIR/.shoal/<info-hash>.lock` is held
//! (flock) for as long as the download runs, so a second shoal process on
//! the same torrent and folder is refused, and files another running shoal
//! owns are refused even with `--overwrite`; it is deleted when the run
//! ends.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::metainfo::{safe_join, Metainfo};
use crate::store::PieceCheck;
use crate::units::human_bytes;

/// Folder under the output folder that holds the records.
pub const DIR_NAME: &str = ".shoal";
const VERSION: u64 = 1;
/// Files named in a refusal, at most; the rest are counted.
const NAMED: usize = 4;

#[derive(Debug, Error)]
pub enum OwnershipError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error(
        "refusing to overwrite {what} not created by shoal that {verb} not match the torrent: {list}; move {them} away or pass --overwrite to replace {them}"
    )]
    Foreign {
        what: String,
        verb: &'static str,
        them: &'static str,
        list: String,
    },
    #[error("another shoal process is already downloading this torrent into {0}")]
    Busy(PathBuf),
    #[error("{0} is being downloaded by another shoal process (torrent {1}); not touching it")]
    OwnedByRunning(PathBuf, String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OwnershipError + '_ {
    move |err| OwnershipError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// The files of one torrent in one folder that shoal owns.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub files: BTreeSet<String>,
}

fn record_path(dir: &Path, info_hash_hex: &str) -> PathBuf {
    dir.join(DIR_NAME).join(format!("{info_hash_hex}.json"))
}

fn lock_path(dir: &Path, info_hash_hex: &str) -> PathBuf {
    dir.join(DIR_NAME).join(format!("{info_hash_hex}.lock"))
}

fn key(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Record {
    /// The record of `info_hash_hex` under `dir`; empty when there is none.
    /// An unreadable record is treated as none: the worst that follows is
    /// a refusal the user can override, never an overwrite.
    pub fn load(dir: &Path, info_hash_hex: &str) -> Record {
        let path = record_path(dir, info_hash_hex);
        let Ok(bytes) = std::fs::read(&path) else {
            return Record::default();
        };
        Record::parse(&bytes).unwrap_or_else(|| {
            tracing::warn!("{}: not a shoal record; ignoring it", path.display());
            Record::default()
        })
    }

    fn parse(bytes: &[u8]) -> Option<Record> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        if v.get("version")?.as_u64()? != VERSION {
            return None;
        }
        let files = v
            .get("files")?
            .as_array()?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        Some(Record { files })
    }

    pub fn owns(&self, rel: &Path) -> bool {
        self.files.contains(&key(rel))
    }

    /// Writes the record atomically (temporary file, fsync, rename).
    pub fn save(&self, dir: &Path, meta: &Metainfo) -> Result<(), OwnershipError> {
        let hex = meta.info_hash.hex();
        let path = record_path(dir, &hex);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::json!({
            "version": VERSION,
            "info_hash": hex,
            "name": meta.name,
            "files": self.files,
        });
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(io_err(&path))
    }
}

/// Held while a download runs; released when dropped (or the process
/// dies). Dropped, it also deletes its file, which nobody needs once no
/// one holds it: no `.lock` is left beside the data after a run.
#[derive(Debug)]
pub struct Lock {
    /// Holds the flock until dropped.
    _file: File,
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Deleted while still held: whoever opened the old file and waits
        // for it sees, once they have it, that it is no longer the one
        // at the path, and takes a new one (`acquire`).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `file` is still the file at `path` (not deleted or replaced
/// since it was opened).
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

impl Lock {
    /// Locks the torrent's record under `dir`, creating `dir/.shoal`.
    pub fn acquire(dir: &Path, info_hash_hex: &str) -> Result<Lock, OwnershipError> {
        let folder = dir.join(DIR_NAME);
        std::fs::create_dir_all(&folder).map_err(io_err(&folder))?;
        let path = lock_path(dir, info_hash_hex);
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            if !try_flock(&file).map_err(io_err(&path))? {
                return Err(OwnershipError::Busy(dir.to_path_buf()));
            }
            // Its holder may have deleted it between our open and our
            // lock: then the lock is on a file nobody else will see.
            if still_at(&file, &path) {
                return Ok(Lock { _file: file, path });
            }
        }
    }
}

/// Whether another process holds the lock of the record at `lock`.
fn held_elsewhere(lock: &Path) -> bool {
    let Ok(file) = OpenOptions::new().write(true).open(lock) else {
        return false;
    };
    // Taking it ourselves for a moment is harmless: it is dropped at once.
    matches!(try_flock(&file), Ok(false))
}

/// A file of the torrent found on disk, as the check before a download saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub file: usize,
    /// Its length on disk.
    pub len: u64,
    pub owned: bool,
    /// Right length, and every piece touching it verified.
    pub verifies: bool,
}

/// Classifies the torrent's data files that exist on disk (`on_disk[i]` is
/// the length of file `i` there, or None), given the record and the result
/// of checking every piece. Pure: no I/O.
///
/// A file not in the record verifies when it has the right length, every
/// piece lying wholly inside it is good, and at least one piece touching
/// it is. A piece it shares with a neighbour that is absent or incomplete
/// cannot be checked from this file alone, so it neither proves nor
/// disproves it: a user who copies back the big file of a torrent must not
/// be refused because the small file before it is missing.
pub fn classify(
    meta: &Metainfo,
    record: &Record,
    on_disk: &[Option<u64>],
    checks: &[PieceCheck],
) -> Vec<Found> {
    let mut out = Vec::new();
    for (i, f) in meta.files.iter().enumerate() {
        let Some(len) = on_disk.get(i).copied().flatten() else {
            continue;
        };
        if !f.is_data() {
            continue;
        }
        let good = |p: u32| checks.get(p as usize) == Some(&PieceCheck::Good);
        let inside = |p: u32| {
            let start = p as u64 * meta.piece_length;
            let end = (start + meta.piece_length).min(meta.total_length);
            start >= f.offset && end <= f.offset + f.length
        };
        let mut pieces = meta.file_pieces(i);
        let verifies = len == f.length
            && pieces.clone().all(|p| good(p) || !inside(p))
            && (f.length == 0 || pieces.any(good));
        out.push(Found {
            file: i,
            len,
            owned: record.owns(&f.path),
            verifies,
        });
    }
    out
}

/// What `prepare` decided: the lock to hold, and the record now saved.
#[derive(Debug)]
pub struct Claim {
    pub lock: Lock,
    pub record: Record,
    /// Files shoal owned that were longer than the torrent says, now cut.
    pub truncated: Vec<PathBuf>,
}

/// Length of each data file on disk (None: absent). Only regular files
/// count; anything else at a file's path is left for the store to refuse.
pub fn lengths_on_disk(meta: &Metainfo, dir: &Path) -> Vec<Option<u64>> {
    meta.files
        .iter()
        .map(|f| {
            let path = safe_join(dir, &f.path)?;
            let md = std::fs::symlink_metadata(path).ok()?;
            md.is_file().then_some(md.len())
        })
        .collect()
}

/// Decides, before a byte of data is written, whether a download may use
/// `dir`: refuses foreign files that do not verify (unless `overwrite`),
/// then locks the torrent's record, saves it claiming every data file, and
/// cuts files shoal owns that are longer than the torrent says.
pub fn prepare(
    meta: &Metainfo,
    dir: &Path,
    checks: &[PieceCheck],
    overwrite: bool,
    selected: Option<&[bool]>,
) -> Result<Claim, OwnershipError> {
    let hex = meta.info_hash.hex();
    let record = Record::load(dir, &hex);
    // Files left out of a selection are never touched: not checked, not
    // claimed, not cut.
    let wanted = |i: usize| selected.is_none_or(|s| s.get(i).copied().unwrap_or(false));
    let mut on_disk = lengths_on_disk(meta, dir);
    for (i, len) in on_disk.iter_mut().enumerate() {
        if !wanted(i) {
            *len = None;
        }
    }
    let found = classify(meta, &record, &on_disk, checks);
    let foreign: Vec<&Found> = found.iter().filter(|f| !f.owned && !f.verifies).collect();
    if !foreign.is_empty() {
        // Files a running shoal is filling in are never taken, --overwrite or not.
        for f in &foreign {
            let path = &meta.files[f.file].path;
            if let Some(other) = running_owner(dir, &hex, path) {
                return Err(OwnershipError::OwnedByRunning(dir.join(path), other));
            }
        }
        if !overwrite {
            return Err(refusal(meta, dir, &foreign));
        }
        for f in &foreign {
            tracing::warn!(
                "{}: replacing (--overwrite)",
                dir.join(&meta.files[f.file].path).display()
            );
        }
    }
    let lock = Lock::acquire(dir, &hex)?;
    let mut record = Record::load(dir, &hex);
    for (_, f) in meta
        .files
        .iter()
        .enumerate()
        .filter(|(i, f)| f.is_data() && wanted(*i))
    {
        record.files.insert(key(&f.path));
    }
    record.save(dir, meta)?;
    let mut truncated = Vec::new();
    for (i, f) in meta.files.iter().enumerate() {
        if f.is_data() && on_disk[i].is_some_and(|len| len > f.length) {
            let Some(path) = safe_join(dir, &f.path) else {
                continue;
            };
            let file = OpenOptions::new()
                .write(true)
                .custom_flags_nofollow()
                .open(&path)
                .map_err(io_err(&path))?;
            file.set_len(f.length).map_err(io_err(&path))?;
            truncated.push(path);
        }
    }
    Ok(Claim {
        lock,
        record,
        truncated,
    })
}

/// The info-hash of another torrent whose running download owns `rel`.
fn running_owner(dir: &Path, own_hex: &str, rel: &Path) -> Option<String> {
    let entries = std::fs::read_dir(dir.join(DIR_NAME)).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".json") else {
            continue;
        };
        if hex == own_hex || hex.len() != 40 {
            continue;
        }
        if Record::load(dir, hex).owns(rel) && held_elsewhere(&lock_path(dir, hex)) {
            return Some(hex.to_string());
        }
    }
    None
}

fn refusal(meta: &Metainfo, dir: &Path, foreign: &[&Found]) -> OwnershipError {
    let mut list: Vec<String> = foreign
        .iter()
        .take(NAMED)
        .map(|f| {
            let e = &meta.files[f.file];
            let path = dir.join(&e.path);
            if f.len == e.length {
                format!("{} (different content)", path.display())
            } else {
                format!(
                    "{} ({} on disk, torrent says {})",
                    path.display(),
                    human_bytes(f.len),
                    human_bytes(e.length)
                )
            }
        })
        .collect();
    if foreign.len() > NAMED {
        list.push(format!("and {} more", foreign.len() - NAMED));
    }
    let one = foreign.len() == 1;
    OwnershipError::Foreign {
        what: if one {
            "a file".into()
        } else {
            format!("{} files", foreign.len())
        },
        verb: if one { "does" } else { "do" },
        them: if one { "it" } else { "them" },
        list: list.join(", "),
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::NewTorrent;

    fn meta(files: &[(&str, u64)], piece_length: u64) -> Metainfo {
        let total: u64 = files.iter().map(|f| f.1).sum();
        let pieces = total.div_ceil(piece_length) as usize;
        let t = NewTorrent {
            name: "t".into(),
            files: Some(
                files
                    .iter()
                    .map(|(p, n)| (vec![p.to_string()], *n))
                    .collect(),
            ),
            piece_length,
            pieces: vec![0; 20 * pieces],
            ..Default::default()
        };
        Metainfo::from_bytes(&t.to_bytes()).unwrap()
    }

    #[test]
    fn classify_needs_length_and_every_touching_piece() {
        // a: pieces 0-1, b: pieces 1-2 (piece 1 straddles), c: piece 3.
        let m = meta(&[("a", 20), ("b", 20), ("c", 16)], 16);
        let good = PieceCheck::Good;
        let bad = PieceCheck::Bad;
        let checks = [good, good, bad, good];
        let rec = Record {
            files: [key(Path::new("t/c"))].into_iter().collect(),
        };
        let found = classify(&m, &rec, &[Some(20), Some(20), Some(99)], &checks);
        assert_eq!(
            found,
            vec![
                Found {
                    file: 0,
                    len: 20,
                    owned: false,
                    verifies: true
                },
                // Only shared pieces, one of them good.
                Found {
                    file: 1,
                    len: 20,
                    owned: false,
                    verifies: true
                },
                Found {
                    file: 2,
                    len: 99,
                    owned: true,
                    verifies: false
                },
            ]
        );
        // A file of the right length but an unverified piece does not verify;
        // nor does one with good pieces but extra bytes at its end.
        let found = classify(&m, &rec, &[Some(21), None, None], &[good; 4]);
        assert!(!found[0].verifies);
    }

    #[test]
    fn record_round_trip_and_junk() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta(&[("a", 20)], 16);
        std::fs::create_dir_all(dir.path().join(DIR_NAME)).unwrap();
        let rec = Record {
            files: [key(Path::new("t/a"))].into_iter().collect(),
        };
        rec.save(dir.path(), &m).unwrap();
        assert_eq!(Record::load(dir.path(), &m.info_hash.hex()), rec);
        std::fs::write(record_path(dir.path(), &m.info_hash.hex()), b"{nope").unwrap();
        assert_eq!(
            Record::load(dir.path(), &m.info_hash.hex()),
            Record::default()
        );
    }

    #[test]
    fn refusal_names_files_and_flag_once() {
        let m = meta(&[("a", 20), ("b", 20)], 16);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/a"), b"mine, 7").unwrap();
        std::fs::write(dir.path().join("t/b"), [1u8; 20]).unwrap();
        let checks = [PieceCheck::Bad; 3];
        let err = prepare(&m, dir.path(), &checks, false, None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("2 files"), "{msg}");
        assert!(
            msg.contains("t/a (7 B on disk, torrent says 20 B)"),
            "{msg}"
        );
        assert!(msg.contains("t/b (different content)"), "{msg}");
        assert_eq!(msg.matches("--overwrite").count(), 1, "{msg}");
        // Nothing was written: no record folder, files untouched.
        assert!(!dir.path().join(DIR_NAME).exists());
        assert_eq!(std::fs::read(dir.path().join("t/a")).unwrap(), b"mine, 7");
        // With --overwrite the files are claimed and the long one is cut.
        std::fs::write(dir.path().join("t/b"), [1u8; 30]).unwrap();
        let claim = prepare(&m, dir.path(), &checks, true, None).unwrap();
        assert_eq!(claim.record.files.len(), 2);
        assert_eq!(std::fs::metadata(dir.path().join("t/b")).unwrap().len(), 20);
        // While it is held, a second download of the torrent is refused.
        let again = prepare(&m, dir.path(), &checks, false, None).unwrap_err();
        assert!(matches!(again, OwnershipError::Busy(_)), "{again}");
        let lock = lock_path(dir.path(), &m.info_hash.hex());
        assert!(lock.exists());
        drop(claim);
        // Released, its file is gone: no `.lock` is left after a run.
        assert!(!lock.exists());
        // Once released, the files are shoal's and resume without --overwrite.
        prepare(&m, dir.path(), &checks, false, None).unwrap();
    }

    /// A lock file deleted by its holder between our open and our flock
    /// is not taken as the lock: the next holder locks the file at the
    /// path, which the holder after it finds locked.
    #[test]
    fn a_lock_deleted_under_us_is_taken_anew() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(20);
        let first = Lock::acquire(dir.path(), &hex).unwrap();
        let path = lock_path(dir.path(), &hex);
        // Someone opened the file while it was held…
        let stale = OpenOptions::new().write(true).open(&path).unwrap();
        drop(first);
        // …and gets its flock now, but it is not the file at the path.
        assert!(try_flock(&stale).unwrap() && !still_at(&stale, &path));
        let second = Lock::acquire(dir.path(), &hex).unwrap();
        assert!(path.exists());
        assert!(matches!(
            Lock::acquire(dir.path(), &hex),
            Err(OwnershipError::Busy(_))
        ));
        drop(second);
        assert!(!path.exists());
    }

    #[test]
    fn files_of_a_running_download_are_never_taken() {
        let dir = tempfile::tempdir().unwrap();
        let a = meta(&[("x", 20)], 16);
        let b = meta(&[("x", 20), ("y", 4)], 16);
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/x"), [7u8; 20]).unwrap();
        let _running = prepare(&a, dir.path(), &[PieceCheck::Bad; 2], true, None).unwrap();
        let err = prepare(&b, dir.path(), &[PieceCheck::Bad; 2], true, None).unwrap_err();
        assert!(matches!(err, OwnershipError::OwnedByRunning(..)), "{err}");
        assert_eq!(std::fs::read(dir.path().join("t/x")).unwrap(), [7u8; 20]);
    }
}
