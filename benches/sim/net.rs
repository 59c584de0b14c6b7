//! The simulator's network: links with a capacity, flows over two links
//! each (the sender's uplink, the receiver's downlink), their rates by
//! max-min fair sharing, and a calendar of timed events. Nothing here
//! knows of BitTorrent; `swarm.rs` puts the cores on top.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

/// A flow's rate is `share` while it waits in the heap: the order of
/// progressive filling (smallest share first).
#[derive(PartialEq)]
struct Entry {
    share: f64,
    /// A link index, or `FLOW | flow` for a flow's own cap.
    item: usize,
}

const FLOW: usize = 1 << 62;

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> Ordering {
        // Reversed: BinaryHeap pops the largest, we want the smallest.
        other
            .share
            .total_cmp(&self.share)
            .then(other.item.cmp(&self.item))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One direction of a connection: data from the owner of `up` to the
/// owner of `down`, capped at `cap` (loss, see `swarm.rs`).
pub struct Flow {
    pub up: usize,
    pub down: usize,
    pub cap: f64,
    /// Bytes a second, as last computed (0 while idle).
    pub rate: f64,
    /// Index in `Net::active`, while it has data to send.
    slot: Option<usize>,
}

/// Links and flows. A flow is active while its sender has data queued
/// for it; rates are recomputed (max-min fair) whenever the set of
/// active flows changed since the last computation.
pub struct Net {
    /// Capacity of each link, bytes a second.
    pub cap: Vec<f64>,
    /// Sum of the rates of the active flows on each link.
    pub load: Vec<f64>,
    pub flows: Vec<Flow>,
    pub active: Vec<usize>,
    dirty: bool,
    /// How many times rates were computed (for the report).
    pub recomputes: u64,
    // Buffers kept between computations.
    rem: Vec<f64>,
    n: Vec<u32>,
    on_link: Vec<Vec<usize>>,
    frozen: Vec<bool>,
}

impl Net {
    pub fn new(cap: Vec<f64>) -> Net {
        let links = cap.len();
        Net {
            cap,
            load: vec![0.0; links],
            flows: Vec::new(),
            active: Vec::new(),
            dirty: false,
            recomputes: 0,
            rem: vec![0.0; links],
            n: vec![0; links],
            on_link: vec![Vec::new(); links],
            frozen: Vec::new(),
        }
    }

    /// A new idle flow from link `up` to link `down`; its index.
    pub fn add_flow(&mut self, up: usize, down: usize, cap: f64) -> usize {
        self.flows.push(Flow {
            up,
            down,
            cap,
            rate: 0.0,
            slot: None,
        });
        self.frozen.push(false);
        self.flows.len() - 1
    }

    pub fn activate(&mut self, f: usize) {
        if self.flows[f].slot.is_none() {
            self.flows[f].slot = Some(self.active.len());
            self.active.push(f);
            self.dirty = true;
        }
    }

    pub fn deactivate(&mut self, f: usize) {
        let Some(i) = self.flows[f].slot.take() else {
            return;
        };
        self.active.swap_remove(i);
        if let Some(&moved) = self.active.get(i) {
            self.flows[moved].slot = Some(i);
        }
        self.flows[f].rate = 0.0;
        self.dirty = true;
    }

    /// Whether link `l` is (nearly) full: its queue is standing.
    pub fn saturated(&self, l: usize) -> bool {
        self.load[l] >= 0.97 * self.cap[l]
    }

    /// Max-min fair rates of the active flows, if anything changed:
    /// progressive filling, the link (or flow cap) with the smallest fair
    /// share first; a share only grows as flows are fixed at smaller ones,
    /// so outdated heap entries are skipped.
    pub fn update_rates(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.recomputes += 1;
        for l in 0..self.cap.len() {
            self.rem[l] = self.cap[l];
            self.n[l] = 0;
            self.on_link[l].clear();
            self.load[l] = 0.0;
        }
        let mut heap = BinaryHeap::with_capacity(self.active.len());
        for &f in &self.active {
            let fl = &self.flows[f];
            self.frozen[f] = false;
            for l in [fl.up, fl.down] {
                self.n[l] += 1;
                self.on_link[l].push(f);
            }
            if fl.cap.is_finite() {
                heap.push(Entry {
                    share: fl.cap,
                    item: FLOW | f,
                });
            }
        }
        for l in 0..self.cap.len() {
            if self.n[l] > 0 {
                let share = self.rem[l] / self.n[l] as f64;
                heap.push(Entry { share, item: l });
            }
        }
        while let Some(Entry { share, item }) = heap.pop() {
            if item & FLOW != 0 {
                let f = item & !FLOW;
                if !self.frozen[f] {
                    self.fix(f, share, &mut heap);
                }
                continue;
            }
            let l = item;
            if self.n[l] == 0 {
                continue;
            }
            let now = self.rem[l].max(0.0) / self.n[l] as f64;
            if now > share * (1.0 + 1e-12) + 1e-9 {
                continue; // a newer entry holds the present share
            }
            let flows = std::mem::take(&mut self.on_link[l]);
            for &f in &flows {
                if !self.frozen[f] {
                    self.fix(f, now, &mut heap);
                }
            }
            self.on_link[l] = flows;
        }
    }

    /// Fixes flow `f` at `rate` and updates its two links' shares.
    fn fix(&mut self, f: usize, rate: f64, heap: &mut BinaryHeap<Entry>) {
        self.frozen[f] = true;
        let rate = rate.max(0.0);
        self.flows[f].rate = rate;
        let (up, down) = (self.flows[f].up, self.flows[f].down);
        for l in [up, down] {
            self.rem[l] -= rate;
            self.n[l] -= 1;
            self.load[l] += rate;
            if self.n[l] > 0 {
                let share = self.rem[l].max(0.0) / self.n[l] as f64;
                heap.push(Entry { share, item: l });
            }
        }
    }
}

/// Events by the step they are due at: a ring of buckets for the near
/// future, a map for the far.
pub struct Calendar<E> {
    ring: Vec<Vec<E>>,
    far: BTreeMap<u64, Vec<E>>,
    /// The step being run; nothing may be scheduled before it.
    pub now: u64,
    pub pending: usize,
}

const RING: u64 = 4096;

impl<E> Calendar<E> {
    pub fn new() -> Calendar<E> {
        Calendar {
            ring: (0..RING).map(|_| Vec::new()).collect(),
            far: BTreeMap::new(),
            now: 0,
            pending: 0,
        }
    }

    /// `e` is due at step `at` (the present step at the earliest).
    pub fn at(&mut self, at: u64, e: E) {
        let at = at.max(self.now);
        self.pending += 1;
        if at - self.now < RING {
            self.ring[(at % RING) as usize].push(e);
        } else {
            self.far.entry(at).or_default().push(e);
        }
    }

    /// What is due at the present step (call until empty: handling an
    /// event may schedule more for now).
    pub fn take_now(&mut self, out: &mut Vec<E>) {
        let b = &mut self.ring[(self.now % RING) as usize];
        std::mem::swap(b, out);
        if let Some(far) = self.far.remove(&self.now) {
            out.extend(far);
        }
        self.pending -= out.len();
    }

    /// Moves on to the next step.
    pub fn advance(&mut self) {
        self.now += 1;
        // Far events come into reach of the ring as time moves.
        let reach = self.now + RING - 1;
        if let Some((&first, _)) = self.far.first_key_value() {
            if first <= reach {
                let due: Vec<u64> = self.far.range(..=reach).map(|(k, _)| *k).collect();
                for k in due {
                    if let Some(v) = self.far.remove(&k) {
                        self.ring[(k % RING) as usize].extend(v);
                    }
                }
            }
        }
    }
}
