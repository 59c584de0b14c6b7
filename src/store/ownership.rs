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
//! good) is the same data and is taken over — recorded as adopted, so that
//! removing the torrent with its data never deletes it; anything else is
//! refused unless `--overwrite` is given. `DIR/.shoal/<info-hash>.lock` is
//! held (flock) for as long as the download runs: one descriptor per
//! torrent, however many files it has (in the service, a torrent complete
//! at its start takes it only before it writes: a thousand seeds would
//! hold a thousand descriptors; see `Store::lock_on_write`). A second shoal process on the same
//! torrent and folder is refused by it, and files another running shoal
//! owns — its record in this folder or in any folder above it names them
//! and its lock is held — are refused even with `--overwrite`. The lock
//! file is deleted when the run ends.
//!
//! Everything here goes through a [`Root`]: no record, lock or file is
//! reached through a symbolic link below the trusted folder.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::metainfo::Metainfo;
use crate::store::confine::{self, Mode, Root};
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
    #[error("{0}: refusing to go through a symbolic link")]
    Symlink(PathBuf),
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

/// The error of an operation on `rel` under `root`.
fn io_err(root: &Root, rel: &Path) -> impl FnOnce(io::Error) -> OwnershipError {
    let path = root.path().join(rel);
    move |err| {
        if confine::is_link_error(&err) {
            OwnershipError::Symlink(path)
        } else {
            OwnershipError::Io { path, err }
        }
    }
}

/// The files of one torrent in one folder that shoal owns.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    /// Every file shoal may write: made by it, or taken over.
    pub files: BTreeSet<String>,
    /// Those of `files` that were there, complete, before shoal came: they
    /// are the user's, and a removal "with its data" keeps them.
    pub adopted: BTreeSet<String>,
}

fn record_path(info_hash_hex: &str) -> PathBuf {
    Path::new(DIR_NAME).join(format!("{info_hash_hex}.json"))
}

fn lock_path(info_hash_hex: &str) -> PathBuf {
    Path::new(DIR_NAME).join(format!("{info_hash_hex}.lock"))
}

/// The part file of a torrent whose selection leaves files out.
pub fn part_path(info_hash_hex: &str) -> PathBuf {
    Path::new(DIR_NAME).join(format!("{info_hash_hex}.part"))
}

fn key(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Record {
    /// The record of `info_hash_hex` under `root`; empty when there is
    /// none. An unreadable record is treated as none: the worst that
    /// follows is a refusal the user can override, never an overwrite.
    pub fn load(root: &Root, info_hash_hex: &str) -> Record {
        let rel = record_path(info_hash_hex);
        let mut bytes = Vec::new();
        let read = root
            .open(&rel, Mode::Read)
            .and_then(|f| f.take(MAX_RECORD).read_to_end(&mut bytes));
        if read.is_err() {
            return Record::default();
        }
        Record::parse(&bytes).unwrap_or_else(|| {
            tracing::warn!(
                "{}: not a shoal record; ignoring it",
                root.path().join(&rel).display()
            );
            Record::default()
        })
    }

    fn parse(bytes: &[u8]) -> Option<Record> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        if v.get("version")?.as_u64()? != VERSION {
            return None;
        }
        let list = |name: &str| -> BTreeSet<String> {
            v.get(name)
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        };
        v.get("files")?.as_array()?;
        let files = list("files");
        let adopted = list("adopted").intersection(&files).cloned().collect();
        Some(Record { files, adopted })
    }

    pub fn owns(&self, rel: &Path) -> bool {
        self.files.contains(&key(rel))
    }

    /// Whether shoal made `rel` (owns it and did not take it over).
    pub fn created(&self, rel: &Path) -> bool {
        let k = key(rel);
        self.files.contains(&k) && !self.adopted.contains(&k)
    }

    /// Writes the record atomically (temporary file, fsync, rename).
    pub fn save(&self, root: &Root, meta: &Metainfo) -> Result<(), OwnershipError> {
        let hex = meta.info_hash.hex();
        let rel = record_path(&hex);
        let body = serde_json::json!({
            "version": VERSION,
            "info_hash": hex,
            "name": meta.name,
            "files": self.files,
            "adopted": self.adopted,
        });
        root.replace(&rel, body.to_string().as_bytes())
            .map_err(io_err(root, &rel))
    }
}

/// A record longer than this is not read (a torrent's files are capped).
const MAX_RECORD: u64 = 256 << 20;

/// Held while a download runs; released when dropped (or the process
/// dies). Dropped, it also deletes its file, which nobody needs once no
/// one holds it: no `.lock` is left beside the data after a run.
#[derive(Debug)]
pub struct Lock {
    /// Holds the flock until dropped.
    _file: File,
    root: Root,
    rel: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Deleted while still held: whoever opened the old file and waits
        // for it sees, once they have it, that it is no longer the one
        // at the path, and takes a new one (`acquire`).
        let _ = self.root.remove_file(&self.rel);
    }
}

/// Whether `file` is still the file at `rel` under `root` (not deleted or
/// replaced since it was opened).
fn still_at(file: &File, root: &Root, rel: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), root.metadata(rel)) {
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
    /// Locks the torrent's record under `root`, creating `.shoal` there.
    pub fn acquire(root: &Root, info_hash_hex: &str) -> Result<Lock, OwnershipError> {
        let rel = lock_path(info_hash_hex);
        loop {
            let file = root.open(&rel, Mode::Write).map_err(io_err(root, &rel))?;
            if !try_flock(&file).map_err(io_err(root, &rel))? {
                return Err(OwnershipError::Busy(root.path()));
            }
            // Its holder may have deleted it between our open and our
            // lock: then the lock is on a file nobody else will see.
            if still_at(&file, root, &rel) {
                return Ok(Lock {
                    _file: file,
                    root: root.clone(),
                    rel,
                });
            }
        }
    }
}

/// Whether another process holds the lock file at `lock`.
fn held_elsewhere(lock: &Path) -> bool {
    let Ok(file) = File::open(lock) else {
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
    /// None once let go: a torrent complete at its start takes it again
    /// only when it writes (`Store::lock_on_write`).
    pub lock: Option<Lock>,
    pub record: Record,
    /// Files shoal owned that were longer than the torrent says, now cut.
    pub truncated: Vec<PathBuf>,
}

/// Length of each data file on disk (None: absent). Only regular files
/// count; anything else at a file's path is left for the store to refuse.
pub fn lengths_on_disk(meta: &Metainfo, root: &Root) -> Vec<Option<u64>> {
    meta.files
        .iter()
        .map(|f| {
            let md = root.metadata(&f.path).ok()?;
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
    root: &Root,
    checks: &[PieceCheck],
    overwrite: bool,
    selected: Option<&[bool]>,
) -> Result<Claim, OwnershipError> {
    let hex = meta.info_hash.hex();
    let dir = root.path();
    let record = Record::load(root, &hex);
    // Files left out of a selection are never touched: not checked, not
    // claimed, not cut.
    let wanted = |i: usize| selected.is_none_or(|s| s.get(i).copied().unwrap_or(false));
    let mut on_disk = lengths_on_disk(meta, root);
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
            if let Some(other) = running_owner(&dir, &hex, path) {
                return Err(OwnershipError::OwnedByRunning(dir.join(path), other));
            }
        }
        if !overwrite {
            return Err(refusal(meta, &dir, &foreign));
        }
        for f in &foreign {
            tracing::warn!(
                "{}: replacing (--overwrite)",
                dir.join(&meta.files[f.file].path).display()
            );
        }
    }
    let lock = Lock::acquire(root, &hex)?;
    let mut record = Record::load(root, &hex);
    let before = record.clone();
    // The user's complete files, found here before shoal wrote a byte.
    for f in found.iter().filter(|f| !f.owned && f.verifies) {
        record.adopted.insert(key(&meta.files[f.file].path));
    }
    for (_, f) in meta
        .files
        .iter()
        .enumerate()
        .filter(|(i, f)| f.is_data() && wanted(*i))
    {
        record.files.insert(key(&f.path));
    }
    // Unchanged (every restart of a torrent already claimed): not written
    // again, so a thousand torrents restart without a thousand fsyncs.
    if record != before || root.metadata(&record_path(&hex)).is_err() {
        record.save(root, meta)?;
    }
    let mut truncated = Vec::new();
    for (i, f) in meta.files.iter().enumerate() {
        if f.is_data() && on_disk[i].is_some_and(|len| len > f.length) {
            let file = root
                .open(&f.path, Mode::Write)
                .map_err(io_err(root, &f.path))?;
            file.set_len(f.length).map_err(io_err(root, &f.path))?;
            truncated.push(dir.join(&f.path));
        }
    }
    Ok(Claim {
        lock: Some(lock),
        record,
        truncated,
    })
}

/// The info-hash of another torrent whose running download owns `rel`
/// under `dir`: its record, in `dir` or in a folder above it (the same
/// file reached as `movie/video.mkv` from there), names the file and its
/// lock is held. Only records are read here, never data.
fn running_owner(dir: &Path, own_hex: &str, rel: &Path) -> Option<String> {
    let file = dir.join(rel);
    for folder in dir.ancestors() {
        let Ok(rel) = file.strip_prefix(folder) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(folder.join(DIR_NAME)) else {
            continue;
        };
        let here = Root::trusting(folder);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            if (hex == own_hex && folder == dir) || hex.len() != 40 {
                continue;
            }
            if Record::load(&here, hex).owns(rel) && held_elsewhere(&folder.join(lock_path(hex))) {
                return Some(hex.to_string());
            }
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
            ..Record::default()
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
            files: [key(Path::new("t/a")), key(Path::new("t/b"))]
                .into_iter()
                .collect(),
            adopted: [key(Path::new("t/b"))].into_iter().collect(),
        };
        rec.save(&Root::at(dir.path()), &m).unwrap();
        assert_eq!(Record::load(&Root::at(dir.path()), &m.info_hash.hex()), rec);
        std::fs::write(dir.path().join(record_path(&m.info_hash.hex())), b"{nope").unwrap();
        assert_eq!(
            Record::load(&Root::at(dir.path()), &m.info_hash.hex()),
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
        let err = prepare(&m, &Root::at(dir.path()), &checks, false, None).unwrap_err();
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
        let claim = prepare(&m, &Root::at(dir.path()), &checks, true, None).unwrap();
        assert_eq!(claim.record.files.len(), 2);
        assert_eq!(std::fs::metadata(dir.path().join("t/b")).unwrap().len(), 20);
        // While it is held, a second download of the torrent is refused.
        let again = prepare(&m, &Root::at(dir.path()), &checks, false, None).unwrap_err();
        assert!(matches!(again, OwnershipError::Busy(_)), "{again}");
        let lock = dir.path().join(lock_path(&m.info_hash.hex()));
        assert!(lock.exists());
        drop(claim);
        // Released, its file is gone: no `.lock` is left after a run.
        assert!(!lock.exists());
        // Once released, the files are shoal's and resume without --overwrite.
        prepare(&m, &Root::at(dir.path()), &checks, false, None).unwrap();
    }

    /// A lock file deleted by its holder between our open and our flock
    /// is not taken as the lock: the next holder locks the file at the
    /// path, which the holder after it finds locked.
    #[test]
    fn a_lock_deleted_under_us_is_taken_anew() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(20);
        let root = Root::at(dir.path());
        let first = Lock::acquire(&root, &hex).unwrap();
        let path = dir.path().join(lock_path(&hex));
        // Someone opened the file while it was held…
        let stale = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        drop(first);
        // …and gets its flock now, but it is not the file at the path.
        assert!(try_flock(&stale).unwrap() && !still_at(&stale, &root, &lock_path(&hex)));
        let second = Lock::acquire(&root, &hex).unwrap();
        assert!(path.exists());
        assert!(matches!(
            Lock::acquire(&root, &hex),
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
        let _running =
            prepare(&a, &Root::at(dir.path()), &[PieceCheck::Bad; 2], true, None).unwrap();
        let err =
            prepare(&b, &Root::at(dir.path()), &[PieceCheck::Bad; 2], true, None).unwrap_err();
        assert!(matches!(err, OwnershipError::OwnedByRunning(..)), "{err}");
        assert_eq!(std::fs::read(dir.path().join("t/x")).unwrap(), [7u8; 20]);
    }

    /// A complete file found in the folder is taken over as adopted: shoal
    /// may write it, but did not make it.
    #[test]
    fn complete_files_found_there_are_adopted_not_created() {
        // a: pieces 0-1, b: pieces 1-2.
        let m = meta(&[("a", 20), ("b", 20)], 16);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/a"), [3u8; 20]).unwrap();
        let checks = [PieceCheck::Good, PieceCheck::Good, PieceCheck::Missing];
        let root = Root::at(dir.path());
        let claim = prepare(&m, &root, &checks, false, None).unwrap();
        assert!(claim.record.owns(Path::new("t/a")) && claim.record.owns(Path::new("t/b")));
        assert!(!claim.record.created(Path::new("t/a")));
        assert!(claim.record.created(Path::new("t/b")));
        drop(claim);
        // Still adopted on the next run, when the file is shoal's to resume.
        let again = prepare(&m, &root, &[PieceCheck::Good; 3], false, None).unwrap();
        assert!(!again.record.created(Path::new("t/a")));
        assert_eq!(Record::load(&root, &m.info_hash.hex()), again.record);
    }

    /// The same file reached from another folder: a single-file torrent
    /// downloaded into `t`, while a running download in the folder above
    /// fills `t/x`. Its record up there names the file.
    #[test]
    fn a_running_download_above_owns_its_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = meta(&[("x", 20)], 16);
        let lone = Metainfo::from_bytes(
            &NewTorrent {
                name: "x".into(),
                length: 20,
                piece_length: 16,
                pieces: vec![1; 40],
                ..Default::default()
            }
            .to_bytes(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        let _running = prepare(
            &a,
            &Root::at(dir.path()),
            &[PieceCheck::Missing; 2],
            false,
            None,
        )
        .unwrap();
        std::fs::write(dir.path().join("t/x"), [7u8; 5]).unwrap();
        let inner = Root::at(&dir.path().join("t"));
        let err = prepare(&lone, &inner, &[PieceCheck::Bad; 2], true, None).unwrap_err();
        assert!(matches!(err, OwnershipError::OwnedByRunning(..)), "{err}");
        assert_eq!(std::fs::read(dir.path().join("t/x")).unwrap(), [7u8; 5]);
    }
}
