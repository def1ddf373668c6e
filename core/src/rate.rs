//! Per-minute Tx/Rx byte rate counters, as mender-connect's file-transfer limits compute them.
//!
//! Reference (mender-connect 2.1.0 `limits/filetransfer/limits.go`, `updateCounters`): every
//! 5 s tick, the bytes moved since the previous tick `Y` update a moving exponential average
//! `avg = w*Y + (1-w)*avg` with `1-w = exp(-5 s / 60 s)`. A transfer is refused while
//! `uint64(avg) >= MaxBytes{Tx,Rx}PerMinute` (0 = unlimited). Note that the average is of
//! per-tick byte counts with a one-minute time constant, not of bytes per minute; the
//! integration test `test_upload_limits_err_max_bytes_per_minute_exceeded` depends on exactly
//! this decay. Totals saturate at `u64::MAX` like the reference's guarded additions.

use crate::time::Instant;

/// Tick of the reference's averaging loop.
pub const TICK_MS: u64 = 5_000;
/// `exp(-5/60)`: weight of the previous average per tick (no `libm` in `core`, so a constant).
pub const DECAY: f64 = 0.920_044_414_629_323_2;
/// Ticks after which any average has decayed to below one byte (0.92^600 ≈ 1.7e-22) — a
/// bound on catch-up work after a long pause.
const MAX_CATCH_UP_TICKS: u64 = 600;

/// One direction's counter.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct RateCounter {
    total: u64,
    at_last_tick: u64,
    avg: f64,
}

impl RateCounter {
    /// Counts `n` more bytes.
    pub fn add(&mut self, n: u64) {
        self.total = self.total.saturating_add(n);
    }

    /// All bytes counted.
    pub const fn total(&self) -> u64 {
        self.total
    }

    /// The moving average (bytes per tick, one-minute time constant).
    pub const fn average(&self) -> f64 {
        self.avg
    }

    /// Whether the average is below `limit` (0 = unlimited), as the reference checks it.
    pub fn below(&self, limit: u64) -> bool {
        limit == 0 || (self.avg as u64) < limit
    }

    fn tick(&mut self) {
        let y = self.total.saturating_sub(self.at_last_tick);
        self.at_last_tick = self.total;
        self.avg = (1.0 - DECAY) * (y as f64) + DECAY * self.avg;
    }
}

/// Tx and Rx counters with the 5 s tick driven by the caller's `now`.
#[derive(Clone, Debug, PartialEq)]
pub struct RateCounters {
    /// Bytes sent to the peer.
    pub tx: RateCounter,
    /// Bytes received from the peer.
    pub rx: RateCounter,
    next_tick: Instant,
}

impl RateCounters {
    /// Counters started at `now`; the first tick is at `now + 5 s`.
    pub const fn new(now: Instant) -> Self {
        Self {
            tx: RateCounter { total: 0, at_last_tick: 0, avg: 0.0 },
            rx: RateCounter { total: 0, at_last_tick: 0, avg: 0.0 },
            next_tick: now.add_millis(TICK_MS),
        }
    }

    /// Applies every tick due by `now`. Bytes counted since the last tick all go into the first
    /// due tick; later overdue ticks see zero bytes, as a late ticker would.
    pub fn poll(&mut self, now: Instant) {
        let mut n = 0;
        while now >= self.next_tick && n < MAX_CATCH_UP_TICKS {
            self.tx.tick();
            self.rx.tick();
            self.next_tick = self.next_tick.add_millis(TICK_MS);
            n += 1;
        }
        if now >= self.next_tick {
            // Beyond the catch-up bound everything has decayed to nothing.
            self.tx.avg = 0.0;
            self.rx.avg = 0.0;
            let behind = now.millis_since(self.next_tick) / TICK_MS + 1;
            self.next_tick = self.next_tick.add_millis(behind.saturating_mul(TICK_MS));
        }
    }

    /// When the next tick is due (for the caller's timer).
    pub const fn next_tick(&self) -> Instant {
        self.next_tick
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    use crate::selftest::t;

    fn decay_constant_matches_exp() {
        // exp(-1/12) via its series; the constant must agree to f64 precision.
        let x = -1.0f64 / 12.0;
        let mut term = 1.0f64;
        let mut sum = 1.0f64;
        for k in 1..30 {
            term *= x / k as f64;
            sum += term;
        }
        assert!((sum - DECAY).abs() < 1e-15, "{sum} vs {DECAY}");
    }

    fn integration_test_scenario_16k_limit() {
        // test_upload_limits_err_max_bytes_per_minute_exceeded: 16 KiB/min limit, two 512 KiB
        // uploads, 60 s wait -> third upload refused; 64 s more -> allowed.
        let limit = 16 * 1024;
        let mut c = RateCounters::new(t(0));
        assert!(c.rx.below(limit));
        c.rx.add(1024 * 1024);
        c.poll(t(5_000));
        assert!(!c.rx.below(limit));
        c.poll(t(65_000));
        assert!(!c.rx.below(limit), "avg {}", c.rx.average());
        c.poll(t(129_000));
        assert!(c.rx.below(limit), "avg {}", c.rx.average());
        assert_eq!(c.rx.total(), 1024 * 1024);
        assert!(c.tx.below(1));
    }

    fn tick_math() {
        let mut c = RateCounters::new(t(0));
        c.tx.add(1000);
        c.poll(t(4_999));
        assert_eq!(c.tx.average(), 0.0);
        c.poll(t(5_000));
        let a1 = (1.0 - DECAY) * 1000.0;
        assert!((c.tx.average() - a1).abs() < 1e-9);
        c.poll(t(10_000));
        assert!((c.tx.average() - a1 * DECAY).abs() < 1e-9);
        assert_eq!(c.next_tick(), t(15_000));
        // (1-0.92)*1000*0.92 = 73.5 bytes: truncated to 73 as Go's uint64(avg) does.
        assert!(!c.tx.below(73) && c.tx.below(74) && c.tx.below(0));
    }

    fn long_pause_is_bounded_and_decays() {
        let mut c = RateCounters::new(t(0));
        c.tx.add(u64::MAX);
        c.tx.add(5);
        assert_eq!(c.tx.total(), u64::MAX);
        c.poll(t(u64::MAX));
        assert_eq!(c.tx.average(), 0.0);
        assert!(c.next_tick() > t(u64::MAX - TICK_MS) || c.next_tick() == t(u64::MAX));
        c.poll(t(u64::MAX));
    }

    crate::selftests!(
        decay_constant_matches_exp,
        integration_test_scenario_16k_limit,
        tick_math,
        long_pause_is_bounded_and_decays,
    );
}
