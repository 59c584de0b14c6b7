//! Picker throughput: picks with 100 peers at 10k and 100k pieces, and the cost
//! of availability updates (a peer's bitfield arriving/leaving, a `have`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal::bitfield::Bitfield;
use shoal::torrent::picker::{BlockOutcome, PeerHas, Picker, BLOCK_LEN};
use std::time::{Duration, Instant};

const PEERS: usize = 100;
const PIECE_LEN: u32 = 16 * BLOCK_LEN;

/// Deterministic xorshift so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Peer bitfields with densities from ~6 % to ~94 %.
fn peer_bitfields(pieces: u32, rng: &mut Rng) -> Vec<Bitfield> {
    (0..PEERS)
        .map(|i| {
            let mut b = Bitfield::new(pieces as usize);
            let threshold = (i as u64 * 16 / PEERS as u64) + 1;
            for p in 0..pieces as usize {
                if rng.next() % 18 < threshold {
                    b.set(p);
                }
            }
            b
        })
        .collect()
}

/// A picker past the random-first phase with every peer's bitfield added.
fn setup(pieces: u32, peers: &[Bitfield]) -> Picker {
    let mut have = Bitfield::new(pieces as usize);
    for p in 0..8 {
        have.set(p);
    }
    let total = u64::from(pieces) * u64::from(PIECE_LEN);
    let mut picker = Picker::with_seed(pieces, PIECE_LEN, total, &have, 1);
    for b in peers {
        picker.add_bitfield(b);
    }
    picker
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for pieces in [10_000u32, 100_000] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let peers = peer_bitfields(pieces, &mut rng);
        let mut picker = setup(pieces, &peers);
        let mut out = Vec::with_capacity(64);
        let mut k = 0usize;
        // One pick of 32 blocks for the next peer in turn, then the peer drops
        // them again so the pool doesn't drain while measuring (this mostly
        // measures re-picking blocks of started pieces).
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("pick32_release", pieces),
            &pieces,
            |b, _| {
                b.iter(|| {
                    k = (k + 1) % PEERS;
                    out.clear();
                    picker.pick(k as u64, PeerHas::Some(&peers[k]), 32, &mut out);
                    black_box(&out);
                    picker.peer_gone(k as u64);
                })
            },
        );
        let mut picker = setup(pieces, &peers);
        group.bench_with_input(BenchmarkId::new("pick32_seed", pieces), &pieces, |b, _| {
            b.iter(|| {
                out.clear();
                picker.pick(1, PeerHas::All, 32, &mut out);
                black_box(&out);
                picker.peer_gone(1);
            })
        });
        // Fresh pieces every time: pick 32 blocks, deliver them, verify the
        // finished pieces. Rebuilt (untimed) once half the torrent is done.
        group.bench_with_input(
            BenchmarkId::new("pick32_download", pieces),
            &pieces,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut done = 0;
                    while done < iters {
                        let mut picker = setup(pieces, &peers);
                        let start = Instant::now();
                        while done < iters && picker.have().count_ones() < pieces as usize / 2 {
                            k = (k + 1) % PEERS;
                            out.clear();
                            picker.pick(k as u64, PeerHas::Some(&peers[k]), 32, &mut out);
                            for &blk in &out {
                                if let BlockOutcome::Accepted {
                                    piece_complete: true,
                                    ..
                                } = picker.on_block(k as u64, blk)
                                {
                                    picker.piece_passed(blk.index);
                                }
                            }
                            done += 1;
                        }
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

fn bench_updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("availability");
    let pieces = 100_000u32;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let peers = peer_bitfields(pieces, &mut rng);
    let mut picker = setup(pieces, &peers);
    let half = &peers[PEERS / 2];
    group.throughput(Throughput::Elements(half.count_ones() as u64 * 2));
    group.bench_function("add_remove_bitfield_100k", |b| {
        b.iter(|| {
            picker.add_bitfield(black_box(half));
            picker.remove_bitfield(black_box(half));
        })
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("add_remove_have_100k", |b| {
        b.iter(|| {
            let p = (rng.next() % u64::from(pieces)) as u32;
            picker.add_have(black_box(p));
            picker.remove_have(black_box(p));
        })
    });
    group.finish();
}

criterion_group!(benches, bench_pick, bench_updates);
criterion_main!(benches);
