//! The core on its own: inputs at chosen instants, actions checked. No
//! runtime, no sockets, no disk, no clock.

mod harness;
mod pair;
mod punch;

use std::time::Duration;

use crate::metainfo::merkle;
use crate::peer::wire::BlockRef;
use crate::peer::{PeerCmd, PeerEvent};
use crate::store::StoreError;
use crate::torrent::leaves;
use crate::torrent::picker::BLOCK_LEN;
use crate::torrent::status::{Outcome, PeerSource, State, TrackerView, WEB_SEED_LABEL};
use crate::torrent::webseed::WebEvent;

use super::dialer::{EVICT_AFTER, SHORT_LIVED};
use super::sources::SNUB_AFTER;
use super::{Input, Options};
use harness::{addr, harness, harness_v2, harness_with, options, Harness, PIECE, TICK};

/// The coordinator with a lying and an honest v2 seed: before the layer
/// is known only the one-piece file is asked for; the liar's hashes are
/// refused and it is not asked again; the honest answer releases the
/// file's pieces, which then download and verify.
#[test]
fn piece_layers_come_from_peers_and_lies_are_refused() {
    let (mut h, layer) = harness_v2(false);
    let liar = h.seed(1);
    h.peer(liar, PeerEvent::Unchoked);
    let (hash_reqs, blocks) = h.v2_requests(liar);
    // The seed connects without the v2 bit: in a v2-only swarm it is
    // asked all the same.
    assert_eq!(hash_reqs.len(), 1);
    let req = hash_reqs[0];
    assert_eq!((req.index, req.length, req.proof_layers), (0, 8, 2));
    assert!(!blocks.is_empty());
    assert!(blocks.iter().all(|b| b.index == 6), "{blocks:?}");
    let lie = vec![[0x5a; 32]; 8];
    h.peer(liar, PeerEvent::Hashes { req, hashes: lie });
    assert_eq!(h.core.progress().hash_failures, 1);
    assert!(!h.core.sources.peer(liar).unwrap().hashes_ok);
    let (again, _) = h.v2_requests(liar);
    assert!(again.is_empty(), "the liar is asked again: {again:?}");
    for b in blocks {
        h.block(liar, b, false);
    }
    h.settle();
    assert!(h.core.picker.have().get(6));
    assert!(!h.core.picker.have().get(0));

    let honest = h.seed(2);
    h.peer(honest, PeerEvent::Unchoked);
    let (hash_reqs, blocks) = h.v2_requests(honest);
    assert_eq!(hash_reqs, vec![req]);
    assert!(blocks.is_empty(), "{blocks:?}");
    let upper = merkle::upper_layers(&layer, layer.len(), 1);
    let answer = merkle::hashes_with_proof(&layer, &upper, 1, 0, 8, 2).unwrap();
    h.peer(
        honest,
        PeerEvent::Hashes {
            req,
            hashes: answer,
        },
    );
    // The file's data on disk is checked (nothing there) before its
    // pieces are released.
    assert_eq!(h.rechecks, vec![0..6]);
    let (again, _) = h.v2_requests(honest);
    assert!(again.is_empty(), "asked before the check: {again:?}");
    h.input(Input::Rechecked {
        range: 0..6,
        good: Vec::new(),
    });
    assert!(h.core.layers.is_none());
    h.serve_until_complete(honest);
    assert_eq!(h.core.progress().hash_failures, 1);
}

/// A corrupt block from peer `corrupter` in the second block of some
/// piece of file a: that piece.
fn corrupt_one(h: &mut Harness, corrupter: u64) -> u32 {
    h.peer(corrupter, PeerEvent::Unchoked);
    let (asked, _) = h.requests(corrupter);
    let target = asked
        .iter()
        .find(|b| b.begin == BLOCK_LEN && b.index < 6)
        .map(|b| b.index)
        .expect("a second block of file a asked");
    for b in &asked {
        h.block(corrupter, *b, b.index == target && b.begin == BLOCK_LEN);
    }
    h.settle();
    target
}

/// One corrupt block of a v2 piece: the piece's leaf hashes are asked of
/// a peer that sent none of it (a lying answer is not believed and the
/// next peer is asked), the sender of the bad block is banned after this
/// one failure, and only that block is fetched again.
#[test]
fn leaf_hashes_name_the_bad_block_of_a_v2_piece() {
    let (mut h, _) = harness_v2(true);
    let corrupter = h.seed(1);
    let liar = h.seed(2);
    let honest = h.seed(3);
    let target = corrupt_one(&mut h, corrupter);
    assert_eq!(h.core.progress().hash_failures, 1);
    assert_eq!(h.core.leaf_checks(), 1);
    let (_, banned) = h.requests(corrupter);
    assert!(!banned, "banned before the leaves came");
    // The first peer that sent nothing of the piece is asked.
    let (reqs, _) = h.v2_requests(liar);
    let req = *reqs.first().expect("leaf hashes asked of peer 2");
    assert_eq!(
        (req.base, req.index, req.length, req.proof_layers),
        (0, 2 * target, 2, 0)
    );
    // File a ends 100 bytes short of its last piece: its leaves cover the
    // file's bytes only.
    let start = target as usize * PIECE;
    let end = (start + PIECE).min(6 * PIECE - 100);
    let truth = merkle::leaves(&h.data[start..end]);
    // Leaves that would put the blame on the first block: they do not
    // lead to the piece hash, so nobody is blamed for them.
    let mut lie = truth.clone();
    lie[0] = [9; 32];
    h.peer(liar, PeerEvent::Hashes { req, hashes: lie });
    assert_eq!(h.core.progress().banned, 0);
    assert_eq!(h.core.sources.get(liar).unwrap().strikes, 1);
    let (reqs, _) = h.v2_requests(honest);
    assert_eq!(reqs, vec![req]);
    h.peer(honest, PeerEvent::Hashes { req, hashes: truth });
    let (_, banned) = h.requests(corrupter);
    assert!(banned, "the sender of the bad block is banned at once");
    assert_eq!(h.core.progress().banned, 1);
    h.peer(corrupter, PeerEvent::Gone("banned".into()));
    // Only the bad block of the piece is asked for again.
    h.peer(honest, PeerEvent::Unchoked);
    let mut again = Vec::new();
    for _ in 0..20 {
        let (asked, banned) = h.requests(honest);
        assert!(!banned);
        for b in asked {
            if b.index == target {
                again.push(b);
            }
            h.block(honest, b, false);
        }
        h.settle();
        if h.core.is_complete() {
            break;
        }
    }
    assert!(h.core.is_complete());
    let bad = BlockRef {
        index: target,
        begin: BLOCK_LEN,
        length: BLOCK_LEN,
    };
    assert_eq!(again, vec![bad]);
    assert_eq!(h.core.progress().hash_failures, 1);
    let (_, liar_banned) = h.requests(liar);
    assert!(!liar_banned);
    // What was written is the torrent's data.
    for (p, got) in &h.written {
        let from = *p as usize * PIECE;
        assert_eq!(got[..], h.data[from..from + got.len()], "piece {p}");
    }
    assert_eq!(h.written.len(), 7);
}

/// Timeout: nobody answers the leaf request; once leaves::TIMEOUT has
/// passed (not before) the piece is fetched again whole, as without leaf
/// hashes.
#[test]
fn unanswered_leaf_hashes_fall_back_to_the_whole_piece() {
    let (mut h, _) = harness_v2(true);
    let corrupter = h.seed(1);
    let quiet = h.seed(2);
    corrupt_one(&mut h, corrupter);
    let (reqs, _) = h.v2_requests(quiet);
    assert_eq!(reqs.len(), 1);
    h.run_for(leaves::TIMEOUT - TICK);
    assert_eq!(h.core.leaf_checks(), 1, "given up early");
    assert!(!h.requests(corrupter).1);
    h.run_for(2 * TICK);
    assert_eq!(h.core.leaf_checks(), 0);
    // One sender: banned as before, and the piece is free again.
    let (_, banned) = h.requests(corrupter);
    assert!(banned);
    h.peer(corrupter, PeerEvent::Gone("banned".into()));
    h.peer(quiet, PeerEvent::Unchoked);
    h.serve_until_complete(quiet);
}

/// A piece found changed on disk while downloading is fetched again.
#[test]
fn a_lost_piece_is_fetched_again() {
    let mut h = harness(4);
    let seed = h.seed(1);
    let p = h.send_one_piece(seed, false);
    assert!(h.core.picker.have().get(p as usize));
    assert!(!h.core.is_complete());
    h.peer(seed, PeerEvent::PieceLost(p));
    assert!(!h.core.picker.have().get(p as usize));
    assert_eq!(h.core.progress().pieces_have, 0);
    assert_eq!(h.core.progress().have_bytes, 0);
    assert!(h.log.last().is_some_and(|a| a == "Publish"));
    assert!(h.log.iter().any(|a| a == "HaveBytes(0)"));
    // Whatever else is outstanding, the lost piece is asked for again.
    let (again, _) = h.requests(seed);
    assert!(again.iter().any(|b| b.index == p), "{again:?}");
}

/// Regression (issue 15): idle peers held every slot forever and a real
/// peer was refused. Now the least useful peer that had its chance makes
/// room; a peer too new to judge, or one we want data from, is kept.
#[test]
fn idle_peers_make_room_for_new_ones() {
    let mut h = harness(4);
    let idle: Vec<u64> = (1..=10).map(|n| h.accept(n).expect("accepted")).collect();
    assert_eq!(h.core.sources.peer_count(), 10);
    // All too new: the 11th is refused.
    assert_eq!(h.accept(11), None);
    h.run_for(EVICT_AFTER);
    let seed = h.seed(12);
    assert!(h.core.sources.peer(seed).is_some(), "a seed is refused");
    assert_eq!(h.core.sources.peer_count(), 10);
    let made_room = idle.iter().filter(|k| h.closed(**k)).count();
    assert_eq!(made_room, 1);
    // Peers we want data from are never made room from.
    for &k in &idle {
        h.peer(k, PeerEvent::Have(0));
    }
    h.run_for(EVICT_AFTER);
    assert_eq!(h.accept(13), None);
    assert_eq!(h.core.sources.peer_count(), 10);
}

/// Regression (issue 15): a peer that accepts our connection and closes it
/// at once was dialled again every 10 s forever; now the wait doubles with
/// each such connection, and is short again after one that lasted.
#[test]
fn reconnect_back_off_grows_for_peers_that_close_at_once() {
    let mut h = harness(4);
    let mut key = h.dial(1);
    let mut waits = Vec::new();
    for _ in 0..5 {
        h.peer(key, PeerEvent::Gone("closed".into()));
        let (gone_at, dials) = (h.now, h.connects.len());
        while h.connects.len() == dials {
            h.run_for(TICK);
        }
        waits.push((h.now - gone_at).as_secs());
        key = h.connects.last().unwrap().0;
        h.peer(
            key,
            PeerEvent::Connected {
                addr: addr(1),
                peer_id: [1; 20],
                fast: true,
                v2: false,
                incoming: false,
                transport: crate::peer::transport::Transport::Tcp,
            },
        );
        if waits.len() == 4 {
            // This one stays a while.
            h.run_for(SHORT_LIVED);
        }
    }
    assert_eq!(waits, vec![20, 40, 80, 160, 10]);
}

/// Bans: the liar answers the first block of each piece with bad data and
/// chokes; the honest seed's copies show which blocks were bad, and the
/// liar (only it) is banned.
#[test]
fn smart_ban_names_the_sender_of_the_bad_block() {
    let mut h = harness(4);
    let liar = h.seed(1);
    let honest = h.seed(2);
    h.peer(liar, PeerEvent::Unchoked);
    let (asked, _) = h.requests(liar);
    assert!(!asked.is_empty());
    for b in asked.iter().filter(|b| b.begin == 0) {
        h.block(liar, *b, true);
    }
    h.peer(liar, PeerEvent::Choked);
    // The honest seed fills in the rest, and whatever is asked again.
    h.peer(honest, PeerEvent::Unchoked);
    h.serve_until_complete(honest);
    assert!(h.core.progress().hash_failures >= 1);
    let (_, liar_closed) = h.requests(liar);
    assert!(liar_closed, "the liar was not banned");
    assert_eq!(h.core.progress().banned, 1);
    let (_, honest_closed) = h.requests(honest);
    assert!(!honest_closed);
    // Banned by address: it is not dialled again.
    h.peer(liar, PeerEvent::Gone("banned".into()));
    h.input(Input::Peers(PeerSource::Tracker, vec![addr(1)]));
    h.run_for(Duration::from_secs(30));
    assert!(h.connects.iter().filter(|(_, a)| *a == addr(1)).count() == 1);
}

/// A hash that cannot be read (the .torrent file changed under a torrent
/// that reads its hashes from there) stops the run with the error; no
/// peer is blamed and no failure counted.
#[test]
fn an_unreadable_hash_stops_the_run_without_blame() {
    let mut h = harness(4);
    let seed = h.seed(1);
    h.peer(seed, PeerEvent::Unchoked);
    let (asked, _) = h.requests(seed);
    for b in asked.iter().filter(|b| b.index == asked[0].index) {
        h.block(seed, *b, false);
    }
    let job = h.take_job().expect("a hash job");
    let err = || {
        let path = std::path::PathBuf::from("t.torrent");
        StoreError::Hashes(crate::metainfo::MetainfoError::Changed(path))
    };
    let done = job
        .into_iter()
        .map(|j| {
            let mut v = j.run(
                &crate::store::Layout::from_metainfo(&h.core.meta),
                |_, _| Ok(()),
            );
            v.ok = false;
            v.write = Err(err());
            v
        })
        .collect();
    h.input(Input::Verified(done));
    let e = h.failed.take().expect("the run fails").to_string();
    assert!(e.contains("changed on disk"), "{e}");
    assert!(!h.requests(seed).1);
    assert_eq!(h.core.progress().hash_failures, 0);
    assert_eq!(h.finished, None);
}

/// A web seed alone downloads everything; the progress counts it.
#[test]
fn a_web_seed_alone_completes_the_download() {
    let mut h = harness(4);
    let web = h.web();
    h.tick();
    let p = h.core.progress();
    assert_eq!(p.peer_sources.get(WEB_SEED_LABEL), Some(&1));
    assert_eq!(p.peers, 1);
    // (Endgame already: every block of this small torrent is asked.)
    assert_ne!(p.state, State::Connecting);
    let (asked, _) = h.requests(web);
    assert_eq!(asked.len(), 8, "every block at once");
    for b in asked {
        h.web_block(web, b, false);
    }
    h.settle();
    assert!(h.core.is_complete());
    // Done with it: its task is told to end.
    assert!(h.core.sources.webs().next().is_none());
    assert!(h.closed(web));
    assert_eq!(h.finished, Some(Outcome::Complete));
}

/// A failed request: the server's blocks go to others at once, it is
/// left alone for 5 s (then 10 s …), the status says why, and it is asked
/// again once the wait is over.
#[test]
fn a_failing_web_seed_backs_off() {
    let mut h = harness(4);
    let web = h.web();
    let (asked, _) = h.requests(web);
    let why = "error sending request: tcp connect error: Connection refused (os error 111)";
    let ev = WebEvent::Failed {
        blocks: asked.clone(),
        why: why.into(),
    };
    h.input(Input::Web(web, ev));
    assert_eq!(h.core.picker.outstanding(web), 0);
    assert_eq!(h.resets, vec![web]);
    assert!(h.requests(web).0.is_empty());
    h.tick();
    let p = h.core.progress();
    assert_eq!(p.peers, 0);
    assert_eq!(p.state, State::Connecting);
    assert_eq!(
        p.status,
        "web seed http://127.0.0.1/t: connection refused, retry in 5s"
    );
    // A peer takes over what the server had.
    let seed = h.seed(2);
    h.peer(seed, PeerEvent::Unchoked);
    let (theirs, _) = h.requests(seed);
    assert_eq!(theirs.len(), asked.len());
    // Wait over: asked again (the peer holds every block, so endgame
    // duplicates some).
    h.run_for(Duration::from_secs(4));
    assert!(h.requests(web).0.is_empty(), "asked before 5 s");
    h.run_for(Duration::from_secs(2));
    assert!(!h.requests(web).0.is_empty());
    // A second failure in a row waits twice as long.
    let ev = WebEvent::Failed {
        blocks: Vec::new(),
        why: "HTTP 503 Service Unavailable".into(),
    };
    h.input(Input::Web(web, ev));
    let w = h.core.sources.get(web).unwrap().as_web().unwrap();
    assert_eq!(w.failures, 2);
    assert_eq!(w.retry_at, Some(h.now + Duration::from_secs(10)));
}

/// Timeout: a web seed that sends nothing for 30 s with requests out
/// fails like a refused request (its blocks back to the picker, a reset,
/// a back-off), and not a moment before.
#[test]
fn a_silent_web_seed_times_out() {
    let mut h = harness(4);
    let web = h.web();
    assert_eq!(h.requests(web).0.len(), 8);
    h.run_for(SNUB_AFTER);
    assert!(h.resets.is_empty(), "timed out early");
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.resets, vec![web]);
    assert_eq!(h.core.picker.outstanding(web), 0);
    let w = h.core.sources.get(web).unwrap().as_web().unwrap();
    assert_eq!(w.failures, 1);
    assert!(h.core.progress().status.contains("no data for 30s"));
}

/// A web seed that sends the only copy of a bad piece is banned; one whose
/// bad block is found by comparing with the good copy is too.
#[test]
fn a_lying_web_seed_is_banned() {
    for whole_pieces in [true, false] {
        let mut h = harness(4);
        let web = h.web();
        let (asked, _) = h.requests(web);
        for b in asked.iter().filter(|b| whole_pieces || b.begin == 0) {
            h.web_block(web, *b, true);
        }
        if !whole_pieces {
            // The rest comes from a peer: mixed pieces fail, and the good
            // copy names the web seed's block.
            let ev = WebEvent::Failed {
                blocks: Vec::new(),
                why: "timed out".into(),
            };
            h.input(Input::Web(web, ev));
        }
        h.settle();
        let seed = h.seed(2);
        h.peer(seed, PeerEvent::Unchoked);
        h.serve_until_complete(seed);
        assert!(h.core.progress().hash_failures >= 1);
        assert_eq!(h.core.progress().banned, 1, "whole pieces: {whole_pieces}");
        assert!(h.core.sources.webs().next().is_none());
        assert!(h.closed(web));
        let (_, closed) = h.requests(seed);
        assert!(!closed, "the honest peer was banned");
    }
}

/// A peer's advertised `reqq` caps the requests we keep in flight to it.
#[test]
fn requests_in_flight_respect_the_peers_reqq() {
    let mut h = harness(64);
    let a = h.seed(1);
    h.peer(
        a,
        PeerEvent::Extended {
            reqq: Some(5),
            listen_port: None,
            client: None,
            pex: false,
            holepunch: false,
        },
    );
    h.peer(a, PeerEvent::Unchoked);
    let (asked, _) = h.requests(a);
    assert_eq!(asked.len(), 5);
    // Each answer makes room for exactly one more, never more than 5 out.
    for b in asked {
        h.block(a, b, false);
        let (more, _) = h.requests(a);
        assert_eq!(more.len(), 1);
        assert!(h.core.picker.outstanding(a) <= 5);
    }
}

/// Endgame: the last blocks go to a second peer too, and whichever copy
/// arrives first cancels the other.
#[test]
fn endgame_requests_twice_and_cancels_the_loser() {
    let mut h = harness(1);
    let a = h.seed(1);
    let b = h.seed(2);
    h.peer(a, PeerEvent::Unchoked);
    let (to_a, _) = h.requests(a);
    assert_eq!(to_a.len(), 2);
    h.peer(b, PeerEvent::Unchoked);
    let (to_b, _) = h.requests(b);
    assert_eq!(to_b.len(), 2, "endgame should ask the second peer too");
    h.tick();
    assert_eq!(h.core.progress().state, State::Endgame);
    h.block(a, to_a[0], false);
    assert_eq!(h.cancels(b), vec![to_a[0]]);
    assert!(h.cancels(a).is_empty());
}

/// Snubbing: a peer that sends nothing for 30 s with requests out loses
/// them (cancelled, handed to another peer) and keeps a queue of one; a
/// block from it ends the snub.
#[test]
fn a_snubbing_peer_loses_its_requests() {
    let mut h = harness(64);
    let slow = h.seed(1);
    let other = h.seed(2);
    h.peer(slow, PeerEvent::Unchoked);
    let (asked, _) = h.requests(slow);
    assert_eq!(asked.len(), super::sources::MIN_QUEUE);
    h.run_for(SNUB_AFTER - Duration::from_secs(2));
    // The other peer unchokes us late: it is not snubbing anyone yet.
    h.peer(other, PeerEvent::Unchoked);
    let (theirs, _) = h.requests(other);
    h.run_for(Duration::from_secs(1));
    assert!(h.cancels(slow).is_empty(), "snubbed early");
    h.run_for(Duration::from_secs(2));
    let cmds = h.commands(slow);
    let mut cancelled: Vec<BlockRef> = cmds
        .iter()
        .filter_map(|c| match c {
            PeerCmd::Cancel(b) => Some(*b),
            _ => None,
        })
        .collect();
    cancelled.sort();
    let mut expect = asked.clone();
    expect.sort();
    assert_eq!(cancelled, expect);
    assert!(h.core.sources.peer(slow).unwrap().snubbed);
    // It keeps a queue of one; its other blocks go to the other peer as
    // soon as that one has room.
    let again: Vec<BlockRef> = cmds
        .iter()
        .filter_map(|c| match c {
            PeerCmd::Request(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(again.len() <= 1, "{again:?}");
    assert_eq!(h.core.picker.outstanding(slow), again.len());
    for b in theirs {
        h.block(other, b, false);
    }
    let (moved, _) = h.requests(other);
    let lost: Vec<&BlockRef> = asked
        .iter()
        .filter(|b| !moved.contains(b) && !again.contains(b))
        .collect();
    assert!(lost.is_empty(), "not asked of anyone: {lost:?}");
    // A block ends the snub.
    h.block(slow, asked[0], false);
    assert!(!h.core.sources.peer(slow).unwrap().snubbed);
}

/// Regression (issue 10): with no peer at all the picker sees every piece
/// as unavailable, which used to read as "endgame" at 0 bytes.
#[test]
fn without_peers_the_status_says_why() {
    let mut h = harness(4);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.core.progress().state, State::Connecting);
    assert_eq!(
        h.core.progress().status,
        "waiting for peers: no tracker, DHT off"
    );
    let tracker = TrackerView::not_contacted("http://127.0.0.1:1/announce".into(), 0);
    h.core.set_sources(vec![tracker.clone()], true);
    h.tick();
    assert_eq!(h.core.progress().status, "waiting for peers");
    h.core.set_sources(vec![tracker], false);
    h.input(Input::TrackerStatus(Some(
        "tracker 127.0.0.1:1 unreachable".into(),
    )));
    h.tick();
    assert_eq!(
        h.core.progress().status,
        "waiting for peers: tracker 127.0.0.1:1 unreachable, DHT off"
    );
    h.input(Input::Peers(PeerSource::Manual, vec![addr(9)]));
    let (key, _) = h.connects[0];
    h.tick();
    assert_eq!(h.core.progress().status, "connecting to 1 peer");
    let why = "connect: Connection refused (os error 111)";
    h.peer(key, PeerEvent::Gone(why.into()));
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.core.progress().state, State::Connecting);
    assert_eq!(
        h.core.progress().status,
        "peer 127.0.1.9:6881: connection refused, retry in 10s"
    );
    // A seed arrives: downloading, with the seed's blocks in flight.
    h.seed(1);
    h.tick();
    assert_eq!(h.core.progress().state, State::Downloading);
    assert_eq!(h.core.progress().status, "downloading");
    assert_eq!(h.core.progress().total, 4 * PIECE as u64);
    assert_eq!(h.core.progress().piece_count, 4);
}

/// `--seed-time`: a complete torrent keeps seeding until the time has
/// passed, counted on the core's clock.
#[test]
fn seeding_ends_when_its_time_is_up() {
    let opts = Options {
        keep_seeding: true,
        seed_time: Some(Duration::from_secs(60)),
        ..options()
    };
    let mut h = harness_with(2, opts);
    let seed = h.seed(1);
    h.peer(seed, PeerEvent::Unchoked);
    h.serve_until_complete(seed);
    assert_eq!(h.completes, 1);
    assert_eq!(h.core.progress().state, State::Seeding);
    h.run_for(Duration::from_secs(59));
    assert_eq!(h.finished, None);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.finished, Some(Outcome::Complete));
}

/// The same inputs at the same instants with the same seed give the same
/// actions: a run can be replayed (what a simulator needs).
#[test]
fn runs_are_reproducible_from_the_seed() {
    let run = |seed: u64| {
        let mut h = harness::Harness::new_v1(16, seed);
        let peers: Vec<u64> = (1..=3).map(|n| h.seed(n)).collect();
        for &k in &peers {
            h.peer(k, PeerEvent::Unchoked);
            h.peer(k, PeerEvent::Interested(true));
        }
        for round in 0..30 {
            for &k in &peers {
                let (asked, _) = h.requests(k);
                for b in asked.into_iter().take(3) {
                    h.block(k, b, round % 7 == 0 && k == peers[0]);
                }
            }
            h.settle();
            h.run_for(Duration::from_millis(700));
        }
        h.log
    };
    let first = run(1);
    assert!(first
        .iter()
        .any(|a| a.starts_with("Send(") && a.contains("Request")));
    assert_eq!(first, run(1));
    // Another seed picks other pieces first.
    assert_ne!(first, run(2));
}

/// Bans: a peer that alone sent a bad piece is banned, and when it comes
/// back (a new connection to us) it is refused by its peer id.
#[test]
fn a_banned_peer_is_refused_when_it_comes_back() {
    let mut h = harness(4);
    let liar = h.seed(1);
    h.send_one_piece(liar, true);
    assert!(h.requests(liar).1, "a lone sender of a bad piece is banned");
    assert_eq!(h.core.progress().banned, 1);
    h.peer(liar, PeerEvent::Gone("banned".into()));
    assert_eq!(h.accept(1), None);
    assert_eq!(h.core.sources.peer_count(), 0);
}

/// Timeouts: a peer that sends one block of a piece and then nothing is
/// left alone for [`SNUB_AFTER`] after that block (not after the first
/// request), then its requests time out: cancelled and asked of the other
/// peer, which completes the half-sent piece and the rest; the silent
/// peer is not blamed for anything.
#[test]
fn a_silent_peers_requests_time_out_and_its_half_piece_completes() {
    let mut h = harness(64);
    let silent = h.seed(1);
    let other = h.seed(2);
    h.peer(silent, PeerEvent::Unchoked);
    let (asked, _) = h.requests(silent);
    assert!(!asked.is_empty());
    h.run_for(Duration::from_secs(10));
    // One block, then silence: the clock starts again here.
    let first = asked[0];
    h.block(silent, first, false);
    let (refill, _) = h.requests(silent);
    h.run_for(SNUB_AFTER - Duration::from_secs(1));
    assert!(h.cancels(silent).is_empty(), "timed out early");
    h.run_for(Duration::from_secs(2));
    let mut cancelled = h.cancels(silent);
    cancelled.sort();
    let mut expect: Vec<BlockRef> = asked
        .iter()
        .chain(&refill)
        .copied()
        .filter(|b| *b != first)
        .collect();
    expect.sort();
    assert_eq!(cancelled, expect, "every request still out times out");
    h.peer(other, PeerEvent::Unchoked);
    h.serve_until_complete(other);
    assert_eq!(h.written.len(), 64);
    assert_eq!(h.core.progress().hash_failures, 0);
    assert_eq!(h.core.progress().banned, 0);
    // Closed at the end as a seed we no longer need, not banned.
    assert!(!h.requests(silent).1);
}

/// Both sides dialled each other at once: each sees the other's
/// connection second. Both keep the one dialled by the lower peer id (ours
/// here), so exactly one survives; a second connection the same way round
/// is refused as before.
#[test]
fn crossed_dials_keep_one_connection() {
    let mut h = harness(4);
    // Peer 1 dialled us first; then our own dial to it connects.
    let theirs = h.accept(1).expect("accepted");
    let ours = 99;
    let connected = |incoming| PeerEvent::Connected {
        addr: addr(1),
        peer_id: [1; 20],
        fast: true,
        v2: false,
        incoming,
        transport: crate::peer::transport::Transport::Tcp,
    };
    h.peer(ours, connected(false));
    assert!(h.closed(theirs), "the connection it dialled gives way");
    assert!(!h.closed(ours));
    assert!(h.core.sources.peer(ours).is_some());
    assert!(h.core.sources.peer(theirs).is_none());
    // It dials again: refused, ours stays.
    let again = h.accept(1);
    assert_eq!(again, None);
    assert!(h.core.sources.peer(ours).is_some());
    assert_eq!(h.core.sources.peer_count(), 1);
}
