//! Transfer rates: the smoothed per-second one the choker and queue
//! depths use, and the windowed one people see.

use std::collections::VecDeque;

/// Overall rates, for people: bytes moved in the last [`WINDOW`] seconds
/// divided by the time they span. It falls to 0 once nothing moved for a
/// whole window, and a burst shows at once (an average that decays by a
/// factor each second lags both ways).
pub(super) struct WindowRate {
    /// (seconds since start, counter), oldest first, one per tick.
    samples: VecDeque<(f64, u64)>,
}

const WINDOW: f64 = 5.0;

impl WindowRate {
    pub(super) fn new() -> WindowRate {
        WindowRate {
            samples: VecDeque::new(),
        }
    }

    pub(super) fn update(&mut self, now: f64, counter: u64) {
        self.samples.push_back((now, counter));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now - t > WINDOW + 1e-6)
        {
            self.samples.pop_front();
        }
    }

    pub(super) fn get(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                (c1.saturating_sub(*c0) as f64 / (t1 - t0)) as u64
            }
            _ => 0,
        }
    }
}

/// A rate for decisions: an exponential moving average over per-second
/// samples of a byte counter.
pub(super) struct Rate {
    last: u64,
    value: f64,
}

impl Rate {
    pub(super) fn new() -> Rate {
        Rate {
            last: 0,
            value: 0.0,
        }
    }

    pub(super) fn update(&mut self, counter: u64, secs: f64) {
        let delta = counter.saturating_sub(self.last) as f64 / secs.max(0.001);
        self.last = counter;
        self.value = self.value * 0.6 + delta * 0.4;
    }

    pub(super) fn get(&self) -> u64 {
        self.value as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rate_follows_the_last_seconds() {
        let mut r = WindowRate::new();
        assert_eq!(r.get(), 0);
        r.update(0.0, 0);
        // 15 MiB in one second shows at once, not as a fraction of it.
        r.update(1.0, 15 << 20);
        assert_eq!(r.get(), 15 << 20);
        for t in 2..=6 {
            r.update(t as f64, 15 << 20);
        }
        // Nothing for a whole window: 0, not a decaying tail.
        r.update(7.0, 15 << 20);
        assert_eq!(r.get(), 0);
        r.update(8.0, (15 << 20) + 1000);
        assert_eq!(r.get(), 1000 / 5);
    }

    #[test]
    fn rate_smooths_per_second_samples() {
        let mut r = Rate::new();
        r.update(1000, 1.0);
        assert_eq!(r.get(), 400);
        r.update(2000, 1.0);
        assert_eq!(r.get(), 640);
        // Idle: decays, never negative.
        r.update(2000, 1.0);
        assert_eq!(r.get(), 384);
    }
}
