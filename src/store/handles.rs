//! The open data files of every store in the process, in one LRU.
//!
//! A service holds a thousand torrents of up to thousands of files each,
//! under a descriptor limit of 1,024 that it shares with its sockets: a cap
//! per store would still let a thousand stores hold a thousand times that
//! cap. So every [`Store`](super::Store) opens its files through this one
//! cache, keyed by the store's id and the file's index, and the least
//! recently used handle is closed once [`MAX_OPEN_FILES`] are open (a read
//! or write in flight keeps its `Arc<File>` until it is done). A store
//! that goes away closes its handles at once.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

/// Data files open at once in the whole process.
pub const MAX_OPEN_FILES: usize = 128;

/// A least-recently-used map of bounded size (pure: no I/O).
pub struct Lru<K, V> {
    cap: usize,
    tick: u64,
    map: HashMap<K, (V, u64)>,
    /// Last use → key: the first entry is the one to evict.
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(cap: usize) -> Lru<K, V> {
        Lru {
            cap: cap.max(1),
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value of `k`, now the most recently used.
    pub fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, last) = self.map.get_mut(k)?;
        self.order.remove(last);
        *last = tick;
        self.order.insert(tick, k.clone());
        Some(v.clone())
    }

    /// Puts `k` in as the most recently used; returns what was evicted to
    /// make room (the least recently used), if anything.
    pub fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        self.remove(&k);
        let evicted = if self.map.len() >= self.cap {
            self.order
                .pop_first()
                .and_then(|(_, old)| self.map.remove(&old).map(|(v, _)| (old, v)))
        } else {
            None
        };
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.map.insert(k, (v, self.tick));
        evicted
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, last) = self.map.remove(k)?;
        self.order.remove(&last);
        Some(v)
    }

    /// Removes every entry whose key `drop` picks.
    pub fn remove_where(&mut self, drop: impl Fn(&K) -> bool) {
        let keys: Vec<K> = self.map.keys().filter(|k| drop(k)).cloned().collect();
        for k in keys {
            self.remove(&k);
        }
    }
}

/// (store id, file index).
type Key = (u64, usize);

fn cache() -> &'static Mutex<Lru<Key, Arc<File>>> {
    static CACHE: OnceLock<Mutex<Lru<Key, Arc<File>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Lru::new(MAX_OPEN_FILES)))
}

fn lock() -> std::sync::MutexGuard<'static, Lru<Key, Arc<File>>> {
    cache().lock().unwrap_or_else(|p| p.into_inner())
}

/// A new store's id.
pub fn new_store_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn get(store: u64, file: usize) -> Option<Arc<File>> {
    lock().get(&(store, file))
}

/// Keeps `handle` open for the store's next reads and writes; the handle
/// evicted for it is closed once nobody uses it (outside the lock).
pub fn put(store: u64, file: usize, handle: Arc<File>) {
    let evicted = lock().insert((store, file), handle);
    drop(evicted);
}

pub fn forget(store: u64, file: usize) {
    let gone = lock().remove(&(store, file));
    drop(gone);
}

/// Closes every handle of `store` (it is going away).
pub fn forget_store(store: u64) {
    lock().remove_where(|(s, _)| *s == store);
}

/// Handles open now, over all stores.
pub fn open_count() -> usize {
    lock().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut l = Lru::new(3);
        assert!(l.insert(1, "a").is_none());
        assert!(l.insert(2, "b").is_none());
        assert!(l.insert(3, "c").is_none());
        // 1 used again: 2 is now the oldest.
        assert_eq!(l.get(&1), Some("a"));
        assert_eq!(l.insert(4, "d"), Some((2, "b")));
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(&2), None);
        // Putting in a key already there replaces it, evicting nothing.
        assert!(l.insert(3, "C").is_none());
        assert_eq!(l.get(&3), Some("C"));
        assert_eq!(l.insert(5, "e"), Some((1, "a")));
        l.remove_where(|k| *k >= 4);
        assert_eq!(l.len(), 1);
        assert_eq!(l.remove(&3), Some("C"));
        assert!(l.is_empty());
        assert!(l.order.is_empty(), "no stale order entries");
    }

    #[test]
    fn never_more_than_its_cap_however_many_keys() {
        let mut l = Lru::new(8);
        for store in 0..1000u64 {
            for file in 0..20usize {
                l.insert((store, file), ());
                assert!(l.len() <= 8);
            }
        }
        assert_eq!(l.len(), 8);
        assert_eq!(l.order.len(), 8);
        // The last 8 inserted are the ones kept.
        assert!((12..20).all(|f| l.get(&(999, f)).is_some()));
    }
}
