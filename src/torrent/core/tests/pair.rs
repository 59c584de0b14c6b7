//! Two cores wired to each other by the test, with nothing else: the
//! test plays both peer tasks (a command of one side becomes an event of
//! the other, requests are served from what a side has) and the disk, on
//! virtual time. What a swarm simulator does, at its smallest: the core's
//! inputs and actions are all it takes to move a torrent.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::limit::ConnectionCap;
use crate::metainfo::Metainfo;
use crate::peer::{PeerCmd, PeerEvent, PeerKey};
use crate::store::Layout;
use crate::torrent::status::{Outcome, PeerSource};

use super::super::{Action, Config, Core, Input, Options, Traffic};
use super::harness::{harness, TICK};

/// One side: its core, what its peer task serves, its counters.
struct Node {
    core: Core,
    addr: SocketAddr,
    id: [u8; 20],
    have: Bitfield,
    /// Its key for the other side, once connected.
    key: Option<PeerKey>,
    /// It chokes the other side (its peer task refuses requests).
    choking: bool,
    up: u64,
    down: u64,
    written: BTreeMap<u32, Vec<u8>>,
    finished: Option<Outcome>,
}

impl Node {
    fn new(meta: &Arc<Metainfo>, have: Bitfield, n: u8, seed: u64, now: Instant) -> Node {
        let cfg = Config {
            options: Options {
                keep_seeding: have.is_full(),
                ..Options::default()
            },
            peer_id: [n; 20],
            listen_port: 6881,
            seed,
            hash_jobs: 2,
            connections: Arc::new(ConnectionCap::new(None)),
            holepunch: false,
        };
        Node {
            core: Core::new(now, meta.clone(), &have, cfg),
            addr: SocketAddr::from(([10, 0, 0, n], 6881)),
            id: [n; 20],
            have,
            key: None,
            choking: true,
            up: 0,
            down: 0,
            written: BTreeMap::new(),
            finished: None,
        }
    }
}

/// Runs a seed and a leecher of `pieces` pieces until the leecher is done;
/// the leecher's log of actions, and the virtual time it took.
fn run_pair(pieces: usize, seed: u64) -> (Vec<String>, Duration, BTreeMap<u32, Vec<u8>>, Vec<u8>) {
    let h = harness(pieces);
    let (meta, data) = (h.core.meta.clone(), h.data.clone());
    let layout = Layout::from_metainfo(&meta);
    let start = h.now;
    let mut now = start;
    let mut full = Bitfield::new(pieces);
    (0..pieces).for_each(|p| {
        full.set(p);
    });
    let mut nodes = [
        Node::new(&meta, full, 1, seed, now),
        Node::new(&meta, Bitfield::new(pieces), 2, seed + 1, now),
    ];
    let mut log = Vec::new();
    // Events on their way to node 0 or 1.
    let mut wire: VecDeque<(usize, Input)> = VecDeque::new();
    wire.push_back((1, Input::Peers(PeerSource::Manual, vec![nodes[0].addr])));
    while nodes[1].finished.is_none() {
        assert!(now - start < Duration::from_secs(60), "no end in sight");
        while let Some((to, input)) = wire.pop_front() {
            nodes[to].core.handle(now, input);
            for from in 0..2 {
                carry(&mut nodes, from, &layout, &data, &mut wire, &mut log);
            }
        }
        now += TICK;
        for n in nodes.iter_mut() {
            let sources = n.key.map(|k| (k, n.down, n.up)).into_iter().collect();
            let t = Traffic {
                downloaded: n.down,
                uploaded: n.up,
                sources,
            };
            n.core.handle(now, Input::Traffic(t));
            n.core.tick(now);
        }
        for from in 0..2 {
            carry(&mut nodes, from, &layout, &data, &mut wire, &mut log);
        }
    }
    let written = std::mem::take(&mut nodes[1].written);
    (log, now - start, written, data)
}

/// Carries out node `from`'s actions: to the other node's core as its
/// peer task would, to the test's disk, or nowhere.
fn carry(
    nodes: &mut [Node; 2],
    from: usize,
    layout: &Layout,
    data: &[u8],
    wire: &mut VecDeque<(usize, Input)>,
    log: &mut Vec<String>,
) {
    let to = 1 - from;
    while let Some(a) = nodes[from].core.poll_action() {
        if from == 1 {
            log.push(format!("{a:?}"));
        }
        match a {
            Action::Connect { key, .. } => {
                nodes[from].key = Some(key);
                let (addr, peer_id) = (nodes[from].addr, nodes[from].id);
                wire.push_back((to, Input::Incoming { addr, peer_id }));
            }
            Action::Accept { key, .. } => {
                nodes[from].key = Some(key);
                // Both handshakes are done: each side hears of the other,
                // and its bitfield (a seed says it has all).
                for (side, incoming) in [(from, true), (to, false)] {
                    let other = &nodes[1 - side];
                    let ev = PeerEvent::Connected {
                        addr: other.addr,
                        peer_id: other.id,
                        fast: true,
                        v2: false,
                        incoming,
                        transport: crate::peer::transport::Transport::Tcp,
                    };
                    let bits = if other.have.is_full() {
                        PeerEvent::HaveAll
                    } else {
                        PeerEvent::HaveNone
                    };
                    let key = nodes[side].key.expect("keyed");
                    wire.push_back((side, Input::Peer(key, ev)));
                    wire.push_back((side, Input::Peer(key, bits)));
                }
            }
            Action::Send(_, cmd) => {
                let Some(key) = nodes[to].key else { continue };
                let ev = |e| (to, Input::Peer(key, e));
                match cmd {
                    PeerCmd::Interested(yes) => wire.push_back(ev(PeerEvent::Interested(yes))),
                    PeerCmd::Choke | PeerCmd::Unchoke => {
                        let choke = matches!(cmd, PeerCmd::Choke);
                        nodes[from].choking = choke;
                        wire.push_back(ev(if choke {
                            PeerEvent::Choked
                        } else {
                            PeerEvent::Unchoked
                        }));
                    }
                    PeerCmd::Haves(ps) => ps
                        .into_iter()
                        .for_each(|p| wire.push_back(ev(PeerEvent::Have(p)))),
                    PeerCmd::Request(blocks) => {
                        // Served by the other side's peer task, if it may.
                        for b in blocks {
                            if nodes[to].choking || !nodes[to].have.get(b.index as usize) {
                                continue;
                            }
                            let at = b.index as usize * super::harness::PIECE + b.begin as usize;
                            let bytes = data[at..at + b.length as usize].to_vec();
                            nodes[to].up += b.length as u64;
                            nodes[from].down += b.length as u64;
                            let back = PeerEvent::Block {
                                block: b,
                                data: bytes.into(),
                            };
                            let key = nodes[from].key.expect("keyed");
                            wire.push_back((from, Input::Peer(key, back)));
                        }
                    }
                    _ => {}
                }
            }
            Action::Verify(jobs) => {
                let written = &mut nodes[from].written;
                let done = jobs
                    .into_iter()
                    .map(|j| {
                        j.run(layout, |p, d| {
                            written.insert(p, d.to_vec());
                            Ok(())
                        })
                    })
                    .collect();
                wire.push_back((from, Input::Verified(done)));
            }
            Action::Have(p) => {
                nodes[from].have.set(p as usize);
            }
            Action::Finished(o) => nodes[from].finished = Some(o),
            Action::Failed(e) => panic!("{e}"),
            _ => {}
        }
    }
}

/// A seed core and a leecher core complete a download between them, on
/// virtual time and with the choker deciding (the seed unchokes the
/// interested leecher), with the same actions on every run of a seed.
#[test]
fn a_seed_core_and_a_leecher_core_complete_a_download() {
    let (log, took, written, data) = run_pair(24, 5);
    assert_eq!(written.len(), 24);
    for (p, got) in &written {
        let at = *p as usize * super::harness::PIECE;
        assert_eq!(got[..], data[at..at + got.len()], "piece {p}");
    }
    // A link without delay or limit: the data moves between two ticks of
    // the virtual clock.
    assert_eq!(took, TICK);
    assert!(log.iter().any(|a| a == "Complete"));
    assert_eq!(run_pair(24, 5).0, log);
}
