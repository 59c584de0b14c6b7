//! Hole punching (BEP 55): the coordinator's decisions, pure (no sockets;
//! the clock is passed in). The codec is `peer::holepunch`.
//!
//! - As the **relay**: a `rendezvous` from A naming C is answered with
//!   `connect` to both when C is connected and speaks `ut_holepunch`,
//!   else with the BEP 55 error ([`relay`]). We only ever name to A a
//!   peer we are connected to, and only ever send to peers we are
//!   connected to. Rendezvous are rate-limited per peer ([`Budget`]).
//! - As the **initiator**: a peer that could not be dialled (or that PEX
//!   named without the "reachable" flag) is asked for through a peer that
//!   told us of it and speaks `ut_holepunch` ([`Punches`]), a few times
//!   at most.
//! - As the **target** (or an initiator answered with `connect`): dial
//!   the named address over uTP at once; both sides do, so each NAT sees
//!   an outgoing flow before the other's packets arrive. Connects are
//!   rate-limited per relay, and an address is punched once per
//!   [`PUNCH_EVERY`].
//! - Both dials may succeed, giving two connections between the same two
//!   peers; [`keep_new`] makes both ends keep the same one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use std::time::Instant;

use crate::peer::holepunch::ErrorCode;
use crate::peer::PeerKey;

/// Rendezvous (or connects) a peer may send in a burst, and the rate at
/// which the allowance comes back: one every 6 s, ten a minute.
const BURST: f64 = 5.0;
const REFILL_PER_SEC: f64 = 1.0 / 6.0;
/// The same address is dialled by hole punching once in this long.
pub const PUNCH_EVERY: Duration = Duration::from_secs(20);
/// Rendezvous for one target: at most this many, this far apart.
const MAX_ASKS: u32 = 3;
const ASK_EVERY: Duration = Duration::from_secs(30);
/// Relays remembered per target, and targets remembered at most.
const RELAYS_PER_TARGET: usize = 4;
const MAX_TARGETS: usize = 2000;
/// Two connections to one peer made within this long of each other are
/// the two halves of a simultaneous open, settled by [`keep_new`].
pub const SIMULTANEOUS: Duration = Duration::from_secs(15);

/// A token bucket: how many holepunch messages a peer may still send.
#[derive(Clone, Debug)]
pub struct Budget {
    tokens: f64,
    at: Instant,
}

impl Budget {
    pub fn new(now: Instant) -> Budget {
        Budget {
            tokens: BURST,
            at: now,
        }
    }

    /// Spends one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * REFILL_PER_SEC).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A connected peer as the relay decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub key: PeerKey,
    /// The address the connection comes from.
    pub addr: SocketAddr,
    /// Where it listens (the address we dialled, or its address with the
    /// port its extended handshake gave).
    pub listen: Option<SocketAddr>,
    /// The connection runs over uTP: its address is the one its NAT gave
    /// its uTP socket, the one another peer's uTP dial must reach.
    pub utp: bool,
    /// It advertised `ut_holepunch`.
    pub holepunch: bool,
}

impl Conn {
    /// The address to give another peer to dial: over uTP the
    /// connection's own (its NAT's mapping of the listening socket),
    /// else where it listens.
    pub fn dial_addr(&self) -> SocketAddr {
        if self.utp {
            self.addr
        } else {
            self.listen.unwrap_or(self.addr)
        }
    }

    fn is(&self, a: SocketAddr) -> bool {
        self.addr == a || self.listen == Some(a)
    }
}

/// What the relay does with a rendezvous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayAnswer {
    /// Send `connect` naming `initiator_addr` to `target`, and `connect`
    /// naming `target_addr` to the initiator.
    Connect {
        target: PeerKey,
        target_addr: SocketAddr,
        initiator_addr: SocketAddr,
    },
    /// Send `error` with this code (naming the target) to the initiator.
    Error(ErrorCode),
}

/// The relay's answer to `initiator`'s rendezvous naming `target`;
/// `ours` tells whether an address is this client's own.
pub fn relay(
    initiator: &Conn,
    target: SocketAddr,
    ours: impl Fn(SocketAddr) -> bool,
    peers: &[Conn],
) -> RelayAnswer {
    let target = SocketAddr::new(target.ip().to_canonical(), target.port());
    if target.port() == 0 || target.ip().is_unspecified() || target.ip().is_multicast() {
        return RelayAnswer::Error(ErrorCode::NoSuchPeer);
    }
    if ours(target) {
        return RelayAnswer::Error(ErrorCode::NoSelf);
    }
    if initiator.is(target) {
        return RelayAnswer::Error(ErrorCode::NoSuchPeer);
    }
    let found = peers
        .iter()
        .filter(|p| p.key != initiator.key && p.is(target))
        // A peer connected twice (a punch's two halves) counts once; one
        // that speaks the extension is the one to use.
        .max_by_key(|p| p.holepunch);
    match found {
        None => RelayAnswer::Error(ErrorCode::NotConnected),
        Some(p) if !p.holepunch => RelayAnswer::Error(ErrorCode::NoSupport),
        Some(p) => RelayAnswer::Connect {
            target: p.key,
            target_addr: p.dial_addr(),
            initiator_addr: initiator.dial_addr(),
        },
    }
}

/// Of two connections to the same peer (by peer id), made at about the
/// same time in opposite directions, whether to keep the new one (and
/// close the old). Both ends must choose the same connection: the one
/// dialled by the end with the lower peer id.
pub fn keep_new(
    ours: &[u8; 20],
    theirs: &[u8; 20],
    new_incoming: bool,
    old_incoming: bool,
) -> bool {
    if new_incoming == old_incoming {
        return false;
    }
    let we_dial = ours < theirs;
    // Keep the connection we dialled when we are the lower id, the one
    // they dialled otherwise.
    new_incoming != we_dial
}

#[derive(Debug, Default)]
struct Target {
    relays: Vec<PeerKey>,
    asks: u32,
    asked_at: Option<Instant>,
    punched_at: Option<Instant>,
}

/// The initiator's and target's memory: who told us of which address
/// (the possible relays), which rendezvous went out, which addresses
/// were punched and when.
#[derive(Debug, Default)]
pub struct Punches {
    targets: HashMap<SocketAddr, Target>,
}

impl Punches {
    /// `relay` (which speaks `ut_holepunch`) named `target` in its PEX.
    pub fn told(&mut self, target: SocketAddr, relay: PeerKey) {
        if self.targets.len() >= MAX_TARGETS && !self.targets.contains_key(&target) {
            return;
        }
        let t = self.targets.entry(target).or_default();
        if !t.relays.contains(&relay) && t.relays.len() < RELAYS_PER_TARGET {
            t.relays.push(relay);
        }
    }

    /// A peer left: it relays no more.
    pub fn gone(&mut self, relay: PeerKey) {
        for t in self.targets.values_mut() {
            t.relays.retain(|r| *r != relay);
        }
    }

    /// `target` is connected now: nothing more to ask about it.
    pub fn connected(&mut self, target: SocketAddr) {
        if let Some(t) = self.targets.get_mut(&target) {
            t.asks = 0;
            t.asked_at = None;
        }
    }

    /// The relay to send a rendezvous for `target` to now, if any: one
    /// that told us of it and is still `usable`, when fewer than
    /// `MAX_ASKS` went out and the last one is `ASK_EVERY` old. Rotates
    /// through the relays on each ask.
    pub fn ask(
        &mut self,
        target: SocketAddr,
        now: Instant,
        usable: impl Fn(PeerKey) -> bool,
    ) -> Option<PeerKey> {
        let t = self.targets.get_mut(&target)?;
        if t.asks >= MAX_ASKS
            || t.asked_at
                .is_some_and(|at| now.saturating_duration_since(at) < ASK_EVERY)
        {
            return None;
        }
        let n = t.relays.len();
        let relay = (0..n)
            .map(|i| t.relays[(t.asks as usize + i) % n])
            .find(|r| usable(*r))?;
        t.asks += 1;
        t.asked_at = Some(now);
        Some(relay)
    }

    /// A relay answered with an error for `target`: it is not asked about
    /// it again.
    pub fn refused(&mut self, target: SocketAddr, relay: PeerKey) {
        if let Some(t) = self.targets.get_mut(&target) {
            t.relays.retain(|r| *r != relay);
        }
    }

    /// A `connect` names `addr`: dial it (true) unless it was punched
    /// less than `PUNCH_EVERY` ago.
    pub fn punch(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.targets.len() >= MAX_TARGETS && !self.targets.contains_key(&addr) {
            return false;
        }
        let t = self.targets.entry(addr).or_default();
        if t.punched_at
            .is_some_and(|at| now.saturating_duration_since(at) < PUNCH_EVERY)
        {
            return false;
        }
        t.punched_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn conn(key: PeerKey, addr: &str, holepunch: bool) -> Conn {
        Conn {
            key,
            addr: a(addr),
            listen: None,
            utp: true,
            holepunch,
        }
    }

    #[test]
    fn a_connected_target_that_speaks_it_gets_both_connects() {
        let init = conn(1, "198.51.100.1:6881", true);
        let target = conn(2, "203.0.113.9:6881", true);
        let peers = [init, target];
        assert_eq!(
            relay(&init, a("203.0.113.9:6881"), |_| false, &peers),
            RelayAnswer::Connect {
                target: 2,
                target_addr: a("203.0.113.9:6881"),
                initiator_addr: a("198.51.100.1:6881"),
            }
        );
    }

    #[test]
    fn a_tcp_peer_is_named_by_where_it_listens() {
        let init = Conn {
            listen: Some(a("198.51.100.1:6881")),
            utp: false,
            ..conn(1, "198.51.100.1:50123", true)
        };
        // The target is found by its listening address too.
        let target = Conn {
            listen: Some(a("203.0.113.9:6881")),
            utp: false,
            ..conn(2, "203.0.113.9:40000", true)
        };
        assert_eq!(
            relay(&init, a("203.0.113.9:6881"), |_| false, &[init, target]),
            RelayAnswer::Connect {
                target: 2,
                target_addr: a("203.0.113.9:6881"),
                initiator_addr: a("198.51.100.1:6881"),
            }
        );
    }

    #[test]
    fn each_error_of_bep_55() {
        let init = conn(1, "198.51.100.1:6881", true);
        let old = conn(2, "203.0.113.9:6881", false);
        let peers = [init, old];
        let ask = |t: &str| relay(&init, a(t), |x| x == a("192.0.2.1:6881"), &peers);
        let err = RelayAnswer::Error;
        assert_eq!(ask("203.0.113.9:6881"), err(ErrorCode::NoSupport));
        assert_eq!(ask("203.0.113.10:6881"), err(ErrorCode::NotConnected));
        assert_eq!(ask("192.0.2.1:6881"), err(ErrorCode::NoSelf));
        assert_eq!(ask("198.51.100.1:6881"), err(ErrorCode::NoSuchPeer));
        assert_eq!(ask("0.0.0.0:6881"), err(ErrorCode::NoSuchPeer));
        assert_eq!(ask("203.0.113.9:0"), err(ErrorCode::NoSuchPeer));
        assert_eq!(ask("224.0.0.1:6881"), err(ErrorCode::NoSuchPeer));
    }

    #[test]
    fn a_mapped_ipv6_target_is_its_ipv4_address() {
        let init = conn(1, "198.51.100.1:6881", true);
        let target = conn(2, "203.0.113.9:6881", true);
        assert!(matches!(
            relay(
                &init,
                a("[::ffff:203.0.113.9]:6881"),
                |_| false,
                &[init, target]
            ),
            RelayAnswer::Connect { target: 2, .. }
        ));
    }

    #[test]
    fn both_ends_keep_the_connection_the_lower_id_dialled() {
        let (lo, hi) = ([1u8; 20], [2u8; 20]);
        // The lower id keeps its outgoing connection, whichever came first.
        assert!(keep_new(&lo, &hi, false, true));
        assert!(!keep_new(&lo, &hi, true, false));
        // The higher id keeps the incoming one: the same connection.
        assert!(keep_new(&hi, &lo, true, false));
        assert!(!keep_new(&hi, &lo, false, true));
        // Same direction: a plain duplicate, the new one goes.
        assert!(!keep_new(&lo, &hi, true, true));
        assert!(!keep_new(&hi, &lo, false, false));
    }

    #[test]
    fn rendezvous_are_rate_limited() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        let sent = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(sent, BURST as usize);
        assert!(!b.take(t0 + Duration::from_secs(1)));
        assert!(b.take(t0 + Duration::from_secs(7)));
        // A long silence refills the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), BURST as usize);
    }

    #[test]
    fn asks_go_to_relays_that_told_us_a_few_times() {
        let t0 = Instant::now();
        let c = a("203.0.113.9:6881");
        let mut p = Punches::default();
        // Nobody told us of it: nobody to ask.
        assert_eq!(p.ask(c, t0, |_| true), None);
        p.told(c, 7);
        p.told(c, 8);
        p.told(c, 7);
        assert_eq!(p.ask(c, t0, |_| true), Some(7));
        // Not again too soon.
        assert_eq!(p.ask(c, t0 + Duration::from_secs(5), |_| true), None);
        let t1 = t0 + ASK_EVERY;
        assert_eq!(p.ask(c, t1, |_| true), Some(8));
        // A relay that refused is not asked again; one gone neither.
        p.refused(c, 8);
        let t2 = t1 + ASK_EVERY;
        assert_eq!(p.ask(c, t2, |k| k != 7), None);
        assert_eq!(p.ask(c, t2, |_| true), Some(7));
        // Three asks at most.
        assert_eq!(p.ask(c, t2 + ASK_EVERY, |_| true), None);
        // Connected: the count starts again.
        p.connected(c);
        assert_eq!(p.ask(c, t2 + ASK_EVERY, |_| true), Some(7));
        p.gone(7);
        assert_eq!(p.ask(c, t2 + ASK_EVERY * 2, |_| true), None);
    }

    #[test]
    fn an_address_is_punched_once_in_a_while() {
        let t0 = Instant::now();
        let c = a("203.0.113.9:6881");
        let mut p = Punches::default();
        assert!(p.punch(c, t0));
        assert!(!p.punch(c, t0 + Duration::from_secs(1)));
        assert!(p.punch(c, t0 + PUNCH_EVERY));
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Punches::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TARGETS as u32 + 500) {
            let addr = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881));
            p.told(addr, 1);
            p.punch(addr, t0);
            for r in 0..10 {
                p.told(addr, r);
            }
        }
        assert!(p.targets.len() <= MAX_TARGETS);
        assert!(p
            .targets
            .values()
            .all(|t| t.relays.len() <= RELAYS_PER_TARGET));
    }
}
