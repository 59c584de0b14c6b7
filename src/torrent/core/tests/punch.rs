//! Hole punching (BEP 55) in the core: a simultaneous open settled the
//! same way at both ends, and the relay between connected peers.

use std::net::SocketAddr;

use crate::peer::holepunch::{ErrorCode, Kind, Message as Hp};
use crate::peer::transport::Transport;
use crate::peer::{PeerCmd, PeerEvent, PeerKey};

use super::harness::{harness, Harness};
use crate::torrent::core::Input;
use crate::torrent::status::PeerSource;

fn at(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A peer with `id` at `addr` connects to us (`incoming`) or we dial it;
/// its key.
fn join(h: &mut Harness, addr: SocketAddr, id: [u8; 20], incoming: bool) -> PeerKey {
    let key = if incoming {
        h.input(Input::Incoming { addr, peer_id: id });
        h.accepts.iter().rev().find(|(_, a)| *a == addr).unwrap().0
    } else {
        h.input(Input::Peers(PeerSource::Manual, vec![addr]));
        h.connects.iter().rev().find(|(_, a)| *a == addr).unwrap().0
    };
    h.peer(
        key,
        PeerEvent::Connected {
            addr,
            peer_id: id,
            fast: true,
            v2: false,
            incoming,
            transport: Transport::Utp,
        },
    );
    key
}

fn holepunches(h: &mut Harness, key: PeerKey) -> Vec<Hp> {
    h.commands(key)
        .into_iter()
        .filter_map(|c| match c {
            PeerCmd::Holepunch(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// A hole punch's two dials may both connect: both ends keep the one the
/// lower peer id dialled, whichever came first; the same direction twice
/// is a plain duplicate and the new one goes.
#[test]
fn a_simultaneous_open_keeps_one_connection_both_ends_agree_on() {
    let mut h = harness(4);
    // Ours is all zeros: we are the lower id, our dial is kept.
    let theirs = [0xffu8; 20];
    let first = join(&mut h, at("127.0.2.1:6881"), theirs, true);
    let second = join(&mut h, at("127.0.2.2:6881"), theirs, false);
    assert!(h.closed(first));
    assert!(!h.closed(second));
    // Our dial first, theirs second: ours stays, theirs goes.
    let other = [0xeeu8; 20];
    let first = join(&mut h, at("127.0.2.3:6881"), other, false);
    let second = join(&mut h, at("127.0.2.4:6881"), other, true);
    assert!(!h.closed(first));
    assert!(h.closed(second));
    let third = join(&mut h, at("127.0.2.5:6881"), other, false);
    assert!(h.closed(third));
    assert!(!h.closed(first));
}

/// As the relay: a rendezvous naming a connected peer that speaks
/// `ut_holepunch` sends `connect` to both; one naming a peer without it,
/// an error to the initiator alone.
#[test]
fn the_core_relays_between_connected_peers() {
    let mut h = harness(4);
    let keys: Vec<PeerKey> = (1..=3u8)
        .map(|k| {
            join(
                &mut h,
                at(&format!("127.0.2.{k}:6881")),
                [0x80 + k; 20],
                false,
            )
        })
        .collect();
    for &k in &keys[..2] {
        h.peer(
            k,
            PeerEvent::Extended {
                reqq: None,
                listen_port: None,
                client: None,
                pex: false,
                holepunch: true,
            },
        );
    }
    for &k in &keys {
        h.commands(k);
    }
    let rendezvous = |t| PeerEvent::Holepunch(Hp::new(Kind::Rendezvous, at(t)));
    h.peer(keys[0], rendezvous("127.0.2.2:6881"));
    assert_eq!(
        holepunches(&mut h, keys[0]),
        [Hp::new(Kind::Connect, at("127.0.2.2:6881"))]
    );
    assert_eq!(
        holepunches(&mut h, keys[1]),
        [Hp::new(Kind::Connect, at("127.0.2.1:6881"))]
    );
    // Peer 3 never said it speaks ut_holepunch.
    h.peer(keys[0], rendezvous("127.0.2.3:6881"));
    let no = Hp::new(Kind::Error(ErrorCode::NoSupport), at("127.0.2.3:6881"));
    assert_eq!(holepunches(&mut h, keys[0]), [no]);
    assert!(holepunches(&mut h, keys[2]).is_empty());
}

/// Told to connect, the core dials the address over uTP alone, once.
#[test]
fn a_connect_dials_utp_once() {
    let mut h = harness(4);
    let relay = join(&mut h, at("127.0.2.1:6881"), [0x81; 20], false);
    let connect = PeerEvent::Holepunch(Hp::new(Kind::Connect, at("127.0.3.9:7000")));
    h.peer(relay, connect);
    let dialled = |h: &Harness| {
        h.connects
            .iter()
            .filter(|(_, a)| *a == at("127.0.3.9:7000"))
            .count()
    };
    assert_eq!(dialled(&h), 1);
    h.peer(
        relay,
        PeerEvent::Holepunch(Hp::new(Kind::Connect, at("127.0.3.9:7000"))),
    );
    assert_eq!(dialled(&h), 1, "punched again at once");
}
