//! Files reached from a trusted folder without following links.
//!
//! A torrent's folder lives under a base folder (the service's
//! `--download-dir`, or the output folder of `shoal download`). Anything
//! below the base may be changed behind our back: a folder replaced by a
//! symbolic link to `/etc` after the torrent was added, or while the
//! service was stopped. Checking for links first and then opening by path
//! leaves a window in which the link can appear, so every open, create and
//! delete here walks from the base one component at a time with `openat`
//! and `O_NOFOLLOW`: a link anywhere below the base stops the walk
//! (`ELOOP`), whenever it was planted. The base itself is opened by path
//! and trusted (it is what the user named, links and all).
//!
//! `shoal seed`, `verify` and `create` only read a folder the user named;
//! a link there (a torrent's folder linked to the real one under another
//! name) is theirs to make, so a [`Root::trusting`] folder follows links
//! for reading. Nothing is ever written or deleted through one.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A folder: a trusted base, and a path below it walked without links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    base: PathBuf,
    sub: PathBuf,
    /// Reads follow links in folders (not a link as the file itself).
    trust_links: bool,
}

/// How to open a file (see [`Root::open`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Read,
    /// Read and write, created (with its folders) if missing.
    Write,
}

/// The error a link on the way gives: the one `O_NOFOLLOW` gives.
pub fn is_link_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

fn cstr(name: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The plain names of `rel`; anything else (`..`, `/`, `.`) is refused.
fn names(rel: &Path) -> io::Result<Vec<OsString>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n.to_os_string()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

/// `openat(dir, name)` with `flags | O_NOFOLLOW | O_CLOEXEC`.
fn open_at(dir: &OwnedFd, name: &CString, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is
    // a new descriptor we own.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o666 as libc::c_uint,
        )
    })?;
    // SAFETY: just opened, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A name for a temporary file beside `name` that no other writer, in
/// this process or another, picks at the same time.
pub fn temp_name(name: &std::ffi::CStr) -> CString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut v = name.to_bytes().to_vec();
    v.extend_from_slice(format!(".{}.{n}.tmp", std::process::id()).as_bytes());
    CString::new(v).unwrap_or_default()
}

/// Whether `name` in `dir` is a symbolic link (not followed).
fn is_link_at(dir: &OwnedFd, name: &CString) -> bool {
    // SAFETY: a zeroed stat buffer filled by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, name and buffer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The folder `name` inside `dir`, made if missing and `create`.
fn step(dir: &OwnedFd, name: &CString, create: bool) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    match open_at(dir, name, flags) {
        Ok(fd) => Ok(fd),
        // O_DIRECTORY | O_NOFOLLOW on a link says "not a directory".
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) && is_link_at(dir, name) => {
            Err(io::Error::from_raw_os_error(libc::ELOOP))
        }
        Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
            // SAFETY: valid descriptor and name.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(e);
                }
            }
            step(dir, name, false)
        }
        Err(e) => Err(e),
    }
}

impl Root {
    /// `dir` (absolute, or relative to `base`) reached from `base`; None
    /// when it does not lie under it.
    pub fn under(base: &Path, dir: &Path) -> Option<Root> {
        let full = base.join(dir);
        let sub = full.strip_prefix(base).ok()?;
        names(sub).ok()?;
        Some(Root {
            base: base.to_path_buf(),
            sub: sub.to_path_buf(),
            trust_links: false,
        })
    }

    /// `dir` itself as the trusted base (`shoal download -o DIR`).
    pub fn at(dir: &Path) -> Root {
        Root {
            base: dir.to_path_buf(),
            sub: PathBuf::new(),
            trust_links: false,
        }
    }

    /// `dir`, read as the user laid it out: links in folders below it are
    /// followed for reading (see the module's doc).
    pub fn trusting(dir: &Path) -> Root {
        Root {
            trust_links: true,
            ..Root::at(dir)
        }
    }

    /// The same folder, read following links (`shoal seed`).
    pub fn trust_links(self) -> Root {
        Root {
            trust_links: true,
            ..self
        }
    }

    /// The folder as a path, for messages and for tools that take paths.
    pub fn path(&self) -> PathBuf {
        if self.sub.as_os_str().is_empty() {
            self.base.clone()
        } else {
            self.base.join(&self.sub)
        }
    }

    /// A folder below this one, confined to the same base.
    pub fn join(&self, rel: &Path) -> Root {
        Root {
            sub: self.sub.join(rel),
            ..self.clone()
        }
    }

    /// Opens the folder `rel` (empty: this one) without following links,
    /// making missing folders when `create`.
    fn dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        let base = cstr(self.base.as_os_str())?;
        let open_base = || {
            // SAFETY: a NUL-terminated path. The base is trusted: links in
            // its own path are followed.
            check(unsafe {
                libc::open(
                    base.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            })
        };
        let fd = match open_base() {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.base)?;
                open_base()?
            }
            r => r?,
        };
        // SAFETY: just opened, owned by nobody else.
        let mut fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for name in names(&self.sub)?.into_iter().chain(names(rel)?) {
            fd = step(&fd, &cstr(&name)?, create)?;
        }
        Ok(fd)
    }

    /// The folder holding `rel` and `rel`'s last name.
    fn parent(&self, rel: &Path, create: bool) -> io::Result<(OwnedFd, CString)> {
        let mut parts = names(rel)?;
        let Some(last) = parts.pop() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty file name",
            ));
        };
        let dir: PathBuf = parts.iter().collect();
        Ok((self.dir(&dir, create)?, cstr(&last)?))
    }

    /// Creates this folder and `rel` below it (empty: this one).
    pub fn create_dirs(&self, rel: &Path) -> io::Result<()> {
        self.dir(rel, true).map(drop)
    }

    /// Opens the file `rel`: for reading, or for reading and writing
    /// (created with its folders when missing). A link as the file or on
    /// the way to it is refused with `ELOOP` (see [`is_link_error`]).
    pub fn open(&self, rel: &Path, mode: Mode) -> io::Result<File> {
        if self.trust_links && mode == Mode::Read {
            use std::os::unix::fs::OpenOptionsExt;
            names(rel)?;
            return std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(self.path().join(rel));
        }
        let (dir, name) = self.parent(rel, mode == Mode::Write)?;
        let flags = match mode {
            Mode::Read => libc::O_RDONLY,
            Mode::Write => libc::O_RDWR | libc::O_CREAT,
        };
        let fd = open_at(&dir, &name, flags)?;
        Ok(File::from(fd))
    }

    /// What is at `rel`, not following a link there or on the way.
    pub fn metadata(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        if self.trust_links {
            names(rel)?;
            return std::fs::symlink_metadata(self.path().join(rel));
        }
        if rel.as_os_str().is_empty() {
            return File::from(self.dir(rel, false)?).metadata();
        }
        let (dir, name) = self.parent(rel, false)?;
        // O_PATH opens anything (a link itself, with O_NOFOLLOW) for fstat.
        let fd = open_at(&dir, &name, libc::O_PATH)?;
        File::from(fd).metadata()
    }

    /// Removes the file (or link) `rel`; never anything a link points to.
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel, false)?;
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
    }

    /// Removes the empty folder `rel`.
    pub fn remove_dir(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent(rel, false)?;
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
            .map(drop)
    }

    /// Replaces the small file `rel` whole: written to a temporary file
    /// beside it, synced, renamed over it, and the folder synced, so a
    /// crash leaves the old file or the new one, never half of one.
    pub fn replace(&self, rel: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let (dir, name) = self.parent(rel, true)?;
        let tmp = temp_name(&name);
        let fd = open_at(&dir, &tmp, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)?;
        let mut f = File::from(fd);
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        // SAFETY: valid descriptors and names.
        let renamed = written.and_then(|()| {
            check(unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                )
            })
        });
        if let Err(e) = renamed {
            // SAFETY: valid descriptor and name.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
            return Err(e);
        }
        File::from(dir).sync_all()
    }

    /// The names in the folder `rel`.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let dir = self.dir(rel, false)?;
        // Read through /proc/self/fd: the descriptor already stands for
        // the folder, so no path is looked up again.
        let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
        Ok(entries.flatten().map(|e| e.file_name()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    #[test]
    fn files_are_made_read_and_removed_below_the_base() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::under(tmp.path(), Path::new("dl/t")).unwrap();
        assert_eq!(root.path(), tmp.path().join("dl/t"));
        let mut f = root.open(Path::new("a/b/c.bin"), Mode::Write).unwrap();
        f.write_all(b"hello").unwrap();
        let mut s = String::new();
        root.open(Path::new("a/b/c.bin"), Mode::Read)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        assert!(root.metadata(Path::new("a/b/c.bin")).unwrap().is_file());
        assert_eq!(root.list(Path::new("a/b")).unwrap(), vec!["c.bin"]);
        root.remove_file(Path::new("a/b/c.bin")).unwrap();
        root.remove_dir(Path::new("a/b")).unwrap();
        assert!(!tmp.path().join("dl/t/a/b").exists());
        assert!(Root::under(tmp.path(), Path::new("../x")).is_none());
        assert!(Root::under(tmp.path(), Path::new("/etc")).is_none());
        assert!(root.open(Path::new("../x"), Mode::Write).is_err());
    }

    /// A link anywhere below the base, as the file or as a folder on the
    /// way, stops every operation; nothing outside is made, read or removed.
    #[test]
    fn links_below_the_base_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("sub/victim"), b"keep").unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("t")).unwrap();
        symlink(&outside, base.join("t/sub_link")).unwrap();
        symlink(&outside, base.join("folder")).unwrap();
        symlink(outside.join("sub/victim"), base.join("t/file_link")).unwrap();
        let t = Root::under(&base, Path::new("t")).unwrap();
        let through_folder = Root::under(&base, Path::new("folder")).unwrap();
        for e in [
            t.open(Path::new("sub_link/sub/victim"), Mode::Write)
                .unwrap_err(),
            t.open(Path::new("sub_link/new"), Mode::Write).unwrap_err(),
            t.open(Path::new("file_link"), Mode::Write).unwrap_err(),
            t.open(Path::new("file_link"), Mode::Read).unwrap_err(),
            t.remove_file(Path::new("sub_link/sub/victim")).unwrap_err(),
            t.metadata(Path::new("sub_link/sub/victim")).unwrap_err(),
            through_folder
                .open(Path::new("sub/victim"), Mode::Read)
                .unwrap_err(),
            through_folder.create_dirs(Path::new("x")).unwrap_err(),
            through_folder
                .remove_file(Path::new("sub/victim"))
                .unwrap_err(),
        ] {
            assert!(is_link_error(&e), "{e}");
        }
        // The link itself is what is removed, never its target.
        assert!(t.metadata(Path::new("file_link")).unwrap().is_symlink());
        t.remove_file(Path::new("file_link")).unwrap();
        assert_eq!(std::fs::read(outside.join("sub/victim")).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        // The base itself may be a link: it is what the user named.
        let linked_base = tmp.path().join("base_link");
        symlink(&base, &linked_base).unwrap();
        Root::at(&linked_base)
            .open(Path::new("t/ok"), Mode::Write)
            .unwrap();
        assert!(base.join("t/ok").is_file());
        // A trusting root reads through a linked folder, never writes.
        let trusting = Root::trusting(&base);
        let mut s = String::new();
        trusting
            .open(Path::new("folder/sub/victim"), Mode::Read)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "keep");
        let e = trusting
            .open(Path::new("folder/sub/victim"), Mode::Write)
            .unwrap_err();
        assert!(is_link_error(&e), "{e}");
    }
}
