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
