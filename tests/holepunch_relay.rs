//! shoal as the BEP 55 relay, on loopback: scripted peers (through
//! shoal's own codec) send `rendezvous`, `connect`, malformed messages
//! and floods to a real seeder. It connects two peers that both speak
//! `ut_holepunch`, answers every other case with BEP 55's error code,
//! dials uTP when told to `connect`, ignores what is malformed, and
//! answers a flood with a handful of messages, staying connected.
//! tests/holepunch.rs has the punch itself, through two NAT routers.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use common::fake::Fake;
use common::*;
use shoal::peer::holepunch::{ErrorCode, Kind, Message as Hp};
use shoal::peer::wire::{ExtendedHandshake, Message};

/// The id we ask the seeder to send `ut_holepunch` under.
const OUR_HP: u8 = 9;

/// A fake peer after both extended handshakes; `hp`: it advertises
/// `ut_holepunch`; `listen`: the port its handshake gives. Returns it and
/// the id the seeder takes `ut_holepunch` under.
fn join(port: u16, ih: [u8; 20], n: u8, hp: bool, listen: u16) -> (Fake, u8) {
    let mut id = *b"-XX0001-holepunch000";
    id[19] = n;
    let mut f = connect(port, ih, id);
    let mut ext = ExtendedHandshake {
        p: Some(listen),
        ..Default::default()
    };
    if hp {
        ext.m.insert("ut_holepunch".into(), OUR_HP);
    }
    f.send(&Message::Extended {
        id: 0,
        payload: Bytes::from(ext.encode()),
    });
    let theirs = f
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, Message::Extended { id: 0, .. })
        })
        .expect("the seeder's extended handshake");
    let Message::Extended { payload, .. } = theirs else {
        unreachable!()
    };
    let h = ExtendedHandshake::decode(&payload).unwrap();
    (f, h.m.get("ut_holepunch").copied().unwrap_or(0))
}

/// Connects and handshakes; the seeder may still be checking its data
/// (its port is open, its torrent not yet taking peers): tried again.
fn connect(port: u16, ih: [u8; 20], id: [u8; 20]) -> Fake {
    for _ in 0..100 {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let mut f = Fake::new(s);
            f.send_raw(&shoal::peer::wire::Handshake::new(ih, id).encode());
            if f.read_handshake().is_ok() {
                return f;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the seeder never answered a handshake");
}

fn send(f: &mut Fake, their_id: u8, m: Hp) {
    f.send(&Message::Extended {
        id: their_id,
        payload: Bytes::from(m.encode()),
    });
}

/// The next `ut_holepunch` message within `limit`.
fn next(f: &mut Fake, limit: Duration) -> Option<Hp> {
    let m = f.wait_for(
        limit,
        |m| matches!(m, Message::Extended { id, .. } if *id == OUR_HP),
    )?;
    let Message::Extended { payload, .. } = m else {
        unreachable!()
    };
    Some(Hp::decode(&payload).expect("a well-formed ut_holepunch message"))
}

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Sends `rendezvous` for `target` until the answer is not a transient
/// "not connected yet" (the seeder may not have read the other peer's
/// extended handshake yet), at most three times.
fn rendezvous(f: &mut Fake, hp: u8, target: SocketAddr) -> Hp {
    for _ in 0..3 {
        send(f, hp, Hp::new(Kind::Rendezvous, target));
        let got = next(f, Duration::from_secs(10)).expect("an answer to rendezvous");
        if got.kind != Kind::Error(ErrorCode::NotConnected) {
            return got;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Hp::new(Kind::Error(ErrorCode::NotConnected), target)
}

#[test]
fn the_seeder_relays_and_refuses_as_bep_55_says() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 100_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384);
    let ih = info_hash(&t);
    let (seeder, port) = seeder(d, &t, &d.join("src"), &[]);

    let (mut c, c_hp) = join(port, ih, 1, true, 40002);
    let (_old, _) = join(port, ih, 2, false, 40003);
    let (mut i, hp) = join(port, ih, 3, true, 40001);
    let (mut e, _) = join(port, ih, 4, true, 40004);
    assert_eq!((c_hp, hp), (5, 5), "ut_holepunch advertised");

    // Both speak it: each is told to dial the other where it listens.
    let got = rendezvous(&mut i, hp, a("127.0.0.1:40002"));
    assert_eq!(got, Hp::new(Kind::Connect, a("127.0.0.1:40002")));
    let to_c = next(&mut c, Duration::from_secs(10)).expect("connect to the target");
    assert_eq!(to_c, Hp::new(Kind::Connect, a("127.0.0.1:40001")));

    // The errors of BEP 55 (asked once each, within the allowance).
    let mut ask = |target: SocketAddr| {
        send(&mut e, hp, Hp::new(Kind::Rendezvous, target));
        next(&mut e, Duration::from_secs(10)).expect("an answer to rendezvous")
    };
    let err = |code, t| Hp::new(Kind::Error(code), t);
    let old = a("127.0.0.1:40003");
    assert_eq!(ask(old), err(ErrorCode::NoSupport, old));
    let nobody = a("127.0.0.1:40009");
    assert_eq!(ask(nobody), err(ErrorCode::NotConnected, nobody));
    let me = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(ask(me), err(ErrorCode::NoSelf, me));
    // The target never heard of those.
    assert_eq!(next(&mut c, Duration::from_millis(300)), None);

    // Malformed: ignored with a log line; the connection stays.
    for junk in [
        &b""[..],
        b"\x00\x00\x01",
        b"\x07\x00\x01\x02\x03\x04\x00\x01\x00\x00\x00\x00",
    ] {
        c.send(&Message::Extended {
            id: c_hp,
            payload: Bytes::copy_from_slice(junk),
        });
    }
    assert!(!c.closed_within(Duration::from_secs(1)));
    wait_for_log(&seeder, "ignoring a malformed ut_holepunch message");

    // A flood of rendezvous: a handful answered, the rest ignored, and
    // the peer is not dropped for it.
    let mut burst = Vec::new();
    for k in 0..200u16 {
        let m = Hp::new(
            Kind::Rendezvous,
            SocketAddr::from(([10, 9, 0, 1], 1000 + k)),
        );
        let mut out = bytes::BytesMut::new();
        shoal::peer::wire::encode(
            &Message::Extended {
                id: c_hp,
                payload: Bytes::from(m.encode()),
            },
            &mut out,
        );
        burst.extend_from_slice(&out);
    }
    assert!(c.send_raw(&burst));
    let mut answered = 0;
    while next(&mut c, Duration::from_secs(2)).is_some() {
        answered += 1;
    }
    assert!((1..=5).contains(&answered), "{answered} answers to 200");
    assert!(!c.closed_within(Duration::from_secs(1)));
    wait_for_log(&seeder, "ut_holepunch flood");
}

#[test]
fn connect_makes_the_seeder_dial_utp() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 100_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384);
    let ih = info_hash(&t);
    let (_seeder, port) = seeder(d, &t, &d.join("src"), &[]);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let target = udp.local_addr().unwrap();

    let (mut f, hp) = join(port, ih, 1, true, 40001);
    send(&mut f, hp, Hp::new(Kind::Connect, target));
    let mut b = [0u8; 1500];
    let (n, from) = udp.recv_from(&mut b).expect("a uTP SYN from the seeder");
    // uTP version 1, type ST_SYN (4): from the seeder's listening port.
    assert!(n >= 20 && b[0] == 0x41, "{:?}", &b[..n.min(20)]);
    assert_eq!(from.port(), port);
    // Told again at once: not dialled again (one punch per address a while).
    send(&mut f, hp, Hp::new(Kind::Connect, target));
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let again = udp.recv_from(&mut b);
    assert!(again.is_err(), "dialled twice: {again:?}");
}

fn wait_for_log(p: &Proc, what: &str) {
    let start = std::time::Instant::now();
    while !p.stderr().contains(what) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {what:?} in the log:\n{}",
            tail(&p.stderr(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
