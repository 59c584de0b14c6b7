//! Helpers for tests that run the real `shoal` binary on loopback: data
//! trees, child processes that are always killed, a minimal HTTP tracker.
#![allow(dead_code)]

pub mod fake;
pub mod nat;
pub mod schema;
pub mod service;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// The Python interpreter the tests run (libtorrent's binding, `python3 -m
/// http.server`): named once, in `.ci/python`, which `.ci/deps` checks.
pub fn python() -> &'static str {
    include_str!("../../.ci/python")
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect(".ci/python names no interpreter")
}

/// Deterministic, incompressible-looking bytes.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `files` (relative path, size) under `root`.
pub fn make_tree(root: &Path, files: &[(&str, usize)]) {
    for (i, (p, n)) in files.iter().enumerate() {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data(*n, i as u64 + 1)).unwrap();
    }
}

/// Every file under `root`, as sorted paths relative to it; shoal's own
/// records (`root/.shoal`, see src/store/ownership.rs) are not data and are left out.
pub fn list_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if dir == root && e.file_name() == shoal::store::ownership::DIR_NAME {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Byte-for-byte comparison of two trees (names and contents).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (la, lb) = (list_files(a), list_files(b));
    assert_eq!(
        la,
        lb,
        "file lists differ between {} and {}",
        a.display(),
        b.display()
    );
    for f in la {
        let (x, y) = (
            std::fs::read(a.join(&f)).unwrap(),
            std::fs::read(b.join(&f)).unwrap(),
        );
        assert!(x == y, "{} differs", f.display());
    }
}

/// A port free on TCP and on UDP (shoal listens on both: uTP has the UDP
/// side), on every address.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let udp_free = std::net::UdpSocket::bind(("::", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if udp_free && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// The Python with libtorrent's binding, or None when the interop tests
/// are to be skipped (SHOAL_SKIP_INTEROP=1); fails when it is missing.
pub fn libtorrent_python() -> Option<&'static str> {
    let py = "/usr/bin/python3";
    if std::env::var("SHOAL_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("note: libtorrent cell skipped: SHOAL_SKIP_INTEROP=1");
        return None;
    }
    let probe = Command::new(py)
        .args([
            "-c",
            "import sys; sys.path.append('/usr/lib/python3/dist-packages'); import libtorrent",
        ])
        .output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "this test needs libtorrent's Python binding: `sudo apt-get install -y python3-libtorrent` \
         (or run `bash .ci/deps` as root), or set SHOAL_SKIP_INTEROP=1 to skip the interop tests"
    );
    Some(py)
}

/// Connections a shoal's debug log shows, by transport: (uTP, TCP). Each
/// connection that got past its handshakes logs "connected over utp" or
/// "connected over tcp".
pub fn transports_seen(stderr: &str) -> (usize, usize) {
    (
        stderr.matches("connected over utp").count(),
        stderr.matches("connected over tcp").count(),
    )
}

/// A child process that is killed when dropped, so a failing test never
/// leaves one behind. Its stdout goes to a file we can read at any time.
pub struct Proc {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[&str], log_dir: &Path, name: &str) -> Proc {
        Proc::spawn_with(args, log_dir, name, false)
    }

    /// Like `spawn`, with the DHT on (`.cargo/config.toml` turns it off for
    /// tests); the caller must give `--dht-bootstrap` on loopback.
    pub fn spawn_dht(args: &[&str], log_dir: &Path, name: &str) -> Proc {
        Proc::spawn_with(args, log_dir, name, true)
    }

    /// Like `spawn` with `SHOAL_LOG` set to `log` (the default shows
    /// shoal's own debug lines only, not those of its crates); "" shows
    /// what a user sees.
    pub fn spawn_log(args: &[&str], log_dir: &Path, name: &str, log: &str) -> Proc {
        Proc::spawn_full(args, log_dir, name, false, log)
    }

    /// `spawn_dht` with `SHOAL_LOG` set to `log`, as `spawn_log`.
    pub fn spawn_dht_log(args: &[&str], log_dir: &Path, name: &str, log: &str) -> Proc {
        Proc::spawn_full(args, log_dir, name, true, log)
    }

    fn spawn_with(args: &[&str], log_dir: &Path, name: &str, dht: bool) -> Proc {
        Proc::spawn_full(args, log_dir, name, dht, "shoal=debug")
    }

    fn spawn_full(args: &[&str], log_dir: &Path, name: &str, dht: bool, log: &str) -> Proc {
        let out = log_dir.join(format!("{name}.out"));
        let err = log_dir.join(format!("{name}.err"));
        let mut cmd = Command::new(shoal_bin());
        if dht {
            assert!(
                args.contains(&"--dht-bootstrap"),
                "DHT tests stay on loopback"
            );
            cmd.env_remove("SHOAL_NO_DHT");
        } else {
            cmd.env("SHOAL_NO_DHT", "1");
        }
        cmd.env("SHOAL_NO_LSD", "1");
        cmd.env("SHOAL_NO_PORT_MAPPING", "1");
        if log.is_empty() {
            cmd.env_remove("SHOAL_LOG");
        } else {
            cmd.env("SHOAL_LOG", log);
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn shoal");
        Proc { child, out, err }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for exit; panics (after killing it) past `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "shoal did not finish within {limit:?}\nstdout:\n{}\nstderr (tail):\n{}",
                    self.stdout(),
                    tail(&self.stderr(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, as Ctrl-C would, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(15))
    }

    /// The `done` event of a `--json` run.
    pub fn done_event(&self) -> serde_json::Value {
        last_event(&self.stdout(), "done").unwrap_or_else(|| {
            panic!(
                "no done event\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                tail(&self.stderr(), 40)
            )
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn last_event(stdout: &str, kind: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == kind)
}

/// Runs `shoal create` and returns the torrent's path.
pub fn create_torrent(src: &Path, out: &Path, trackers: &[String], piece_length: u32) -> PathBuf {
    create_torrent_with(src, out, piece_length, trackers, &[])
}

/// `shoal create` with trackers (`-t`) and web seeds (`--web-seed`).
pub fn create_torrent_with(
    src: &Path,
    out: &Path,
    piece_length: u32,
    trackers: &[String],
    web_seeds: &[String],
) -> PathBuf {
    let mut args: Vec<String> = vec![
        "create".into(),
        src.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--piece-length".into(),
        piece_length.to_string(),
    ];
    for t in trackers {
        args.push("-t".into());
        args.push(t.clone());
    }
    for w in web_seeds {
        args.push("--web-seed".into());
        args.push(w.clone());
    }
    let o = Command::new(shoal_bin()).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.to_path_buf()
}

/// A minimal HTTP tracker: remembers who announced (compact peer list,
/// 2-second interval) and every event it was sent, per listening port.
pub struct Tracker {
    pub port: u16,
    pub events: Arc<Mutex<Vec<(u16, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tracker {
    pub fn start() -> Tracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ev, st) = (events.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut swarm: HashMap<Vec<u8>, HashMap<u16, bool>> = HashMap::new();
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, addr)) => {
                        let _ = handle(s, addr, &mut swarm, &ev);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Tracker {
            port,
            events,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    pub fn events_of(&self, port: u16) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    mut s: TcpStream,
    _addr: SocketAddr,
    swarm: &mut HashMap<Vec<u8>, HashMap<u16, bool>>,
    events: &Mutex<Vec<(u16, String)>>,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    let mut r = BufReader::new(s.try_clone()?);
    r.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let query = path.split_once('?').map(|x| x.1).unwrap_or("");
    let mut info_hash = Vec::new();
    let mut port = 0u16;
    let mut event = String::new();
    let mut left = 1u64;
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let raw: Vec<u8> = percent_encoding::percent_decode_str(v).collect();
        match k {
            "info_hash" => info_hash = raw,
            "port" => port = v.parse().unwrap_or(0),
            "event" => event = v.to_string(),
            "left" => left = v.parse().unwrap_or(1),
            _ => {}
        }
    }
    events.lock().unwrap().push((
        port,
        if event.is_empty() {
            "none".into()
        } else {
            event.clone()
        },
    ));
    let peers = swarm.entry(info_hash).or_default();
    if event == "stopped" {
        peers.remove(&port);
    } else {
        peers.insert(port, left == 0);
    }
    let mut compact = Vec::new();
    for p in peers.keys() {
        compact.extend_from_slice(&[127, 0, 0, 1]);
        compact.extend_from_slice(&p.to_be_bytes());
    }
    let mut body = format!("d8:intervali2e5:peers{}:", compact.len()).into_bytes();
    body.extend_from_slice(&compact);
    body.push(b'e');
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(&body);
    s.write_all(&resp)?;
    Ok(())
}

/// The info-hash of a torrent file, via `shoal info --json`.
pub fn info_hash(torrent: &Path) -> [u8; 20] {
    let o = Command::new(shoal_bin())
        .args(["info", "--json"])
        .arg(torrent)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let h = hex::decode(v["info_hash"].as_str().unwrap()).unwrap();
    h.try_into().unwrap()
}

/// Resident memory of a process, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until something listens on `port` (a freshly started seeder).
pub fn wait_listening(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `shoal seed` for `torrent` with its data under `from`, on a free
/// port, and waits until it listens. `extra` adds flags (`--quiet`, say).
pub fn seeder(dir: &Path, torrent: &Path, from: &Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec![
        "seed",
        torrent.to_str().unwrap(),
        "--from",
        from.to_str().unwrap(),
        "--port",
        &port_s,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(&args, dir, "seeder");
    if extra.windows(2).any(|w| w == ["--encryption", "require"]) {
        wait_listening(port);
    } else {
        wait_serving(port, info_hash(torrent));
    }
    (p, port)
}

/// Waits until the process on `port` answers a handshake for the torrent
/// `info_hash`: a session listens from its start, but takes a torrent's
/// peers only once that torrent's data is checked, and a test peer that
/// came in between would be dropped.
pub fn wait_serving(port: u16, info_hash: [u8; 20]) {
    use std::io::Read;
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut hs = vec![19u8];
            hs.extend_from_slice(b"BitTorrent protocol");
            hs.extend_from_slice(&[0; 8]);
            hs.extend_from_slice(&info_hash);
            hs.extend_from_slice(b"-TT0001-waitserving0");
            let mut theirs = [0u8; 68];
            if s.write_all(&hs).is_ok()
                && s.read_exact(&mut theirs).is_ok()
                && theirs[28..48] == info_hash
            {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing serves the torrent on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny HTTP server on loopback answering `GET path` (the query string
/// ignored) with a fixed body and anything else with 404, until dropped:
/// a .torrent to fetch, a tracker with a canned answer.
pub struct HttpServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn serve(path: &'static str, body: Vec<u8>) -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = [0u8; 4096];
                let n = std::io::Read::read(&mut s, &mut req).unwrap_or(0);
                let head = String::from_utf8_lossy(&req[..n]);
                let asked = head.split_whitespace().nth(1).unwrap_or("");
                let found = asked.split('?').next() == Some(path);
                let (status, b): (&str, &[u8]) = if found {
                    ("200 OK", &body)
                } else {
                    ("404 Not Found", b"")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    b.len()
                );
                let _ = s.write_all(b);
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
