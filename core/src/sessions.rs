//! Session ids and the reference's session expiry rule, stated once.
//!
//! The shell session table that applies them is [`crate::shells::ShellTable`]; its module doc
//! cites the mender-connect 2.1.0 and 3.0.0 sources line by line.
//! - expiry ([`Expiry::from_reference`]): only with `StopExpired`; if `ExpireAfterIdle` is set, a
//!   session expires `ExpireAfterIdle` after its last activity (start, user input) and
//!   `ExpireAfter` is ignored; otherwise it expires `ExpireAfter` after creation; with both 0 it
//!   never expires. (The reference stores a 1024 s `defaultSessionExpiredTimeout` in each
//!   session, but its sweep, `timeToSweepSessions`, does not run when both are 0, so that value
//!   never takes effect. mender-connect 3.0 defaults `StopExpired` to true and `ExpireAfterIdle`
//!   to 600 s when both are 0, in its configuration code, before this rule applies.)
//!
//! Ids are stored inline (`heapless::String`, up to [`ID_CAP`] bytes); the server uses UUIDs.

use heapless::String;

use crate::time::Instant;

/// Longest session or user id accepted, in bytes.
pub const ID_CAP: usize = 64;
/// The reference's default `MaxShellsSpawned`.
pub const DEFAULT_CAPACITY: usize = 16;
/// mender-connect 3.0's default `ExpireAfterIdle` (`DefaultExpireAfterIdle`, 600 s), applied by
/// its configuration code when `StopExpired` is on and neither expiry is set.
pub const DEFAULT_EXPIRE_AFTER_IDLE_S: u32 = 600;

/// An inline session/user id.
pub type Id = String<ID_CAP>;

/// How sessions expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expiry {
    /// Expire this long after creation (`ExpireAfter`).
    AfterCreation(u64),
    /// Expire this long after the last activity (`ExpireAfterIdle`).
    AfterIdle(u64),
}

impl Expiry {
    /// The reference's rule from its three effective config values (seconds, 0 = unset):
    /// nothing expires without `StopExpired` or when both expiries are 0 (mender-connect 2.1.0
    /// and 3.0.0 `app/daemon.go` `timeToSweepSessions` returns false then, so the per-session
    /// 1024 s default is never looked at); idle wins if set (`session/shell.go` `IsExpired`
    /// checks only the idle deadline then); otherwise absolute.
    pub const fn from_reference(
        stop_expired: bool,
        expire_after_s: u32,
        expire_after_idle_s: u32,
    ) -> Option<Self> {
        if !stop_expired {
            None
        } else if expire_after_idle_s > 0 {
            Some(Self::AfterIdle(expire_after_idle_s as u64 * 1000))
        } else if expire_after_s > 0 {
            Some(Self::AfterCreation(expire_after_s as u64 * 1000))
        } else {
            None
        }
    }

    /// When a session created at `created`, last active at `active`, expires (it is expired
    /// strictly after this, as the reference's `time.Now().After`).
    pub const fn deadline(self, created: Instant, active: Instant) -> Instant {
        match self {
            Self::AfterCreation(ms) => created.add_millis(ms),
            Self::AfterIdle(ms) => active.add_millis(ms),
        }
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;
    use crate::shells::{ShellConfig, ShellTable, queue_len};

    use crate::selftest::t;

    /// mender-connect 2.1.0 and 3.0.0 `app/daemon.go`:
    /// `if d.expireSessionsAfter == 0 && d.expireSessionsAfterIdle == 0 { return false }` in
    /// `timeToSweepSessions`, the only caller of `MenderSessionTerminateExpired`: with both
    /// timeouts 0 the session's `expiresAt` (created + 1024 s) is never checked. And with
    /// `StopExpired` off, `applyDefaults` zeroes both.
    fn no_timeout_or_no_stop_expired_never_expires() {
        assert_eq!(Expiry::from_reference(true, 0, 0), None);
        assert_eq!(Expiry::from_reference(false, 600, 0), None);
        assert_eq!(Expiry::from_reference(false, 0, 600), None);
        let cfg = ShellConfig {
            expiry: Expiry::from_reference(true, 0, 0),
            health_interval_ms: 1 << 50,
            ..ShellConfig::default()
        };
        let mut tab = ShellTable::<4, { queue_len(4) }>::new(cfg);
        assert_eq!(tab.handle_new("a", "u", None, t(0)), Ok(()));
        while tab.poll_action().is_some() {}
        // Only the health check's timers, none for expiry.
        assert_eq!(tab.poll_timeout(), Some(t(1 << 50)));
        tab.handle_timeout(t(1_024_001));
        tab.handle_timeout(t(1 << 49));
        assert_eq!(tab.poll_action(), None);
        assert_eq!(tab.len(), 1);
    }

    /// mender-connect 3.0.0 `config/paths.go`: `DefaultStopExpired = true`,
    /// `DefaultExpireAfterIdle = uint32(600)`.
    fn default_is_three_point_o_idle_expiry() {
        assert_eq!(ShellConfig::default().expiry, Some(Expiry::AfterIdle(600_000)));
    }

    /// `IsExpired` looks only at the idle deadline when `ExpireAfterIdle` is set.
    fn idle_wins_over_absolute() {
        assert_eq!(Expiry::from_reference(true, 16, 10), Some(Expiry::AfterIdle(10_000)));
        assert_eq!(Expiry::from_reference(true, 16, 0), Some(Expiry::AfterCreation(16_000)));
        assert_eq!(
            Expiry::from_reference(true, u32::MAX, 0),
            Some(Expiry::AfterCreation(u64::from(u32::MAX) * 1000))
        );
    }

    fn deadlines() {
        assert_eq!(Expiry::AfterIdle(10).deadline(t(0), t(5)), t(15));
        assert_eq!(Expiry::AfterCreation(10).deadline(t(0), t(5)), t(10));
        assert_eq!(Expiry::AfterCreation(10).deadline(t(u64::MAX), t(5)), t(u64::MAX));
    }

    crate::selftests!(
        no_timeout_or_no_stop_expired_never_expires,
        default_is_three_point_o_idle_expiry,
        idle_wins_over_absolute,
        deadlines
    );
}
