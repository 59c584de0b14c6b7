//! Local service discovery (BEP 14): a leecher with no tracker, no peer
//! address and no DHT finds the seeder by multicast on its network. Runs
//! in a network namespace of its own (root and `ip netns` needed), whose
//! loopback carries the multicast group, so nothing reaches a real LAN.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A network namespace with multicast on its loopback; deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns, String> {
        let name = format!("shoal-lsd-{}", std::process::id());
        let run = |args: &[&str]| -> Result<(), String> {
            let o = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
            }
        };
        run(&["netns", "add", &name])?;
        let ns = Netns(name.clone());
        run(&["-n", &name, "link", "set", "lo", "up"])?;
        run(&["-n", &name, "link", "set", "lo", "multicast", "on"])?;
        run(&[
            "-n",
            &name,
            "route",
            "add",
            "239.0.0.0/8",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ])?;
        Ok(ns)
    }

    fn spawn(&self, args: &[&str], dir: &Path, name: &str) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        // `ip netns exec` execs the program: the child is shoal itself.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.0, shoal_bin()])
            .args(args)
            .env_remove("SHOAL_NO_LSD")
            .env("SHOAL_NO_DHT", "1")
            .env("SHOAL_LOG", "shoal=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("ip netns exec");
        Proc { child, out, err }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_leecher_finds_the_seeder_on_its_network() {
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            // Reported, not passed: the test prints why it could not run.
            eprintln!(
                "SKIPPED a_leecher_finds_the_seeder_on_its_network: no network namespace ({why})"
            );
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("pack/a.bin", 700_000)]);
    let t = create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384);
    let mut seed = ns.spawn(
        &[
            "seed",
            t.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            "7001",
            "--quiet",
        ],
        d,
        "seeder",
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut leech = ns.spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            d.join("out").to_str().unwrap(),
            "--port",
            "7002",
            "--json",
        ],
        d,
        "leecher",
    );
    let st = leech.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", tail(&leech.stderr(), 30));
    assert_same_tree(&d.join("src"), &d.join("out"));
    // One of them heard the other's announce (which depends on who started
    // listening first) and dialled it.
    let logs = leech.stderr() + &seed.stderr();
    assert!(logs.contains("LSD: 127.0.0.1:700"), "{logs}");
    let _ = seed.stop();
}
