//! uTP (BEP 29) against independent clients, on loopback: Transmission
//! 3.00 with `utp-enabled` both ways, libtorrent 2.0.8 with TCP turned off
//! (so uTP is all it has) both ways, plain and with MSE required, and two
//! shoals with `--transport utp`. Every cell proves the connection was
//! uTP, not a TCP fallback: from the other client's own peer list
//! (Transmission's `T` flag, libtorrent's `utp_socket` flag) and from
//! shoal's `peer_transports`, which must never show TCP.
//! `SHOAL_SKIP_INTEROP=1` skips the cells with other clients.

mod common;
#[path = "common/interop.rs"]
#[allow(dead_code)]
mod interop;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{libtorrent_python, make_tree, tail, transports_seen, Proc};
use interop::*;

const FILES: &[(&str, usize)] = &[
    ("pack/a.bin", 3_000_001),
    ("pack/sub/b.bin", 2_500_000),
    ("pack/c.txt", 4_321),
];
const PIECE: u32 = 64 * 1024;
const TOTAL: u64 = 5_504_322;
const LIMIT: Duration = Duration::from_secs(120);

fn make_data(cell: &Path) -> (PathBuf, PathBuf) {
    assert_eq!(FILES.iter().map(|f| f.1 as u64).sum::<u64>(), TOTAL);
    let src = cell.join("src");
    make_tree(&src, FILES);
    let t = common::create_torrent(&src.join("pack"), &cell.join("pack.torrent"), &[], PIECE);
    (src, t)
}

fn shoal(cell: &Path, name: &str, args: &[&str]) -> (Proc, u16) {
    let port = common::free_port();
    let mut all: Vec<&str> = args.to_vec();
    let p = port.to_string();
    all.extend(["--port", &p, "--json"]);
    (Proc::spawn(&all, cell, name), port)
}

fn seeder(cell: &Path, t: &Path, src: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["seed", t.to_str().unwrap(), "--from", src.to_str().unwrap()];
    args.extend_from_slice(extra);
    shoal(cell, "shoal-seeder", &args)
}

fn leecher(cell: &Path, t: &Path, out: &Path, extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["download", t.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    shoal(cell, "shoal-leecher", &args)
}

/// Waits for a shoal download to end complete.
fn finish(p: &mut Proc, what: &str) {
    let status = wait_exit(p, what, LIMIT);
    assert!(
        status.success(),
        "{what} failed ({status}):\n{}",
        tail(&p.stderr(), 40)
    );
    let done = p.done_event();
    assert_eq!(done["complete"], true, "{what}: {done}");
    assert_eq!(done["have_bytes"].as_u64(), Some(TOTAL), "{what}: {done}");
}

/// shoal's own view (its debug log): connections over uTP, never one
/// over TCP.
fn assert_shoal_used_utp_only(p: &Proc, what: &str) {
    let (utp, tcp) = transports_seen(&p.stderr());
    assert!(
        utp >= 1 && tcp == 0,
        "{what}: peers over uTP {utp}, over TCP {tcp}\n{}",
        tail(&p.stderr(), 30)
    );
}

// ------------------------------------------------------------ Transmission

const TR: &[Program] = &[TR_DAEMON, TR_REMOTE];

fn transmission_with_utp(cell: &Path) -> Transmission {
    Transmission::start_with(
        cell,
        "transmission",
        serde_json::json!({"utp-enabled": true}),
    )
}

/// Whether Transmission's peer list (`-t 1 -pi`) shows a peer with the
/// `T` flag: connected over uTP.
fn transmission_sees_utp_peer(tr: &Transmission) -> bool {
    let list = tr.remote(&["-t", "1", "-pi"]);
    list.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1).is_some_and(|f| f.contains('T')))
}

/// shoal leecher ← Transmission seeder. shoal dials (Transmission drops
/// loopback peers a tracker names), with the default `--transport both`:
/// uTP first, so uTP it is.
#[test]
fn shoal_leeches_from_transmission_over_utp() {
    if !should_run("shoal_leeches_from_transmission_over_utp", TR) {
        return;
    }
    let cell = Cell::new("shoal_leeches_from_transmission_over_utp");
    let d = cell.path();
    let (src, t) = make_data(d);
    let tr = transmission_with_utp(d);
    tr.add(&t, &src);
    tr.wait_complete("Transmission to check the data", Duration::from_secs(30));
    let out = d.join("out");
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    let (mut leech, _) = leecher(d, &t, &out, &["--peer", &peer]);
    let mut flagged = false;
    let start = Instant::now();
    while leech.child.try_wait().unwrap().is_none() && start.elapsed() < LIMIT {
        flagged |= transmission_sees_utp_peer(&tr);
        std::thread::sleep(Duration::from_millis(200));
    }
    finish(&mut leech, "shoal leecher");
    assert_tree_matches(&src.join("pack"), &out.join("pack"), false);
    assert!(flagged, "Transmission never listed a uTP (T) peer");
    assert_shoal_used_utp_only(&leech, "shoal leecher");
}

/// Transmission leecher ← shoal seeder with `--transport utp` (no TCP at
/// all), dialling Transmission.
#[test]
fn transmission_leeches_from_shoal_over_utp() {
    if !should_run("transmission_leeches_from_shoal_over_utp", TR) {
        return;
    }
    let cell = Cell::new("transmission_leeches_from_shoal_over_utp");
    let d = cell.path();
    let (src, t) = make_data(d);
    let tr = transmission_with_utp(d);
    let dl = d.join("transmission-dl");
    std::fs::create_dir_all(&dl).unwrap();
    tr.add(&t, &dl);
    let peer = format!("127.0.0.1:{}", tr.peer_port);
    let (mut seed, _) = seeder(d, &t, &src, &["--peer", &peer, "--transport", "utp"]);
    wait_for(
        "Transmission to list shoal as a uTP peer",
        Duration::from_secs(60),
        || transmission_sees_utp_peer(&tr).then_some(()),
        || tail(&seed.stderr(), 30),
    );
    tr.wait_complete("Transmission to download from shoal", LIMIT);
    assert_tree_matches(&src.join("pack"), &dl.join("pack"), true);
    assert_running(&mut seed, "shoal seeder");
    assert!(seed.stop().success(), "{}", tail(&seed.stderr(), 30));
    assert!(seed.done_event()["uploaded"].as_u64().unwrap() >= TOTAL);
    assert_shoal_used_utp_only(&seed, "shoal seeder");
}

// -------------------------------------------------------------- libtorrent

/// libtorrent with TCP off both ways: `seed` (prints its port, seeds) or
/// `get` (connects to PEER and downloads). Every 200 ms it prints each
/// peer's flags as a JSON line; `encryption` `require` forces RC4 both
/// ways (pe_forced, rc4 only).
const LT_UTP: &str = r#"
import sys, time, json
sys.path.append('/usr/lib/python3/dist-packages')
import libtorrent as lt
role, torrent, save, peer, enc, limit = sys.argv[1:7]
peer, limit = int(peer), float(limit)
forced = enc == 'require'
s = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                'enable_upnp': False, 'enable_natpmp': False,
                'enable_outgoing_tcp': False, 'enable_incoming_tcp': False,
                'enable_outgoing_utp': True, 'enable_incoming_utp': True,
                'out_enc_policy': 0 if forced else 1, 'in_enc_policy': 0 if forced else 1,
                'allowed_enc_level': 2 if forced else 3,
                'allow_multiple_connections_per_ip': True})
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = save
h = s.add_torrent(p)
print(json.dumps({'port': s.listen_port()}), flush=True)
if peer:
    h.connect_peer(('127.0.0.1', peer))
t0 = time.time()
said = False
while time.time() - t0 < limit:
    st = h.status()
    if st.is_seeding and not said:
        print(json.dumps({'seeding': True}), flush=True)
        said = True
        if role == 'get':
            sys.exit(0)
    for pi in h.get_peer_info():
        print(json.dumps({'peer': pi.ip[1], 'utp': bool(pi.flags & (1 << 17)),
                          'rc4': bool(pi.flags & lt.peer_info.rc4_encrypted),
                          'up': pi.total_upload, 'down': pi.total_download}), flush=True)
    if peer and st.num_peers == 0 and int(time.time() - t0) % 5 == 0:
        h.connect_peer(('127.0.0.1', peer))
    time.sleep(0.2)
print(json.dumps({'timeout': h.status().progress}), flush=True)
sys.exit(1)
"#;

fn lt_lines(p: &Proc) -> Vec<serde_json::Value> {
    p.stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// What libtorrent saw of its peers: (any over uTP, any over TCP, any
/// RC4-encrypted, bytes moved the most).
fn lt_peers(p: &Proc) -> (bool, bool, bool, u64) {
    let mut seen = (false, false, false, 0u64);
    for v in lt_lines(p).iter().filter(|v| v.get("peer").is_some()) {
        if v["utp"] == true {
            seen.0 = true;
        } else {
            seen.1 = true;
        }
        seen.2 |= v["rc4"] == true;
        let moved = v["up"].as_u64().unwrap_or(0) + v["down"].as_u64().unwrap_or(0);
        seen.3 = seen.3.max(moved);
    }
    seen
}

fn libtorrent(
    py: &str,
    cell: &Path,
    role: &str,
    t: &Path,
    save: &Path,
    peer: u16,
    enc: &str,
) -> Proc {
    let script = cell.join("lt_utp.py");
    std::fs::write(&script, LT_UTP).unwrap();
    let args: Vec<String> = vec![
        script.display().to_string(),
        role.into(),
        t.display().to_string(),
        save.display().to_string(),
        peer.to_string(),
        enc.into(),
        LIMIT.as_secs().to_string(),
    ];
    spawn(py, &args, cell, &format!("libtorrent-{role}"))
}

/// libtorrent leecher (uTP only) ← shoal seeder with the default
/// `--transport both`: the connection comes in over uTP.
fn libtorrent_leeches_from_shoal(name: &'static str, enc: &str) {
    let Some(py) = libtorrent_python() else {
        return;
    };
    let cell = Cell::new(name);
    let d = cell.path();
    let (src, t) = make_data(d);
    // Held to 1 MB/s, so the connection lasts the seconds libtorrent's
    // peer list (read every 200 ms) needs to show it.
    let (mut seed, port) = seeder(d, &t, &src, &["--encryption", enc, "--upload-limit", "1M"]);
    let lt_dir = d.join("lt");
    let mut lt = libtorrent(py, d, "get", &t, &lt_dir, port, enc);
    let status = wait_exit(&mut lt, "libtorrent leecher", LIMIT);
    assert!(
        status.success(),
        "libtorrent: {}\n{}\nshoal:\n{}",
        tail(&lt.stdout(), 10),
        tail(&lt.stderr(), 10),
        tail(&seed.stderr(), 30)
    );
    assert_tree_matches(&src.join("pack"), &lt_dir.join("pack"), false);
    let (utp, tcp, rc4, _) = lt_peers(&lt);
    assert!(utp && !tcp, "libtorrent's peers: uTP {utp}, TCP {tcp}");
    assert!(
        rc4 || enc != "require",
        "libtorrent's peer not RC4-encrypted"
    );
    assert_running(&mut seed, "shoal seeder");
    assert!(seed.stop().success(), "{}", tail(&seed.stderr(), 30));
    assert_shoal_used_utp_only(&seed, "shoal seeder");
}

/// shoal leecher (default `--transport both`) ← libtorrent seeder (uTP
/// only): shoal dials uTP first and that is the connection.
fn shoal_leeches_from_libtorrent(name: &'static str, enc: &str) {
    let Some(py) = libtorrent_python() else {
        return;
    };
    let cell = Cell::new(name);
    let d = cell.path();
    let (src, t) = make_data(d);
    let mut lt = libtorrent(py, d, "seed", &t, &src, 0, enc);
    let port = wait_for(
        "libtorrent to seed",
        Duration::from_secs(30),
        || {
            let lines = lt_lines(&lt);
            let port = lines.iter().find_map(|v| v["port"].as_u64())?;
            lines
                .iter()
                .any(|v| v["seeding"] == true)
                .then_some(port as u16)
        },
        || format!("{}\n{}", tail(&lt.stdout(), 10), tail(&lt.stderr(), 10)),
    );
    let out = d.join("out");
    let peer = format!("127.0.0.1:{port}");
    // Held to 1 MB/s, so the connection lasts the seconds libtorrent's
    // peer list (read every 200 ms) needs to show it.
    let (mut leech, _) = leecher(
        d,
        &t,
        &out,
        &[
            "--peer",
            &peer,
            "--encryption",
            enc,
            "--download-limit",
            "1M",
        ],
    );
    finish(&mut leech, "shoal leecher");
    assert_tree_matches(&src.join("pack"), &out.join("pack"), false);
    assert_shoal_used_utp_only(&leech, "shoal leecher");
    assert_running(&mut lt, "libtorrent seeder");
    let (utp, tcp, rc4, moved) = lt_peers(&lt);
    assert!(utp && !tcp, "libtorrent's peers: uTP {utp}, TCP {tcp}");
    assert!(
        rc4 || enc != "require",
        "libtorrent's peer not RC4-encrypted"
    );
    assert!(moved > 0, "libtorrent's peer list never showed bytes moved");
}

#[test]
fn libtorrent_leeches_from_shoal_over_utp() {
    libtorrent_leeches_from_shoal("libtorrent_leeches_from_shoal_over_utp", "prefer");
}

#[test]
fn shoal_leeches_from_libtorrent_over_utp() {
    shoal_leeches_from_libtorrent("shoal_leeches_from_libtorrent_over_utp", "prefer");
}

#[test]
fn libtorrent_leeches_from_shoal_over_utp_with_rc4_required() {
    libtorrent_leeches_from_shoal(
        "libtorrent_leeches_from_shoal_over_utp_with_rc4_required",
        "require",
    );
}

#[test]
fn shoal_leeches_from_libtorrent_over_utp_with_rc4_required() {
    shoal_leeches_from_libtorrent(
        "shoal_leeches_from_libtorrent_over_utp_with_rc4_required",
        "require",
    );
}

// ------------------------------------------------------------------ shoal

/// Two shoals with `--transport utp`: no TCP listener, no TCP dial. The
/// seeder is dialled; the download completes, both sides saw uTP only.
#[test]
fn shoal_to_shoal_over_utp_only() {
    let cell = Cell::new("shoal_to_shoal_over_utp_only");
    let d = cell.path();
    let (src, t) = make_data(d);
    let (mut seed, port) = seeder(d, &t, &src, &["--transport", "utp"]);
    let out = d.join("out");
    let peer = format!("127.0.0.1:{port}");
    let (mut leech, _) = leecher(d, &t, &out, &["--peer", &peer, "--transport", "utp"]);
    finish(&mut leech, "shoal leecher");
    assert_tree_matches(&src.join("pack"), &out.join("pack"), false);
    assert_shoal_used_utp_only(&leech, "shoal leecher");
    // The seeder takes no TCP at all.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert_running(&mut seed, "shoal seeder");
    assert!(seed.stop().success(), "{}", tail(&seed.stderr(), 30));
    assert_shoal_used_utp_only(&seed, "shoal seeder");
}
