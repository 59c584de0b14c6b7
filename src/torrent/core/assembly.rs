//! Piece assembly: blocks are copied into piece buffers as they come; a
//! complete piece waits in the hash queue and goes out as a job
//! ([`Action::Verify`]) that checks it and writes it if good; the answer
//! ([`Verified`]) makes it "have", or a failure to blame.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::metainfo::merkle;
use crate::peer::wire::BlockRef;
use crate::peer::{PeerCmd, PeerKey};
use crate::store::{Layout, PieceData, StoreError};
use crate::torrent::leaves;
use crate::torrent::picker::{BlockOutcome, BLOCK_LEN};

use super::sources::{Kind, MAX_QUEUE};
use super::{Action, Core};

/// The memory of a download is its piece buffers: one for each piece in
/// progress (requested, arriving, or waiting for its check and write).
/// Pieces in progress are bounded ([`Core::open_limit`]): this many bytes
/// of them (at least [`MIN_OPEN`] pieces), and one more for each source,
/// which may be on a piece of its own. Started pieces are always
/// continued, so the bound slows nothing but the start of new pieces.
const PIECE_MEMORY: u64 = 4 << 20;
const MIN_OPEN: u64 = 2;
/// Bytes of complete pieces allowed to wait for their hash check and write
/// (at least [`MIN_VERIFYING`] pieces): past it no more is asked for, so
/// what is in flight goes to the hash jobs.
const MAX_VERIFY_BYTES: usize = 4 << 20;
const MIN_VERIFYING: usize = 2;
/// Pieces hashed by one job, at most (at least one piece).
const HASH_BATCH_BYTES: usize = 1 << 20;

/// A piece being assembled, or held whole after it failed.
pub(super) struct PieceBuf {
    pub(super) data: PieceData,
    /// Who sent each block, so a hash failure can be traced.
    pub(super) senders: Vec<PeerKey>,
}

/// One complete piece to check and, if good, write.
#[derive(Debug)]
pub struct PieceJob {
    pub piece: u32,
    pub data: PieceData,
    pub senders: Vec<PeerKey>,
    /// Also hash each block (the piece has suspects to clear or name).
    pub with_blocks: bool,
}

/// What a job found for one piece.
#[derive(Debug)]
pub struct Verified {
    pub piece: u32,
    pub ok: bool,
    /// The write of a good piece; an error also when its expected hash
    /// could not be read (no peer is to blame then).
    pub write: Result<(), StoreError>,
    /// SHA-1 of each block, when the piece failed or had suspects.
    pub block_hashes: Vec<[u8; 20]>,
    /// A failed piece of a v2 file: our SHA-256 leaf of each block of the
    /// file's part, and padding blocks that are not zeros
    /// ([`leaves::our_leaves`]).
    pub leaves: Vec<merkle::Hash>,
    pub pad_bad: Vec<usize>,
    pub senders: Vec<PeerKey>,
    /// The buffer, handed back for reuse.
    pub data: PieceData,
}

impl PieceJob {
    /// The job's work, wherever it runs (a blocking thread of the real
    /// client, a simulator's loop): checks the piece against `layout`
    /// (SHA-1, or the merkle tree of a v2-only torrent) and, if good,
    /// stores it with `write`.
    pub fn run(
        self,
        layout: &Layout,
        write: impl FnOnce(u32, &[u8]) -> Result<(), StoreError>,
    ) -> Verified {
        let PieceJob {
            piece,
            data,
            senders,
            with_blocks,
        } = self;
        // Large torrents keep their hashes in the .torrent file: reading
        // one may fail, and then the download stops; no peer is blamed.
        let (ok, write) = match layout.verify(piece, &data) {
            Ok(true) => (true, write(piece, &data)),
            Ok(false) => (false, Ok(())),
            Err(e) => (false, Err(e)),
        };
        let (leaves, pad_bad) = match &layout.v2 {
            Some(v2) if !ok && write.is_ok() => leaves::our_leaves(v2, piece, &data),
            _ => (Vec::new(), Vec::new()),
        };
        let block_hashes = if !ok || with_blocks {
            data.chunks(BLOCK_LEN as usize)
                .map(|c| <[u8; 20]>::from(Sha1::digest(c)))
                .collect()
        } else {
            Vec::new()
        };
        Verified {
            piece,
            ok,
            write,
            block_hashes,
            leaves,
            pad_bad,
            senders,
            data,
        }
    }
}

pub(super) struct Assembly {
    partial: HashMap<u32, PieceBuf>,
    /// Complete pieces waiting for a hash job.
    queue: VecDeque<(u32, PieceBuf)>,
    /// Complete pieces waiting for, or under, their hash check.
    pub(super) verifying: usize,
    /// Jobs out, and how many may be.
    jobs: usize,
    max_jobs: usize,
    /// Piece buffers kept for reuse: fresh ones cost page faults and zeroing.
    spare: Vec<PieceData>,
}

impl Assembly {
    pub(super) fn new(max_jobs: usize) -> Assembly {
        Assembly {
            partial: HashMap::new(),
            queue: VecDeque::new(),
            verifying: 0,
            jobs: 0,
            max_jobs: max_jobs.max(1),
            spare: Vec::new(),
        }
    }

    /// Hashing is behind the network: no more requests until it catches up.
    pub(super) fn backlogged(&self, piece_length: u64) -> bool {
        self.verifying * piece_length as usize > MAX_VERIFY_BYTES && self.verifying >= MIN_VERIFYING
    }

    pub(super) fn clear_partial(&mut self) {
        self.partial.clear();
    }

    /// Keeps a written piece's buffer while fewer than `limit` are in use
    /// or kept: a buffer freed and allocated again costs a zero-fill (the
    /// memset was 2-3 % of a download with 2 kept) and leaves holes in the
    /// heap that its next, larger neighbour cannot use.
    pub(super) fn recycle(&mut self, data: PieceData, limit: usize) {
        if self.spare.len() + self.partial.len() + self.verifying < limit.max(1) {
            self.spare.push(data);
        }
    }

    pub(super) fn resume(&mut self, piece: u32, buf: PieceBuf) {
        self.partial.insert(piece, buf);
    }

    /// Queues a complete piece for its hash check.
    fn queue(&mut self, piece: u32, buf: PieceBuf) {
        self.verifying += 1;
        self.queue.push_back((piece, buf));
    }

    /// The next job if one may start: queued pieces up to
    /// [`HASH_BATCH_BYTES`] (small pieces go in batches: a job per 16 KiB
    /// piece would spend more on waking threads than on hashing).
    fn next_job(&mut self, with_blocks: impl Fn(u32) -> bool) -> Option<Vec<PieceJob>> {
        if self.jobs >= self.max_jobs || self.queue.is_empty() {
            return None;
        }
        let mut jobs = Vec::new();
        let mut bytes = 0usize;
        while bytes < HASH_BATCH_BYTES {
            let Some((piece, buf)) = self.queue.pop_front() else {
                break;
            };
            bytes += buf.data.len();
            jobs.push(PieceJob {
                piece,
                with_blocks: with_blocks(piece),
                data: buf.data,
                senders: buf.senders,
            });
        }
        self.jobs += 1;
        Some(jobs)
    }
}

impl Core {
    /// Most pieces in progress at once (see [`PIECE_MEMORY`]).
    pub(super) fn open_limit(&self) -> usize {
        let pl = self.meta.piece_length.max(1);
        let own = (PIECE_MEMORY / pl).max(MIN_OPEN) as usize;
        own + self.sources.open_pieces(pl)
    }

    /// A block from the source `key` (peer or web seed).
    pub(super) fn on_block(&mut self, key: PeerKey, block: BlockRef, data: Bytes) {
        if let Some(s) = self.sources.get_mut(key) {
            s.last_block = self.now;
            match &mut s.kind {
                Kind::Peer(p) => {
                    p.snubbed = false;
                    // Slow start: until the first rate sample, each block
                    // received widens the window by one, doubling it every
                    // round trip.
                    if s.down.get() == 0 {
                        s.depth = (s.depth + 1).min(p.reqq).min(MAX_QUEUE);
                    }
                }
                Kind::Web(w) if w.active() => w.failures = 0,
                Kind::Web(_) => {}
            }
        }
        if let BlockOutcome::Accepted {
            piece_complete,
            cancel,
        } = self.picker.on_block(key, block)
        {
            for other in cancel {
                if self.sources.get(other).is_some() {
                    self.send(other, PeerCmd::Cancel(block));
                }
            }
            self.store_block(key, block, &data);
            if piece_complete {
                if let Some(buf) = self.assembly.partial.remove(&block.index) {
                    self.assembly.queue(block.index, buf);
                    self.pump_hashing();
                }
            }
        }
        self.fill(key);
    }

    fn store_block(&mut self, key: PeerKey, block: BlockRef, data: &[u8]) {
        let size = self.meta.piece_size(block.index) as usize;
        let blocks = self.picker.blocks_in_piece(block.index) as usize;
        let Assembly { partial, spare, .. } = &mut self.assembly;
        let layout = &self.layout;
        let buf = partial.entry(block.index).or_insert_with(|| {
            let mut data = spare.pop().unwrap_or_default();
            data.set_len(size, layout.piece_phase(block.index));
            PieceBuf {
                data,
                senders: vec![0; blocks],
            }
        });
        let start = block.begin as usize;
        let end = start + data.len();
        if end <= buf.data.len() {
            buf.data[start..end].copy_from_slice(data);
            if let Some(s) = buf.senders.get_mut(start / BLOCK_LEN as usize) {
                *s = key;
            }
        }
    }

    /// Starts hash jobs for queued pieces, as many as may be out.
    fn pump_hashing(&mut self) {
        if self.over {
            return;
        }
        let suspects = &self.repair.suspects;
        while let Some(jobs) = self
            .assembly
            .next_job(|piece| suspects.contains_key(&piece))
        {
            self.out.push_back(Action::Verify(jobs));
        }
    }

    pub(super) fn on_verified_batch(&mut self, batch: Vec<Verified>) {
        self.assembly.jobs = self.assembly.jobs.saturating_sub(1);
        for v in batch {
            if self.over {
                self.assembly.verifying = self.assembly.verifying.saturating_sub(1);
            } else if let Err(e) = self.on_verified(v) {
                // After a failed write the download stops: another job
                // would only leave one more half-written piece behind.
                self.over = true;
                self.out.push_back(Action::Failed(e));
            }
        }
        self.pump_hashing();
    }

    fn on_verified(&mut self, mut v: Verified) -> Result<(), StoreError> {
        self.assembly.verifying = self.assembly.verifying.saturating_sub(1);
        let data = std::mem::take(&mut v.data);
        let senders = std::mem::take(&mut v.senders);
        if let Err(e) = v.write {
            self.assembly.recycle(data, self.open_limit());
            return Err(e);
        }
        if !v.ok {
            self.piece_failed(v, PieceBuf { data, senders });
            return Ok(());
        }
        self.assembly.recycle(data, self.open_limit());
        self.piece_had(v.piece);
        self.recount_have();
        self.judge_suspects(v.piece, &v.block_hashes);
        if self.picker.is_complete() {
            self.on_complete();
        } else {
            self.fill_all();
        }
        Ok(())
    }

    /// A piece failed its check. A v2 piece's leaf hashes may name the bad
    /// blocks; otherwise it is fetched again whole and its senders blamed.
    fn piece_failed(&mut self, mut v: Verified, buf: PieceBuf) {
        self.progress.hash_failures += 1;
        let mut buf = buf;
        let mut block_hashes = std::mem::take(&mut v.block_hashes);
        if !v.leaves.is_empty() {
            let leaves = std::mem::take(&mut v.leaves);
            let pad_bad = std::mem::take(&mut v.pad_bad);
            match self.start_leaf_check(v.piece, buf, block_hashes, leaves, pad_bad) {
                Ok(()) => return,
                Err(back) => (buf, block_hashes) = back,
            }
        }
        self.assembly.recycle(buf.data, self.open_limit());
        tracing::warn!("piece {} failed its hash check; fetching it again", v.piece);
        self.picker.piece_failed(v.piece);
        self.blame_failed(v.piece, &buf.senders, &block_hashes);
        self.fill_all();
    }

    /// A piece checked good (just downloaded, or found on disk once its
    /// layer came): had from now on, and told to peers at the next tick.
    pub(super) fn piece_had(&mut self, p: u32) {
        self.picker.piece_passed(p);
        self.out.push_back(Action::Have(p));
        if !self.picker.wants(p) {
            // Kept out of the totals, as a file selection wants.
            self.have_unwanted_bytes += self.meta.piece_size(p);
        }
        for s in self.meta.piece_slices(p) {
            self.progress.file_done[s.file] += s.len;
        }
        self.pending_haves.push(p);
    }

    /// A piece we had changed on disk. While downloading it is fetched
    /// again; a complete torrent (seeding, perhaps from a read-only store),
    /// or a piece a file selection left out, just stops being served,
    /// which the peer tasks already do.
    pub(super) fn on_piece_lost(&mut self, piece: u32) {
        if self.picker.is_complete()
            || !self.picker.wants(piece)
            || !self.picker.have().get(piece as usize)
        {
            return;
        }
        self.picker.piece_failed(piece);
        for s in self.meta.piece_slices(piece) {
            self.progress.file_done[s.file] = self.progress.file_done[s.file].saturating_sub(s.len);
        }
        self.recount_have();
        self.fill_all();
        self.publish();
    }

    /// Counts what we have into the progress, and tells the runner the
    /// bytes trackers get `left` from when they changed: they must be
    /// current the moment completion is told, not at the next snapshot.
    pub(super) fn recount_have(&mut self) {
        let have = self.picker.have();
        let count = have.count_ones() as u64;
        self.progress.pieces_have = count as u32;
        let full = count * self.meta.piece_length;
        // The last piece is usually short.
        let last = self.meta.piece_count().saturating_sub(1);
        let all = if have.get(last as usize) {
            full - self.meta.piece_length + self.meta.piece_size(last)
        } else {
            full
        };
        // With a file selection, bytes of pieces left out do not count.
        let bytes = all.saturating_sub(self.have_unwanted_bytes);
        self.progress.complete = self.picker.is_complete();
        if self.told_have_bytes != Some(bytes) {
            self.told_have_bytes = Some(bytes);
            self.out.push_back(Action::HaveBytes(bytes));
        }
        self.progress.have_bytes = bytes;
    }
}
