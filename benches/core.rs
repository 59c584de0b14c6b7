//! Micro-benchmarks of the hot paths below the network: SHA-1 of a piece
//! (must run at SHA-NI speed) and the store's write + verify of a piece.

use std::sync::atomic::AtomicU64;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha1::{Digest, Sha1};
use shoal::metainfo::{Metainfo, NewTorrent};
use shoal::store::{Layout, Store};

fn sha1_piece(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "cpu sha extension: {}",
        if std::arch::is_x86_feature_detected!("sha") {
            "yes (sha1 uses SHA-NI)"
        } else {
            "no"
        }
    );
    let mut g = c.benchmark_group("sha1");
    for size in [256 << 10, 1 << 20] {
        let data = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("piece_{}KiB", size >> 10), |b| {
            b.iter(|| Sha1::digest(std::hint::black_box(&data)))
        });
    }
    g.finish();
}

fn store_write_verify(c: &mut Criterion) {
    let piece = 1usize << 20;
    let pieces = 64usize;
    let data: Vec<u8> = (0..piece).map(|i| (i * 31 % 251) as u8).collect();
    let hash: [u8; 20] = Sha1::digest(&data).into();
    let t = NewTorrent {
        name: "bench".into(),
        files: Some(vec![
            (vec!["a".into()], (piece * pieces / 2 + 12345) as u64),
            (vec!["b".into()], (piece * pieces / 2 - 12345) as u64),
        ]),
        piece_length: piece as u64,
        pieces: hash.repeat(pieces),
        ..Default::default()
    };
    let m = Metainfo::from_bytes(&t.to_bytes()).expect("bench torrent");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).expect("store");
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Bytes(piece as u64));
    let mut i = 0u32;
    g.bench_function("write_verify_1MiB_piece", |b| {
        b.iter(|| {
            let ok = <[u8; 20]>::from(Sha1::digest(&data)) == hash;
            assert!(ok);
            store.write_piece(i % pieces as u32, &data).expect("write");
            i += 1;
        })
    });
    g.bench_function("check_piece_1MiB", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            store
                .check_piece(i % pieces as u32, &mut buf)
                .expect("check")
        })
    });
    g.finish();
    let mut g = c.benchmark_group("store_all");
    g.throughput(Throughput::Bytes((piece * pieces) as u64));
    g.sample_size(10);
    g.bench_function("check_all_64MiB_all_cores", |b| {
        b.iter(|| {
            store
                .check_all(shoal::store::hash_threads(), &AtomicU64::new(0))
                .expect("check")
        })
    });
    g.finish();
}

criterion_group!(benches, sha1_piece, store_write_verify);
criterion_main!(benches);
