//! BEP 52 merkle trees: SHA-256 over 16 KiB blocks of one file.
//!
//! A file's tree has one leaf per 16 KiB block (the last block may be
//! short and is hashed as it is). The leaf count is padded to a power of
//! two with leaves of 32 zero bytes; a node is the SHA-256 of its two
//! children. A pad node higher up is therefore the root of an all-pad
//! subtree, which [`pad`] gives. The layer whose nodes each cover one
//! piece is the "piece layer" a torrent carries for files larger than a
//! piece; a file of at most one piece is checked against its root alone,
//! and its tree is only as wide as its block count needs.

use sha2::{Digest, Sha256};

/// Bytes under one leaf.
pub const BLOCK: usize = 16 << 10;

pub type Hash = [u8; 32];

pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The parent of two nodes.
pub fn join(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of a subtree `2^levels` leaves wide made only of pad leaves
/// (level 0 is a pad leaf itself: 32 zero bytes).
pub fn pad(levels: u32) -> Hash {
    let mut h = [0u8; 32];
    for _ in 0..levels {
        h = join(&h, &h);
    }
    h
}

/// One hash per 16 KiB block of `data`.
pub fn leaves(data: &[u8]) -> Vec<Hash> {
    data.chunks(BLOCK).map(sha256).collect()
}

/// The layer above `nodes` (at `level` above the leaves), padding an odd
/// end with that level's pad node.
fn parent_layer(nodes: &[Hash], level: u32) -> Vec<Hash> {
    let p = pad(level);
    nodes
        .chunks(2)
        .map(|c| join(&c[0], c.get(1).unwrap_or(&p)))
        .collect()
}

/// The root over `nodes`, which sit `level` layers above the leaves, in a
/// tree `width` nodes wide at that layer (a power of two, at least the
/// node count); missing nodes are pads.
pub fn root(nodes: &[Hash], width: usize, level: u32) -> Hash {
    let width = width.max(1).next_power_of_two();
    if nodes.is_empty() {
        return pad(level + width.trailing_zeros());
    }
    let mut layer = nodes.to_vec();
    let mut level = level;
    let mut w = width;
    while w > 1 {
        layer = parent_layer(&layer, level);
        level += 1;
        w /= 2;
    }
    layer[0]
}

/// Every layer from `nodes` (at `level`, `width` wide) up to the root,
/// bottom first; missing nodes are left out (they are pads). Used to
/// answer hash requests.
pub fn layers(nodes: Vec<Hash>, width: usize, level: u32) -> Vec<Vec<Hash>> {
    let width = width.max(1).next_power_of_two();
    let mut out = vec![nodes];
    let mut level = level;
    let mut w = width;
    while w > 1 {
        let next = parent_layer(out.last().map_or(&[][..], |l| &l[..]), level);
        out.push(next);
        level += 1;
        w /= 2;
    }
    out
}

/// Leaves under one piece.
pub fn blocks_per_piece(piece_length: u64) -> usize {
    (piece_length as usize / BLOCK).max(1)
}

/// What a piece of a v2 file is checked against, computed from its bytes
/// (only the file's, not the alignment padding after its end): for a file
/// larger than a piece, the piece-layer node (a subtree one piece wide);
/// for a smaller one, the file's root.
pub fn piece_hash(data: &[u8], piece_length: u64, file_length: u64) -> Hash {
    let leaves = leaves(data);
    if file_length > piece_length {
        root(&leaves, blocks_per_piece(piece_length), 0)
    } else {
        root(&leaves, leaves.len(), 0)
    }
}

/// The nodes of a piece layer a file of `file_length` bytes has.
pub fn layer_len(piece_length: u64, file_length: u64) -> u64 {
    file_length.div_ceil(piece_length)
}

/// A file's root from its piece layer.
pub fn root_from_layer(layer: &[Hash], piece_length: u64) -> Hash {
    let level = blocks_per_piece(piece_length).trailing_zeros();
    root(layer, layer.len(), level)
}

/// The root of a whole file's bytes (for `create` and tests).
pub fn file_root(data: &[u8], piece_length: u64) -> Hash {
    let file_length = data.len() as u64;
    if file_length <= piece_length {
        return piece_hash(data, piece_length, file_length);
    }
    let layer: Vec<Hash> = data
        .chunks(piece_length as usize)
        .map(|p| piece_hash(p, piece_length, file_length))
        .collect();
    root_from_layer(&layer, piece_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_is_its_own_root() {
        let d = vec![7u8; 100];
        assert_eq!(file_root(&d, 1 << 16), sha256(&d));
    }

    #[test]
    fn small_file_is_padded_to_a_power_of_two_of_its_blocks() {
        // 3 blocks: a tree 4 leaves wide, not one piece wide.
        let d = vec![1u8; 2 * BLOCK + 5];
        let l = leaves(&d);
        let want = join(&join(&l[0], &l[1]), &join(&l[2], &[0; 32]));
        assert_eq!(file_root(&d, 1 << 20), want);
    }

    #[test]
    fn piece_layer_and_whole_tree_agree() {
        // 5 pieces of 2 blocks (last one short): the root over all leaves
        // padded to 16 equals the root over the piece layer padded to 8.
        let pl = 2 * BLOCK as u64;
        let d: Vec<u8> = (0..(9 * BLOCK + 10)).map(|i| (i % 251) as u8).collect();
        let all = leaves(&d);
        assert_eq!(file_root(&d, pl), root(&all, 16, 0));
        let layer: Vec<Hash> = d
            .chunks(pl as usize)
            .map(|p| piece_hash(p, pl, d.len() as u64))
            .collect();
        assert_eq!(layer.len() as u64, layer_len(pl, d.len() as u64));
        assert_eq!(root_from_layer(&layer, pl), root(&all, 16, 0));
        let ls = layers(all.clone(), 16, 0);
        assert_eq!(ls.len(), 5);
        assert_eq!(ls[1], layer);
        assert_eq!(ls[4], vec![root(&all, 16, 0)]);
    }

    #[test]
    fn pads() {
        assert_eq!(pad(0), [0; 32]);
        assert_eq!(pad(1), join(&[0; 32], &[0; 32]));
        assert_eq!(root(&[], 4, 0), pad(2));
    }
}
