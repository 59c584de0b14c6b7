//! The dialer: which addresses are known and when each may be dialled
//! again, connections being made, bans, and making room when every slot
//! is taken.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::limit::ConnectionCap;
use crate::peer::{PeerCmd, PeerKey};
use crate::torrent::status::{short_reason, PeerSource};

use super::{Action, Core};

/// Outgoing connection attempts in progress at once.
const MAX_HALF_OPEN: usize = 16;
/// When every slot is taken, a peer connected this long that neither wants
/// our pieces nor has any we want is closed to make room for a newcomer
/// (libtorrent also drops its least useful peer when full). Otherwise idle
/// sockets sending keep-alives hold every slot forever. Long enough for a
/// real peer's bitfield and `interested` to have arrived.
pub(super) const EVICT_AFTER: Duration = Duration::from_secs(10);
/// A connection that ends sooner than this counts as a failure for the
/// reconnect back-off: a peer that accepts and closes at once would
/// otherwise be dialled every 10 s forever.
pub(super) const SHORT_LIVED: Duration = Duration::from_secs(60);
/// Peer addresses remembered at most, from all sources together.
const MAX_KNOWN: usize = 2000;

/// Wait before dialling a peer again after `failures` connections in a row
/// that ended early: 10 s, 20 s, 40 s … capped at 10 min.
fn reconnect_delay(failures: u32) -> Duration {
    Duration::from_secs((10u64 << failures.min(6)).min(600))
}

/// Wait before dialling an address again after `failures` failed dials in
/// a row: 10 s, 20 s, 40 s … capped at 10 min.
fn redial_delay(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.min(7)).min(600))
}

pub(super) struct Candidate {
    pub(super) failures: u32,
    pub(super) next_try: Instant,
    pub(super) source: PeerSource,
}

pub(super) struct Dialer {
    pub(super) known: HashMap<SocketAddr, Candidate>,
    /// Known addresses in the order they are tried.
    queue: VecDeque<SocketAddr>,
    /// Connections dialled or accepted whose handshake is not over.
    pub(super) connecting: BTreeMap<PeerKey, SocketAddr>,
    pub(super) banned_addrs: HashSet<SocketAddr>,
    banned_ids: HashSet<[u8; 20]>,
    /// The newest failed outgoing connection: who, why, and the wait
    /// before the next try.
    pub(super) last_failure: Option<(SocketAddr, String, u64)>,
    /// The session's cap on connections of all torrents, and our count
    /// in it.
    cap: Arc<ConnectionCap>,
    cell: Arc<AtomicUsize>,
}

impl Dialer {
    pub(super) fn new(cap: Arc<ConnectionCap>) -> Dialer {
        Dialer {
            known: HashMap::new(),
            queue: VecDeque::new(),
            connecting: BTreeMap::new(),
            banned_addrs: HashSet::new(),
            banned_ids: HashSet::new(),
            last_failure: None,
            cell: cap.register(),
            cap,
        }
    }

    /// Tells the session's cap how many connections we hold.
    pub(super) fn count(&self, peers: usize) {
        self.cell
            .store(peers + self.connecting.len(), Ordering::Relaxed);
    }

    /// No room for another connection with `peers` connected: this
    /// torrent's limit, or the session's for all torrents together.
    fn full(&self, peers: usize, max_peers: usize) -> bool {
        peers + self.connecting.len() >= max_peers || self.cap.full()
    }

    /// Remembers `addr` from `source` (the first source to name it
    /// keeps it), up to [`MAX_KNOWN`] addresses.
    fn learn(&mut self, addr: SocketAddr, source: PeerSource, now: Instant) {
        if self.banned_addrs.contains(&addr) {
            return;
        }
        // Every source together (trackers, DHT, PEX) is held to a cap,
        // so a flood of addresses cannot grow memory without bound.
        if self.known.len() >= MAX_KNOWN {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.known.entry(addr) {
            e.insert(Candidate {
                failures: 0,
                next_try: now,
                source,
            });
            self.queue.push_back(addr);
        }
    }

    pub(super) fn is_banned(&self, addr: SocketAddr, id: &[u8; 20]) -> bool {
        self.banned_addrs.contains(&addr) || self.banned_ids.contains(id)
    }

    /// Bans a peer by address and id; false if it already was.
    pub(super) fn ban(&mut self, addr: SocketAddr, id: [u8; 20]) -> bool {
        let new_id = self.banned_ids.insert(id);
        let new_addr = self.banned_addrs.insert(addr);
        new_id || new_addr
    }

    /// Where an address came from; a dialled address nobody named was
    /// given by hand.
    pub(super) fn source_of(&self, addr: SocketAddr) -> PeerSource {
        self.known
            .get(&addr)
            .map_or(PeerSource::Manual, |c| c.source)
    }

    fn connect_failed(&mut self, addr: SocketAddr, reason: &str, now: Instant) {
        if let Some(c) = self.known.get_mut(&addr) {
            c.failures += 1;
            let wait = redial_delay(c.failures);
            c.next_try = now + wait;
            self.queue.push_back(addr);
            self.last_failure = Some((addr, short_reason(reason), wait.as_secs()));
        }
    }

    /// A connected peer at `addr` left: it is dialled again after 10 s if
    /// it stayed a while, doubling per connection that ended within
    /// [`SHORT_LIVED`].
    pub(super) fn left(&mut self, addr: SocketAddr, connected_at: Instant, now: Instant) {
        let Some(c) = self.known.get_mut(&addr) else {
            return;
        };
        if now.duration_since(connected_at) < SHORT_LIVED {
            c.failures += 1;
        } else {
            c.failures = 0;
        }
        c.next_try = now + reconnect_delay(c.failures);
        if !self.banned_addrs.contains(&addr) {
            self.queue.push_back(addr);
        }
    }
}

impl Core {
    /// Adds peers from any source; an address keeps the source that named
    /// it first.
    pub fn add_peers(&mut self, source: PeerSource, addrs: Vec<SocketAddr>) {
        for a in addrs {
            let a = SocketAddr::new(a.ip().to_canonical(), a.port());
            if self.is_self(a) || a.port() == 0 {
                continue;
            }
            self.dialer.learn(a, source, self.now);
        }
        self.connect_more();
    }

    /// Trackers list us among the peers; on loopback every peer shares the
    /// address, so our own listening port is what gives us away. Trackers
    /// also give us our own address as the router shows it.
    pub(super) fn is_self(&self, a: SocketAddr) -> bool {
        (a.port() == self.listen_port && (a.ip().is_loopback() || a.ip().is_unspecified()))
            || self.external == Some(a)
    }

    pub(super) fn at_capacity(&self) -> bool {
        self.dialer
            .full(self.sources.peer_count(), self.opts.max_peers)
    }

    pub(super) fn on_incoming(&mut self, addr: SocketAddr, peer_id: [u8; 20]) {
        if self.dialer.banned_ids.contains(&peer_id) || peer_id == self.peer_id {
            return;
        }
        if self.at_capacity() && !self.evict_one() {
            tracing::debug!("refusing {addr}: peer limit reached");
            return;
        }
        let key = self.new_key();
        self.dialer.connecting.insert(key, addr);
        self.dialer.count(self.sources.peer_count());
        self.out.push_back(Action::Accept { key, addr });
    }

    /// Dials known addresses whose time has come, while there is room.
    pub(super) fn connect_more(&mut self) {
        let now = self.now;
        let mut tries = self.dialer.queue.len();
        while tries > 0 && self.dialer.connecting.len() < MAX_HALF_OPEN {
            tries -= 1;
            let Some(addr) = self.dialer.queue.pop_front() else {
                break;
            };
            let Some(c) = self.dialer.known.get(&addr) else {
                continue;
            };
            if c.next_try > now {
                self.dialer.queue.push_back(addr);
                continue;
            }
            if self.dialer.banned_addrs.contains(&addr)
                || self.sources.has_peer_addr(addr)
                || self.dialer.connecting.values().any(|a| *a == addr)
            {
                continue;
            }
            if self.at_capacity() && !self.evict_one() {
                self.dialer.queue.push_front(addr);
                break;
            }
            let key = self.new_key();
            self.dialer.connecting.insert(key, addr);
            self.dialer.count(self.sources.peer_count());
            self.out.push_back(Action::Connect {
                key,
                addr,
                only: None,
            });
        }
    }

    /// A connection we dialled or accepted ended before its handshake: its
    /// address, if it was one.
    pub(super) fn connection_failed(&mut self, key: PeerKey, reason: &str) -> Option<SocketAddr> {
        let addr = self.dialer.connecting.remove(&key)?;
        tracing::debug!("{addr}: {reason}");
        self.dialer.connect_failed(addr, reason, self.now);
        Some(addr)
    }

    /// Makes room by closing the least useful peer that has had
    /// [`EVICT_AFTER`] to show interest: one neither side is interested in,
    /// fewest bytes exchanged first, then the oldest. False if every peer is
    /// worth keeping (or too new to judge).
    pub(super) fn evict_one(&mut self) -> bool {
        let now = self.now;
        let victim = self
            .sources
            .iter()
            .filter_map(|(k, s)| Some((k, s, s.as_peer()?)))
            .filter(|(_, _, p)| {
                !p.am_interested
                    && !p.peer_interested
                    && now.duration_since(p.connected_at) >= EVICT_AFTER
            })
            .min_by_key(|(_, s, p)| (s.downloaded + s.uploaded, p.connected_at))
            .map(|(k, _, _)| k);
        let Some(key) = victim else {
            return false;
        };
        self.send(key, PeerCmd::Close("making room for another peer".into()));
        self.remove_peer(key, "idle; made room for another peer");
        true
    }
}
