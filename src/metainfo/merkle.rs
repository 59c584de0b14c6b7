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
/// bottom first; missing nodes are left out (they are pads).
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

/// The layers above `nodes` (at `level`, `width` wide) up to the root,
/// lowest first, without a copy of `nodes` itself: what answering hash
/// requests over a known layer needs kept besides it.
pub fn upper_layers(nodes: &[Hash], width: usize, level: u32) -> Vec<Vec<Hash>> {
    let width = width.max(1).next_power_of_two();
    let mut out: Vec<Vec<Hash>> = Vec::new();
    let mut level = level;
    let mut w = width;
    while w > 1 {
        let next = parent_layer(out.last().map_or(nodes, |l| &l[..]), level);
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

/// The hashes a BEP 52 `hashes` message carries for a request over
/// `base` (a layer `level` above the leaves) and `upper` (the layers above
/// it up to the root, from [`upper_layers`]; missing nodes are pads): nodes `index..index +
/// count` of the bottom layer, then one uncle per proof layer from the
/// first one the requested nodes cannot give (layer log2(count) above
/// them) up to layer `proof_layers`, the one closest to the root last.
/// None for a request that does not fit the tree: `count` not a power of
/// two, `index` not a multiple of it, past the layer's end, or proof
/// layers reaching the root or beyond.
pub fn hashes_with_proof(
    base: &[Hash],
    upper: &[Vec<Hash>],
    level: u32,
    index: u64,
    count: u64,
    proof_layers: u32,
) -> Option<Vec<Hash>> {
    let depth = u32::try_from(upper.len()).ok()?;
    let width = 1u64.checked_shl(depth)?;
    if count == 0
        || !count.is_power_of_two()
        || !index.is_multiple_of(count)
        || index.checked_add(count)? > width
        || proof_layers >= depth.max(1)
    {
        return None;
    }
    let node = |layer: u32, i: u64| -> Hash {
        let nodes = match layer.checked_sub(1) {
            None => Some(base),
            Some(k) => upper.get(k as usize).map(|l| &l[..]),
        };
        nodes
            .and_then(|l| l.get(usize::try_from(i).ok()?))
            .copied()
            .unwrap_or_else(|| pad(level + layer))
    };
    let first_uncle = count.trailing_zeros();
    let mut out = Vec::with_capacity(count as usize + (proof_layers + 1) as usize);
    out.extend((index..index + count).map(|i| node(0, i)));
    for layer in first_uncle..=proof_layers {
        out.push(node(layer, (index >> layer) ^ 1));
    }
    Some(out)
}

/// What a window of leaves can give of the answer to a request for
/// leaves `index..index + count` with `proof_layers`: the leaves and their
/// uncles in the layers below the window's own root (a leaf request's
/// uncles above it come from the piece layer, which needs no data).
/// `window` holds leaves `start..start + window.len()`, pads included;
/// its length is a power of two and `start` a multiple of it. None when
/// the request is not a whole subtree inside the window.
pub fn leaves_with_proof(
    window: &[Hash],
    start: u64,
    index: u64,
    count: u64,
    proof_layers: u32,
) -> Option<Vec<Hash>> {
    let width = window.len() as u64;
    if width == 0
        || !width.is_power_of_two()
        || !start.is_multiple_of(width)
        || count == 0
        || !count.is_power_of_two()
        || !index.is_multiple_of(count)
        || index < start
        || index.checked_add(count)? > start.checked_add(width)?
    {
        return None;
    }
    let top = width.trailing_zeros();
    let tree = layers(window.to_vec(), window.len(), 0);
    let from = usize::try_from(index - start).ok()?;
    let mut out: Vec<Hash> = window.get(from..from + count as usize)?.to_vec();
    for layer in count.trailing_zeros()..=proof_layers.min(top.saturating_sub(1)) {
        if layer >= top {
            break;
        }
        let i = ((index >> layer) ^ 1) - (start >> layer);
        out.push(*tree.get(layer as usize)?.get(usize::try_from(i).ok()?)?);
    }
    Some(out)
}

/// Uncles a `hashes` answer carries for a request of `count` nodes with
/// `proof_layers` proof layers (the first log2(count) are implied by the
/// nodes themselves).
pub fn uncle_count(count: u64, proof_layers: u32) -> u32 {
    let implied = count.max(1).trailing_zeros();
    proof_layers.saturating_add(1).saturating_sub(implied)
}

/// Whether `nodes` (at `index..index + nodes.len()` of a layer `level`
/// above the leaves) and their `uncles` lead to `root`, which sits
/// `depth` layers above that layer. The nodes must be a power of two at
/// an index that is a multiple of their count (a whole subtree), and the
/// uncles must reach exactly the root: a proof that stops short proves
/// nothing.
pub fn check_proof(
    root_hash: &Hash,
    level: u32,
    depth: u32,
    index: u64,
    nodes: &[Hash],
    uncles: &[Hash],
) -> bool {
    let count = nodes.len() as u64;
    if count == 0 || !count.is_power_of_two() || !index.is_multiple_of(count) {
        return false;
    }
    let mut layer = count.trailing_zeros();
    let width = 1u64.checked_shl(depth).unwrap_or(u64::MAX);
    if layer > depth || index.checked_add(count).is_none_or(|end| end > width) {
        return false;
    }
    let mut node = root(nodes, nodes.len(), level);
    let mut pos = index >> layer;
    for u in uncles {
        if layer >= depth {
            return false;
        }
        node = if pos.is_multiple_of(2) {
            join(&node, u)
        } else {
            join(u, &node)
        };
        pos >>= 1;
        layer += 1;
    }
    layer == depth && node == *root_hash
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
        assert_eq!(upper_layers(&all, 16, 0), ls[1..]);
    }

    #[test]
    fn pads() {
        assert_eq!(pad(0), [0; 32]);
        assert_eq!(pad(1), join(&[0; 32], &[0; 32]));
        assert_eq!(root(&[], 4, 0), pad(2));
    }

    /// A tree of 5 pieces (2 blocks each) padded to 8 at the piece layer:
    /// every aligned subtree, answered with its full proof, checks
    /// against the root, and any change to a node or uncle does not.
    #[test]
    fn proofs_answer_and_check() {
        let level = 1;
        let layer: Vec<Hash> = (0..5u8).map(|i| sha256(&[i])).collect();
        let tree = layers(layer.clone(), layer.len(), level);
        assert_eq!(tree.len(), 4);
        let top = tree[3][0];
        assert_eq!(top, root(&layer, 8, level));
        for count in [1u64, 2, 4, 8] {
            for index in (0..8).step_by(count as usize) {
                let p = 2;
                let got = hashes_with_proof(&tree[0], &tree[1..], level, index, count, p).unwrap();
                let n = count as usize;
                assert_eq!(got.len(), n + uncle_count(count, p) as usize);
                let (nodes, uncles) = got.split_at(n);
                // Past the file's end the nodes are pads.
                for (k, h) in nodes.iter().enumerate() {
                    let i = index as usize + k;
                    let want = layer.get(i).copied().unwrap_or(pad(level));
                    assert_eq!(*h, want);
                }
                assert!(
                    check_proof(&top, level, 3, index, nodes, uncles),
                    "{count}@{index}"
                );
                let mut bad = nodes.to_vec();
                bad[0][0] ^= 1;
                assert!(!check_proof(&top, level, 3, index, &bad, uncles));
                if let Some(u) = uncles.first() {
                    let mut bad = uncles.to_vec();
                    bad[0] = join(u, u);
                    assert!(!check_proof(&top, level, 3, index, nodes, &bad));
                    // Short of the root proves nothing.
                    assert!(!check_proof(&top, level, 3, index, nodes, &uncles[1..]));
                }
                // Moved to another index, the same nodes do not check
                // (pads moved among pads would: they are all alike).
                let other = (index + count) % 8;
                if other != index && index + count <= 4 {
                    assert!(!check_proof(&top, level, 3, other, nodes, uncles));
                }
            }
        }
        // The whole layer needs no uncle.
        assert_eq!(uncle_count(8, 2), 0);
        assert_eq!(
            hashes_with_proof(&tree[0], &tree[1..], level, 0, 8, 2)
                .unwrap()
                .len(),
            8
        );
        // Requests that do not fit the tree.
        for (index, count, p) in [
            (0, 3, 2),
            (2, 4, 2),
            (8, 2, 2),
            (0, 16, 2),
            (0, 2, 3),
            (0, 0, 0),
        ] {
            assert_eq!(
                hashes_with_proof(&tree[0], &tree[1..], level, index, count, p),
                None,
                "{index} {count} {p}"
            );
        }
        assert!(!check_proof(&top, level, 3, 1, &layer[..2], &[]));
        assert!(!check_proof(&top, level, 3, 0, &layer[..3], &[]));
        assert!(!check_proof(&top, level, 3, 0, &[], &[]));
    }

    /// A request for leaves answered from a window of them (uncles inside
    /// it) plus the piece layer's answer for the window (uncles above it)
    /// checks against the file's root; so does the window's own root
    /// against its piece-layer node.
    #[test]
    fn leaf_answers_check() {
        // 5 pieces of 4 blocks, the last one short: 19 leaves padded to 32.
        let pl = 4 * BLOCK as u64;
        let d: Vec<u8> = (0..(18 * BLOCK + 77)).map(|i| (i % 253) as u8).collect();
        let mut all = leaves(&d);
        let real = all.len();
        all.resize(32, pad(0));
        let top = root(&all, 32, 0);
        assert_eq!(top, file_root(&d, pl));
        let layer: Vec<Hash> = d
            .chunks(pl as usize)
            .map(|p| piece_hash(p, pl, d.len() as u64))
            .collect();
        let upper = upper_layers(&layer, layer.len(), 2);
        for count in [1u64, 2, 4, 8, 16, 32] {
            for index in (0..32).step_by(count as usize) {
                // The window: at least a piece, at least the request.
                let w = count.max(4);
                let start = index - index % w;
                let window = &all[start as usize..(start + w) as usize];
                for proof in 0..5u32 {
                    let mut got = leaves_with_proof(window, start, index, count, proof).unwrap();
                    let wl = w.trailing_zeros();
                    if proof >= wl {
                        let above =
                            hashes_with_proof(&layer, &upper, 2, start / 4, w / 4, proof - 2)
                                .unwrap();
                        got.extend_from_slice(&above[(w / 4) as usize..]);
                    }
                    assert_eq!(
                        got.len(),
                        count as usize + uncle_count(count, proof) as usize
                    );
                    let (nodes, uncles) = got.split_at(count as usize);
                    assert_eq!(nodes, &all[index as usize..(index + count) as usize]);
                    if proof == 4 {
                        assert!(
                            check_proof(&top, 0, 5, index, nodes, uncles),
                            "{count}@{index}"
                        );
                        if (index as usize) < real {
                            let mut bad = nodes.to_vec();
                            bad[0][3] ^= 1;
                            assert!(!check_proof(&top, 0, 5, index, &bad, uncles));
                        }
                    }
                }
            }
        }
        // A piece's leaves lead to its piece-layer node.
        for (p, want) in layer.iter().enumerate() {
            assert_eq!(root(&all[p * 4..p * 4 + 4], 4, 0), *want);
        }
        // Requests outside the window, or not a subtree, get nothing.
        let w = &all[4..8];
        for (start, index, count) in [
            (4, 0, 4),
            (4, 4, 8),
            (4, 5, 2),
            (4, 4, 3),
            (3, 4, 1),
            (4, 4, 0),
        ] {
            assert_eq!(
                leaves_with_proof(w, start, index, count, 3),
                None,
                "{start} {index} {count}"
            );
        }
        assert_eq!(leaves_with_proof(&all[..3], 0, 0, 1, 0), None);
    }

    /// The wire convention matches libtorrent's: a request of 512 nodes
    /// with P proof layers gets P - 8 uncles; one of 2 gets P.
    #[test]
    fn uncle_counts() {
        assert_eq!(uncle_count(512, 10), 2);
        assert_eq!(uncle_count(512, 8), 0);
        assert_eq!(uncle_count(2, 3), 3);
        assert_eq!(uncle_count(1, 3), 4);
    }

    proptest::proptest! {
        /// Whatever a peer asks or answers, neither side panics; every
        /// request that gets an answer gets one that checks, and any
        /// other index does not pass for it.
        #[test]
        fn prop_any_request_or_answer(
            pieces in 2usize..70,
            level in 0u32..4,
            index in 0u64..200,
            count in 0u64..200,
            proof in proptest::prop_oneof![0u32..12, proptest::prelude::any::<u32>()],
            junk in proptest::collection::vec(proptest::prelude::any::<[u8; 32]>(), 0..20),
            split in 0usize..20,
        ) {
            let layer: Vec<Hash> = (0..pieces).map(|i| sha256(&i.to_le_bytes())).collect();
            let tree = layers(layer.clone(), layer.len(), level);
            let depth = (tree.len() - 1) as u32;
            let top = tree[depth as usize][0];
            if let Some(got) = hashes_with_proof(&tree[0], &tree[1..], level, index, count, proof) {
                let n = count as usize;
                proptest::prop_assert_eq!(got.len(), n + uncle_count(count, proof) as usize);
                let (nodes, uncles) = got.split_at(n);
                // Proofs reach the root when they ask for all the layers.
                if proof + 1 == depth {
                    proptest::prop_assert!(check_proof(&top, level, depth, index, nodes, uncles));
                }
            }
            let split = split.min(junk.len());
            let (nodes, uncles) = junk.split_at(split);
            let _ = check_proof(&top, level, depth, index, nodes, uncles);
            let _ = check_proof(&top, level, 63, u64::MAX - 1, nodes, uncles);
            let _ = check_proof(&top, level, u32::MAX, 0, nodes, uncles);
            let _ = uncle_count(count, proof);
            let _ = hashes_with_proof(&tree[0], &tree[1..], level, u64::MAX, count, proof);
        }
    }
}
