//! LEDBAT (RFC 6817, BEP 29): a "less than best effort" controller that
//! keeps the queue it builds at the bottleneck near a target delay, so
//! that a bulk upload over uTP leaves room for everything else on the
//! same link (TCP flows, a video call, a browser).
//!
//! The sender learns the one-way delay of its packets from the peer: each
//! packet carries `timestamp_difference_microseconds`, the peer's clock at
//! receipt minus our timestamp of the last packet it got. The two clocks
//! are unrelated, so a single value means nothing; the *base delay*, the
//! smallest value seen over the last minutes, stands for the path without
//! a queue, and `current - base` is the queuing delay our packets met.
//!
//! The window then moves in proportion to how far that delay is from the
//! target. Below it: `cwnd += GAIN * (target - queuing) / target * acked *
//! MSS / cwnd` (RFC 6817: at most one MSS per round trip at GAIN 1, never
//! faster than slow start). Above it the window shrinks by `(queuing /
//! target - 1)` of itself per round trip, at most by half (LEDBAT++'s
//! multiplicative decrease), so it makes room for other traffic within a
//! few round trips rather than RFC 6817's one MSS per round trip. Loss
//! halves the window (at most once per round trip), a retransmission
//! timeout restarts slow start from the minimum window, as TCP does.

use std::time::{Duration, Instant};

use crate::rtte::RttEstimator;

use super::CongestionController;

/// The queuing delay LEDBAT aims for (RFC 6817 says at most 100 ms; BEP 29
/// and libutp use 100 ms).
pub const TARGET: Duration = Duration::from_millis(100);
/// Window change per round trip at the largest distance from the target,
/// in MSS (RFC 6817: GAIN at most 1).
const GAIN: f64 = 1.0;
/// The base delay is the minimum over this many buckets of [`BASE_BUCKET`]
/// (so over the last one to two minutes): long enough to see an empty
/// queue now and then, short enough to follow a route change.
const BASE_BUCKETS: usize = 2;
const BASE_BUCKET: Duration = Duration::from_secs(60);
/// The current delay is the minimum of the last few samples, which filters
/// out one-off spikes (a delayed ACK, a scheduling hiccup) without hiding
/// a queue that really grew.
const CURRENT_SAMPLES: usize = 4;
/// The window never goes below this many segments (RFC 6817 MIN_CWND).
const MIN_CWND: f64 = 2.0;
/// Slow start ends once the queuing delay passes this share of the target.
const SLOW_START_EXIT: f64 = 0.9;

/// `a` is before `b` on a clock that wraps at 2^32 microseconds.
fn wrapping_less(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Delays {
    /// Minimum of each bucket, newest last; None until it has a sample.
    base: [Option<u32>; BASE_BUCKETS],
    bucket_started: Option<Instant>,
    current: [Option<u32>; CURRENT_SAMPLES],
    next: usize,
}

impl Delays {
    fn new() -> Delays {
        Delays {
            base: [None; BASE_BUCKETS],
            bucket_started: None,
            current: [None; CURRENT_SAMPLES],
            next: 0,
        }
    }

    fn add(&mut self, now: Instant, sample: u32) {
        match self.bucket_started {
            Some(t) if now.saturating_duration_since(t) < BASE_BUCKET => {}
            Some(_) => {
                self.base.rotate_left(1);
                self.base[BASE_BUCKETS - 1] = None;
                self.bucket_started = Some(now);
            }
            None => self.bucket_started = Some(now),
        }
        let last = &mut self.base[BASE_BUCKETS - 1];
        if last.is_none_or(|b| wrapping_less(sample, b)) {
            *last = Some(sample);
        }
        self.current[self.next] = Some(sample);
        self.next = (self.next + 1) % CURRENT_SAMPLES;
    }

    fn min(values: &[Option<u32>]) -> Option<u32> {
        values
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| if wrapping_less(b, a) { b } else { a })
    }

    /// How long our packets waited in queues lately, in microseconds;
    /// None before the first sample.
    fn queuing(&self) -> Option<u32> {
        let base = Self::min(&self.base)?;
        let current = Self::min(&self.current)?;
        // The base is the minimum, so only a wrap or a clock step could
        // put the current delay below it: count that as no queue.
        Some(if wrapping_less(current, base) {
            0
        } else {
            current.wrapping_sub(base)
        })
    }
}

#[derive(Clone, Copy)]
pub struct Ledbat {
    /// Congestion window in bytes.
    cwnd: f64,
    ssthresh: f64,
    slow_start: bool,
    mss: usize,
    /// The peer's receive window, in bytes.
    rwnd: f64,
    delays: Delays,
    target_us: f64,
    /// When the window was last halved for a loss: at most once per RTT.
    last_decrease: Option<Instant>,
    rtt: Duration,
}

impl core::fmt::Debug for Ledbat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ledbat:cwnd={},slow_start={},queuing_us={:?},mss={}",
            self.window(),
            self.slow_start,
            self.queuing_delay(),
            self.mss
        )
    }
}

impl PartialEq for Ledbat {
    fn eq(&self, other: &Self) -> bool {
        self.cwnd == other.cwnd && self.ssthresh == other.ssthresh
    }
}

impl Ledbat {
    pub fn new(mss: usize) -> Ledbat {
        Ledbat::with_target(mss, TARGET)
    }

    pub fn with_target(mss: usize, target: Duration) -> Ledbat {
        Ledbat {
            cwnd: MIN_CWND * mss as f64,
            ssthresh: f64::INFINITY,
            slow_start: true,
            mss,
            rwnd: f64::INFINITY,
            delays: Delays::new(),
            target_us: target.as_micros().max(1) as f64,
            last_decrease: None,
            rtt: Duration::from_millis(300),
        }
    }

    /// The queuing delay the last samples show, if any arrived yet.
    pub fn queuing_delay(&self) -> Option<Duration> {
        self.delays
            .queuing()
            .map(|us| Duration::from_micros(us as u64))
    }

    #[cfg(test)]
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    fn min_cwnd(&self) -> f64 {
        MIN_CWND * self.mss as f64
    }

    /// Halves the window for a loss, once per round trip.
    fn halve(&mut self, now: Instant) {
        let recent = self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < self.rtt);
        self.slow_start = false;
        if recent {
            return;
        }
        self.last_decrease = Some(now);
        self.cwnd = (self.cwnd / 2.0).max(self.min_cwnd());
        self.ssthresh = self.cwnd;
    }
}

impl CongestionController for Ledbat {
    fn window(&self) -> usize {
        self.cwnd.max(self.min_cwnd()).min(self.rwnd) as usize
    }

    fn sshthresh(&self) -> usize {
        if self.ssthresh.is_finite() {
            self.ssthresh as usize
        } else {
            usize::MAX
        }
    }

    fn set_mss(&mut self, mss: usize) {
        self.mss = mss.max(1);
    }

    fn smss(&self) -> usize {
        self.mss
    }

    fn on_recovered(&mut self, new_cwnd_bytes: usize, new_sshthresh: usize) {
        self.cwnd = (new_cwnd_bytes as f64).min(self.rwnd).max(self.min_cwnd());
        self.ssthresh = new_sshthresh as f64;
    }

    fn on_delay_sample(&mut self, now: Instant, delay_us: u32) {
        // Zero is what a peer sends before it has received anything.
        if delay_us != 0 {
            self.delays.add(now, delay_us);
        }
    }

    fn on_ack(&mut self, _now: Instant, len: usize, rtt: &RttEstimator) {
        self.rtt = rtt.roundtrip_time();
        if len == 0 {
            return;
        }
        let acked = len as f64;
        // Without a delay sample yet (a peer that sends none), LEDBAT has
        // nothing to go by: grow as at the target, by the slow-start rule.
        let queuing = self.delays.queuing().unwrap_or(0) as f64;
        if self.slow_start {
            if queuing > SLOW_START_EXIT * self.target_us || self.cwnd >= self.ssthresh {
                self.slow_start = false;
                self.ssthresh = self.cwnd;
            } else {
                self.cwnd += acked;
            }
        }
        if !self.slow_start {
            let mss = self.mss as f64;
            let grow = GAIN * acked * mss / self.cwnd.max(mss);
            let change = if queuing <= self.target_us {
                // Below the target: RFC 6817's linear growth, in
                // proportion to how far below it we are.
                grow * (self.target_us - queuing) / self.target_us
            } else {
                // Above it: LEDBAT++'s multiplicative decrease (draft-irtf-
                // iccrg-ledbat-plus-plus), in proportion to how far above it
                // we are and to the window, at most half the window per RTT:
                // RFC 6817's one MSS per RTT takes tens of seconds to make
                // room for a TCP flow on a slow uplink.
                (grow - (queuing / self.target_us - 1.0) * acked).max(-acked / 2.0)
            };
            // Never faster than slow start.
            self.cwnd += change.min(acked);
        }
        self.cwnd = self.cwnd.min(self.rwnd).max(self.min_cwnd());
    }

    /// As TCP: slow start again from the smallest window (RFC 6817 says
    /// one segment; two is our floor, as for every other case).
    fn on_retransmission_timeout(&mut self, now: Instant) {
        self.ssthresh = (self.cwnd / 2.0).max(self.min_cwnd());
        self.cwnd = self.min_cwnd();
        self.slow_start = true;
        self.last_decrease = Some(now);
    }

    fn on_enter_recovery(&mut self, now: Instant) {
        self.halve(now);
    }

    fn set_remote_window(&mut self, win: usize) {
        self.rwnd = win as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1400;

    fn rtte(rtt_ms: u64) -> RttEstimator {
        let mut r = RttEstimator::default();
        r.sample(Duration::from_millis(rtt_ms));
        r
    }

    /// A sender on a path of 20 ms one-way delay (and round trip, for
    /// simplicity), whose peer's clock is `offset` ahead: runs `rounds`
    /// round trips, each acking a full window with the queuing delay
    /// `queue(round)` ms on top of the base.
    fn run(
        c: &mut Ledbat,
        start: Instant,
        rounds: u32,
        offset: u32,
        queue: impl Fn(u32) -> u32,
    ) -> Instant {
        let r = rtte(20);
        let mut now = start;
        for i in 0..rounds {
            now += Duration::from_millis(20);
            let sample = offset.wrapping_add(20_000).wrapping_add(queue(i) * 1000);
            let segments = (c.window() / MSS).max(1);
            for _ in 0..segments {
                c.on_delay_sample(now, sample);
                c.on_ack(now, MSS, &r);
            }
        }
        now
    }

    fn fresh() -> Ledbat {
        let mut c = Ledbat::new(MSS);
        c.set_remote_window(16 << 20);
        c
    }

    #[test]
    fn grows_while_the_queue_stays_empty() {
        let mut c = fresh();
        let start = Instant::now();
        let before = c.window();
        run(&mut c, start, 10, 7, |_| 0);
        assert!(c.in_slow_start());
        assert!(c.window() > 100 * before, "{:?}", c);
        assert_eq!(c.queuing_delay(), Some(Duration::ZERO));
    }

    #[test]
    fn slow_start_ends_near_the_target_and_the_window_shrinks_above_it() {
        let mut c = fresh();
        let start = Instant::now();
        // The queue grows 10 ms per round trip.
        let now = run(&mut c, start, 9, 0, |i| i * 10);
        assert!(c.in_slow_start(), "{c:?}");
        let now = run(&mut c, now, 2, 0, |_| 95);
        assert!(!c.in_slow_start(), "{c:?}");
        // Far above the target (4 × the target): the window halves every
        // round trip, never more, down to the minimum of two segments.
        let mut last = c.window();
        let mut t = now;
        for _ in 0..30 {
            t = run(&mut c, t, 1, 0, |_| 400);
            assert!(c.window() <= last, "{} after {last}", c.window());
            assert!(
                2 * c.window() + 2 * MSS >= last,
                "{} after {last}",
                c.window()
            );
            last = c.window();
        }
        assert_eq!(c.window(), 2 * MSS);
        // Just above it (110 ms): about a tenth of the window per round trip.
        let mut d = fresh();
        let t = run(&mut d, now, 8, 0, |_| 0);
        let t = run(&mut d, t, 1, 0, |_| 95);
        assert!(!d.in_slow_start());
        let before = d.window();
        run(&mut d, t, 1, 0, |_| 110);
        let fell = before - d.window();
        assert!(
            fell * 20 > before && fell * 5 < before,
            "fell {fell} of {before}"
        );
        assert_eq!(c.queuing_delay(), Some(Duration::from_millis(400)));
    }

    #[test]
    fn settles_where_the_queue_meets_the_target() {
        let mut c = fresh();
        let start = Instant::now();
        // The path without a queue, seen once: the base.
        c.on_delay_sample(start, 20_000);
        let now = run(&mut c, start, 30, 0, |_| 150);
        let low = c.window();
        assert_eq!(low, 2 * MSS);
        // Below the target it grows by at most a segment per round trip
        // (GAIN 1), proportionally less as the queue nears it.
        let now = run(&mut c, now, 20, 0, |_| 0);
        let grown = c.window() - low;
        assert!(grown > 10 * MSS && grown <= 20 * MSS, "grew {grown}");
        let before = c.window();
        run(&mut c, now, 20, 0, |_| 50);
        let half = c.window() - before;
        assert!(
            half * 10 > grown * 4 && half * 10 < grown * 6,
            "grew {half} at half the distance, {grown} at the whole"
        );
        // At the target exactly: no change (once the filter holds only
        // samples at the target).
        for _ in 0..CURRENT_SAMPLES {
            c.on_delay_sample(now, 20_000 + 100_000);
        }
        let at = c.window();
        run(&mut c, now, 10, 0, |_| 100);
        assert_eq!(c.window(), at);
    }

    #[test]
    fn the_clock_offset_and_its_wrap_do_not_matter() {
        for offset in [0u32, 123_456_789, u32::MAX - 30_000, u32::MAX - 90_000] {
            let mut c = fresh();
            let now = run(&mut c, Instant::now(), 20, offset, |_| 0);
            assert_eq!(c.queuing_delay(), Some(Duration::ZERO), "offset {offset}");
            run(&mut c, now, 1, offset, |_| 250);
            assert_eq!(
                c.queuing_delay(),
                Some(Duration::from_millis(250)),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn one_spike_is_filtered_a_lasting_queue_is_not() {
        let mut c = fresh();
        let r = rtte(100);
        let now = run(&mut c, Instant::now(), 5, 0, |_| 0);
        c.on_delay_sample(now, 20_000 + 300_000);
        assert_eq!(c.queuing_delay(), Some(Duration::ZERO));
        for _ in 0..CURRENT_SAMPLES {
            c.on_delay_sample(now, 20_000 + 300_000);
        }
        assert_eq!(c.queuing_delay(), Some(Duration::from_millis(300)));
        let w = c.window();
        c.on_ack(now, MSS, &r);
        assert!(c.window() < w);
    }

    #[test]
    fn the_base_forgets_an_old_minimum_after_two_minutes() {
        let mut c = fresh();
        let start = Instant::now();
        c.on_delay_sample(start, 10_000);
        // The path gets 50 ms longer for good (a route change).
        for s in 1..=200u64 {
            c.on_delay_sample(start + Duration::from_secs(s), 60_000);
        }
        assert_eq!(c.queuing_delay(), Some(Duration::ZERO));
        // Before that, the old minimum still counted.
        let mut d = fresh();
        d.on_delay_sample(start, 10_000);
        for s in 1..=CURRENT_SAMPLES as u64 {
            d.on_delay_sample(start + Duration::from_secs(30 + s), 60_000);
        }
        assert_eq!(d.queuing_delay(), Some(Duration::from_millis(50)));
    }

    #[test]
    fn loss_halves_once_per_round_trip_and_timeout_drops_to_one_segment() {
        let mut c = fresh();
        let now = run(&mut c, Instant::now(), 8, 0, |_| 0);
        let w = c.window();
        c.on_enter_recovery(now);
        assert_eq!(c.window(), w / 2);
        assert!(!c.in_slow_start());
        // A second loss within the same round trip does not halve again.
        c.on_enter_recovery(now + Duration::from_millis(10));
        assert_eq!(c.window(), w / 2);
        c.on_enter_recovery(now + Duration::from_millis(200));
        assert_eq!(c.window(), w / 4);
        c.on_retransmission_timeout(now + Duration::from_millis(400));
        assert_eq!(c.window(), 2 * MSS, "never below the minimum");
        assert_eq!(c.sshthresh(), (w / 8).max(2 * MSS));
        assert!(c.in_slow_start());
    }

    #[test]
    fn never_grows_faster_than_slow_start_nor_past_the_peer_window() {
        let mut c = fresh();
        let r = rtte(50);
        let now = Instant::now();
        c.on_delay_sample(now, 5);
        for _ in 0..100 {
            let w = c.window();
            c.on_ack(now, MSS, &r);
            assert!(c.window() <= w + MSS);
        }
        c.set_remote_window(10 * MSS);
        c.on_ack(now, MSS, &r);
        assert_eq!(c.window(), 10 * MSS);
        // A zero window stops sending.
        c.set_remote_window(0);
        assert_eq!(c.window(), 0);
    }

    #[test]
    fn zero_samples_are_ignored() {
        let mut c = fresh();
        c.on_delay_sample(Instant::now(), 0);
        assert_eq!(c.queuing_delay(), None);
    }
}
