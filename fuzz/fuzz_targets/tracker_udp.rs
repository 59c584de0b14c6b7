#![no_main]
//! UDP tracker replies (BEP 15), IPv4 and IPv6 peer lists.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let txid = data.get(4..8).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let _ = shoal::discovery::tracker::parse_connect(data, txid);
    let _ = shoal::discovery::tracker::parse_announce(data, txid, false);
    let _ = shoal::discovery::tracker::parse_announce(data, txid, true);
});
