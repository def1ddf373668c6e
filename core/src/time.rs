//! Time as the core sees it: a monotonic millisecond [`Instant`] supplied by the caller.
//!
//! The core never reads a clock. The agent converts its monotonic clock (e.g.
//! `std::time::Instant` relative to a start point) into [`Instant::from_millis`] and passes it
//! into every state machine call. Arithmetic saturates, so no caller value can overflow.

use core::time::Duration;

/// A point on the caller's monotonic clock, in milliseconds from an arbitrary origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);

    /// From milliseconds since the caller's origin.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the caller's origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating.
    pub const fn add_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// `self + d`, saturating (sub-millisecond parts are dropped).
    pub fn add_duration(self, d: Duration) -> Self {
        self.add_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub const fn millis_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Duration from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.millis_since(earlier))
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    fn saturating_arithmetic() {
        let t = Instant::from_millis(10);
        assert_eq!(t.add_millis(5).as_millis(), 15);
        assert_eq!(Instant::from_millis(u64::MAX).add_millis(1).as_millis(), u64::MAX);
        assert_eq!(t.millis_since(Instant::from_millis(20)), 0);
        assert_eq!(t.add_duration(Duration::from_secs(1)).as_millis(), 1010);
        assert_eq!(t.add_duration(Duration::MAX).as_millis(), u64::MAX);
        assert_eq!(Instant::from_millis(30).saturating_duration_since(t), Duration::from_millis(20));
    }

    crate::selftests!(saturating_arithmetic,);
}
