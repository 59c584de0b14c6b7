//! Making torrents from files on disk (`shoal create`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use thiserror::Error;

use crate::metainfo::{FileEntry, NewTorrent};
use crate::store::{Layout, Store, StoreError};

#[derive(Debug, Error)]
pub enum CreateError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}: nothing to share (no data, total size is zero)")]
    Empty(PathBuf),
    #[error("{0}: has no usable file name")]
    NoName(PathBuf),
    #[error("piece length {0} must be a power of two between 16 KiB and 256 MiB")]
    BadPieceLength(u64),
    #[error("{0} changed while it was being hashed")]
    Changed(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct CreateOptions {
    pub piece_length: Option<u64>,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    pub threads: usize,
}

/// Files an OS leaves behind that nobody means to share.
fn is_junk(name: &str) -> bool {
    name.starts_with('.')
        || matches!(
            name,
            "Thumbs.db" | "thumbs.db" | "desktop.ini" | "Desktop.ini" | "__MACOSX"
        )
}

/// Lists the files under `dir`, sorted by path so every run of create gives
/// the same torrent. Symlinks are not followed.
fn walk(
    dir: &Path,
    rel: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, u64)>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), CreateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |err| CreateError::Io { path, err }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            tracing::warn!(
                "skipping {}: name is not UTF-8",
                crate::out::escape(&e.path().display().to_string())
            );
            continue;
        };
        if is_junk(&name) {
            skipped.push(e.path());
            continue;
        }
        let ft = e.file_type().map_err(io(&e.path()))?;
        rel.push(name);
        if ft.is_dir() {
            walk(&e.path(), rel, out, skipped)?;
        } else if ft.is_file() {
            let len = e.metadata().map_err(io(&e.path()))?.len();
            out.push((rel.clone(), len));
        } else {
            tracing::warn!(
                "skipping {}: not a regular file",
                crate::out::escape(&e.path().display().to_string())
            );
        }
        rel.pop();
    }
    Ok(())
}

/// Aims at about 1500 pieces: fewer makes swarms coarse, more makes the
/// torrent file large.
pub fn auto_piece_length(total: u64) -> u64 {
    (total / 1500)
        .max(1)
        .next_power_of_two()
        .clamp(16 << 10, 16 << 20)
}

/// What `create` made, and the hidden or system files it left out (the
/// user should hear which).
pub struct Created {
    pub torrent: NewTorrent,
    pub skipped: Vec<PathBuf>,
}

/// Hashes `path` and returns the torrent. `done` counts bytes hashed.
pub fn create(path: &Path, opts: &CreateOptions, done: &AtomicU64) -> Result<Created, CreateError> {
    let io = |err| CreateError::Io {
        path: path.to_path_buf(),
        err,
    };
    let md = std::fs::metadata(path).map_err(io)?;
    let abs = std::fs::canonicalize(path).map_err(io)?;
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CreateError::NoName(path.to_path_buf()))?
        .to_string();
    let parent = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut skipped = Vec::new();
    let files = if md.is_dir() {
        let mut out = Vec::new();
        walk(&abs, &mut Vec::new(), &mut out, &mut skipped)?;
        Some(out)
    } else {
        None
    };
    let total: u64 = match &files {
        Some(f) => f.iter().map(|(_, l)| l).sum(),
        None => md.len(),
    };
    if total == 0 {
        return Err(CreateError::Empty(path.to_path_buf()));
    }
    let piece_length = match opts.piece_length {
        Some(p) if p.is_power_of_two() && (16 << 10..=256 << 20).contains(&p) => p,
        Some(p) => return Err(CreateError::BadPieceLength(p)),
        None => auto_piece_length(total),
    };
    let mut entries = Vec::new();
    let mut offset = 0;
    let list: Vec<(Vec<String>, u64)> = files.clone().unwrap_or_else(|| vec![(vec![], total)]);
    for (rel, length) in &list {
        let mut p = PathBuf::from(&name);
        p.extend(rel);
        entries.push(FileEntry {
            path: p,
            length: *length,
            offset,
            pad: false,
            symlink: false,
        });
        offset += length;
    }
    let layout = Layout {
        piece_length,
        total_length: total,
        files: entries,
        hashes: crate::metainfo::PieceHashes::from_list(Vec::new()),
    };
    let store = Store::open_read(layout, &parent);
    let hashes = store.hash_all(opts.threads, done)?;
    let mut pieces = Vec::with_capacity(hashes.len() * 20);
    for h in hashes {
        pieces.extend_from_slice(&h.ok_or_else(|| CreateError::Changed(path.to_path_buf()))?);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let torrent = NewTorrent {
        name,
        files,
        length: total,
        piece_length,
        pieces,
        trackers: opts.trackers.clone(),
        web_seeds: opts.web_seeds.clone(),
        private: opts.private,
        comment: opts.comment.clone(),
        created_by: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
        creation_date: Some(now),
    };
    Ok(Created { torrent, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;

    #[test]
    fn auto_piece_length_bounds() {
        assert_eq!(auto_piece_length(1), 16 << 10);
        assert_eq!(auto_piece_length(1 << 30), 1 << 20);
        assert_eq!(auto_piece_length(1 << 40), 16 << 20);
        let n = (1u64 << 30).div_ceil(auto_piece_length(1 << 30));
        assert!((500..=2000).contains(&n));
    }

    #[test]
    fn folder_is_sorted_without_junk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pack");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("b.txt"), b"bbbb").unwrap();
        std::fs::write(root.join("a.txt"), b"aa").unwrap();
        std::fs::write(root.join("sub/c"), b"c").unwrap();
        std::fs::write(root.join(".DS_Store"), b"junk").unwrap();
        std::fs::write(root.join("Thumbs.db"), b"junk").unwrap();
        let opts = CreateOptions {
            piece_length: None,
            trackers: vec![vec!["http://t/announce".into()]],
            web_seeds: vec![],
            private: false,
            comment: None,
            threads: 2,
        };
        let c = create(&root, &opts, &AtomicU64::new(0)).unwrap();
        assert_eq!(c.skipped.len(), 2, "{:?}", c.skipped);
        let t = c.torrent;
        let m = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let paths: Vec<_> = m.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("pack/a.txt"),
                PathBuf::from("pack/b.txt"),
                PathBuf::from("pack/sub/c")
            ]
        );
        assert_eq!(m.total_length, 7);
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            create(&empty, &opts, &AtomicU64::new(0)),
            Err(CreateError::Empty(_))
        ));
    }
}
