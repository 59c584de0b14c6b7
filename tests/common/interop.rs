//! Real programs for the interop tests: opentracker behind a relay that
//! records every announce it passes on, aria2c, and transmission-daemon.
//! Everything binds 127.0.0.1, and every process is killed when its guard
//! drops, also when a test panics. See docs/interop.md.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{free_port, list_files, shoal_bin, tail, Proc};

/// (program, Debian package that provides it)
pub type Program = (&'static str, &'static str);
pub const ARIA2: Program = ("aria2c", "aria2");
pub const OPENTRACKER: Program = ("opentracker", "opentracker");
pub const TR_DAEMON: Program = ("transmission-daemon", "transmission-daemon");
pub const TR_REMOTE: Program = ("transmission-remote", "transmission-cli");
pub const TR_CREATE: Program = ("transmission-create", "transmission-cli");
pub const TR_SHOW: Program = ("transmission-show", "transmission-cli");

fn on_path(prog: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(prog))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether the test should run. With `SHOAL_SKIP_INTEROP=1` it prints a
/// note and says no; otherwise a missing program fails the test with the
/// command that installs it.
pub fn should_run(test: &str, needed: &[Program]) -> bool {
    let missing: Vec<Program> = needed.iter().copied().filter(|p| !on_path(p.0)).collect();
    if std::env::var("SHOAL_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        let why = if missing.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = missing.iter().map(|p| p.0).collect();
            format!(" (missing: {})", names.join(", "))
        };
        eprintln!("note: {test} skipped: SHOAL_SKIP_INTEROP=1{why}");
        return false;
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|p| p.0).collect();
        let mut pkgs: Vec<&str> = missing.iter().map(|p| p.1).collect();
        pkgs.sort();
        pkgs.dedup();
        panic!(
            "{test} needs {} on PATH. Install with `sudo apt-get install -y {}` \
             (or run `bash .ci/deps` as root), or set SHOAL_SKIP_INTEROP=1 to skip the \
             interop tests.",
            names.join(", "),
            pkgs.join(" ")
        );
    }
    true
}

/// One cell's scratch folder. It is world-readable (opentracker drops
/// privileges to `nobody` and must read its whitelist there). When the test
/// panics (or with `SHOAL_KEEP_CELLS=1`) the folder is kept, with every
/// program's log, and its path printed.
pub struct Cell {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    name: &'static str,
    start: Instant,
}

impl Cell {
    pub fn new(name: &'static str) -> Cell {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-interop-{name}-"))
            .tempdir()
            .unwrap();
        let path = dir.path().to_path_buf();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cell {
            dir: Some(dir),
            path,
            name,
            start: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        let keep = std::env::var("SHOAL_KEEP_CELLS").is_ok_and(|v| v == "1");
        if std::thread::panicking() || keep {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                let how = if std::thread::panicking() {
                    "FAILED after"
                } else {
                    "passed in"
                };
                eprintln!(
                    "{}: {how} {secs:.1}s; logs kept in {}",
                    self.name,
                    kept.display()
                );
            }
        } else {
            eprintln!("{}: passed in {secs:.1}s", self.name);
        }
    }
}

/// Polls `f` every 100 ms until it gives a value; panics with `what` and
/// `context()` past `limit`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts any program with stdout/stderr in `dir/name.out|.err`, killed on drop.
pub fn spawn(prog: &str, args: &[String], dir: &Path, name: &str) -> Proc {
    let out = dir.join(format!("{name}.out"));
    let err = dir.join(format!("{name}.err"));
    let child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
    Proc { child, out, err }
}

/// Waits for a program to exit; kills it and panics with its output past `limit`.
pub fn wait_exit(p: &mut Proc, what: &str, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = p.child.kill();
            let _ = p.child.wait();
            panic!(
                "{what} did not finish within {limit:?}\nstdout (tail):\n{}\nstderr (tail):\n{}",
                tail(&p.stdout(), 30),
                tail(&p.stderr(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics if the process already exited (a seeder must still be serving).
pub fn assert_running(p: &mut Proc, what: &str) {
    if let Some(s) = p.child.try_wait().unwrap() {
        panic!(
            "{what} exited early ({s})\nstdout (tail):\n{}\nstderr (tail):\n{}",
            tail(&p.stdout(), 30),
            tail(&p.stderr(), 40)
        );
    }
}

/// `shoal info --json`.
pub fn shoal_info(torrent: &Path) -> serde_json::Value {
    let o = Command::new(shoal_bin())
        .args(["info", torrent.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "shoal info {}: {}",
        torrent.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn info_hash(torrent: &Path) -> String {
    shoal_info(torrent)["info_hash"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs a program to completion and returns its stdout; panics on failure.
pub fn run(prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(
        o.status.success(),
        "{prog} {args:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Compares every file under `want` with the same path under `got`, byte
/// for byte, and that `got` holds nothing else. With `empty_may_be_missing`,
/// a zero-length file that was never created passes (Transmission 3.00
/// does not create zero-length files).
pub fn assert_tree_matches(want: &Path, got: &Path, empty_may_be_missing: bool) {
    let (lw, lg) = (list_files(want), list_files(got));
    for f in &lg {
        assert!(
            lw.contains(f),
            "unexpected file {} in {}",
            f.display(),
            got.display()
        );
    }
    for f in &lw {
        let w = std::fs::read(want.join(f)).unwrap();
        match std::fs::read(got.join(f)) {
            Ok(g) => assert!(
                g == w,
                "{} differs ({} bytes, want {})",
                f.display(),
                g.len(),
                w.len()
            ),
            Err(_) if w.is_empty() && empty_may_be_missing => {}
            Err(e) => panic!("{} missing from {}: {e}", f.display(), got.display()),
        }
    }
}

// ---------------------------------------------------------------- tracker

/// One announce that opentracker answered successfully, as the relay saw it.
#[derive(Clone, Debug)]
pub struct Announce {
    /// The `port` the client announced (its listening port).
    pub port: u16,
    /// `started`, `completed`, `stopped`, or `none` for a regular announce.
    pub event: String,
    pub left: u64,
    pub udp: bool,
}

/// opentracker's per-torrent counters, from its `/scrape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scrape {
    /// Seeds it lists now.
    pub complete: u64,
    /// Leechers it lists now.
    pub incomplete: u64,
    /// How many `completed` events it has counted.
    pub downloaded: u64,
}

/// opentracker (HTTP and UDP announce on one port) with a relay in front.
///
/// Torrents announce to the relay's port; the relay passes every request on
/// to opentracker unchanged (same 127.0.0.1 source address, so opentracker
/// sees the same peers) and records each announce opentracker accepted,
/// keyed by the client's announced port: opentracker itself only offers
/// per-torrent counters (scrape, `/stats`), not who sent which event. Like
/// opentracker, the HTTP relay closes the connection after each response.
pub struct Tracker {
    /// opentracker's own port (scrape, `/stats?mode=everything`).
    pub port: u16,
    /// The relay's port (TCP and UDP): what torrents announce to.
    pub relay_port: u16,
    dir: PathBuf,
    announces: Arc<Mutex<Vec<Announce>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sockets: Option<(TcpListener, UdpSocket)>,
    proc: Option<Proc>,
}

impl Tracker {
    /// Reserves the relay's TCP and UDP port (so torrents can name it);
    /// `start` launches opentracker once the info-hashes are known.
    pub fn new(cell: &Path) -> Tracker {
        let (tcp, udp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                break (tcp, udp);
            }
        };
        let relay_port = tcp.local_addr().unwrap().port();
        let dir = cell.join("tracker");
        std::fs::create_dir_all(&dir).unwrap();
        Tracker {
            port: 0,
            relay_port,
            dir,
            announces: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
            sockets: Some((tcp, udp)),
            proc: None,
        }
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.relay_port)
    }

    pub fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.relay_port)
    }

    /// Starts opentracker with `info_hashes` (hex) whitelisted, and the relay.
    pub fn start(&mut self, info_hashes: &[String]) {
        use std::os::unix::fs::PermissionsExt;
        let (tcp, udp) = self.sockets.take().expect("started twice");
        self.port = loop {
            let p = free_port();
            if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
                break p;
            }
        };
        let whitelist = self.dir.join("whitelist.txt");
        std::fs::write(&whitelist, info_hashes.join("\n") + "\n").unwrap();
        let config = self.dir.join("opentracker.conf");
        std::fs::write(
            &config,
            format!(
                "listen.tcp_udp 127.0.0.1:{}\naccess.whitelist {}\naccess.stats 127.0.0.1\n",
                self.port,
                whitelist.display()
            ),
        )
        .unwrap();
        for p in [&self.dir, &whitelist, &config] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let args = vec!["-f".to_string(), config.display().to_string()];
        self.proc = Some(spawn("opentracker", &args, &self.dir, "opentracker"));

        // Ready once a harmless `stopped` announce for a whitelisted hash is
        // accepted: that proves it listens and has read the whitelist.
        if let Some(h) = info_hashes.first() {
            let probe = format!(
                "/announce?info_hash={}&peer_id=-PROBE-0123456789abc&port=1&uploaded=0\
                 &downloaded=0&left=0&event=stopped&compact=1",
                pct(h)
            );
            wait_for(
                "opentracker to accept announces",
                Duration::from_secs(10),
                || {
                    let (status, body) = http_get(self.port, &probe).ok()?;
                    (status == 200 && !contains(&body, b"failure reason")).then_some(())
                },
                || self.diagnose(),
            );
        }

        let (ann, stop, port) = (self.announces.clone(), self.stop.clone(), self.port);
        self.threads
            .push(std::thread::spawn(move || http_relay(tcp, port, ann, stop)));
        let (ann, stop) = (self.announces.clone(), self.stop.clone());
        self.threads
            .push(std::thread::spawn(move || udp_relay(udp, port, ann, stop)));
    }

    fn diagnose(&self) -> String {
        let (out, err) = self
            .proc
            .as_ref()
            .map(|p| (p.stdout(), p.stderr()))
            .unwrap_or_default();
        format!(
            "opentracker output:\n{out}{err}\n(it runs as `nobody`: {} and every folder \
             above it must be world-readable)",
            self.dir.display()
        )
    }

    /// Every announce opentracker accepted, in order.
    pub fn announces(&self) -> Vec<Announce> {
        self.announces.lock().unwrap().clone()
    }

    /// The events announced by the client listening on `port`, in order.
    pub fn events_of(&self, port: u16) -> Vec<String> {
        self.announces()
            .into_iter()
            .filter(|a| a.port == port)
            .map(|a| a.event)
            .collect()
    }

    pub fn scrape(&self, info_hash: &str) -> Scrape {
        let (status, body) = http_get(self.port, &format!("/scrape?info_hash={}", pct(info_hash)))
            .unwrap_or_else(|e| panic!("scrape: {e}\n{}", self.diagnose()));
        assert_eq!(status, 200, "scrape: {}", String::from_utf8_lossy(&body));
        let num = |key: &[u8]| -> u64 {
            find(&body, key)
                .map(|i| {
                    let rest = &body[i + key.len()..];
                    let end = rest.iter().position(|&b| b == b'e').unwrap();
                    std::str::from_utf8(&rest[..end]).unwrap().parse().unwrap()
                })
                .unwrap_or(0)
        };
        Scrape {
            complete: num(b"8:completei"),
            incomplete: num(b"10:incompletei"),
            downloaded: num(b"10:downloadedi"),
        }
    }

    /// Polls the scrape until `pred` holds.
    pub fn wait_scrape(
        &self,
        info_hash: &str,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let last = Mutex::new(None);
        wait_for(
            what,
            limit,
            || {
                let s = self.scrape(info_hash);
                *last.lock().unwrap() = Some(s);
                pred(&s).then_some(s)
            },
            || {
                format!(
                    "last scrape: {:?}\nannounces: {:?}",
                    last.lock().unwrap(),
                    self.announces()
                )
            },
        )
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn pct(hex_hash: &str) -> String {
    let raw = hex::decode(hex_hash).unwrap();
    percent_encoding::percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// A one-shot HTTP/1.0-style GET on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    split_response(&resp)
}

pub fn split_response(resp: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response");
    let head_end = find(resp, b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&resp[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, resp[head_end + 4..].to_vec()))
}

fn http_relay(
    listener: TcpListener,
    upstream: u16,
    announces: Arc<Mutex<Vec<Announce>>>,
    stop: Arc<AtomicBool>,
) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let ann = announces.clone();
                std::thread::spawn(move || {
                    let _ = relay_one(s, upstream, &ann);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn relay_one(
    mut client: TcpStream,
    upstream: u16,
    announces: &Mutex<Vec<Announce>>,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(10)))?;
    up.write_all(&head)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    // Recorded before the client gets the answer, so a test that saw the
    // client finish also sees its last announce.
    if let Some(a) = parse_announce(&head, &resp) {
        announces.lock().unwrap().push(a);
    }
    client.write_all(&resp)?;
    // Then close, as opentracker does after every response.
    Ok(())
}

/// The announce in an HTTP request, if opentracker accepted it.
fn parse_announce(head: &[u8], resp: &[u8]) -> Option<Announce> {
    let line = String::from_utf8_lossy(&head[..find(head, b"\r\n")?]).into_owned();
    let target = line.split_whitespace().nth(1)?;
    let ("/announce", query) = target.split_once('?')? else {
        return None;
    };
    let (status, body) = split_response(resp).ok()?;
    if status != 200 || contains(&body, b"failure reason") {
        return None;
    }
    let mut a = Announce {
        port: 0,
        event: "none".into(),
        left: 0,
        udp: false,
    };
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "port" => a.port = v.parse().unwrap_or(0),
            "event" if !v.is_empty() => a.event = v.to_string(),
            "left" => a.left = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(a)
}

/// BEP 15 relay: one upstream socket per client address, so opentracker's
/// connection ids and transaction ids pass through untouched.
fn udp_relay(
    sock: UdpSocket,
    upstream: u16,
    announces: Arc<Mutex<Vec<Announce>>>,
    stop: Arc<AtomicBool>,
) {
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut ups: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    // (client, transaction id) → the announce, recorded once answered.
    let mut pending: HashMap<(SocketAddr, [u8; 4]), Announce> = HashMap::new();
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let up = ups.entry(from).or_insert_with(|| {
                let u = UdpSocket::bind("127.0.0.1:0").unwrap();
                u.connect(("127.0.0.1", upstream)).unwrap();
                u.set_nonblocking(true).unwrap();
                u
            });
            let p = &buf[..n];
            if n >= 98 && p[8..12] == [0, 0, 0, 1] {
                let event = match u32::from_be_bytes(p[80..84].try_into().unwrap()) {
                    1 => "completed",
                    2 => "started",
                    3 => "stopped",
                    _ => "none",
                };
                pending.insert(
                    (from, p[12..16].try_into().unwrap()),
                    Announce {
                        port: u16::from_be_bytes([p[96], p[97]]),
                        event: event.into(),
                        left: u64::from_be_bytes(p[64..72].try_into().unwrap()),
                        udp: true,
                    },
                );
            }
            let _ = up.send(p);
        }
        for (client, up) in &ups {
            while let Ok(n) = up.recv(&mut buf) {
                let p = &buf[..n];
                if n >= 8 && p[0..4] == [0, 0, 0, 1] {
                    let key = (*client, p[4..8].try_into().unwrap());
                    if let Some(a) = pending.remove(&key) {
                        announces.lock().unwrap().push(a);
                    }
                }
                let _ = sock.send_to(p, client);
            }
        }
    }
}

// ---------------------------------------------------------------- aria2

/// Flags that keep aria2 on loopback, on plain BitTorrent, without DHT/LPD/PEX.
fn aria2_base(listen_port: u16, data_dir: &Path, log: &Path) -> Vec<String> {
    [
        "--no-conf=true",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--interface=127.0.0.1",
        "--bt-require-crypto=false",
        "--bt-min-crypto-level=plain",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--summary-interval=0",
        "--console-log-level=notice",
        "--log-level=info",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--listen-port={listen_port}"),
        format!("--log={}", log.display()),
        "-d".into(),
        data_dir.display().to_string(),
    ])
    .collect()
}

/// aria2 seeding `data_dir/<name>`: it checks the data first (`-V`),
/// seeds forever, and re-announces every second.
pub fn aria2_seeder(
    cell: &Path,
    name: &str,
    torrent: &Path,
    data_dir: &Path,
    extra: &[String],
) -> (Proc, u16) {
    let port = free_port();
    let mut args = aria2_base(port, data_dir, &cell.join(format!("{name}.log")));
    args.extend(
        ["--seed-ratio=0.0", "-V", "--bt-tracker-interval=1"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(extra.iter().cloned());
    args.push(torrent.display().to_string());
    (spawn("aria2c", &args, cell, name), port)
}

/// aria2 downloading into `data_dir`, exiting when done.
pub fn aria2_leecher(cell: &Path, name: &str, torrent: &Path, data_dir: &Path) -> (Proc, u16) {
    aria2_leecher_with(cell, name, torrent, data_dir, &[])
}

/// Like `aria2_leecher`, with `extra` flags after the defaults (aria2
/// takes the last of a repeated option).
pub fn aria2_leecher_with(
    cell: &Path,
    name: &str,
    torrent: &Path,
    data_dir: &Path,
    extra: &[String],
) -> (Proc, u16) {
    let port = free_port();
    let mut args = aria2_base(port, data_dir, &cell.join(format!("{name}.log")));
    args.extend(
        ["--seed-time=0", "--bt-tracker-interval=1"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(extra.iter().cloned());
    args.push(torrent.display().to_string());
    (spawn("aria2c", &args, cell, name), port)
}

/// One aria2 JSON-RPC call (needs `--enable-rpc --rpc-listen-port=PORT`).
pub fn aria2_rpc(port: u16, method: &str, params: serde_json::Value) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": "t", "method": method, "params": params})
        .to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("aria2 RPC connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let (status, body) = split_response(&resp).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

// ---------------------------------------------------------------- Transmission

/// A transmission-daemon with its own config folder, RPC port and peer port.
pub struct Transmission {
    pub proc: Proc,
    pub rpc_port: u16,
    pub peer_port: u16,
    name: String,
}

impl Transmission {
    /// Starts the daemon and waits until its RPC answers.
    pub fn start(cell: &Path, name: &str) -> Transmission {
        Transmission::start_with(cell, name, serde_json::json!({}))
    }

    /// Like `start`, with `settings` (an object) put over the defaults,
    /// e.g. `{"encryption": 2}`.
    pub fn start_with(cell: &Path, name: &str, settings: serde_json::Value) -> Transmission {
        let cfg = cell.join(format!("{name}-config"));
        std::fs::create_dir_all(&cfg).unwrap();
        let (rpc_port, peer_port) = (free_port(), free_port());
        let settings_all = serde_json::json!({
            "bind-address-ipv4": "127.0.0.1",
            "bind-address-ipv6": "::1",
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": rpc_port,
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": true,
            "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": false,
            "peer-port": peer_port,
            "peer-port-random-on-start": false,
            "port-forwarding-enabled": false,
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "utp-enabled": false,
            "encryption": 0,
            "rename-partial-files": false,
            "ratio-limit-enabled": false,
            "idle-seeding-limit-enabled": false,
            "incomplete-dir-enabled": false,
            "watch-dir-enabled": false,
            "blocklist-enabled": false,
            "download-dir": cell.display().to_string(),
            "message-level": 2,
        });
        let mut settings_all = settings_all;
        if let (Some(all), Some(over)) = (settings_all.as_object_mut(), settings.as_object()) {
            all.extend(over.clone());
        }
        std::fs::write(
            cfg.join("settings.json"),
            serde_json::to_string_pretty(&settings_all).unwrap(),
        )
        .unwrap();
        let args: Vec<String> = vec![
            "-f".into(),
            "-g".into(),
            cfg.display().to_string(),
            "-x".into(),
            cfg.join("pid").display().to_string(),
        ];
        let mut t = Transmission {
            proc: spawn("transmission-daemon", &args, cell, name),
            rpc_port,
            peer_port,
            name: name.to_string(),
        };
        let start = Instant::now();
        loop {
            assert_running(&mut t.proc, name);
            if t.try_remote(&["-l"]).is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name}: RPC on port {rpc_port} not answering after 20 s\n{}",
                tail(&t.proc.stderr(), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        t
    }

    fn try_remote(&self, args: &[&str]) -> Option<String> {
        let o = Command::new("transmission-remote")
            .arg(format!("127.0.0.1:{}", self.rpc_port))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    pub fn remote(&self, args: &[&str]) -> String {
        self.try_remote(args).unwrap_or_else(|| {
            panic!(
                "{}: transmission-remote {args:?} failed\n{}",
                self.name,
                tail(&self.proc.stderr(), 30)
            )
        })
    }

    /// Adds a torrent whose data lives (or will live) in `dir/<name>`.
    pub fn add(&self, torrent: &Path, dir: &Path) {
        let out = self.remote(&["-a", torrent.to_str().unwrap(), "-w", dir.to_str().unwrap()]);
        assert!(out.contains("success"), "{}: add: {out}", self.name);
    }

    /// `-t all -i`: the human-readable details of its torrent.
    pub fn info(&self) -> String {
        self.remote(&["-t", "all", "-i"])
    }

    /// The value of `  Key: value` in `info`.
    pub fn field(info: &str, key: &str) -> Option<String> {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .map(str::to_string)
    }

    /// Waits until the torrent is complete and checked: `Percent Done: 100%`,
    /// and the state is no longer verifying or downloading.
    pub fn wait_complete(&self, what: &str, limit: Duration) -> String {
        let last = Mutex::new(String::new());
        wait_for(
            what,
            limit,
            || {
                let info = self.info();
                *last.lock().unwrap() = info.clone();
                let done = Self::field(&info, "Percent Done").as_deref() == Some("100%");
                let state = Self::field(&info, "State").unwrap_or_default();
                (done && (state == "Seeding" || state == "Idle")).then_some(info)
            },
            || {
                format!(
                    "{} (peer port {}) info:\n{}\nlog (tail):\n{}",
                    self.name,
                    self.peer_port,
                    last.lock().unwrap(),
                    tail(&self.proc.stderr(), 30)
                )
            },
        )
    }
}
