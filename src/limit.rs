//! A token bucket for rate limits shared by all peers of a torrent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    bytes_per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> RateLimit {
        RateLimit {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `n` bytes from the bucket and says how long to wait before
    /// sending them. The bucket may go into debt, so a large batch is paid
    /// for by a wait rather than refused.
    pub fn reserve(&self, n: u64) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed = now.duration_since(st.1).as_secs_f64();
        // At most a tenth of a second of burst.
        let cap = self.bytes_per_sec / 10.0;
        st.0 = (st.0 + elapsed * self.bytes_per_sec).min(cap) - n as f64;
        st.1 = now;
        if st.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.0 / self.bytes_per_sec)
        }
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
}
