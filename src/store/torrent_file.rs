//! .torrent files on disk. `metainfo` parses bytes and does no I/O; the
//! bytes come from here: read whole, and for a torrent of many pieces the
//! file is kept open, so its piece hashes are read from it when needed
//! instead of held in memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::metainfo::{Metainfo, MetainfoError, Source, HASHES_IN_MEMORY, MAX_TORRENT_FILE};

/// Loads a .torrent file. A torrent with more than [`HASHES_IN_MEMORY`]
/// bytes of piece hashes keeps the file open and reads them from it.
pub fn load_torrent(path: &Path) -> Result<Metainfo, MetainfoError> {
    load_with(path, HASHES_IN_MEMORY)
}

pub(crate) fn load_with(path: &Path, in_memory: usize) -> Result<Metainfo, MetainfoError> {
    let io = |err| MetainfoError::Io {
        path: path.to_path_buf(),
        err,
    };
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let size = meta.len();
    if size > MAX_TORRENT_FILE {
        return Err(MetainfoError::FileTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut file)
        .take(MAX_TORRENT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let torrent = TorrentFile {
        path: path.to_path_buf(),
        stamp: stamp(&meta),
        file,
    };
    // A file that changed while it was read is not read again later.
    let in_memory = if torrent.stamp.0 == bytes.len() as u64 {
        in_memory
    } else {
        usize::MAX
    };
    Metainfo::from_source(&bytes, Arc::new(torrent), in_memory)
}

/// An open .torrent file.
#[derive(Debug)]
struct TorrentFile {
    file: File,
    path: PathBuf,
    /// Length and modification time when parsed: a file rewritten since
    /// would give wrong hashes, and wrong hashes would blame honest peers.
    stamp: (u64, Option<SystemTime>),
}

fn stamp(m: &std::fs::Metadata) -> (u64, Option<SystemTime>) {
    (m.len(), m.modified().ok())
}

impl Source for TorrentFile {
    fn read_at(&self, at: u64, out: &mut [u8]) -> Result<(), MetainfoError> {
        let io = |err| MetainfoError::Io {
            path: self.path.clone(),
            err,
        };
        let changed = || MetainfoError::Changed(self.path.clone());
        if stamp(&self.file.metadata().map_err(io)?) != self.stamp {
            return Err(changed());
        }
        self.file.read_exact_at(out, at).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                changed()
            } else {
                io(e)
            }
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Torrents with many pieces read their hashes from the open .torrent
    /// file. Replacing the file (a rename) does not disturb that; rewriting
    /// it in place is noticed.
    #[test]
    fn piece_hashes_read_from_the_torrent_file() {
        let pieces: Vec<u8> = (0..100u8).collect();
        let mut t =
            b"d7:comment2:hi4:infod6:lengthi80e4:name1:a12:piece lengthi16e6:pieces100:".to_vec();
        t.extend_from_slice(&pieces);
        t.extend_from_slice(b"ee");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.torrent");
        std::fs::write(&path, &t).unwrap();
        let in_memory = load_torrent(&path).unwrap();
        assert!(!in_memory.hashes_on_disk());
        let m = load_with(&path, 99).unwrap();
        assert!(m.hashes_on_disk());
        assert_eq!(m.info_hash, in_memory.info_hash);
        assert_eq!(m.info_bytes().unwrap(), in_memory.info_bytes().unwrap());
        assert_eq!(m.to_bytes().unwrap(), in_memory.to_bytes().unwrap());
        for i in 0..5u32 {
            let want: [u8; 20] = pieces[i as usize * 20..][..20].try_into().unwrap();
            assert_eq!(m.piece_hash(i).unwrap(), want);
        }
        assert!(matches!(m.piece_hash(5), Err(MetainfoError::BadPiece(5))));

        let tmp = dir.path().join("new");
        std::fs::write(&tmp, b"d4:spami1ee").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(m.piece_hash(4).unwrap()[..], pieces[80..]);

        let m = load_with(&path, 0);
        assert!(m.is_err(), "the replacement is not a torrent");
        std::fs::write(&path, &t).unwrap();
        let m = load_with(&path, 0).unwrap();
        let mut other = t.clone();
        other.extend_from_slice(b"\n");
        std::fs::write(&path, &other).unwrap();
        let err = m.piece_hash(0).unwrap_err();
        assert!(matches!(err, MetainfoError::Changed(_)), "{err}");
        assert!(m.info_bytes().is_err());
    }
}
