//! A peer that sends corrupt blocks: the piece fails its hash check, is
//! fetched again from an honest seeder, the liar is banned, and the files
//! come out right.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use shoal::peer::wire::{self, Handshake, Message};

const FILES: &[(&str, usize)] = &[("pack/a.bin", 300_000), ("pack/b.bin", 500_001)];
const PIECE: usize = 32 * 1024;

/// Serves every block with its first byte flipped. Counts blocks sent.
fn liar(listener: TcpListener, content: Arc<Vec<u8>>, sent: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let Ok(s) = conn else { return };
        let content = content.clone();
        let sent = sent.clone();
        std::thread::spawn(move || {
            let _ = serve(s, &content, &sent);
        });
    }
}

fn serve(mut s: TcpStream, content: &[u8], sent: &AtomicUsize) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs)?;
    let theirs = Handshake::decode(&hs).map_err(std::io::Error::other)?;
    let ours = Handshake::new(theirs.info_hash, *b"-LI0001-liarliarliar");
    s.write_all(&ours.encode())?;
    let pieces = content.len().div_ceil(PIECE);
    let mut bits = vec![0xffu8; pieces.div_ceil(8)];
    let spare = bits.len() * 8 - pieces;
    if let Some(last) = bits.last_mut() {
        *last &= !((1u16 << spare) - 1) as u8;
    }
    let mut out = BytesMut::new();
    wire::encode(&Message::Bitfield(bits.into()), &mut out);
    wire::encode(&Message::Unchoke, &mut out);
    s.write_all(&out)?;
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(m) = wire::decode(&mut buf, 1 << 20).map_err(std::io::Error::other)? {
            if let Message::Request(b) = m {
                let start = b.index as usize * PIECE + b.begin as usize;
                let mut data = content[start..start + b.length as usize].to_vec();
                data[0] ^= 0xff;
                out.clear();
                wire::encode(
                    &Message::Piece {
                        index: b.index,
                        begin: b.begin,
                        data: data.into(),
                    },
                    &mut out,
                );
                s.write_all(&out)?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[test]
fn corrupt_blocks_are_caught_and_the_sender_banned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), FILES);
    let t = create_torrent(
        &d.join("src/pack"),
        &d.join("pack.torrent"),
        &[],
        PIECE as u32,
    );
    let t = t.to_str().unwrap();
    let mut content = std::fs::read(d.join("src/pack/a.bin")).unwrap();
    content.extend(std::fs::read(d.join("src/pack/b.bin")).unwrap());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let liar_port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    {
        let (content, sent) = (Arc::new(content), sent.clone());
        std::thread::spawn(move || liar(listener, content, sent));
    }
    // The honest seeder is slow, so the liar gets to send plenty.
    let (_seeder, sport) = seeder(
        d,
        Path::new(t),
        &d.join("src"),
        &["--quiet", "--upload-limit", "1000000"],
    );
    let out = d.join("out");
    let mut l = Proc::spawn(
        &[
            "download",
            t,
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--port",
            &free_port().to_string(),
            // The liar speaks TCP only: over TCP both peers are reached at
            // once, as the test needs (uTP would reach the honest one a
            // second sooner, and the download could end before the liar
            // is asked for anything).
            "--transport",
            "tcp",
            "--peer",
            &format!("127.0.0.1:{liar_port}"),
            "--peer",
            &format!("127.0.0.1:{sport}"),
        ],
        d,
        "leecher",
    );
    assert!(
        l.wait(Duration::from_secs(90)).success(),
        "{}",
        tail(&l.stderr(), 30)
    );
    let done = l.done_event();
    assert!(
        sent.load(Ordering::Relaxed) > 0,
        "the liar was never asked for data"
    );
    assert!(done["hash_failures"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(done["banned"].as_u64().unwrap(), 1, "{done}");
    assert!(
        l.stderr().contains("banning peer 127.0.0.1:"),
        "{}",
        tail(&l.stderr(), 30)
    );
    assert_same_tree(&d.join("src"), &out);
}
