#![no_main]
//! The wire codec: whatever arrives, decoding never panics and always
//! either consumes bytes or asks for more; what decodes re-encodes.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal::peer::wire::{decode, encode, ExtendedHandshake, Handshake};

fuzz_target!(|data: &[u8]| {
    let _ = Handshake::decode(data);
    let _ = ExtendedHandshake::decode(data);
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match decode(&mut buf, 1 << 17) {
            Ok(Some(m)) => {
                let mut out = BytesMut::new();
                encode(&m, &mut out);
                assert!(buf.len() < before);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
