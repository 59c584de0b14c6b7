//! Fast resume: a torrent's verified piece map, kept with the length and
//! modification time of each of its files as they were when the map was
//! taken (at the end of a run). A run that finds every file as recorded
//! trusts the map instead of hashing the data again; one file different
//! (edited, truncated, replaced, moved away, or written by a run that
//! was killed before it could record anything) and the data is checked
//! in full, as without a record.

use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;
use crate::store::confine::Root;

/// A file as seen on disk: `[length, mtime in ns since the epoch]`; None
/// when absent (or not a regular file, or a padding file).
pub type FileStamp = Option<[u64; 2]>;

/// What a run records at its end, for the next run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub have: Bitfield,
    /// One per entry of `Metainfo::files`.
    pub files: Vec<FileStamp>,
}

/// Why a record is not trusted (for the log), or None: trusted.
pub fn distrust(record: &Resume, piece_count: usize, now: &[FileStamp]) -> Option<String> {
    if record.have.len() != piece_count {
        return Some(format!(
            "the record has {} pieces, the torrent {piece_count}",
            record.have.len()
        ));
    }
    if record.files.len() != now.len() {
        return Some("the record is of another file list".into());
    }
    let changed: Vec<usize> = (0..now.len())
        .filter(|&i| record.files[i] != now[i])
        .collect();
    match changed.as_slice() {
        [] => None,
        [one] => Some(format!("file {one} changed since the last run")),
        [first, ..] => Some(format!(
            "{} files changed since the last run (file {first} first)",
            changed.len()
        )),
    }
}

/// The files the record saw that are gone now (moved away, deleted): the
/// data is not where it was, which is for the user to know, not a reason
/// to download it all again. Empty when none are.
pub fn vanished(record: &Resume, now: &[FileStamp]) -> Vec<usize> {
    if record.have.count_ones() == 0 {
        return Vec::new();
    }
    (0..now.len().min(record.files.len()))
        .filter(|&i| matches!(record.files[i], Some([len, _]) if len > 0) && now[i].is_none())
        .collect()
}

fn stamp_of(md: &std::fs::Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    if !md.is_file() {
        return None;
    }
    let ns = (md.mtime() as i128) * 1_000_000_000 + md.mtime_nsec() as i128;
    Some([md.len(), u64::try_from(ns).unwrap_or(0)])
}

/// The stamps of `meta`'s data files under `root` now (one `fstatat` each;
/// nothing is opened for reading). None when one could not be looked at
/// (out of descriptors, say), which is not the same as absent: no record
/// is made from that, and a record is not judged by it.
pub fn stamps(meta: &Metainfo, root: &Root) -> Option<Vec<FileStamp>> {
    meta.files
        .iter()
        .map(|f| {
            if !f.is_data() {
                return Ok(None);
            }
            match root.metadata(&f.path) {
                Ok(md) => Ok(stamp_of(&md)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .collect::<std::io::Result<Vec<FileStamp>>>()
        .inspect_err(|e| {
            tracing::info!(
                "{}: files not looked at: {e}",
                crate::out::escape(&meta.name)
            )
        })
        .ok()
}

/// The record as saved in the service's state: stamps as they are, the
/// piece map as base64 of its BEP 3 bytes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    pub have: String,
    pub files: Vec<FileStamp>,
}

impl Saved {
    pub fn of(r: &Resume) -> Saved {
        Saved {
            have: data_encoding::BASE64.encode(r.have.as_bytes()),
            files: r.files.clone(),
        }
    }

    /// The record, if its piece map reads as one of `piece_count` pieces.
    pub fn read(&self, piece_count: usize) -> Option<Resume> {
        let bytes = data_encoding::BASE64.decode(self.have.as_bytes()).ok()?;
        let have = Bitfield::from_wire(&bytes, piece_count).ok()?;
        Some(Resume {
            have,
            files: self.files.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pieces: usize, files: Vec<FileStamp>) -> Resume {
        let mut have = Bitfield::new(pieces);
        have.set(0);
        Resume { have, files }
    }

    #[test]
    fn trusted_only_when_every_file_is_as_recorded() {
        let files = vec![Some([10, 5]), None, Some([20, 7])];
        let r = record(3, files.clone());
        assert_eq!(distrust(&r, 3, &files), None);
        // Rewritten in place (same length, new mtime).
        let mut edited = files.clone();
        edited[2] = Some([20, 8]);
        assert!(distrust(&r, 3, &edited).unwrap().contains("file 2 changed"));
        // Truncated.
        let mut cut = files.clone();
        cut[0] = Some([3, 5]);
        assert!(distrust(&r, 3, &cut).is_some());
        // Moved away, or one appeared where there was none.
        assert!(distrust(&r, 3, &[None, None, None])
            .unwrap()
            .contains("2 files"));
        assert!(distrust(&r, 3, &[Some([10, 5]), Some([1, 1]), Some([20, 7])]).is_some());
        // Another torrent's shape.
        assert!(distrust(&r, 4, &files).is_some());
        assert!(distrust(&r, 3, &files[..2]).is_some());
    }

    #[test]
    fn files_moved_away_are_named() {
        let files = vec![Some([10, 5]), Some([0, 1]), Some([20, 7])];
        let r = record(3, files.clone());
        assert!(vanished(&r, &files).is_empty());
        // An empty file gone is nothing lost.
        assert!(vanished(&r, &[Some([10, 5]), None, Some([20, 7])]).is_empty());
        assert_eq!(vanished(&r, &[None, None, Some([20, 9])]), vec![0]);
        // Nothing was verified: nothing to lose.
        let empty = Resume {
            have: Bitfield::new(3),
            files,
        };
        assert!(vanished(&empty, &[None, None, None]).is_empty());
    }

    #[test]
    fn the_saved_form_reads_back() {
        let r = record(11, vec![Some([1, u64::MAX]), None]);
        let s = Saved::of(&r);
        let json = serde_json::to_string(&s).unwrap();
        let back: Saved = serde_json::from_str(&json).unwrap();
        assert_eq!(back.read(11), Some(r));
        assert_eq!(back.read(40), None, "a piece map of another length");
        let bad = Saved {
            have: "!!".into(),
            files: vec![],
        };
        assert_eq!(bad.read(11), None);
    }

    #[test]
    fn stamps_see_length_and_absence() {
        use crate::metainfo::NewTorrent;
        let dir = tempfile::tempdir().unwrap();
        let t = NewTorrent {
            name: "t".into(),
            files: Some(vec![(vec!["a".into()], 3), (vec!["b".into()], 4)]),
            piece_length: 16,
            pieces: vec![0; 20],
            ..Default::default()
        };
        let m = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/a"), b"abc").unwrap();
        let root = Root::at(dir.path());
        let s = stamps(&m, &root).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].map(|x| x[0]), Some(3));
        assert_eq!(s[1], None);
        assert_eq!(stamps(&m, &root), Some(s), "stable while nothing changes");
    }
}
