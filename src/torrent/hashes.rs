//! Fetching piece layers from peers (BEP 52 hash requests), for a v2
//! torrent that came without them (a magnet link: the layers are outside
//! the info dictionary). Pure bookkeeping, no I/O: the coordinator asks
//! what to request from whom and hands back what peers answered.
//!
//! Each file's piece layer is asked for in chunks of up to
//! [`MAX_HASH_REQUEST`] hashes, each with the uncle hashes that lead from
//! it to the file's pieces root, so every chunk is checked on arrival:
//! chunks can come from different peers, and a peer whose answer does not
//! lead to the root is caught at once rather than after the whole layer
//! is in. Only a file whose every chunk checked is handed back.

use std::time::Duration;

use std::time::Instant;

use crate::metainfo::merkle::{self, Hash};
use crate::metainfo::v2::V2;
use crate::peer::wire::{HashRequest, MAX_HASH_REQUEST};
use crate::peer::PeerKey;

/// An unanswered request is given up on after this long and asked of
/// someone else.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Hash requests in flight to one peer: a chunk is one round trip, and a
/// torrent of many files should not wait on one peer for all of them.
pub const PER_PEER: usize = 4;
/// A peer that refused a chunk (or let it time out) is not asked for it
/// again for this long; after it, it may have the hashes (a leecher that
/// has since verified pieces of it), and it may be the only peer left.
const REFUSED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum State {
    Missing,
    Asked { peer: PeerKey, since: Instant },
    Got(Vec<Hash>),
}

#[derive(Debug)]
struct Chunk {
    state: State,
    /// Peers that refused, dropped or failed this chunk, and when.
    refused: Vec<(PeerKey, Instant)>,
}

/// One layer to fetch: a pieces root and every file that has it (files
/// with the same content share their root, and so their layer).
#[derive(Debug)]
struct FileFetch {
    /// Indices in [`V2::files`], and the first piece of each.
    files: Vec<(usize, u32)>,
    root: Hash,
    pieces: u32,
    /// Layers from the piece layer up to the root.
    depth: u32,
    chunks: Vec<Chunk>,
}

impl FileFetch {
    fn new(v2: &V2, root: Hash) -> FileFetch {
        let files: Vec<(usize, u32)> = v2
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.root == root)
            .map(|(i, f)| (i, f.first_piece))
            .collect();
        let (pieces, depth) = files
            .first()
            .and_then(|(i, _)| v2.files.get(*i))
            .map_or((0, 0), |f| (f.pieces, f.depth()));
        FileFetch {
            files,
            root,
            pieces,
            depth,
            chunks: (0..pieces.div_ceil(MAX_HASH_REQUEST))
                .map(|_| Chunk {
                    state: State::Missing,
                    refused: Vec::new(),
                })
                .collect(),
        }
    }

    fn request(&self, level: u32, chunk: usize) -> Option<HashRequest> {
        let index = u32::try_from(chunk).ok()?.checked_mul(MAX_HASH_REQUEST)?;
        let left = self.pieces.checked_sub(index).filter(|n| *n > 0)?;
        // Never a single hash: libtorrent (2.0) answers those with one
        // uncle too few. Two fit any multi-piece file's layer.
        let length = left.next_power_of_two().clamp(2, MAX_HASH_REQUEST);
        Some(HashRequest {
            root: self.root,
            base: level,
            index,
            length,
            proof_layers: self.depth.saturating_sub(1),
        })
    }

    fn done(&self) -> bool {
        self.chunks.iter().all(|c| matches!(c.state, State::Got(_)))
    }
}

/// What became of an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Checked and kept (or not needed any more); nothing to do.
    Kept,
    /// The last chunk of a layer arrived: the whole piece layer, every
    /// chunk checked against the root, of the `files` (indices in
    /// [`V2::files`]) that share it.
    Layer { files: Vec<usize>, layer: Vec<Hash> },
    /// The answer does not lead to the file's root (or has the wrong
    /// number of hashes): the peer is lying or broken.
    Bad,
    /// Not an answer to anything we ask (a stale or foreign request).
    Unknown,
}

#[derive(Debug)]
pub struct LayerFetch {
    level: u32,
    files: Vec<FileFetch>,
}

impl LayerFetch {
    /// The files of `v2` whose pieces cannot be checked yet; None when
    /// every piece can.
    pub fn new(v2: &V2) -> Option<LayerFetch> {
        let mut files: Vec<FileFetch> = Vec::new();
        for f in v2.files.iter().filter(|f| !f.checkable()) {
            if !files.iter().any(|x| x.root == f.root) {
                files.push(FileFetch::new(v2, f.root));
            }
        }
        (!files.is_empty()).then_some(LayerFetch {
            level: v2.piece_level(),
            files,
        })
    }

    /// Every layer is in.
    pub fn is_done(&self) -> bool {
        self.files.is_empty()
    }

    /// The pieces still waiting for their file's layer, as ranges.
    pub fn waiting(&self) -> impl Iterator<Item = std::ops::Range<u32>> + '_ {
        self.files
            .iter()
            .flat_map(|f| f.files.iter().map(|(_, first)| *first..*first + f.pieces))
    }

    pub fn in_flight(&self, peer: PeerKey) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.chunks)
            .filter(|c| matches!(c.state, State::Asked { peer: p, .. } if p == peer))
            .count()
    }

    /// The next request for `peer`, if any chunk is left to ask it for.
    /// Chunks covering pieces the peer has come first: BEP 52 only
    /// obliges a peer to answer for pieces it announced.
    pub fn next(
        &mut self,
        peer: PeerKey,
        has: impl Fn(u32) -> bool,
        now: Instant,
    ) -> Option<HashRequest> {
        let level = self.level;
        let mut fallback = None;
        for (fi, f) in self.files.iter().enumerate() {
            for (ci, c) in f.chunks.iter().enumerate() {
                if !matches!(c.state, State::Missing)
                    || c.refused
                        .iter()
                        .any(|(p, at)| *p == peer && now.duration_since(*at) < REFUSED_FOR)
                {
                    continue;
                }
                let offset = ci as u32 * MAX_HASH_REQUEST;
                let len = MAX_HASH_REQUEST.min(f.pieces - offset);
                if f.files
                    .iter()
                    .any(|(_, first)| (first + offset..first + offset + len).any(&has))
                {
                    return self.ask(fi, ci, peer, now, level);
                }
                fallback.get_or_insert((fi, ci));
            }
        }
        let (fi, ci) = fallback?;
        self.ask(fi, ci, peer, now, level)
    }

    fn ask(
        &mut self,
        fi: usize,
        ci: usize,
        peer: PeerKey,
        now: Instant,
        level: u32,
    ) -> Option<HashRequest> {
        let f = self.files.get_mut(fi)?;
        let req = f.request(level, ci)?;
        f.chunks.get_mut(ci)?.state = State::Asked { peer, since: now };
        Some(req)
    }

    /// Finds the file and chunk `req` is ours for.
    fn locate(&self, req: &HashRequest) -> Option<(usize, usize)> {
        let fi = self.files.iter().position(|f| f.root == req.root)?;
        let ci = usize::try_from(req.index / MAX_HASH_REQUEST).ok()?;
        (self.files[fi].request(self.level, ci).as_ref() == Some(req)).then_some((fi, ci))
    }

    /// A peer's answer to `req`: checked against the file's root and kept
    /// if it leads there. An answer that comes after its request timed
    /// out and went elsewhere is still taken if it checks.
    pub fn on_hashes(
        &mut self,
        peer: PeerKey,
        req: &HashRequest,
        hashes: &[Hash],
        now: Instant,
    ) -> Outcome {
        let Some((fi, ci)) = self.locate(req) else {
            return Outcome::Unknown;
        };
        let level = self.level;
        let f = &mut self.files[fi];
        let c = &mut f.chunks[ci];
        if matches!(c.state, State::Got(_)) {
            return Outcome::Kept;
        }
        let n = req.length as usize;
        let uncles = merkle::uncle_count(u64::from(req.length), req.proof_layers) as usize;
        let good = hashes.len() == n + uncles && {
            let (nodes, uncles) = hashes.split_at(n);
            merkle::check_proof(&f.root, level, f.depth, u64::from(req.index), nodes, uncles)
        };
        if !good {
            if matches!(c.state, State::Asked { peer: p, .. } if p == peer) {
                c.state = State::Missing;
            }
            c.refused.push((peer, now));
            return Outcome::Bad;
        }
        // Past the file's end the layer holds pads, not pieces.
        let real = (f.pieces - req.index).min(req.length) as usize;
        c.state = State::Got(hashes[..real].to_vec());
        if !f.done() {
            return Outcome::Kept;
        }
        let f = self.files.remove(fi);
        let mut layer = Vec::with_capacity(f.pieces as usize);
        for c in f.chunks {
            if let State::Got(h) = c.state {
                layer.extend(h);
            }
        }
        Outcome::Layer {
            files: f.files.iter().map(|(i, _)| *i).collect(),
            layer,
        }
    }

    /// The peer will not answer `req`: someone else is asked.
    pub fn on_reject(&mut self, peer: PeerKey, req: &HashRequest, now: Instant) {
        if let Some((fi, ci)) = self.locate(req) {
            let c = &mut self.files[fi].chunks[ci];
            if matches!(c.state, State::Asked { peer: p, .. } if p == peer) {
                c.state = State::Missing;
            }
            c.refused.push((peer, now));
        }
    }

    /// Its requests go back to be asked elsewhere.
    pub fn peer_gone(&mut self, peer: PeerKey) {
        for c in self.files.iter_mut().flat_map(|f| &mut f.chunks) {
            if matches!(c.state, State::Asked { peer: p, .. } if p == peer) {
                c.state = State::Missing;
            }
        }
    }

    /// Requests unanswered for [`TIMEOUT`] count as refused; returns how
    /// many there were. Refusals that wore off are forgotten.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for c in self.files.iter_mut().flat_map(|f| &mut f.chunks) {
            c.refused
                .retain(|(_, at)| now.duration_since(*at) < REFUSED_FOR);
            if let State::Asked { peer, since } = c.state {
                if now.duration_since(since) >= TIMEOUT {
                    c.state = State::Missing;
                    c.refused.push((peer, now));
                    n += 1;
                }
            }
        }
        n
    }

    /// Starts a layer over (once assembled it did not check, which the
    /// per-chunk proofs should make impossible).
    pub fn restart(&mut self, v2: &V2, root: Hash) {
        if !self.files.iter().any(|x| x.root == root) {
            self.files.push(FileFetch::new(v2, root));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::merkle::{file_root, piece_hash};
    use crate::metainfo::{Metainfo, NewTorrent, NewV2};

    const PL: u64 = 32 << 10;

    /// A v2 torrent without its piece layers (as a magnet gives it) over
    /// files of the given lengths, and each file's true layer.
    fn torrent(lengths: &[usize]) -> (Metainfo, Vec<Vec<Hash>>) {
        let mut tree = Vec::new();
        let mut layers = Vec::new();
        for (i, &len) in lengths.iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|b| ((b * 31 + len) % 251) as u8).collect();
            let layer: Vec<Hash> = data
                .chunks(PL as usize)
                .map(|p| piece_hash(p, PL, len as u64))
                .collect();
            tree.push((
                vec![format!("f{i}")],
                len as u64,
                Some(file_root(&data, PL)),
            ));
            layers.push(layer);
        }
        let nt = NewTorrent {
            name: "t".into(),
            piece_length: PL,
            v2: Some(NewV2 {
                tree,
                layers: Vec::new(),
            }),
            ..Default::default()
        };
        let m = Metainfo::from_bytes(&nt.to_bytes()).unwrap();
        (m, layers)
    }

    /// What an honest peer holding `layer` answers to `req`.
    fn answer(layer: &[Hash], req: &HashRequest) -> Vec<Hash> {
        let upper = merkle::upper_layers(layer, layer.len(), req.base);
        merkle::hashes_with_proof(
            layer,
            &upper,
            req.base,
            u64::from(req.index),
            u64::from(req.length),
            req.proof_layers,
        )
        .unwrap()
    }

    #[test]
    fn layers_come_in_checked_chunks() {
        // 1100 pieces: three chunks (512, 512, 76 padded to 128); a
        // three-piece file (one chunk of 4); a one-piece file (no fetch).
        let (m, layers) = torrent(&[1100 * PL as usize - 7, 3 * PL as usize, 1000]);
        let v2 = m.v2.as_ref().unwrap();
        let mut f = LayerFetch::new(v2).unwrap();
        assert_eq!(f.waiting().count(), 2);
        let now = Instant::now();
        let mut reqs = Vec::new();
        while let Some(r) = f.next(1, |_| false, now) {
            reqs.push(r);
        }
        let shape: Vec<(u32, u32)> = reqs.iter().map(|r| (r.index, r.length)).collect();
        assert_eq!(shape, vec![(0, 512), (512, 512), (1024, 128), (0, 4)]);
        assert!(reqs.iter().all(|r| r.well_formed() && r.base == 1));
        assert_eq!(f.in_flight(1), 4);
        let mut got = Vec::new();
        for r in &reqs {
            let file = if r.root == v2.files[0].root { 0 } else { 1 };
            match f.on_hashes(1, r, &answer(&layers[file], r), now) {
                Outcome::Kept => {}
                Outcome::Layer { files, layer } => {
                    assert_eq!(files.len(), 1);
                    got.push((files[0], layer))
                }
                o => panic!("{o:?}"),
            }
        }
        assert!(f.is_done());
        assert_eq!(got.len(), 2);
        for (file, layer) in got {
            assert_eq!(layer, layers[file]);
            v2.files[file].set_layer(layer, PL).unwrap();
        }
        assert!(v2.complete());
        // The answering side: the same chunks, from the known layer.
        for r in &reqs {
            let file = if r.root == v2.files[0].root { 0 } else { 1 };
            let served = v2.files[file]
                .answer(r.base, r.index, r.length, r.proof_layers)
                .unwrap();
            assert_eq!(served, answer(&layers[file], r));
        }
    }

    /// A peer whose hashes do not lead to the root is caught on the
    /// chunk, which goes to another peer; the liar is not asked for it
    /// again, and nothing it sent is kept.
    #[test]
    fn lies_are_caught_and_asked_elsewhere() {
        let (m, layers) = torrent(&[5 * PL as usize]);
        let v2 = m.v2.as_ref().unwrap();
        let mut f = LayerFetch::new(v2).unwrap();
        let now = Instant::now();
        let r = f.next(1, |_| true, now).unwrap();
        let mut lie = answer(&layers[0], &r);
        lie[2][5] ^= 1;
        assert_eq!(f.on_hashes(1, &r, &lie, now), Outcome::Bad);
        // Too few or too many hashes are lies too.
        let honest = answer(&layers[0], &r);
        assert_eq!(f.on_hashes(1, &r, &honest[1..], now), Outcome::Bad);
        let mut long = honest.clone();
        long.push([0; 32]);
        assert_eq!(f.on_hashes(1, &r, &long, now), Outcome::Bad);
        // A self-consistent layer that is not the file's fails as well.
        let other: Vec<Hash> = (0..5u8).map(|i| merkle::sha256(&[i])).collect();
        assert_eq!(f.on_hashes(1, &r, &answer(&other, &r), now), Outcome::Bad);
        assert_eq!(
            f.next(1, |_| true, now),
            None,
            "the liar is not asked again"
        );
        let r2 = f.next(2, |_| false, now).unwrap();
        assert_eq!(r2, r);
        match f.on_hashes(2, &r2, &honest, now) {
            Outcome::Layer { files, layer } if files == [0] => assert_eq!(layer, layers[0]),
            o => panic!("{o:?}"),
        }
        assert!(f.is_done());
    }

    #[test]
    fn rejects_timeouts_and_departures_free_the_chunk() {
        let (m, layers) = torrent(&[600 * PL as usize]);
        let v2 = m.v2.as_ref().unwrap();
        let mut f = LayerFetch::new(v2).unwrap();
        let t0 = Instant::now();
        let a = f.next(1, |_| true, t0).unwrap();
        let b = f.next(1, |_| true, t0).unwrap();
        assert_eq!((a.index, b.index, b.length), (0, 512, 128));
        assert_eq!(f.next(1, |_| true, t0), None);
        f.on_reject(1, &a, t0);
        // Peer 1 refused chunk 0: peer 2 gets it.
        assert_eq!(f.next(1, |_| true, t0), None);
        assert_eq!(f.next(2, |_| true, t0), Some(a));
        f.peer_gone(2);
        assert_eq!(f.next(3, |_| true, t0), Some(a));
        assert_eq!(f.expire(t0 + TIMEOUT / 2), 0);
        assert_eq!(f.expire(t0 + TIMEOUT), 2);
        assert_eq!(f.in_flight(1) + f.in_flight(3), 0);
        // A late answer that checks is still taken.
        assert_eq!(
            f.on_hashes(1, &b, &answer(&layers[0], &b), t0 + TIMEOUT),
            Outcome::Kept
        );
        // A request we never make is not an answer.
        let mut odd = a;
        odd.length = 256;
        assert_eq!(f.on_hashes(4, &odd, &[], t0), Outcome::Unknown);
        // Refusals wear off: after a while the peer may be asked again.
        let later = t0 + TIMEOUT + REFUSED_FOR;
        assert_eq!(f.next(1, |_| true, later), Some(a));
        assert!(matches!(
            f.on_hashes(1, &a, &answer(&layers[0], &a), later),
            Outcome::Layer { ref files, .. } if files == &[0]
        ));
    }

    /// Two files with the same content share a pieces root and a layer:
    /// it is asked for once and given to both.
    #[test]
    fn files_with_one_root_share_their_layer() {
        let len = 3 * PL as usize + 5;
        let (m, layers) = torrent(&[len, 1000, len]);
        let v2 = m.v2.as_ref().unwrap();
        assert_eq!(v2.files[0].root, v2.files[2].root);
        let mut f = LayerFetch::new(v2).unwrap();
        let waiting: Vec<_> = f.waiting().collect();
        assert_eq!(waiting.len(), 2);
        let now = Instant::now();
        let r = f.next(1, |_| false, now).unwrap();
        assert_eq!(f.next(1, |_| false, now), None);
        match f.on_hashes(1, &r, &answer(&layers[0], &r), now) {
            Outcome::Layer { files, layer } => {
                assert_eq!(files, vec![0, 2]);
                assert_eq!(layer, layers[0]);
            }
            o => panic!("{o:?}"),
        }
        assert!(f.is_done());
    }
}
