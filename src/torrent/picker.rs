//! Decides which blocks to request from which peer.
//!
//! Free pieces (not had, not being downloaded) live in one array sorted by
//! availability into buckets, libtorrent-style: a have/bitfield update moves a
//! piece across one bucket boundary with a single swap (O(1)), and picking walks
//! the array from the rarest bucket. Seeds are a separate counter because a
//! piece every seed has is no rarer or commoner relative to the others. Only
//! pieces in progress carry per-block state, so memory stays ~10 bytes a piece.
//!
//! Before all that come deadlines (streaming readers' next pieces, nearest
//! first, `set_deadlines`); `set_sequential` starts new pieces in index
//! order instead of rarest first.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::bitfield::Bitfield;
use crate::peer::wire::BlockRef;

/// The request size every client accepts (BEP 3 de facto; larger gets rejected).
pub const BLOCK_LEN: u32 = 16384;

/// Endgame duplicates a block to at most this many peers, bounding wasted bandwidth.
pub const MAX_REQUESTERS: usize = 3;

/// Below this many verified pieces new pieces are chosen at random: a rare piece
/// is slow to finish, and until we have something we have nothing to trade.
pub const RANDOM_FIRST_PIECES: usize = 4;

pub type PeerKey = u64;

/// What a peer has. A seed's `All` avoids building a full bitfield for it.
#[derive(Clone, Copy, Debug)]
pub enum PeerHas<'a> {
    All,
    Some(&'a Bitfield),
}

impl PeerHas<'_> {
    /// Out-of-range pieces read as absent (bitfields come from the network).
    pub fn get(&self, piece: u32) -> bool {
        match self {
            PeerHas::All => true,
            PeerHas::Some(b) => b.get(piece as usize),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// New data for this block. `piece_complete` = every block of the piece is now received.
    /// `cancel` = other peers that also had this block requested (endgame) and should get a cancel.
    Accepted {
        piece_complete: bool,
        cancel: Vec<PeerKey>,
    },
    /// Block already received, or piece not being downloaded / already had: ignore the data quietly.
    Duplicate,
}

#[derive(Clone, Copy, Debug, Default)]
struct Block {
    /// Who delivered it, kept so a hash failure can be attributed.
    from: Option<PeerKey>,
    /// Number of valid entries in `peers`.
    n: u8,
    peers: [PeerKey; MAX_REQUESTERS],
}

impl Block {
    fn requesters(&self) -> &[PeerKey] {
        &self.peers[..usize::from(self.n).min(MAX_REQUESTERS)]
    }

    fn is_free(&self) -> bool {
        self.from.is_none() && self.n == 0
    }

    fn add(&mut self, peer: PeerKey) {
        if let Some(slot) = self.peers.get_mut(usize::from(self.n)) {
            *slot = peer;
            self.n += 1;
        }
    }

    /// Returns true when `peer` was a requester.
    fn remove(&mut self, peer: PeerKey) -> bool {
        let n = usize::from(self.n).min(MAX_REQUESTERS);
        match self.peers[..n].iter().position(|&p| p == peer) {
            Some(i) => {
                self.peers.copy_within(i + 1..n, i);
                self.n -= 1;
                true
            }
            None => false,
        }
    }
}

/// Per-block state of a piece being downloaded.
#[derive(Debug)]
struct Partial {
    size: u32,
    blocks: Vec<Block>,
    /// Blocks neither requested nor received.
    free: u32,
    received: u32,
    /// No free block below this index; saves rescanning big pieces on every pick.
    next_free: u32,
}

impl Partial {
    fn new(size: u32) -> Partial {
        let count = size.div_ceil(BLOCK_LEN);
        Partial {
            size,
            blocks: vec![Block::default(); count as usize],
            free: count,
            received: 0,
            next_free: 0,
        }
    }

    fn block_ref(&self, index: u32, block: u32) -> BlockRef {
        let begin = block * BLOCK_LEN;
        BlockRef {
            index,
            begin,
            length: (self.size - begin).min(BLOCK_LEN),
        }
    }
}

pub struct Picker {
    piece_count: u32,
    piece_len: u32,
    total_len: u64,
    have: Bitfield,
    seeds: u32,
    /// Availability from non-seed peers.
    counts: Vec<u16>,
    /// A permutation of all pieces; `order[..free_len]` are the free pieces,
    /// grouped into buckets by ascending `counts`.
    order: Vec<u32>,
    /// Inverse of `order`.
    pos: Vec<u32>,
    free_len: u32,
    /// `bucket_end[c]` = end of the bucket of free pieces with count `c`; the
    /// last entry equals `free_len`, and the last bucket is never empty (unless
    /// it is the only one), so walking buckets costs the highest count, not 65536.
    bucket_end: Vec<u32>,
    /// Pieces being downloaded (requested or partly received, not yet verified).
    partial: BTreeMap<u32, Partial>,
    /// Pieces in `partial` that still have a free block: checked first on every
    /// pick, so finishing started pieces is preferred over starting new ones.
    with_free: BTreeSet<u32>,
    requests: HashMap<PeerKey, BTreeSet<BlockRef>>,
    rng: StdRng,
    /// Pieces not wanted (they touch only files the user left out); never
    /// free, never picked, and not needed for completion. None: all wanted.
    unwanted: Option<Bitfield>,
    /// Pieces of files the user marked high priority: started before any
    /// other piece the peer has, rarest first among them.
    high: Option<Bitfield>,
    /// Wanted pieces not verified yet: the download is complete at 0.
    wanted_left: u32,
    /// Pieces that cannot be checked yet (a v2 file whose piece layer is
    /// still being fetched): kept out of the free list, so never picked,
    /// but still needed for completion.
    held: Option<Bitfield>,
    /// Pieces with a deadline (streaming readers' positions and the pieces
    /// just after them), most urgent first: started before anything else,
    /// libtorrent's `set_piece_deadline`.
    deadlines: Vec<u32>,
    /// New pieces in index order instead of rarest first (`--sequential`).
    sequential: bool,
    /// No free piece below this index (sequential picking starts here).
    seq_cursor: u32,
    /// Most pieces in `partial` before no new one is started: each is a
    /// piece buffer in memory while it is assembled and checked.
    open_limit: usize,
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker")
            .field("pieces", &self.piece_count)
            .field("have", &self.have)
            .field("free", &self.free_len)
            .field("in_progress", &self.partial.len())
            .field("seeds", &self.seeds)
            .finish()
    }
}

impl Picker {
    /// `have` = pieces we already have verified (resume); `piece_len` is
    /// the nominal piece length. Random choices (tie-breaking among equally
    /// rare pieces) come from a generator seeded with `seed`.
    pub fn with_seed(
        piece_count: u32,
        piece_len: u32,
        total_len: u64,
        have: &Bitfield,
        seed: u64,
    ) -> Picker {
        Picker::with_rng(
            piece_count,
            piece_len,
            total_len,
            have,
            StdRng::seed_from_u64(seed),
        )
    }

    fn with_rng(
        piece_count: u32,
        piece_len: u32,
        total_len: u64,
        have_in: &Bitfield,
        mut rng: StdRng,
    ) -> Picker {
        let n = piece_count as usize;
        // Copy bit by bit: the caller's bitfield may have another length.
        let mut have = Bitfield::new(n);
        for p in have_in.iter_ones().take_while(|&p| p < n) {
            have.set(p);
        }
        let mut order: Vec<u32> = Vec::with_capacity(n);
        order.extend((0..piece_count).filter(|&p| !have.get(p as usize)));
        let free_len = order.len() as u32;
        // Shuffling once gives random tie-breaking among equally rare pieces.
        order.shuffle(&mut rng);
        order.extend((0..piece_count).filter(|&p| have.get(p as usize)));
        let mut pos = vec![0u32; n];
        for (i, &p) in order.iter().enumerate() {
            pos[p as usize] = i as u32;
        }
        Picker {
            piece_count,
            piece_len,
            total_len,
            have,
            seeds: 0,
            counts: vec![0; n],
            order,
            pos,
            free_len,
            bucket_end: vec![free_len],
            partial: BTreeMap::new(),
            with_free: BTreeSet::new(),
            requests: HashMap::new(),
            rng,
            unwanted: None,
            high: None,
            wanted_left: free_len,
            held: None,
            deadlines: Vec::new(),
            sequential: false,
            seq_cursor: 0,
            open_limit: usize::MAX,
        }
    }

    /// The pieces a file selection left out (None: every piece is wanted).
    pub fn unwanted(&self) -> Option<&Bitfield> {
        self.unwanted.as_ref()
    }

    /// Whether `peer` has `block` requested.
    pub fn is_requested(&self, peer: PeerKey, block: BlockRef) -> bool {
        self.requests.get(&peer).is_some_and(|r| r.contains(&block))
    }

    /// Starts piece `p` if it is free (wanted, not had, held or started),
    /// so blocks of it that came unasked can be taken: a web seed that
    /// ignores `Range` sends whole files. False when it is not free.
    pub fn start_if_free(&mut self, p: u32) -> bool {
        if !self.is_free(p) {
            return false;
        }
        self.start_piece(p);
        true
    }

    /// False for pieces a file selection left out.
    pub fn wants(&self, p: u32) -> bool {
        self.unwanted.as_ref().is_none_or(|u| !u.get(p as usize))
    }

    /// Leaves out the pieces set in `unwanted` (file selection): they are
    /// never asked for, and the download is complete without them.
    pub fn set_unwanted(&mut self, unwanted: &Bitfield) {
        let mut u = Bitfield::new(self.piece_count as usize);
        let n = self.piece_count as usize;
        for p in unwanted.iter_ones().take_while(|&p| p < n) {
            u.set(p);
            if self.is_free(p as u32) {
                self.remove_free(p as u32);
            }
        }
        self.unwanted = Some(u);
        self.wanted_left = (0..self.piece_count)
            .filter(|&p| !self.have.get(p as usize) && self.wants(p))
            .count() as u32;
    }

    /// Keeps the free pieces set in `pieces` from being picked until
    /// [`Picker::release_held`] lets them go (their hashes are not known).
    pub fn hold(&mut self, pieces: &Bitfield) {
        let n = self.piece_count as usize;
        let mut held = self.held.take().unwrap_or_else(|| Bitfield::new(n));
        for p in pieces.iter_ones().take_while(|&p| p < n) {
            if self.is_free(p as u32) {
                self.remove_free(p as u32);
                held.set(p);
            }
        }
        self.held = (held.count_ones() > 0).then_some(held);
    }

    /// Held pieces in `range` may be picked again.
    pub fn release_held(&mut self, range: std::ops::Range<u32>) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        let end = range.end.min(self.piece_count);
        for p in range.start..end {
            if held.clear(p as usize)
                && !self.have.get(p as usize)
                && self.wants(p)
                && !self.is_free(p)
                && !self.partial.contains_key(&p)
            {
                self.insert_free(p);
            }
        }
        self.held = (held.count_ones() > 0).then_some(held);
    }

    /// A held piece goes back to being downloaded with the blocks in
    /// `kept` (`Some(sender)`) already received: only the others are
    /// asked for. For a failed piece whose bad blocks are known. False
    /// (and nothing changes) when the piece is not held or not wanted.
    pub fn resume(&mut self, piece: u32, kept: &[Option<PeerKey>]) -> bool {
        let held = self.held.as_ref().is_some_and(|h| h.get(piece as usize));
        if !held
            || self.have.get(piece as usize)
            || !self.wants(piece)
            || self.partial.contains_key(&piece)
        {
            return false;
        }
        let mut part = Partial::new(self.piece_size(piece));
        if kept.len() != part.blocks.len() {
            return false;
        }
        if let Some(h) = self.held.as_mut() {
            h.clear(piece as usize);
        }
        if self.held.as_ref().is_some_and(|h| h.count_ones() == 0) {
            self.held = None;
        }
        for (b, k) in part.blocks.iter_mut().zip(kept) {
            if let Some(k) = k {
                b.from = Some(*k);
                part.received += 1;
                part.free -= 1;
            }
        }
        part.next_free = part
            .blocks
            .iter()
            .position(Block::is_free)
            .unwrap_or(part.blocks.len()) as u32;
        if part.free > 0 {
            self.with_free.insert(piece);
        }
        self.partial.insert(piece, part);
        true
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Length of `piece`; the last piece is short. 0 for an out-of-range index.
    pub fn piece_size(&self, piece: u32) -> u32 {
        if piece >= self.piece_count {
            return 0;
        }
        let start = u64::from(piece) * u64::from(self.piece_len);
        let rest = self.total_len.saturating_sub(start);
        u32::try_from(rest.min(u64::from(self.piece_len))).unwrap_or(self.piece_len)
    }

    pub fn blocks_in_piece(&self, piece: u32) -> u32 {
        self.piece_size(piece).div_ceil(BLOCK_LEN)
    }

    // ---- availability ----

    /// A seed raises every piece equally, so it leaves the rarity order alone.
    pub fn add_seed(&mut self) {
        self.seeds = self.seeds.saturating_add(1);
    }

    pub fn remove_seed(&mut self) {
        self.seeds = self.seeds.saturating_sub(1);
    }

    pub fn add_bitfield(&mut self, b: &Bitfield) {
        let n = self.piece_count;
        for_each_one(b, n, |p| self.add_have(p));
    }

    pub fn remove_bitfield(&mut self, b: &Bitfield) {
        let n = self.piece_count;
        for_each_one(b, n, |p| self.remove_have(p));
    }

    pub fn add_have(&mut self, piece: u32) {
        let Some(&c) = self.counts.get(piece as usize) else {
            return;
        };
        if c == u16::MAX {
            return;
        }
        if self.is_free(piece) {
            self.free_inc(piece);
        }
        self.counts[piece as usize] = c + 1;
    }

    /// Only used when a peer leaves (peers never lose pieces otherwise).
    pub fn remove_have(&mut self, piece: u32) {
        let Some(&c) = self.counts.get(piece as usize) else {
            return;
        };
        if c == 0 {
            return;
        }
        if self.is_free(piece) {
            self.free_dec(piece);
        }
        self.counts[piece as usize] = c - 1;
    }

    /// Number of connected peers that have `piece`, seeds included.
    pub fn availability(&self, piece: u32) -> u32 {
        match self.counts.get(piece as usize) {
            Some(&c) => u32::from(c).saturating_add(self.seeds),
            None => 0,
        }
    }

    // ---- picking ----

    /// Appends up to `max` blocks for `peer` to request to `out`.
    /// Asks for the pieces set in `high` before all others (file
    /// priorities); an empty set puts all pieces back on one footing.
    pub fn set_high(&mut self, high: &Bitfield) {
        let n = self.piece_count as usize;
        let mut h = Bitfield::new(n);
        for p in high.iter_ones().take_while(|&p| p < n) {
            h.set(p);
        }
        self.high = (h.count_ones() > 0).then_some(h);
    }

    /// Pieces to ask for before any other, most urgent first (streaming
    /// readers' windows); an empty list ends them. Pieces out of range,
    /// had or not wanted are ignored.
    pub fn set_deadlines(&mut self, pieces: &[u32]) {
        self.deadlines.clear();
        self.deadlines
            .extend(pieces.iter().filter(|&&p| p < self.piece_count));
    }

    /// Starts new pieces in index order (for players reading a growing
    /// file) instead of rarest first.
    pub fn set_sequential(&mut self, on: bool) {
        self.sequential = on;
    }

    /// Starts no new piece while `n` are in progress (deadline pieces
    /// excepted: a reader waits for them). Started pieces are always
    /// continued, so the limit never stalls a download.
    pub fn set_open_limit(&mut self, n: usize) {
        self.open_limit = n.max(1);
    }

    /// New pieces that may be started now.
    fn room(&self) -> usize {
        self.open_limit.saturating_sub(self.partial.len())
    }

    pub fn pick(&mut self, peer: PeerKey, has: PeerHas<'_>, max: usize, out: &mut Vec<BlockRef>) {
        // 0. Pieces with a deadline, most urgent first: their free blocks,
        //    started or not.
        let mut added = self.pick_deadlines(peer, has, max, out);
        // 1. Free blocks of pieces already started: finished pieces can be
        //    verified, shared and written out; scattered partials can't.
        let mut cursor = 0u32;
        while added < max {
            let Some(&p) = self.with_free.range(cursor..).next() else {
                break;
            };
            if has.get(p) {
                added += self.take_free(peer, p, max - added, out);
            }
            match p.checked_add(1) {
                Some(next) => cursor = next,
                None => break,
            }
        }
        // 2. Start new pieces, choosing about as many as the request needs in
        //    one pass over the candidates: high-priority ones first.
        let per_piece = self.blocks_in_piece(0).max(1) as usize;
        let mut chosen = Vec::new();
        if let Some(high) = self.high.take() {
            if added < max && self.room() > 0 {
                let want = (max - added).div_ceil(per_piece).min(self.room());
                self.choose_sparse(&high, |p| has.get(p), false, want, &mut chosen);
                for &p in &chosen {
                    if added >= max {
                        break;
                    }
                    self.start_piece(p);
                    added += self.take_free(peer, p, max - added, out);
                }
            }
            self.high = Some(high);
        }
        while added < max && self.room() > 0 {
            chosen.clear();
            let want = (max - added).div_ceil(per_piece).min(self.room());
            self.choose_new(has, want, &mut chosen);
            if chosen.is_empty() {
                break;
            }
            for &p in &chosen {
                if added >= max {
                    break;
                }
                self.start_piece(p);
                added += self.take_free(peer, p, max - added, out);
            }
        }
        // 3. Endgame: duplicate requests so the last pieces aren't held hostage
        //    by one slow peer.
        if added < max && self.in_endgame() {
            self.pick_endgame(peer, has, max - added, out);
        }
    }

    /// Free blocks of the deadline pieces the peer has, in deadline order.
    fn pick_deadlines(
        &mut self,
        peer: PeerKey,
        has: PeerHas<'_>,
        max: usize,
        out: &mut Vec<BlockRef>,
    ) -> usize {
        let mut added = 0;
        let deadlines = std::mem::take(&mut self.deadlines);
        for &p in &deadlines {
            if added >= max {
                break;
            }
            if !has.get(p) {
                continue;
            }
            if self.is_free(p) {
                self.start_piece(p);
            }
            if self.with_free.contains(&p) {
                added += self.take_free(peer, p, max - added, out);
            }
        }
        // The most urgent piece this peer has, all asked of others: ask
        // for its missing blocks too (a slow peer must not hold a reader
        // up); the first copy to come cancels the others.
        if let Some(&p) = deadlines.iter().find(|&&p| has.get(p)) {
            if added < max && !self.with_free.contains(&p) {
                added += self.duplicate(peer, p, max - added, out);
            }
        }
        self.deadlines = deadlines;
        added
    }

    /// Asks `peer` too for the blocks of piece `p` that others were asked
    /// for and that have not come, up to `MAX_REQUESTERS` each.
    fn duplicate(&mut self, peer: PeerKey, p: u32, max: usize, out: &mut Vec<BlockRef>) -> usize {
        let Some(part) = self.partial.get_mut(&p) else {
            return 0;
        };
        let mut taken = 0;
        for i in 0..part.blocks.len() {
            if taken >= max {
                break;
            }
            let b = &mut part.blocks[i];
            if b.from.is_some()
                || b.n == 0
                || usize::from(b.n) >= MAX_REQUESTERS
                || b.requesters().contains(&peer)
            {
                continue;
            }
            b.add(peer);
            let r = part.block_ref(p, i as u32);
            self.requests.entry(peer).or_default().insert(r);
            out.push(r);
            taken += 1;
        }
        taken
    }

    /// Up to `want` free pieces the peer has, lowest index first.
    fn choose_in_order(&mut self, has: PeerHas<'_>, want: usize, chosen: &mut Vec<u32>) {
        while self.seq_cursor < self.piece_count && !self.is_free(self.seq_cursor) {
            self.seq_cursor += 1;
        }
        for p in self.seq_cursor..self.piece_count {
            if chosen.len() >= want {
                return;
            }
            if self.is_free(p) && has.get(p) {
                chosen.push(p);
            }
        }
    }

    /// Appends up to `want` distinct free pieces the peer has to `chosen`, best
    /// first: uniformly random during the random-first phase, otherwise rarest
    /// first with random tie-breaking (or in index order when sequential).
    fn choose_new(&mut self, has: PeerHas<'_>, want: usize, chosen: &mut Vec<u32>) {
        // `max` comes from the caller; never size anything by more than exists.
        let want = want.min(self.free_len as usize);
        if want == 0 {
            return;
        }
        if self.sequential {
            return self.choose_in_order(has, want, chosen);
        }
        let random_phase = self.have.count_ones() < RANDOM_FIRST_PIECES;
        if let PeerHas::Some(b) = has {
            // A peer with very few pieces: walking its bitfield (mostly zero
            // bytes) beats walking the free list, where its pieces may all sit
            // in the common buckets at the end.
            if (b.count_ones() as u64) * 64 < u64::from(self.free_len) {
                self.choose_sparse(b, |_| true, random_phase, want, chosen);
                return;
            }
        }
        let ranges: Vec<(u32, u32)> = if random_phase {
            vec![(0, self.free_len)]
        } else {
            (0..self.bucket_end.len())
                .map(|c| (self.bucket_start(c), self.bucket_end[c]))
                .filter(|(s, e)| s < e)
                .collect()
        };
        for (s, e) in ranges {
            // A random starting point, so peers racing for one bucket spread
            // over it and recently moved pieces aren't favoured.
            let mid = self.rng.gen_range(s..e) as usize;
            let (s, e) = (s as usize, e as usize);
            for &p in self.order[mid..e].iter().chain(&self.order[s..mid]) {
                if has.get(p) {
                    chosen.push(p);
                    if chosen.len() >= want {
                        return;
                    }
                }
            }
        }
    }

    /// The `want` best free pieces among those set in `b` for which `also`
    /// holds: rarest first (or random), random tie-break.
    fn choose_sparse(
        &mut self,
        b: &Bitfield,
        also: impl Fn(u32) -> bool,
        random_phase: bool,
        want: usize,
        chosen: &mut Vec<u32>,
    ) {
        // Keep the `want` best (count, random tie-break) in a max-heap.
        let salt: u64 = self.rng.gen();
        let mut best: BinaryHeap<(u16, u64, u32)> = BinaryHeap::with_capacity(want + 1);
        for_each_one(b, self.piece_count, |p| {
            if !self.is_free(p) || !also(p) {
                return;
            }
            let count = if random_phase {
                0
            } else {
                self.counts[p as usize]
            };
            let key = (count, mix(u64::from(p) ^ salt), p);
            if best.len() < want {
                best.push(key);
            } else if best.peek().is_some_and(|top| key < *top) {
                best.pop();
                best.push(key);
            }
        });
        chosen.extend(best.into_sorted_vec().into_iter().map(|(_, _, p)| p));
    }

    fn start_piece(&mut self, p: u32) {
        self.remove_free(p);
        let part = Partial::new(self.piece_size(p));
        if part.free > 0 {
            self.with_free.insert(p);
        }
        self.partial.insert(p, part);
    }

    /// Hands out up to `max` free blocks of in-progress piece `p`, lowest first
    /// so one peer gets a contiguous run.
    fn take_free(&mut self, peer: PeerKey, p: u32, max: usize, out: &mut Vec<BlockRef>) -> usize {
        let Some(part) = self.partial.get_mut(&p) else {
            return 0;
        };
        let mut taken = 0;
        let mut i = part.next_free as usize;
        while taken < max && part.free > 0 && i < part.blocks.len() {
            if part.blocks[i].is_free() {
                part.blocks[i].add(peer);
                part.free -= 1;
                let r = part.block_ref(p, i as u32);
                self.requests.entry(peer).or_default().insert(r);
                out.push(r);
                taken += 1;
            }
            i += 1;
        }
        part.next_free = i as u32;
        if part.free == 0 {
            self.with_free.remove(&p);
        }
        taken
    }

    fn pick_endgame(
        &mut self,
        peer: PeerKey,
        has: PeerHas<'_>,
        max: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let mut taken = 0;
        // Blocks with the fewest requesters first: they are the likeliest to stall.
        for limit in 1..MAX_REQUESTERS {
            for (&p, part) in self.partial.iter_mut() {
                if taken >= max {
                    return;
                }
                if !has.get(p) {
                    continue;
                }
                for i in 0..part.blocks.len() {
                    if taken >= max {
                        break;
                    }
                    let b = &mut part.blocks[i];
                    if b.from.is_some()
                        || b.n == 0
                        || usize::from(b.n) > limit
                        || b.requesters().contains(&peer)
                    {
                        continue;
                    }
                    b.add(peer);
                    let r = part.block_ref(p, i as u32);
                    self.requests.entry(peer).or_default().insert(r);
                    out.push(r);
                    taken += 1;
                }
            }
        }
    }

    /// Maps a block to its index within the piece if it is exactly one of the
    /// blocks we would request (right offset alignment and length).
    fn block_index(&self, block: BlockRef) -> Option<usize> {
        let size = self.piece_size(block.index);
        if !block.begin.is_multiple_of(BLOCK_LEN) || block.begin >= size {
            return None;
        }
        if block.length != (size - block.begin).min(BLOCK_LEN) {
            return None;
        }
        Some((block.begin / BLOCK_LEN) as usize)
    }

    /// Records a received block. Anything that is not exactly one of our blocks
    /// (misaligned, wrong length, out of range) is a `Duplicate`, never an error:
    /// late and stray blocks are normal and must not cost the peer its connection.
    pub fn on_block(&mut self, peer: PeerKey, block: BlockRef) -> BlockOutcome {
        let Some(i) = self.block_index(block) else {
            return BlockOutcome::Duplicate;
        };
        if self.have.get(block.index as usize) {
            return BlockOutcome::Duplicate;
        }
        let Some(part) = self.partial.get_mut(&block.index) else {
            return BlockOutcome::Duplicate;
        };
        let Some(b) = part.blocks.get_mut(i) else {
            return BlockOutcome::Duplicate;
        };
        if b.from.is_some() {
            return BlockOutcome::Duplicate;
        }
        let was_free = b.n == 0;
        let mut cancel = Vec::new();
        for &q in b.requesters() {
            forget_request(&mut self.requests, q, block);
            if q != peer {
                cancel.push(q);
            }
        }
        b.n = 0;
        // Accepting unrequested data (e.g. after a release) is fine: it is
        // valid for this slot and the hash check guards the piece anyway.
        b.from = Some(peer);
        part.received += 1;
        if was_free {
            part.free -= 1;
            if part.free == 0 {
                self.with_free.remove(&block.index);
            }
        }
        BlockOutcome::Accepted {
            piece_complete: part.received as usize == part.blocks.len(),
            cancel,
        }
    }

    /// Makes room in `peer`'s queue for deadline blocks: takes back up to
    /// as many of its requests for other pieces as the deadline pieces it
    /// has still have free blocks (at most `max`), newest pieces first,
    /// and returns them to be cancelled. Requests wait in a peer's queue
    /// in order, so an urgent block asked behind them waits for all.
    pub fn make_room(&mut self, peer: PeerKey, has: PeerHas<'_>, max: usize) -> Vec<BlockRef> {
        let mut needed = 0usize;
        for &p in &self.deadlines {
            if needed >= max {
                break;
            }
            if !has.get(p) || self.have.get(p as usize) {
                continue;
            }
            needed += match self.partial.get(&p) {
                Some(part) => part.free as usize,
                None if self.is_free(p) => self.blocks_in_piece(p) as usize,
                None => 0,
            };
        }
        let needed = needed.min(max);
        let Some(asked) = self.requests.get(&peer) else {
            return Vec::new();
        };
        let back: Vec<BlockRef> = asked
            .iter()
            .rev()
            .filter(|b| !self.deadlines.contains(&b.index))
            .take(needed)
            .copied()
            .collect();
        for &b in &back {
            self.release(peer, b);
        }
        back
    }

    /// A request was rejected / choked away / timed out / cancelled: the block becomes free again
    /// (unless other peers still have it requested, or it was received).
    pub fn release(&mut self, peer: PeerKey, block: BlockRef) {
        let known = match self.requests.get_mut(&peer) {
            Some(set) => set.remove(&block),
            None => false,
        };
        if !known {
            return;
        }
        if self.requests.get(&peer).is_some_and(BTreeSet::is_empty) {
            self.requests.remove(&peer);
        }
        self.unrequest(peer, block);
    }

    /// Drops `peer` from the block's requesters, freeing the block if it was the last.
    fn unrequest(&mut self, peer: PeerKey, block: BlockRef) {
        let Some(i) = self.block_index(block) else {
            return;
        };
        let Some(part) = self.partial.get_mut(&block.index) else {
            return;
        };
        let Some(b) = part.blocks.get_mut(i) else {
            return;
        };
        if b.remove(peer) && b.is_free() {
            part.free += 1;
            part.next_free = part.next_free.min(i as u32);
            self.with_free.insert(block.index);
        }
    }

    /// Peer disconnected: release every block it had requested. Returns them.
    pub fn peer_gone(&mut self, peer: PeerKey) -> Vec<BlockRef> {
        let blocks: Vec<BlockRef> = self
            .requests
            .remove(&peer)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        for &b in &blocks {
            self.unrequest(peer, b);
        }
        blocks
    }

    /// Blocks currently requested from `peer`.
    pub fn outstanding(&self, peer: PeerKey) -> usize {
        self.requests.get(&peer).map_or(0, BTreeSet::len)
    }

    /// Peers that delivered blocks of an in-progress piece; call before
    /// `piece_failed` to attribute a hash failure.
    pub fn contributors(&self, piece: u32) -> Vec<PeerKey> {
        let mut peers: Vec<PeerKey> = self
            .partial
            .get(&piece)
            .map(|part| part.blocks.iter().filter_map(|b| b.from).collect())
            .unwrap_or_default();
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// Hash ok: the piece is now "have".
    pub fn piece_passed(&mut self, piece: u32) {
        if piece >= self.piece_count || self.have.get(piece as usize) {
            return;
        }
        self.drop_partial(piece);
        if self.is_free(piece) {
            self.remove_free(piece);
        }
        self.have.set(piece as usize);
        if self.wants(piece) {
            self.wanted_left = self.wanted_left.saturating_sub(1);
        }
        // The swarm harness (SHOAL_LOG=shoal::picker=trace) follows every
        // piece's copies through the swarm from these lines. The target is
        // fixed: when this module moved under torrent/, the harness lost
        // them without a word.
        tracing::trace!(target: "shoal::picker", "piece {piece} verified");
    }

    /// Hash failed: every block of the piece is free again, piece re-enters the pool.
    /// Also accepts a piece we had (a re-check found it bad).
    pub fn piece_failed(&mut self, piece: u32) {
        if piece >= self.piece_count {
            return;
        }
        self.drop_partial(piece);
        if !self.wants(piece) {
            self.have.clear(piece as usize);
            return;
        }
        if self.have.get(piece as usize) {
            self.wanted_left += 1;
        }
        self.have.clear(piece as usize);
        if !self.is_free(piece) {
            self.insert_free(piece);
        }
    }

    /// Forgets a piece's download state, including any requests still open for it.
    fn drop_partial(&mut self, piece: u32) {
        self.with_free.remove(&piece);
        let Some(part) = self.partial.remove(&piece) else {
            return;
        };
        for (i, b) in part.blocks.iter().enumerate() {
            let r = part.block_ref(piece, i as u32);
            for &q in b.requesters() {
                forget_request(&mut self.requests, q, r);
            }
        }
    }

    /// Verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.wanted_left == 0
    }

    /// No unrequested block is left that any connected peer could serve, but
    /// pieces are still missing. Pieces nobody has are ignored: otherwise one
    /// unavailable piece would keep endgame off and stall the rest at 99 %.
    pub fn in_endgame(&self) -> bool {
        if self.is_complete() {
            return false;
        }
        let rare_end = if self.seeds > 0 {
            0
        } else {
            self.bucket_end[0]
        };
        if self.free_len > rare_end {
            return false;
        }
        !self.with_free.iter().any(|&p| self.availability(p) > 0)
    }

    /// Whether the peer has a piece we don't have.
    pub fn interesting(&self, has: PeerHas<'_>) -> bool {
        if self.unwanted.is_some() {
            return match has {
                PeerHas::All => !self.is_complete(),
                PeerHas::Some(b) => b
                    .iter_ones()
                    .take_while(|&p| p < self.piece_count as usize)
                    .any(|p| !self.have.get(p) && self.wants(p as u32)),
            };
        }
        match has {
            PeerHas::All => !self.is_complete(),
            PeerHas::Some(b) if b.len() == self.have.len() => self.have.lacks_any_of(b),
            PeerHas::Some(b) => b
                .iter_ones()
                .take_while(|&p| p < self.piece_count as usize)
                .any(|p| !self.have.get(p)),
        }
    }

    // ---- the bucketed free list ----

    fn is_free(&self, p: u32) -> bool {
        self.pos.get(p as usize).is_some_and(|&i| i < self.free_len)
    }

    fn bucket_start(&self, c: usize) -> u32 {
        match c.checked_sub(1) {
            Some(prev) => self.bucket_end[prev],
            None => 0,
        }
    }

    fn swap(&mut self, i: u32, j: u32) {
        let (a, b) = (self.order[i as usize], self.order[j as usize]);
        self.order.swap(i as usize, j as usize);
        self.pos[a as usize] = j;
        self.pos[b as usize] = i;
    }

    /// Drops empty top buckets so bucket walks stay proportional to the real maximum.
    fn trim_buckets(&mut self) {
        while self.bucket_end.len() > 1
            && self.bucket_end[self.bucket_end.len() - 2] == self.free_len
        {
            self.bucket_end.pop();
        }
    }

    /// Free piece `p` moves from bucket `counts[p]` to the next (caller bumps the count).
    fn free_inc(&mut self, p: u32) {
        let c = usize::from(self.counts[p as usize]);
        if c + 1 >= self.bucket_end.len() {
            self.bucket_end.push(self.free_len);
        }
        let last = self.bucket_end[c] - 1;
        self.swap(self.pos[p as usize], last);
        self.bucket_end[c] = last;
    }

    /// Free piece `p` moves from bucket `counts[p]` (> 0) to the previous one.
    fn free_dec(&mut self, p: u32) {
        let c = usize::from(self.counts[p as usize]);
        let first = self.bucket_end[c - 1];
        self.swap(self.pos[p as usize], first);
        self.bucket_end[c - 1] = first + 1;
        self.trim_buckets();
    }

    /// Moves free piece `p` out of the free region, bubbling it up through the
    /// higher buckets: O(highest count).
    fn remove_free(&mut self, p: u32) {
        let c = usize::from(self.counts[p as usize]);
        for k in c..self.bucket_end.len() {
            let last = self.bucket_end[k] - 1;
            self.swap(self.pos[p as usize], last);
            self.bucket_end[k] = last;
        }
        self.free_len -= 1;
        self.trim_buckets();
    }

    /// Puts non-free piece `p` back into the bucket of its count.
    fn insert_free(&mut self, p: u32) {
        self.seq_cursor = self.seq_cursor.min(p);
        let c = usize::from(self.counts[p as usize]);
        while self.bucket_end.len() <= c {
            self.bucket_end.push(self.free_len);
        }
        self.swap(self.pos[p as usize], self.free_len);
        self.free_len += 1;
        let top = self.bucket_end.len() - 1;
        self.bucket_end[top] = self.free_len;
        for k in (c + 1..=top).rev() {
            let first = self.bucket_end[k - 1];
            self.swap(self.pos[p as usize], first);
            self.bucket_end[k - 1] = first + 1;
        }
    }
}

/// Calls `f` for each set bit below `limit`, a byte at a time: bitfields are
/// walked on every connect and disconnect, so this stays a plain loop.
fn for_each_one(b: &Bitfield, limit: u32, mut f: impl FnMut(u32)) {
    for (i, &byte) in b.as_bytes().iter().enumerate() {
        let mut rest = byte;
        while rest != 0 {
            let bit = rest.leading_zeros();
            rest &= !(0x80u8 >> bit);
            match u32::try_from(i * 8).ok().and_then(|x| x.checked_add(bit)) {
                Some(p) if p < limit => f(p),
                _ => return,
            }
        }
    }
}

/// splitmix64's finaliser: a cheap, well-spread hash for random tie-breaking.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn forget_request(
    requests: &mut HashMap<PeerKey, BTreeSet<BlockRef>>,
    peer: PeerKey,
    block: BlockRef,
) {
    if let Some(set) = requests.get_mut(&peer) {
        set.remove(&block);
        if set.is_empty() {
            requests.remove(&peer);
        }
    }
}

#[cfg(test)]
impl Picker {
    /// Checks every internal invariant; tests call it after each operation.
    fn check(&self) {
        let n = self.piece_count as usize;
        assert_eq!(self.order.len(), n);
        for (i, &p) in self.order.iter().enumerate() {
            assert_eq!(self.pos[p as usize] as usize, i);
        }
        assert_eq!(*self.bucket_end.last().unwrap(), self.free_len);
        if self.bucket_end.len() > 1 {
            assert!(self.bucket_end[self.bucket_end.len() - 2] < self.free_len);
        }
        for c in 0..self.bucket_end.len() {
            let (s, e) = (self.bucket_start(c), self.bucket_end[c]);
            assert!(s <= e);
            for i in s..e {
                assert_eq!(usize::from(self.counts[self.order[i as usize] as usize]), c);
            }
        }
        for p in 0..self.piece_count {
            let free = self.is_free(p);
            let had = self.have.get(p as usize);
            let partial = self.partial.contains_key(&p);
            let held = self.held.as_ref().is_some_and(|h| h.get(p as usize));
            assert_eq!(
                usize::from(free) + usize::from(had) + usize::from(partial) + usize::from(held),
                1,
                "piece {p}: free {free} had {had} partial {partial} held {held}"
            );
        }
        let mut seen: HashMap<PeerKey, BTreeSet<BlockRef>> = HashMap::new();
        for (&p, part) in &self.partial {
            let free = part.blocks.iter().filter(|b| b.is_free()).count() as u32;
            let recv = part.blocks.iter().filter(|b| b.from.is_some()).count() as u32;
            assert_eq!(part.free, free);
            assert_eq!(part.received, recv);
            assert_eq!(self.with_free.contains(&p), free > 0);
            for (i, b) in part.blocks.iter().enumerate() {
                assert!(b.from.is_none() || b.n == 0);
                if b.is_free() {
                    assert!(i as u32 >= part.next_free);
                }
                let r = part.block_ref(p, i as u32);
                for &q in b.requesters() {
                    assert!(seen.entry(q).or_default().insert(r), "dup requester");
                }
            }
        }
        assert_eq!(seen, self.requests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const KIB16: u32 = BLOCK_LEN;

    /// A failed piece held while its bad blocks are found resumes with
    /// the good ones kept: only the bad one is picked, and the piece
    /// completes when it comes.
    #[test]
    fn a_held_piece_resumes_with_its_good_blocks() {
        let mut pk = picker(2, 4 * KIB16, 8 * KIB16 as u64, 1);
        let mut hold = Bitfield::new(2);
        hold.set(1);
        assert!(!pk.resume(1, &[None; 4]), "not held yet");
        pk.hold(&hold);
        pk.check();
        assert!(!pk.resume(1, &[None; 3]), "wrong block count");
        assert!(pk.resume(1, &[Some(7), Some(7), None, Some(8)]));
        pk.check();
        assert!(!pk.resume(1, &[None; 4]), "resumed once");
        let mut out = Vec::new();
        let mut only1 = Bitfield::new(2);
        only1.set(1);
        pk.pick(9, PeerHas::Some(&only1), 10, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].index, out[0].begin), (1, 2 * KIB16));
        pk.check();
        assert!(matches!(
            pk.on_block(9, out[0]),
            BlockOutcome::Accepted {
                piece_complete: true,
                ..
            }
        ));
        pk.piece_passed(1);
        pk.check();
    }

    fn picker(pieces: u32, piece_len: u32, total: u64, seed: u64) -> Picker {
        Picker::with_seed(
            pieces,
            piece_len,
            total,
            &Bitfield::new(pieces as usize),
            seed,
        )
    }

    fn bits(len: usize, ones: &[usize]) -> Bitfield {
        let mut b = Bitfield::new(len);
        for &i in ones {
            b.set(i);
        }
        b
    }

    fn pick(p: &mut Picker, peer: PeerKey, has: PeerHas<'_>, max: usize) -> Vec<BlockRef> {
        let mut out = Vec::new();
        p.pick(peer, has, max, &mut out);
        p.check();
        out
    }

    /// Held pieces (a v2 file whose piece layer is not known yet) are
    /// never picked and keep the download incomplete until released.
    /// Blocks that came unasked (a web seed streaming a whole file): a
    /// free piece is started for them and they are taken; a piece not
    /// wanted, held, had or already started is not started again.
    #[test]
    fn unasked_blocks_of_a_free_piece_are_taken() {
        let n = 6;
        let mut p = picker(n, 2 * KIB16, u64::from(n) * 2 * u64::from(KIB16), 4);
        p.hold(&bits(6, &[2]));
        let b = |index, begin| BlockRef {
            index,
            begin,
            length: KIB16,
        };
        assert!(matches!(p.on_block(9, b(0, 0)), BlockOutcome::Duplicate));
        assert!(p.start_if_free(0));
        assert!(!p.start_if_free(0), "already started");
        for begin in [0, KIB16] {
            assert!(matches!(
                p.on_block(9, b(0, begin)),
                BlockOutcome::Accepted { .. }
            ));
        }
        p.piece_passed(0);
        p.check();
        for q in [0, 2] {
            assert!(!p.start_if_free(q), "piece {q}");
        }
        assert!(p.start_if_free(3));
        p.check();
        // (The invariant check does not know unwanted pieces.)
        let mut p = picker(n, 2 * KIB16, u64::from(n) * 2 * u64::from(KIB16), 4);
        assert!(p.unwanted().is_none());
        p.set_unwanted(&bits(6, &[1]));
        assert!(!p.start_if_free(1), "not wanted");
        assert_eq!(p.unwanted().map(|u| u.get(1)), Some(true));
    }

    #[test]
    fn held_pieces_wait_for_release() {
        let n = 8;
        let mut p = picker(n, KIB16, u64::from(n) * u64::from(KIB16), 3);
        p.hold(&bits(8, &[2, 3, 4, 5]));
        p.check();
        let got = pick(&mut p, 1, PeerHas::All, 100);
        let pieces: HashSet<u32> = got.iter().map(|b| b.index).collect();
        assert_eq!(pieces, [0, 1, 6, 7].into_iter().collect());
        for b in got {
            p.on_block(1, b);
            p.piece_passed(b.index);
        }
        p.check();
        assert!(!p.is_complete());
        assert!(pick(&mut p, 1, PeerHas::All, 100).is_empty());
        p.release_held(2..4);
        p.check();
        let got = pick(&mut p, 1, PeerHas::All, 100);
        let pieces: HashSet<u32> = got.iter().map(|b| b.index).collect();
        assert_eq!(pieces, [2, 3].into_iter().collect());
        p.release_held(4..100);
        p.check();
        let got = pick(&mut p, 2, PeerHas::All, 100);
        assert!(got.iter().any(|b| b.index == 4) && got.iter().any(|b| b.index == 5));
    }

    /// File priorities: pieces marked high are started before any other
    /// the peer has, even rarer ones, and once they are all taken the
    /// rest follow rarest first.
    #[test]
    fn high_priority_pieces_come_first() {
        let n = 40;
        let mut p = picker(n, KIB16, u64::from(n) * u64::from(KIB16), 7);
        // Pieces 0..10 are rare (one peer has them), the rest common.
        p.add_bitfield(&bits(n as usize, &(0..10).collect::<Vec<_>>()));
        for _ in 0..3 {
            p.add_bitfield(&bits(n as usize, &(10..n as usize).collect::<Vec<_>>()));
        }
        p.set_high(&bits(n as usize, &[30, 31, 32]));
        let got = pick(&mut p, 1, PeerHas::All, 3);
        let mut idx: Vec<u32> = got.iter().map(|b| b.index).collect();
        idx.sort();
        assert_eq!(idx, vec![30, 31, 32]);
        // High pieces all started: the others follow.
        let got = pick(&mut p, 1, PeerHas::All, 1);
        assert!(got[0].index < 30 || got[0].index > 32, "{got:?}");
        // A peer without the high pieces still gets something.
        let mut q = picker(n, KIB16, u64::from(n) * u64::from(KIB16), 7);
        q.set_high(&bits(n as usize, &[30]));
        let got = pick(&mut q, 2, PeerHas::Some(&bits(n as usize, &[5])), 1);
        assert_eq!(got[0].index, 5);
    }

    /// Streaming: deadline pieces come first, most urgent first, even
    /// before high-priority and started pieces; without deadlines the
    /// rest goes rarest first again.
    #[test]
    fn deadline_pieces_come_first_in_order() {
        let n = 40;
        let mut p = picker(n, KIB16, u64::from(n) * u64::from(KIB16), 3);
        // Pieces 0..10 rare, the rest common; 5 is already started.
        p.add_bitfield(&bits(n as usize, &(0..10).collect::<Vec<_>>()));
        for _ in 0..3 {
            p.add_bitfield(&bits(n as usize, &(10..n as usize).collect::<Vec<_>>()));
        }
        p.set_high(&bits(n as usize, &[1]));
        p.set_deadlines(&[22, 20, 21, 99]);
        let got: Vec<u32> = pick(&mut p, 1, PeerHas::All, 3)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(got, vec![22, 20, 21]);
        // A peer without 22 gets the next ones it has.
        let has = bits(n as usize, &[20, 21, 22, 30]);
        p.set_deadlines(&[22, 23, 30]);
        let got: Vec<u32> = pick(&mut p, 2, PeerHas::Some(&has), 1)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(got, vec![30]);
        // Deadlines dropped: the high-priority piece, then the others.
        p.set_deadlines(&[]);
        let got = pick(&mut p, 3, PeerHas::All, 1);
        assert_eq!(got[0].index, 1);
        p.check();
    }

    /// A deadline on a piece being downloaded takes its free blocks; a
    /// piece that is had or not wanted is passed over.
    #[test]
    fn deadlines_skip_had_and_unwanted_pieces() {
        let n = 8;
        let piece = 4 * KIB16;
        let mut have = Bitfield::new(n as usize);
        have.set(2);
        let mut p = Picker::with_seed(n, piece, u64::from(n) * u64::from(piece), &have, 1);
        p.set_unwanted(&bits(n as usize, &[3]));
        // Peer 1 takes two blocks of piece 4.
        p.set_deadlines(&[4]);
        let mut got = Vec::new();
        p.pick(1, PeerHas::All, 2, &mut got);
        assert!(got.iter().all(|b| b.index == 4) && got.len() == 2);
        p.set_deadlines(&[2, 3, 4, 5]);
        // (`check` knows nothing of unwanted pieces: no `pick` helper.)
        let mut got = Vec::new();
        p.pick(2, PeerHas::All, 4, &mut got);
        let idx: Vec<(u32, u32)> = got.iter().map(|b| (b.index, b.begin / KIB16)).collect();
        assert_eq!(idx, vec![(4, 2), (4, 3), (5, 0), (5, 1)]);
    }

    /// The most urgent piece, all asked of a slow peer: another peer is
    /// asked for its missing blocks too, and the first copy cancels the
    /// other request.
    #[test]
    fn the_most_urgent_piece_is_asked_of_two_peers() {
        let n = 6;
        let piece = 2 * KIB16;
        let mut p = picker(n, piece, u64::from(n) * u64::from(piece), 4);
        p.set_deadlines(&[3, 4]);
        let slow = pick(&mut p, 1, PeerHas::All, 2);
        assert!(slow.iter().all(|b| b.index == 3));
        // Peer 2: piece 3's two blocks again, then piece 4.
        let got = pick(&mut p, 2, PeerHas::All, 3);
        let idx: Vec<(u32, u32)> = got.iter().map(|b| (b.index, b.begin / KIB16)).collect();
        assert_eq!(idx, vec![(4, 0), (4, 1), (3, 0)]);
        let got = pick(&mut p, 2, PeerHas::All, 3);
        let idx: Vec<(u32, u32)> = got.iter().map(|b| (b.index, b.begin / KIB16)).collect();
        assert_eq!(idx[0], (3, 1));
        let b = BlockRef {
            index: 3,
            begin: 0,
            length: KIB16,
        };
        assert_eq!(
            p.on_block(2, b),
            BlockOutcome::Accepted {
                piece_complete: false,
                cancel: vec![1]
            }
        );
        p.check();
    }

    /// A new deadline takes back a peer's requests for other pieces, as
    /// many as the deadline pieces have free blocks; they are free again.
    #[test]
    fn make_room_takes_back_other_requests() {
        let n = 10;
        let piece = 2 * KIB16;
        let mut p = picker(n, piece, u64::from(n) * u64::from(piece), 9);
        let got = pick(&mut p, 1, PeerHas::All, 6);
        assert_eq!(got.len(), 6);
        let asked: BTreeSet<u32> = got.iter().map(|b| b.index).collect();
        let urgent = (0..n).find(|i| !asked.contains(i)).unwrap();
        p.set_deadlines(&[urgent]);
        let back = p.make_room(1, PeerHas::All, 100);
        assert_eq!(back.len(), 2, "one piece of two blocks");
        p.check();
        assert_eq!(p.outstanding(1), 4);
        let next = pick(&mut p, 1, PeerHas::All, 2);
        assert!(next.iter().all(|b| b.index == urgent), "{next:?}");
        // Deadline blocks are never taken back; nothing free, nothing to do.
        assert!(p.make_room(1, PeerHas::All, 100).is_empty());
        let none = bits(n as usize, &[]);
        p.set_deadlines(&[(urgent + 1) % n]);
        assert!(p.make_room(1, PeerHas::Some(&none), 100).is_empty());
        p.check();
    }

    /// `--sequential`: new pieces in index order, whatever their rarity,
    /// and a piece that fails its check is picked again first.
    #[test]
    fn sequential_picks_in_index_order() {
        let n = 12;
        let mut p = picker(n, KIB16, u64::from(n) * u64::from(KIB16), 5);
        p.add_bitfield(&bits(n as usize, &[7, 8]));
        p.set_sequential(true);
        let got: Vec<u32> = pick(&mut p, 1, PeerHas::All, 4)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
        let has = bits(n as usize, &[1, 5, 6, 9]);
        let got: Vec<u32> = pick(&mut p, 2, PeerHas::Some(&has), 2)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(got, vec![5, 6]);
        for i in 0..4 {
            let b = BlockRef {
                index: i,
                begin: 0,
                length: KIB16,
            };
            assert!(matches!(p.on_block(1, b), BlockOutcome::Accepted { .. }));
        }
        p.piece_passed(0);
        p.piece_passed(2);
        p.piece_failed(1);
        let got: Vec<u32> = pick(&mut p, 3, PeerHas::All, 2)
            .iter()
            .map(|b| b.index)
            .collect();
        assert_eq!(got, vec![1, 4]);
        p.check();
    }

    #[test]
    fn sizes_short_last_piece_and_block() {
        // 3 pieces of 40000 bytes, last one 20000: blocks 16384,16384,7232 and 16384,3616.
        let p = picker(3, 40000, 100000, 1);
        assert_eq!(p.piece_size(0), 40000);
        assert_eq!(p.piece_size(2), 20000);
        assert_eq!(p.piece_size(3), 0);
        assert_eq!(p.blocks_in_piece(0), 3);
        assert_eq!(p.blocks_in_piece(2), 2);
        let mut p = p;
        let mut all = Vec::new();
        for piece in 0..3 {
            all.extend(pick(&mut p, 1, PeerHas::Some(&bits(3, &[piece])), 10));
        }
        all.sort();
        let lens: Vec<(u32, u32, u32)> = all.iter().map(|b| (b.index, b.begin, b.length)).collect();
        assert_eq!(
            lens,
            vec![
                (0, 0, KIB16),
                (0, KIB16, KIB16),
                (0, 2 * KIB16, 7232),
                (1, 0, KIB16),
                (1, KIB16, KIB16),
                (1, 2 * KIB16, 7232),
                (2, 0, KIB16),
                (2, KIB16, 3616),
            ]
        );
        // A wrong length for the short block is not that block.
        assert_eq!(
            p.on_block(
                1,
                BlockRef {
                    index: 2,
                    begin: KIB16,
                    length: KIB16
                }
            ),
            BlockOutcome::Duplicate
        );
        assert!(matches!(
            p.on_block(
                1,
                BlockRef {
                    index: 2,
                    begin: KIB16,
                    length: 3616
                }
            ),
            BlockOutcome::Accepted {
                piece_complete: false,
                ..
            }
        ));
        assert!(matches!(
            p.on_block(
                1,
                BlockRef {
                    index: 2,
                    begin: 0,
                    length: KIB16
                }
            ),
            BlockOutcome::Accepted {
                piece_complete: true,
                ..
            }
        ));
        p.check();
    }

    #[test]
    fn rarest_first_after_random_phase() {
        // Pieces 0..4 are had, so the random-first phase is over.
        let have = bits(7, &[0, 1, 2, 3]);
        for seed in 0..20 {
            let mut p = Picker::with_seed(7, KIB16, 7 * u64::from(KIB16), &have, seed);
            for (piece, avail) in [(4, 3), (5, 1), (6, 2)] {
                for _ in 0..avail {
                    p.add_have(piece);
                }
            }
            p.add_seed();
            assert_eq!(p.availability(5), 2);
            p.check();
            let order: Vec<u32> = (0..3)
                .map(|_| pick(&mut p, 1, PeerHas::All, 1)[0].index)
                .collect();
            assert_eq!(order, vec![5, 6, 4]);
        }
    }

    #[test]
    fn rarest_first_sparse_peer_path() {
        // 200 free pieces; the peer has only 3, which takes the sparse path.
        let have = bits(204, &[200, 201, 202, 203]);
        let mut p = Picker::with_seed(204, KIB16, 204 * u64::from(KIB16), &have, 3);
        for (piece, avail) in [(10, 3), (20, 1), (30, 2)] {
            for _ in 0..avail {
                p.add_have(piece);
            }
        }
        let peer = bits(204, &[10, 20, 30]);
        let order: Vec<u32> = (0..3)
            .map(|_| pick(&mut p, 1, PeerHas::Some(&peer), 1)[0].index)
            .collect();
        assert_eq!(order, vec![20, 30, 10]);
    }

    #[test]
    fn ties_broken_randomly() {
        let have = bits(104, &[100, 101, 102, 103]);
        let mut firsts = HashSet::new();
        for seed in 0..20 {
            let mut p = Picker::with_seed(104, KIB16, 104 * u64::from(KIB16), &have, seed);
            let order: Vec<u32> = (0..10)
                .map(|_| pick(&mut p, 1, PeerHas::All, 1)[0].index)
                .collect();
            assert_ne!(order, (0..10).collect::<Vec<u32>>());
            firsts.insert(order[0]);
        }
        assert!(firsts.len() > 5, "{firsts:?}");
    }

    #[test]
    fn random_first_phase_ignores_rarity() {
        let mut firsts = HashSet::new();
        for seed in 0..30 {
            let mut p = picker(50, KIB16, 50 * u64::from(KIB16), seed);
            for piece in 1..50 {
                p.add_have(piece);
            }
            // Piece 0 is the rarest, but with nothing had picks are random.
            firsts.insert(pick(&mut p, 1, PeerHas::All, 1)[0].index);
        }
        assert!(firsts.len() > 5, "{firsts:?}");
    }

    #[test]
    fn partial_pieces_preferred_and_contiguous() {
        let mut p = picker(10, 4 * KIB16, 40 * u64::from(KIB16), 7);
        let a = pick(&mut p, 1, PeerHas::All, 2);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].index, a[1].index);
        assert_eq!((a[0].begin, a[1].begin), (0, KIB16));
        // Another peer first gets the rest of that piece, in order.
        let b = pick(&mut p, 2, PeerHas::All, 3);
        assert_eq!(b[0].index, a[0].index);
        assert_eq!(b[1].index, a[0].index);
        assert_eq!((b[0].begin, b[1].begin), (2 * KIB16, 3 * KIB16));
        assert_ne!(b[2].index, a[0].index);
        assert_eq!(b[2].begin, 0);
        // A peer without the partial piece starts something else.
        let other = bits(10, &[(a[0].index as usize + 5) % 10]);
        let c = pick(&mut p, 3, PeerHas::Some(&other), 1);
        assert_eq!(c[0].index as usize, (a[0].index as usize + 5) % 10);
    }

    /// No more pieces in progress than the limit: a peer asking for more
    /// gets only the blocks of the pieces started; blocks given back are
    /// asked again (the limit never stalls a started piece); a verified
    /// piece makes room for the next.
    #[test]
    fn open_limit_bounds_pieces_in_progress() {
        let mut p = picker(10, 4 * KIB16, 40 * u64::from(KIB16), 3);
        p.add_seed();
        p.set_open_limit(2);
        let a = pick(&mut p, 1, PeerHas::All, 100);
        let pieces: HashSet<u32> = a.iter().map(|b| b.index).collect();
        assert_eq!((a.len(), pieces.len()), (8, 2), "{a:?}");
        assert!(pick(&mut p, 2, PeerHas::All, 100).is_empty());
        // Peer 1 leaves: its blocks are free again, for anyone.
        assert_eq!(p.peer_gone(1).len(), 8);
        let b = pick(&mut p, 2, PeerHas::All, 100);
        assert_eq!(b.len(), 8);
        assert!(b.iter().all(|x| pieces.contains(&x.index)));
        // One piece arrives and checks good: one new piece may start.
        let done = b[0].index;
        for x in b.iter().filter(|x| x.index == done) {
            p.on_block(2, *x);
        }
        p.piece_passed(done);
        let c = pick(&mut p, 3, PeerHas::All, 100);
        assert_eq!(c.len(), 4);
        assert!(c.iter().all(|x| !pieces.contains(&x.index)), "{c:?}");
    }

    #[test]
    fn endgame_duplicates_and_cancels() {
        let mut p = picker(2, KIB16 * 2, 4 * u64::from(KIB16), 1);
        p.add_seed();
        let a = pick(&mut p, 1, PeerHas::All, 10);
        assert_eq!(a.len(), 4);
        assert!(p.in_endgame());
        // Peer 1 never gets its own blocks again.
        assert!(pick(&mut p, 1, PeerHas::All, 10).is_empty());
        let b = pick(&mut p, 2, PeerHas::All, 10);
        let c = pick(&mut p, 3, PeerHas::All, 10);
        assert_eq!(b.len(), 4);
        assert_eq!(c.len(), 4);
        // At most 3 requesters per block.
        assert!(pick(&mut p, 4, PeerHas::All, 10).is_empty());
        let blk = a[0];
        match p.on_block(2, blk) {
            BlockOutcome::Accepted {
                cancel,
                piece_complete,
            } => {
                assert!(!piece_complete);
                let mut cancel = cancel;
                cancel.sort();
                assert_eq!(cancel, vec![1, 3]);
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(p.on_block(1, blk), BlockOutcome::Duplicate);
        assert_eq!(p.outstanding(1), 3);
        assert_eq!(p.outstanding(2), 3);
        // Peer 4 can now join the blocks that have only... none: all still have 3.
        // Releasing one requester opens a slot.
        p.release(3, a[1]);
        let d = pick(&mut p, 4, PeerHas::All, 10);
        assert_eq!(d, vec![a[1]]);
        p.check();
    }

    #[test]
    fn endgame_prefers_least_requested_and_ignores_unavailable() {
        let mut p = picker(3, KIB16, 3 * u64::from(KIB16), 1);
        let one = bits(3, &[0, 1]);
        p.add_bitfield(&one);
        p.add_bitfield(&one);
        let a = pick(&mut p, 1, PeerHas::Some(&one), 10);
        assert_eq!(a.len(), 2);
        // Piece 2 is free but nobody has it: still endgame.
        assert!(p.in_endgame());
        let b = pick(&mut p, 2, PeerHas::Some(&one), 1);
        let c = pick(&mut p, 3, PeerHas::Some(&one), 1);
        assert_ne!(
            b, c,
            "second duplicate goes to the block with one requester"
        );
        p.add_have(2);
        assert!(!p.in_endgame());
    }

    #[test]
    fn release_and_peer_gone_return_blocks() {
        let mut p = picker(4, 2 * KIB16, 8 * u64::from(KIB16), 3);
        p.add_seed();
        let a = pick(&mut p, 1, PeerHas::All, 3);
        assert_eq!(p.outstanding(1), 3);
        p.release(1, a[0]);
        assert_eq!(p.outstanding(1), 2);
        // The released block is handed out again.
        let only = bits(4, &[a[0].index as usize]);
        let b = pick(&mut p, 2, PeerHas::Some(&only), 1);
        assert_eq!(b, vec![a[0]]);
        // Releasing something not requested is a no-op.
        p.release(1, a[0]);
        p.release(7, a[1]);
        assert_eq!(p.outstanding(1), 2);
        let mut gone = p.peer_gone(1);
        gone.sort();
        let mut expect = a[1..].to_vec();
        expect.sort();
        assert_eq!(gone, expect);
        assert_eq!(p.outstanding(1), 0);
        assert!(p.peer_gone(1).is_empty());
        let c = pick(&mut p, 3, PeerHas::All, 10);
        assert!(expect.iter().all(|b| c.contains(b)), "{c:?}");
        // A released block may still arrive from its old peer and is accepted.
        p.release(3, c[0]);
        assert!(matches!(p.on_block(1, c[0]), BlockOutcome::Accepted { .. }));
        p.check();
    }

    #[test]
    fn piece_failed_reenters_pool_and_passed_completes() {
        let mut p = picker(5, 2 * KIB16, 9 * u64::from(KIB16), 5);
        let peer = bits(5, &[4]);
        p.add_bitfield(&peer);
        let blocks = pick(&mut p, 1, PeerHas::Some(&peer), 10);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].length, KIB16);
        assert_eq!(
            p.on_block(2, blocks[0]),
            BlockOutcome::Accepted {
                piece_complete: true,
                cancel: vec![1]
            }
        );
        assert_eq!(p.contributors(4), vec![2]);
        assert_eq!(p.outstanding(1), 0);
        p.piece_failed(4);
        p.check();
        assert_eq!(p.on_block(2, blocks[0]), BlockOutcome::Duplicate);
        assert_eq!(pick(&mut p, 3, PeerHas::Some(&peer), 10), blocks);
        assert!(matches!(
            p.on_block(3, blocks[0]),
            BlockOutcome::Accepted {
                piece_complete: true,
                ..
            }
        ));
        p.piece_passed(4);
        p.check();
        assert!(p.have().get(4));
        assert_eq!(p.on_block(3, blocks[0]), BlockOutcome::Duplicate);
        assert!(pick(&mut p, 3, PeerHas::Some(&peer), 10).is_empty());
        assert!(!p.interesting(PeerHas::Some(&peer)));
        // A re-check can fail a piece we had.
        p.piece_failed(4);
        assert!(!p.have().get(4));
        assert!(p.interesting(PeerHas::Some(&peer)));
        p.check();
        for i in 0..5 {
            p.piece_passed(i);
        }
        assert!(p.is_complete());
        assert!(!p.in_endgame());
        p.check();
    }

    #[test]
    fn interesting() {
        let have = bits(10, &[1, 2]);
        let p = Picker::with_seed(10, KIB16, 10 * u64::from(KIB16), &have, 0);
        assert!(p.interesting(PeerHas::All));
        assert!(!p.interesting(PeerHas::Some(&bits(10, &[1]))));
        assert!(!p.interesting(PeerHas::Some(&bits(10, &[]))));
        assert!(p.interesting(PeerHas::Some(&bits(10, &[2, 3]))));
        // Wrong-length bitfields don't panic; bits past the end are ignored.
        assert!(!p.interesting(PeerHas::Some(&bits(20, &[1, 15]))));
        assert!(p.interesting(PeerHas::Some(&bits(4, &[3]))));
        let full = Picker::with_seed(10, KIB16, 10 * u64::from(KIB16), &Bitfield::full(10), 0);
        assert!(full.is_complete());
        assert!(!full.interesting(PeerHas::All));
    }

    #[test]
    fn bad_input_never_panics() {
        let mut p = picker(3, 40000, 100000, 1);
        let bad = [
            BlockRef {
                index: 3,
                begin: 0,
                length: KIB16,
            },
            BlockRef {
                index: u32::MAX,
                begin: u32::MAX,
                length: u32::MAX,
            },
            BlockRef {
                index: 0,
                begin: 1,
                length: KIB16,
            },
            BlockRef {
                index: 0,
                begin: 3 * KIB16,
                length: KIB16,
            },
            BlockRef {
                index: 0,
                begin: 0,
                length: 0,
            },
        ];
        for b in bad {
            assert_eq!(p.on_block(1, b), BlockOutcome::Duplicate);
            p.release(1, b);
        }
        p.add_have(u32::MAX);
        p.remove_have(u32::MAX);
        p.remove_have(0);
        p.remove_seed();
        p.piece_passed(u32::MAX);
        p.piece_failed(u32::MAX);
        p.add_bitfield(&Bitfield::full(100));
        p.remove_bitfield(&Bitfield::full(100));
        p.remove_bitfield(&Bitfield::full(100));
        assert_eq!(p.availability(u32::MAX), 0);
        assert_eq!(p.availability(0), 0);
        pick(&mut p, 1, PeerHas::Some(&Bitfield::full(1)), usize::MAX);
        // A huge `max` on the sparse-peer and the walking paths, in both phases.
        for had in [0, 8] {
            let have: Vec<usize> = (0..had).collect();
            let mut p =
                Picker::with_seed(1000, KIB16, 1000 * u64::from(KIB16), &bits(1000, &have), 1);
            let got = pick(&mut p, 1, PeerHas::Some(&bits(1000, &[500])), usize::MAX);
            assert_eq!(got.len(), 1);
            let got = pick(&mut p, 2, PeerHas::All, usize::MAX);
            assert_eq!(got.len(), 1000 - had);
        }
        // Degenerate geometry.
        for (n, len, total) in [(0, 0, 0), (4, 0, 0), (4, KIB16, 0), (2, u32::MAX, u64::MAX)] {
            let mut p = picker(n, len, total, 1);
            let got = pick(&mut p, 1, PeerHas::All, 8);
            for b in got {
                p.on_block(1, b);
            }
            p.check();
        }
        // Count saturation.
        let mut p = picker(1, KIB16, u64::from(KIB16), 1);
        for _ in 0..70000 {
            p.add_have(0);
        }
        assert_eq!(p.availability(0), u32::from(u16::MAX));
        p.check();
    }

    #[derive(Clone, Debug)]
    enum Op {
        AddHave(u32),
        RemoveHave(u32),
        AddBitfield(Vec<u32>),
        Seed(bool),
        Pick {
            peer: u64,
            all: bool,
            max: usize,
        },
        Deliver {
            peer: u64,
            which: usize,
        },
        Junk {
            peer: u64,
            index: u32,
            begin: u32,
            length: u32,
        },
        Release {
            peer: u64,
            which: usize,
        },
        Gone(u64),
        Verify {
            which: usize,
            ok: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..12).prop_map(Op::AddHave),
            (0u32..12).prop_map(Op::RemoveHave),
            proptest::collection::vec(0u32..14, 0..8).prop_map(Op::AddBitfield),
            any::<bool>().prop_map(Op::Seed),
            (0u64..4, any::<bool>(), 0usize..6).prop_map(|(peer, all, max)| Op::Pick {
                peer,
                all,
                max
            }),
            (0u64..4, any::<usize>()).prop_map(|(peer, which)| Op::Deliver { peer, which }),
            (0u64..4, 0u32..14, 0u32..70000, 0u32..20000).prop_map(
                |(peer, index, begin, length)| Op::Junk {
                    peer,
                    index,
                    begin,
                    length
                }
            ),
            (0u64..4, any::<usize>()).prop_map(|(peer, which)| Op::Release { peer, which }),
            (0u64..4).prop_map(Op::Gone),
            (any::<usize>(), any::<bool>()).prop_map(|(which, ok)| Op::Verify { which, ok }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_operations_keep_invariants(
            piece_len in 1u32..70000,
            tail in 0u64..70000,
            have in proptest::collection::vec(0usize..12, 0..5),
            seed: u64,
            ops in proptest::collection::vec(op(), 1..150),
        ) {
            let pieces = 12u32;
            let total = (u64::from(piece_len) * 11 + tail % u64::from(piece_len)).max(1);
            let mut p = Picker::with_seed(pieces, piece_len, total, &bits(12, &have), seed);
            let peer_bits = bits(12, &[0, 2, 3, 5, 7, 11]);
            // Our model of what each peer has outstanding.
            let mut asked: HashMap<u64, BTreeSet<BlockRef>> = HashMap::new();
            let mut complete: Vec<u32> = Vec::new();
            for op in ops {
                match op {
                    Op::AddHave(i) => p.add_have(i),
                    Op::RemoveHave(i) => p.remove_have(i),
                    Op::AddBitfield(v) => {
                        let b = bits(14, &v.iter().map(|&x| x as usize).collect::<Vec<_>>());
                        p.add_bitfield(&b);
                    }
                    Op::Seed(true) => p.add_seed(),
                    Op::Seed(false) => p.remove_seed(),
                    Op::Pick { peer, all, max } => {
                        let has = if all { PeerHas::All } else { PeerHas::Some(&peer_bits) };
                        let mut out = Vec::new();
                        p.pick(peer, has, max, &mut out);
                        prop_assert!(out.len() <= max);
                        let mine = asked.entry(peer).or_default();
                        for b in out {
                            prop_assert!(has.get(b.index));
                            prop_assert!(!p.have().get(b.index as usize));
                            prop_assert!(mine.insert(b), "block {:?} handed twice to {}", b, peer);
                        }
                    }
                    Op::Deliver { peer, which } => {
                        let mine: Vec<BlockRef> = asked.get(&peer).map(|s| s.iter().copied().collect()).unwrap_or_default();
                        if !mine.is_empty() {
                            let b = mine[which % mine.len()];
                            if let BlockOutcome::Accepted { piece_complete, cancel } = p.on_block(peer, b) {
                                if piece_complete {
                                    complete.push(b.index);
                                }
                                for q in cancel {
                                    prop_assert!(q != peer);
                                    prop_assert!(asked.get_mut(&q).is_some_and(|s| s.remove(&b)));
                                }
                            }
                            asked.get_mut(&peer).map(|s| s.remove(&b));
                        }
                    }
                    Op::Junk { peer, index, begin, length } => {
                        let b = BlockRef { index, begin, length };
                        if let BlockOutcome::Accepted { piece_complete: true, .. } = p.on_block(peer, b) {
                            complete.push(index);
                        }
                        // Whatever the peer had outstanding for it is settled now.
                        for s in asked.values_mut() {
                            s.remove(&b);
                        }
                    }
                    Op::Release { peer, which } => {
                        let mine: Vec<BlockRef> = asked.get(&peer).map(|s| s.iter().copied().collect()).unwrap_or_default();
                        if !mine.is_empty() {
                            let b = mine[which % mine.len()];
                            p.release(peer, b);
                            asked.get_mut(&peer).map(|s| s.remove(&b));
                        }
                    }
                    Op::Gone(peer) => {
                        let mut got = p.peer_gone(peer);
                        got.sort();
                        let want: Vec<BlockRef> = asked.remove(&peer).map(|s| s.into_iter().collect()).unwrap_or_default();
                        prop_assert_eq!(got, want);
                    }
                    Op::Verify { which, ok } => {
                        if !complete.is_empty() {
                            let piece = complete.swap_remove(which % complete.len());
                            if ok { p.piece_passed(piece) } else { p.piece_failed(piece) }
                        } else if ok {
                            p.piece_passed((which % 14) as u32);
                        } else {
                            p.piece_failed((which % 14) as u32);
                        }
                        // Requests for a dropped piece are forgotten by the picker.
                        for s in asked.values_mut() {
                            s.retain(|b| p.partial.contains_key(&b.index));
                        }
                    }
                }
                p.check();
                for (peer, s) in &asked {
                    prop_assert_eq!(p.outstanding(*peer), s.len());
                }
            }
        }

        #[test]
        fn one_seed_serves_everything(
            pieces in 1u32..40,
            piece_len in 1u32..100_000,
            tail in 0u64..100_000,
            seed: u64,
            steps in proptest::collection::vec((1usize..20, 0u8..10), 1..50),
        ) {
            let total = u64::from(piece_len) * u64::from(pieces - 1) + 1 + tail % u64::from(piece_len);
            let mut p = Picker::with_seed(pieces, piece_len, total, &Bitfield::new(pieces as usize), seed);
            p.add_seed();
            let mut received: HashSet<BlockRef> = HashSet::new();
            let mut bytes = 0u64;
            let mut rounds = 0;
            let mut failed_once = HashSet::new();
            while !p.is_complete() {
                rounds += 1;
                prop_assert!(rounds < 100_000, "no progress");
                let (max, action) = steps[rounds % steps.len()];
                let mut out = Vec::new();
                p.pick(1, PeerHas::All, max, &mut out);
                prop_assert!(!out.is_empty(), "stalled with {:?}", p);
                let n = out.len();
                for (i, b) in out.into_iter().enumerate() {
                    // Sometimes time a request out instead of answering it
                    // (never all of them, so the download progresses).
                    if action == 0 && i == 0 && n > 1 {
                        p.release(1, b);
                        continue;
                    }
                    if let BlockOutcome::Accepted { piece_complete, .. } = p.on_block(1, b) {
                        prop_assert!(received.insert(b) || failed_once.contains(&b.index));
                        bytes += u64::from(b.length);
                        if piece_complete {
                            // Fail each piece's hash once when the step says so.
                            if action == 1 && failed_once.insert(b.index) {
                                p.piece_failed(b.index);
                            } else {
                                p.piece_passed(b.index);
                            }
                        }
                    }
                }
                p.check();
            }
            let expect: u64 = failed_once.iter().map(|&i| u64::from(p.piece_size(i))).sum::<u64>() + total;
            prop_assert_eq!(bytes, expect);
            let all: usize = (0..pieces).map(|i| p.blocks_in_piece(i) as usize).sum();
            prop_assert_eq!(received.len(), all);
        }
    }

    #[test]
    fn large_swarm_full_download() {
        let pieces = 100_000u32;
        let mut p = Picker::with_seed(
            pieces,
            KIB16 * 2,
            u64::from(pieces) * u64::from(KIB16) * 2 - 100,
            &Bitfield::new(pieces as usize),
            9,
        );
        // xorshift: the test runs unoptimised, where StdRng is slow.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let peers: Vec<Bitfield> = (0..200)
            .map(|i| {
                // Densities from 3 % to 75 %, built 64 bits at a time.
                let shape = i % 6;
                let mut bytes = Vec::with_capacity(pieces as usize / 8);
                for _ in 0..pieces / 64 {
                    let (a, b) = (next(), next());
                    let w = match shape {
                        0 => a & b & next() & next() & next(),
                        1 => a & b & next() & next(),
                        2 => a & b & next(),
                        3 => a & b,
                        4 => a,
                        _ => a | b,
                    };
                    bytes.extend_from_slice(&w.to_be_bytes());
                }
                bytes.resize(pieces as usize / 8, 0);
                let mut b = Bitfield::from_wire(&bytes, pieces as usize).unwrap();
                for piece in (i..pieces as usize).step_by(200) {
                    b.set(piece);
                }
                b
            })
            .collect();
        for b in &peers {
            p.add_bitfield(b);
        }
        p.add_seed();
        let mut out = Vec::new();
        let mut delivered = 0u64;
        let mut round = 0u64;
        while !p.is_complete() {
            round += 1;
            assert!(round < 10_000_000);
            let k = (round % 201) as usize;
            let has = peers.get(k).map_or(PeerHas::All, PeerHas::Some);
            out.clear();
            p.pick(k as u64, has, 32, &mut out);
            for b in &out {
                if let BlockOutcome::Accepted { piece_complete, .. } = p.on_block(k as u64, *b) {
                    delivered += u64::from(b.length);
                    if piece_complete {
                        p.piece_passed(b.index);
                    }
                }
            }
        }
        assert_eq!(delivered, u64::from(pieces) * u64::from(KIB16) * 2 - 100);
        // Dropping every peer leaves availability at zero.
        for b in &peers {
            p.remove_bitfield(b);
        }
        p.remove_seed();
        assert!((0..pieces).all(|i| p.availability(i) == 0));
        p.check();
    }

    #[test]
    fn memory_is_small_for_a_million_pieces() {
        let n = 1_000_000u32;
        let p = Picker::with_seed(
            n,
            KIB16,
            u64::from(n) * u64::from(KIB16),
            &Bitfield::new(n as usize),
            0,
        );
        let bytes = p.order.capacity() * 4
            + p.pos.capacity() * 4
            + p.counts.capacity() * 2
            + p.have.as_bytes().len();
        assert!(bytes < 12 << 20, "{bytes}");
    }
}
