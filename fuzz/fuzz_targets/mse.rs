#![no_main]
//! Encrypted (MSE) handshakes from a peer sending arbitrary bytes: the
//! receiving side must answer or refuse, never panic or read without bound.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, rest) = data.split_at(data.len().min(20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut stream = tokio::io::join(std::io::Cursor::new(rest.to_vec()), tokio::io::sink());
        let _ = shoal::peer::mse::accept(&mut stream, first, &[[7u8; 20]], shoal::peer::mse::Policy::Prefer).await;
    });
});
