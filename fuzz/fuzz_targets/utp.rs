#![no_main]
//! uTP datagrams as shoal's UDP socket takes them: the input is a stream
//! of datagrams (each a one-byte source then a length byte then the
//! bytes). The guard that stands before uTP (header parse, SYN rate per
//! source) never panics, what it lets through parses as uTP, and a parsed
//! header written out again reads back the same.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shoal::peer::utp::{parse, Guard, Verdict};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut g = Guard::new(start);
    let mut rest = data;
    let mut step = 0u64;
    while let [src, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (packet, next) = tail.split_at(n);
        rest = next;
        step += 1;
        let from = SocketAddr::from(([10, 0, src >> 4, src & 0x0f], 6881));
        let now = start + Duration::from_millis(step * 7);
        let verdict = g.check(packet, from, now);
        let parsed = parse(packet);
        if verdict == Verdict::Utp {
            assert!(parsed.is_some());
        }
        if let Some(h) = parsed {
            let mut buf = [0u8; 64];
            let len = h.serialize(&mut buf).expect("a header fits 64 bytes");
            let (again, _) =
                librqbit_utp::raw::UtpHeader::deserialize(&buf[..len]).expect("reads back");
            assert_eq!(
                (again.get_type(), again.connection_id, again.seq_nr, again.ack_nr),
                (h.get_type(), h.connection_id, h.seq_nr, h.ack_nr)
            );
            assert_eq!(
                (again.wnd_size, again.timestamp_microseconds, again.timestamp_difference_microseconds),
                (h.wnd_size, h.timestamp_microseconds, h.timestamp_difference_microseconds)
            );
        }
        let _ = g.take_report(now);
    }
    assert!(g.tracked() <= 4096);
});
