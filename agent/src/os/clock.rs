//! The one conversion between the OS's monotonic clock (`std::time::Instant`) and the core's
//! millisecond [`Instant`](mender_connect_core::time::Instant), which the protocol engine and
//! the core's timers are driven with; and the seed of the reconnect jitter.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mender_connect_core::time::Instant as CoreInstant;

/// The origin of core time: the first use in this process.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Whole milliseconds of `d`, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `t` on the core's clock (instants before the origin are the origin).
pub fn to_core(t: Instant) -> CoreInstant {
    CoreInstant::from_millis(millis(t.saturating_duration_since(origin())))
}

/// The core's `t` on the OS clock.
pub fn to_std(t: CoreInstant) -> Instant {
    let o = origin();
    // A core instant past what the OS clock can hold is "never": a century ahead.
    o.checked_add(Duration::from_millis(t.as_millis()))
        .or_else(|| o.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(o)
}

/// Now, on the core's clock.
pub fn now() -> CoreInstant {
    to_core(Instant::now())
}

/// A random seed for the reconnect jitter. Without OS randomness all devices would retry in
/// lockstep; the clock and the pid still differ.
pub fn seed() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        seed = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_millisecond_precision() {
        let t = Instant::now() + Duration::from_millis(1_234);
        let back = to_std(to_core(t));
        assert!(back <= t && t.duration_since(back) < Duration::from_millis(1));
        assert_eq!(to_core(origin()), CoreInstant::ZERO);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert!(to_std(CoreInstant::from_millis(u64::MAX)) > t);
    }
}
