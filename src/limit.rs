//! A token bucket for rate limits shared by all peers of all torrents of
//! a session. The rate can change while peers use it (the service's
//! `PUT /api/limits`), so it is an atomic, 0 meaning no limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    bytes_per_sec: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit::with(Some(bytes_per_sec.max(1)))
    }

    /// A limit of `rate` bytes per second, or none.
    pub fn with(rate: Option<u64>) -> RateLimit {
        RateLimit {
            bytes_per_sec: AtomicU64::new(rate.unwrap_or(0)),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    pub fn rate(&self) -> Option<u64> {
        Some(self.bytes_per_sec.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// Changes the rate; None lifts the limit.
    pub fn set(&self, rate: Option<u64>) {
        self.bytes_per_sec
            .store(rate.map_or(0, |r| r.max(1)), Ordering::Relaxed);
    }

    /// Takes `n` bytes from the bucket and says how long to wait before
    /// sending them. The bucket may go into debt, so a large batch is paid
    /// for by a wait rather than refused.
    pub fn reserve(&self, n: u64) -> Duration {
        let rate = self.bytes_per_sec.load(Ordering::Relaxed);
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(st.1).as_secs_f64();
        // At most a tenth of a second of burst.
        let cap = rate / 10.0;
        st.0 = (st.0 + elapsed * rate).min(cap) - n as f64;
        st.1 = now;
        if st.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.0 / rate)
        }
    }
}

/// A cap on the connections of all torrents of a session together. Each
/// torrent keeps its own count in a cell it registered; the total is their
/// sum, so a torrent that ends (its cell dropped) frees its share at once.
#[derive(Default)]
pub struct ConnectionCap {
    /// 0: no cap.
    max: std::sync::atomic::AtomicUsize,
    cells: Mutex<Vec<std::sync::Weak<std::sync::atomic::AtomicUsize>>>,
}

impl ConnectionCap {
    pub fn new(max: Option<usize>) -> ConnectionCap {
        ConnectionCap {
            max: std::sync::atomic::AtomicUsize::new(max.unwrap_or(0)),
            cells: Mutex::default(),
        }
    }

    /// A torrent's cell: it stores its connection count there.
    pub fn register(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        let cell = std::sync::Arc::default();
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.retain(|c| c.strong_count() > 0);
        cells.push(std::sync::Arc::downgrade(&cell));
        cell
    }

    pub fn total(&self) -> usize {
        let cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells
            .iter()
            .filter_map(|c| c.upgrade())
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// No room for another connection.
    pub fn full(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        max > 0 && self.total() >= max
    }
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit::with(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_turns_into_wait() {
        let r = RateLimit::new(1000);
        let w = r.reserve(500);
        assert!(
            w > Duration::from_millis(390) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        let w2 = r.reserve(500);
        assert!(w2 > Duration::from_millis(890), "{w2:?}");
    }

    #[test]
    fn connection_cap_sums_live_torrents() {
        let cap = ConnectionCap::new(Some(10));
        let a = cap.register();
        let b = cap.register();
        a.store(6, Ordering::Relaxed);
        b.store(3, Ordering::Relaxed);
        assert!(!cap.full());
        b.store(4, Ordering::Relaxed);
        assert!(cap.full());
        drop(b);
        assert_eq!(cap.total(), 6);
        assert!(!cap.full());
        assert!(!ConnectionCap::new(None).full());
    }

    #[test]
    fn no_rate_means_no_wait_and_can_change() {
        let r = RateLimit::with(None);
        assert_eq!(r.reserve(1 << 30), Duration::ZERO);
        r.set(Some(1000));
        assert_eq!(r.rate(), Some(1000));
        assert!(r.reserve(2000) > Duration::from_millis(1500));
        r.set(None);
        assert_eq!(r.reserve(1 << 30), Duration::ZERO);
    }
}
