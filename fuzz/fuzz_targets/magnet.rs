#![no_main]
//! Magnet URIs.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = shoal::metainfo::magnet::Magnet::parse(s);
    }
});
