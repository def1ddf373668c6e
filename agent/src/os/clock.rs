//! The agent's monotonic clock as the core sees it: milliseconds since an origin the caller
//! keeps (`mender_connect_core::time::Instant`). Every conversion between the two goes through
//! here.

use std::time::{Duration, Instant};

use mender_connect_core::time::Instant as CoreInstant;

/// `now` on the core's clock that starts at `origin` (0 if `now` is earlier; saturating).
pub fn now_core(origin: Instant, now: Instant) -> CoreInstant {
    CoreInstant::from_millis(millis(now.saturating_duration_since(origin)))
}

/// A core instant back on the std clock that starts at `origin`.
pub fn to_std(origin: Instant, t: CoreInstant) -> Instant {
    let d = Duration::from_millis(t.as_millis());
    origin.checked_add(d).unwrap_or(origin)
}

/// Whole milliseconds of `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_saturation() {
        let origin = Instant::now();
        let later = origin + Duration::from_millis(1_500);
        let t = now_core(origin, later);
        assert_eq!(t.as_millis(), 1_500);
        assert_eq!(to_std(origin, t), later);
        assert_eq!(now_core(later, origin).as_millis(), 0);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
