//! The swarm simulator (benches/sim) as a test: 100 leechers of real
//! torrent cores on virtual time, in seconds of wall time. Timing is not
//! asserted (that is the bench's job); what must hold on every run is.

#[allow(dead_code)]
#[path = "../benches/sim/mod.rs"]
mod sim;

use sim::net::{Calendar, Net};
use sim::scenario::Params;
use sim::swarm::Swarm;

/// 100 leechers, a small torrent, every piece hashed for real.
fn params() -> Params {
    Params {
        peers: 100,
        seed: 7,
        size: 2 << 20,
        piece: 32 << 10,
        verify: true,
        dt: 0.01,
        ..Params::default()
    }
}

#[test]
fn a_hundred_leechers_complete_without_fetching_a_piece_twice() {
    let r = Swarm::new(params()).run();
    assert_eq!(r.done, 100, "every leecher completes");
    let t = r.t.expect("a completion time");
    assert!(
        t >= r.t_star,
        "faster than the fluid bound: {t} < {}",
        r.t_star
    );
    // No piece fetched twice: each leecher verified each piece once.
    assert_eq!(r.pieces_twice, 0);
    assert!(
        r.verified.iter().all(|&v| v == r.pieces),
        "{:?}",
        r.verified
    );
    // Duplicate block bytes are endgame's second requests: a few blocks
    // per leecher (16 KiB each), not whole pieces again.
    let per_leecher = r.dup_bytes / 100 / (16 << 10);
    assert!(
        per_leecher <= 16,
        "{per_leecher} duplicate blocks per leecher"
    );
    // Rarest first keeps every piece in the swarm: while the seeder is
    // there, no piece is ever without a copy.
    assert!(r.min_all_with_seeder >= 1);
    assert!(
        r.seed_up_at_all.is_some(),
        "every piece reached the leechers"
    );
}

#[test]
fn a_run_replays_from_its_seed() {
    let p = Params {
        peers: 12,
        ..params()
    };
    let a = Swarm::new(p.clone()).run();
    let b = Swarm::new(p.clone()).run();
    assert_eq!(a.t, b.t);
    assert_eq!(a.times, b.times);
    assert_eq!(a.events, b.events);
}

/// With super-seeding the seeder's first copy is all it takes for every
/// piece to reach the leechers.
#[test]
fn super_seeding_gets_every_piece_out_with_one_copy() {
    let p = Params {
        peers: 10,
        piece: 16 << 10,
        seed_leaves: true,
        super_seed: true,
        ..params()
    };
    let r = Swarm::new(p).run();
    let (copies, _) = r.seed_up_at_all.expect("every piece reached the leechers");
    assert!(copies <= 1.05, "super-seeder sent {copies} F first");
}

#[test]
fn max_min_shares_a_link_and_gives_the_rest_away() {
    // Links: 0 = A up (10), 1 = B up (10), 2 = C down (12), 3 = D down (100).
    let mut net = Net::new(vec![10.0, 10.0, 12.0, 100.0]);
    let a_c = net.add_flow(0, 2, f64::INFINITY);
    let b_c = net.add_flow(1, 2, f64::INFINITY);
    let b_d = net.add_flow(1, 3, f64::INFINITY);
    for f in [a_c, b_c, b_d] {
        net.activate(f);
    }
    net.update_rates();
    // B's uplink is the tightest: 5 each to C and D; C's downlink gives
    // A the other 7.
    assert!((net.flows[b_c].rate - 5.0).abs() < 1e-9);
    assert!((net.flows[b_d].rate - 5.0).abs() < 1e-9);
    assert!((net.flows[a_c].rate - 7.0).abs() < 1e-9);
    net.deactivate(b_c);
    net.update_rates();
    assert!((net.flows[a_c].rate - 10.0).abs() < 1e-9);
    assert!((net.flows[b_d].rate - 10.0).abs() < 1e-9);
}

#[test]
fn a_flow_cap_leaves_its_share_to_others() {
    let mut net = Net::new(vec![10.0, 100.0, 100.0]);
    let slow = net.add_flow(0, 1, 2.0);
    let fast = net.add_flow(0, 2, f64::INFINITY);
    net.activate(slow);
    net.activate(fast);
    net.update_rates();
    assert!((net.flows[slow].rate - 2.0).abs() < 1e-9);
    assert!((net.flows[fast].rate - 8.0).abs() < 1e-9);
}

#[test]
fn the_calendar_keeps_order_near_and_far() {
    let mut c: Calendar<u32> = Calendar::new();
    c.at(0, 1);
    c.at(3, 2);
    c.at(5000, 3);
    let mut got = Vec::new();
    let mut out = Vec::new();
    for _ in 0..5100 {
        c.take_now(&mut out);
        got.extend(out.drain(..).map(|e| (c.now, e)));
        c.advance();
    }
    assert_eq!(got, vec![(0, 1), (3, 2), (5000, 3)]);
    assert_eq!(c.pending, 0);
}
