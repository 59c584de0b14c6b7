//! The service's checks on what a request names (a folder, file indices)
//! and the removal of a torrent's data.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::{Priority, ServiceError};
use crate::metainfo::Metainfo;
use crate::out::escape;
use crate::store::confine::{self, Root};
use crate::store::ownership;

/// A `download_dir` longer than this is refused (PATH_MAX).
const MAX_DIR_LEN: usize = 4096;

/// Where `request` (relative to `root`, or absolute inside it) points.
/// Refused if it leaves the root, also through a symbolic link that exists
/// now. Nothing is created: the run makes the folder (without following
/// links, `store::confine`), so a refused add leaves nothing behind.
pub fn resolve_dir(root: &Path, request: Option<&str>) -> Result<PathBuf, ServiceError> {
    let Some(req) = request.filter(|r| !r.trim().is_empty()) else {
        return Ok(root.to_path_buf());
    };
    if req.len() > MAX_DIR_LEN {
        return Err(ServiceError::Invalid(format!(
            "download_dir is {} bytes long; at most {MAX_DIR_LEN}",
            req.len()
        )));
    }
    let req = Path::new(req);
    let shown = || escape(&req.display().to_string()).into_owned();
    if req
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(ServiceError::Forbidden(format!(
            "download_dir {} may not contain '..'",
            shown()
        )));
    }
    let wanted = if req.is_absolute() {
        req.to_path_buf()
    } else {
        root.join(req)
    };
    if !wanted.starts_with(root) || Root::under(root, &wanted).is_none() {
        return Err(ServiceError::Forbidden(format!(
            "download_dir {} is outside the service's download folder {}",
            shown(),
            root.display()
        )));
    }
    // The deepest folder that exists must resolve inside the root: a link
    // inside it to elsewhere does not count as inside.
    let mut existing = wanted.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().unwrap_or(root);
    }
    let real = existing
        .canonicalize()
        .map_err(|e| ServiceError::Failed(format!("{}: {e}", existing.display())))?;
    if !real.starts_with(root) {
        return Err(ServiceError::Forbidden(format!(
            "download_dir {} leads outside the service's download folder {}",
            shown(),
            root.display()
        )));
    }
    Ok(wanted)
}

/// An `only` list checked against the cap on files: sorted, each index
/// once. Past the cap no torrent of this service has such a file, so the
/// list is refused before anything is stored (`[20000000]` must not become
/// 20 million priorities, `[u64::MAX]` no overflow).
pub fn check_only(only: &[usize], max_files: usize) -> Result<Vec<usize>, ServiceError> {
    if only.is_empty() {
        return Err(ServiceError::Invalid("\"only\" lists no file".into()));
    }
    if only.len() > max_files {
        return Err(ServiceError::Invalid(format!(
            "\"only\" lists {} files; a torrent here has at most {max_files} (--max-files)",
            only.len()
        )));
    }
    if let Some(i) = only.iter().find(|&&i| i >= max_files) {
        return Err(ServiceError::Invalid(format!(
            "\"only\": no file {i}: a torrent here has at most {max_files} files (--max-files)"
        )));
    }
    let mut list = only.to_vec();
    list.sort_unstable();
    list.dedup();
    Ok(list)
}

fn no_file(i: usize, n: usize) -> String {
    format!(
        "no file {i}: the torrent has {n} files (0 to {})",
        n.saturating_sub(1)
    )
}

/// The priorities of `n` files from a checked `only` (None: every file).
/// An index past the end is an error naming it.
pub fn initial_priorities(n: usize, only: Option<&[usize]>) -> Result<Vec<Priority>, String> {
    let Some(only) = only else {
        return Ok(vec![Priority::Normal; n]);
    };
    let mut p = vec![Priority::Skip; n];
    for &i in only {
        match p.get_mut(i) {
            Some(x) => *x = Priority::Normal,
            None => return Err(no_file(i, n)),
        }
    }
    Ok(p)
}

/// A magnet's `only` once its `n` files are known: the priorities, and an
/// error naming the indices past the end (the files that do exist are
/// chosen; if none does, all of them, for the user to narrow down).
pub fn pending_priorities(n: usize, only: &[usize]) -> (Vec<Priority>, Option<String>) {
    let (inside, outside): (Vec<usize>, Vec<usize>) = only.iter().partition(|&&i| i < n);
    let mut p = if inside.is_empty() {
        vec![Priority::Normal; n]
    } else {
        vec![Priority::Skip; n]
    };
    for i in inside {
        p[i] = Priority::Normal;
    }
    let error = outside.first().map(|&i| {
        format!(
            "\"only\" asked for {}; {}: nothing downloaded yet — choose its files and resume it",
            if outside.len() == 1 {
                format!("file {i}")
            } else {
                format!("{} files past the end", outside.len())
            },
            no_file(i, n)
        )
    });
    (p, error)
}

/// A file of a removed torrent left on disk, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub path: String,
    pub why: String,
}

/// What removing a torrent's data did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataRemoval {
    pub deleted: Vec<String>,
    pub kept: Vec<Kept>,
}

/// Deletes the files of `meta` under `root` that shoal's record says it
/// made (never one it found there complete and took over), its part file
/// and record, and the folders left empty by that (never the torrent's
/// folder itself). Nothing is deleted through a symbolic link: a folder
/// replaced by one stops the deletions below it. Says what it kept.
pub fn delete_data_of(meta: &Metainfo, root: &Root) -> DataRemoval {
    let mut out = DataRemoval::default();
    let shown = |rel: &Path| escape(&root.path().join(rel).display().to_string()).into_owned();
    if let Err(e) = root.metadata(Path::new("")) {
        if confine::is_link_error(&e) {
            out.kept.push(Kept {
                path: shown(Path::new("")),
                why: "a symbolic link is on the way to it: nothing deleted".into(),
            });
        }
        return out;
    }
    let hex = meta.info_hash.hex();
    let record = ownership::Record::load(root, &hex);
    let mut parents = BTreeSet::new();
    for f in meta.files.iter().filter(|f| f.is_data()) {
        let there = || root.metadata(&f.path).is_ok_and(|m| m.is_file());
        if !record.created(&f.path) {
            if there() {
                let why = if record.owns(&f.path) {
                    "it was there before shoal"
                } else {
                    "not written by shoal"
                };
                out.kept.push(Kept {
                    path: shown(&f.path),
                    why: why.into(),
                });
            }
            continue;
        }
        match root.remove_file(&f.path) {
            Ok(()) => out.deleted.push(shown(&f.path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.kept.push(Kept {
                path: shown(&f.path),
                why: if confine::is_link_error(&e) {
                    "a symbolic link is on the way to it".into()
                } else {
                    e.to_string()
                },
            }),
        }
        parents.extend(f.path.ancestors().skip(1).map(Path::to_path_buf));
    }
    for rel in [
        ownership::part_path(&hex),
        Path::new(ownership::DIR_NAME).join(format!("{hex}.json")),
        Path::new(ownership::DIR_NAME).join(format!("{hex}.lock")),
    ] {
        let _ = root.remove_file(&rel);
    }
    parents.insert(PathBuf::from(ownership::DIR_NAME));
    // Deepest first; a folder with anything else in it stays.
    let mut parents: Vec<PathBuf> = parents
        .into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in parents {
        let _ = root.remove_dir(&d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lists_are_bounded_before_anything_is_stored() {
        assert_eq!(check_only(&[2, 0, 2], 10).unwrap(), vec![0, 2]);
        for bad in [
            vec![],
            vec![usize::MAX],
            vec![4_000_000_000_000],
            vec![20_000_000],
            vec![10],
            vec![1; 11],
        ] {
            let err = check_only(&bad, 10).unwrap_err().to_string();
            assert!(bad.is_empty() || err.contains("--max-files"), "{err}");
        }
        assert!(initial_priorities(3, Some(&[3])).is_err());
        assert_eq!(
            initial_priorities(3, Some(&[0, 2])).unwrap(),
            vec![Priority::Normal, Priority::Skip, Priority::Normal]
        );
        let (p, err) = pending_priorities(3, &[1, 7]);
        assert_eq!(p, vec![Priority::Skip, Priority::Normal, Priority::Skip]);
        let err = err.unwrap();
        assert!(err.contains("file 7") && err.contains("3 files"), "{err}");
        let (p, err) = pending_priorities(2, &[0]);
        assert_eq!((p, err), (vec![Priority::Normal, Priority::Skip], None));
        assert_eq!(pending_priorities(2, &[5]).0, vec![Priority::Normal; 2]);
    }
}
