//! Hostile uTP traffic fired at two running shoals while one downloads
//! from the other over uTP: malformed headers, packets for connection ids
//! nobody has, a flood of 10,000 SYNs with fresh connection ids, a RESET
//! storm, and connections of our own whose sequence numbers wrap, that
//! advertise a zero window and that send selective ACKs pointing anywhere.
//! The download must finish with the right bytes, memory must stay
//! bounded, and what was refused must be said in one rate-limited line.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{make_tree, rss_kib, tail, transports_seen, Proc};

const ST_DATA: u8 = 0;
const ST_STATE: u8 = 2;
const ST_RESET: u8 = 3;
const ST_SYN: u8 = 4;

/// A uTP header (BEP 29): type and version, extension, connection id,
/// timestamps, window, sequence and ack numbers.
fn header(kind: u8, conn: u16, wnd: u32, seq: u16, ack: u16) -> Vec<u8> {
    let mut h = vec![(kind << 4) | 1, 0];
    h.extend_from_slice(&conn.to_be_bytes());
    h.extend_from_slice(&12_345u32.to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&wnd.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h
}

/// A small deterministic generator for packet contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends `packets` to `to`, pausing now and then so the kernel's buffers
/// do not simply drop most of them.
fn fire(sock: &UdpSocket, to: SocketAddr, packets: impl Iterator<Item = Vec<u8>>) {
    for (i, p) in packets.enumerate() {
        let _ = sock.send_to(&p, to);
        if i % 200 == 199 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Malformed packets, packets for unknown connections, a SYN flood and a
/// RESET storm, from a source of their own.
fn junk(to: SocketAddr, rng: &mut Rng) {
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    let malformed = (0..2000).map(|i| {
        let mut p = match i % 5 {
            // Random bytes of random length.
            0 => {
                let n = (rng.next() % 200) as usize;
                rng.bytes(n)
            }
            // Version 2, or a type past ST_SYN.
            1 => {
                let mut h = header(ST_STATE, 1, 0, 0, 0);
                h[0] = (2 << 4) | 2;
                h
            }
            2 => {
                let mut h = header(ST_STATE, 1, 0, 0, 0);
                h[0] = (9 << 4) | 1;
                h
            }
            // An extension chain running past the end.
            3 => {
                let mut h = header(ST_STATE, 1, 0, 0, 0);
                h[1] = 1;
                h.extend_from_slice(&[1, 200, 0xff]);
                h
            }
            // Shorter than a header.
            _ => header(ST_DATA, 1, 0, 0, 0)[..(i % 20)].to_vec(),
        };
        p.truncate(1400);
        p
    });
    fire(&sock, to, malformed);
    let unknown = (0..2000).map(|i| {
        let kind = [ST_DATA, ST_STATE, 1][i % 3];
        let mut p = header(
            kind,
            rng.next() as u16,
            1 << 20,
            rng.next() as u16,
            rng.next() as u16,
        );
        if kind == ST_DATA {
            p.extend_from_slice(&rng.bytes(100));
        }
        p
    });
    fire(&sock, to, unknown);
    let flood = (0..10_000u32).map(|i| header(ST_SYN, i as u16, 0, rng.next() as u16, 0));
    fire(&sock, to, flood);
    let resets = (0..5000).map(|_| header(ST_RESET, rng.next() as u16, 0, 0, rng.next() as u16));
    fire(&sock, to, resets);
}

/// A uTP connection of our own to `to` from 127.0.0.3: SYN with a
/// sequence number just below the wrap, then a BitTorrent handshake for
/// an unknown torrent split over packets whose numbers wrap through 0,
/// a zero window throughout, and selective ACKs with random bits and ack
/// numbers. Returns our address (shoal's log names it once it has read
/// the handshake across the wrap).
fn misbehave(to: SocketAddr, rng: &mut Rng) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.3:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let id: u16 = 40_000;
    let first: u16 = 65_533;
    // The SYN-ACK's seq_nr is what our first ACK must acknowledge.
    let mut their_seq = None;
    for _ in 0..20 {
        sock.send_to(&header(ST_SYN, id, 0, first, 0), to).unwrap();
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n >= 20 && buf[0] >> 4 == ST_STATE {
                their_seq = Some(u16::from_be_bytes([buf[16], buf[17]]));
                break;
            }
        }
    }
    // BEP 29 as libutp does it: the SYN-ACK carries the responder's next
    // sequence number; the initiator acknowledges the one before it.
    let their_ack = their_seq.expect("no SYN-ACK from shoal").wrapping_sub(1);
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&[0xab; 20]);
    hs.extend_from_slice(b"-XX0000-attackerattk");
    // 68 bytes in 7 packets: seq 65534, 65535, 0, 1, ... (the SYN took
    // 65533), sent twice, the second time out of order.
    let chunks: Vec<&[u8]> = hs.chunks(10).collect();
    for round in 0..2 {
        let mut order: Vec<usize> = (0..chunks.len()).collect();
        if round == 1 {
            order.reverse();
        }
        for i in order {
            let seq = first.wrapping_add(1 + i as u16);
            let mut p = header(ST_DATA, id + 1, 0, seq, their_ack);
            p.extend_from_slice(chunks[i]);
            sock.send_to(&p, to).unwrap();
        }
    }
    // Selective ACKs (extension 1, 4 bytes of bits) pointing anywhere.
    for _ in 0..500 {
        let mut p = header(
            ST_STATE,
            id + 1,
            0,
            first.wrapping_add(8),
            rng.next() as u16,
        );
        p[1] = 1;
        p.extend_from_slice(&[0, 4]);
        p.extend_from_slice(&rng.bytes(4));
        sock.send_to(&p, to).unwrap();
    }
    me
}

#[test]
fn hostile_utp_traffic_does_not_stop_a_download() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(
        &src,
        &[("pack/a.bin", 4_000_000), ("pack/b.bin", 1_500_000)],
    );
    let t = common::create_torrent(&src.join("pack"), &d.join("t.torrent"), &[], 65536);
    let (sp, lp) = (common::free_port(), common::free_port());
    let mut seeder = Proc::spawn(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            src.to_str().unwrap(),
            "--port",
            &sp.to_string(),
            "--transport",
            "utp",
            // Slow enough that the attacks land while the data flows.
            "--upload-limit",
            "400k",
            "--json",
        ],
        d,
        "seeder",
    );
    let out = d.join("out");
    let mut leecher = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--port",
            &lp.to_string(),
            "--peer",
            &format!("127.0.0.1:{sp}"),
            "--transport",
            "utp",
            "--json",
        ],
        d,
        "leecher",
    );
    // Wait for the first bytes: the connection is up.
    let start = Instant::now();
    loop {
        let (utp, _) = transports_seen(&leecher.stderr());
        if utp > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no uTP peer: {}",
            tail(&leecher.stderr(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_before = rss_kib(leecher.child.id());
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut attackers = Vec::new();
    for port in [lp, sp] {
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        junk(to, &mut rng);
        attackers.push((port, misbehave(to, &mut rng)));
    }
    let rss_after = rss_kib(leecher.child.id());
    let status = leecher.wait(Duration::from_secs(180));
    assert!(
        status.success(),
        "leecher failed ({status}):\n{}",
        tail(&leecher.stderr(), 40)
    );
    let done = leecher.done_event();
    assert_eq!(done["complete"], true, "{done}");
    common::assert_same_tree(&src.join("pack"), &out.join("pack"));
    // Bounded memory: the flood cost the leecher little.
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB under the flood"
    );
    for (p, name) in [(&leecher, "leecher"), (&seeder, "seeder")] {
        let err = p.stderr();
        let lines = err.matches("uTP: refused").count();
        // One line per 10 s at most (and the run is far shorter than 100 s).
        assert!(
            (1..=10).contains(&lines),
            "{name}: {lines} refusal lines\n{}",
            tail(&err, 20)
        );
    }
    // Our own connections' handshakes were read across the sequence
    // wrap and out of order: shoal saw a whole, well-formed handshake
    // for a torrent it does not run.
    for (port, me) in attackers {
        let log = if port == lp {
            leecher.stderr()
        } else {
            seeder.stderr()
        };
        assert!(
            log.contains(&format!("{me}: handshake for a torrent not running here")),
            "port {port}: the wrapped handshake from {me} was not read\n{}",
            tail(&log, 30)
        );
    }
    assert!(seeder.child.try_wait().unwrap().is_none(), "seeder exited");
    assert!(seeder.stop().success(), "{}", tail(&seeder.stderr(), 30));
}
