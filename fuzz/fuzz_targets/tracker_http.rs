#![no_main]
//! HTTP tracker responses (bencoded bodies).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shoal::discovery::tracker::parse_http_response(data);
});
