//! Wire codec throughput: 16 KiB piece messages (bytes/s) and small
//! have/request messages (messages/s).

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal::peer::wire::{decode, encode, encode_piece_header, BlockRef, Message, BLOCK_LEN};

/// Messages per batch, so per-iteration overhead is amortised.
const BATCH: usize = 64;
const MAX_LEN: u32 = 131_085;

fn piece(i: u32) -> Message {
    Message::Piece {
        index: i,
        begin: 0,
        data: Bytes::from(vec![0xa5u8; BLOCK_LEN as usize]),
    }
}

fn small(i: u32) -> [Message; 2] {
    [
        Message::Have(i),
        Message::Request(BlockRef {
            index: i,
            begin: BLOCK_LEN,
            length: BLOCK_LEN,
        }),
    ]
}

fn encoded(msgs: &[Message]) -> BytesMut {
    let mut buf = BytesMut::new();
    for m in msgs {
        encode(m, &mut buf);
    }
    buf
}

fn decode_all(buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Ok(Some(m)) = decode(buf, MAX_LEN) {
        black_box(m);
        n += 1;
    }
    n
}

fn bench_pieces(c: &mut Criterion) {
    let msgs: Vec<Message> = (0..BATCH as u32).map(piece).collect();
    let wire = encoded(&msgs);
    let block = vec![0xa5u8; BLOCK_LEN as usize];
    let mut g = c.benchmark_group("piece_16k");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            for m in &msgs {
                encode(m, &mut buf);
            }
            black_box(buf.len())
        })
    });
    g.bench_function("encode_header_then_block", |b| {
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            for i in 0..BATCH as u32 {
                encode_piece_header(i, 0, BLOCK_LEN, &mut buf);
                buf.extend_from_slice(&block);
            }
            black_box(buf.len())
        })
    });
    g.bench_function("decode", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |buf| assert_eq!(decode_all(buf), BATCH),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_small(c: &mut Criterion) {
    let msgs: Vec<Message> = (0..BATCH as u32 / 2).flat_map(small).collect();
    let wire = encoded(&msgs);
    let mut g = c.benchmark_group("have_request");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            for m in &msgs {
                encode(m, &mut buf);
            }
            black_box(buf.len())
        })
    });
    g.bench_function("decode", |b| {
        b.iter_batched_ref(
            || wire.clone(),
            |buf| assert_eq!(decode_all(buf), msgs.len()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_pieces, bench_small);
criterion_main!(benches);
