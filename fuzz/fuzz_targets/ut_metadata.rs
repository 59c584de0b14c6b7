#![no_main]
//! BEP 9 messages from a peer, fed to the codec and then to an assembler
//! as if each were the answer to a request.
use libfuzzer_sys::fuzz_target;
use shoal::metadata::{Assembler, Msg};

fuzz_target!(|data: &[u8]| {
    let mut a = Assembler::new([0; 20]);
    for chunk in data.split(|b| *b == 0xff) {
        if let Ok(Msg::Data {
            piece,
            total_size,
            data,
        }) = Msg::decode(chunk)
        {
            if a.set_size(total_size).is_ok() {
                while a.next_request().is_some() {}
                let _ = a.on_data(piece, total_size, data);
            }
        }
    }
});
