//! What peers tell the core, and what it tells them back: connections
//! coming and going, their pieces, choking both ways, peer exchange and
//! super-seeding.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;

use crate::bitfield::Bitfield;
use crate::peer::{pex, PeerCmd, PeerEvent, PeerKey};
use crate::torrent::choker::PeerSnapshot;
use crate::torrent::status::{PeerSource, State};
use crate::torrent::superseed;

use super::rate::Rate;
use super::sources::{Kind, Peer, Source, DEFAULT_REQQ, MAX_QUEUE};
use super::Core;

impl Core {
    pub(super) fn on_peer_event(&mut self, key: PeerKey, ev: PeerEvent) {
        match ev {
            PeerEvent::Connected {
                addr,
                peer_id,
                fast: _,
                v2,
                incoming,
            } => self.on_connected(key, addr, peer_id, v2, incoming),
            PeerEvent::Gone(reason) => {
                self.connection_failed(key, &reason);
                self.remove_peer(key, &reason);
                self.connect_more();
            }
            PeerEvent::Bitfield(bits) => self.on_bitfield(key, bits),
            PeerEvent::HaveAll => self.on_have_all(key),
            PeerEvent::HaveNone => {}
            PeerEvent::Have(i) => self.on_have(key, i),
            PeerEvent::Extended {
                reqq,
                client,
                listen_port,
                pex,
            } => self.on_extended(key, reqq, client, listen_port, pex),
            PeerEvent::Pex(added) => self.on_pex(key, added),
            PeerEvent::Choked => {
                let Some(p) = self.sources.peer_mut(key) else {
                    return;
                };
                p.peer_choking = true;
                // Its requests are void; hand the blocks to others.
                self.picker.peer_gone(key);
                self.fill_all();
            }
            PeerEvent::Unchoked => {
                let Some(s) = self.sources.get_mut(key) else {
                    return;
                };
                let Kind::Peer(p) = &mut s.kind else {
                    return;
                };
                p.peer_choking = false;
                s.last_block = self.now;
                self.fill(key);
            }
            PeerEvent::Interested(yes) => self.on_interested(key, yes),
            PeerEvent::Block { block, data } => self.on_block(key, block, data),
            PeerEvent::PieceLost(piece) => self.on_piece_lost(piece),
            PeerEvent::Rejected(b) => {
                self.picker.release(key, b);
                self.fill_all();
            }
            PeerEvent::Hashes { req, hashes } => {
                if !self.on_leaf_hashes(key, req, &hashes) {
                    self.on_hashes(key, req, hashes);
                }
            }
            PeerEvent::HashRejected(req) if self.is_leaf_request(&req) => {
                self.leaf_refused(key, Some(req))
            }
            PeerEvent::HashRejected(req) => self.on_hash_rejected(key, req),
        }
    }

    fn on_connected(
        &mut self,
        key: PeerKey,
        addr: SocketAddr,
        peer_id: [u8; 20],
        v2: bool,
        incoming: bool,
    ) {
        self.dialer.connecting.remove(&key);
        let refuse = if self.dialer.is_banned(addr, &peer_id) {
            Some("banned")
        } else if let Some(old) = self.sources.key_of_peer_id(&peer_id) {
            if self.crossed_keeps_new(old, &peer_id, incoming) {
                self.send(old, PeerCmd::Close("duplicate connection".into()));
                self.remove_peer(old, "duplicate connection");
                None
            } else {
                Some("duplicate connection")
            }
        } else if self.sources.peer_count() >= self.opts.max_peers && !self.evict_one() {
            Some("peer limit reached")
        } else {
            None
        };
        if let Some(why) = refuse {
            self.send(key, PeerCmd::Close(why.into()));
            return;
        }
        let peer = Peer {
            addr,
            peer_id,
            bits: Bitfield::new(self.meta.piece_count() as usize),
            seed: false,
            am_interested: false,
            peer_interested: false,
            peer_choking: true,
            am_choking: true,
            reqq: DEFAULT_REQQ,
            snubbed: false,
            up: Rate::new(),
            // In a v2-only swarm every peer speaks v2 (libtorrent sets the
            // bit only for hybrids, where it upgrades).
            hashes_ok: v2 || self.meta.v2_only(),
            listen: (!incoming).then_some(addr),
            pex: false,
            pex_sent: HashSet::new(),
            pex_at: None,
            source: if incoming {
                PeerSource::Incoming
            } else {
                self.dialer.source_of(addr)
            },
            connected_at: self.now,
        };
        self.sources.insert(key, Source::peer(peer, self.now));
        if self.state == State::Connecting {
            self.state = State::Downloading;
        }
        // Hash requests need no unchoke (BEP 52): ask at once.
        self.request_hashes(key);
    }

    /// The same peer connected twice. When both sides dialled at once,
    /// each sees the other's connection second: refusing the second on
    /// both sides closed both (the swarm simulator caught leechers left
    /// with no seeder this way). Both sides keep the connection dialled by
    /// the lower peer id, so one survives; a second connection the same
    /// way round is refused.
    fn crossed_keeps_new(&self, old: PeerKey, peer_id: &[u8; 20], incoming: bool) -> bool {
        let old_incoming = self
            .sources
            .peer(old)
            .is_some_and(|p| p.source == PeerSource::Incoming);
        if old_incoming == incoming {
            return false;
        }
        // The new one was dialled by them if incoming, else by us.
        if incoming {
            *peer_id < self.peer_id
        } else {
            self.peer_id < *peer_id
        }
    }

    /// Its extension handshake: peer exchange, the port it listens on,
    /// how many requests it queues.
    fn on_extended(
        &mut self,
        key: PeerKey,
        reqq: Option<u32>,
        client: Option<String>,
        listen_port: Option<u16>,
        pex: bool,
    ) {
        let Some(s) = self.sources.get_mut(key) else {
            return;
        };
        let Kind::Peer(p) = &mut s.kind else {
            return;
        };
        p.pex = pex;
        if let (None, Some(port)) = (p.listen, listen_port.filter(|p| *p != 0)) {
            p.listen = Some(SocketAddr::new(p.addr.ip(), port));
        }
        if let Some(q) = reqq {
            p.reqq = (q as usize).clamp(1, MAX_QUEUE);
            s.depth = s.depth.min(p.reqq);
        }
        if let Some(c) = client {
            tracing::debug!("{}: client {c}", p.addr);
        }
    }

    /// A later bitfield replaces what we knew (aria2 sends them as
    /// updates): the old counts are taken back first.
    fn on_bitfield(&mut self, key: PeerKey, bits: Bitfield) {
        let Some(p) = self.sources.peer_mut(key) else {
            return;
        };
        if p.seed {
            self.picker.remove_seed();
            p.seed = false;
        } else {
            self.picker.remove_bitfield(&p.bits);
        }
        if bits.is_full() {
            p.seed = true;
            self.picker.add_seed();
            p.bits = Bitfield::new(bits.len());
        } else {
            self.picker.add_bitfield(&bits);
            p.bits = bits;
        }
        self.after_availability(key);
    }

    fn on_have_all(&mut self, key: PeerKey) {
        let Some(p) = self.sources.peer_mut(key) else {
            return;
        };
        if !p.seed {
            self.picker.remove_bitfield(&p.bits);
            p.bits = Bitfield::new(p.bits.len());
            p.seed = true;
            self.picker.add_seed();
        }
        self.after_availability(key);
    }

    fn on_have(&mut self, key: PeerKey, i: u32) {
        let Some(p) = self.sources.peer_mut(key) else {
            return;
        };
        if p.seed || !p.bits.set(i as usize) {
            return;
        }
        self.picker.add_have(i);
        if p.bits.is_full() {
            self.picker.remove_bitfield(&p.bits);
            p.bits = Bitfield::new(p.bits.len());
            p.seed = true;
            self.picker.add_seed();
        }
        self.after_availability(key);
        if self
            .super_seed
            .as_mut()
            .is_some_and(|ss| ss.announced(key, i))
        {
            self.reveal(key);
        }
    }

    fn on_pex(&mut self, key: PeerKey, added: Vec<(SocketAddr, u8)>) {
        let Some(p) = self.sources.peer(key) else {
            return;
        };
        let ours = [SocketAddr::new(
            std::net::Ipv4Addr::LOCALHOST.into(),
            self.listen_port,
        )];
        let found = pex::accept(p.addr, &ours, &added);
        tracing::debug!(
            "{}: pex named {} peers, {} usable",
            p.addr,
            added.len(),
            found.len()
        );
        self.add_peers(PeerSource::Pex, found);
    }

    fn on_interested(&mut self, key: PeerKey, yes: bool) {
        let Some(p) = self.sources.peer_mut(key) else {
            return;
        };
        p.peer_interested = yes;
        if !yes && !p.am_choking {
            // Done with us: its slot is free for someone who wants it.
            self.rechoke();
        } else if yes && p.am_choking {
            // A free upload slot is given at once rather than at the next
            // 10 s round; a full house waits its turn.
            let unchoked = self.sources.peers().filter(|(_, p)| !p.am_choking).count();
            if unchoked <= self.opts.upload_slots {
                self.rechoke();
            } else {
                self.rechoke_soon = true;
            }
        }
    }

    /// After a peer's pieces became known: drop two-seed pairs, update
    /// interest, and request if we can.
    fn after_availability(&mut self, key: PeerKey) {
        let complete = self.picker.is_complete();
        let Some(p) = self.sources.peer_mut(key) else {
            return;
        };
        if complete && p.seed {
            self.send(key, PeerCmd::Close("both seeds".into()));
            return;
        }
        let want = !complete && self.picker.interesting(p.has());
        if want != p.am_interested {
            p.am_interested = want;
            self.send(key, PeerCmd::Interested(want));
        }
        self.request_hashes(key);
        self.fill(key);
    }

    /// Forgets a connected peer (its task is gone or told to close) and
    /// schedules a reconnect to it.
    pub(super) fn remove_peer(&mut self, key: PeerKey, reason: &str) {
        let Some(p) = self.sources.remove_peer(key) else {
            return;
        };
        tracing::debug!("{}: disconnected: {reason}", p.addr);
        if let Some(ss) = self.super_seed.as_mut() {
            ss.release(key);
        }
        if p.seed {
            self.picker.remove_seed();
        } else {
            self.picker.remove_bitfield(&p.bits);
        }
        self.picker.peer_gone(key);
        if let Some(l) = self.layers.as_mut() {
            l.peer_gone(key);
        }
        self.leaf_refused(key, None);
        self.dialer.left(p.addr, p.connected_at, self.now);
        // Its upload slot goes to a waiting peer now, not at the next 10 s
        // round: a leecher that finished and left must not leave the last
        // ones choked for seconds.
        if !p.am_choking {
            self.rechoke();
        }
        self.fill_all();
    }

    /// Tells peers about new pieces, batched per tick: one command (and one
    /// write) per peer instead of one per piece per peer. A peer that has
    /// the piece is told too: a super-seeder (BEP 16) shows us the next
    /// piece only once we announce the one it showed us.
    pub(super) fn flush_haves(&mut self) {
        if self.pending_haves.is_empty() {
            return;
        }
        let haves = std::mem::take(&mut self.pending_haves);
        let keys: Vec<PeerKey> = self
            .sources
            .peers()
            .filter(|(_, p)| !p.seed)
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            self.send(k, PeerCmd::Haves(haves.clone()));
        }
    }

    /// BEP 11: each peer that takes part hears, at most once a minute, which
    /// peers we gained and lost since it last heard.
    pub(super) fn exchange_peers(&mut self) {
        let now = self.now;
        let everyone: Vec<(PeerKey, SocketAddr, u8)> = self
            .sources
            .peers()
            .filter_map(|(k, p)| {
                let flags = if p.seed { pex::flags::SEED } else { 0 };
                p.listen.map(|l| (k, l, flags | pex::flags::OUTGOING_OK))
            })
            .collect();
        for (key, p) in self.sources.peers_mut() {
            if !p.pex
                || p.pex_at
                    .is_some_and(|t| now.duration_since(t) < pex::INTERVAL)
            {
                continue;
            }
            let others: Vec<(SocketAddr, u8)> = everyone
                .iter()
                .filter(|(k, _, _)| *k != key)
                .map(|(_, a, f)| (*a, *f))
                .collect();
            if let Some(m) = pex::next_message(&mut p.pex_sent, &others) {
                p.pex_at = Some(now);
                self.out
                    .push_back(super::Action::Send(key, PeerCmd::Pex(m.encode())));
            }
        }
    }

    /// Super-seeding: shows each peer pieces it lacks, a window's worth to
    /// those we upload to and one to the rest (so they stay interested and
    /// get their turn).
    fn reveal(&mut self, key: PeerKey) {
        let (Some(ss), Some(p)) = (self.super_seed.as_mut(), self.sources.peer(key)) else {
            return;
        };
        if p.seed {
            return;
        }
        let want = if p.am_choking {
            1
        } else {
            superseed::window(self.meta.piece_length, self.meta.piece_count())
        };
        let picker = &self.picker;
        let new = ss.reveal(
            key,
            want,
            &p.bits,
            |i| picker.availability(i),
            &mut self.rng,
        );
        if !new.is_empty() {
            self.send(key, PeerCmd::Haves(new));
        }
    }

    pub(super) fn reveal_all(&mut self) {
        let Some(ss) = &self.super_seed else {
            return;
        };
        if ss.finished(|i| self.picker.availability(i)) {
            // Every piece is out there: from now on, a plain seeder.
            self.super_seed = None;
            self.out.push_back(super::Action::SuperSeedOver);
            let count = self.meta.piece_count();
            let told: Vec<(PeerKey, Vec<u32>)> = self
                .sources
                .peers()
                .filter(|(_, p)| !p.seed)
                .map(|(k, p)| (k, (0..count).filter(|&i| !p.bits.get(i as usize)).collect()))
                .collect();
            for (k, missing) in told {
                self.send(k, PeerCmd::Haves(missing));
            }
            return;
        }
        for k in self.sources.peer_keys() {
            self.reveal(k);
        }
    }

    /// Runs the choker over the connected peers and tells each whose state
    /// changed.
    pub(super) fn rechoke(&mut self) {
        self.rechoke_soon = false;
        self.last_rechoke = self.now;
        let snaps: Vec<PeerSnapshot> = self
            .sources
            .iter()
            .filter_map(|(k, s)| {
                let p = s.as_peer()?;
                Some(PeerSnapshot {
                    key: k,
                    interested: p.peer_interested,
                    download_rate: s.down.get(),
                    upload_rate: p.up.get(),
                    snubbed: p.snubbed,
                })
            })
            .collect();
        let secs = self.now.duration_since(self.started).as_secs();
        let unchoke: BTreeSet<PeerKey> = self
            .choker
            .rechoke(&snaps, self.picker.is_complete(), secs)
            .into_iter()
            .collect();
        for (k, p) in self.sources.peers_mut() {
            let choke = !unchoke.contains(&k);
            if choke == p.am_choking {
                continue;
            }
            p.am_choking = choke;
            let cmd = if choke {
                PeerCmd::Choke
            } else {
                PeerCmd::Unchoke
            };
            self.out.push_back(super::Action::Send(k, cmd));
            if choke {
                if let Some(ss) = self.super_seed.as_mut() {
                    ss.release(k);
                }
            }
        }
        self.reveal_all();
    }
}
