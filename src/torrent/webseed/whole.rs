//! Servers that ignore `Range`: they answer every request with 200 and
//! the whole file (`python3 -m http.server`, many static hosts). Such a
//! server is read file by file from the start, one connection at a time
//! (a sweep over the torrent), and every block of a piece still needed goes
//! to the coordinator — the blocks it asked for as such, the others as
//! offers — which keeps each piece that verifies. A file is read only as
//! far as something in it is still needed (a piece neither had nor already
//! sent whole, or a block asked for); then the connection is dropped.
//! Blocks the coordinator asks for behind a sweep start another one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use url::Url;

use super::{describe, next_chunk, offset, Report, Server, WebEvent, ANSWER_TIMEOUT};
use crate::metainfo::Metainfo;
use crate::peer::wire::{BlockRef, BLOCK_LEN};

/// A whole-file answer to a `Range` request, its body unread.
pub struct Answer {
    pub file: usize,
    pub resp: reqwest::Response,
}

/// One sweep from `first`'s file (or the first file with something
/// needed) to the last file. A failure hands every queued block back to
/// the coordinator, which backs the server off.
pub(super) async fn sweep<E: Report>(
    server: Arc<Server<E>>,
    first: Option<Answer>,
) -> Option<Answer> {
    if let Err(why) = sweep_files(&server, first).await {
        let blocks: Vec<BlockRef> = std::mem::take(&mut *server.queue()).into_values().collect();
        let _ = server.send(WebEvent::Failed { blocks, why }).await;
    }
    None
}

async fn sweep_files<E: Report>(
    server: &Server<E>,
    mut first: Option<Answer>,
) -> Result<(), String> {
    let meta = server.seed.meta.clone();
    let start = match &first {
        Some(a) => Some(a.file),
        None => (0..meta.files.len()).find(|&f| server.needed_end(f) > 0),
    };
    let mut blocks = Blocks::new(meta.clone());
    let mut pace = Pace::new(meta.piece_length);
    for f in start.unwrap_or(meta.files.len())..meta.files.len() {
        let answer = first.take().filter(|a| a.file == f);
        if server.needed_end(f) == 0 {
            blocks.reset();
            continue;
        }
        let read_all = match server.seed.files.get(f) {
            Some(Some(url)) => read_file(server, f, url, answer, &mut blocks, &mut pace).await?,
            _ => pad_file(server, f, &mut blocks, &mut pace).await?,
        };
        if !read_all {
            blocks.reset();
        }
    }
    // What was asked for and is had by now (from peers) is done with.
    let have = &server.seed.shared.have;
    server.queue().retain(|_, b| !have.get(b.index as usize));
    Ok(())
}

/// Reads file `f` from its start (from `answer`, or a new request) until
/// nothing after the current position is needed. True if it read the
/// whole file (the block in progress goes on in the next file).
async fn read_file<E: Report>(
    server: &Server<E>,
    f: usize,
    url: &Url,
    answer: Option<Answer>,
    blocks: &mut Blocks,
    pace: &mut Pace,
) -> Result<bool, String> {
    let seed = &server.seed;
    let file = &seed.meta.files[f];
    let mut resp = match answer {
        Some(a) => a.resp,
        None => get(server, url).await?,
    };
    if let Some(l) = resp.content_length().filter(|l| *l != file.length) {
        return Err(format!(
            "the file is {l} bytes there, the torrent says {}",
            file.length
        ));
    }
    let (mut pos, mut end) = (0u64, server.needed_end(f));
    tracing::debug!("{url}: reading from the start, {end} bytes needed");
    let mut out = Vec::new();
    loop {
        if pos >= end {
            // Asked for more meanwhile?
            end = server.needed_end(f);
            if pos >= end {
                tracing::debug!("{url}: done after {pos} of {} bytes", file.length);
                // Dropping the answer closes the connection.
                return Ok(pos == file.length);
            }
        }
        pace.wait(server).await;
        let Some(chunk) = next_chunk(seed, &mut resp).await? else {
            if pos < file.length {
                return Err(format!(
                    "the answer ended after {pos} of {} bytes",
                    file.length
                ));
            }
            return Ok(true);
        };
        if pos + chunk.len() as u64 > file.length {
            return Err(format!("sent more than the file's {} bytes", file.length));
        }
        blocks.feed(file.offset + pos, &chunk, &mut out);
        pos += chunk.len() as u64;
        for (b, data, whole) in out.drain(..) {
            if server.offer(b, data, whole).await? {
                pace.sent(b.index);
            }
        }
    }
}

/// A pad file's zeros (BEP 47: never fetched), fed as far as needed, a
/// bounded chunk at a time. True if fed whole.
async fn pad_file<E: Report>(
    server: &Server<E>,
    f: usize,
    blocks: &mut Blocks,
    pace: &mut Pace,
) -> Result<bool, String> {
    let file = &server.seed.meta.files[f];
    let zeros = vec![0u8; 1 << 16];
    let (mut pos, end) = (0u64, server.needed_end(f));
    let mut out = Vec::new();
    while pos < end {
        let n = (end - pos).min(zeros.len() as u64);
        blocks.feed(file.offset + pos, &zeros[..n as usize], &mut out);
        pos += n;
        for (b, data, whole) in out.drain(..) {
            if server.offer(b, data, whole).await? {
                pace.sent(b.index);
            }
        }
        pace.wait(server).await;
    }
    Ok(pos == file.length)
}

/// A plain GET of a whole file: 200 expected.
async fn get<E: Report>(server: &Server<E>, url: &Url) -> Result<reqwest::Response, String> {
    let request = server.seed.client.get(url.clone()).send();
    let resp = match tokio::time::timeout(ANSWER_TIMEOUT, request).await {
        Err(_) => return Err(format!("no answer in {}s", ANSWER_TIMEOUT.as_secs())),
        Ok(r) => r.map_err(|e| describe(&e))?,
    };
    match resp.status().as_u16() {
        200 => Ok(resp),
        _ => Err(format!("HTTP {}", resp.status())),
    }
}

impl<E: Report> Server<E> {
    /// A piece not had, not sent whole already (it may be being checked),
    /// and not left out by a file selection.
    fn wanted(&self, piece: u32) -> bool {
        !self.seed.shared.have.get(piece as usize)
            && !self.sent_whole.get(piece as usize)
            && self
                .seed
                .unwanted
                .as_ref()
                .is_none_or(|u| !u.get(piece as usize))
    }

    /// How far into file `f` something is still needed: a queued block or
    /// a wanted piece overlapping it (0: nothing).
    fn needed_end(&self, f: usize) -> u64 {
        let meta = &self.seed.meta;
        let Some(file) = meta.files.get(f).filter(|f| f.length > 0) else {
            return 0;
        };
        let (start, end) = (file.offset, file.offset + file.length);
        let queued = self
            .queue()
            .range(start.saturating_sub(BLOCK_LEN as u64)..end)
            .next_back()
            .map(|(at, b)| at + b.length as u64)
            .filter(|e| *e > start);
        let piece = meta
            .file_pieces(f)
            .rev()
            .find(|&p| self.wanted(p))
            .map(|p| (p as u64 + 1) * meta.piece_length);
        queued
            .max(piece)
            .map_or(0, |e| e.min(end).saturating_sub(start))
    }

    /// Hands a block of the stream to the coordinator: as asked for if it
    /// is queued, as an offer if its piece is wanted; else drops it.
    /// `completes`: it ends a piece whose every block went out in order;
    /// true if that piece went out whole.
    async fn offer(&self, b: BlockRef, data: Bytes, completes: bool) -> Result<bool, String> {
        let at = offset(self.seed.meta.piece_length, b);
        let queued = {
            let mut queue = self.queue();
            let queued = queue.get(&at) == Some(&b);
            if queued {
                queue.remove(&at);
            }
            queued
        };
        let ev = if queued {
            WebEvent::Block { block: b, data }
        } else if self.wanted(b.index) {
            WebEvent::Offered { block: b, data }
        } else {
            return Ok(false);
        };
        self.send(ev).await?;
        if completes {
            // Not read again for it: if the coordinator did not take it,
            // it asks for its blocks.
            self.sent_whole.set(b.index as usize);
        }
        Ok(completes)
    }
}

/// Pieces sent whole wait to be checked before at most this many bytes
/// more are read: a server faster than hashing is slowed down rather than
/// its pieces turned away (the coordinator starts no new piece while
/// hashing is 8 MiB behind).
const AHEAD_BYTES: u64 = 4 << 20;
/// A piece sent whole and not had after this long is not waited for any
/// more (the coordinator did not take it; it will ask for its blocks).
const STUCK: Duration = Duration::from_secs(2);

/// Keeps a sweep from running ahead of the hash checks.
struct Pace {
    /// Pieces sent whole, oldest first, not known to be had yet.
    waiting: VecDeque<u32>,
    limit: usize,
}

impl Pace {
    fn new(piece_length: u64) -> Pace {
        Pace {
            waiting: VecDeque::new(),
            limit: (AHEAD_BYTES / piece_length.max(1)).max(2) as usize,
        }
    }

    fn sent(&mut self, piece: u32) {
        self.waiting.push_back(piece);
    }

    /// Returns once few enough pieces wait for their check.
    async fn wait<E: Report>(&mut self, server: &Server<E>) {
        let have = &server.seed.shared.have;
        let mut progress = (self.waiting.len(), Instant::now());
        loop {
            self.waiting.retain(|&p| !have.get(p as usize));
            if self.waiting.len() <= self.limit {
                return;
            }
            if self.waiting.len() < progress.0 {
                progress = (self.waiting.len(), Instant::now());
            } else if progress.1.elapsed() > STUCK {
                self.waiting.pop_front();
                continue;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Cuts the torrent's bytes, fed in order, into the picker's blocks (16
/// KiB within each piece, the last one of a piece shorter). A block whose
/// start was not fed (the first bytes fed, or after a jump) is skipped.
struct Blocks {
    meta: Arc<Metainfo>,
    /// The offset the next byte is expected at.
    next: u64,
    cur: Option<(BlockRef, Vec<u8>)>,
    /// The piece whose blocks all came out, in order, so far.
    piece: Option<u32>,
}

impl Blocks {
    fn new(meta: Arc<Metainfo>) -> Blocks {
        Blocks {
            meta,
            next: 0,
            cur: None,
            piece: None,
        }
    }

    fn reset(&mut self) {
        self.cur = None;
        self.piece = None;
    }

    /// The block holding torrent offset `t`.
    fn block_at(&self, t: u64) -> BlockRef {
        let plen = self.meta.piece_length;
        let index = (t / plen) as u32;
        let begin = (t % plen) / BLOCK_LEN as u64 * BLOCK_LEN as u64;
        let length = (self.meta.piece_size(index) - begin).min(BLOCK_LEN as u64);
        BlockRef {
            index,
            begin: begin as u32,
            length: length as u32,
        }
    }

    /// Bytes at torrent offset `at`; appends each block they complete,
    /// and whether it ends a piece all of whose blocks came out.
    fn feed(&mut self, at: u64, mut bytes: &[u8], out: &mut Vec<(BlockRef, Bytes, bool)>) {
        if at != self.next {
            self.reset();
        }
        let mut t = at;
        let total = self.meta.total_length;
        while !bytes.is_empty() && t < total {
            let (b, buf) = match &mut self.cur {
                Some((b, buf)) => (*b, buf),
                None => {
                    let b = self.block_at(t);
                    let start = offset(self.meta.piece_length, b);
                    if start != t {
                        // Its start went by unseen: skip to the next block.
                        self.piece = None;
                        let skip = ((start + b.length as u64 - t) as usize).min(bytes.len());
                        t += skip as u64;
                        bytes = &bytes[skip..];
                        continue;
                    }
                    let (_, buf) = self.cur.insert((b, Vec::with_capacity(b.length as usize)));
                    (b, buf)
                }
            };
            let take = (b.length as usize - buf.len()).min(bytes.len());
            buf.extend_from_slice(&bytes[..take]);
            t += take as u64;
            bytes = &bytes[take..];
            if buf.len() == b.length as usize {
                let data = Bytes::from(std::mem::take(buf));
                if b.begin == 0 {
                    self.piece = Some(b.index);
                }
                let last = u64::from(b.begin + b.length) == self.meta.piece_size(b.index);
                out.push((b, data, last && self.piece == Some(b.index)));
                self.cur = None;
            }
        }
        self.next = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::NewTorrent;

    /// Two files of 40 000 and 30 000 bytes, 32 KiB pieces: the second
    /// piece holds the file boundary, the last piece is short.
    fn meta() -> Arc<Metainfo> {
        let nt = NewTorrent {
            name: "pack".into(),
            length: 70_000,
            files: Some(vec![(vec!["a".into()], 40_000), (vec!["b".into()], 30_000)]),
            piece_length: 32_768,
            pieces: vec![0; 20 * 3],
            ..Default::default()
        };
        Arc::new(Metainfo::from_bytes(&nt.to_bytes()).unwrap())
    }

    fn bytes() -> Vec<u8> {
        (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Every block of the torrent, in order, whatever the chunk sizes and
    /// file boundaries the bytes come in.
    #[test]
    fn a_stream_is_cut_into_the_pickers_blocks() {
        let all = bytes();
        for chunk in [1, 1000, 16_384, 70_000] {
            let mut blocks = Blocks::new(meta());
            let mut out = Vec::new();
            // Fed file by file, as a sweep does.
            for (at, len) in [(0usize, 40_000usize), (40_000, 30_000)] {
                for c in all[at..at + len].chunks(chunk) {
                    let off = (c.as_ptr() as usize - all.as_ptr() as usize) as u64;
                    blocks.feed(off, c, &mut out);
                }
            }
            let refs: Vec<(u32, u32, u32)> = out
                .iter()
                .map(|(b, _, _)| (b.index, b.begin, b.length))
                .collect();
            assert_eq!(
                refs,
                [
                    (0, 0, 16_384),
                    (0, 16_384, 16_384),
                    (1, 0, 16_384),
                    (1, 16_384, 16_384),
                    (2, 0, 4_464)
                ],
                "chunks of {chunk}"
            );
            for (b, data, _) in &out {
                let at = (b.index as usize) * 32_768 + b.begin as usize;
                assert!(data[..] == all[at..at + b.length as usize]);
            }
            // Each piece's last block says it came whole.
            let whole: Vec<bool> = out.iter().map(|o| o.2).collect();
            assert_eq!(whole, [false, true, false, true, true]);
        }
    }

    /// A stream that starts inside a block, or jumps, never hands out a
    /// block it did not see whole.
    #[test]
    fn a_block_seen_in_part_is_skipped() {
        let all = bytes();
        let mut blocks = Blocks::new(meta());
        let mut out = Vec::new();
        blocks.feed(100, &all[100..40_000], &mut out);
        let firsts: Vec<(u32, bool)> = out.iter().map(|(b, _, w)| (b.begin, *w)).collect();
        // Block (0, 0) started before the stream: piece 0 is not whole.
        assert_eq!(firsts, [(16_384, false)]);
        out.clear();
        // The rest of file a was not read: b's first bytes finish a block
        // whose start is missing.
        blocks.reset();
        blocks.feed(40_000, &all[40_000..70_000], &mut out);
        let refs: Vec<(u32, u32, bool)> =
            out.iter().map(|(b, _, w)| (b.index, b.begin, *w)).collect();
        assert_eq!(refs, [(1, 16_384, false), (2, 0, true)]);
        out.clear();
        // A jump drops the block in progress.
        let mut blocks = Blocks::new(meta());
        blocks.feed(0, &all[..10_000], &mut out);
        blocks.feed(20_000, &all[20_000..33_000], &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
