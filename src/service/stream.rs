//! Streaming one file of a torrent over HTTP (`GET
//! /api/torrents/{hash}/files/{index}/stream`, docs/api.md): byte ranges
//! answered from verified pieces only, read through the store, while the
//! torrent downloads. Each reader registers a window of pieces at its
//! position (`torrent::deadline`), which the picker asks for before any
//! other; it waits (bounded) for a missing piece to be verified.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{data_files, find_entry, parse_hash, run, Service, ServiceError};
use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;
use crate::peer::Shared;
use crate::store::confine::Root;
use crate::store::{Layout, Store};
use crate::torrent::deadline::{ReaderGuard, Readers, Window};

/// A reader waits this long for a piece before its answer is cut short.
pub const STREAM_WAIT: Duration = Duration::from_secs(60);
/// Bytes read from the store and sent at once, at most.
const CHUNK: u64 = 256 << 10;
/// How far ahead of a reader pieces get a deadline.
const READ_AHEAD: u64 = 8 << 20;
/// How often a waiting reader looks for its piece.
const POLL: Duration = Duration::from_millis(50);

/// One file to stream: where its bytes lie in the torrent.
pub struct StreamFile {
    pub hash: [u8; 20],
    pub meta: Arc<Metainfo>,
    /// The file's first byte in the torrent's byte space.
    pub offset: u64,
    pub length: u64,
    /// Its path in the torrent (for its type and name).
    pub path: String,
    readers: Arc<Readers>,
}

/// Where the verified bytes are now.
enum Source {
    /// The torrent runs: its store and its piece map.
    Live(Arc<Shared>),
    /// It does not run (paused, done, failed): the last run's piece map.
    Still(Option<Bitfield>),
    /// It is starting or checking its data: wait.
    Busy,
    /// Removed.
    Gone,
}

/// Why an answer ended early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the torrent was removed")]
    Gone,
    #[error("piece {0} is not downloaded and the torrent is not running")]
    Stopped(u32),
    #[error("piece {0} did not arrive within {1:?}")]
    Timeout(u32, Duration),
    #[error("reading the data: {0}")]
    Read(String),
}

impl Service {
    /// The file `index` (as the API numbers files) of a torrent, to stream.
    pub fn stream_file(&self, hex_hash: &str, index: usize) -> Result<StreamFile, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let mut entries = self.entries();
        let e = find_entry(&mut entries, hash, hex_hash)?;
        let Some(meta) = e.meta.clone() else {
            return Err(ServiceError::Invalid(
                "the torrent's files are not known yet (fetching metadata)".into(),
            ));
        };
        let files = data_files(&meta);
        let Some(&f) = files.get(index) else {
            return Err(ServiceError::NotFound(format!(
                "file {index}: the torrent has {} files",
                files.len()
            )));
        };
        let file = &meta.files[f];
        Ok(StreamFile {
            hash,
            offset: file.offset,
            length: file.length,
            path: file.path.to_string_lossy().into_owned(),
            readers: e.readers.clone(),
            meta: meta.clone(),
        })
    }

    fn stream_source(&self, hash: [u8; 20]) -> Source {
        let entries = self.entries();
        let Some(e) = entries.iter().find(|e| e.hash == hash) else {
            return Source::Gone;
        };
        if let Some(s) = e.shared.borrow().clone() {
            if e.run.is_some() {
                return Source::Live(s);
            }
        }
        if e.run.is_some() {
            return Source::Busy;
        }
        Source::Still(e.have.clone())
    }

    /// A read-only store of a torrent that does not run, as its runs lay
    /// out the data (skipped files' bytes in the part file).
    fn still_store(&self, hash: [u8; 20], meta: &Metainfo) -> Option<Arc<Store>> {
        let (dir, priorities) = {
            let entries = self.entries();
            let e = entries.iter().find(|e| e.hash == hash)?;
            (e.saved.dir.clone(), e.saved.priorities.clone())
        };
        let root = Root::under(&self.inner.root, &dir)?;
        let mut store = Store::open_read_in(Layout::from_metainfo(meta), root);
        if let (Some(sel), _) = run::selection_of(meta, &priorities) {
            let part = crate::store::ownership::part_path(&meta.info_hash.hex());
            store.set_skipped(sel.iter().map(|s| !s).collect(), part);
        }
        Some(Arc::new(store))
    }
}

/// What `Range` asked for, against a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No range (or one in another unit, or several): the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Malformed or past the end: 416.
    Bad,
}

/// Parses a `Range` header (RFC 9110 §14.1.2): `bytes=A-B`, `bytes=A-`,
/// `bytes=-N` (the last N bytes). Several ranges are answered with the
/// whole file, which the RFC allows.
pub fn parse_range(header: Option<&str>, len: u64) -> RangeAsk {
    let Some(h) = header else {
        return RangeAsk::Whole;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Bad;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return RangeAsk::Bad,
        (true, false) => match num(b) {
            Some(0) | None => return RangeAsk::Bad,
            Some(n) => (len.saturating_sub(n), len.saturating_sub(1)),
        },
        (false, true) => match num(a) {
            Some(s) => (s, len.saturating_sub(1)),
            None => return RangeAsk::Bad,
        },
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
            _ => return RangeAsk::Bad,
        },
    };
    if len == 0 || start >= len {
        return RangeAsk::Bad;
    }
    RangeAsk::Part(start, end)
}

/// The type to answer with, from the file's extension. Anything a
/// browser would run (HTML, SVG, scripts) goes as bytes.
pub fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "ts" | "m2ts" => "video/mp2t",
        "ogv" => "video/ogg",
        "mpg" | "mpeg" => "video/mpeg",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "flac" => "audio/flac",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "wav" => "audio/wav",
        "srt" => "application/x-subrip",
        "vtt" => "text/vtt; charset=utf-8",
        "txt" | "nfo" => "text/plain; charset=utf-8",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// The pieces a reader at torrent offset `at` wants soon.
fn window(file: &StreamFile, at: u64) -> Window {
    let piece_len = file.meta.piece_length.max(1);
    let last = (file.offset + file.length.max(1) - 1) / piece_len;
    Window {
        piece: (at / piece_len) as u32,
        ahead: READ_AHEAD.div_ceil(piece_len).clamp(2, 128) as u32,
        end: (last + 1).min(u64::from(u32::MAX)) as u32,
    }
}

/// One reader's answer in progress.
struct Reader {
    svc: Service,
    file: StreamFile,
    /// Next byte to send and the end (exclusive), in the file.
    pos: u64,
    end: u64,
    /// Registered at the first read, so a HEAD request registers nothing.
    guard: Option<ReaderGuard>,
    /// A store of the torrent while it does not run, made once.
    still: Option<Arc<Store>>,
}

impl Reader {
    /// The next chunk: up to the end of the piece at `pos`, once that
    /// piece is verified.
    async fn next(&mut self) -> Result<Bytes, StreamError> {
        let piece_len = self.file.meta.piece_length.max(1);
        let at = self.file.offset + self.pos;
        let piece = (at / piece_len) as u32;
        let piece_end = (u64::from(piece) + 1) * piece_len;
        let len = (piece_end - at).min(CHUNK).min(self.end - self.pos);
        let w = window(&self.file, at);
        match &self.guard {
            Some(g) => g.move_to(w.piece),
            None => self.guard = Some(self.file.readers.add(w)),
        }
        let started = Instant::now();
        let store = loop {
            match self.svc.stream_source(self.file.hash) {
                Source::Gone => return Err(StreamError::Gone),
                Source::Live(s) if s.have.get(piece as usize) => break s.store.clone(),
                Source::Still(have) => {
                    if !have.is_some_and(|h| h.get(piece as usize)) {
                        return Err(StreamError::Stopped(piece));
                    }
                    if self.still.is_none() {
                        self.still = self.svc.still_store(self.file.hash, &self.file.meta);
                    }
                    match &self.still {
                        Some(s) => break s.clone(),
                        None => return Err(StreamError::Stopped(piece)),
                    }
                }
                Source::Live(_) | Source::Busy => {}
            }
            if started.elapsed() >= STREAM_WAIT {
                return Err(StreamError::Timeout(piece, STREAM_WAIT));
            }
            tokio::time::sleep(POLL).await;
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            match store.read_at(at, &mut buf) {
                Ok(true) => Ok(Bytes::from(buf)),
                Ok(false) => Err(StreamError::Read("the file is missing or short".into())),
                Err(e) => Err(StreamError::Read(e.to_string())),
            }
        })
        .await
        .map_err(|e| StreamError::Read(e.to_string()))??;
        self.pos += len;
        Ok(read)
    }
}

/// The bytes `start..end` of the file, as they are verified; an error
/// ends the answer early (the client sees it cut short).
pub fn body(
    svc: Service,
    file: StreamFile,
    start: u64,
    end: u64,
) -> impl futures_core::Stream<Item = Result<Bytes, StreamError>> + Send {
    let reader = Reader {
        svc,
        file,
        pos: start,
        end,
        guard: None,
        still: None,
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        if r.pos >= r.end {
            return None;
        }
        match r.next().await {
            Ok(b) => Some((Ok(b), r)),
            Err(e) => {
                tracing::info!("stream of {}: {e}", crate::out::escape(&r.file.path));
                // Nothing more after an error.
                r.end = r.pos;
                Some((Err(e), r))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        let p = |h: &str| parse_range(Some(h), 1000);
        assert_eq!(parse_range(None, 1000), Whole);
        assert_eq!(p("bytes=0-499"), Part(0, 499));
        assert_eq!(p("bytes=500-"), Part(500, 999));
        assert_eq!(p("bytes=-100"), Part(900, 999));
        assert_eq!(p("bytes=-5000"), Part(0, 999));
        assert_eq!(p("bytes=900-5000"), Part(900, 999));
        assert_eq!(p("bytes=999-999"), Part(999, 999));
        assert_eq!(p("bytes=0-1,5-6"), Whole);
        assert_eq!(p("items=0-1"), Whole);
        for bad in [
            "bytes=1000-",
            "bytes=5-2",
            "bytes=-0",
            "bytes=-",
            "bytes=abc",
            "bytes=1-x",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(p(bad), Bad, "{bad}");
        }
        assert_eq!(parse_range(Some("bytes=0-"), 0), Bad);
        assert_eq!(parse_range(None, 0), Whole);
    }

    #[test]
    fn types() {
        assert_eq!(content_type("a/film.MP4"), "video/mp4");
        assert_eq!(content_type("x.mkv"), "video/x-matroska");
        assert_eq!(content_type("page.html"), "application/octet-stream");
        assert_eq!(content_type("logo.svg"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
