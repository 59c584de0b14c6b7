//! Whom the magnet phase dials, and when. Pure logic: the caller passes
//! the time in, so it is tested without sockets or a clock.
//!
//! A few peers fetch at once ([`PARALLEL`]), but only peers that are
//! getting somewhere hold those slots: one that brought nothing for
//! [`SLOW`] (no handshake, no metadata piece) leaves its slot to the next
//! peer while it keeps its connection until its own deadline. Otherwise
//! four peers that accept requests and never answer would keep every
//! other peer from being dialled. Peers never tried go before peers tried
//! again, and a peer that lied is never dialled again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Peers fetching at once that are getting somewhere.
pub const PARALLEL: usize = 4;
/// Connections at most, slow ones included.
pub const MAX_RUNNING: usize = 12;
/// A peer that brought nothing for this long no longer holds a slot.
pub const SLOW: Duration = Duration::from_secs(3);
/// Tries per peer for failures that may pass.
pub const RETRIES: u32 = 3;

/// Why a peer's fetch ended without the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It sent something false or broken: never asked again.
    Lie,
    /// It took requests and sent no answer in time.
    Stalled,
    /// Refused, closed, rejected: may pass.
    Transient,
}

/// What becomes of a peer after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Dropped,
    RetryIn(Duration),
    GaveUp,
}

#[derive(Debug, Default)]
pub struct Plan {
    seen: HashSet<SocketAddr>,
    /// Learned and never dialled, in the order learned.
    fresh: VecDeque<SocketAddr>,
    /// Failed for a reason that may pass: dialled again from then on.
    again: Vec<(Instant, SocketAddr)>,
    failures: HashMap<SocketAddr, u32>,
    /// Peers being fetched from, and when each last got somewhere (or
    /// was dialled).
    running: HashMap<SocketAddr, Instant>,
}

impl Plan {
    /// A peer address learned. False if it was known already (or is
    /// unusable: port 0).
    pub fn learn(&mut self, addr: SocketAddr) -> bool {
        if addr.port() == 0 || !self.seen.insert(addr) {
            return false;
        }
        self.fresh.push_back(addr);
        true
    }

    /// The next peer to dial at `now`, if a slot is free: peers never
    /// tried first, then those whose retry is due.
    pub fn next(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.running.len() >= MAX_RUNNING || self.busy(now) >= PARALLEL {
            return None;
        }
        let addr = match self.fresh.pop_front() {
            Some(a) => a,
            None => {
                let i = self.again.iter().position(|(at, _)| *at <= now)?;
                self.again.swap_remove(i).1
            }
        };
        self.running.insert(addr, now);
        Some(addr)
    }

    /// Running peers that got somewhere within [`SLOW`].
    fn busy(&self, now: Instant) -> usize {
        self.running
            .values()
            .filter(|t| now.saturating_duration_since(**t) < SLOW)
            .count()
    }

    /// `addr` got somewhere (handshake, metadata piece): it holds its slot
    /// for another [`SLOW`].
    pub fn progress(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(t) = self.running.get_mut(&addr) {
            *t = now;
        }
    }

    /// `addr`'s fetch ended with `failure`; says what happens to it.
    pub fn failed(&mut self, addr: SocketAddr, failure: Failure, now: Instant) -> Verdict {
        self.running.remove(&addr);
        let n = self.failures.entry(addr).or_insert(0);
        *n += 1;
        let wait = match failure {
            Failure::Lie => return Verdict::Dropped,
            _ if *n >= RETRIES => return Verdict::GaveUp,
            Failure::Transient => Duration::from_secs(1 << *n),
            // It will likely stall again: only once fresh peers ran out.
            Failure::Stalled => Duration::from_secs(30) * *n,
        };
        self.again.push((now + wait, addr));
        Verdict::RetryIn(wait)
    }

    /// `addr`'s fetch ended some other way (its task was lost).
    pub fn ended(&mut self, addr: SocketAddr) {
        self.running.remove(&addr);
    }

    /// When a peer that cannot be dialled now may be: a retry falls due,
    /// or a running peer turns slow and frees its slot. Always after
    /// `now`; None when only an event (a peer's end, a new address) can
    /// change anything.
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        let retry = self.again.iter().map(|(at, _)| *at).filter(|at| *at > now);
        let waiting = !self.fresh.is_empty() || !self.again.is_empty();
        let slow = self
            .running
            .values()
            .map(|t| *t + SLOW)
            .filter(|t| waiting && *t > now);
        retry.chain(slow).min()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Nothing running and nobody left to dial, now or later.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.fresh.is_empty() && self.again.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6000 + n))
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Four peers that take requests and never answer hold no slot past
    /// SLOW: the fifth is dialled then, though all four still run.
    #[test]
    fn silent_peers_make_room_for_the_next() {
        let t0 = Instant::now();
        let mut p = Plan::default();
        for n in 0..5 {
            assert!(p.learn(peer(n)));
        }
        let first: Vec<_> = std::iter::from_fn(|| p.next(t0)).collect();
        assert_eq!(first, (0..4).map(peer).collect::<Vec<_>>());
        // Handshakes come in at once, then nothing.
        for n in 0..4 {
            p.progress(peer(n), t0 + Duration::from_millis(100));
        }
        assert_eq!(p.next(t0 + s(2)), None);
        let wake = p.wake_at(t0 + s(2)).unwrap();
        assert_eq!(wake, t0 + Duration::from_millis(100) + SLOW);
        assert_eq!(p.next(wake), Some(peer(4)));
        assert_eq!(p.running(), 5);
        assert_eq!(p.next(wake), None, "nobody left");
        assert_eq!(p.wake_at(wake), None);
    }

    /// A peer that keeps bringing pieces keeps its slot.
    #[test]
    fn busy_peers_keep_their_slots() {
        let t0 = Instant::now();
        let mut p = Plan::default();
        for n in 0..6 {
            p.learn(peer(n));
        }
        for _ in 0..4 {
            p.next(t0).unwrap();
        }
        for k in 1..10 {
            let now = t0 + s(k);
            for n in 0..4 {
                p.progress(peer(n), now);
            }
            assert_eq!(p.next(now), None);
        }
    }

    /// Never more than MAX_RUNNING connections, however slow they all are.
    #[test]
    fn connections_are_capped() {
        let t0 = Instant::now();
        let mut p = Plan::default();
        for n in 0..100 {
            p.learn(peer(n));
        }
        let mut now = t0;
        for _ in 0..20 {
            while p.next(now).is_some() {}
            now += SLOW;
        }
        assert_eq!(p.running(), MAX_RUNNING);
    }

    #[test]
    fn liars_are_dropped_and_others_retried_after_fresh_peers() {
        let t0 = Instant::now();
        let mut p = Plan::default();
        for n in 0..3 {
            p.learn(peer(n));
        }
        assert!(!p.learn(peer(0)), "known already");
        assert!(!p.learn(SocketAddr::from(([127, 0, 0, 1], 0))));
        for _ in 0..3 {
            p.next(t0).unwrap();
        }
        assert_eq!(p.failed(peer(0), Failure::Lie, t0), Verdict::Dropped);
        assert_eq!(
            p.failed(peer(1), Failure::Transient, t0),
            Verdict::RetryIn(s(2))
        );
        assert_eq!(
            p.failed(peer(2), Failure::Stalled, t0),
            Verdict::RetryIn(s(30))
        );
        // A peer learned later goes before the retries.
        p.learn(peer(3));
        assert_eq!(p.next(t0), Some(peer(3)));
        assert_eq!(p.next(t0 + s(1)), None);
        assert_eq!(p.wake_at(t0 + s(1)), Some(t0 + s(2)));
        assert_eq!(p.next(t0 + s(2)), Some(peer(1)));
        assert_eq!(p.next(t0 + s(30)), Some(peer(2)));
        // Third failure: given up.
        assert_eq!(
            p.failed(peer(1), Failure::Transient, t0 + s(3)),
            Verdict::RetryIn(s(4))
        );
        p.next(t0 + s(7)).unwrap();
        assert_eq!(
            p.failed(peer(1), Failure::Transient, t0 + s(8)),
            Verdict::GaveUp
        );
        p.ended(peer(2));
        p.ended(peer(3));
        assert!(p.is_idle());
    }

    /// A retry due while every slot is busy does not make `wake_at` return
    /// a time in the past (the fetch loop would spin).
    #[test]
    fn wake_is_always_in_the_future() {
        let t0 = Instant::now();
        let mut p = Plan::default();
        for n in 0..4 {
            p.learn(peer(n));
        }
        for _ in 0..4 {
            p.next(t0).unwrap();
        }
        p.failed(peer(0), Failure::Transient, t0);
        p.learn(peer(4));
        assert_eq!(p.next(t0), Some(peer(4)));
        // The retry of peer 0 is due now, and all four slots are busy.
        let now = t0 + s(2);
        for n in 1..5 {
            p.progress(peer(n), now);
        }
        assert_eq!(p.next(now), None);
        let wake = p.wake_at(now).unwrap();
        assert!(wake > now);
        assert_eq!(wake, now + SLOW);
    }
}
