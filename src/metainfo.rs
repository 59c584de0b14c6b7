//! Torrent files (BEP 3, 12, 19, 27, 47): parsing with specific errors, the
//! info-hash over the exact bytes of the `info` value, sanitised file paths,
//! and the piece ↔ file mapping the store uses.

pub mod bencode;
mod info;
pub mod magnet;
pub mod merkle;
mod new;
pub mod v2;

use info::*;
pub use info::{safe_join, sanitize_element};
pub use new::{NewTorrent, NewV2};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_bencode::value::Value;
use sha1::{Digest, Sha1};
use sha2::Sha256;
use thiserror::Error;

use bencode::BencodeError;

/// Torrent files beyond this are refused unread; real ones are a few MiB.
pub const MAX_TORRENT_FILE: u64 = 64 << 20;
pub const MAX_FILES: usize = 1_000_000;
/// libtorrent refuses paths 200 deep and accepts 50.
pub const MAX_PATH_DEPTH: usize = 100;
/// More copies of one path than this is broken or hostile, not a real torrent.
pub const MAX_SAME_PATH: usize = 4;
/// Longest file name element we write; most filesystems allow 255 bytes.
const MAX_ELEMENT_BYTES: usize = 240;
pub const MAX_PIECE_LENGTH: u64 = 1 << 30;
/// Total size above this (1 PiB) is an overflow attempt, not data.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;
/// Piece hashes beyond this many bytes (52k pieces) are not held in memory
/// but read from the .torrent file when needed: a million pieces would
/// otherwise cost 20 MB for the whole download.
pub const HASHES_IN_MEMORY: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.hex())
    }
}

/// The BitTorrent versions a torrent carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    /// BEP 52 only: SHA-256 merkle trees, no v1 piece hashes.
    V2,
    /// Both (BEP 52 hybrid): v1 and v2 peers share one swarm.
    Hybrid,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::Hybrid => "hybrid (v1 + v2)",
        })
    }
}

#[derive(Debug, Error)]
pub enum MetainfoError {
    #[error("cannot read {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path} is {size} bytes; torrent files over {MAX_TORRENT_FILE} bytes are refused")]
    FileTooLarge { path: PathBuf, size: u64 },
    #[error("not a valid torrent file (bad bencoding): {0}")]
    Bencode(#[from] BencodeError),
    #[error("torrent is not a dictionary")]
    NotADict,
    #[error("missing `{0}`")]
    Missing(&'static str),
    #[error("`{key}` should be {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} changed on disk while in use; start again with the new file")]
    Changed(PathBuf),
    #[error("piece {0} is out of range")]
    BadPiece(u32),
}

fn invalid(msg: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid(msg.into())
}

/// One file of the torrent, as laid out in the concatenated piece space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the output folder; sanitised, so it always stays inside it.
    pub path: PathBuf,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's byte space.
    pub offset: u64,
    /// BEP 47 pad file: zeros by definition, never written to disk.
    pub pad: bool,
    /// BEP 47 symlink: not created (its data is not ours to write).
    pub symlink: bool,
}

impl FileEntry {
    /// Whether the file exists on disk as data (pads and symlinks do not).
    pub fn is_data(&self) -> bool {
        !self.pad && !self.symlink
    }
}

/// A byte range of one file that is part of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSlice {
    pub file: usize,
    pub offset: u64,
    pub len: u64,
}

#[derive(Clone, Debug)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    /// Sanitised; the folder (multi-file) or file (single-file) under the output folder.
    pub name: String,
    pub piece_length: u64,
    /// The piece hashes, and where the info dictionary lies in the same
    /// backing (its bytes in memory, or the open .torrent file).
    hashes: PieceHashes,
    info_at: u64,
    info_len: usize,
    pub files: Vec<FileEntry>,
    pub total_length: u64,
    pub multi_file: bool,
    pub private: bool,
    pub announce: Option<String>,
    pub announce_list: Vec<Vec<String>>,
    pub url_list: Vec<String>,
    pub creation_date: Option<i64>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    pub encoding: Option<String>,
    /// Hybrid torrent: v1 pieces and BEP 52 fields describing the same files.
    pub hybrid: bool,
    /// The BEP 52 side (v2-only and hybrid torrents): the SHA-256
    /// info-hash, file roots and piece layers. A v2-only torrent's
    /// `info_hash` is its v2 hash cut to 20 bytes.
    pub v2: Option<Arc<v2::V2>>,
    piece_count: u32,
    /// Things that are odd but not fatal (non-power-of-two piece length, say).
    pub warnings: Vec<String>,
    /// Top-level keys we do not interpret, kept so nothing is lost.
    pub extra: BTreeMap<Vec<u8>, Value>,
}

impl Metainfo {
    /// Parses `buf`, the whole of a torrent file that `source` can read
    /// again (the store keeps the file open): with more than `in_memory`
    /// bytes of piece hashes the info dictionary is not kept in memory but
    /// read from `source` when needed, as a torrent of a million pieces
    /// would otherwise cost 20 MB for the whole run.
    pub fn from_source(
        buf: &[u8],
        source: Arc<dyn Source>,
        in_memory: usize,
    ) -> Result<Metainfo, MetainfoError> {
        Metainfo::parse(buf, |span, pieces_len| {
            if pieces_len.unwrap_or(0) > in_memory {
                (Backing::Source(source), span.start as u64)
            } else {
                (Backing::Memory(buf[span].into()), 0)
            }
        })
    }

    pub fn from_bytes(buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        Metainfo::parse(buf, |span, _| (Backing::Memory(buf[span].into()), 0))
    }

    /// `keep` decides where the info dictionary (at `span` of `buf`, with
    /// this many bytes of piece hashes) is read from later, and at what
    /// offset of that backing it starts.
    fn parse(
        buf: &[u8],
        keep: impl FnOnce(std::ops::Range<usize>, Option<usize>) -> (Backing, u64),
    ) -> Result<Metainfo, MetainfoError> {
        if buf.len() as u64 > MAX_TORRENT_FILE {
            return Err(invalid(format!(
                "torrent data is {} bytes; over {MAX_TORRENT_FILE} is refused",
                buf.len()
            )));
        }
        bencode::validate(buf)?;
        if buf.first() != Some(&b'd') {
            return Err(MetainfoError::NotADict);
        }
        let span = bencode::top_level_span(buf, b"info")?.ok_or(MetainfoError::Missing("info"))?;
        let info_bytes = &buf[span.clone()];
        let info_hash = InfoHash(Sha1::digest(info_bytes).into());
        if info_bytes.first() != Some(&b'd') {
            return Err(MetainfoError::WrongType {
                key: "info".into(),
                expected: "a dictionary",
            });
        }
        // The piece hashes are most of a big torrent: decode everything but
        // them, which stay where they are.
        let mut top_rest = buf[..span.start].to_vec();
        top_rest.extend_from_slice(b"de");
        top_rest.extend_from_slice(&buf[span.end..]);
        let Value::Dict(mut top) = bencode::decode(&top_rest)? else {
            return Err(MetainfoError::NotADict);
        };
        drop(top_rest);
        top.remove(&b"info"[..]);
        let (info_rest, pieces) = without_pieces(info_bytes)?;
        let pieces_len = pieces.map(|(_, len)| len);
        let Value::Dict(info) = bencode::decode(&info_rest)? else {
            return Err(MetainfoError::WrongType {
                key: "info".into(),
                expected: "a dictionary",
            });
        };
        drop(info_rest);
        let mut warnings = Vec::new();
        let has_v1 = get(&info, "pieces").is_some();
        let has_v2 = get(&info, "file tree").is_some() || get(&info, "meta version").is_some();
        let (parsed, info_hash, v2) = if has_v2 {
            match get(&info, "meta version") {
                Some(Value::Int(2)) => {}
                Some(Value::Int(n)) => {
                    return Err(invalid(format!(
                        "`meta version` is {n}; only 2 (BEP 52) is known"
                    )))
                }
                _ => return Err(MetainfoError::Missing("meta version")),
            }
            let entries = v2::read_tree(info_bytes)?;
            let hash_v2: [u8; 32] = Sha256::digest(info_bytes).into();
            let (parsed, placed, info_hash) = if has_v1 {
                let parsed = parse_info(&info, pieces_len, info_hash, &mut warnings)?;
                let placed = check_hybrid(&info, &parsed, &entries)?;
                (parsed, placed, info_hash)
            } else {
                let short = InfoHash(hash_v2[..20].try_into().map_err(|_| invalid("hash"))?);
                let (parsed, placed) = parse_v2_only(&info, &entries, short)?;
                (parsed, placed, short)
            };
            let layers = top.get(&b"piece layers"[..]);
            let v2 = v2::build(
                hash_v2,
                parsed.piece_length,
                &entries,
                &placed,
                layers,
                &mut warnings,
            )?;
            (parsed, info_hash, Some(Arc::new(v2)))
        } else {
            (
                parse_info(&info, pieces_len, info_hash, &mut warnings)?,
                info_hash,
                None,
            )
        };
        let pieces_at = match pieces {
            Some((at, _)) => at,
            None if v2.is_some() => 0,
            None => return Err(MetainfoError::Missing("pieces")),
        };
        let info_len = info_bytes.len();

        // libtorrent loads torrents whose `announce` is an integer or not
        // UTF-8; refusing them would lose a torrent that DHT or
        // `announce-list` can still serve.
        let announce = match opt_str(&top, "announce") {
            Ok(a) => a.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) => {
                warnings.push(format!("{e}; `announce` ignored"));
                None
            }
        };
        let announce_list = parse_announce_list(top.get(&b"announce-list"[..]), &mut warnings);
        let url_list = parse_url_list(
            top.get(&b"url-list"[..]),
            parsed.files.len() > 1,
            &mut warnings,
        );
        let creation_date = match top.get(&b"creation date"[..]) {
            Some(Value::Int(i)) => Some(*i),
            Some(_) => {
                warnings.push("`creation date` is not an integer; ignored".into());
                None
            }
            None => None,
        };
        let created_by = lossy_opt(&top, "created by");
        let comment = lossy_opt(&top, "comment");
        let encoding = lossy_opt(&top, "encoding");
        for k in [
            "announce",
            "announce-list",
            "url-list",
            "creation date",
            "created by",
            "comment",
            "encoding",
        ] {
            top.remove(k.as_bytes());
        }
        let (backing, info_at) = keep(span, pieces_len);
        let hashes = PieceHashes {
            backing,
            at: info_at + pieces_at as u64,
            count: if has_v1 { parsed.piece_count } else { 0 },
        };
        Ok(Metainfo {
            info_hash,
            name: parsed.name,
            piece_length: parsed.piece_length,
            hashes,
            info_at,
            info_len,
            files: parsed.files,
            total_length: parsed.total_length,
            multi_file: parsed.multi_file,
            private: parsed.private,
            announce,
            announce_list,
            url_list,
            creation_date,
            created_by,
            comment,
            encoding,
            hybrid: has_v1 && v2.is_some(),
            v2,
            piece_count: parsed.piece_count,
            warnings,
            extra: top.into_iter().collect(),
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Which BitTorrent versions the torrent carries.
    pub fn version(&self) -> Version {
        match (&self.v2, self.hybrid) {
            (None, _) => Version::V1,
            (Some(_), false) => Version::V2,
            (Some(_), true) => Version::Hybrid,
        }
    }

    /// Whether pieces are checked with SHA-256 merkle trees (v2-only).
    pub fn v2_only(&self) -> bool {
        self.version() == Version::V2
    }

    /// Every 20-byte hash this torrent's swarm is known by: the v1 hash
    /// (or truncated v2 hash for v2-only torrents), and for a hybrid also
    /// its truncated v2 hash.
    pub fn info_hashes(&self) -> Vec<InfoHash> {
        let mut out = vec![self.info_hash];
        if let Some(v2) = &self.v2 {
            let short = InfoHash(v2.short_hash());
            if short != self.info_hash {
                out.push(short);
            }
        }
        out
    }

    /// The piece hashes, shared rather than copied.
    pub fn hashes(&self) -> PieceHashes {
        self.hashes.clone()
    }

    pub fn piece_hash(&self, piece: u32) -> Result<[u8; 20], MetainfoError> {
        self.hashes.get(piece)
    }

    /// Whether the piece hashes are read from the .torrent file on demand.
    pub fn hashes_on_disk(&self) -> bool {
        matches!(self.hashes.backing, Backing::Source(_))
    }

    /// The exact bytes of the info dictionary (for the info-hash, and for
    /// serving metadata to peers).
    pub fn info_bytes(&self) -> Result<Cow<'_, [u8]>, MetainfoError> {
        match &self.hashes.backing {
            Backing::Memory(b) => Ok(Cow::Borrowed(b)),
            Backing::Source(f) => {
                let mut out = vec![0; self.info_len];
                f.read_at(self.info_at, &mut out)?;
                let same = match &self.v2 {
                    Some(v2) if !self.hybrid => Sha256::digest(&out)[..] == v2.info_hash,
                    _ => Sha1::digest(&out)[..] == self.info_hash.0,
                };
                if !same {
                    return Err(MetainfoError::Changed(f.path().to_path_buf()));
                }
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Length of piece `piece`; the last one is usually short.
    pub fn piece_size(&self, piece: u32) -> u64 {
        let start = piece as u64 * self.piece_length;
        self.total_length
            .saturating_sub(start)
            .min(self.piece_length)
    }

    /// The file ranges that make up `piece`, in order. Zero-length files
    /// never appear; pad files do (the store fills them with zeros).
    pub fn piece_slices(&self, piece: u32) -> Vec<FileSlice> {
        let start = piece as u64 * self.piece_length;
        self.slices(start, self.piece_size(piece))
    }

    /// The file ranges covering `len` bytes at torrent offset `start`.
    pub fn slices(&self, start: u64, len: u64) -> Vec<FileSlice> {
        slices(&self.files, self.total_length, start, len)
    }

    /// Pieces touching file `file` (empty range for zero-length files).
    pub fn file_pieces(&self, file: usize) -> std::ops::Range<u32> {
        let Some(f) = self.files.get(file) else {
            return 0..0;
        };
        if f.length == 0 {
            return 0..0;
        }
        let first = (f.offset / self.piece_length) as u32;
        let last = ((f.offset + f.length - 1) / self.piece_length) as u32;
        first..last + 1
    }

    /// Trackers by tier: announce-list when present (BEP 12), else announce.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else {
            self.announce.iter().map(|a| vec![a.clone()]).collect()
        }
    }

    /// Bencodes the whole torrent; the info dictionary is written back as
    /// its original bytes so the info-hash never changes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MetainfoError> {
        let mut top: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let enc = |v: &Value| serde_bencode::to_bytes(v).unwrap_or_default();
        let s = |x: &str| Value::Bytes(x.as_bytes().to_vec());
        if let Some(a) = &self.announce {
            top.push((b"announce".to_vec(), enc(&s(a))));
        }
        if !self.announce_list.is_empty() {
            let v = Value::List(
                self.announce_list
                    .iter()
                    .map(|t| Value::List(t.iter().map(|u| s(u)).collect()))
                    .collect(),
            );
            top.push((b"announce-list".to_vec(), enc(&v)));
        }
        if let Some(c) = &self.comment {
            top.push((b"comment".to_vec(), enc(&s(c))));
        }
        if let Some(c) = &self.created_by {
            top.push((b"created by".to_vec(), enc(&s(c))));
        }
        if let Some(d) = self.creation_date {
            top.push((b"creation date".to_vec(), enc(&Value::Int(d))));
        }
        if let Some(e) = &self.encoding {
            top.push((b"encoding".to_vec(), enc(&s(e))));
        }
        top.push((b"info".to_vec(), self.info_bytes()?.into_owned()));
        if !self.url_list.is_empty() {
            let v = Value::List(self.url_list.iter().map(|u| s(u)).collect());
            top.push((b"url-list".to_vec(), enc(&v)));
        }
        for (k, v) in &self.extra {
            top.push((k.clone(), enc(v)));
        }
        top.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = b"d".to_vec();
        for (k, v) in top {
            out.extend_from_slice(format!("{}:", k.len()).as_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&v);
        }
        out.push(b'e');
        Ok(out)
    }
}

/// Where a torrent's info dictionary is kept after parsing.
#[derive(Clone, Debug)]
enum Backing {
    /// Its bytes, in memory.
    Memory(Arc<[u8]>),
    /// The torrent file it was read from, read again when needed.
    Source(Arc<dyn Source>),
}

/// A torrent file's bytes outside memory, read again when needed (the
/// store's open .torrent file). It must fail with
/// [`MetainfoError::Changed`] rather than return other bytes than those
/// parsed: wrong hashes would blame honest peers.
pub trait Source: Send + Sync + fmt::Debug {
    fn read_at(&self, at: u64, out: &mut [u8]) -> Result<(), MetainfoError>;
    /// Where it is, for errors.
    fn path(&self) -> &Path;
}

impl Backing {
    fn read_at(&self, at: u64, out: &mut [u8]) -> Result<(), MetainfoError> {
        match self {
            Backing::Memory(b) => {
                let src = usize::try_from(at)
                    .ok()
                    .and_then(|at| b.get(at..at.checked_add(out.len())?))
                    .ok_or_else(|| invalid("piece hash outside the info dictionary"))?;
                out.copy_from_slice(src);
                Ok(())
            }
            Backing::Source(f) => f.read_at(at, out),
        }
    }
}

/// A torrent's piece hashes, 20 bytes each: a slice of the info dictionary
/// in memory, or of the open .torrent file for torrents of many pieces.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct PieceHashes {
    backing: Backing,
    at: u64,
    count: u32,
}

impl PieceHashes {
    /// A plain list of hashes (for `create`, which has no torrent yet).
    pub fn from_list(list: Vec<u8>) -> PieceHashes {
        let count = (list.len() / 20) as u32;
        PieceHashes {
            backing: Backing::Memory(list.into()),
            at: 0,
            count,
        }
    }

    pub fn get(&self, piece: u32) -> Result<[u8; 20], MetainfoError> {
        let mut h = [0; 20];
        self.read(piece, &mut h)?;
        Ok(h)
    }

    /// Reads the hashes of `out.len() / 20` pieces from `first` on.
    pub fn read(&self, first: u32, out: &mut [u8]) -> Result<(), MetainfoError> {
        let n = (out.len() / 20) as u64;
        if !out.len().is_multiple_of(20) || u64::from(first) + n > u64::from(self.count) {
            return Err(MetainfoError::BadPiece(first));
        }
        self.backing.read_at(self.at + u64::from(first) * 20, out)
    }
}

/// The file ranges covering `len` bytes at offset `start` of the byte space
/// made by concatenating `files` (whose offsets must be set).
pub fn slices(files: &[FileEntry], total: u64, start: u64, len: u64) -> Vec<FileSlice> {
    let mut out = Vec::new();
    let end = start.saturating_add(len).min(total);
    // First file whose end lies past `start`.
    let mut i = files.partition_point(|f| f.offset + f.length <= start);
    let mut pos = start;
    while pos < end && i < files.len() {
        let f = &files[i];
        let in_file = pos - f.offset;
        let n = (f.length - in_file).min(end - pos);
        if n > 0 {
            out.push(FileSlice {
                file: i,
                offset: in_file,
                len: n,
            });
        }
        pos += n;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: usize) -> Vec<u8> {
        vec![7u8; 20 * n]
    }

    fn multi(files: &[(&[&str], u64)], piece_length: u64) -> Metainfo {
        let total: u64 = files.iter().map(|f| f.1).sum();
        let t = NewTorrent {
            name: "root".into(),
            files: Some(
                files
                    .iter()
                    .map(|(p, l)| (p.iter().map(|s| s.to_string()).collect(), *l))
                    .collect(),
            ),
            piece_length,
            pieces: hashes(total.div_ceil(piece_length) as usize),
            ..Default::default()
        };
        Metainfo::from_bytes(&t.to_bytes()).unwrap()
    }

    #[test]
    fn info_hash_is_over_raw_bytes_of_unsorted_info() {
        // Keys out of order and an unknown key: a re-serialisation would
        // sort them and change the hash.
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaa3:zzzi1e1:bi0ee";
        let mut file = b"d8:announce3:x:y4:info".to_vec();
        file.extend_from_slice(info);
        file.push(b'e');
        let m = Metainfo::from_bytes(&file).unwrap();
        let expected: [u8; 20] = Sha1::digest(info).into();
        assert_eq!(m.info_hash.0, expected);
        assert_eq!(&m.info_bytes().unwrap()[..], info);
        // Round-trips through to_bytes without changing the hash.
        let again = Metainfo::from_bytes(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(again.info_hash, m.info_hash);
    }

    /// Regression (issue 15): an integer `announce` refused the whole
    /// torrent; libtorrent loads it and so do we, with a warning.
    #[test]
    fn integer_announce_is_ignored_with_a_warning() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        for announce in [&b"i42e"[..], b"2:\xff\xfe", b"le"] {
            let mut file = b"d8:announce".to_vec();
            file.extend_from_slice(announce);
            file.extend_from_slice(b"13:announce-listll9:udp://t:1ee4:info");
            file.extend_from_slice(info);
            file.push(b'e');
            let m = Metainfo::from_bytes(&file).unwrap();
            assert_eq!(m.announce, None);
            assert_eq!(m.tracker_tiers(), vec![vec!["udp://t:1".to_string()]]);
            assert!(
                m.warnings.iter().any(|w| w.contains("`announce` ignored")),
                "{:?}",
                m.warnings
            );
        }
    }

    #[test]
    fn specific_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"i1e", "not a dictionary"),
            (b"d4:infoi1ee", "`info` should be a dictionary"),
            (b"de", "missing `info`"),
            (b"d4:infod4:name1:a6:lengthi5eee", "missing `piece length`"),
            (b"d4:infod4:name1:a12:piece lengthi0e6:pieces0:6:lengthi5eee", "must be positive"),
            (b"d4:infod4:name1:a12:piece length1:x6:pieces0:6:lengthi5eee", "should be an integer"),
            (b"d4:infod12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaa6:lengthi5eee", "missing `name`"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces3:abc6:lengthi5eee", "not a multiple of 20"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaa6:lengthi-5eee", "negative"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaa6:lengthi50eee", "need 4"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaa5:filesleee", "no files"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces0:6:lengthi0eee", "total size is zero"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces20:aaaaaaaaaaaaaaaaaaaa6:lengthi5eee garbage", "trailing garbage"),
            (b"d4:infod9:file treedeee", "meta version"),
            (b"d4:infod9:file treede12:meta versioni2eee", "no files"),
            (b"d4:infod4:name1:a12:piece lengthi16e6:pieces0:5:filesld6:lengthi9223372036854775807e4:pathl1:aeed6:lengthi9223372036854775807e4:pathl1:beeeee", "overflows"),
        ];
        for (input, want) in cases {
            let err = Metainfo::from_bytes(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{:?}: got {err:?}, want {want:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn piece_hashes_are_read_in_place() {
        let pieces: Vec<u8> = (0..60u8).collect();
        // Keys after `pieces`, and an unknown one, must not disturb it.
        let mut t = b"d4:infod6:lengthi40e4:name1:a12:piece lengthi16e6:pieces60:".to_vec();
        t.extend_from_slice(&pieces);
        t.extend_from_slice(b"7:privatei1e1:zi3eee");
        let m = Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.piece_count(), 3);
        for i in 0..3u32 {
            let want: [u8; 20] = pieces[i as usize * 20..][..20].try_into().unwrap();
            assert_eq!(m.piece_hash(i).unwrap(), want);
        }
        assert!(m.piece_hash(3).is_err());
        assert!(m.private);
        let mut all = [0u8; 60];
        m.hashes().read(0, &mut all).unwrap();
        assert_eq!(&all[..], &pieces[..]);
        assert!(m.hashes().read(1, &mut all).is_err());
        // `pieces` of the wrong type is still refused.
        let bad = b"d4:infod6:lengthi40e4:name1:a12:piece lengthi16e6:piecesi5eee";
        assert!(Metainfo::from_bytes(bad)
            .unwrap_err()
            .to_string()
            .contains("pieces"));
    }

    #[test]
    fn non_power_of_two_warns() {
        let m = Metainfo::from_bytes(
            b"d4:infod4:name1:a12:piece lengthi3e6:pieces40:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa6:lengthi5eee",
        )
        .unwrap();
        assert_eq!(m.warnings.len(), 1);
        assert_eq!(m.piece_size(1), 2);
    }

    #[test]
    fn sanitizes_elements() {
        let s = |b: &[u8]| sanitize_element(b);
        assert_eq!(s(b".."), None);
        assert_eq!(s(b"."), None);
        assert_eq!(s(b""), None);
        assert_eq!(s(b"/"), Some("_".into()));
        assert_eq!(s(b"\\"), Some("_".into()));
        assert_eq!(s(b"abc/../../def"), Some("abc....def".into()));
        assert_eq!(s(b"/etc"), Some("etc".into()));
        assert_eq!(s(b"C:"), Some("C_".into()));
        assert_eq!(s(b"a\x01b"), Some("a_b".into()));
        assert_eq!(s(b"CON"), Some("CON_".into()));
        assert_eq!(s(b"con.txt"), Some("con_.txt".into()));
        assert_eq!(s(b"console"), Some("console".into()));
        assert_eq!(s(b"foobar "), Some("foobar ".into()));
        let long = s(&[b'x'; 400]).unwrap();
        assert!(long.len() <= 240);
        let long_ext = s(format!("{}.txt", "y".repeat(300)).as_bytes()).unwrap();
        assert!(long_ext.ends_with(".txt") && long_ext.len() <= 240);
    }

    #[test]
    fn hostile_paths_stay_inside() {
        let t = b"d4:infod4:name2:..12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaa5:filesld6:lengthi1e4:pathl2:..2:..3:etc6:passwdeed6:lengthi1e4:pathl5:/root1:\\3:C:xeed6:lengthi1e4:pathl0:1:.eeeee";
        let m = Metainfo::from_bytes(t).unwrap();
        let root = Path::new("/out");
        for f in &m.files {
            let p = safe_join(root, &f.path).unwrap();
            assert!(p.starts_with(root), "{}", p.display());
            assert!(f
                .path
                .components()
                .all(|c| matches!(c, Component::Normal(_))));
        }
        assert_eq!(m.name, m.info_hash.hex());
        assert_eq!(m.files[0].path, Path::new(&m.name).join("etc/passwd"));
        assert_eq!(m.files[1].path, Path::new(&m.name).join("root/_/C_x"));
        assert_eq!(m.files[2].path, Path::new(&m.name).join("_"));
        assert_eq!(safe_join(root, Path::new("../x")), None);
        assert_eq!(safe_join(root, Path::new("/x")), None);
        assert_eq!(safe_join(root, Path::new("")), None);
    }

    #[test]
    fn nul_in_paths_is_refused() {
        let t = b"d4:infod4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaa5:filesld6:lengthi1e4:pathl3:a\x00beeeee";
        assert!(Metainfo::from_bytes(t)
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }

    #[test]
    fn duplicates_are_renamed() {
        let m = multi(
            &[(&["d", "a.txt"], 1), (&["d", "a.txt"], 1), (&["d"], 1)],
            16384,
        );
        let paths: Vec<_> = m.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(paths[0], Path::new("root/d/a.txt"));
        assert_eq!(paths[1], Path::new("root/d/a.1.txt"));
        // A file where a directory must be.
        assert_eq!(paths[2], Path::new("root/d.1"));
    }

    #[test]
    fn piece_file_mapping() {
        // Files: 10, 0 (empty), 20, 5 with pieces of 16: piece 0 = a[0..10] + c[0..6],
        // piece 1 = c[6..20] + d[0..2], piece 2 (short, 3 bytes) = d[2..5].
        let m = multi(&[(&["a"], 10), (&["b"], 0), (&["c"], 20), (&["d"], 5)], 16);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.total_length, 35);
        assert_eq!(m.piece_size(2), 3);
        let fs = |file, offset, len| FileSlice { file, offset, len };
        assert_eq!(m.piece_slices(0), vec![fs(0, 0, 10), fs(2, 0, 6)]);
        assert_eq!(m.piece_slices(1), vec![fs(2, 6, 14), fs(3, 0, 2)]);
        assert_eq!(m.piece_slices(2), vec![fs(3, 2, 3)]);
        assert_eq!(m.piece_slices(3), vec![]);
        assert_eq!(m.file_pieces(0), 0..1);
        assert_eq!(m.file_pieces(1), 0..0);
        assert_eq!(m.file_pieces(2), 0..2);
        assert_eq!(m.file_pieces(3), 1..3);
        // A piece spanning several files.
        let m = multi(&[(&["a"], 3), (&["b"], 3), (&["c"], 3)], 16);
        assert_eq!(
            m.piece_slices(0),
            vec![fs(0, 0, 3), fs(1, 0, 3), fs(2, 0, 3)]
        );
    }

    #[test]
    fn trackers_and_web_seeds() {
        let t = NewTorrent {
            name: "n".into(),
            length: 5,
            piece_length: 16384,
            pieces: hashes(1),
            trackers: vec![
                vec!["http://a/announce".into(), "udp://b:1".into()],
                vec!["http://c/".into()],
            ],
            web_seeds: vec!["http://w/x y".into()],
            private: true,
            comment: Some("hi".into()),
            creation_date: Some(42),
            ..Default::default()
        };
        let m = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(m.tracker_tiers(), t.trackers);
        assert_eq!(m.url_list, vec!["http://w/x%20y".to_string()]);
        assert!(m.private);
        assert_eq!(m.comment.as_deref(), Some("hi"));
        assert_eq!(m.creation_date, Some(42));
        assert!(!m.multi_file);
    }
}
