//! Super-seeding (BEP 16): an initial seeder that hides what it has and
//! shows each peer only a few pieces at a time, so each piece leaves the
//! seeder about once and the rest travels between the leechers.
//!
//! A plain seeder lets every unchoked leecher pick what it thinks rarest.
//! They pick independently, so near the end they ask for the same
//! seed-only pieces: in the swarm runs (docs/swarm.md) the seeder sent
//! 1.5 F before every piece existed once, and a seeder that left after
//! sending F left the swarm without 30 % of the pieces.
//!
//! Pure: the torrent asks which pieces to reveal to a peer (and sends them
//! as `have`), and tells it when a peer announced a piece, lost its slot
//! or left. A piece is shown to one peer at a time, and only while no
//! peer has it: once every piece exists in the swarm, super-seeding is
//! over and the torrent seeds as usual. In that tail, peers whose pieces
//! are all delivered get nothing new here, which costs nothing: the
//! seeder's link is the bottleneck and goes to those still fetching.
//! A peer that loses its upload slot gives its shown pieces back, so a
//! choked peer never holds the last seed-only pieces.

use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::Rng;

use crate::bitfield::Bitfield;

/// Pieces revealed and not yet announced, per unchoked peer: ~512 KiB,
/// about a second of requests at a few Mbit/s (2 to 32 pieces), but never
/// more than a sixteenth of the torrent, so that the unchoked peers do
/// not hold most of the pieces left between them.
pub fn window(piece_length: u64, piece_count: u32) -> usize {
    let by_size = ((512u64 << 10) / piece_length.max(1)).clamp(2, 32) as usize;
    by_size.min((piece_count as usize / 16).max(1))
}

#[derive(Debug, Default)]
pub struct SuperSeed {
    /// Pieces shown to each peer that it does not have yet.
    shown: HashMap<u64, Vec<u32>>,
    /// For each piece, whether some peer is being shown it.
    out: Vec<bool>,
}

impl SuperSeed {
    pub fn new(piece_count: u32) -> SuperSeed {
        SuperSeed {
            shown: HashMap::new(),
            out: vec![false; piece_count as usize],
        }
    }

    /// Up to `want` pieces in all shown to `peer` and not yet had by it:
    /// the new ones to reveal now. Chosen at random among pieces that no
    /// peer has (`availability` 0) and none is being shown.
    pub fn reveal(
        &mut self,
        peer: u64,
        want: usize,
        has: &Bitfield,
        availability: impl Fn(u32) -> u32,
        rng: &mut impl Rng,
    ) -> Vec<u32> {
        let shown = self.shown.entry(peer).or_default();
        let out = &mut self.out;
        shown.retain(|&p| {
            let keep = !has.get(p as usize);
            if !keep {
                out[p as usize] = false;
            }
            keep
        });
        let missing = want.saturating_sub(shown.len());
        if missing == 0 {
            return Vec::new();
        }
        let mut pool: Vec<u32> = (0..out.len() as u32)
            .filter(|&p| !out[p as usize] && !has.get(p as usize) && availability(p) == 0)
            .collect();
        pool.shuffle(rng);
        pool.truncate(missing);
        for &p in &pool {
            out[p as usize] = true;
        }
        shown.extend_from_slice(&pool);
        pool
    }

    /// `peer` announced `piece`. True if it was one we showed it (so it
    /// may be shown another).
    pub fn announced(&mut self, peer: u64, piece: u32) -> bool {
        let Some(shown) = self.shown.get_mut(&peer) else {
            return false;
        };
        let Some(i) = shown.iter().position(|&p| p == piece) else {
            return false;
        };
        shown.swap_remove(i);
        if let Some(o) = self.out.get_mut(piece as usize) {
            *o = false;
        }
        true
    }

    /// `peer` lost its upload slot or left: what it was shown and did not
    /// get may be shown to others.
    pub fn release(&mut self, peer: u64) {
        for p in self.shown.remove(&peer).unwrap_or_default() {
            if let Some(o) = self.out.get_mut(p as usize) {
                *o = false;
            }
        }
    }

    /// Pieces shown to `peer` and not yet announced.
    pub fn outstanding(&self, peer: u64) -> usize {
        self.shown.get(&peer).map_or(0, Vec::len)
    }

    /// Every piece exists among the peers: super-seeding is over.
    pub fn finished(&self, availability: impl Fn(u32) -> u32) -> bool {
        (0..self.out.len() as u32).all(|p| availability(p) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[test]
    fn window_is_about_half_a_mib_and_a_small_part_of_the_torrent() {
        assert_eq!(window(16384, 1024), 32);
        assert_eq!(window(128 << 10, 1000), 4);
        assert_eq!(window(4 << 20, 1000), 2);
        assert_eq!(window(0, 1000), 32);
        assert_eq!(window(65536, 61), 3);
        assert_eq!(window(16384, 10), 1);
    }

    /// Each piece is shown to one peer at a time; a peer is shown a new
    /// piece for each one it announces; what some peer has is never shown.
    #[test]
    fn each_piece_shown_to_one_peer_at_a_time() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = SuperSeed::new(40);
        let empty = Bitfield::new(40);
        let mut avail = [0u32; 40];
        let mut seen = HashSet::new();
        for peer in 0..4 {
            for p in s.reveal(peer, 5, &empty, |i| avail[i as usize], &mut rng) {
                assert!(seen.insert(p), "piece {p} shown twice");
            }
        }
        assert_eq!(seen.len(), 20);
        assert!(s.reveal(0, 5, &empty, |_| 0, &mut rng).is_empty());
        // A peer announces one: one new piece, never shown before.
        let first = *seen.iter().next().unwrap();
        let owner = (0..4).find(|&k| s.shown[&k].contains(&first)).unwrap();
        assert!(s.announced(owner, first));
        assert!(!s.announced(owner, first), "counted once");
        avail[first as usize] = 1;
        let mut has = Bitfield::new(40);
        has.set(first as usize);
        let next = s.reveal(owner, 5, &has, |i| avail[i as usize], &mut rng);
        assert_eq!(next.len(), 1);
        assert!(seen.insert(next[0]));
        // The 19 never shown go to a new peer; then nothing is left to show
        // while the others hold theirs.
        let more = s.reveal(9, 30, &empty, |i| avail[i as usize], &mut rng);
        assert_eq!(more.len(), 19);
        assert!(more.iter().all(|p| seen.insert(*p)));
        assert!(s
            .reveal(10, 1, &empty, |i| avail[i as usize], &mut rng)
            .is_empty());
        assert!(!s.finished(|i| avail[i as usize]));
        assert!(s.finished(|_| 1));
    }

    #[test]
    fn a_choked_or_departed_peer_gives_its_pieces_back() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = SuperSeed::new(4);
        let empty = Bitfield::new(4);
        let a = s.reveal(1, 2, &empty, |_| 0, &mut rng);
        assert_eq!(s.reveal(2, 4, &empty, |_| 0, &mut rng).len(), 2);
        s.release(1);
        assert_eq!(s.outstanding(1), 0);
        let b = s.reveal(3, 4, &empty, |_| 0, &mut rng);
        let mut b2 = b.clone();
        b2.sort_unstable();
        let mut a2 = a.clone();
        a2.sort_unstable();
        assert_eq!(a2, b2);
        // A piece the peer got elsewhere is no longer outstanding, and one
        // that exists in the swarm is not shown again.
        let mut has = Bitfield::new(4);
        has.set(b[0] as usize);
        let gone = b[0];
        assert!(s
            .reveal(3, 4, &has, |i| u32::from(i == gone), &mut rng)
            .is_empty());
        assert_eq!(s.outstanding(3), 1);
        assert!(!s.announced(7, 0), "unknown peer");
    }
}
