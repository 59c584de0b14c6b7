//! BEP 19 web seeds ("GetRight style"): an HTTP(S) server that holds the
//! torrent's files, used as one more source of blocks.
//!
//! The coordinator treats a web seed like a peer that has every piece and
//! never chokes: the picker hands it blocks (rarest first, endgame
//! duplicates, file priorities all apply), which arrive here as
//! [`WebCmd::Fetch`]. This task joins adjacent blocks into runs of up to
//! [`RUN_BYTES`] and fetches each run with `Range` requests, one per file
//! the run touches, at most [`CONNECTIONS`] at a time per server. Each block
//! is reported as soon as its bytes are in; a request that fails reports
//! the blocks it did not deliver, and the coordinator backs the server off.
//! The coordinator verifies pieces as it does for peers and bans a server
//! whose data fails the hash check.
//!
//! Nothing the server says is trusted: the status must be 206 with a
//! `Content-Range` naming exactly the bytes asked for (or 200 when they are
//! the whole file), a `Content-Length` must match, and the body is never
//! read past the length asked for, so a server sending a huge body costs
//! no memory. Redirects are followed [`MAX_REDIRECTS`] times at most, and a
//! server silent for [`IDLE_TIMEOUT`] fails the request.
//!
//! A server that answers a `Range` request with 200 and the whole file
//! (`python3 -m http.server`, many static hosts) is read whole from then
//! on, one connection at a time ([`whole`]).

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_bencode::value::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use crate::bitfield::{AtomicBitfield, Bitfield};
use crate::metainfo::{bencode, Metainfo};
use crate::peer::wire::BlockRef;
use crate::peer::{PeerKey, PeerStats, Shared};

mod whole;

/// Requests in flight to one server at once.
pub const CONNECTIONS: usize = 3;
/// Bytes asked for by one request at most (several when a run spans files).
pub const RUN_BYTES: u64 = 1 << 20;
pub const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From sending a request to the status line.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// No byte of the body for this long: the request fails.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Coordinator → web seed task.
#[derive(Debug)]
pub enum WebCmd {
    /// Blocks the picker gave this server.
    Fetch(Vec<BlockRef>),
    /// Not needed any more (another source delivered it); dropped if not
    /// yet asked for.
    Cancel(BlockRef),
    /// Forget every queued block and abort the requests in flight: the
    /// server is backed off and its blocks went back to the picker.
    Reset,
}

/// Web seed task → coordinator.
#[derive(Debug)]
pub enum WebEvent {
    Block {
        block: BlockRef,
        data: Bytes,
    },
    /// A block of a whole file the server sent unasked (it ignores
    /// `Range`): to be taken if its piece is still needed and free.
    Offered {
        block: BlockRef,
        data: Bytes,
    },
    /// The server answers `Range` requests with whole files; from now on
    /// it is read file by file from the start, on one connection.
    IgnoresRanges,
    /// A request failed; these blocks of it were not delivered.
    Failed {
        blocks: Vec<BlockRef>,
        why: String,
    },
}

/// The HTTP client of a torrent's web seeds. No transparent decompression:
/// byte ranges must be of the file itself, not of a compressed copy.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("shoal/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .no_gzip()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .map_err(|e| describe(&e))
}

/// Path elements are percent-encoded except for the characters no URL
/// needs escaped.
const ELEMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(raw: &[u8]) -> String {
    percent_encode(raw, ELEMENT).to_string()
}

/// Where each file of the torrent lies on the web seed `base`; None for pad
/// files (zeros by definition, never fetched).
///
/// Single-file torrent: `base` is the file itself, or with a trailing `/`
/// the folder holding it (the torrent's name is appended). Multi-file:
/// `base` is the folder holding the torrent's folder:
/// `base/name/path/to/file`. Names are the torrent's own bytes,
/// percent-encoded, not the sanitised names used on our disk.
pub fn file_urls(base: &str, meta: &Metainfo) -> Result<Vec<Option<Url>>, String> {
    let base = base.trim();
    let check = Url::parse(base).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(check.scheme(), "http" | "https") || check.host().is_none() {
        return Err("not an http(s) URL with a host".into());
    }
    let info = meta.info_bytes().map_err(|e| e.to_string())?;
    let Value::Dict(info) = bencode::decode(&info).map_err(|e| e.to_string())? else {
        return Err("info is not a dictionary".into());
    };
    let text = |d: &std::collections::HashMap<Vec<u8>, Value>, key: &str| -> Option<Vec<u8>> {
        let utf8 = format!("{key}.utf-8");
        match d.get(utf8.as_bytes()).or_else(|| d.get(key.as_bytes())) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        }
    };
    let name = text(&info, "name").ok_or("the torrent has no name")?;
    let parse = |s: String| Url::parse(&s).map_err(|e| format!("{s}: {e}"));
    if !meta.multi_file {
        let url = if base.ends_with('/') {
            format!("{base}{}", encode(&name))
        } else {
            base.to_string()
        };
        return Ok(vec![Some(parse(url)?)]);
    }
    let folder = format!(
        "{base}{}{}/",
        if base.ends_with('/') { "" } else { "/" },
        encode(&name)
    );
    let Some(Value::List(list)) = info.get(&b"files"[..]) else {
        return Err("the torrent has no file list".into());
    };
    if list.len() != meta.files.len() {
        return Err("the file list does not match the torrent's".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (entry, file) in list.iter().zip(&meta.files) {
        if !file.is_data() {
            out.push(None);
            continue;
        }
        let Value::Dict(d) = entry else {
            return Err("a file entry is not a dictionary".into());
        };
        let key = if d.contains_key(&b"path.utf-8"[..]) {
            &b"path.utf-8"[..]
        } else {
            &b"path"[..]
        };
        let Some(Value::List(elems)) = d.get(key) else {
            return Err("a file has no path".into());
        };
        let mut parts = Vec::with_capacity(elems.len());
        for e in elems {
            match e {
                Value::Bytes(b) => parts.push(encode(b)),
                _ => return Err("a path element is not a string".into()),
            }
        }
        out.push(Some(parse(format!("{folder}{}", parts.join("/")))?));
    }
    Ok(out)
}

/// A `Content-Range: bytes FIRST-LAST/TOTAL` value (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

/// What went wrong with a request, as one line: the error's causes, without
/// the URL (the status line names the server once).
fn describe(e: &reqwest::Error) -> String {
    if e.is_redirect() {
        return format!("too many redirects (over {MAX_REDIRECTS})");
    }
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        // The top level names the URL; keep only what follows it.
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// One server, as its task knows it.
/// What a web seed task reports to: its owner's event channel, whose
/// event type wraps ours (so this module needs nothing of its owner's).
pub trait Report: From<(PeerKey, WebEvent)> + Send + 'static {}
impl<E: From<(PeerKey, WebEvent)> + Send + 'static> Report for E {}

pub struct Seed<E> {
    pub key: PeerKey,
    pub files: Vec<Option<Url>>,
    pub meta: Arc<Metainfo>,
    pub shared: Arc<Shared>,
    pub stats: Arc<PeerStats>,
    pub client: reqwest::Client,
    pub events: mpsc::Sender<E>,
    /// Pieces a file selection left out: never read from a whole file.
    pub unwanted: Option<Bitfield>,
}

/// What one server's requests share: the seed, and the blocks the
/// coordinator asked for that no request has taken yet.
struct Server<E> {
    seed: Seed<E>,
    /// By offset in the torrent.
    queue: Mutex<BTreeMap<u64, BlockRef>>,
    /// Pieces a whole-file read sent every block of, in order.
    sent_whole: AtomicBitfield,
}

impl<E: Report> Server<E> {
    fn queue(&self) -> MutexGuard<'_, BTreeMap<u64, BlockRef>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, ev: WebEvent) -> Result<(), String> {
        self.seed
            .events
            .send(E::from((self.seed.key, ev)))
            .await
            .map_err(|_| "torrent stopped".to_string())
    }
}

/// Why a request stopped early.
enum Stop {
    Failed(String),
    /// A 200 with the whole file for a part of it: the answer, unread.
    Whole(reqwest::Response),
}

impl From<String> for Stop {
    fn from(why: String) -> Stop {
        Stop::Failed(why)
    }
}

fn offset(piece_length: u64, b: BlockRef) -> u64 {
    b.index as u64 * piece_length + b.begin as u64
}

/// Takes the first queued block and those right after it, up to
/// [`RUN_BYTES`].
fn next_run(queue: &mut BTreeMap<u64, BlockRef>) -> Vec<BlockRef> {
    let mut run = Vec::new();
    let Some((mut end, first)) = queue.pop_first() else {
        return run;
    };
    end += first.length as u64;
    let mut bytes = first.length as u64;
    run.push(first);
    while let Some(b) = queue.get(&end).copied() {
        if bytes + b.length as u64 > RUN_BYTES {
            break;
        }
        queue.remove(&end);
        end += b.length as u64;
        bytes += b.length as u64;
        run.push(b);
    }
    run
}

/// The task of one web seed: runs until the coordinator drops its sender.
pub async fn run<E: Report>(seed: Seed<E>, mut cmds: mpsc::UnboundedReceiver<WebCmd>) {
    let plen = seed.meta.piece_length;
    let pieces = Bitfield::new(seed.meta.piece_count() as usize);
    let server = Arc::new(Server {
        seed,
        queue: Mutex::default(),
        sent_whole: AtomicBitfield::from_bitfield(&pieces),
    });
    let mut fetches: JoinSet<Option<whole::Answer>> = JoinSet::new();
    // Set once the server answered a Range request with the whole file.
    let mut whole_files = false;
    loop {
        if whole_files {
            if fetches.is_empty() && !server.queue().is_empty() {
                fetches.spawn(whole::sweep(server.clone(), None));
            }
        } else {
            while fetches.len() < CONNECTIONS {
                let run = next_run(&mut server.queue());
                if run.is_empty() {
                    break;
                }
                fetches.spawn(fetch_run(server.clone(), run));
            }
        }
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(WebCmd::Fetch(blocks)) => {
                    let mut queue = server.queue();
                    for b in blocks {
                        queue.insert(offset(plen, b), b);
                    }
                }
                Some(WebCmd::Cancel(b)) => {
                    let at = offset(plen, b);
                    let mut queue = server.queue();
                    if queue.get(&at) == Some(&b) {
                        queue.remove(&at);
                    }
                }
                Some(WebCmd::Reset) => {
                    server.queue().clear();
                    fetches.abort_all();
                }
            },
            Some(done) = fetches.join_next(), if !fetches.is_empty() => {
                let Ok(Some(answer)) = done else { continue };
                if !whole_files {
                    whole_files = true;
                    if server.send(WebEvent::IgnoresRanges).await.is_err() {
                        break;
                    }
                }
                // One connection from now on: the last request to come
                // back reads its answer, the others are dropped.
                if fetches.is_empty() {
                    fetches.spawn(whole::sweep(server.clone(), Some(answer)));
                }
            }
        }
    }
    fetches.shutdown().await;
}

/// A run of adjacent blocks being fetched: its bytes so far, and how many
/// of its blocks went to the coordinator.
struct Run {
    blocks: Vec<BlockRef>,
    start: u64,
    buf: Vec<u8>,
    sent: usize,
}

impl Run {
    /// Reports every block whose bytes are all in. Err when the torrent is
    /// gone.
    async fn deliver<E: Report>(&mut self, server: &Server<E>) -> Result<(), String> {
        while let Some(&b) = self.blocks.get(self.sent) {
            let from = (offset(server.seed.meta.piece_length, b) - self.start) as usize;
            let to = from + b.length as usize;
            if self.buf.len() < to {
                break;
            }
            let data = Bytes::copy_from_slice(&self.buf[from..to]);
            server.send(WebEvent::Block { block: b, data }).await?;
            self.sent += 1;
        }
        Ok(())
    }
}

/// Fetches one run. A server that ignores `Range` gets the run's
/// undelivered blocks back in the queue, and its answer is returned to be
/// read whole.
async fn fetch_run<E: Report>(
    server: Arc<Server<E>>,
    blocks: Vec<BlockRef>,
) -> Option<whole::Answer> {
    let seed = &server.seed;
    let &first = blocks.first()?;
    let start = offset(seed.meta.piece_length, first);
    let len: u64 = blocks.iter().map(|b| b.length as u64).sum();
    let mut run = Run {
        blocks,
        start,
        buf: Vec::with_capacity(len as usize),
        sent: 0,
    };
    let mut result = Ok(());
    for s in seed.meta.slices(start, len) {
        result = match seed.files.get(s.file) {
            Some(Some(url)) => {
                let file_len = seed.meta.files.get(s.file).map_or(0, |f| f.length);
                fetch_range(&server, url, s.offset, s.len, file_len, &mut run)
                    .await
                    .map_err(|stop| (s.file, stop))
            }
            // Pad files are zeros.
            _ => {
                run.buf.resize(run.buf.len() + s.len as usize, 0);
                run.deliver(&server)
                    .await
                    .map_err(|why| (s.file, Stop::Failed(why)))
            }
        };
        if result.is_err() {
            break;
        }
    }
    let blocks = run.blocks.split_off(run.sent);
    match result {
        Ok(()) => None,
        Err((file, Stop::Whole(resp))) => {
            let mut queue = server.queue();
            for b in blocks {
                queue.insert(offset(seed.meta.piece_length, b), b);
            }
            Some(whole::Answer { file, resp })
        }
        Err((_, Stop::Failed(why))) => {
            if !blocks.is_empty() {
                let _ = server.send(WebEvent::Failed { blocks, why }).await;
            }
            None
        }
    }
}

/// Fetches `n` bytes at `off` of a file of `file_len` bytes into `run`,
/// reporting blocks as they complete.
async fn fetch_range<E: Report>(
    server: &Server<E>,
    url: &Url,
    off: u64,
    n: u64,
    file_len: u64,
    run: &mut Run,
) -> Result<(), Stop> {
    let seed = &server.seed;
    let last = off + n - 1;
    let request = seed
        .client
        .get(url.clone())
        .header(reqwest::header::RANGE, format!("bytes={off}-{last}"))
        .send();
    let mut resp = match tokio::time::timeout(ANSWER_TIMEOUT, request).await {
        Err(_) => return Err(format!("no answer in {}s", ANSWER_TIMEOUT.as_secs()).into()),
        Ok(r) => r.map_err(|e| describe(&e))?,
    };
    let status = resp.status();
    match status.as_u16() {
        206 => {
            let header = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match parse_content_range(header) {
                Some((a, b, total)) if a == off && b == last => {
                    if let Some(t) = total.filter(|t| *t != file_len) {
                        return Err(format!(
                            "the file is {t} bytes there, the torrent says {file_len}"
                        )
                        .into());
                    }
                }
                _ => {
                    return Err(format!(
                        "wrong Content-Range {header:?} (asked for bytes {off}-{last})"
                    )
                    .into())
                }
            }
        }
        200 if off == 0 && n == file_len => {}
        200 => return Err(Stop::Whole(resp)),
        _ => return Err(format!("HTTP {status}").into()),
    }
    if let Some(l) = resp.content_length().filter(|l| *l != n) {
        return Err(format!("sends {l} bytes for the {n} asked for").into());
    }
    let mut got = 0u64;
    loop {
        let Some(chunk) = next_chunk(seed, &mut resp).await? else {
            break;
        };
        let k = chunk.len() as u64;
        if got + k > n {
            return Err(format!("sent more than the {n} bytes asked for").into());
        }
        got += k;
        run.buf.extend_from_slice(&chunk);
        run.deliver(server).await?;
    }
    if got < n {
        return Err(format!("the answer ended after {got} of {n} bytes").into());
    }
    Ok(())
}

/// The next piece of an answer's body (None at its end), counted as
/// downloaded and paced by the download limit. Fails after
/// [`IDLE_TIMEOUT`] without a byte.
async fn next_chunk<E>(
    seed: &Seed<E>,
    resp: &mut reqwest::Response,
) -> Result<Option<Bytes>, String> {
    let chunk = match tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()).await {
        Err(_) => return Err(format!("no data for {}s", IDLE_TIMEOUT.as_secs())),
        Ok(c) => c.map_err(|e| describe(&e))?,
    };
    if let Some(chunk) = &chunk {
        let k = chunk.len() as u64;
        seed.stats.downloaded.fetch_add(k, Ordering::Relaxed);
        seed.shared.downloaded.fetch_add(k, Ordering::Relaxed);
        let wait = seed.shared.download_limit.reserve(k);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::NewTorrent;

    fn meta(files: Option<Vec<(Vec<String>, u64)>>, name: &str) -> Metainfo {
        let total: u64 = match &files {
            Some(f) => f.iter().map(|(_, l)| l).sum(),
            None => 100,
        };
        let pieces = total.div_ceil(16384) as usize;
        let nt = NewTorrent {
            name: name.into(),
            length: total,
            files,
            piece_length: 16384,
            pieces: vec![0; 20 * pieces],
            ..Default::default()
        };
        Metainfo::from_bytes(&nt.to_bytes()).unwrap()
    }

    fn urls(base: &str, m: &Metainfo) -> Vec<String> {
        file_urls(base, m)
            .unwrap()
            .into_iter()
            .map(|u| u.map_or("-".into(), |u| u.to_string()))
            .collect()
    }

    #[test]
    fn single_file_urls() {
        let m = meta(None, "my file.iso");
        assert_eq!(
            urls("http://h/pub/x.iso", &m),
            ["http://h/pub/x.iso".to_string()]
        );
        assert_eq!(
            urls("http://h/pub/", &m),
            ["http://h/pub/my%20file.iso".to_string()]
        );
    }

    #[test]
    fn multi_file_urls_are_folder_name_path() {
        let m = meta(
            Some(vec![
                (vec!["a b".into(), "c#?.txt".into()], 10),
                (vec!["ü".into()], 20),
            ]),
            "pack",
        );
        let want = [
            "http://h/m/pack/a%20b/c%23%3F.txt".to_string(),
            "http://h/m/pack/%C3%BC".to_string(),
        ];
        assert_eq!(urls("http://h/m/", &m), want);
        assert_eq!(urls("http://h/m", &m), want);
    }

    #[test]
    fn only_http_urls_are_used() {
        let m = meta(None, "f");
        assert!(file_urls("ftp://h/f", &m).is_err());
        assert!(file_urls("not a url", &m).is_err());
        assert!(file_urls("https://h/f", &m).is_ok());
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-99/100"),
            Some((0, 99, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range(""), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn runs_join_adjacent_blocks_only() {
        let plen = 32768;
        let b = |index, begin| BlockRef {
            index,
            begin,
            length: 16384,
        };
        let mut q = BTreeMap::new();
        for x in [b(0, 0), b(0, 16384), b(1, 0), b(3, 0)] {
            q.insert(offset(plen, x), x);
        }
        assert_eq!(next_run(&mut q), vec![b(0, 0), b(0, 16384), b(1, 0)]);
        assert_eq!(next_run(&mut q), vec![b(3, 0)]);
        assert!(next_run(&mut q).is_empty());
        // Long runs are cut at RUN_BYTES.
        for i in 0..100u32 {
            let x = b(i / 2, i % 2 * 16384);
            q.insert(offset(plen, x), x);
        }
        assert_eq!(next_run(&mut q).len() as u64, RUN_BYTES / 16384);
    }
}
