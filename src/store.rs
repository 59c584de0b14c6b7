//! The verified piece store: maps pieces onto files and moves bytes with
//! positional reads and writes (no shared seek position, so any thread may
//! use it). Only pieces whose SHA-1 matched are ever written, so whatever is
//! on disk is either verified data or will fail its check on resume.

pub mod confine;
pub mod create;
pub mod handles;
pub mod ownership;
pub mod resume;
mod torrent_file;

pub use torrent_file::load_torrent;
#[cfg(test)]
pub(crate) use torrent_file::load_with;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use confine::{Mode, Root};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::metainfo::merkle;
use crate::metainfo::v2::V2;
use crate::metainfo::{
    safe_join, slices, FileEntry, FileSlice, Metainfo, MetainfoError, PieceHashes,
};

/// O_DIRECT handles one store keeps (besides the process-wide cache of
/// plain handles, `handles`): a download writes a few files at a time, and
/// a thousand torrents must not hold a thousand times more.
const MAX_DIRECT_FILES: usize = 4;
/// Handle key of the part file (see [`Store::set_skipped`]).
const PART: usize = usize::MAX;

/// Runs of a piece at least this long, on 4 KiB boundaries of the file, are
/// written with O_DIRECT: copying received data into the page cache was half
/// of a download's CPU, and fresh page-cache pages are costly to touch
/// (on VMs whose free memory goes back to the host, several times so).
/// Shorter direct writes are slower than the copy they save.
const DIRECT_MIN: u64 = 256 << 10;
const DIRECT_ALIGN: u64 = 4096;
/// Direct writes from memory not aligned like the file go out in chunks of
/// this size through an aligned buffer.
const DIRECT_CHUNK: usize = 1 << 20;

/// A piece being assembled, kept at a page boundary inside its allocation:
/// a piece whose place in its file is page-aligned too (any single-file
/// torrent) then goes to disk with O_DIRECT straight from it, without the
/// copy into an aligned buffer. An ordinary heap allocation with room to
/// spare, not an aligned one: glibc's aligned allocations fragment the heap
/// (a 1 GiB download peaked at 56-74 MiB with them, 31 MiB without).
#[derive(Default)]
pub struct PieceData {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl PieceData {
    /// Makes it `len` bytes long, starting `phase` bytes past a page
    /// boundary (see [`Layout::piece_phase`]), reusing the allocation when
    /// it is big enough (the bytes are then whatever the last piece left).
    pub fn set_len(&mut self, len: usize, phase: usize) {
        let page = DIRECT_ALIGN as usize;
        let need = len + 2 * page;
        if self.mem.len() < need {
            self.mem = vec![0; need];
        }
        self.start = self.mem.as_ptr().align_offset(page) + phase % page;
        self.len = len;
    }
}

impl std::fmt::Debug for PieceData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceData({} bytes)", self.len)
    }
}

impl std::ops::Deref for PieceData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for PieceData {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("{0}: refusing a path that leaves the output folder")]
    UnsafePath(PathBuf),
    #[error("{0}: refusing to go through a symbolic link")]
    Symlink(PathBuf),
    #[error("{0}: exists but is not a regular file")]
    NotAFile(PathBuf),
    #[error("piece {0} is out of range")]
    BadPiece(u32),
    /// Refused after an earlier write failed; carries that failure, which
    /// is the one to report (it may reach the user first).
    #[error("piece {0} not written after an earlier failure: {1}")]
    NotWritten(u32, String),
    #[error("reading piece hashes: {0}")]
    Hashes(#[from] MetainfoError),
    #[error("interrupted")]
    Interrupted,
}

/// Where pieces live: the files of a torrent under an output folder.
#[derive(Clone, Debug)]
pub struct Layout {
    pub piece_length: u64,
    pub total_length: u64,
    pub files: Vec<FileEntry>,
    /// The torrent's piece hashes (shared), or none yet for `create`.
    pub hashes: PieceHashes,
    /// v2-only torrents: pieces are checked against these merkle trees
    /// (SHA-256) instead of `hashes`, which is empty.
    pub merkle: Option<Arc<V2>>,
    /// The v2 side of a v2-only or hybrid torrent (roots and piece
    /// layers, to answer hash requests).
    pub v2: Option<Arc<V2>>,
}

impl Layout {
    pub fn from_metainfo(m: &Metainfo) -> Layout {
        Layout {
            piece_length: m.piece_length,
            total_length: m.total_length,
            files: m.files.clone(),
            hashes: m.hashes(),
            merkle: if m.v2_only() { m.v2.clone() } else { None },
            v2: m.v2.clone(),
        }
    }

    /// Whether `data`, the whole of piece `piece`, is what the torrent
    /// says: SHA-1 for v1 and hybrid torrents, the merkle tree for
    /// v2-only ones. An error when the expected hash cannot be had (the
    /// .torrent changed, a piece layer not known yet): no data is to blame.
    pub fn verify(&self, piece: u32, data: &[u8]) -> Result<bool, StoreError> {
        match &self.merkle {
            Some(v2) => Ok(v2.verify(piece, data)?),
            None => Ok(<[u8; 20]>::from(Sha1::digest(data)) == self.piece_hash(piece)?),
        }
    }

    pub fn piece_count(&self) -> u32 {
        self.total_length.div_ceil(self.piece_length) as u32
    }

    pub fn piece_size(&self, piece: u32) -> u64 {
        let start = piece as u64 * self.piece_length;
        self.total_length
            .saturating_sub(start)
            .min(self.piece_length)
    }

    /// Where in a page a buffer for `piece` should start: so that the
    /// piece's longest run inside one file lies page-aligned the way that
    /// file is, and goes to disk with O_DIRECT without a copy. 0 for every
    /// piece of a single-file torrent.
    pub fn piece_phase(&self, piece: u32) -> usize {
        let start = piece as u64 * self.piece_length;
        let mut pos = 0u64;
        let mut best = (0u64, 0u64);
        for s in slices(
            &self.files,
            self.total_length,
            start,
            self.piece_size(piece),
        ) {
            if self.files[s.file].is_data() && s.len > best.0 {
                let phase =
                    (s.offset % DIRECT_ALIGN + DIRECT_ALIGN - pos % DIRECT_ALIGN) % DIRECT_ALIGN;
                best = (s.len, phase);
            }
            pos += s.len;
        }
        best.1 as usize
    }

    pub fn piece_hash(&self, piece: u32) -> Result<[u8; 20], StoreError> {
        Ok(self.hashes.get(piece)?)
    }
}

/// What a check of one piece found on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceCheck {
    Good,
    Bad,
    Missing,
}

pub struct Store {
    /// Every file is opened from here, never through a link (`confine`).
    /// Another process on the same files is kept out by the torrent's one
    /// lock (`ownership`), not by a descriptor per file: a torrent of
    /// 100,000 files must not hold 100,000 of them.
    root: Root,
    layout: Layout,
    writable: bool,
    /// This store's key in the process-wide cache of open files
    /// (`handles`), which closes them when there are too many.
    id: u64,
    /// SHA-1 of a full piece of zeros, for pieces that lie in holes.
    zero_hash: std::sync::OnceLock<[u8; 20]>,
    /// The same for v2: the merkle hash of a full piece of zeros inside a
    /// file larger than a piece.
    zero_root: std::sync::OnceLock<merkle::Hash>,
    /// Files left out of the download: never created. Their share of the
    /// pieces they have in common with wanted files goes to one sparse part
    /// file, at the bytes' offsets in the torrent.
    skipped: Vec<bool>,
    /// Relative to `root`.
    part_path: Option<PathBuf>,
    /// Serialises writes (two threads writing one file fight over its inode
    /// lock in the kernel, which spins and burns the other core), and holds
    /// what direct writes need.
    writer: Mutex<Writer>,
    /// What was hashed good for upload, so changed data is never served.
    upload: Mutex<UploadCheck>,
    /// The folder's lock to take before the first write (`lock_on_write`).
    relock: Mutex<Option<Relock>>,
}

/// A torrent complete at its start holds no lock on its folder (a thousand
/// seeding torrents would hold a thousand descriptors): it writes nothing
/// unless its data changed under it, and takes the lock then.
struct Relock {
    info_hash_hex: String,
    held: Option<ownership::Lock>,
}

/// A file's size and modification time: what changes when someone else
/// rewrites or truncates it.
type Stamp = (u64, Option<std::time::SystemTime>);

/// Seeded files can be edited, truncated or replaced behind our back; a
/// piece verified at start-up may no longer be what its hash says. A piece
/// is hashed before its first block is served, and again once one of its
/// files' size or mtime changed for a reason other than our own writes.
#[derive(Default)]
struct UploadCheck {
    /// Per file: the stamp last seen and how many outside changes were seen.
    files: HashMap<usize, (Stamp, u64)>,
    /// Per piece that hashed good: its files' change counts at that moment.
    pieces: HashMap<u32, Vec<u64>>,
}

/// O_DIRECT handles and the aligned buffer direct writes are copied into.
#[derive(Default)]
struct Writer {
    /// The first failed write (disk full, say): nothing is written after
    /// it, so at most one half-written piece is left for the next start-up
    /// check to reject, however many hashing jobs were in flight.
    failed: Option<String>,
    /// Cleared when the filesystem refuses O_DIRECT; plain writes from then on.
    direct_off: bool,
    /// Per file: the handle it was reopened from, and the O_DIRECT one.
    direct: HashMap<usize, (Arc<File>, File)>,
    bounce: Vec<u8>,
}

impl Writer {
    /// An O_DIRECT handle on the same file as `file` (reopened through
    /// /proc/self/fd, so no path is looked up again). Made again when the
    /// plain handle was, so both always write to the same file.
    fn direct(&mut self, i: usize, file: &Arc<File>) -> Option<&File> {
        if self.direct_off {
            return None;
        }
        if !self
            .direct
            .get(&i)
            .is_some_and(|(from, _)| Arc::ptr_eq(from, file))
        {
            use std::os::fd::AsRawFd;
            let opened = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
            match opened {
                Ok(f) => {
                    if self.direct.len() >= MAX_DIRECT_FILES {
                        self.direct.clear();
                    }
                    self.direct.insert(i, (file.clone(), f));
                }
                Err(e) => {
                    tracing::debug!("no direct writes: {e}");
                    self.direct_off = true;
                    return None;
                }
            }
        }
        self.direct.get(&i).map(|(_, f)| f)
    }

    /// Writes `data` at `offset` of file `i`: the 4 KiB-aligned middle with
    /// O_DIRECT when it is long enough, the rest through the page cache.
    fn write(&mut self, i: usize, file: &Arc<File>, data: &[u8], offset: u64) -> io::Result<()> {
        let end = offset + data.len() as u64;
        let a = offset.next_multiple_of(DIRECT_ALIGN);
        let b = end / DIRECT_ALIGN * DIRECT_ALIGN;
        if b < a.saturating_add(DIRECT_MIN) {
            return file.write_all_at(data, offset);
        }
        let mut bounce = std::mem::take(&mut self.bounce);
        let result = self.write_direct(i, file, data, offset, a..b, &mut bounce);
        self.bounce = bounce;
        result
    }

    fn write_direct(
        &mut self,
        i: usize,
        file: &Arc<File>,
        data: &[u8],
        offset: u64,
        middle: std::ops::Range<u64>,
        bounce: &mut Vec<u8>,
    ) -> io::Result<()> {
        let at = |pos: u64| (pos - offset) as usize;
        let Some(direct) = self.direct(i, file) else {
            return file.write_all_at(data, offset);
        };
        // Straight from `data` when it is aligned like the file; otherwise
        // a chunk at a time through the aligned buffer.
        let straight = data[at(middle.start)..]
            .as_ptr()
            .align_offset(DIRECT_ALIGN as usize)
            == 0;
        if !straight && bounce.is_empty() {
            *bounce = vec![0; DIRECT_CHUNK + DIRECT_ALIGN as usize];
        }
        let skip = bounce.as_ptr().align_offset(DIRECT_ALIGN as usize);
        let mut pos = middle.start;
        let mut refused = false;
        while pos < middle.end {
            let src = &data[at(pos)..at(middle.end)];
            let out = if straight {
                src
            } else {
                let n = src.len().min(DIRECT_CHUNK);
                let aligned = &mut bounce[skip..skip + n];
                aligned.copy_from_slice(&src[..n]);
                &*aligned
            };
            match direct.write_at(out, pos) {
                Ok(w) if w > 0 && (w as u64).is_multiple_of(DIRECT_ALIGN) => pos += w as u64,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    refused = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if refused {
            tracing::debug!("direct write refused; writing through the page cache");
            self.direct_off = true;
            self.direct.clear();
        }
        // Whatever is left (head, tail, a short or refused direct write).
        file.write_all_at(&data[..at(middle.start)], offset)?;
        file.write_all_at(&data[at(pos)..], pos)
    }
}

impl Store {
    /// A store for reading a folder the user named (verify, seed, create):
    /// links in it are followed. Missing files read as missing.
    pub fn open_read(layout: Layout, root: &Path) -> Store {
        Store::open_read_in(layout, Root::trusting(root))
    }

    /// A store for reading the folder `root`.
    pub fn open_read_in(layout: Layout, root: Root) -> Store {
        Store {
            root,
            layout,
            writable: false,
            id: handles::new_store_id(),
            zero_hash: Default::default(),
            zero_root: Default::default(),
            skipped: Vec::new(),
            part_path: None,
            writer: Mutex::default(),
            upload: Mutex::default(),
            relock: Mutex::default(),
        }
    }

    /// A store for downloading: creates folders and files on first write,
    /// and zero-length files right away.
    pub fn open_write(layout: Layout, root: &Path) -> Result<Store, StoreError> {
        Store::open_write_selected(layout, Root::at(root), None)
    }

    /// `open_write` into `root`, leaving out the files marked in `skip`
    /// (see [`Store::set_skipped`]), which are not created.
    pub fn open_write_selected(
        layout: Layout,
        root: Root,
        skip: Option<(Vec<bool>, PathBuf)>,
    ) -> Result<Store, StoreError> {
        let mut store = Store {
            root,
            layout,
            writable: true,
            id: handles::new_store_id(),
            zero_hash: Default::default(),
            zero_root: Default::default(),
            skipped: Vec::new(),
            part_path: None,
            writer: Mutex::default(),
            upload: Mutex::default(),
            relock: Mutex::default(),
        };
        if let Some((skipped, part)) = skip {
            store.set_skipped(skipped, part);
        }
        for (i, f) in store.layout.files.iter().enumerate() {
            if f.is_data() && !store.is_skipped(i) && f.length == 0 {
                // Made now (no piece ever writes it); its handle is let go
                // at once, so 100,000 empty files cost no descriptors.
                store.handle(i)?;
                handles::forget(store.id, i);
            }
        }
        Ok(store)
    }

    /// Leaves out the files marked in `skipped` (file selection): their
    /// bytes, where a wanted piece has some, live in `part` (a path
    /// relative to the store's folder) instead.
    pub fn set_skipped(&mut self, skipped: Vec<bool>, part: PathBuf) {
        self.skipped = skipped;
        self.part_path = Some(part);
    }

    fn is_skipped(&self, file: usize) -> bool {
        self.skipped.get(file).copied().unwrap_or(false)
    }

    /// Which handle holds a slice's bytes, and where in it.
    fn place(&self, s: &FileSlice) -> (usize, u64) {
        if self.is_skipped(s.file) {
            (PART, self.layout.files[s.file].offset + s.offset)
        } else {
            (s.file, s.offset)
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Where file `file` is, for messages.
    pub fn file_path(&self, file: usize) -> Result<PathBuf, StoreError> {
        let rel = &self.layout.files[file].path;
        safe_join(&self.root.path(), rel).ok_or_else(|| StoreError::UnsafePath(rel.clone()))
    }

    /// Whether any file of the torrent with data in it is on disk.
    pub fn any_file_on_disk(&self) -> bool {
        self.layout.files.iter().any(|f| {
            f.length > 0
                && self
                    .root
                    .metadata(&f.path)
                    .is_ok_and(|m| m.is_file() && m.len() > 0)
        })
    }

    fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |err| StoreError::Io {
            path: path.to_path_buf(),
            err,
        }
    }

    /// The open handle for file `i`, or None when reading and it does not exist.
    fn handle(&self, i: usize) -> Result<Option<Arc<File>>, StoreError> {
        if let Some(h) = handles::get(self.id, i) {
            return Ok(Some(h));
        }
        let (rel, length) = match (i, &self.part_path) {
            (PART, Some(part)) => (part.clone(), self.layout.total_length),
            (PART, None) => return Err(StoreError::BadPiece(u32::MAX)),
            _ => (
                self.layout.files[i].path.clone(),
                self.layout.files[i].length,
            ),
        };
        let path = || safe_join(&self.root.path(), &rel).unwrap_or_else(|| rel.clone());
        let mode = if self.writable {
            Mode::Write
        } else {
            Mode::Read
        };
        let file = match self.root.open(&rel, mode) {
            Ok(f) => f,
            Err(e) if !self.writable && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.open_error(&path(), e)),
        };
        // A folder opens read-only too; it is not the file.
        let md = file.metadata().map_err(Store::io_err(&path()))?;
        if !md.is_file() {
            return Err(StoreError::NotAFile(path()));
        }
        // Sparse pre-allocation: the file gets its final size at once,
        // without writing zeros. Never shrink what is there.
        if self.writable && md.len() < length {
            file.set_len(length).map_err(Store::io_err(&path()))?;
        }
        let file = Arc::new(file);
        handles::put(self.id, i, file.clone());
        Ok(Some(file))
    }

    fn open_error(&self, path: &Path, e: io::Error) -> StoreError {
        if confine::is_link_error(&e) {
            StoreError::Symlink(path.to_path_buf())
        } else if e.raw_os_error() == Some(libc::EISDIR) {
            StoreError::NotAFile(path.to_path_buf())
        } else {
            Store::io_err(path)(e)
        }
    }

    /// Takes the folder's lock (`ownership::Lock`) of torrent
    /// `info_hash_hex` before the first write, not now.
    pub fn lock_on_write(&self, info_hash_hex: String) {
        *self.relock.lock().unwrap_or_else(|p| p.into_inner()) = Some(Relock {
            info_hash_hex,
            held: None,
        });
    }

    fn take_lock(&self, piece: u32) -> Result<(), StoreError> {
        let mut relock = self.relock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = relock.as_mut().filter(|r| r.held.is_none()) {
            let lock = ownership::Lock::acquire(&self.root, &r.info_hash_hex)
                .map_err(|e| StoreError::NotWritten(piece, e.to_string()))?;
            r.held = Some(lock);
        }
        Ok(())
    }

    /// Closes this store's open files (they are opened again when needed).
    pub fn close_files(&self) {
        handles::forget_store(self.id);
    }

    fn slices(&self, start: u64, len: u64) -> Vec<FileSlice> {
        slices(&self.layout.files, self.layout.total_length, start, len)
    }

    /// Reads `buf.len()` bytes at torrent offset `start`. Returns false when
    /// a file is missing or too short (the data is not there).
    pub fn read_at(&self, start: u64, buf: &mut [u8]) -> Result<bool, StoreError> {
        let mut pos = 0usize;
        for s in self.slices(start, buf.len() as u64) {
            let out = &mut buf[pos..pos + s.len as usize];
            pos += s.len as usize;
            let f = &self.layout.files[s.file];
            if !f.is_data() {
                out.fill(0);
                continue;
            }
            let (key, offset) = self.place(&s);
            let Some(h) = self.handle(key)? else {
                return Ok(false);
            };
            if let Err(e) = h.read_exact_at(out, offset) {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return Ok(false);
                }
                return Err(Store::io_err(&self.file_path(s.file)?)(e));
            }
        }
        Ok(pos == buf.len())
    }

    /// Reads block bytes of a piece we have, for serving to a peer.
    pub fn read_block(&self, piece: u32, begin: u32, buf: &mut [u8]) -> Result<bool, StoreError> {
        let start = piece as u64 * self.layout.piece_length + begin as u64;
        self.read_at(start, buf)
    }

    /// Reads block bytes of a piece we have, for a peer, only if the piece
    /// still matches its hash: false when it no longer does (data changed,
    /// truncated or deleted on disk), and then nothing is in `buf` to send.
    /// A piece is hashed before its first block goes out and again after
    /// an outside change to one of its files; a block that reads short or
    /// whose files changed during the read is taken from a fresh hash
    /// check's buffer. (Two changes within one mtime tick that keep the
    /// size go unnoticed: the kernel's timestamps are that coarse.)
    pub fn read_block_for_upload(
        &self,
        piece: u32,
        begin: u32,
        buf: &mut [u8],
    ) -> Result<bool, StoreError> {
        if piece >= self.layout.piece_count() {
            return Err(StoreError::BadPiece(piece));
        }
        let files = self.piece_files(piece);
        let gens = self.file_changes(&files)?;
        let checked = self.upload_check().pieces.get(&piece) == Some(&gens);
        if checked && self.read_block(piece, begin, buf)? && self.file_changes(&files)? == gens {
            return Ok(true);
        }
        let gens = self.file_changes(&files)?;
        let mut data = Vec::new();
        let good = self.read_piece(piece, &mut data)? && self.layout.verify(piece, &data)?;
        let range = begin as usize..begin as usize + buf.len();
        let mut upload = self.upload_check();
        match data.get(range) {
            Some(block) if good => {
                buf.copy_from_slice(block);
                upload.pieces.insert(piece, gens);
                Ok(true)
            }
            _ => {
                upload.pieces.remove(&piece);
                Ok(false)
            }
        }
    }

    fn upload_check(&self) -> std::sync::MutexGuard<'_, UploadCheck> {
        self.upload.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The handles piece `piece`'s bytes live in: its data files, or the
    /// part file for files a selection left out (never create those).
    fn piece_files(&self, piece: u32) -> Vec<usize> {
        let start = piece as u64 * self.layout.piece_length;
        let mut keys: Vec<usize> = self
            .slices(start, self.layout.piece_size(piece))
            .iter()
            .filter(|s| self.layout.files[s.file].is_data())
            .map(|s| self.place(s).0)
            .collect();
        keys.dedup();
        keys
    }

    fn stamp(&self, file: usize) -> Result<Stamp, StoreError> {
        let Some(h) = self.handle(file)? else {
            return Ok((0, None));
        };
        let md = h.metadata().map_err(|e| match self.file_path(file) {
            Ok(p) => Store::io_err(&p)(e),
            Err(err) => err,
        })?;
        Ok((md.len(), md.modified().ok()))
    }

    /// Each file's count of outside changes, counting one more for a file
    /// whose stamp moved since last seen.
    fn file_changes(&self, files: &[usize]) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(files.len());
        for &f in files {
            let now = self.stamp(f)?;
            let mut upload = self.upload_check();
            let e = upload.files.entry(f).or_insert((now, 0));
            if e.0 != now {
                *e = (now, e.1 + 1);
            }
            out.push(e.1);
        }
        Ok(out)
    }

    /// After our own write: the new stamps are ours, not an outside
    /// change, and the piece just written was verified.
    fn note_own_write(&self, piece: u32) -> Result<(), StoreError> {
        let files = self.piece_files(piece);
        let mut gens = Vec::with_capacity(files.len());
        for &f in &files {
            let now = self.stamp(f)?;
            let mut upload = self.upload_check();
            let e = upload.files.entry(f).or_insert((now, 0));
            e.0 = now;
            gens.push(e.1);
        }
        self.upload_check().pieces.insert(piece, gens);
        Ok(())
    }

    /// Writes a whole, already verified piece.
    pub fn write_piece(&self, piece: u32, data: &[u8]) -> Result<(), StoreError> {
        if piece >= self.layout.piece_count() {
            return Err(StoreError::BadPiece(piece));
        }
        let start = piece as u64 * self.layout.piece_length;
        let mut pos = 0usize;
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &writer.failed {
            return Err(StoreError::NotWritten(piece, why.clone()));
        }
        self.take_lock(piece)?;
        for s in self.slices(start, data.len() as u64) {
            let chunk = &data[pos..pos + s.len as usize];
            pos += s.len as usize;
            if !self.layout.files[s.file].is_data() {
                continue;
            }
            let (key, offset) = self.place(&s);
            let written = self.handle(key).and_then(|h| {
                let Some(h) = h else { return Ok(()) };
                writer
                    .write(key, &h, chunk, offset)
                    .map_err(|e| match self.file_path(s.file) {
                        Ok(p) => Store::io_err(&p)(e),
                        Err(err) => err,
                    })
            });
            if let Err(e) = &written {
                writer.failed = Some(e.to_string());
                return written;
            }
        }
        drop(writer);
        // Only bookkeeping for uploads: at worst the piece is hashed again
        // before it is served.
        let _ = self.note_own_write(piece);
        Ok(())
    }

    /// Reads piece `piece` whole into `buf`; false when its data is missing.
    pub fn read_piece(&self, piece: u32, buf: &mut Vec<u8>) -> Result<bool, StoreError> {
        let len = self.layout.piece_size(piece) as usize;
        buf.resize(len, 0);
        self.read_at(piece as u64 * self.layout.piece_length, buf)
    }

    /// Hashes piece `piece` as it is on disk; None when its data is missing.
    pub fn hash_piece(
        &self,
        piece: u32,
        buf: &mut Vec<u8>,
    ) -> Result<Option<[u8; 20]>, StoreError> {
        let len = self.layout.piece_size(piece) as usize;
        buf.resize(len, 0);
        if !self.read_at(piece as u64 * self.layout.piece_length, buf)? {
            return Ok(None);
        }
        Ok(Some(Sha1::digest(&buf[..]).into()))
    }

    /// A piece that fails its hash but reads as all zeros is a hole never
    /// written (files are pre-allocated sparse), so it counts as missing.
    pub fn check_piece(&self, piece: u32, buf: &mut Vec<u8>) -> Result<PieceCheck, StoreError> {
        // A v2 file whose piece layer is not known yet (a magnet's
        // torrent): nothing can be counted as had before the layer comes.
        if let Some(v2) = &self.layout.merkle {
            if v2.file_of_piece(piece).is_some_and(|f| !f.checkable()) {
                return Ok(PieceCheck::Missing);
            }
        }
        if self.piece_is_hole(piece)? {
            // A hole reads as zeros: good only for a piece that is zeros.
            let len = self.layout.piece_size(piece);
            let zeros_good = match &self.layout.merkle {
                Some(v2) => {
                    let pl = self.layout.piece_length;
                    let full = v2.file_of_piece(piece).is_some_and(|f| {
                        f.length > pl && u64::from(piece - f.first_piece + 1) * pl <= f.length
                    });
                    let want = v2.expected(piece)?;
                    if full {
                        want == *self
                            .zero_root
                            .get_or_init(|| merkle::piece_hash(&vec![0; pl as usize], pl, pl + 1))
                    } else {
                        buf.clear();
                        buf.resize(len as usize, 0);
                        v2.verify(piece, buf)?
                    }
                }
                None => {
                    let zeros = if len == self.layout.piece_length {
                        *self.zero_hash.get_or_init(|| zero_hash(len))
                    } else {
                        zero_hash(len)
                    };
                    zeros == self.layout.piece_hash(piece)?
                }
            };
            return Ok(if zeros_good {
                PieceCheck::Good
            } else {
                PieceCheck::Missing
            });
        }
        if self.layout.merkle.is_some() {
            if !self.read_piece(piece, buf)? {
                return Ok(PieceCheck::Missing);
            }
            return Ok(if self.layout.verify(piece, buf)? {
                PieceCheck::Good
            } else if buf.iter().all(|b| *b == 0) {
                PieceCheck::Missing
            } else {
                PieceCheck::Bad
            });
        }
        Ok(match self.hash_piece(piece, buf)? {
            None => PieceCheck::Missing,
            Some(h) if h == self.layout.piece_hash(piece)? => PieceCheck::Good,
            Some(_) if buf.iter().all(|b| *b == 0) => PieceCheck::Missing,
            Some(_) => PieceCheck::Bad,
        })
    }

    /// Whether every byte of `piece` lies in holes of sparse files (or past
    /// their end): such a piece was never written, and is known missing
    /// without reading it. A restart over a 2 TB sparse file then costs a
    /// seek per piece, not 2 TB of hashing zeros.
    fn piece_is_hole(&self, piece: u32) -> Result<bool, StoreError> {
        use std::os::fd::AsRawFd;
        let start = piece as u64 * self.layout.piece_length;
        for s in self.slices(start, self.layout.piece_size(piece)) {
            if !self.layout.files[s.file].is_data() {
                continue;
            }
            let (key, offset) = self.place(&s);
            let Some(h) = self.handle(key)? else {
                return Ok(true);
            };
            // SAFETY: lseek on a descriptor we own; no memory is involved.
            let next = unsafe { libc::lseek(h.as_raw_fd(), offset as i64, libc::SEEK_DATA) };
            if next < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENXIO) {
                    continue; // no data from here to the end of the file
                }
                // A filesystem without SEEK_DATA: read it.
                return Ok(false);
            }
            if (next as u64) < offset + s.len {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs `f` over every piece on `threads` threads, each with its own
    /// buffer; `done` counts bytes, for a progress bar.
    pub(crate) fn par_pieces<T: Clone + Send>(
        &self,
        threads: usize,
        done: &AtomicU64,
        f: impl Fn(u32, &mut Vec<u8>) -> Result<T, StoreError> + Sync,
        init: T,
        cancel: &AtomicBool,
    ) -> Result<Vec<T>, StoreError> {
        let n = self.layout.piece_count();
        let next = AtomicU32::new(0);
        let results: Mutex<Vec<T>> = Mutex::new(vec![init; n as usize]);
        let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    let mut buf = Vec::with_capacity(self.layout.piece_length as usize);
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        if cancel.load(Ordering::Relaxed) {
                            let mut fe = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            fe.get_or_insert(StoreError::Interrupted);
                            break;
                        }
                        match f(i, &mut buf) {
                            Ok(h) => local.push((i, h)),
                            Err(e) => {
                                let mut fe = first_error.lock().unwrap_or_else(|p| p.into_inner());
                                fe.get_or_insert(e);
                                next.store(n, Ordering::Relaxed);
                                break;
                            }
                        }
                        done.fetch_add(self.layout.piece_size(i), Ordering::Relaxed);
                    }
                    let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                    for (i, h) in local {
                        r[i as usize] = h;
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Hashes every piece (for `create`); None where data is missing.
    pub fn hash_all(
        &self,
        threads: usize,
        done: &AtomicU64,
    ) -> Result<Vec<Option<[u8; 20]>>, StoreError> {
        let never = AtomicBool::new(false);
        self.par_pieces(
            threads,
            done,
            |i, buf| self.hash_piece(i, buf),
            None,
            &never,
        )
    }

    /// Checks every piece against the torrent's hashes.
    pub fn check_all(
        &self,
        threads: usize,
        done: &AtomicU64,
    ) -> Result<Vec<PieceCheck>, StoreError> {
        self.check_all_until(threads, done, &AtomicBool::new(false))
    }

    /// `check_all` that gives up with `StoreError::Interrupted` once
    /// `cancel` is set (Ctrl-C during the check of a big folder).
    pub fn check_all_until(
        &self,
        threads: usize,
        done: &AtomicU64,
        cancel: &AtomicBool,
    ) -> Result<Vec<PieceCheck>, StoreError> {
        self.par_pieces(
            threads,
            done,
            |i, buf| self.check_piece(i, buf),
            PieceCheck::Missing,
            cancel,
        )
    }
}

impl Drop for Store {
    /// A stopped torrent's files are closed at once, not when the cache
    /// gets round to them.
    fn drop(&mut self) {
        handles::forget_store(self.id);
    }
}

fn zero_hash(len: u64) -> [u8; 20] {
    let block = [0u8; 64 << 10];
    let mut h = Sha1::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    h.finalize().into()
}

/// Threads to hash with: all cores.
pub fn hash_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::NewTorrent;

    fn torrent(files: &[(&str, usize)], piece_length: u64, data: &[u8]) -> Metainfo {
        let pieces = data
            .chunks(piece_length as usize)
            .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
            .collect();
        let t = NewTorrent {
            name: "t".into(),
            files: Some(
                files
                    .iter()
                    .map(|(n, l)| (vec![n.to_string()], *l as u64))
                    .collect(),
            ),
            piece_length,
            pieces,
            ..Default::default()
        };
        Metainfo::from_bytes(&t.to_bytes()).unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 13) as u8).collect()
    }

    /// A file reopened (its handle evicted, the file deleted meanwhile)
    /// gets a new O_DIRECT handle too: direct writes must not go on into
    /// the old, deleted file while plain writes go to the new one.
    #[test]
    fn direct_handle_follows_a_reopened_file() {
        let piece = 1 << 20;
        let bytes = data(2 * piece);
        let m = torrent(&[("f", 2 * piece)], piece as u64, &bytes);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        let write = |p: usize| {
            let mut buf = PieceData::default();
            buf.set_len(piece, 0);
            buf.copy_from_slice(&bytes[p * piece..(p + 1) * piece]);
            store.write_piece(p as u32, &buf).unwrap();
        };
        write(0);
        let path = dir.path().join("t/f");
        std::fs::remove_file(&path).unwrap();
        store.close_files();
        write(1);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 2 * piece);
        assert!(
            on_disk[piece..] == bytes[piece..],
            "piece 1 is not in the new file"
        );
    }

    #[test]
    fn piece_data_is_placed_at_its_phase_and_reused() {
        let mut d = PieceData::default();
        assert!(d.is_empty());
        d.set_len(100_000, 0);
        assert_eq!(d.len(), 100_000);
        assert_eq!(d.as_ptr().align_offset(4096), 0);
        d[99_999] = 7;
        let at = d.as_ptr();
        d.set_len(5000, 0);
        assert_eq!(
            (d.len(), d.as_ptr()),
            (5000, at),
            "a smaller piece reuses it"
        );
        d.set_len(300_000, 4095);
        assert_eq!(d.as_ptr() as usize % 4096, 4095);
        assert_eq!(d.len(), 300_000);
        d[299_999] = 1;
    }

    /// With files of odd sizes, a piece's buffer is placed so that its
    /// longest run inside one file is aligned like that file.
    #[test]
    fn piece_phase_aligns_the_longest_run() {
        let piece = 1 << 20;
        let sizes = [("a", 10_737_418), ("b", 3), ("c", 2 * piece + 12_345)];
        let total: usize = sizes.iter().map(|s| s.1).sum();
        let m = torrent(&sizes, piece as u64, &data(total));
        let layout = Layout::from_metainfo(&m);
        let mut buf = PieceData::default();
        for p in 0..m.piece_count() {
            let mut at = 0u64;
            let mut run = (0u64, 0u64, 0u64);
            for s in m.piece_slices(p) {
                if s.len > run.0 {
                    run = (s.len, at, s.offset);
                }
                at += s.len;
            }
            buf.set_len(m.piece_size(p) as usize, layout.piece_phase(p));
            let addr = buf.as_ptr() as u64 + run.1;
            assert_eq!(addr % 4096, run.2 % 4096, "piece {p}");
        }
        let single = torrent(&[("x", 3 * piece)], piece as u64, &data(3 * piece));
        assert_eq!(Layout::from_metainfo(&single).piece_phase(1), 0);
    }

    /// Big pieces go to disk with O_DIRECT where they are 4 KiB-aligned in
    /// the file, through the page cache elsewhere; either way, from an
    /// aligned buffer or not, every byte lands where it belongs. Files of odd sizes put piece boundaries at
    /// every alignment, and pieces are written out of order.
    #[test]
    fn direct_and_buffered_writes_put_every_byte_in_place() {
        let piece = 1 << 20;
        let sizes = [
            ("a", 4096 * 70 + 5),
            ("b", 3 * piece + 4096 * 3),
            ("c", 1),
            ("d", piece / 2 + 777),
            ("e", 2 * piece),
        ];
        let total: usize = sizes.iter().map(|s| s.1).sum();
        let bytes = data(total);
        let m = torrent(&sizes, piece as u64, &bytes);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        let n = m.piece_count();
        // Even pieces from a page-aligned PieceData (written straight from
        // it where the file allows), odd ones from wherever the slice
        // happens to be (through the aligned bounce buffer).
        for p in (0..n).rev().chain(0..1) {
            let start = p as usize * piece;
            let end = (start + piece).min(total);
            if p % 2 == 0 {
                let mut buf = PieceData::default();
                buf.set_len(end - start, store.layout().piece_phase(p));
                buf.copy_from_slice(&bytes[start..end]);
                store.write_piece(p, &buf).unwrap();
            } else {
                store.write_piece(p, &bytes[start..end]).unwrap();
            }
        }
        let mut off = 0;
        for (name, len) in sizes {
            let on_disk = std::fs::read(dir.path().join("t").join(name)).unwrap();
            assert!(on_disk == bytes[off..off + len], "{name} differs");
            off += len;
        }
        let w = store.writer.lock().unwrap();
        let fs_has_direct = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"))
            .is_ok();
        assert_eq!(w.direct_off, !fs_has_direct);
        assert!(
            w.direct_off || w.direct.len() >= 2,
            "aligned runs of files a, b and e should have gone direct"
        );
        let mut buf = Vec::new();
        for p in 0..n {
            assert_eq!(store.check_piece(p, &mut buf).unwrap(), PieceCheck::Good);
        }
    }

    #[test]
    fn write_then_verify_with_spanning_and_empty_files() {
        let d = data(100);
        // boundary inside pieces, an empty file, a short last piece
        let m = torrent(&[("a", 30), ("empty", 0), ("b", 45), ("c", 25)], 32, &d);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        assert!(dir.path().join("t/empty").exists());
        for p in [3u32, 0, 2] {
            let s = p as usize * 32;
            store.write_piece(p, &d[s..(s + 32).min(100)]).unwrap();
        }
        let done = AtomicU64::new(0);
        let checks = store.check_all(2, &done).unwrap();
        // Piece 1 was never written: sparse zeros, so it is missing.
        assert_eq!(
            checks,
            vec![
                PieceCheck::Good,
                PieceCheck::Missing,
                PieceCheck::Good,
                PieceCheck::Good
            ]
        );
        // Garbage where it belongs is bad.
        std::fs::write(dir.path().join("t/b"), [1u8; 45]).unwrap();
        let mut buf = Vec::new();
        assert_eq!(store.check_piece(1, &mut buf).unwrap(), PieceCheck::Bad);
        for p in 0..3u32 {
            let s = p as usize * 32;
            store.write_piece(p, &d[s..s + 32]).unwrap();
        }
        assert_eq!(store.check_piece(1, &mut buf).unwrap(), PieceCheck::Good);
        let mut all = std::fs::read(dir.path().join("t/a")).unwrap();
        all.extend(std::fs::read(dir.path().join("t/b")).unwrap());
        all.extend(std::fs::read(dir.path().join("t/c")).unwrap());
        assert_eq!(all, d);
        let mut block = [0u8; 10];
        assert!(store.read_block(0, 25, &mut block).unwrap());
        assert_eq!(&block, &d[25..35]);
        assert!(matches!(
            store.write_piece(4, &[1]),
            Err(StoreError::BadPiece(4))
        ));
    }

    #[test]
    fn missing_files_read_as_missing() {
        let d = data(64);
        let m = torrent(&[("a", 32), ("b", 32)], 32, &d);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/a"), &d[..32]).unwrap();
        std::fs::write(dir.path().join("t/b"), &d[32..40]).unwrap(); // too short
        let store = Store::open_read(Layout::from_metainfo(&m), dir.path());
        let done = AtomicU64::new(0);
        assert_eq!(
            store.check_all(1, &done).unwrap(),
            vec![PieceCheck::Good, PieceCheck::Missing]
        );
        assert_eq!(done.load(Ordering::Relaxed), 64);
        assert!(!dir.path().join("t/c").exists());
    }

    #[test]
    fn refuses_planted_symlinks() {
        let d = data(64);
        let m = torrent(&[("a", 32), ("b", 32)], 32, &d);
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("t")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), dir.path().join("t/a")).unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        let err = store.write_piece(0, &d[..32]).unwrap_err();
        assert!(matches!(err, StoreError::Symlink(_)), "{err}");
        assert!(!outside.path().join("victim").exists());
        // A symlinked folder too.
        let dir2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir2.path().join("t")).unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir2.path()).unwrap();
        assert!(matches!(
            store.write_piece(1, &d[32..]),
            Err(StoreError::Symlink(_))
        ));
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }

    #[test]
    fn directory_in_place_of_file() {
        let d = data(32);
        let m = torrent(&[("a", 32)], 32, &d);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t/a")).unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        let err = store.write_piece(0, &d).unwrap_err();
        assert!(err.to_string().contains("t/a"), "{err}");
    }

    /// After one failed write nothing more is written, even to a file that
    /// would take it: the download is stopping, and every extra write could
    /// leave another half-written piece.
    /// A store told to lock on write holds no lock until it writes; then
    /// it takes the torrent's lock, and another holder of it stops the
    /// write. Its files are closed when it goes.
    #[test]
    fn the_folder_lock_is_taken_at_the_first_write() {
        let d = data(64);
        let m = torrent(&[("a", 32), ("b", 32)], 32, &d);
        let dir = tempfile::tempdir().unwrap();
        let hex = m.info_hash.hex();
        let lock = dir.path().join(format!(".shoal/{hex}.lock"));
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        store.lock_on_write(hex.clone());
        assert!(!lock.exists(), "no lock before a write");
        store.write_piece(0, &d[..32]).unwrap();
        assert!(lock.exists(), "locked by the first write");
        assert!(handles::get(store.id, 0).is_some());
        let id = store.id;
        drop(store);
        assert!(handles::get(id, 0).is_none(), "its files closed with it");
        assert!(!lock.exists(), "let go with the store");

        let other = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        other.lock_on_write(hex.clone());
        let root = confine::Root::at(dir.path());
        let held = ownership::Lock::acquire(&root, &hex).unwrap();
        let err = other.write_piece(1, &d[32..]).unwrap_err();
        assert!(matches!(err, StoreError::NotWritten(1, _)), "{err}");
        drop(held);
        other.write_piece(1, &d[32..]).unwrap();
    }

    #[test]
    fn no_writes_after_a_failed_one() {
        let d = data(64);
        let m = torrent(&[("a", 32), ("b", 32)], 32, &d);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t/a")).unwrap();
        let store = Store::open_write(Layout::from_metainfo(&m), dir.path()).unwrap();
        assert!(store.write_piece(0, &d[..32]).is_err());
        let err = store.write_piece(1, &d[32..]).unwrap_err();
        assert!(matches!(err, StoreError::NotWritten(1, _)), "{err}");
        assert!(
            err.to_string().contains("t/a"),
            "names the first failure: {err}"
        );
        assert!(
            !dir.path().join("t/b").exists()
                || std::fs::read(dir.path().join("t/b")).unwrap() != d[32..]
        );
    }
}
