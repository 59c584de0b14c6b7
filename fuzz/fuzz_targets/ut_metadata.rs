#![no_main]
//! Extension messages from a peer: BEP 9 metadata messages fed to the
//! codec and to an assembler as if each answered a request, and BEP 11
//! peer exchange messages fed to the codec and the address filter.
use libfuzzer_sys::fuzz_target;
use shoal::peer::metadata::{Assembler, Msg};

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
        if let Some(m) = shoal::peer::pex::Message::decode(chunk) {
            let from = "10.0.0.1:6881".parse().unwrap();
            let _ = shoal::peer::pex::accept(from, &[], &m.added);
        }
    }
});
