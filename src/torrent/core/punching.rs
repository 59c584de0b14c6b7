//! The core's side of hole punching (BEP 55): it knows which peers are
//! connected and which speak `ut_holepunch`, so it relays for others,
//! asks relays for peers it cannot dial, and dials uTP when told to. The
//! decisions are `torrent::holepunch`'s (pure); this is the glue to the
//! table of sources.

use std::net::SocketAddr;

use crate::peer::holepunch::{Kind, Message, PEX_FLAG};
use crate::peer::pex::flags::OUTGOING_OK;
use crate::peer::transport::Transport;
use crate::peer::{PeerCmd, PeerKey};
use crate::torrent::holepunch::{self, Conn, RelayAnswer};
use crate::torrent::status::PeerSource;

use super::{Action, Core};

impl Core {
    /// A new connection to a peer we are already connected to: true when
    /// it is to be kept (there was none, or it is the one both ends keep
    /// of a simultaneous open, and the old one was closed).
    pub(super) fn settle_duplicate(&mut self, peer_id: &[u8; 20], incoming: bool) -> bool {
        let Some((old_key, old)) = self.sources.peers().find(|(_, p)| p.peer_id == *peer_id) else {
            return true;
        };
        let old_incoming = old.source == PeerSource::Incoming;
        let recent = self.now.duration_since(old.connected_at) < holepunch::SIMULTANEOUS;
        if !recent || !holepunch::keep_new(&self.peer_id, peer_id, incoming, old_incoming) {
            return false;
        }
        tracing::debug!(
            "{}: two connections at once; keeping the {} one",
            old.addr,
            if incoming { "incoming" } else { "outgoing" }
        );
        let why = "duplicate connection (simultaneous open)";
        self.send(old_key, PeerCmd::Close(why.into()));
        self.remove_peer(old_key, why);
        true
    }

    /// A PEX message from `key`: it is a relay for the peers it named, if
    /// it speaks `ut_holepunch` and says they do. Returns those it says
    /// are not reachable: they are asked for at once.
    pub(super) fn note_relays(
        &mut self,
        key: PeerKey,
        added: &[(SocketAddr, u8)],
        found: &[SocketAddr],
    ) -> Vec<SocketAddr> {
        if !self.holepunch || !self.sources.peer(key).is_some_and(|p| p.holepunch) {
            return Vec::new();
        }
        let mut unreachable = Vec::new();
        for (a, f) in added {
            let a = SocketAddr::new(a.ip().to_canonical(), a.port());
            if f & PEX_FLAG == 0 || !found.contains(&a) {
                continue;
            }
            self.punches.told(a, key);
            if f & OUTGOING_OK == 0 {
                unreachable.push(a);
            }
        }
        unreachable
    }

    /// `addr` could not be dialled (or is said to be unreachable): ask a
    /// relay that told us of it for a rendezvous, within the bounds.
    pub(super) fn ask_for_punch(&mut self, addr: SocketAddr) {
        if !self.holepunch || self.is_connected_to(addr) {
            return;
        }
        let sources = &self.sources;
        let usable = |k: PeerKey| sources.peer(k).is_some_and(|p| p.holepunch);
        let Some(relay) = self.punches.ask(addr, self.now, usable) else {
            return;
        };
        if let Some(p) = self.sources.peer(relay) {
            tracing::debug!("{addr}: asking {} to relay a hole punch", p.addr);
            self.send(
                relay,
                PeerCmd::Holepunch(Message::new(Kind::Rendezvous, addr)),
            );
        }
    }

    fn is_connected_to(&self, a: SocketAddr) -> bool {
        self.sources
            .peers()
            .any(|(_, p)| p.addr == a || p.listen == Some(a))
    }

    /// A `ut_holepunch` message from `key`.
    pub(super) fn on_holepunch(&mut self, key: PeerKey, m: Message) {
        let now = self.now;
        let Some(p) = self.sources.peer_mut(key) else {
            return;
        };
        let from = p.addr;
        if !p.hp_budget.take(now) {
            tracing::debug!("{from}: ut_holepunch flood; {:?} ignored", m.kind);
            return;
        }
        match m.kind {
            Kind::Rendezvous => self.relay(key, m.addr),
            Kind::Connect => {
                tracing::debug!("{from}: hole punch: connect to {}", m.addr);
                self.punch(m.addr);
            }
            Kind::Error(e) => {
                tracing::debug!(
                    "{from}: hole punch to {} refused: {} ({})",
                    m.addr,
                    e.label(),
                    e.code()
                );
                self.punches.refused(m.addr, key);
            }
        }
    }

    /// As the relay: connect both, or tell the initiator why not.
    fn relay(&mut self, initiator: PeerKey, target: SocketAddr) {
        let conns: Vec<Conn> = self
            .sources
            .peers()
            .map(|(k, p)| Conn {
                key: k,
                addr: p.addr,
                listen: p.listen,
                utp: p.transport == Transport::Utp,
                holepunch: p.holepunch,
            })
            .collect();
        let Some(init) = conns.iter().find(|c| c.key == initiator).copied() else {
            return;
        };
        match holepunch::relay(&init, target, |a| self.is_self(a), &conns) {
            RelayAnswer::Connect {
                target: t,
                target_addr,
                initiator_addr,
            } => {
                tracing::debug!("relaying a hole punch: {initiator_addr} ↔ {target_addr}");
                let to_target = Message::new(Kind::Connect, initiator_addr);
                self.send(t, PeerCmd::Holepunch(to_target));
                let to_initiator = Message::new(Kind::Connect, target_addr);
                self.send(initiator, PeerCmd::Holepunch(to_initiator));
            }
            RelayAnswer::Error(e) => {
                tracing::debug!("{}: no hole punch to {target}: {}", init.addr, e.label());
                let m = Message::new(Kind::Error(e), target);
                self.send(initiator, PeerCmd::Holepunch(m));
            }
        }
    }

    /// Told to connect to `addr`: dial it over uTP now (the other side
    /// does the same), unless connected, banned, punched a moment ago, or
    /// there is no room.
    fn punch(&mut self, addr: SocketAddr) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if addr.port() == 0
            || addr.ip().is_unspecified()
            || addr.ip().is_multicast()
            || self.is_self(addr)
            || self.dialer.banned_addrs.contains(&addr)
            || self.is_connected_to(addr)
            || !self.punches.punch(addr, self.now)
        {
            return;
        }
        if self.at_capacity() && !self.evict_one() {
            tracing::debug!("{addr}: no room for a hole punch");
            return;
        }
        let key = self.new_key();
        self.dialer.connecting.insert(key, addr);
        self.dialer.count(self.sources.peer_count());
        tracing::debug!("{addr}: punching (uTP dial)");
        self.out.push_back(Action::Connect {
            key,
            addr,
            only: Some(Transport::Utp),
        });
    }
}
