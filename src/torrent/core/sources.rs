//! One table of block sources: BitTorrent peers and web seeds alike.
//!
//! Both get blocks from the picker, deliver them to the same assembly
//! and hash check, are struck or banned for bad data the same way, and
//! have a rate and a queue depth. What differs is kept in their [`Kind`]:
//! a peer chokes, has pieces, takes part in PEX and choking; a web seed
//! has every piece, never chokes, and backs off after a failed request.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::peer::{PeerCmd, PeerKey};
use crate::torrent::picker::{PeerHas, BLOCK_LEN};
use crate::torrent::status::PeerSource;
use crate::torrent::webseed;

use super::rate::Rate;
use super::{Action, Core};

/// Requests kept in flight to one peer at first; grows with its rate.
pub(super) const MIN_QUEUE: usize = 32;
pub(super) const MAX_QUEUE: usize = 500;
/// Assumed `reqq` of peers that do not advertise one. aria2 (which does not)
/// serves a 1 GiB torrent ~10 % faster with 500 in flight than with 250,
/// and queues them all.
pub(super) const DEFAULT_REQQ: usize = 500;
/// Seconds of data we keep requested from a peer: its bandwidth-delay product
/// with room for jitter.
const QUEUE_SECONDS: u64 = 1;
/// No block for this long while requests are out: a peer is snubbing us,
/// a web seed has stalled.
pub(super) const SNUB_AFTER: Duration = Duration::from_secs(30);

/// Blocks kept requested from a web seed: at least a full run for each of
/// its connections, more as its rate grows (two seconds of data).
pub(super) const WEB_MIN_QUEUE: usize =
    webseed::CONNECTIONS * (webseed::RUN_BYTES / BLOCK_LEN as u64) as usize + 64;
const WEB_MAX_QUEUE: usize = 1024;
const WEB_QUEUE_SECONDS: u64 = 2;

/// A source of blocks.
pub(super) struct Source {
    pub(super) kind: Kind,
    pub(super) down: Rate,
    /// Requests kept in flight to it.
    pub(super) depth: usize,
    /// When a block last came (for a web seed also: when requests were
    /// sent after none were out).
    pub(super) last_block: Instant,
    /// Hash failures it was involved in without being singled out.
    pub(super) strikes: u32,
    /// Payload bytes from it and to it, as last counted
    /// ([`super::Input::Traffic`]).
    pub(super) downloaded: u64,
    pub(super) uploaded: u64,
}

pub(super) enum Kind {
    Peer(Box<Peer>),
    Web(Web),
}

/// A connected BitTorrent peer.
pub(super) struct Peer {
    pub(super) addr: SocketAddr,
    pub(super) peer_id: [u8; 20],
    pub(super) bits: Bitfield,
    pub(super) seed: bool,
    pub(super) am_interested: bool,
    pub(super) peer_interested: bool,
    pub(super) peer_choking: bool,
    pub(super) am_choking: bool,
    pub(super) reqq: usize,
    pub(super) snubbed: bool,
    pub(super) up: Rate,
    /// It speaks v2 (its handshake set the BEP 52 bit, or the swarm is
    /// v2-only) and has not answered a hash request with hashes that do
    /// not lead to the root: it may be asked for piece layers.
    pub(super) hashes_ok: bool,
    /// Where others can reach it: the address we dialled, or for incoming
    /// peers their address with the listen port their handshake gave.
    pub(super) listen: Option<SocketAddr>,
    /// Peer exchange: it takes part, what it was told, and when.
    pub(super) pex: bool,
    pub(super) pex_sent: HashSet<SocketAddr>,
    pub(super) pex_at: Option<Instant>,
    /// It speaks `ut_holepunch` (and so do we); what it may still send.
    pub(super) holepunch: bool,
    pub(super) hp_budget: crate::torrent::holepunch::Budget,
    /// What its connection runs over.
    pub(super) transport: crate::peer::transport::Transport,
    pub(super) source: PeerSource,
    pub(super) connected_at: Instant,
}

/// A web seed (BEP 19); its task fetches the blocks it is given.
pub(super) struct Web {
    pub(super) url: String,
    /// Failed requests in a row (reset by a block); while backing off,
    /// when to ask again.
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    /// Counted by the picker as a source of every piece.
    pub(super) counted: bool,
    /// It ignores `Range` and is read whole: any byte it sends shows it
    /// is alive, a block or not (it may be reading past pieces we have).
    pub(super) whole_files: bool,
    /// Its byte count at the last second's look.
    pub(super) seen_bytes: u64,
}

/// Who sent a block, kept with a failed piece so a ban reaches it even
/// after it left.
#[derive(Clone, Copy, Debug)]
pub(super) enum Sender {
    Peer { addr: SocketAddr, id: [u8; 20] },
    Web,
}

/// What a second's look at a source found.
pub(super) enum Second {
    Fine,
    /// A peer sent nothing for [`SNUB_AFTER`] with requests out.
    Snubbing,
    /// A web seed sent nothing for [`SNUB_AFTER`] with requests out.
    Stalled,
    /// A web seed's back-off is over.
    Retry,
}

impl Source {
    pub(super) fn peer(p: Peer, now: Instant) -> Source {
        Source::new(Kind::Peer(Box::new(p)), MIN_QUEUE, now)
    }

    pub(super) fn web(url: String, now: Instant) -> Source {
        let web = Web {
            url,
            failures: 0,
            retry_at: None,
            counted: true,
            whole_files: false,
            seen_bytes: 0,
        };
        Source::new(Kind::Web(web), WEB_MIN_QUEUE, now)
    }

    fn new(kind: Kind, depth: usize, now: Instant) -> Source {
        Source {
            kind,
            down: Rate::new(),
            depth,
            last_block: now,
            strikes: 0,
            downloaded: 0,
            uploaded: 0,
        }
    }

    pub(super) fn as_peer(&self) -> Option<&Peer> {
        match &self.kind {
            Kind::Peer(p) => Some(p),
            Kind::Web(_) => None,
        }
    }

    pub(super) fn as_peer_mut(&mut self) -> Option<&mut Peer> {
        match &mut self.kind {
            Kind::Peer(p) => Some(p),
            Kind::Web(_) => None,
        }
    }

    pub(super) fn as_web(&self) -> Option<&Web> {
        match &self.kind {
            Kind::Web(w) => Some(w),
            Kind::Peer(_) => None,
        }
    }

    pub(super) fn as_web_mut(&mut self) -> Option<&mut Web> {
        match &mut self.kind {
            Kind::Web(w) => Some(w),
            Kind::Peer(_) => None,
        }
    }

    /// The pieces it can give: a web seed has them all.
    pub(super) fn has(&self) -> PeerHas<'_> {
        match &self.kind {
            Kind::Peer(p) => p.has(),
            Kind::Web(_) => PeerHas::All,
        }
    }

    /// Requests it may have in flight now: none while a peer chokes us or
    /// has nothing we want, or while a web seed backs off; one while a
    /// peer snubs us.
    fn request_depth(&self) -> usize {
        match &self.kind {
            Kind::Peer(p) if p.peer_choking || !p.am_interested => 0,
            Kind::Peer(p) if p.snubbed => 1,
            Kind::Peer(p) => self.depth.min(p.reqq),
            Kind::Web(w) if !w.active() => 0,
            Kind::Web(_) => self.depth,
        }
    }

    /// Who it is, for blame that may come after it left.
    pub(super) fn sender(&self) -> Sender {
        match &self.kind {
            Kind::Peer(p) => Sender::Peer {
                addr: p.addr,
                id: p.peer_id,
            },
            Kind::Web(_) => Sender::Web,
        }
    }

    /// Once a second: its rates and queue depth from its counters; and
    /// whether it went quiet with `outstanding` requests out, or may be
    /// asked again.
    fn second(&mut self, secs: f64, now: Instant, outstanding: usize) -> Second {
        self.down.update(self.downloaded, secs);
        if let Kind::Web(w) = &mut self.kind {
            if w.whole_files && self.downloaded != w.seen_bytes {
                self.last_block = now;
            }
            w.seen_bytes = self.downloaded;
        }
        let quiet = outstanding > 0 && now.duration_since(self.last_block) > SNUB_AFTER;
        match &mut self.kind {
            Kind::Peer(p) => {
                p.up.update(self.uploaded, secs);
                let bdp = (self.down.get() * QUEUE_SECONDS / BLOCK_LEN as u64) as usize;
                self.depth = bdp.clamp(MIN_QUEUE, MAX_QUEUE).min(p.reqq);
                if !p.snubbed && quiet {
                    p.snubbed = true;
                    return Second::Snubbing;
                }
                Second::Fine
            }
            Kind::Web(w) => {
                let bdp = (self.down.get() * WEB_QUEUE_SECONDS / BLOCK_LEN as u64) as usize;
                self.depth = bdp.clamp(WEB_MIN_QUEUE, WEB_MAX_QUEUE);
                match w.retry_at {
                    Some(t) if t <= now => Second::Retry,
                    None if quiet => Second::Stalled,
                    _ => Second::Fine,
                }
            }
        }
    }
}

impl Peer {
    pub(super) fn has(&self) -> PeerHas<'_> {
        if self.seed {
            PeerHas::All
        } else {
            PeerHas::Some(&self.bits)
        }
    }
}

impl Web {
    /// Not backing off.
    pub(super) fn active(&self) -> bool {
        self.retry_at.is_none()
    }
}

/// The sources by key, in key order (so the core's choices do not depend
/// on a hash map's order).
#[derive(Default)]
pub(super) struct Sources {
    map: BTreeMap<PeerKey, Source>,
    /// How many of them are web seeds.
    webs: usize,
}

impl Sources {
    pub(super) fn get(&self, key: PeerKey) -> Option<&Source> {
        self.map.get(&key)
    }

    pub(super) fn get_mut(&mut self, key: PeerKey) -> Option<&mut Source> {
        self.map.get_mut(&key)
    }

    pub(super) fn peer(&self, key: PeerKey) -> Option<&Peer> {
        self.get(key).and_then(Source::as_peer)
    }

    pub(super) fn peer_mut(&mut self, key: PeerKey) -> Option<&mut Peer> {
        self.get_mut(key).and_then(Source::as_peer_mut)
    }

    pub(super) fn insert(&mut self, key: PeerKey, s: Source) {
        let web = s.as_web().is_some();
        if let Some(old) = self.map.insert(key, s) {
            self.webs -= usize::from(old.as_web().is_some());
        }
        self.webs += usize::from(web);
    }

    pub(super) fn remove(&mut self, key: PeerKey) -> Option<Source> {
        let s = self.map.remove(&key)?;
        self.webs -= usize::from(s.as_web().is_some());
        Some(s)
    }

    /// Pieces the sources may have in progress beyond the torrent's own
    /// allowance: one each for peers (each may be on a piece of its own,
    /// rarest first), a web seed's whole minimum queue.
    pub(super) fn open_pieces(&self, piece_length: u64) -> usize {
        let web = (WEB_MIN_QUEUE as u64 * BLOCK_LEN as u64).div_ceil(piece_length.max(1));
        self.map.len() + self.webs * web as usize
    }

    /// Takes the peer `key` out of the table (a web seed stays).
    pub(super) fn remove_peer(&mut self, key: PeerKey) -> Option<Box<Peer>> {
        self.get(key)?.as_peer()?;
        match self.map.remove(&key)?.kind {
            Kind::Peer(p) => Some(p),
            Kind::Web(_) => None,
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = PeerKey> + '_ {
        self.map.keys().copied()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (PeerKey, &Source)> {
        self.map.iter().map(|(k, s)| (*k, s))
    }

    pub(super) fn peers(&self) -> impl Iterator<Item = (PeerKey, &Peer)> {
        self.iter().filter_map(|(k, s)| Some((k, s.as_peer()?)))
    }

    pub(super) fn peers_mut(&mut self) -> impl Iterator<Item = (PeerKey, &mut Peer)> {
        self.map
            .iter_mut()
            .filter_map(|(k, s)| Some((*k, s.as_peer_mut()?)))
    }

    pub(super) fn webs(&self) -> impl Iterator<Item = (PeerKey, &Web)> {
        self.iter().filter_map(|(k, s)| Some((k, s.as_web()?)))
    }

    pub(super) fn peer_keys(&self) -> Vec<PeerKey> {
        self.peers().map(|(k, _)| k).collect()
    }

    pub(super) fn web_keys(&self) -> Vec<PeerKey> {
        self.webs().map(|(k, _)| k).collect()
    }

    pub(super) fn peer_count(&self) -> usize {
        self.peers().count()
    }

    /// Web seeds not backing off.
    pub(super) fn active_webs(&self) -> usize {
        self.webs().filter(|(_, w)| w.active()).count()
    }

    pub(super) fn has_peer_addr(&self, addr: SocketAddr) -> bool {
        self.peers().any(|(_, p)| p.addr == addr)
    }
}

impl Core {
    /// Tops up the requests in flight to the source `key` to its depth.
    pub(super) fn fill(&mut self, key: PeerKey) {
        // Hashing is behind the network: let it catch up before asking
        // for more, so memory stays bounded.
        if self.picker.is_complete() || self.assembly.backlogged(self.meta.piece_length) {
            return;
        }
        let open_limit = self.open_limit();
        let Some(s) = self.sources.get_mut(key) else {
            return;
        };
        let depth = s.request_depth();
        let out_now = self.picker.outstanding(key);
        if out_now >= depth {
            return;
        }
        let mut out = Vec::new();
        self.picker.set_open_limit(open_limit);
        self.picker.pick(key, s.has(), depth - out_now, &mut out);
        if out.is_empty() {
            return;
        }
        if matches!(s.kind, Kind::Web(_)) && out_now == 0 {
            // The wait for data starts now, not at the last block.
            s.last_block = self.now;
        }
        self.out.push_back(Action::Send(key, PeerCmd::Request(out)));
    }

    pub(super) fn fill_all(&mut self) {
        let keys: Vec<PeerKey> = self.sources.keys().collect();
        for k in keys {
            self.fill(k);
        }
    }

    /// Once a second for every source: rates and depths, our interest in
    /// each peer, a peer that snubs us loses its requests (it keeps a
    /// queue of one), a web seed that stalled fails, one whose back-off
    /// is over is asked again.
    pub(super) fn sources_second(&mut self, secs: f64) {
        let complete = self.picker.is_complete();
        let now = self.now;
        let (mut snubbed, mut stalled, mut again) = (Vec::new(), Vec::new(), Vec::new());
        for (&k, s) in self.sources.map.iter_mut() {
            match s.second(secs, now, self.picker.outstanding(k)) {
                Second::Fine => {}
                Second::Snubbing => snubbed.push(k),
                Second::Stalled => stalled.push(k),
                Second::Retry => again.push(k),
            }
            if let Some(p) = s.as_peer_mut() {
                let want = !complete && self.picker.interesting(p.has());
                if want != p.am_interested {
                    p.am_interested = want;
                    self.out
                        .push_back(Action::Send(k, PeerCmd::Interested(want)));
                }
            }
        }
        for k in snubbed {
            tracing::debug!("peer {k} is snubbing us");
            for b in self.picker.peer_gone(k) {
                self.send(k, PeerCmd::Cancel(b));
            }
        }
        for k in stalled {
            self.web_failed(k, &format!("no data for {}s", SNUB_AFTER.as_secs()));
        }
        for k in again {
            self.web_retry(k);
        }
    }
}
