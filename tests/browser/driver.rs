//! The WebDriver side of the browser tests: a Chromium session through
//! chromedriver, plain HTTP/1.1 on loopback for it and for shoal's API,
//! and what the torrent table shows. One copy, shared by every browser test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_port, Proc};
use crate::interop::{spawn, Cell};

/// The key under which WebDriver returns an element's id.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub fn on_path(prog: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// One HTTP/1.1 request on loopback, the answer's status and JSON body.
/// Enough for chromedriver (which keeps connections open, so the body is
/// read by its length) and for shoal's API.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    http_as(port, method, path, body, None)
}

/// `http` with `Authorization: Bearer TOKEN`.
pub fn http_as(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(
        port,
        method,
        path,
        "application/json",
        body.as_bytes(),
        token,
    )
}

/// One request with a body of any type (a .torrent upload).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    kind: &str,
    body: &[u8],
    token: Option<&str>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {kind}\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let (k, v) = line.split_once(':').unwrap_or((&line, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let mut payload = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            payload.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = length {
        payload.resize(n, 0);
        r.read_exact(&mut payload)?;
    } else {
        r.read_to_end(&mut payload)?;
    }
    let value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&payload).into_owned()))
    };
    Ok((status, value))
}

/// A Chromium session through chromedriver. Dropping it ends the session,
/// then kills chromedriver and any Chromium process still using this
/// session's own profile folder (found by that path in /proc, so nothing
/// else on the machine is touched).
pub struct Browser {
    port: u16,
    pub session: String,
    profile: PathBuf,
    driver: Option<Proc>,
    shots: PathBuf,
}

impl Browser {
    pub fn start(dir: &Path, chromium: &Path, shots: &Path) -> Browser {
        let port = free_port();
        let driver = spawn(
            "chromedriver",
            &[format!("--port={port}")],
            dir,
            "chromedriver",
        );
        let profile = dir.join("chromium-profile");
        let mut b = Browser {
            port,
            session: String::new(),
            profile: profile.clone(),
            driver: Some(driver),
            shots: shots.to_path_buf(),
        };
        let start = Instant::now();
        loop {
            if let Ok((200, v)) = http(port, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not come up on port {port}:\n{}",
                b.driver.as_ref().unwrap().stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        // Chromium refuses to start its sandbox as root.
        if unsafe { libc::geteuid() } == 0 {
            args.push("--no-sandbox".into());
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = b.cmd("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .expect("a WebDriver session id")
            .to_string();
        b
    }

    /// A WebDriver command; its `value`, or a panic with WebDriver's error.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = http(self.port, method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
        if status != 200 {
            panic!(
                "chromedriver {method} {path}: {status} {}: {}",
                v["value"]["error"], v["value"]["message"]
            );
        }
        v["value"].clone()
    }

    pub fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.s("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.s(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.s("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.s(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Runs a script in the page; its return value.
    pub fn js(&self, script: &str) -> Value {
        self.s(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Saves a screenshot of the window as `name` in the shots folder.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use data_encoding::BASE64;
        let v = self.s("GET", "/screenshot", None);
        let png = BASE64
            .decode(v.as_str().expect("base64 PNG").as_bytes())
            .expect("valid base64");
        let path = self.shots.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// What the table shows, row by row, as the user would read it.
    pub fn rows(&self) -> Vec<Row> {
        let v = self.js(
            "return Array.from(document.querySelectorAll('#rows tr[data-hash]')).map(tr => ({
               hash: tr.dataset.hash,
               name: tr.querySelector('.c-name .name-button').innerText,
               progress: tr.querySelector('.c-progress .pct').innerText,
               state: tr.querySelector('.c-state').innerText,
             }))",
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| Row {
                hash: r["hash"].as_str().unwrap_or("").to_string(),
                name: r["name"].as_str().unwrap_or("").to_string(),
                progress: r["progress"].as_str().unwrap_or("").to_string(),
                state: r["state"].as_str().unwrap_or("").to_string(),
            })
            .collect()
    }

    /// The browser's console: JavaScript errors, failed requests.
    pub fn console(&self) -> Vec<Value> {
        let v = self.s("POST", "/se/log", Some(json!({"type": "browser"})));
        v.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        drop(self.driver.take());
        kill_profile_users(&self.profile);
    }
}

/// Kills, by pid, every process whose command line names `profile`: the
/// Chromium processes of this test's own session, should any outlive it.
pub fn kill_profile_users(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let hit = cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == needle.as_bytes());
        if hit {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Chromium's path (the test fails saying how to install it and
/// chromedriver when they are missing), a scratch cell, and the folder
/// screenshots go to.
pub fn browser_cell(name: &'static str) -> (PathBuf, Cell, PathBuf) {
    let (Some(chromium), Some(_)) = (on_path("chromium"), on_path("chromedriver")) else {
        panic!(
            "the browser test needs Debian's chromium and chromedriver on PATH. Install them \
             with `sudo apt-get install -y chromium chromium-driver` (or run `bash .ci/deps` \
             as root)."
        );
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    (chromium, Cell::new(name), shots)
}

#[derive(Debug)]
pub struct Row {
    pub hash: String,
    pub name: String,
    pub progress: String,
    pub state: String,
}

pub fn row<'a>(rows: &'a [Row], hash: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.hash == hash)
}
