//! A home behind a NAT router, in network namespaces the test makes:
//!
//! ```text
//!   home (10.217.1.2) ── lan0 router wan0 ── internet (10.217.2.2)
//!                    10.217.1.1      10.217.2.1
//!                     nftables: MASQUERADE out of wan0
//! ```
//!
//! The router forwards and masquerades; nothing forwards inward unless a
//! DNAT rule is added to its `prerouting` chain (what a port mapping does).
//! The names carry the process id and a counter, so tests running at the
//! same time never share one; everything is deleted on drop, processes
//! first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{shoal_bin, Proc};

pub const HOME: &str = "10.217.1.2";
pub const LAN_GW: &str = "10.217.1.1";
pub const WAN: &str = "10.217.2.1";
pub const INET: &str = "10.217.2.2";
/// The router's nftables table (family ip) with the `prerouting` (DNAT)
/// and `postrouting` (MASQUERADE) chains.
pub const TABLE: &str = "shoalnat";

static COUNT: AtomicU32 = AtomicU32::new(0);

pub struct Nat {
    pub home: String,
    pub router: String,
    pub inet: String,
    /// Helper processes (tracker, routers) killed on drop.
    helpers: Vec<Child>,
}

/// Runs a command; its stderr on failure.
pub fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Fails (with the line that installs it) when a program a test runs is
/// missing.
pub fn need(prog: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{prog} is missing: apt-get install -y {package} (bash .ci/deps installs it)"
    );
}

impl Nat {
    pub fn new() -> Nat {
        need("ip", "iproute2");
        need("nft", "nftables");
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("shpm{}x{n}", std::process::id());
        let nat = Nat {
            home: format!("{tag}-home"),
            router: format!("{tag}-rtr"),
            inet: format!("{tag}-inet"),
            helpers: Vec::new(),
        };
        if let Err(e) = nat.build(n) {
            panic!("cannot make the namespaces (root and ip netns needed): {e}");
        }
        nat
    }

    fn build(&self, n: u32) -> Result<(), String> {
        let (h, r, i) = (&self.home, &self.router, &self.inet);
        for ns in [h, r, i] {
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Created straight inside the namespaces: nothing in the root one.
        let pid = std::process::id() % 100_000;
        let (a, b) = (format!("pa{pid}x{n}"), format!("pb{pid}x{n}"));
        let (c, d) = (format!("pc{pid}x{n}"), format!("pd{pid}x{n}"));
        run(
            "ip",
            &[
                "link", "add", &a, "netns", h, "type", "veth", "peer", "name", &b, "netns", r,
            ],
        )?;
        run(
            "ip",
            &[
                "link", "add", &c, "netns", r, "type", "veth", "peer", "name", &d, "netns", i,
            ],
        )?;
        for (ns, from, to, addr) in [
            (h, &a, "eth0", format!("{HOME}/24")),
            (r, &b, "lan0", format!("{LAN_GW}/24")),
            (r, &c, "wan0", format!("{WAN}/24")),
            (i, &d, "eth0", format!("{INET}/24")),
        ] {
            run("ip", &["-n", ns, "link", "set", from, "name", to])?;
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", to])?;
            run("ip", &["-n", ns, "link", "set", to, "up"])?;
        }
        run("ip", &["-n", h, "route", "add", "default", "via", LAN_GW])?;
        run(
            "ip",
            &["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        )?;
        let rules = format!(
            "table ip {TABLE} {{\n\
               chain prerouting {{ type nat hook prerouting priority -100; }}\n\
               chain postrouting {{ type nat hook postrouting priority 100; oifname \"wan0\" masquerade; }}\n\
             }}\n"
        );
        self.nft(r, &rules)?;
        Ok(())
    }

    /// Loads nftables rules (`nft -f -`) into namespace `ns`.
    pub fn nft(&self, ns: &str, rules: &str) -> Result<(), String> {
        use std::io::Write;
        let mut c = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        c.stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .map_err(|e| e.to_string())?;
        let o = c.wait_with_output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("nft: {}", String::from_utf8_lossy(&o.stderr)))
        }
    }

    /// The router's DNAT rules, one line each.
    pub fn dnat_rules(&self) -> Vec<String> {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.router,
                "nft",
                "list",
                "chain",
                "ip",
                TABLE,
                "prerouting",
            ],
        )
        .unwrap_or_default();
        out.lines()
            .filter(|l| l.contains("dnat"))
            .map(|l| l.trim().to_string())
            .collect()
    }

    /// The internet host takes no incoming TCP connection except on
    /// `allow` (its tracker): a peer there can dial out but cannot be
    /// dialled, so data between it and the home only flows if the home
    /// is reachable through the router.
    pub fn inet_refuses_incoming(&self, allow: u16) {
        let rules = format!(
            "table ip shoalfw {{\n\
               chain input {{ type filter hook input priority 0;\n\
                 tcp dport != {allow} ct state new drop; }}\n\
             }}\n"
        );
        self.nft(&self.inet, &rules).unwrap();
    }

    /// Starts a helper program in `ns`, logging to `dir/name.log`; it is
    /// killed when the `Nat` is dropped.
    pub fn helper(&mut self, ns: &str, argv: &[&str], dir: &Path, name: &str) -> PathBuf {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", argv[0]));
        self.helpers.push(child);
        log
    }

    /// Starts the fake router (tests/common/fake_router.py) with `extra`
    /// flags; returns its log once it said "ready".
    pub fn fake_router(&mut self, extra: &[&str], dir: &Path) -> PathBuf {
        need("python3", "python3");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/fake_router.py");
        let mut argv = vec![
            "python3", script, "--lan", LAN_GW, "--wan", WAN, "--table", TABLE, "--wan-if", "wan0",
        ];
        argv.extend_from_slice(extra);
        let router = self.router.clone();
        let log = self.helper(&router, &argv, dir, "fake-router");
        wait_for(Duration::from_secs(20), "the fake router", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready"))
        });
        log
    }

    /// An opentracker on the internet host (port 6969); `info_hash` is
    /// whitelisted (Debian's build takes no other). Returns its announce URL.
    pub fn tracker(&mut self, info_hash: &[u8; 20], dir: &Path) -> String {
        need("opentracker", "opentracker");
        let wl = dir.join("whitelist");
        std::fs::write(&wl, format!("{}\n", hex(info_hash))).unwrap();
        let conf = dir.join("ot.conf");
        std::fs::write(
            &conf,
            format!(
                "listen.tcp_udp {INET}:6969\naccess.whitelist {}\n",
                wl.display()
            ),
        )
        .unwrap();
        // opentracker drops to `nobody`: it must read the whitelist.
        use std::os::unix::fs::PermissionsExt;
        for p in [dir, &wl, &conf] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let inet = self.inet.clone();
        self.helper(
            &inet,
            &["opentracker", "-f", conf.to_str().unwrap()],
            dir,
            "tracker",
        );
        wait_for(Duration::from_secs(20), "opentracker", || {
            run("ip", &["netns", "exec", &inet, "ss", "-ltn"]).is_ok_and(|s| s.contains(":6969 "))
        });
        format!("http://{INET}:6969/announce")
    }

    /// Runs shoal in `ns` with the test environment (no DHT, no local
    /// discovery), port mapping on or off, pointed at the router when on.
    pub fn shoal(&self, ns: &str, args: &[&str], dir: &Path, name: &str, mapping: Mapping) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, shoal_bin()])
            .args(args)
            .env("SHOAL_NO_DHT", "1")
            .env("SHOAL_NO_LSD", "1")
            .env("SHOAL_LOG", "shoal=debug")
            .env_remove("SHOAL_GATEWAY");
        match mapping {
            Mapping::Off => {
                cmd.env("SHOAL_NO_PORT_MAPPING", "1");
            }
            Mapping::Gateway => {
                cmd.env_remove("SHOAL_NO_PORT_MAPPING")
                    .env("SHOAL_GATEWAY", LAN_GW);
            }
            Mapping::DefaultRoute => {
                cmd.env_remove("SHOAL_NO_PORT_MAPPING");
            }
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

/// How a shoal in the namespaces maps its port.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// `SHOAL_NO_PORT_MAPPING=1`: the flag's environment form.
    Off,
    /// On, with `SHOAL_GATEWAY` naming the router.
    Gateway,
    /// On, finding the router as a user's shoal does: the default route
    /// for NAT-PMP, SSDP multicast for UPnP (both stay in the namespace).
    DefaultRoute,
}

impl Drop for Nat {
    fn drop(&mut self) {
        for c in &mut self.helpers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.home, &self.router, &self.inet] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls `cond` every 50 ms; panics naming `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `port_mapping` events of a `--json` run, in order.
pub fn mapping_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "port_mapping")
        .collect()
}

/// Waits for a `port_mapping` event whose state is not `trying`, and
/// returns it.
pub fn settled_mapping(p: &mut Proc, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(e) = mapping_events(&p.stdout())
            .into_iter()
            .find(|e| e["state"] != "trying")
        {
            return e;
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!(
                "shoal exited ({st}) before its port mapping settled:\n{}\n{}",
                p.stdout(),
                super::tail(&p.stderr(), 30)
            );
        }
        assert!(
            start.elapsed() < limit,
            "no settled port_mapping event after {limit:?}:\n{}\n{}",
            p.stdout(),
            super::tail(&p.stderr(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
