//! Chooses which peers we upload to (BEP 3's tit-for-tat).
//!
//! Pure: the torrent calls `rechoke` every 10 s with a snapshot and applies the
//! answer. Leeching, regular slots reward the peers that give us the most;
//! seeding, they go round in turns of `SEED_TURN_SECS`, longest-waiting peer
//! first. One optimistic slot rotates every 30 s so new peers get a chance to
//! prove themselves and we find better partners.
//!
//! The optimistic slot goes to the peer we have not unchoked for longest,
//! never-unchoked first, and one that sent us nothing in its first round
//! makes way early when a never-unchoked peer is waiting. With a random
//! draw held 30 s, a latecomer in a 40-peer swarm that missed the first
//! draws was unchoked by nobody for 35 s, longer than the others took for
//! the whole file (docs/swarm.md).
//!
//! Seeding used to favour whoever took data fastest. In a swarm of capped
//! uplinks (docs/swarm.md) that was a peer that uploads nothing: its uplink
//! is idle, so its ACKs come back without queueing and its TCP flow wins the
//! seeder's link, and the fastest-taker rule then kept it unchoked for the
//! whole download (a free rider had 108 pieces after one second, the others
//! 8-62). Turns give every leecher the same share of the seeder.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// How long an optimistic unchoke lasts: three 10 s rounds, long enough for a
/// peer to ramp up and reciprocate.
pub const OPTIMISTIC_SECS: u64 = 30;

/// After this long an optimistic peer that has given us nothing makes way
/// for one never unchoked (one rechoke round).
pub const OPTIMISTIC_TRIAL_SECS: u64 = 10;

/// Seeding: how long a peer keeps a regular slot before it makes way for one
/// that has waited longer (one rechoke round).
pub const SEED_TURN_SECS: u64 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub key: u64,
    pub interested: bool,
    /// Bytes/s they give us.
    pub download_rate: u64,
    /// Bytes/s we send them.
    pub upload_rate: u64,
    pub snubbed: bool,
}

#[derive(Debug)]
pub struct Choker {
    slots: usize,
    /// Never unchoke anyone: a free rider, for the swarm harness only.
    free_ride: bool,
    optimistic: Option<u64>,
    optimistic_since: u64,
    /// Seeding: when each peer got the regular slot it holds.
    serving_since: HashMap<u64, u64>,
    /// Seeding: when each peer last lost a regular slot.
    served_until: HashMap<u64, u64>,
    /// When we last unchoked each peer (either kind of slot).
    unchoked_at: HashMap<u64, u64>,
    /// When each peer first appeared, so the never-unchoked wait in turn.
    first_seen: HashMap<u64, u64>,
    rng: StdRng,
}

impl Choker {
    /// `slots` regular upload slots; `free_ride` never unchokes anyone, so
    /// not one byte of piece data goes up (an honest free rider for the
    /// swarm harness, benches/swarm: its links stay as fast as anyone's,
    /// so its requests and ACKs still flow). Ties are broken by a
    /// generator seeded with `seed`.
    pub fn new(slots: usize, free_ride: bool, seed: u64) -> Choker {
        let mut c = Choker::with_rng(slots, StdRng::seed_from_u64(seed));
        c.free_ride = free_ride;
        c
    }

    /// Same as `new` without free riding, for tests.
    pub fn with_seed(upload_slots: usize, seed: u64) -> Choker {
        Choker::new(upload_slots, false, seed)
    }

    fn with_rng(slots: usize, rng: StdRng) -> Choker {
        Choker {
            slots,
            free_ride: false,
            optimistic: None,
            optimistic_since: 0,
            serving_since: HashMap::new(),
            served_until: HashMap::new(),
            unchoked_at: HashMap::new(),
            first_seen: HashMap::new(),
            rng,
        }
    }

    /// `now_secs` = monotonic seconds; `seeding` = we have everything. Returns the keys to
    /// unchoke (all others choked): the regular slots, then the optimistic one.
    pub fn rechoke(&mut self, peers: &[PeerSnapshot], seeding: bool, now_secs: u64) -> Vec<u64> {
        if self.free_ride {
            return Vec::new();
        }
        // A key listed twice counts once (first entry wins).
        let mut seen = HashSet::new();
        let peers: Vec<&PeerSnapshot> = peers.iter().filter(|p| seen.insert(p.key)).collect();

        // Snubbed peers aren't sending despite our requests: a regular slot is
        // wasted on them while leeching. Seeding, nobody sends us anything anyway.
        let mut candidates: Vec<&PeerSnapshot> = peers
            .iter()
            .copied()
            .filter(|p| p.interested && (seeding || !p.snubbed))
            .collect();
        // Shuffle, then stable-sort: equal rates end up in random order.
        candidates.shuffle(&mut self.rng);
        if seeding {
            // Turns: a peer within its turn keeps its slot; the other slots
            // go to those never served, then to those waiting longest.
            let holding = |k: u64| {
                self.serving_since
                    .get(&k)
                    .is_some_and(|&s| now_secs.saturating_sub(s) < SEED_TURN_SECS)
            };
            // A turn that ends now counts as served until now.
            let waited = |k: u64| {
                if self.serving_since.contains_key(&k) {
                    Some(now_secs)
                } else {
                    self.served_until.get(&k).copied()
                }
            };
            candidates.sort_by_key(|p| (!holding(p.key), waited(p.key)));
        } else {
            candidates.sort_by_key(|p| (Reverse(p.download_rate), Reverse(p.upload_rate)));
        }
        let mut unchoke: Vec<u64> = candidates.iter().take(self.slots).map(|p| p.key).collect();
        if seeding {
            let ended: Vec<u64> = self
                .serving_since
                .keys()
                .copied()
                .filter(|k| !unchoke.contains(k))
                .collect();
            for k in ended {
                self.serving_since.remove(&k);
                self.served_until.insert(k, now_secs);
            }
            for &k in &unchoke {
                self.serving_since.entry(k).or_insert(now_secs);
            }
            let present: HashSet<u64> = peers.iter().map(|p| p.key).collect();
            self.served_until.retain(|k, _| present.contains(k));
        } else {
            self.serving_since.clear();
        }

        let eligible = |key: u64| {
            !unchoke.contains(&key) && peers.iter().any(|p| p.key == key && p.interested)
        };
        let current = self.optimistic.filter(|&k| eligible(k));
        for p in &peers {
            self.first_seen.entry(p.key).or_insert(now_secs);
        }
        // Shuffled, then stable-sorted: the never-unchoked first, in order
        // of arrival, then the least recently unchoked; ties at random.
        let mut pool: Vec<u64> = peers
            .iter()
            .filter(|p| Some(p.key) != current && eligible(p.key))
            .map(|p| p.key)
            .collect();
        pool.shuffle(&mut self.rng);
        pool.sort_by_key(|k| match self.unchoked_at.get(k) {
            None => (false, self.first_seen.get(k).copied()),
            Some(&t) => (true, Some(t)),
        });
        let held = now_secs.saturating_sub(self.optimistic_since);
        let gave_nothing = |k: u64| peers.iter().any(|p| p.key == k && p.download_rate == 0);
        let newcomer_waiting = pool
            .first()
            .is_some_and(|k| !self.unchoked_at.contains_key(k));
        let next = match current {
            Some(k)
                if held < OPTIMISTIC_SECS
                    && !(held >= OPTIMISTIC_TRIAL_SECS && gave_nothing(k) && newcomer_waiting) =>
            {
                Some(k)
            }
            _ => {
                // With nobody else to rotate to, the current one keeps the slot.
                let pick = pool.first().copied().or(current);
                if pick.is_some() {
                    self.optimistic_since = now_secs;
                }
                pick
            }
        };
        self.optimistic = next;
        unchoke.extend(next);
        for &k in &unchoke {
            self.unchoked_at.insert(k, now_secs);
        }
        let present: HashSet<u64> = peers.iter().map(|p| p.key).collect();
        self.unchoked_at.retain(|k, _| present.contains(k));
        self.first_seen.retain(|k, _| present.contains(k));
        unchoke
    }

    pub fn optimistic(&self) -> Option<u64> {
        self.optimistic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: u64, down: u64, up: u64) -> PeerSnapshot {
        PeerSnapshot {
            key,
            interested: true,
            download_rate: down,
            upload_rate: up,
            snubbed: false,
        }
    }

    fn regular(unchoked: &[u64], c: &Choker) -> Vec<u64> {
        let mut r: Vec<u64> = unchoked
            .iter()
            .copied()
            .filter(|&k| Some(k) != c.optimistic())
            .collect();
        r.sort_unstable();
        r
    }

    #[test]
    fn leeching_picks_best_downloaders_skipping_snubbed() {
        let mut peers: Vec<PeerSnapshot> = (0..10).map(|k| peer(k, k * 100, 1000 - k)).collect();
        peers[9].snubbed = true;
        peers[8].interested = false;
        let mut c = Choker::with_seed(4, 1);
        let out = c.rechoke(&peers, false, 0);
        assert_eq!(out.len(), 5);
        assert_eq!(regular(&out, &c), vec![4, 5, 6, 7]);
        let opt = c.optimistic().unwrap();
        assert!(opt != 8, "not interested");
        assert!(opt <= 3 || opt == 9, "{opt}");
    }

    #[test]
    fn leeching_ties_broken_by_upload_then_random() {
        let peers = vec![
            peer(1, 50, 1),
            peer(2, 50, 9),
            peer(3, 50, 5),
            peer(4, 10, 0),
        ];
        let mut c = Choker::with_seed(2, 3);
        let out = c.rechoke(&peers, false, 0);
        assert_eq!(regular(&out, &c), vec![2, 3]);

        let mut firsts = HashSet::new();
        for seed in 0..20 {
            let peers: Vec<PeerSnapshot> = (0..8).map(|k| peer(k, 0, 0)).collect();
            let mut c = Choker::with_seed(1, seed);
            firsts.insert(c.rechoke(&peers, false, 0)[0]);
        }
        assert!(firsts.len() > 2);
    }

    #[test]
    fn seeding_gives_turns_longest_waiting_first() {
        // Rates do not matter when seeding: the fastest taker has no claim.
        let mut peers: Vec<PeerSnapshot> = (0..9).map(|k| peer(k, 0, k * 1000)).collect();
        // Snubbing is about what they send us: irrelevant when seeding.
        peers[8].snubbed = true;
        let mut c = Choker::with_seed(3, 1);
        let mut served = Vec::new();
        let first = regular(&c.rechoke(&peers, true, 0), &c);
        assert_eq!(first.len(), 3);
        // Within the turn (a rechoke for a newcomer, say) nobody moves.
        assert_eq!(regular(&c.rechoke(&peers, true, 5), &c), first);
        served.extend(first.iter().copied());
        // Next turns: those never served, then the longest waiting.
        let second = regular(&c.rechoke(&peers, true, 10), &c);
        assert!(second.iter().all(|k| !served.contains(k)), "{second:?}");
        served.extend(second.iter().copied());
        let third = regular(&c.rechoke(&peers, true, 20), &c);
        assert!(third.iter().all(|k| !served.contains(k)), "{third:?}");
        served.extend(third.iter().copied());
        served.sort_unstable();
        assert_eq!(served, (0..9).collect::<Vec<u64>>());
        // Round two starts with the first turn's peers.
        assert_eq!(regular(&c.rechoke(&peers, true, 30), &c), first);
    }

    #[test]
    fn seeding_turn_kept_while_interested_only() {
        let mut peers: Vec<PeerSnapshot> = (0..4).map(|k| peer(k, 0, 0)).collect();
        let mut c = Choker::with_seed(2, 5);
        let first = regular(&c.rechoke(&peers, true, 0), &c);
        // One of them is done with us: its slot goes at once to someone else.
        peers[first[0] as usize].interested = false;
        let now = regular(&c.rechoke(&peers, true, 3), &c);
        assert!(
            now.contains(&first[1]) && !now.contains(&first[0]),
            "{now:?}"
        );
        assert_eq!(now.len(), 2);
    }

    #[test]
    fn optimistic_lasts_30_s_then_rotates() {
        // The others give a little: nobody is cut short after one round.
        let peers: Vec<PeerSnapshot> = (0..20)
            .map(|k| peer(k, if k < 4 { 1000 } else { 10 }, 0))
            .collect();
        let mut c = Choker::with_seed(4, 7);
        let mut history = Vec::new();
        for round in 0..30u64 {
            let out = c.rechoke(&peers, false, round * 10);
            let opt = c.optimistic().unwrap();
            assert_eq!(out.last(), Some(&opt));
            assert!(opt >= 4, "optimistic is never a regular peer");
            assert_eq!(regular(&out, &c), vec![0, 1, 2, 3]);
            history.push(opt);
        }
        for chunk in history.chunks(3) {
            assert!(chunk.iter().all(|&k| k == chunk[0]), "{history:?}");
        }
        for pair in history.chunks(3).collect::<Vec<_>>().windows(2) {
            assert_ne!(pair[0][0], pair[1][0], "rotates to someone else");
        }
        // Least recently unchoked first: the 16 others each get one turn
        // before anyone gets a second.
        let turns: Vec<u64> = history.chunks(3).map(|c| c[0]).collect();
        let first16: HashSet<u64> = turns[..10].iter().copied().collect();
        assert_eq!(first16.len(), 10, "{turns:?}");
    }

    #[test]
    fn never_unchoked_peers_get_the_optimistic_slot_in_order_of_arrival() {
        let mut peers: Vec<PeerSnapshot> = (0..8)
            .map(|k| peer(k, if k < 2 { 1000 } else { 10 }, 0))
            .collect();
        let mut c = Choker::with_seed(2, 11);
        let mut picks = Vec::new();
        for round in 0..30u64 {
            if round == 4 {
                peers.push(peer(99, 10, 0));
            }
            c.rechoke(&peers, false, round * 10);
            let opt = c.optimistic().unwrap();
            if picks.last() != Some(&opt) {
                picks.push(opt);
            }
        }
        // The six old candidates (arrived first) each once, then the
        // newcomer, before anyone's second turn.
        assert_eq!(picks[6], 99, "{picks:?}");
        let first: HashSet<u64> = picks[..7].iter().copied().collect();
        assert_eq!(first.len(), 7, "{picks:?}");
    }

    #[test]
    fn optimistic_that_gives_nothing_makes_way_after_one_round() {
        let mut peers: Vec<PeerSnapshot> = (0..2).map(|k| peer(k, 1000, 0)).collect();
        peers.extend((2..8).map(|k| peer(k, 0, 0)));
        let mut c = Choker::with_seed(2, 4);
        let mut seen = Vec::new();
        for round in 0..6u64 {
            c.rechoke(&peers, false, round * 10);
            seen.push(c.optimistic().unwrap());
        }
        // Each of the six non-givers gets a 10 s trial in turn.
        let distinct: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), 6, "{seen:?}");
        // Once all have had one, the slot is held the full 30 s again.
        let last = seen[5];
        c.rechoke(&peers, false, 60);
        c.rechoke(&peers, false, 70);
        assert_eq!(c.optimistic(), Some(last));
        c.rechoke(&peers, false, 80);
        assert_ne!(c.optimistic(), Some(last));
        // One that gives keeps the slot its 30 s even with newcomers about.
        let opt = c.optimistic().unwrap();
        peers[opt as usize].download_rate = 50;
        peers.push(peer(42, 0, 0));
        c.rechoke(&peers, false, 90);
        assert_eq!(c.optimistic(), Some(opt));
        c.rechoke(&peers, false, 110);
        assert_eq!(c.optimistic(), Some(42));
    }

    #[test]
    fn optimistic_replaced_when_it_leaves_loses_interest_or_goes_regular() {
        let mut peers: Vec<PeerSnapshot> = (0..6).map(|k| peer(k, 100 - k, 0)).collect();
        let mut c = Choker::with_seed(2, 2);
        c.rechoke(&peers, false, 0);
        let opt = c.optimistic().unwrap();
        assert!(opt >= 2);
        // Loses interest.
        peers[opt as usize].interested = false;
        c.rechoke(&peers, false, 10);
        let opt2 = c.optimistic().unwrap();
        assert_ne!(opt2, opt);
        // Becomes the best downloader: promoted, and a new optimistic is drawn.
        peers[opt2 as usize].download_rate = 10_000;
        let out = c.rechoke(&peers, false, 20);
        assert!(out.contains(&opt2));
        assert_ne!(c.optimistic(), Some(opt2));
        assert_eq!(out.len(), 3);
        // Leaves.
        let opt3 = c.optimistic().unwrap();
        peers.retain(|p| p.key != opt3);
        c.rechoke(&peers, false, 30);
        assert!(c.optimistic().is_some_and(|k| k != opt3));
    }

    #[test]
    fn fewer_interested_than_slots() {
        let mut peers = vec![peer(1, 5, 0), peer(2, 0, 0), peer(3, 9, 0)];
        peers[1].interested = false;
        let mut c = Choker::with_seed(4, 0);
        let mut out = c.rechoke(&peers, false, 0);
        out.sort_unstable();
        assert_eq!(out, vec![1, 3]);
        assert_eq!(c.optimistic(), None);
        assert!(c.rechoke(&[], false, 10).is_empty());
        assert!(c.rechoke(&[], true, 20).is_empty());
        // Zero slots: just the optimistic one.
        let mut c = Choker::with_seed(0, 0);
        let out = c.rechoke(&peers, false, 0);
        assert_eq!(out.len(), 1);
        assert_eq!(c.optimistic(), Some(out[0]));
    }

    #[test]
    fn free_rider_unchokes_nobody() {
        let peers: Vec<PeerSnapshot> = (0..6).map(|k| peer(k, 100, 100)).collect();
        let mut c = Choker::with_seed(4, 0);
        c.free_ride = true;
        for round in 0..5 {
            assert!(c.rechoke(&peers, round % 2 == 0, round * 10).is_empty());
        }
        assert_eq!(c.optimistic(), None);
    }

    #[test]
    fn lone_optimistic_candidate_keeps_slot_after_expiry() {
        let peers = vec![peer(1, 100, 0), peer(2, 0, 0)];
        let mut c = Choker::with_seed(1, 0);
        for round in 0..10 {
            let out = c.rechoke(&peers, false, round * 10);
            assert_eq!(out, vec![1, 2]);
        }
        // Duplicate keys are counted once.
        let dup = vec![peer(1, 100, 0), peer(1, 100, 0), peer(2, 0, 0)];
        assert_eq!(c.rechoke(&dup, false, 200), vec![1, 2]);
    }
}
