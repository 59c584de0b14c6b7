//! Blame and repair of pieces that failed their hash check.
//!
//! A piece from one source names it: banned. A piece from several makes
//! them suspects, with a strike each; the good copy, once fetched, shows
//! which block differed and bans its sender, and too many strikes ban
//! too. A v2 piece is not thrown away: a peer that sent none of it is
//! asked for the piece's leaf hashes, which prove which blocks are bad
//! (`torrent::leaves`), and only those are fetched again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::bitfield::Bitfield;
use crate::metainfo::merkle;
use crate::peer::wire::HashRequest;
use crate::peer::{PeerCmd, PeerKey};
use crate::torrent::leaves;

use super::assembly::PieceBuf;
use super::sources::Sender;
use super::Core;

/// Hash failures a source may be involved in before we stop trusting it,
/// when the smart check could not single it out.
const MAX_STRIKES: u32 = 5;
/// Failed v2 pieces held at once (each keeps its buffer) while their leaf
/// hashes are asked for; past this, a failed piece is fetched again whole.
const MAX_LEAF_CHECKS: usize = 16;

/// A source that sent a block of a failed piece, and what it sent.
pub(super) struct Suspect {
    key: PeerKey,
    sender: Sender,
    block: usize,
    hash: [u8; 20],
}

/// A failed v2 piece held with its data while its leaf hashes are asked
/// for; and the SHA-1 of each block, for the whole-piece fallback.
struct LeafCheck {
    pending: leaves::Pending,
    buf: PieceBuf,
    block_hashes: Vec<[u8; 20]>,
}

#[derive(Default)]
pub(super) struct Repair {
    /// Pieces fetched again after a failure, with the blocks of the bad
    /// copy: the good copy names who sent a differing block.
    pub(super) suspects: HashMap<u32, Vec<Suspect>>,
    leaf_checks: BTreeMap<u32, LeafCheck>,
}

impl Core {
    /// A piece passed after failing before: blocks that differ from the
    /// good copy name who sent bad data.
    pub(super) fn judge_suspects(&mut self, piece: u32, block_hashes: &[[u8; 20]]) {
        let Some(list) = self.repair.suspects.remove(&piece) else {
            return;
        };
        for s in list {
            if block_hashes.get(s.block) != Some(&s.hash) {
                self.ban(s.key, s.sender, "sent corrupt data");
            }
        }
    }

    /// After a piece failed and was put back whole: a single sender is
    /// banned; several become suspects, named when a good copy shows
    /// which block differed.
    pub(super) fn blame_failed(
        &mut self,
        piece: u32,
        senders: &[PeerKey],
        block_hashes: &[[u8; 20]],
    ) {
        let distinct: BTreeSet<PeerKey> = senders.iter().copied().collect();
        if let (1, Some(&k)) = (distinct.len(), distinct.first()) {
            self.ban_sender(k, "sent corrupt data");
            return;
        }
        let mut list = Vec::new();
        for (block, &key) in senders.iter().enumerate() {
            let Some(s) = self.sources.get_mut(key) else {
                continue;
            };
            s.strikes += 1;
            list.push(Suspect {
                key,
                sender: s.sender(),
                block,
                hash: block_hashes.get(block).copied().unwrap_or([0; 20]),
            });
        }
        let struck: Vec<PeerKey> = self
            .sources
            .iter()
            .filter(|(_, s)| s.strikes >= MAX_STRIKES)
            .map(|(k, _)| k)
            .collect();
        for k in struck {
            self.ban_sender(k, "involved in too many hash failures");
        }
        self.repair.suspects.insert(piece, list);
    }

    /// A strike for a peer that sent hashes (`what`) that do not check out.
    pub(super) fn strike(&mut self, key: PeerKey, what: &str) {
        let Some(s) = self.sources.get_mut(key) else {
            return;
        };
        s.strikes += 1;
        if let Some(p) = s.as_peer() {
            tracing::warn!("{}: sent {what}", p.addr);
        }
    }

    /// Bans whoever sent blocks under `key`: a connected peer or a web seed.
    pub(super) fn ban_sender(&mut self, key: PeerKey, why: &str) {
        if let Some(sender) = self.sources.get(key).map(|s| s.sender()) {
            self.ban(key, sender, why);
        }
    }

    /// Bans a peer by address and id (also after it left), or stops using
    /// a web seed for the rest of the run.
    fn ban(&mut self, key: PeerKey, sender: Sender, why: &str) {
        match sender {
            Sender::Peer { addr, id } => {
                if !self.dialer.ban(addr, id) {
                    return;
                }
                self.progress.banned += 1;
                tracing::warn!("banning peer {addr}: {why}");
                if self.sources.peer(key).is_some() {
                    self.send(key, PeerCmd::Close(format!("banned: {why}")));
                }
            }
            Sender::Web => {
                if let Some(url) = self.drop_web_seed(key, why) {
                    self.progress.banned += 1;
                    tracing::warn!("banning web seed {url}: {why}");
                    self.web_failure = Some((url, why.to_string(), None));
                }
            }
        }
    }

    /// A v2 piece failed: keeps its data and asks a peer for its leaf
    /// hashes, which name the bad blocks. Hands the piece back when that
    /// cannot be done (no plan for it, a left-out piece, too many held).
    pub(super) fn start_leaf_check(
        &mut self,
        piece: u32,
        buf: PieceBuf,
        block_hashes: Vec<[u8; 20]>,
        ours: Vec<merkle::Hash>,
        pad_bad: Vec<usize>,
    ) -> Result<(), (PieceBuf, Vec<[u8; 20]>)> {
        let checks = &self.repair.leaf_checks;
        let plan = self
            .meta
            .v2
            .as_ref()
            .and_then(|v2| leaves::plan(v2, piece))
            .filter(|_| {
                self.picker.wants(piece)
                    && !checks.contains_key(&piece)
                    && checks.len() < MAX_LEAF_CHECKS
            });
        let Some(plan) = plan else {
            return Err((buf, block_hashes));
        };
        self.picker.piece_failed(piece);
        let mut one = Bitfield::new(self.meta.piece_count() as usize);
        one.set(piece as usize);
        self.picker.hold(&one);
        let pending =
            leaves::Pending::new(plan.req, plan.expected, ours, pad_bad, buf.senders.clone());
        let alone = (!plan.ask).then(|| pending.judge_alone());
        let check = LeafCheck {
            pending,
            buf,
            block_hashes,
        };
        self.repair.leaf_checks.insert(piece, check);
        match alone {
            Some(verdict) => self.on_leaf_verdict(piece, verdict),
            None => {
                tracing::warn!("piece {piece} failed its hash check; asking for its leaf hashes");
                self.ask_leaves(piece);
            }
        }
        Ok(())
    }

    /// Asks a peer that has the piece for its leaf hashes, or gives up on
    /// them when nobody is left to ask.
    fn ask_leaves(&mut self, piece: u32) {
        let keys: Vec<PeerKey> = self
            .sources
            .peers()
            .filter(|(_, p)| p.hashes_ok && (p.seed || p.bits.get(piece as usize)))
            .map(|(k, _)| k)
            .collect();
        let Some(c) = self.repair.leaf_checks.get_mut(&piece) else {
            return;
        };
        let Some(k) = c.pending.choose(keys) else {
            return self.leaf_fallback(piece, "no peer to ask for its leaf hashes");
        };
        c.pending.asked(k, self.now);
        let req = c.pending.req;
        if let Some(p) = self.sources.peer(k) {
            tracing::debug!("{}: asking for the leaf hashes of piece {piece}", p.addr);
            self.send(k, PeerCmd::HashRequest(req));
        }
    }

    /// The leaf hashes cannot be had or do not explain the failure: the
    /// piece is fetched again whole, as for a v1 piece.
    fn leaf_fallback(&mut self, piece: u32, why: &str) {
        let Some(c) = self.repair.leaf_checks.remove(&piece) else {
            return;
        };
        tracing::warn!("piece {piece}: {why}; fetching it again whole");
        self.picker.release_held(piece..piece + 1);
        self.blame_failed(piece, &c.buf.senders, &c.block_hashes);
        self.assembly.recycle(c.buf.data, self.open_limit());
        self.fill_all();
    }

    pub(super) fn is_leaf_request(&self, req: &HashRequest) -> bool {
        self.repair
            .leaf_checks
            .values()
            .any(|c| c.pending.req == *req)
    }

    /// A leaf-hash answer (base layer 0) to one of our failed pieces;
    /// false when `req` is not one (with 16 KiB pieces base layer 0 is
    /// also the piece layer a magnet's download asks for).
    pub(super) fn on_leaf_hashes(
        &mut self,
        key: PeerKey,
        req: HashRequest,
        got: &[merkle::Hash],
    ) -> bool {
        let Some((&piece, c)) = self
            .repair
            .leaf_checks
            .iter_mut()
            .find(|(_, c)| c.pending.req == req)
        else {
            return false;
        };
        let verdict = c.pending.on_answer(key, got);
        if verdict == leaves::Verdict::Lie {
            let what = format!("leaf hashes of piece {piece} that do not lead to its hash");
            self.strike(key, &what);
            self.ask_leaves(piece);
            return true;
        }
        self.on_leaf_verdict(piece, verdict);
        true
    }

    /// The peer asked for a piece's leaves refused or left: someone else
    /// is asked.
    pub(super) fn leaf_refused(&mut self, key: PeerKey, req: Option<HashRequest>) {
        let pieces: Vec<u32> = self
            .repair
            .leaf_checks
            .iter()
            .filter(|(_, c)| {
                c.pending.asked_peer() == Some(key) && req.is_none_or(|r| r == c.pending.req)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in pieces {
            if let Some(c) = self.repair.leaf_checks.get_mut(&p) {
                c.pending.refused(key);
            }
            self.ask_leaves(p);
        }
    }

    /// Proven leaves named the bad blocks: their senders are banned (the
    /// proof is cryptographic, one failure is enough), the good blocks
    /// are kept and only the bad ones asked for again.
    fn on_leaf_verdict(&mut self, piece: u32, verdict: leaves::Verdict) {
        let bad = match verdict {
            leaves::Verdict::Bad(bad) => bad,
            leaves::Verdict::Lie | leaves::Verdict::Unexplained => {
                return self.leaf_fallback(piece, "its leaf hashes do not show a bad block");
            }
        };
        let Some(c) = self.repair.leaf_checks.remove(&piece) else {
            return;
        };
        let kept: Vec<Option<PeerKey>> = c
            .buf
            .senders
            .iter()
            .enumerate()
            .map(|(i, k)| (!bad.contains(&i)).then_some(*k))
            .collect();
        let culprits: BTreeSet<PeerKey> = bad
            .iter()
            .filter_map(|i| c.buf.senders.get(*i).copied())
            .collect();
        tracing::warn!(
            "piece {piece}: leaf hashes show {} bad block(s) of {}; fetching only those",
            bad.len(),
            kept.len()
        );
        for k in culprits {
            self.ban_sender(k, "sent a block its leaf hash proves corrupt");
        }
        if self.picker.resume(piece, &kept) {
            self.assembly.resume(piece, c.buf);
        } else {
            self.picker.release_held(piece..piece + 1);
            self.assembly.recycle(c.buf.data, self.open_limit());
        }
        self.fill_all();
    }

    /// Leaf requests unanswered for [`leaves::TIMEOUT`]: the pieces are
    /// fetched again whole.
    pub(super) fn expire_leaf_checks(&mut self) {
        let now = self.now;
        let late: Vec<u32> = self
            .repair
            .leaf_checks
            .iter()
            .filter(|(_, c)| c.pending.expired(now))
            .map(|(p, _)| *p)
            .collect();
        for p in late {
            self.leaf_fallback(p, "no answer to the request for its leaf hashes");
        }
    }

    /// Pieces held for their leaf hashes (for tests).
    #[cfg(test)]
    pub(super) fn leaf_checks(&self) -> usize {
        self.repair.leaf_checks.len()
    }
}
