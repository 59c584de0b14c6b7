//! What a simulator run is told (the scenario and the network, as the
//! command line gives them) and what it reports; the fluid lower bound
//! T*; the run's own seeded generator.

/// The scenario and the network, as the command line gives them.
#[derive(Clone, Debug)]
pub struct Params {
    /// Leechers (the seeder comes on top).
    pub peers: usize,
    pub seed: u64,
    /// File size and piece size, bytes.
    pub size: u64,
    pub piece: u64,
    /// Link rates, bits a second: the seeder's uplink, the leechers'
    /// uplinks (given in turn), everyone's downlink.
    pub seed_up: f64,
    pub up: Vec<f64>,
    pub down: f64,
    /// Round-trip time between two hosts, ms, given in turn per leecher
    /// (a path's delay is half of each end's).
    pub rtt_ms: Vec<f64>,
    /// Packet loss of each host's access link (its flows are capped by
    /// TCP's loss response, Mathis et al.).
    pub loss: f64,
    /// How long a message waits behind a full uplink (the router queue;
    /// the netns harness has 200 ms tbf queues).
    pub queue_ms: f64,
    /// Share of a link's rate lost to headers and ACKs.
    pub overhead: f64,
    pub join: Join,
    /// The last `churn` leechers are killed at `churn_at` s (default T*/2)
    /// and start again `churn_down` s later with what they had verified.
    pub churn: usize,
    pub churn_at: Option<f64>,
    pub churn_down: f64,
    /// Leechers 1..=K never unchoke anyone.
    pub free_riders: usize,
    /// The seeder stops once it uploaded one copy.
    pub seed_leaves: bool,
    pub super_seed: bool,
    /// Leechers keep seeding once done (else they leave).
    pub linger: bool,
    pub max_peers: usize,
    /// Addresses a tracker announce returns, and how often leechers ask.
    pub numwant: usize,
    pub announce_every: f64,
    /// Virtual seconds after which the run gives up.
    pub timeout: f64,
    /// The step of the network model, seconds.
    pub dt: f64,
    /// Hash every piece for real (SHA-1) instead of trusting it.
    pub verify: bool,
    /// Seconds between samples of piece availability.
    pub sample_every: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Join {
    All,
    /// Each leecher at a random moment within this many seconds.
    Flash(f64),
    /// One every this many seconds.
    Staggered(f64),
}

impl Default for Params {
    /// The netns harness's common settings (docs/swarm.md).
    fn default() -> Params {
        Params {
            peers: 10,
            seed: 1,
            size: 16 << 20,
            piece: 16 << 10,
            seed_up: 16e6,
            up: vec![8e6],
            down: 100e6,
            rtt_ms: vec![1.0],
            loss: 0.0,
            queue_ms: 200.0,
            overhead: 0.06,
            join: Join::All,
            churn: 0,
            churn_at: None,
            churn_down: 2.0,
            free_riders: 0,
            seed_leaves: false,
            super_seed: false,
            linger: false,
            max_peers: 50,
            numwant: 50,
            announce_every: 60.0,
            timeout: 0.0,
            dt: 0.005,
            verify: false,
            sample_every: 0.25,
        }
    }
}

impl Params {
    pub fn up_of(&self, leecher: usize) -> f64 {
        self.up[(leecher - 1) % self.up.len()]
    }

    /// The fluid lower bound of docs/swarm.md: max(F/u_s, F/min d_i,
    /// N·F/(u_s + Σu_i)), a free rider's u_i counted as 0.
    pub fn t_star(&self) -> f64 {
        let f = self.size as f64 * 8.0;
        let sum: f64 = (1..=self.peers)
            .filter(|&i| i > self.free_riders)
            .map(|i| self.up_of(i))
            .sum();
        let n = self.peers as f64;
        (f / self.seed_up)
            .max(f / self.down)
            .max(n * f / (self.seed_up + sum))
    }
}

/// A small seeded generator (SplitMix64): the run's own random choices
/// (join times, tracker answers), apart from each core's seeded ones.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A sample of the swarm at one instant.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t: f64,
    /// Fewest copies of any piece among the leechers present, and the same
    /// counting the seeder while it is there.
    pub min_leechers: u32,
    pub min_all: u32,
    /// Mean copies per piece among the leechers present.
    pub mean: f64,
    /// Share of the pieces that exist among the leechers present.
    pub exist: f64,
    pub leechers: usize,
    pub done: usize,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub n: usize,
    /// From the first leecher's start to the last one's verified end.
    pub t: Option<f64>,
    pub t_star: f64,
    pub done: usize,
    /// Each leecher's time from its first start to done.
    pub times: Vec<f64>,
    /// The seeder's upload (in copies of the file) when every piece first
    /// existed among the leechers, and when.
    pub seed_up_at_all: Option<(f64, f64)>,
    pub seed_uploaded: f64,
    /// Pieces any node verified more than once.
    pub pieces_twice: usize,
    /// Block bytes received that the node already had, and all bytes.
    pub dup_bytes: u64,
    pub bytes: u64,
    /// The lowest availability seen (seeder counted) while it was present.
    pub min_all_with_seeder: u32,
    pub free_rider_median: Option<f64>,
    pub contributor_median: Option<f64>,
    pub samples: Vec<Sample>,
    /// Pieces each leecher verified (over all its runs), and the count.
    pub verified: Vec<usize>,
    pub pieces: usize,
    pub events: u64,
    pub steps: u64,
    pub recomputes: u64,
}
