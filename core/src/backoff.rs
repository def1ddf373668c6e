//! Reconnect backoff with full jitter.
//!
//! `delay = random in [0, min(cap, base * 2^attempt)]`, the random value supplied by the caller
//! (AWS "full jitter"). The attempt counter resets only after a connection has stayed up for
//! `stable_after_ms`, so a server that accepts and immediately drops the socket cannot make the
//! agent reconnect in a tight loop.
//!
//! The reference (mender-connect 2.1.0 `connectionmanager`) waits a fixed
//! `ReconnectIntervalSeconds` (default 5 s) between attempts; with `base = cap = 5000` and the
//! caller passing `random = u64::MAX` this crate reproduces that.

use crate::time::Instant;

/// Backoff parameters, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first attempt.
    pub base_ms: u64,
    /// Largest ceiling.
    pub cap_ms: u64,
    /// How long a connection must last before the attempt counter resets.
    pub stable_after_ms: u64,
}

impl Default for BackoffConfig {
    /// 1 s base, 60 s cap, 30 s to count as stable.
    fn default() -> Self {
        Self { base_ms: 1_000, cap_ms: 60_000, stable_after_ms: 30_000 }
    }
}

/// Backoff state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    connected_at: Option<Instant>,
}

impl Backoff {
    /// A fresh backoff (attempt 0).
    pub const fn new(cfg: BackoffConfig) -> Self {
        Self { cfg, attempt: 0, connected_at: None }
    }

    /// Failed attempts since the last reset.
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The current upper bound: `min(cap, base * 2^attempt)`.
    pub fn ceiling_ms(&self) -> u64 {
        let factor = 1u64.checked_shl(self.attempt).unwrap_or(u64::MAX);
        self.cfg.base_ms.saturating_mul(factor).min(self.cfg.cap_ms)
    }

    /// Delay before the next connection attempt, from a uniformly distributed `random` value
    /// (the modulo bias is below 2^-40 for any ceiling under 2^24 ms). Counts the attempt.
    pub fn next_delay_ms(&mut self, random: u64) -> u64 {
        let ceiling = self.ceiling_ms();
        self.attempt = self.attempt.saturating_add(1);
        self.connected_at = None;
        match ceiling.checked_add(1) {
            Some(m) => random % m,
            None => random,
        }
    }

    /// [`Backoff::next_delay_ms`] as a `Duration`.
    pub fn next_delay(&mut self, random: u64) -> core::time::Duration {
        core::time::Duration::from_millis(self.next_delay_ms(random))
    }

    /// The connection was established at `now`.
    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection ended at `now`; resets the counter if it had been stable.
    pub fn on_disconnected(&mut self, now: Instant) {
        self.poll(now);
        self.connected_at = None;
    }

    /// Resets the counter once the current connection has been up long enough. Returns true if
    /// the connection counts as stable.
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.connected_at {
            Some(t) if now.millis_since(t) >= self.cfg.stable_after_ms => {
                self.attempt = 0;
                true
            }
            _ => false,
        }
    }

    /// When the current connection will count as stable (for the caller's timer).
    pub fn stable_at(&self) -> Option<Instant> {
        self.connected_at.map(|t| t.add_millis(self.cfg.stable_after_ms))
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    const CFG: BackoffConfig = BackoffConfig { base_ms: 100, cap_ms: 1_000, stable_after_ms: 500 };

    fn ceiling_doubles_up_to_cap() {
        let mut b = Backoff::new(CFG);
        let mut ceilings = [0u64; 6];
        for c in &mut ceilings {
            *c = b.ceiling_ms();
            // u64::MAX % (ceiling+1) is the top of the range only for some ceilings; use ceiling.
            assert_eq!(b.next_delay_ms(*c), *c);
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempt(), 6);
    }

    fn full_jitter_includes_zero() {
        let mut b = Backoff::new(CFG);
        assert_eq!(b.next_delay_ms(0), 0);
        assert_eq!(b.next_delay(201), core::time::Duration::ZERO);
    }

    fn reset_only_after_stable_period() {
        let mut b = Backoff::new(CFG);
        for _ in 0..4 {
            b.next_delay_ms(0);
        }
        b.on_connected(Instant::from_millis(1_000));
        assert_eq!(b.stable_at(), Some(Instant::from_millis(1_500)));
        // Dropped after 499 ms: not stable, the counter keeps growing.
        b.on_disconnected(Instant::from_millis(1_499));
        assert_eq!(b.attempt(), 4);
        assert_eq!(b.ceiling_ms(), 1_000);
        b.next_delay_ms(0);
        b.on_connected(Instant::from_millis(2_000));
        assert!(!b.poll(Instant::from_millis(2_100)));
        assert!(b.poll(Instant::from_millis(2_500)));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling_ms(), 100);
    }

    fn huge_attempt_counts_saturate() {
        let mut b =
            Backoff::new(BackoffConfig { base_ms: u64::MAX / 2, cap_ms: u64::MAX, stable_after_ms: 0 });
        for _ in 0..200 {
            let _ = b.next_delay_ms(u64::MAX);
        }
        assert_eq!(b.ceiling_ms(), u64::MAX);
        assert_eq!(b.next_delay_ms(7), 7);
    }

    crate::selftests!(
        ceiling_doubles_up_to_cap,
        full_jitter_includes_zero,
        reset_only_after_stable_period,
        huge_attempt_counts_saturate
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delay_within_bounds(base in 0u64..10_000, cap in 0u64..100_000, attempts in 0usize..80, r in any::<u64>()) {
            let mut b = Backoff::new(BackoffConfig { base_ms: base, cap_ms: cap, stable_after_ms: 1 });
            for _ in 0..attempts { b.next_delay_ms(r); }
            let ceiling = b.ceiling_ms();
            prop_assert!(ceiling <= cap);
            prop_assert!(b.next_delay_ms(r) <= ceiling);
        }
    }
}
