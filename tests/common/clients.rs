//! qBittorrent-nox (driven through its Web API v2), rtorrent (its own rc,
//! a watch folder, daemon mode) and ctorrent, for tests/clients.rs. Each
//! binds 127.0.0.1 only and is killed when its guard drops.
//! docs/interop.md and ../shared/notes/real-peers.md have their quirks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{free_port, list_files, tail, Proc};
use crate::interop::{assert_running, spawn, split_response, wait_for, Program};

pub const QBITTORRENT: Program = ("qbittorrent-nox", "qbittorrent-nox");
pub const RTORRENT: Program = ("rtorrent", "rtorrent");
pub const CTORRENT: Program = ("ctorrent", "ctorrent");

/// One HTTP/1.1 request on 127.0.0.1. The answer is read as far as its
/// `Content-Length` says: qBittorrent keeps the connection open for
/// seconds whatever `Connection: close` asks.
fn http(
    port: u16,
    method: &str,
    path: &str,
    head: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{head}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| resp.len() >= end + 4 + n) {
                break;
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&buf[..n]);
    }
    split_response(&resp)
}

/// A qBittorrent-nox with its own profile folder, Web API port and peer
/// port: DHT, PeX, LSD, UPnP off, TCP only, several connections from one
/// IP allowed (on loopback everyone is 127.0.0.1), no queueing, no ratio
/// limit, the Web API open to 127.0.0.1 without a login.
pub struct QBittorrent {
    pub proc: Proc,
    pub web_port: u16,
    pub peer_port: u16,
    name: String,
}

/// qBittorrent's `Session\Encryption`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QbEncryption {
    Require = 1,
    Off = 2,
}

impl QBittorrent {
    /// Starts it, waits until its Web API answers, and checks that it took
    /// the settings.
    pub fn start(cell: &Path, name: &str, encryption: QbEncryption) -> QBittorrent {
        let profile = cell.join(format!("{name}-profile"));
        let conf = profile.join("qBittorrent/config");
        std::fs::create_dir_all(&conf).unwrap();
        let (web_port, peer_port) = (free_port(), free_port());
        std::fs::write(
            conf.join("qBittorrent.conf"),
            format!(
                "[LegalNotice]\nAccepted=true\n\n\
                 [BitTorrent]\n\
                 Session\\DHTEnabled=false\nSession\\PeXEnabled=false\nSession\\LSDEnabled=false\n\
                 Session\\Port={peer_port}\nSession\\Interface=lo\nSession\\InterfaceName=lo\n\
                 Session\\InterfaceAddress=127.0.0.1\nSession\\MultiConnectionsPerIp=true\n\
                 Session\\BTProtocol=TCP\nSession\\Encryption={}\n\
                 Session\\QueueingSystemEnabled=false\nSession\\GlobalMaxRatio=-1\n\n\
                 [Preferences]\n\
                 WebUI\\Address=127.0.0.1\nWebUI\\Port={web_port}\nWebUI\\LocalHostAuth=false\n\
                 WebUI\\CSRFProtection=false\nWebUI\\HostHeaderValidation=false\n\
                 Connection\\UPnP=false\nConnection\\ResolvePeerCountries=false\n\
                 General\\Locale=en\n",
                encryption as u8
            ),
        )
        .unwrap();
        let args = vec![
            format!("--profile={}", profile.display()),
            format!("--webui-port={web_port}"),
        ];
        let mut qb = QBittorrent {
            proc: spawn("qbittorrent-nox", &args, cell, name),
            web_port,
            peer_port,
            name: name.to_string(),
        };
        let err = qb.proc.err.clone();
        wait_for(
            "qBittorrent's Web API",
            Duration::from_secs(30),
            || {
                assert_running(&mut qb.proc, name);
                http(web_port, "GET", "/api/v2/app/version", "", b"")
                    .ok()
                    .filter(|(s, _)| *s == 200)
            },
            || tail(&std::fs::read_to_string(&err).unwrap_or_default(), 20),
        );
        let prefs = qb.get_json("/api/v2/app/preferences");
        let want = serde_json::json!({
            "listen_port": peer_port, "dht": false, "pex": false, "lsd": false, "upnp": false,
            "encryption": encryption as u8, "enable_multi_connections_from_same_ip": true,
            "bittorrent_protocol": 1, "current_interface_address": "127.0.0.1",
            "queueing_enabled": false, "resolve_peer_countries": false,
        });
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(
                &prefs[k], v,
                "{name}: qBittorrent did not take {k}: {prefs}"
            );
        }
        qb
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = http(self.web_port, "GET", path, "", b"")
            .unwrap_or_else(|e| panic!("{}: GET {path}: {e}", self.name));
        assert_eq!(
            status,
            200,
            "{}: GET {path}: {}",
            self.name,
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    /// A multipart/form-data POST (what `torrents/add` takes); each part
    /// is (name, file name if a file, bytes).
    fn post_multipart(&self, path: &str, parts: &[(&str, Option<&str>, &[u8])]) -> String {
        let boundary = "shoal-test-boundary-7d1e";
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            write!(
                body,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
            )
            .unwrap();
            if let Some(f) = file {
                write!(
                    body,
                    "; filename=\"{f}\"\r\nContent-Type: application/x-bittorrent"
                )
                .unwrap();
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        write!(body, "--{boundary}--\r\n").unwrap();
        let head = format!("Content-Type: multipart/form-data; boundary={boundary}\r\n");
        let (status, resp) = http(self.web_port, "POST", path, &head, &body)
            .unwrap_or_else(|e| panic!("{}: POST {path}: {e}", self.name));
        let text = String::from_utf8_lossy(&resp).into_owned();
        assert_eq!(status, 200, "{}: POST {path}: {text}", self.name);
        text
    }

    fn post_form(&self, path: &str, form: &[(&str, &str)]) -> String {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| {
                let v =
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
                format!("{k}={v}")
            })
            .collect();
        let head = "Content-Type: application/x-www-form-urlencoded\r\n";
        let (status, resp) = http(self.web_port, "POST", path, head, body.join("&").as_bytes())
            .unwrap_or_else(|e| panic!("{}: POST {path}: {e}", self.name));
        let text = String::from_utf8_lossy(&resp).into_owned();
        assert_eq!(status, 200, "{}: POST {path}: {text}", self.name);
        text
    }

    /// Adds a .torrent whose data is (or goes) under `save`.
    pub fn add_torrent(&self, torrent: &Path, save: &Path) {
        let bytes = std::fs::read(torrent).unwrap();
        let save = save.display().to_string();
        let out = self.post_multipart(
            "/api/v2/torrents/add",
            &[
                ("torrents", Some("t.torrent"), &bytes),
                ("savepath", None, save.as_bytes()),
            ],
        );
        assert!(out.contains("Ok"), "{}: add: {out}", self.name);
    }

    /// Adds a magnet link, to be downloaded under `save`.
    pub fn add_magnet(&self, magnet: &str, save: &Path) {
        let save = save.display().to_string();
        let out = self.post_multipart(
            "/api/v2/torrents/add",
            &[
                ("urls", None, magnet.as_bytes()),
                ("savepath", None, save.as_bytes()),
            ],
        );
        assert!(out.contains("Ok"), "{}: add: {out}", self.name);
    }

    /// Its one torrent, as `torrents/info` shows it, once it is there.
    pub fn torrent(&self) -> Option<serde_json::Value> {
        let list = self.get_json("/api/v2/torrents/info");
        list.as_array()?.first().cloned()
    }

    /// Tells it to dial shoal on `port` for its torrent.
    pub fn add_peer(&self, port: u16) {
        let hash = self.wait_torrent()["hash"].as_str().unwrap().to_string();
        let peer = format!("127.0.0.1:{port}");
        let out = self.post_form(
            "/api/v2/torrents/addPeers",
            &[("hashes", &hash), ("peers", &peer)],
        );
        assert!(
            out.contains("\"added\":1"),
            "{}: addPeers: {out}",
            self.name
        );
    }

    fn wait_torrent(&self) -> serde_json::Value {
        wait_for(
            "qBittorrent to list its torrent",
            Duration::from_secs(30),
            || self.torrent(),
            || tail(&self.proc.stderr(), 20),
        )
    }

    /// Waits until it answers a handshake for `info_hash` (hex) on its
    /// peer port, encrypted if `encrypted`: for a moment after its check
    /// it resets every connection.
    pub fn wait_answers(&self, info_hash: &str, encrypted: bool) {
        use shoal::peer::mse::Policy;
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&hex::decode(info_hash).unwrap());
        let policy = if encrypted {
            Policy::Require
        } else {
            Policy::Plain
        };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.peer_port));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        wait_for(
            "qBittorrent to answer a handshake",
            Duration::from_secs(30),
            || {
                let ours = shoal::peer::wire::Handshake::new(hash, *b"-XX0000-probe0000000");
                rt.block_on(shoal::peer::connect(
                    &Default::default(),
                    addr,
                    ours,
                    policy,
                    &[],
                ))
                .ok()
                .map(|_| ())
            },
            || tail(&self.proc.stderr(), 20),
        );
    }

    /// Waits until its torrent is complete and checked: progress 1 in an
    /// uploading state (its own report of having every piece).
    pub fn wait_complete(&self, what: &str, limit: Duration) -> serde_json::Value {
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        wait_for(
            what,
            limit,
            || {
                let t = self.torrent()?;
                *last.lock().unwrap() = t.clone();
                let state = t["state"].as_str().unwrap_or("");
                let up = ["uploading", "stalledUP", "forcedUP", "queuedUP"].contains(&state);
                (t["progress"].as_f64() == Some(1.0) && up).then_some(t)
            },
            || {
                format!(
                    "{} (peer port {}): {}\n{}",
                    self.name,
                    self.peer_port,
                    last.lock().unwrap(),
                    tail(&self.proc.stderr(), 20)
                )
            },
        )
    }
}

/// An rtorrent (0.9.8) in daemon mode with its own rc: one port,
/// 127.0.0.1, no DHT, no PEX, a watch folder it loads torrents from, and
/// marker files it writes itself when a torrent's hash check is done
/// (`checked`) and when a download finishes (`finished`). It ignores
/// 127.0.0.1 peers a tracker gives it, so shoal dials it (`--peer`).
pub struct Rtorrent {
    pub proc: Proc,
    pub port: u16,
    watch: PathBuf,
    checked: PathBuf,
    finished: PathBuf,
    name: String,
}

impl Rtorrent {
    /// Starts it with `data` as its download folder; returns once it
    /// listens.
    pub fn start(cell: &Path, name: &str, data: &Path) -> Rtorrent {
        let dir = cell.join(format!("{name}-rt"));
        let (watch, session) = (dir.join("watch"), dir.join("session"));
        std::fs::create_dir_all(&watch).unwrap();
        std::fs::create_dir_all(&session).unwrap();
        let (checked, finished) = (dir.join("checked"), dir.join("finished"));
        let port = free_port();
        let rc = dir.join("rtorrent.rc");
        std::fs::write(
            &rc,
            format!(
                "directory.default.set = {data}\n\
                 session.path.set = {session}\n\
                 network.port_range.set = {port}-{port}\n\
                 network.port_random.set = no\n\
                 network.bind_address.set = 127.0.0.1\n\
                 network.local_address.set = 127.0.0.1\n\
                 dht.mode.set = disable\n\
                 protocol.pex.set = no\n\
                 trackers.use_udp.set = no\n\
                 system.daemon.set = true\n\
                 schedule2 = watch, 1, 1, ((load.start_verbose, (cat, \"{watch}/\", \"*.torrent\")))\n\
                 method.set_key = event.download.hash_done, checked, \"execute.nothrow = touch, {checked}\"\n\
                 method.set_key = event.download.finished, finished, \"execute.nothrow = touch, {finished}\"\n\
                 log.open_file = \"main\", {log}\n\
                 log.add_output = \"info\", \"main\"\n",
                data = data.display(),
                session = session.display(),
                watch = watch.display(),
                checked = checked.display(),
                finished = finished.display(),
                log = dir.join("rtorrent.log").display(),
            ),
        )
        .unwrap();
        let args = vec!["-n".into(), "-o".into(), format!("import={}", rc.display())];
        let mut rt = Rtorrent {
            proc: spawn("rtorrent", &args, cell, name),
            port,
            watch,
            checked,
            finished,
            name: name.to_string(),
        };
        let log = dir.join("rtorrent.log");
        wait_for(
            "rtorrent to listen",
            Duration::from_secs(30),
            || {
                assert_running(&mut rt.proc, name);
                TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
            },
            || tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20),
        );
        rt
    }

    /// Loads a torrent through the watch folder (a copy: rtorrent deletes
    /// the file of a torrent it removes).
    pub fn load(&self, torrent: &Path) {
        std::fs::copy(torrent, self.watch.join("t.torrent")).unwrap();
    }

    fn log(&self) -> String {
        let file = self.watch.with_file_name("rtorrent.log");
        format!(
            "{}: {}\n{}",
            self.name,
            tail(&std::fs::read_to_string(file).unwrap_or_default(), 20),
            tail(&self.proc.stderr(), 10)
        )
    }

    /// Waits for its own word that the torrent's check is done.
    pub fn wait_checked(&self, limit: Duration) {
        wait_for(
            "rtorrent to check the torrent",
            limit,
            || self.checked.exists().then_some(()),
            || self.log(),
        );
    }

    /// Waits for its own word that the download finished.
    pub fn wait_finished(&self, limit: Duration) {
        wait_for(
            "rtorrent to finish the download",
            limit,
            || self.finished.exists().then_some(()),
            || self.log(),
        );
    }
}

/// ctorrent (dnh3.3.2) on `port`, run in `dir` (where its data is or
/// goes): it listens on 127.0.0.1 and claims 127.0.0.9 (it takes any peer
/// with its own address for itself, and allows one peer per address).
/// A seeder seeds for an hour; a leecher exits once it has everything.
pub fn ctorrent(cell: &Path, name: &str, torrent: &Path, dir: &Path, seed: bool) -> (Proc, u16) {
    let port = free_port();
    let (out, err) = (
        cell.join(format!("{name}.out")),
        cell.join(format!("{name}.err")),
    );
    let child = Command::new("ctorrent")
        .args(["-e", if seed { "1" } else { "0" }])
        .args([
            "-p",
            &port.to_string(),
            "-i",
            "127.0.0.1",
            "-I",
            "127.0.0.9",
        ])
        .arg(torrent)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ctorrent: {e}"));
    (Proc { child, out, err }, port)
}

/// ctorrent's status output, with its carriage returns made lines.
pub fn ctorrent_output(p: &Proc) -> String {
    p.stdout().replace('\r', "\n")
}

/// Whether every file under `want` is the same under `got` (a zero-length
/// one may be missing): `assert_tree_matches` without the panic, to wait on.
pub fn same_files(want: &Path, got: &Path) -> bool {
    list_files(want).iter().all(|f| {
        let w = std::fs::read(want.join(f)).unwrap_or_default();
        match std::fs::read(got.join(f)) {
            Ok(g) => g == w,
            Err(_) => w.is_empty(),
        }
    })
}
