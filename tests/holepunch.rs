//! Hole punching (BEP 55, issue 21) between two homes, each behind its
//! own NAT router, in network namespaces the test makes:
//!
//! ```text
//!  home A 10.218.1.2 ─ router A ─ 10.218.10.1 ┐
//!                                            internet 10.218.10.2 / 10.218.20.2 (relay R)
//!  home C 10.218.3.2 ─ router C ─ 10.218.20.1 ┘
//! ```
//!
//! Each router masquerades out of its WAN side (Linux keeps the source
//! port, the same for every destination: endpoint-independent mapping)
//! and drops what comes in unless conntrack has seen the flow go out
//! first (address- and port-dependent filtering): an unsolicited dial
//! dies there, but once both sides have sent to each other, uTP passes.
//!
//! The torrent has a big file and a small one. C has the big file only
//! and serves it, A wants the big file, R (a shoal on the internet that
//! both dial) wants the small one, which nobody has: so R never has a
//! byte to pass on, and nobody is a seed that a finished peer would drop.
//! R tells A of C by PEX; A's dial of C dies at router C, so A asks R for
//! a rendezvous, R sends `connect` to both, both dial uTP, and A
//! downloads the big file from C. The control: with hole punching off A
//! never reaches C and cannot finish. No tracker: C must not learn A's address (C runs
//! without PEX), or its own dial of A, crossing A's, would open both NATs
//! without any help (a hole punch by chance) and blur the control.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::nat::{need, run, wait_for};
use common::*;

const HOME_A: &str = "10.218.1.2";
const LAN_A: &str = "10.218.1.1";
const WAN_A: &str = "10.218.10.1";
const INET_A: &str = "10.218.10.2";
const HOME_C: &str = "10.218.3.2";
const LAN_C: &str = "10.218.3.1";
const WAN_C: &str = "10.218.20.1";
const INET_C: &str = "10.218.20.2";
const RELAY_PORT: &str = "7000";

static COUNT: AtomicU32 = AtomicU32::new(0);

/// Five namespaces: two homes, their routers, the internet.
struct TwoHomes {
    home_a: String,
    rtr_a: String,
    home_c: String,
    rtr_c: String,
    inet: String,
}

fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    c.stdin
        .take()
        .ok_or("no stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let o = c.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("nft: {}", String::from_utf8_lossy(&o.stderr)))
    }
}

/// A veth pair from `a` (named `an`) to `b` (named `bn`), addressed.
fn link(n: u32, tag: &str, a: (&str, &str, &str), b: (&str, &str, &str)) -> Result<(), String> {
    let pid = std::process::id() % 100_000;
    let (x, y) = (format!("h{tag}{pid}x{n}"), format!("i{tag}{pid}x{n}"));
    run(
        "ip",
        &[
            "link", "add", &x, "netns", a.0, "type", "veth", "peer", "name", &y, "netns", b.0,
        ],
    )?;
    for (ns, from, to, addr) in [(a.0, &x, a.1, a.2), (b.0, &y, b.1, b.2)] {
        run("ip", &["-n", ns, "link", "set", from, "name", to])?;
        run(
            "ip",
            &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", to],
        )?;
        run("ip", &["-n", ns, "link", "set", to, "up"])?;
    }
    Ok(())
}

/// The home router: masquerade out, and nothing in that did not go out
/// first (neither forwarded nor to the router itself, and silently: an
/// ICMP error would end the other side's uTP dial before its turn).
fn router_rules() -> String {
    "table ip shoalhp {\n\
       chain postrouting { type nat hook postrouting priority 100; oifname \"wan0\" masquerade; }\n\
       chain forward { type filter hook forward priority 0;\n\
         iifname \"wan0\" ct state established,related accept;\n\
         iifname \"wan0\" drop; }\n\
       chain input { type filter hook input priority 0;\n\
         iifname \"wan0\" ct state established,related accept;\n\
         iifname \"wan0\" drop; }\n\
     }\n"
    .to_string()
}

impl TwoHomes {
    fn new() -> TwoHomes {
        need("ip", "iproute2");
        need("nft", "nftables");
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("shhp{}x{n}", std::process::id());
        let t = TwoHomes {
            home_a: format!("{tag}-ha"),
            rtr_a: format!("{tag}-ra"),
            home_c: format!("{tag}-hc"),
            rtr_c: format!("{tag}-rc"),
            inet: format!("{tag}-in"),
        };
        if let Err(e) = t.build(n) {
            panic!("cannot make the namespaces (root and ip netns needed): {e}");
        }
        t
    }

    fn all(&self) -> [&String; 5] {
        [
            &self.home_a,
            &self.rtr_a,
            &self.home_c,
            &self.rtr_c,
            &self.inet,
        ]
    }

    fn build(&self, n: u32) -> Result<(), String> {
        for ns in self.all() {
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let (ha, ra, hc, rc, i) = (
            &self.home_a,
            &self.rtr_a,
            &self.home_c,
            &self.rtr_c,
            &self.inet,
        );
        link(n, "a", (ha, "eth0", HOME_A), (ra, "lan0", LAN_A))?;
        link(n, "b", (ra, "wan0", WAN_A), (i, "eth0", INET_A))?;
        link(n, "c", (hc, "eth0", HOME_C), (rc, "lan0", LAN_C))?;
        link(n, "d", (rc, "wan0", WAN_C), (i, "eth1", INET_C))?;
        run("ip", &["-n", ha, "route", "add", "default", "via", LAN_A])?;
        run("ip", &["-n", hc, "route", "add", "default", "via", LAN_C])?;
        run("ip", &["-n", ra, "route", "add", "default", "via", INET_A])?;
        run("ip", &["-n", rc, "route", "add", "default", "via", INET_C])?;
        for r in [ra, rc, i] {
            run(
                "ip",
                &["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            )?;
        }
        nft(ra, &router_rules())?;
        nft(rc, &router_rules())?;
        Ok(())
    }

    /// Runs shoal in `ns` (no DHT, no local discovery, no port mapping;
    /// hole punching as `holepunch` says).
    fn shoal(&self, ns: &str, args: &[&str], dir: &Path, name: &str, holepunch: bool) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, shoal_bin()])
            .args(args)
            .env("SHOAL_NO_DHT", "1")
            .env("SHOAL_NO_LSD", "1")
            .env("SHOAL_NO_PORT_MAPPING", "1")
            .env("SHOAL_LOG", "shoal=debug");
        if holepunch {
            cmd.env_remove("SHOAL_NO_HOLEPUNCH");
        } else {
            cmd.env("SHOAL_NO_HOLEPUNCH", "1");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("ip netns exec shoal");
        Proc { child, out, err }
    }
}

impl Drop for TwoHomes {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The three peers of one run; the leecher's process, whether it
/// finished, and everyone's logs.
struct Run {
    a: Proc,
    status: std::process::ExitStatus,
    relay: Proc,
    seeder: Proc,
}

/// Who relays: a shoal, or libtorrent (BEP 55's reference relay).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relay {
    Shoal,
    Libtorrent(&'static str),
}

/// libtorrent on the internet host, wanting only the small file (the
/// second; nobody has it): prints each peer it holds as a JSON line.
const LT_RELAY: &str = r#"
import sys, time, json
sys.path.append('/usr/lib/python3/dist-packages')
import libtorrent as lt
torrent, save, port, limit, addrs = sys.argv[1:6]
# Both addresses named: libtorrent expands 0.0.0.0 into one socket per
# interface address it sees at start-up.
s = lt.session({'listen_interfaces': ','.join(a + ':' + port for a in addrs.split(',')),
                'enable_dht': False,
                'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
                'allow_multiple_connections_per_ip': True})
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = save
p.file_priorities = [0, 1]
h = s.add_torrent(p)
t0 = time.time()
while time.time() - t0 < float(limit):
    for pi in h.get_peer_info():
        print(json.dumps({'peer': pi.ip[0], 'port': pi.ip[1], 'utp': bool(pi.flags & (1 << 17)),
                          'down': pi.total_download, 'up': pi.total_upload}), flush=True)
    time.sleep(0.2)
"#;

fn start_relay(net: &TwoHomes, relay: Relay, t: &str, d: &Path, holepunch: bool) -> Proc {
    match relay {
        Relay::Shoal => net.shoal(
            &net.inet,
            &[
                "download",
                t,
                "-o",
                d.join("r").to_str().unwrap(),
                "--port",
                RELAY_PORT,
                "--only",
                "small.bin",
                "--seed",
            ],
            d,
            "relay",
            holepunch,
        ),
        Relay::Libtorrent(py) => {
            let script = d.join("lt_relay.py");
            std::fs::write(&script, LT_RELAY).unwrap();
            let out = d.join("relay.out");
            let err = d.join("relay.err");
            let child = Command::new("ip")
                .args(["netns", "exec", &net.inet, py])
                .arg(&script)
                .args([t, d.join("r").to_str().unwrap(), RELAY_PORT, "150"])
                .arg(format!("{INET_A},{INET_C}"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .expect("ip netns exec python3");
            Proc { child, out, err }
        }
    }
}

/// The relay holds the seeder: shoal logs it, libtorrent lists it.
fn relay_holds_seeder(relay: &Proc, kind: Relay) -> bool {
    match kind {
        Relay::Shoal => relay
            .stderr()
            .contains(&format!("{WAN_C}:6881: connected over")),
        Relay::Libtorrent(_) => relay.stdout().contains(&format!("\"peer\": \"{WAN_C}\"")),
    }
}

fn swarm(holepunch: bool, d: &Path) -> (TwoHomes, Run) {
    swarm_with(Relay::Shoal, holepunch, d)
}

fn swarm_with(kind: Relay, holepunch: bool, d: &Path) -> (TwoHomes, Run) {
    let net = TwoHomes::new();
    make_tree(
        &d.join("src"),
        &[("pack/big.bin", 2 << 20), ("pack/small.bin", 65536)],
    );
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 65536);
    let t = t.to_str().unwrap();
    // C's folder holds the big file alone.
    std::fs::create_dir_all(d.join("c/pack")).unwrap();
    std::fs::copy(d.join("src/pack/big.bin"), d.join("c/pack/big.bin")).unwrap();
    let relay = start_relay(&net, kind, t, d, holepunch);
    // Listening (UDP side, for uTP) before C dials it.
    wait_for(Duration::from_secs(30), "the relay's port", || {
        run("ip", &["netns", "exec", &net.inet, "ss", "-uln"])
            .is_ok_and(|s| s.contains(&format!(":{RELAY_PORT} ")))
    });
    // libtorrent finds the target of a rendezvous by its connection's
    // address: a TCP connection's (an ephemeral port) is not where the
    // peer listens, so with libtorrent relaying both homes keep to uTP
    // (whose connections come from the listening port).
    let transport = match kind {
        Relay::Shoal => "both",
        Relay::Libtorrent(_) => "utp",
    };
    let seeder = net.shoal(
        &net.home_c,
        &[
            "download",
            "--transport",
            transport,
            t,
            "-o",
            d.join("c").to_str().unwrap(),
            "--only",
            "big.bin",
            "--seed",
            "--port",
            "6881",
            "--peer",
            &format!("{INET_C}:{RELAY_PORT}"),
            "--no-pex",
        ],
        d,
        "seeder",
        holepunch,
    );
    // R must hold C before A arrives, so its first PEX to A names C.
    let start = std::time::Instant::now();
    while !relay_holds_seeder(&relay, kind) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the seeder never reached the relay\nrelay:\n{}{}\nseeder:\n{}",
            tail(&relay.stderr(), 20),
            tail(&relay.stdout(), 4),
            tail(&seeder.stderr(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut a = net.shoal(
        &net.home_a,
        &[
            "download",
            "--transport",
            transport,
            t,
            "-o",
            d.join("a").to_str().unwrap(),
            "--port",
            "6881",
            "--peer",
            &format!("{INET_A}:{RELAY_PORT}"),
            "--only",
            "big.bin",
            "--stall-timeout",
            "20",
        ],
        d,
        "leecher",
        holepunch,
    );
    let status = a.wait(Duration::from_secs(120));
    (
        net,
        Run {
            a,
            status,
            relay,
            seeder,
        },
    )
}

fn logs(r: &Run) -> String {
    format!(
        "leecher:\n{}\nrelay:\n{}{}\nseeder:\n{}",
        tail(&r.a.stderr(), 40),
        tail(&r.relay.stderr(), 30),
        tail(&r.relay.stdout(), 4),
        tail(&r.seeder.stderr(), 30)
    )
}

#[test]
fn two_homes_behind_nats_meet_by_hole_punching() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_net, r) = swarm(true, d);
    // Shown with --nocapture: the whole exchange.
    eprintln!("{}", logs(&r));
    assert!(r.status.success(), "{}", logs(&r));
    // The big file came from C, the only one that had it, straight over
    // uTP through both routers.
    let got = std::fs::read(d.join("a/pack/big.bin")).unwrap();
    assert_eq!(got, std::fs::read(d.join("src/pack/big.bin")).unwrap());
    let a = r.a.stderr();
    assert!(
        a.contains(&format!("{WAN_C}:6881: connected over utp")),
        "{}",
        logs(&r)
    );
    assert!(a.contains("asking"), "{}", logs(&r));
    assert!(
        r.relay.stderr().contains("relaying a hole punch"),
        "{}",
        logs(&r)
    );
}

#[test]
fn without_hole_punching_the_homes_never_meet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_net, r) = swarm(false, d);
    // Stalled: R has nothing, and C cannot be reached.
    assert!(!r.status.success(), "{}", logs(&r));
    let a = r.a.stderr();
    assert!(a.contains("stalled"), "{}", logs(&r));
    // A heard of C and tried it, and never got through.
    assert!(a.contains(&format!("{WAN_C}:6881")), "{}", logs(&r));
    assert!(
        !a.contains(&format!("{WAN_C}:6881: connected over")),
        "{}",
        logs(&r)
    );
    assert!(!r.relay.stderr().contains("relaying a hole punch"));
}

/// libtorrent as the relay between two shoals: its PEX names C with the
/// holepunch flag, A asks it for a rendezvous, and its `connect`s bring
/// the two together through both routers.
#[test]
fn libtorrent_relays_a_hole_punch_between_two_shoals() {
    let Some(py) = libtorrent_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_net, r) = swarm_with(Relay::Libtorrent(py), true, d);
    eprintln!("{}", logs(&r));
    assert!(r.status.success(), "{}", logs(&r));
    let got = std::fs::read(d.join("a/pack/big.bin")).unwrap();
    assert_eq!(got, std::fs::read(d.join("src/pack/big.bin")).unwrap());
    let a = r.a.stderr();
    assert!(
        a.contains(&format!("{WAN_C}:6881: connected over utp")),
        "{}",
        logs(&r)
    );
    assert!(a.contains("hole punch: connect to"), "{}", logs(&r));
}
