//! The coordinator's side of hole punching (BEP 55): it knows which peers
//! are connected and which speak `ut_holepunch`, so it relays for others,
//! asks relays for peers it cannot dial, and dials uTP when told to. The
//! decisions are `holepunch`'s (pure); this is the glue to the peer table.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::holepunch::{self, Conn, RelayAnswer};
use super::{PeerSource, Torrent};
use crate::peer::holepunch::{Kind, Message, PEX_FLAG};
use crate::peer::pex::flags::OUTGOING_OK;
use crate::peer::transport::Transport;
use crate::peer::{self, PeerCmd, PeerKey};

impl Torrent {
    /// A new connection to a peer we are already connected to: true when
    /// it is to be kept (there was none, or it is the one both ends keep
    /// of a simultaneous open, and the old one was closed).
    pub(super) fn settle_duplicate(&mut self, peer_id: &[u8; 20], incoming: bool) -> bool {
        let Some((&old_key, old)) = self.peers.iter().find(|(_, p)| p.peer_id == *peer_id) else {
            return true;
        };
        let old_incoming = old.source == PeerSource::Incoming;
        let recent = old.connected_at.elapsed() < holepunch::SIMULTANEOUS;
        if !recent || !holepunch::keep_new(&self.shared.peer_id, peer_id, incoming, old_incoming) {
            return false;
        }
        tracing::debug!(
            "{}: two connections at once; keeping the {} one",
            old.addr,
            if incoming { "incoming" } else { "outgoing" }
        );
        old.send(PeerCmd::Close(
            "duplicate connection (simultaneous open)".into(),
        ));
        self.remove_peer(old_key, "duplicate connection (simultaneous open)");
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
        if !self.shared.holepunch || !self.peers.get(&key).is_some_and(|p| p.holepunch) {
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
        if !self.shared.holepunch || self.is_connected_to(addr) {
            return;
        }
        let peers = &self.peers;
        let usable = |k: PeerKey| peers.get(&k).is_some_and(|p| p.holepunch);
        let Some(relay) = self.punches.ask(addr, Instant::now(), usable) else {
            return;
        };
        if let Some(p) = self.peers.get(&relay) {
            tracing::debug!("{addr}: asking {} to relay a hole punch", p.addr);
            p.send(PeerCmd::Holepunch(Message::new(Kind::Rendezvous, addr)));
        }
    }

    fn is_connected_to(&self, a: SocketAddr) -> bool {
        self.peers
            .values()
            .any(|p| p.addr == a || p.listen == Some(a))
    }

    /// A `ut_holepunch` message from `key`.
    pub(super) fn on_holepunch(&mut self, key: PeerKey, m: Message) {
        let now = Instant::now();
        let Some(p) = self.peers.get_mut(&key) else {
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
            .peers
            .iter()
            .map(|(k, p)| Conn {
                key: *k,
                addr: p.addr,
                listen: p.listen,
                utp: p.transport == Transport::Utp,
                holepunch: p.holepunch,
            })
            .collect();
        let Some(init) = conns.iter().find(|c| c.key == initiator).copied() else {
            return;
        };
        let answer = holepunch::relay(&init, target, |a| self.is_self(a), &conns);
        match answer {
            RelayAnswer::Connect {
                target: t,
                target_addr,
                initiator_addr,
            } => {
                tracing::debug!("relaying a hole punch: {initiator_addr} ↔ {target_addr}");
                if let Some(p) = self.peers.get(&t) {
                    p.send(PeerCmd::Holepunch(Message::new(
                        Kind::Connect,
                        initiator_addr,
                    )));
                }
                if let Some(p) = self.peers.get(&initiator) {
                    p.send(PeerCmd::Holepunch(Message::new(Kind::Connect, target_addr)));
                }
            }
            RelayAnswer::Error(e) => {
                tracing::debug!("{}: no hole punch to {target}: {}", init.addr, e.label());
                if let Some(p) = self.peers.get(&initiator) {
                    p.send(PeerCmd::Holepunch(Message::new(Kind::Error(e), target)));
                }
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
            || self.banned_addrs.contains(&addr)
            || self.is_connected_to(addr)
            || !self.punches.punch(addr, Instant::now())
        {
            return;
        }
        if self.at_capacity() && !self.evict_one() {
            tracing::debug!("{addr}: no room for a hole punch");
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.connecting.insert(key, addr);
        self.count_connections();
        tracing::debug!("{addr}: punching (uTP dial)");
        tokio::spawn(peer::run_outgoing_over(
            key,
            addr,
            Some(Transport::Utp),
            self.shared.clone(),
            self.events_tx.clone(),
        ));
    }
}
