//! Port mapping from behind a home router (issue 21), in network
//! namespaces the tests make (tests/common/nat.rs: home → router with
//! nftables MASQUERADE → internet with opentracker and a leecher).
//!
//! The data path is proven with tests/common/fake_router.py on the router,
//! a small UPnP IGD + NAT-PMP server that turns each mapping shoal asks
//! for into a real nftables DNAT rule: with the mapping the leecher on the
//! internet completes through the router; with `--no-port-mapping` it
//! cannot connect; once shoal exits the rule is gone. The internet host
//! refuses incoming connections, so the seeder cannot simply dial out to
//! the leecher: the data must come in through the router. Debian's
//! miniupnpd is run too, to show that shoal asks a real one (it refuses
//! test addresses, see docs). Hostile routers get their own tests.

mod common;

use std::path::Path;
use std::time::Duration;

use common::nat::{self, Mapping, Nat};
use common::*;

/// A torrent of 2 MiB tracked by an opentracker on the internet host;
/// returns (torrent, data folder).
fn torrent(net: &mut Nat, d: &Path) -> std::path::PathBuf {
    make_tree(&d.join("src"), &[("pack/a.bin", 2 << 20)]);
    // A placeholder tracker first: the info-hash does not depend on it.
    let probe = create_torrent(&d.join("src/pack"), &d.join("probe.torrent"), &[], 65536);
    let url = net.tracker(&info_hash(&probe), d);
    create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[url], 65536)
}

fn seed_args<'a>(t: &'a Path, src: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "seed",
        t.to_str().unwrap(),
        "--from",
        src.to_str().unwrap(),
        "--port",
        "6881",
        "--json",
    ];
    a.extend_from_slice(extra);
    a
}

fn leech(net: &Nat, t: &Path, d: &Path, stall: &str) -> Proc {
    net.shoal(
        &net.inet,
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            "7000",
            "--json",
            "--stall-timeout",
            stall,
        ],
        d,
        "leecher",
        Mapping::Off,
    )
}

/// Ctrl-C, then the exit status (a seed stopped by Ctrl-C exits 0).
fn interrupt(p: &mut Proc) -> std::process::ExitStatus {
    p.signal(libc::SIGINT);
    p.wait(Duration::from_secs(30))
}

/// Seeds from home with mapping done as `extra_router` lets the fake
/// router answer, checks what shoal reported, lets the leecher download
/// through the router, then checks the rule goes with shoal.
fn download_through_router(router_flags: &[&str], method: &str) {
    let mut net = Nat::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = torrent(&mut net, d);
    let router_log = net.fake_router(router_flags, d);
    net.inet_refuses_incoming(6969);
    let mut seeder = net.shoal(
        &net.home,
        &seed_args(&t, &d.join("src"), &[]),
        d,
        "seeder",
        Mapping::Gateway,
    );
    let m = nat::settled_mapping(&mut seeder, Duration::from_secs(60));
    let want = format!("port 6881 open via {method} (external {}:6881)", nat::WAN);
    assert_eq!(m["state"], "open", "{m}");
    assert_eq!(m["message"], want.as_str(), "{m}");
    assert_eq!(m["external_ip"], nat::WAN);
    assert_eq!(m["external_port"], 6881);
    assert_eq!(m["udp"], true, "{m}");
    let rules = net.dnat_rules();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("tcp dport 6881") && r.contains(&format!("{}:6881", nat::HOME))),
        "no DNAT rule for the seeder: {rules:?}"
    );

    let mut leecher = leech(&net, &t, d, "60");
    let st = leecher.wait(Duration::from_secs(120));
    assert!(
        st.success(),
        "leecher failed: {}\nseeder: {}",
        tail(&leecher.stderr(), 30),
        tail(&seeder.stderr(), 30)
    );
    assert_same_tree(&d.join("src"), &d.join("out"));
    // The leecher only knew the router's address (from the tracker): the
    // data came in through the DNAT rule.
    assert!(
        leecher.stderr().contains(&format!("{}:6881", nat::WAN)),
        "{}",
        tail(&leecher.stderr(), 30)
    );

    assert!(interrupt(&mut seeder).success());
    let rules = net.dnat_rules();
    assert!(rules.is_empty(), "rules left after shoal exited: {rules:?}");
    let log = std::fs::read_to_string(router_log).unwrap();
    assert!(log.contains("nft del"), "{log}");
}

#[test]
fn upnp_and_nat_pmp_open_the_port_for_an_outside_leecher() {
    download_through_router(&[], "UPnP");
}

#[test]
fn nat_pmp_alone_opens_the_port() {
    download_through_router(&["--no-upnp"], "NAT-PMP");
}

#[test]
fn upnp_alone_opens_the_port() {
    download_through_router(&["--no-pmp"], "UPnP");
}

/// The control: the same network with `--no-port-mapping`. The router is
/// asked nothing, has no rule, and the leecher cannot connect.
#[test]
fn without_port_mapping_the_outside_leecher_cannot_connect() {
    let mut net = Nat::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = torrent(&mut net, d);
    let router_log = net.fake_router(&[], d);
    net.inet_refuses_incoming(6969);
    let mut seeder = net.shoal(
        &net.home,
        &seed_args(&t, &d.join("src"), &["--no-port-mapping"]),
        d,
        "seeder",
        Mapping::Gateway,
    );
    let mut leecher = leech(&net, &t, d, "15");
    let st = leecher.wait(Duration::from_secs(90));
    assert_eq!(st.code(), Some(1), "{}", leecher.stdout());
    assert_eq!(leecher.done_event()["outcome"], "stalled");
    let err = leecher.stderr();
    assert!(
        err.contains(&format!("{}:6881", nat::WAN)) && err.contains("refused"),
        "the leecher never tried the router's port: {}",
        tail(&err, 30)
    );
    assert!(nat::mapping_events(&seeder.stdout()).is_empty());
    assert!(net.dnat_rules().is_empty());
    let log = std::fs::read_to_string(router_log).unwrap();
    assert!(
        !log.contains("M-SEARCH") && !log.contains("pmp "),
        "the router was asked: {log}"
    );
    assert!(interrupt(&mut seeder).success());
}
