//! Streaming readers and the pieces they need next: each reader of a
//! file (the service's `…/stream`) registers the piece it reads and how
//! far ahead it wants pieces soon, and the coordinator hands the picker
//! those pieces, nearest first, to ask for before any other (libtorrent's
//! `set_piece_deadline`). A reader that goes drops its window.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// At most this many pieces have a deadline at once, all readers together.
pub const MAX_DEADLINES: usize = 256;

/// One reader's window: pieces `piece..piece + ahead`, none at or past
/// `end` (the end of the file it reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub piece: u32,
    pub ahead: u32,
    pub end: u32,
}

/// The readers of one torrent, shared by its stream handlers and its
/// coordinator (across runs: a reader outlives a restart of the torrent).
#[derive(Debug, Default)]
pub struct Readers {
    list: Mutex<BTreeMap<u64, Window>>,
    next_id: AtomicU64,
    /// Bumped at every change, so the coordinator sees one cheaply.
    version: AtomicU64,
}

impl Readers {
    /// Registers a reader; it is dropped with the guard.
    pub fn add(self: &Arc<Self>, w: Window) -> ReaderGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, w);
        self.version.fetch_add(1, Ordering::Release);
        ReaderGuard {
            readers: self.clone(),
            id,
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn windows(&self) -> Vec<Window> {
        self.lock().values().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Window>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registered reader; dropping it removes its window.
#[derive(Debug)]
pub struct ReaderGuard {
    readers: Arc<Readers>,
    id: u64,
}

impl ReaderGuard {
    /// The reader is now at `piece`.
    pub fn move_to(&self, piece: u32) {
        let mut list = self.readers.lock();
        if let Some(w) = list.get_mut(&self.id) {
            if w.piece != piece {
                w.piece = piece;
                self.readers.version.fetch_add(1, Ordering::Release);
            }
        }
    }
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.readers.lock().remove(&self.id);
        self.readers.version.fetch_add(1, Ordering::Release);
    }
}

/// The pieces with a deadline, most urgent first: each reader's pieces
/// not had yet, nearest its position first, readers taking turns at each
/// distance; at most `max`, each once.
pub fn deadline_pieces(windows: &[Window], have: impl Fn(u32) -> bool, max: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let reach = windows.iter().map(|w| w.ahead).max().unwrap_or(0);
    for d in 0..reach {
        for w in windows {
            let Some(p) = w.piece.checked_add(d) else {
                continue;
            };
            if d >= w.ahead || p >= w.end || have(p) || out.contains(&p) {
                continue;
            }
            if out.len() >= max {
                return out;
            }
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(piece: u32, ahead: u32, end: u32) -> Window {
        Window { piece, ahead, end }
    }

    #[test]
    fn nearest_first_readers_take_turns() {
        let have = |p: u32| p == 11;
        let got = deadline_pieces(&[w(10, 4, 100), w(50, 2, 100)], have, 10);
        assert_eq!(got, vec![10, 50, 51, 12, 13]);
        // The end of the file cuts a window; overlapping ones count once.
        let got = deadline_pieces(&[w(10, 4, 12), w(9, 3, 100)], |_| false, 10);
        assert_eq!(got, vec![10, 9, 11]);
        // Capped.
        assert_eq!(
            deadline_pieces(&[w(0, 100, 100)], |_| false, 3),
            vec![0, 1, 2]
        );
        assert!(deadline_pieces(&[], |_| false, 3).is_empty());
        assert_eq!(
            deadline_pieces(&[w(u32::MAX, 3, u32::MAX)], |_| false, 3),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn guards_register_move_and_drop_windows() {
        let r = Arc::new(Readers::default());
        let v0 = r.version();
        let a = r.add(w(0, 4, 10));
        let b = r.add(w(5, 4, 10));
        assert_eq!(r.windows().len(), 2);
        let v1 = r.version();
        assert!(v1 > v0);
        a.move_to(0);
        assert_eq!(r.version(), v1, "no move, no change");
        a.move_to(3);
        assert!(r.version() > v1);
        assert_eq!(r.windows()[0].piece, 3);
        drop(a);
        assert_eq!(r.windows(), vec![w(5, 4, 10)]);
        drop(b);
        assert!(r.is_empty());
    }
}
