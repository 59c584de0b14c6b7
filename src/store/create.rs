//! Making torrents from files on disk (`shoal create`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use thiserror::Error;

use sha1::{Digest, Sha1};

use crate::metainfo::{merkle, FileEntry, NewTorrent, NewV2};
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

/// Which kind of torrent `create` makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// BitTorrent v1 (SHA-1 pieces): what every client reads.
    #[default]
    V1,
    /// BEP 52 only (SHA-256 merkle trees): v2 clients only.
    V2,
    /// Both, describing the same pieces: v1 and v2 clients share a swarm.
    Hybrid,
}

pub struct CreateOptions {
    pub format: Format,
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
    let list: Vec<(Vec<String>, u64)> = files.clone().unwrap_or_else(|| vec![(vec![], total)]);
    let aligned = opts.format != Format::V1;
    // v2 and hybrid: every file starts on a piece boundary, so a pad
    // follows each file with data but the last (a BEP 47 pad file in the
    // v1 list of a hybrid, only virtual in a v2-only torrent).
    let last_data = list.iter().rposition(|(_, l)| *l > 0);
    let mut entries = Vec::new();
    let mut v1_files: Vec<(Vec<String>, u64)> = Vec::new();
    let mut pad_files = Vec::new();
    // Per file with data: its first piece, length, tree index.
    let mut data_files: Vec<(u32, u64, usize)> = Vec::new();
    let mut offset = 0u64;
    for (n, (rel, length)) in list.iter().enumerate() {
        let mut p = PathBuf::from(&name);
        p.extend(rel);
        if *length > 0 {
            data_files.push(((offset / piece_length) as u32, *length, n));
        }
        entries.push(FileEntry {
            path: p,
            length: *length,
            offset,
            pad: false,
            symlink: false,
        });
        v1_files.push((rel.clone(), *length));
        offset += length;
        let gap = (piece_length - offset % piece_length) % piece_length;
        if aligned && gap > 0 && last_data.is_some_and(|l| n < l) {
            pad_files.push(v1_files.len());
            v1_files.push((vec![".pad".into(), gap.to_string()], gap));
            entries.push(FileEntry {
                path: PathBuf::from(&name).join(".pad").join(gap.to_string()),
                length: gap,
                offset,
                pad: true,
                symlink: false,
            });
            offset += gap;
        }
    }
    let space = offset;
    let layout = Layout {
        piece_length,
        total_length: space,
        files: entries,
        hashes: crate::metainfo::PieceHashes::from_list(Vec::new()),
        merkle: None,
        v2: None,
    };
    let store = Store::open_read(layout, &parent);
    let changed = || CreateError::Changed(path.to_path_buf());
    let mut pieces = Vec::new();
    let mut v2 = None;
    if aligned {
        // Each piece lies in one file: its SHA-1 (hybrid) and its merkle
        // hash over that file's bytes.
        let want_v1 = opts.format == Format::Hybrid;
        let of_piece = |piece: u32| {
            let i = data_files.partition_point(|f| f.0 <= piece);
            i.checked_sub(1).and_then(|i| data_files.get(i)).copied()
        };
        let hashed = store.par_pieces(
            opts.threads,
            done,
            |i, buf| {
                if !store.read_piece(i, buf)? {
                    return Ok(None);
                }
                let sha1 = want_v1.then(|| <[u8; 20]>::from(Sha1::digest(&buf[..])));
                let Some((first, len, _)) = of_piece(i) else {
                    return Ok(Some((sha1, None)));
                };
                let start = u64::from(i - first) * piece_length;
                let n = len.saturating_sub(start).min(piece_length) as usize;
                let part = buf.get(..n).unwrap_or(&buf[..]);
                Ok(Some((
                    sha1,
                    Some(merkle::piece_hash(part, piece_length, len)),
                )))
            },
            None,
            &std::sync::atomic::AtomicBool::new(false),
        )?;
        let mut tree = Vec::new();
        let mut layers = Vec::new();
        let mut next_data = data_files.iter().peekable();
        for (n, (rel, length)) in list.iter().enumerate() {
            let mut root = None;
            if let Some(&&(first, len, idx)) = next_data.peek() {
                if idx == n {
                    next_data.next();
                    let count = merkle::layer_len(piece_length, len) as usize;
                    let mut layer = Vec::with_capacity(count);
                    for p in first as usize..first as usize + count {
                        let h = hashed
                            .get(p)
                            .cloned()
                            .flatten()
                            .and_then(|h| h.1)
                            .ok_or_else(changed)?;
                        layer.push(h);
                    }
                    if len > piece_length {
                        let r = merkle::root_from_layer(&layer, piece_length);
                        layers.push((r, layer.concat()));
                        root = Some(r);
                    } else {
                        root = layer.first().copied();
                    }
                }
            }
            tree.push((rel.clone(), *length, root));
        }
        if want_v1 {
            for h in &hashed {
                let h = h.as_ref().and_then(|h| h.0).ok_or_else(changed)?;
                pieces.extend_from_slice(&h);
            }
        }
        v2 = Some(NewV2 { tree, layers });
    } else {
        let hashes = store.hash_all(opts.threads, done)?;
        pieces.reserve(hashes.len() * 20);
        for h in hashes {
            pieces.extend_from_slice(&h.ok_or_else(changed)?);
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let hybrid_multi = opts.format == Format::Hybrid && files.is_some();
    let torrent = NewTorrent {
        name,
        files: if hybrid_multi { Some(v1_files) } else { files },
        length: total,
        piece_length,
        pieces,
        trackers: opts.trackers.clone(),
        web_seeds: opts.web_seeds.clone(),
        private: opts.private,
        comment: opts.comment.clone(),
        created_by: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
        creation_date: Some(now),
        v2,
        pad_files: if hybrid_multi { pad_files } else { Vec::new() },
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
            format: Format::V1,
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
