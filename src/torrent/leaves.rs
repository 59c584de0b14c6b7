//! Finding the bad blocks of a v2 piece that failed its check (BEP 52),
//! by asking a peer for the piece's 16 KiB leaf hashes. Pure bookkeeping,
//! no I/O: the coordinator keeps the piece's data and says who may be
//! asked; this says what to ask, whether an answer can be believed and
//! which blocks it condemns.
//!
//! An answer is believed only when its leaves lead to the piece hash we
//! already trust (the piece-layer node, or a one-piece file's root), so a
//! lying peer cannot shift the blame: a block whose hash differs from a
//! proven leaf is provably bad, and so is the peer that sent it.

use std::time::Duration;

use std::time::Instant;

use crate::metainfo::merkle::{self, Hash};
use crate::metainfo::v2::V2;
use crate::peer::wire::{HashRequest, MAX_HASH_REQUEST};
use crate::peer::PeerKey;

/// An unanswered leaf request is given up on after this long, and the
/// piece is fetched again whole, as without leaf hashes.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What checking a failed piece's blocks needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The request for the piece's leaves: its length is also the width
    /// of the subtree they make.
    pub req: HashRequest,
    /// False when the piece's data alone tells which block is bad (a
    /// piece of one block): nobody needs to be asked.
    pub ask: bool,
    /// What the leaves must lead to.
    pub expected: Hash,
}

/// How piece `piece` of `v2` can be checked block by block; None when it
/// cannot (no such piece, its hash unknown, or more leaves per piece than
/// one request may carry).
pub fn plan(v2: &V2, piece: u32) -> Option<Plan> {
    let f = v2.file_of_piece(piece)?;
    let expected = v2.expected(piece).ok()?;
    let per_piece = merkle::blocks_per_piece(v2.piece_length) as u64;
    let (index, length) = if f.pieces > 1 {
        (u64::from(piece - f.first_piece) * per_piece, per_piece)
    } else {
        (0, f.leaf_width(v2.piece_length))
    };
    let real = f
        .length
        .div_ceil(merkle::BLOCK as u64)
        .saturating_sub(index)
        .min(length);
    let ask = real > 1;
    let length = u32::try_from(length)
        .ok()
        .filter(|l| *l <= MAX_HASH_REQUEST || !ask)?;
    Some(Plan {
        req: HashRequest {
            root: f.root,
            base: 0,
            index: u32::try_from(index).ok()?,
            length,
            // The leaves alone lead to the piece hash: no uncle needed.
            proof_layers: length.trailing_zeros().saturating_sub(1),
        },
        ask,
        expected,
    })
}

/// Our leaf of each block of the file's part of piece `piece` (whole, in
/// `data`), and the blocks that reach past the file's end (alignment
/// padding) with bytes that are not zeros.
pub fn our_leaves(v2: &V2, piece: u32, data: &[u8]) -> (Vec<Hash>, Vec<usize>) {
    let Some(part) = v2.file_part(piece, data) else {
        return (Vec::new(), Vec::new());
    };
    let leaves = merkle::leaves(part);
    let mut pad_bad = Vec::new();
    let mut i = part.len() / merkle::BLOCK;
    while i * merkle::BLOCK < data.len() {
        let from = (i * merkle::BLOCK).max(part.len());
        let to = ((i + 1) * merkle::BLOCK).min(data.len());
        if data
            .get(from..to)
            .is_some_and(|b| b.iter().any(|x| *x != 0))
        {
            pad_bad.push(i);
        }
        i += 1;
    }
    (leaves, pad_bad)
}

/// The blocks of a failed piece that are bad, given the leaves a piece
/// hash vouches for (`proven`, padded to a power of two), our own leaf
/// of each block of the file's part of the piece (`ours`) and the blocks
/// past the file's end that should be zeros and are not (`pad_bad`).
/// None when `proven` does not lead to `expected` (a lie), or when
/// nothing is found wrong (the piece failed for a reason the leaves do
/// not show).
pub fn bad_blocks(
    expected: &Hash,
    proven: &[Hash],
    ours: &[Hash],
    pad_bad: &[usize],
) -> Option<Vec<usize>> {
    if proven.len() < ours.len() || merkle::root(proven, proven.len(), 0) != *expected {
        return None;
    }
    let mut bad: Vec<usize> = ours
        .iter()
        .zip(proven)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .chain(pad_bad.iter().copied())
        .collect();
    bad.sort_unstable();
    bad.dedup();
    (!bad.is_empty()).then_some(bad)
}

/// A failed piece waiting for its leaf hashes.
#[derive(Debug)]
pub struct Pending {
    pub req: HashRequest,
    pub expected: Hash,
    /// Our leaf of each block of the file's part of the piece.
    pub ours: Vec<Hash>,
    pub pad_bad: Vec<usize>,
    /// Who sent each block.
    pub senders: Vec<PeerKey>,
    asked: Option<(PeerKey, Instant)>,
    /// Peers asked already (refused, failed or lied).
    tried: Vec<PeerKey>,
}

/// What became of an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// These blocks are bad (indices in the piece); the rest are good.
    Bad(Vec<usize>),
    /// The leaves do not lead to the piece hash: the answering peer lied.
    Lie,
    /// The leaves check and every block matches them: the leaves cannot
    /// tell what is wrong.
    Unexplained,
}

impl Pending {
    pub fn new(
        req: HashRequest,
        expected: Hash,
        ours: Vec<Hash>,
        pad_bad: Vec<usize>,
        senders: Vec<PeerKey>,
    ) -> Pending {
        Pending {
            req,
            expected,
            ours,
            pad_bad,
            senders,
            asked: None,
            tried: Vec::new(),
        }
    }

    /// Whom to ask among `candidates` (peers that have the piece and may
    /// be asked for hashes): one that sent none of the piece's blocks if
    /// there is one (a liar would not confess), else any not tried yet.
    pub fn choose(&self, candidates: impl IntoIterator<Item = PeerKey>) -> Option<PeerKey> {
        let mut fallback = None;
        for k in candidates {
            if self.tried.contains(&k) {
                continue;
            }
            if !self.senders.contains(&k) {
                return Some(k);
            }
            fallback.get_or_insert(k);
        }
        fallback
    }

    pub fn asked(&mut self, peer: PeerKey, now: Instant) {
        self.asked = Some((peer, now));
        self.tried.push(peer);
    }

    pub fn asked_peer(&self) -> Option<PeerKey> {
        self.asked.map(|(p, _)| p)
    }

    /// The request is unanswered for [`TIMEOUT`].
    pub fn expired(&self, now: Instant) -> bool {
        self.asked
            .is_some_and(|(_, since)| now.duration_since(since) >= TIMEOUT)
    }

    /// The peer asked will not answer (rejected, or left).
    pub fn refused(&mut self, peer: PeerKey) {
        if self.asked_peer() == Some(peer) {
            self.asked = None;
        }
    }

    /// `peer`'s answer: its leaves must be exactly as many as asked (with
    /// no uncles) and lead to the piece hash before any block is judged
    /// by them.
    pub fn on_answer(&mut self, peer: PeerKey, hashes: &[Hash]) -> Verdict {
        if self.asked_peer() == Some(peer) {
            self.asked = None;
        }
        let n = self.req.length as usize
            + merkle::uncle_count(u64::from(self.req.length), self.req.proof_layers) as usize;
        if hashes.len() != n {
            return Verdict::Lie;
        }
        let proven = &hashes[..self.req.length as usize];
        if merkle::root(proven, proven.len(), 0) != self.expected {
            return Verdict::Lie;
        }
        match bad_blocks(&self.expected, proven, &self.ours, &self.pad_bad) {
            Some(bad) => Verdict::Bad(bad),
            None => Verdict::Unexplained,
        }
    }

    /// Without asking: a one-block piece's block is the bad one, unless
    /// only its padding is.
    pub fn judge_alone(&self) -> Verdict {
        let first_good = self.ours.first().is_some_and(|l| {
            let width = self.req.length.max(1) as usize;
            merkle::root(&[*l], width, 0) == self.expected
        });
        let mut bad: Vec<usize> = self.pad_bad.clone();
        if !first_good && !self.ours.is_empty() {
            bad.push(0);
        }
        bad.sort_unstable();
        bad.dedup();
        if bad.is_empty() {
            Verdict::Unexplained
        } else {
            Verdict::Bad(bad)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::merkle::{file_root, piece_hash};
    use crate::metainfo::{Metainfo, NewTorrent, NewV2};

    const PL: u64 = 4 * merkle::BLOCK as u64;

    fn data(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|b| ((b * 31 + seed) % 251) as u8).collect()
    }

    /// A v2 torrent with its piece layers over files of these lengths.
    fn torrent(files: &[Vec<u8>]) -> Metainfo {
        let mut tree = Vec::new();
        let mut layers = Vec::new();
        for (i, d) in files.iter().enumerate() {
            let root = file_root(d, PL);
            tree.push((vec![format!("f{i}")], d.len() as u64, Some(root)));
            if d.len() as u64 > PL {
                let layer: Vec<Hash> = d
                    .chunks(PL as usize)
                    .map(|p| piece_hash(p, PL, d.len() as u64))
                    .collect();
                layers.push((root, layer.concat()));
            }
        }
        let nt = NewTorrent {
            name: "t".into(),
            piece_length: PL,
            v2: Some(NewV2 { tree, layers }),
            ..Default::default()
        };
        Metainfo::from_bytes(&nt.to_bytes()).unwrap()
    }

    /// The file's part of piece `p` of `v2`, read from `files`.
    fn piece_of(v2: &V2, files: &[Vec<u8>], p: u32) -> Vec<u8> {
        let f = v2.file_of_piece(p).unwrap();
        let i = v2.files.iter().position(|x| std::ptr::eq(x, f)).unwrap();
        let d = &files[i];
        let start = ((p - f.first_piece) as u64 * PL) as usize;
        d[start..(start + PL as usize).min(d.len())].to_vec()
    }

    /// What an honest shoal answers, through `V2File::answer_leaves`.
    fn serve(v2: &V2, files: &[Vec<u8>], req: &HashRequest) -> Vec<Hash> {
        let f = v2.by_root(&req.root).unwrap();
        f.answer_leaves(PL, req.index, req.length, req.proof_layers, 512, |p| {
            Some(piece_of(v2, files, p))
        })
        .unwrap()
    }

    #[test]
    fn plans_ask_for_one_piece_of_leaves() {
        // 3.5 pieces; a one-piece file of 3 blocks; a one-block file.
        let files = vec![
            data(14 * merkle::BLOCK, 1),
            data(2 * merkle::BLOCK + 9, 2),
            data(100, 3),
        ];
        let m = torrent(&files);
        let v2 = m.v2.as_ref().unwrap();
        let shape: Vec<Option<(u32, u32, u32)>> = (0..6)
            .map(|p| {
                let plan = plan(v2, p).unwrap();
                let r = plan.req;
                plan.ask.then_some((r.index, r.length, r.proof_layers))
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                Some((0, 4, 1)),
                Some((4, 4, 1)),
                Some((8, 4, 1)),
                Some((12, 4, 1)),
                Some((0, 4, 1)),
                None
            ]
        );
        assert!(plan(v2, 6).is_none());
        for p in 0..6 {
            let plan = plan(v2, p).unwrap();
            assert_eq!(plan.expected, v2.expected(p).unwrap());
            if plan.ask {
                let r = plan.req;
                assert!(r.well_formed());
                // The honest answer leads to the piece hash.
                let got = serve(v2, &files, &r);
                assert_eq!(got.len(), r.length as usize);
                let ours = merkle::leaves(&piece_of(v2, &files, p));
                let mut pending = Pending::new(r, plan.expected, ours, Vec::new(), vec![1; 4]);
                assert_eq!(pending.on_answer(2, &got), Verdict::Unexplained);
            }
        }
    }

    /// One corrupt block is named by the leaves; a lying answer (bad
    /// leaf, wrong count, a self-consistent tree of other data) is not
    /// believed and names nobody.
    #[test]
    fn the_bad_block_is_found_and_lies_are_not_believed() {
        let files = vec![data(10 * merkle::BLOCK + 5, 7)];
        let m = torrent(&files);
        let v2 = m.v2.as_ref().unwrap();
        let p = 1;
        let plan = plan(v2, p).unwrap();
        let r = plan.req;
        let mut got = piece_of(v2, &files, p);
        got[2 * merkle::BLOCK + 10] ^= 0xff;
        assert!(!v2.verify(p, &got).unwrap());
        let ours = merkle::leaves(&got);
        let mut pending = Pending::new(r, plan.expected, ours, Vec::new(), vec![5, 5, 6, 5]);
        // A sender of the piece is asked only when nobody else can be.
        assert_eq!(pending.choose([5, 6, 9]), Some(9));
        assert_eq!(pending.choose([5, 6]), Some(5));
        pending.asked(9, Instant::now());
        assert_eq!(pending.choose([5, 6, 9]), Some(5));
        let honest = serve(v2, &files, &r);
        let mut lie = honest.clone();
        lie[0][0] ^= 1;
        assert_eq!(pending.on_answer(9, &lie), Verdict::Lie);
        assert_eq!(pending.on_answer(9, &honest[1..]), Verdict::Lie);
        // A liar that makes its leaves match our bad data.
        let mut shifted = honest.clone();
        shifted[2] = merkle::leaves(&got)[2];
        assert_eq!(pending.on_answer(9, &shifted), Verdict::Lie);
        assert_eq!(pending.on_answer(9, &honest), Verdict::Bad(vec![2]));
        // The last, short piece: one bad block of two real ones.
        let plan = super::plan(v2, 2).unwrap();
        let r = plan.req;
        let mut got = piece_of(v2, &files, 2);
        assert_eq!(got.len(), 2 * merkle::BLOCK + 5);
        let last = got.len() - 1;
        got[last] ^= 1;
        let mut pending = Pending::new(
            r,
            plan.expected,
            merkle::leaves(&got),
            Vec::new(),
            vec![3, 4],
        );
        assert_eq!(
            pending.on_answer(1, &serve(v2, &files, &r)),
            Verdict::Bad(vec![2])
        );
    }

    #[test]
    fn timeouts_and_refusals() {
        let files = vec![data(8 * merkle::BLOCK, 3)];
        let m = torrent(&files);
        let v2 = m.v2.as_ref().unwrap();
        let plan = plan(v2, 0).unwrap();
        let mut pending = Pending::new(plan.req, plan.expected, Vec::new(), Vec::new(), vec![1; 4]);
        let t0 = Instant::now();
        pending.asked(2, t0);
        assert!(!pending.expired(t0 + TIMEOUT / 2));
        assert!(pending.expired(t0 + TIMEOUT));
        pending.refused(2);
        assert_eq!(pending.asked_peer(), None);
        assert!(!pending.expired(t0 + TIMEOUT));
        assert_eq!(pending.choose([2]), None, "asked once, not again");
    }

    #[test]
    fn a_one_block_piece_needs_no_answer() {
        let files = vec![data(100, 3)];
        let m = torrent(&files);
        let v2 = m.v2.as_ref().unwrap();
        let plan = plan(v2, 0).unwrap();
        assert!(!plan.ask);
        let req = plan.req;
        assert_eq!(req.length, 1);
        let bad = Pending::new(req, plan.expected, vec![[7; 32]], Vec::new(), vec![1]);
        assert_eq!(bad.judge_alone(), Verdict::Bad(vec![0]));
        let good = merkle::leaves(&files[0]);
        let pad_only = Pending::new(req, plan.expected, good, vec![3], vec![1; 4]);
        assert_eq!(pad_only.judge_alone(), Verdict::Bad(vec![3]));
        // Our leaves, and padding past the file's end that is not zeros.
        let mut piece = files[0].clone();
        piece.resize(PL as usize, 0);
        assert_eq!(
            our_leaves(v2, 0, &piece),
            (merkle::leaves(&files[0]), vec![])
        );
        piece[merkle::BLOCK + 1] = 1;
        piece[3 * merkle::BLOCK] = 1;
        assert_eq!(our_leaves(v2, 0, &piece).1, vec![1, 3]);
        piece[101] = 1;
        assert_eq!(our_leaves(v2, 0, &piece).1, vec![0, 1, 3]);
    }

    /// Serving: requests that do not fit, or cover a piece we lack, get
    /// nothing; a request with uncles up to the root checks against it.
    #[test]
    fn serving_leaves() {
        let files = vec![data(9 * merkle::BLOCK + 3, 4), data(3 * merkle::BLOCK, 5)];
        let m = torrent(&files);
        let v2 = m.v2.as_ref().unwrap();
        let big = &v2.files[0];
        assert_eq!(big.leaf_width(PL), 16);
        let all = |p: u32| Some(piece_of(v2, &files, p));
        // All 16 leaves, and 2 leaves with uncles to the root.
        let got = big.answer_leaves(PL, 0, 16, 3, 512, all).unwrap();
        assert_eq!(got.len(), 16);
        assert_eq!(merkle::root(&got, 16, 0), big.root);
        let got = big.answer_leaves(PL, 6, 2, 3, 512, all).unwrap();
        assert_eq!(got.len(), 2 + 3);
        assert!(merkle::check_proof(
            &big.root,
            0,
            4,
            6,
            &got[..2],
            &got[2..]
        ));
        // Past the file's end: pads, still provable.
        let got = big.answer_leaves(PL, 12, 4, 3, 512, all).unwrap();
        assert!(got[..4].iter().all(|h| *h == merkle::pad(0)));
        assert!(merkle::check_proof(
            &big.root,
            0,
            4,
            12,
            &got[..4],
            &got[4..]
        ));
        // A piece we lack, a request past the tree or proof past the root,
        // too much to read, data that changed on disk: nothing.
        let lack = |p: u32| (p != 1).then(|| piece_of(v2, &files, p));
        assert_eq!(big.answer_leaves(PL, 4, 4, 1, 512, lack), None);
        assert!(big.answer_leaves(PL, 0, 4, 1, 512, lack).is_some());
        assert_eq!(big.answer_leaves(PL, 16, 2, 1, 512, all), None);
        assert_eq!(big.answer_leaves(PL, 0, 2, 4, 512, all), None);
        assert_eq!(big.answer_leaves(PL, 0, 16, 3, 8, all), None);
        let changed = |p: u32| {
            let mut d = piece_of(v2, &files, p);
            d[0] ^= 1;
            Some(d)
        };
        assert_eq!(big.answer_leaves(PL, 0, 2, 1, 512, changed), None);
        // A one-piece file: its tree is 4 leaves wide.
        let small = &v2.files[1];
        assert_eq!(small.leaf_width(PL), 4);
        let got = small.answer_leaves(PL, 2, 2, 1, 512, all).unwrap();
        assert!(merkle::check_proof(
            &small.root,
            0,
            2,
            2,
            &got[..2],
            &got[2..]
        ));
    }
}
