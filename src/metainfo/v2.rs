//! BEP 52 (BitTorrent v2) metainfo: the `file tree`, each file's
//! `pieces root`, the `piece layers` outside the info dictionary, and how
//! pieces map onto files (every file starts at a piece boundary).
//!
//! The file tree is read from the raw bytes of the info dictionary, so its
//! order is the order the bytes give (keys must be sorted, as bencoding
//! requires; a v2 torrent whose tree is not is refused, since peers would
//! not agree on the piece layout).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_bencode::value::Value;

use super::merkle::{self, Hash};
use super::{invalid, MetainfoError, MAX_FILES, MAX_PATH_DEPTH};

/// Largest file a v2 torrent may hold: 2^29 leaves of 16 KiB (8 TiB). The
/// merkle tree of one file is indexed with u32 on the wire, and the
/// fixtures libtorrent refuses as too large sit just under 16 TiB.
pub const MAX_V2_FILE: u64 = 1 << 43;
/// Smallest v2 piece: one leaf.
pub const MIN_V2_PIECE: u64 = merkle::BLOCK as u64;

/// One entry of the file tree, in tree order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Raw path elements under the torrent's root.
    pub path: Vec<Vec<u8>>,
    pub length: u64,
    pub root: Option<Hash>,
    pub symlink: Option<Vec<Vec<u8>>>,
    pub executable: bool,
}

/// A file of a v2 (or hybrid) torrent that holds data, as the v2 side sees it.
#[derive(Debug)]
pub struct V2File {
    /// Index in [`super::Metainfo::files`].
    pub file: usize,
    pub root: Hash,
    pub length: u64,
    pub first_piece: u32,
    pub pieces: u32,
    /// The piece layer (files larger than a piece): from the torrent, or
    /// later from peers (hash requests); checked against `root` before set.
    layer: OnceLock<Arc<[Hash]>>,
    /// The layers above the piece layer up to the root, built on the
    /// first hash request we answer for this file (and kept: each answer
    /// needs nodes of every layer).
    tree: OnceLock<Arc<[Vec<Hash>]>>,
}

impl V2File {
    pub fn layer(&self) -> Option<&Arc<[Hash]>> {
        self.layer.get()
    }

    /// Whether pieces of this file can be checked (a file of one piece
    /// is checked against its root).
    pub fn checkable(&self) -> bool {
        self.pieces <= 1 || self.layer.get().is_some()
    }

    /// Sets the piece layer if it hashes to the file's root.
    pub fn set_layer(&self, layer: Vec<Hash>, piece_length: u64) -> Result<(), MetainfoError> {
        if layer.len() as u64 != u64::from(self.pieces) {
            return Err(invalid(format!(
                "invalid piece layer: {} hashes for a file of {} pieces",
                layer.len(),
                self.pieces
            )));
        }
        if merkle::root_from_layer(&layer, piece_length) != self.root {
            return Err(invalid(
                "invalid piece layer: its hashes do not lead to the file's pieces root",
            ));
        }
        let _ = self.layer.set(layer.into());
        Ok(())
    }

    /// Layers from the piece layer up to the root: what a hash request
    /// for the piece layer may ask proof layers of.
    pub fn depth(&self) -> u32 {
        self.pieces.max(1).next_power_of_two().trailing_zeros()
    }

    /// The `hashes` answer to a request for this file's piece layer (at
    /// `level` above the leaves): the requested nodes and their uncles.
    /// None when the layer is not known or the request does not fit it.
    pub fn answer(
        &self,
        level: u32,
        index: u32,
        count: u32,
        proof_layers: u32,
    ) -> Option<Vec<Hash>> {
        if self.pieces <= 1 {
            return None;
        }
        let layer = self.layer.get()?;
        let tree = self
            .tree
            .get_or_init(|| merkle::upper_layers(layer, layer.len(), level).into());
        merkle::hashes_with_proof(
            layer,
            tree,
            level,
            u64::from(index),
            u64::from(count),
            proof_layers,
        )
    }
}

impl V2File {
    /// Leaves of this file's tree: its blocks, padded to a power of two,
    /// and for a file larger than a piece to a power of two of pieces.
    pub fn leaf_width(&self, piece_length: u64) -> u64 {
        let blocks = self.length.div_ceil(merkle::BLOCK as u64).max(1);
        if self.pieces > 1 {
            merkle::blocks_per_piece(piece_length) as u64
                * u64::from(self.pieces).next_power_of_two()
        } else {
            blocks.next_power_of_two()
        }
    }

    /// The `hashes` answer to a request for this file's leaves (base
    /// layer 0): the 16 KiB block hashes and their uncles up to layer
    /// `proof_layers`. The leaves come from the pieces' data, which
    /// `read` gives (a piece of the torrent, whole, or None when we do
    /// not have it); the uncles above a piece from the piece layer. None
    /// when a covered piece is missing, the layer is not known, the data
    /// no longer matches it, or the request does not fit the tree. At
    /// most `max_leaves` leaves are read (a piece larger than that
    /// is never read for a leaf request).
    pub fn answer_leaves(
        &self,
        piece_length: u64,
        index: u32,
        count: u32,
        proof_layers: u32,
        max_leaves: u64,
        mut read: impl FnMut(u32) -> Option<Vec<u8>>,
    ) -> Option<Vec<Hash>> {
        let (index, count) = (u64::from(index), u64::from(count));
        let width = self.leaf_width(piece_length);
        let depth = width.trailing_zeros();
        if count == 0
            || !count.is_power_of_two()
            || !index.is_multiple_of(count)
            || index.checked_add(count)? > width
            || proof_layers >= depth
        {
            return None;
        }
        let per_piece = merkle::blocks_per_piece(piece_length) as u64;
        // A window of whole pieces holding the request: its leaves come
        // from data, its root is checked against the piece layer.
        let window = if self.pieces > 1 {
            count.max(per_piece)
        } else {
            width
        };
        if window > max_leaves {
            return None;
        }
        let start = index - index % window;
        let mut leaves = Vec::with_capacity(window as usize);
        let first = u32::try_from(start / per_piece).ok()?;
        let last = u32::try_from((start + window).div_ceil(per_piece)).ok()?;
        for p in first..last.min(self.pieces) {
            let data = read(self.first_piece.checked_add(p)?)?;
            let len = self
                .length
                .saturating_sub(u64::from(p) * piece_length)
                .min(piece_length) as usize;
            let part = data.get(..len)?;
            let piece_leaves = merkle::leaves(part);
            let want = if self.pieces > 1 {
                *self.layer.get()?.get(p as usize)?
            } else {
                self.root
            };
            let w = if self.pieces > 1 {
                per_piece as usize
            } else {
                width as usize
            };
            if merkle::root(&piece_leaves, w, 0) != want {
                return None;
            }
            leaves.extend(piece_leaves);
            leaves.resize(leaves.len().next_multiple_of(w), merkle::pad(0));
        }
        leaves.resize(window as usize, merkle::pad(0));
        let mut out = merkle::leaves_with_proof(&leaves, start, index, count, proof_layers)?;
        let top = window.trailing_zeros();
        if proof_layers >= top {
            // Above the window: the piece layer's uncles of the window.
            let level = per_piece.trailing_zeros();
            let n = window / per_piece;
            let above = self.answer(
                level,
                u32::try_from(start / per_piece).ok()?,
                u32::try_from(n).ok()?,
                proof_layers - level,
            )?;
            out.extend_from_slice(above.get(n as usize..)?);
        }
        Some(out)
    }
}

/// The v2 side of a torrent.
#[derive(Debug)]
pub struct V2 {
    /// SHA-256 of the info dictionary.
    pub info_hash: [u8; 32],
    pub piece_length: u64,
    /// Files with data, in piece order.
    pub files: Vec<V2File>,
}

impl V2 {
    /// The first 20 bytes of the v2 info-hash: what handshakes, trackers
    /// and the DHT use for the v2 swarm.
    pub fn short_hash(&self) -> [u8; 20] {
        let mut h = [0; 20];
        h.copy_from_slice(&self.info_hash[..20]);
        h
    }

    pub fn file_of_piece(&self, piece: u32) -> Option<&V2File> {
        let i = self.files.partition_point(|f| f.first_piece <= piece);
        let f = self.files.get(i.checked_sub(1)?)?;
        (piece < f.first_piece + f.pieces).then_some(f)
    }

    /// Layers between the leaves and the piece layer: the base layer of
    /// hash requests for piece hashes.
    pub fn piece_level(&self) -> u32 {
        merkle::blocks_per_piece(self.piece_length).trailing_zeros()
    }

    pub fn by_root(&self, root: &Hash) -> Option<&V2File> {
        self.files.iter().find(|f| &f.root == root)
    }

    /// Whether every piece can be checked (all piece layers known).
    pub fn complete(&self) -> bool {
        self.files.iter().all(V2File::checkable)
    }

    /// The hash piece `piece` must have: its piece-layer node, or the
    /// file's root for a file of one piece.
    pub fn expected(&self, piece: u32) -> Result<Hash, MetainfoError> {
        let f = self
            .file_of_piece(piece)
            .ok_or(MetainfoError::BadPiece(piece))?;
        if f.pieces <= 1 && f.length <= self.piece_length {
            return Ok(f.root);
        }
        let layer = f.layer.get().ok_or_else(|| {
            invalid(format!(
                "the piece layer of file {} is not known yet",
                f.file
            ))
        })?;
        layer
            .get((piece - f.first_piece) as usize)
            .copied()
            .ok_or(MetainfoError::BadPiece(piece))
    }

    /// The file's bytes within `data`, a whole piece of the torrent (which
    /// may end with alignment padding).
    pub fn file_part<'a>(&self, piece: u32, data: &'a [u8]) -> Option<&'a [u8]> {
        let f = self.file_of_piece(piece)?;
        let start = u64::from(piece - f.first_piece) * self.piece_length;
        let n = f.length.saturating_sub(start).min(self.piece_length) as usize;
        data.get(..n)
    }

    /// The piece's merkle hash computed from a whole piece's bytes.
    pub fn hash(&self, piece: u32, data: &[u8]) -> Option<Hash> {
        let f = self.file_of_piece(piece)?;
        let part = self.file_part(piece, data)?;
        Some(merkle::piece_hash(part, self.piece_length, f.length))
    }

    /// Checks a whole piece; an error when the piece cannot be checked
    /// (its layer is not known), which blames no peer.
    pub fn verify(&self, piece: u32, data: &[u8]) -> Result<bool, MetainfoError> {
        let want = self.expected(piece)?;
        Ok(self.hash(piece, data) == Some(want))
    }
}

/// A bencoded value that keeps its dictionaries' order and borrows its strings.
#[derive(Debug)]
enum Raw<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Raw<'a>>),
    Dict(Vec<(&'a [u8], Raw<'a>)>),
}

fn bad_bencoding(at: usize) -> MetainfoError {
    invalid(format!("invalid bencoding in the file tree at byte {at}"))
}

/// Parses one value at `pos` of `buf` (already validated as bencoding, so
/// depth is bounded); returns it and the position after it.
fn raw(buf: &[u8], pos: usize) -> Result<(Raw<'_>, usize), MetainfoError> {
    let b = *buf.get(pos).ok_or_else(|| bad_bencoding(pos))?;
    match b {
        b'i' => {
            let end = buf[pos..]
                .iter()
                .position(|&c| c == b'e')
                .map(|i| pos + i)
                .ok_or_else(|| bad_bencoding(pos))?;
            let n = std::str::from_utf8(&buf[pos + 1..end])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad_bencoding(pos))?;
            Ok((Raw::Int(n), end + 1))
        }
        b'l' => {
            let mut out = Vec::new();
            let mut p = pos + 1;
            while buf.get(p) != Some(&b'e') {
                let (v, next) = raw(buf, p)?;
                out.push(v);
                p = next;
            }
            Ok((Raw::List(out), p + 1))
        }
        b'd' => {
            let mut out = Vec::new();
            let mut p = pos + 1;
            while buf.get(p) != Some(&b'e') {
                let (Raw::Bytes(k), next) = raw(buf, p)? else {
                    return Err(bad_bencoding(p));
                };
                let (v, next) = raw(buf, next)?;
                out.push((k, v));
                p = next;
            }
            Ok((Raw::Dict(out), p + 1))
        }
        b'0'..=b'9' => {
            let colon = buf[pos..]
                .iter()
                .position(|&c| c == b':')
                .map(|i| pos + i)
                .ok_or_else(|| bad_bencoding(pos))?;
            let len: usize = std::str::from_utf8(&buf[pos..colon])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad_bencoding(pos))?;
            let end = (colon + 1)
                .checked_add(len)
                .filter(|e| *e <= buf.len())
                .ok_or_else(|| bad_bencoding(pos))?;
            Ok((Raw::Bytes(&buf[colon + 1..end]), end))
        }
        _ => Err(bad_bencoding(pos)),
    }
}

/// Reads the `file tree` of an info dictionary (its raw bytes) into its
/// files, in order, checking each entry.
pub fn read_tree(info: &[u8]) -> Result<Vec<TreeEntry>, MetainfoError> {
    let span = super::bencode::top_level_span(info, b"file tree")?
        .ok_or(MetainfoError::Missing("file tree"))?;
    let (tree, _) = raw(info, span.start)?;
    let Raw::Dict(top) = &tree else {
        return Err(invalid(
            "`file tree` is not a dictionary: file parse failed",
        ));
    };
    if top.is_empty() {
        return Err(invalid("`file tree` is empty: no files in torrent"));
    }
    if top.iter().any(|(k, _)| k.is_empty()) {
        return Err(invalid(
            "`file tree` has a file with an empty name: file parse failed",
        ));
    }
    let mut out = Vec::new();
    walk(&tree, &mut Vec::new(), &mut out)?;
    if out.is_empty() {
        return Err(invalid("`file tree` is empty: no files in torrent"));
    }
    Ok(out)
}

fn walk<'a>(
    node: &Raw<'a>,
    path: &mut Vec<Vec<u8>>,
    out: &mut Vec<TreeEntry>,
) -> Result<(), MetainfoError> {
    let Raw::Dict(entries) = node else {
        return Err(invalid(
            "`file tree` entry is not a dictionary: file parse failed",
        ));
    };
    if path.len() > MAX_PATH_DEPTH {
        return Err(invalid(format!(
            "`file tree` is nested over {MAX_PATH_DEPTH} levels deep"
        )));
    }
    for w in entries.windows(2) {
        if w[0].0 >= w[1].0 {
            return Err(invalid(
                "invalid bencoding: `file tree` keys are not sorted or repeat",
            ));
        }
    }
    // A file: the only key is "", whose value describes it.
    if let Some((_, leaf)) = entries.iter().find(|(k, _)| k.is_empty()) {
        if entries.len() != 1 || path.is_empty() {
            return Err(invalid(
                "`file tree` mixes a file and a directory under one name: file parse failed",
            ));
        }
        out.push(file_entry(leaf, path)?);
        if out.len() > MAX_FILES {
            return Err(invalid(format!("over {MAX_FILES} files is refused")));
        }
        return Ok(());
    }
    if entries.is_empty() {
        return Err(invalid(
            "`file tree` has an empty directory: file parse failed",
        ));
    }
    for (k, child) in entries {
        path.push(k.to_vec());
        walk(child, path, out)?;
        path.pop();
    }
    Ok(())
}

fn file_entry(leaf: &Raw<'_>, path: &[Vec<u8>]) -> Result<TreeEntry, MetainfoError> {
    let name = String::from_utf8_lossy(&path.join(&b'/')).into_owned();
    let Raw::Dict(d) = leaf else {
        return Err(invalid(format!(
            "file `{name}` is not a dictionary: file parse failed"
        )));
    };
    let get = |key: &[u8]| d.iter().find(|(k, _)| *k == key).map(|(_, v)| v);
    let attr: &[u8] = match get(b"attr") {
        Some(Raw::Bytes(a)) => a,
        _ => b"",
    };
    if attr.contains(&b'p') {
        return Err(invalid(format!(
            "file `{name}` is marked as a pad file, which v2 file trees do not have: invalid pad file"
        )));
    }
    let length = match get(b"length") {
        Some(Raw::Int(n)) if *n >= 0 => *n as u64,
        Some(Raw::Int(n)) => {
            return Err(invalid(format!(
                "file `{name}` has a negative length ({n}): invalid length"
            )))
        }
        _ => {
            return Err(invalid(format!(
                "file `{name}` has no length: file parse failed"
            )))
        }
    };
    if length > MAX_V2_FILE {
        return Err(invalid(format!(
            "file `{name}` is {length} bytes; v2 files over {MAX_V2_FILE} are refused: invalid length"
        )));
    }
    let symlink = if attr.contains(&b'l') {
        match get(b"symlink path") {
            Some(Raw::List(elems)) => {
                let mut target = Vec::new();
                for e in elems {
                    let Raw::Bytes(b) = e else {
                        return Err(invalid(format!(
                            "file `{name}` has an invalid symlink path"
                        )));
                    };
                    target.push(b.to_vec());
                }
                Some(target)
            }
            _ => {
                return Err(invalid(format!(
                    "symlink `{name}` has no `symlink path`: missing pieces root"
                )))
            }
        }
    } else {
        None
    };
    let root = match get(b"pieces root") {
        Some(Raw::Bytes(r)) if r.len() == 32 => {
            let r: Hash = (*r).try_into().map_err(|_| invalid("bad pieces root"))?;
            if r == [0; 32] {
                return Err(invalid(format!(
                    "file `{name}` has an all-zero pieces root: missing pieces root"
                )));
            }
            Some(r)
        }
        Some(_) => {
            return Err(invalid(format!(
                "file `{name}` has a `pieces root` that is not 32 bytes: missing pieces root"
            )))
        }
        None => None,
    };
    if symlink.is_none() && length > 0 && root.is_none() {
        return Err(invalid(format!(
            "file `{name}` has data but no `pieces root`: missing pieces root"
        )));
    }
    Ok(TreeEntry {
        path: path.to_vec(),
        length: if symlink.is_some() { 0 } else { length },
        root: if symlink.is_some() || length == 0 {
            None
        } else {
            root
        },
        symlink,
        executable: attr.contains(&b'x'),
    })
}

/// Checks a v2 piece length: a power of two, at least 16 KiB.
pub fn check_piece_length(piece_length: u64) -> Result<(), MetainfoError> {
    if piece_length < MIN_V2_PIECE || !piece_length.is_power_of_two() {
        return Err(invalid(format!(
            "invalid piece length {piece_length}: v2 torrents need a power of two of at least 16 KiB"
        )));
    }
    Ok(())
}

/// Builds the v2 side: `placed` gives, per tree entry with data, its index
/// in the torrent's files and its offset in the piece space (which must be
/// piece-aligned). `layers` is the top-level `piece layers` value.
pub fn build(
    info_hash: [u8; 32],
    piece_length: u64,
    entries: &[TreeEntry],
    placed: &[(usize, u64)],
    layers: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<V2, MetainfoError> {
    let mut files = Vec::new();
    let mut placed = placed.iter();
    for e in entries {
        let Some(root) = e.root else { continue };
        let &(file, offset) = placed
            .next()
            .ok_or_else(|| invalid("v2 files do not match the file list: inconsistent files"))?;
        if !offset.is_multiple_of(piece_length) {
            return Err(invalid(format!(
                "file {file} does not start on a piece boundary: inconsistent files"
            )));
        }
        let first_piece =
            u32::try_from(offset / piece_length).map_err(|_| invalid("too many pieces"))?;
        let pieces = u32::try_from(merkle::layer_len(piece_length, e.length))
            .map_err(|_| invalid("too many pieces"))?;
        files.push(V2File {
            file,
            root,
            length: e.length,
            first_piece,
            pieces,
            layer: OnceLock::new(),
            tree: OnceLock::new(),
        });
    }
    let v2 = V2 {
        info_hash,
        piece_length,
        files,
    };
    let layers = match layers {
        None => HashMap::new(),
        Some(Value::Dict(d)) => d.iter().collect(),
        Some(_) => {
            return Err(invalid(
                "`piece layers` is not a dictionary: invalid piece layer",
            ))
        }
    };
    for (key, value) in layers {
        let root: Hash = key.as_slice().try_into().map_err(|_| {
            invalid("`piece layers` has a key that is not a 32-byte root: invalid piece layer")
        })?;
        let Value::Bytes(bytes) = value else {
            return Err(invalid(
                "`piece layers` has a value that is not a string: invalid piece layer",
            ));
        };
        let owners: Vec<&V2File> = v2.files.iter().filter(|f| f.root == root).collect();
        if owners.is_empty() {
            return Err(invalid(
                "`piece layers` has an entry for no file of the torrent: invalid piece layer",
            ));
        }
        if !bytes.len().is_multiple_of(32) {
            return Err(invalid(format!(
                "a piece layer is {} bytes, not a multiple of 32: invalid piece layer",
                bytes.len()
            )));
        }
        let layer: Vec<Hash> = bytes
            .chunks_exact(32)
            .filter_map(|c| c.try_into().ok())
            .collect();
        for f in owners {
            if f.length <= piece_length {
                return Err(invalid(format!(
                    "file {} fits in one piece and must not have a piece layer: invalid piece layer",
                    f.file
                )));
            }
            f.set_layer(layer.clone(), piece_length)?;
        }
    }
    let missing = v2.files.iter().filter(|f| !f.checkable()).count();
    if missing > 0 {
        warnings.push(format!(
            "{missing} file(s) have no piece layer; their hashes must come from peers"
        ));
    }
    Ok(v2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_order_and_shape() {
        let info = b"d9:file treed1:ad1:bd0:d6:lengthi1e11:pieces root32:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaeee1:cd0:d6:lengthi0eeeee";
        let t = read_tree(info).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].path, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(t[1].root, None);
        let unsorted = b"d9:file treed1:cd0:d6:lengthi0eee1:ad0:d6:lengthi0eeeee";
        assert!(read_tree(unsorted)
            .unwrap_err()
            .to_string()
            .contains("bencoding"));
        let mixed = b"d9:file treed1:ad0:d6:lengthi0ee1:bd0:d6:lengthi0eeeee";
        assert!(read_tree(mixed).is_err());
        let no_root = b"d9:file treed1:ad0:d6:lengthi5eeeee";
        assert!(read_tree(no_root)
            .unwrap_err()
            .to_string()
            .contains("pieces root"));
    }

    #[test]
    fn piece_lengths() {
        assert!(check_piece_length(16384).is_ok());
        assert!(check_piece_length(8192).is_err());
        assert!(check_piece_length(32767).is_err());
    }
}
