//! The shell session table: capacity, per-user limit and expiry.
//!
//! Reference (mender-connect 2.1.0 `session/shell.go`, `app/daemon_shell.go`):
//! - at most `MaxShellsSpawned` shells (checked first: "too many shells spawned");
//! - a `new` for a session id that already has a shell: "shell is already running";
//! - at most `Sessions.MaxPerUser` (default 1) per `user_id`: "user has too many open sessions";
//! - expiry ([`Expiry::from_reference`]): only with `StopExpired`; if `ExpireAfterIdle` is set, a
//!   session expires `ExpireAfterIdle` after its last activity (start, user input) and
//!   `ExpireAfter` is ignored; otherwise it expires `ExpireAfter` after creation; with both 0 it
//!   never expires. (The reference stores a 1024 s `defaultSessionExpiredTimeout` in each
//!   session, but its sweep, `timeToSweepSessions`, does not run when both are 0, so that value
//!   never takes effect. mender-connect 3.0 defaults `StopExpired` to true and `ExpireAfterIdle`
//!   to 600 s when both are 0, in its configuration code, before this rule applies.)
//!
//! Ids are stored inline (`heapless::String`, up to [`ID_CAP`] bytes); the server uses UUIDs.

use core::fmt;

use heapless::{String, Vec};

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

/// Why a session could not be opened or found. `Display` gives the reference's texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The table is at its configured or compile-time capacity.
    TooManyShells,
    /// This session id already has a shell.
    AlreadyRunning,
    /// The user reached the per-user limit.
    TooManyForUser,
    /// No such session.
    NotFound,
    /// An id is longer than [`ID_CAP`].
    IdTooLong,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooManyShells => "too many shells spawned",
            Self::AlreadyRunning => "shell is already running",
            Self::TooManyForUser => "user has too many open sessions",
            Self::NotFound => "session not found",
            Self::IdTooLong => "id too long",
        })
    }
}

impl core::error::Error for SessionError {}

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
    pub const fn from_reference(stop_expired: bool, expire_after_s: u32, expire_after_idle_s: u32) -> Option<Self> {
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
}

/// Table limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most sessions at once (also bounded by the table's const capacity).
    pub max_sessions: usize,
    /// Most sessions per user (reference default 1).
    pub max_per_user: usize,
    /// Expiry rule (`None`: sessions never expire).
    pub expiry: Option<Expiry>,
}

impl Default for SessionConfig {
    /// 16 sessions, 1 per user, mender-connect 3.0's default expiry (600 s idle).
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_CAPACITY,
            max_per_user: 1,
            expiry: Expiry::from_reference(true, 0, DEFAULT_EXPIRE_AFTER_IDLE_S),
        }
    }
}

/// One session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Session id (`hdr.sid`).
    pub sid: Id,
    /// `props.user_id` of the `new` that opened it.
    pub user_id: Id,
    /// When it was opened.
    pub created: Instant,
    /// Last activity.
    pub last_active: Instant,
}

impl Session {
    fn expires_at(&self, e: Option<Expiry>) -> Option<Instant> {
        match e? {
            Expiry::AfterCreation(ms) => Some(self.created.add_millis(ms)),
            Expiry::AfterIdle(ms) => Some(self.last_active.add_millis(ms)),
        }
    }
}

fn id(s: &str) -> Result<Id, SessionError> {
    Id::try_from(s).map_err(|_| SessionError::IdTooLong)
}

/// Fixed-capacity session table with up to `N` sessions.
#[derive(Clone, Debug)]
pub struct SessionTable<const N: usize> {
    cfg: SessionConfig,
    sessions: Vec<Session, N>,
}

impl<const N: usize> SessionTable<N> {
    /// An empty table.
    pub const fn new(cfg: SessionConfig) -> Self {
        Self { cfg, sessions: Vec::new() }
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True if no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A session by id.
    pub fn get(&self, sid: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.sid == sid)
    }

    /// All sessions.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter()
    }

    /// Sessions of `user_id`.
    pub fn count_for_user(&self, user_id: &str) -> usize {
        self.sessions.iter().filter(|s| s.user_id == user_id).count()
    }

    /// Opens a session, checking limits in the reference's order.
    pub fn open(&mut self, sid: &str, user_id: &str, now: Instant) -> Result<(), SessionError> {
        if self.sessions.len() >= self.cfg.max_sessions.min(N) {
            return Err(SessionError::TooManyShells);
        }
        if self.get(sid).is_some() {
            return Err(SessionError::AlreadyRunning);
        }
        if self.count_for_user(user_id) >= self.cfg.max_per_user {
            return Err(SessionError::TooManyForUser);
        }
        let s = Session { sid: id(sid)?, user_id: id(user_id)?, created: now, last_active: now };
        self.sessions.push(s).map_err(|_| SessionError::TooManyShells)
    }

    /// Records activity (user input) on a session.
    pub fn touch(&mut self, sid: &str, now: Instant) -> Result<(), SessionError> {
        let s = self.sessions.iter_mut().find(|s| s.sid == sid).ok_or(SessionError::NotFound)?;
        s.last_active = now;
        Ok(())
    }

    /// Closes a session, returning it.
    pub fn close(&mut self, sid: &str) -> Result<Session, SessionError> {
        let i = self.sessions.iter().position(|s| s.sid == sid).ok_or(SessionError::NotFound)?;
        Ok(self.sessions.swap_remove(i))
    }

    /// Closes all sessions of `user_id` (a `stop` without `sid`); returns their ids.
    /// `NotFound` if there were none, as in the reference.
    pub fn close_user(&mut self, user_id: &str) -> Result<Vec<Id, N>, SessionError> {
        let mut out = Vec::new();
        self.sessions.retain(|s| {
            if s.user_id == user_id {
                // Cannot fail: `out` has the table's capacity.
                let _ = out.push(s.sid.clone());
                false
            } else {
                true
            }
        });
        if out.is_empty() { Err(SessionError::NotFound) } else { Ok(out) }
    }

    /// Removes and returns every session expired at `now` (the caller stops their shells).
    pub fn take_expired(&mut self, now: Instant) -> Vec<Session, N> {
        let e = self.cfg.expiry;
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.sessions.len() {
            if self.sessions[i].expires_at(e).is_some_and(|at| now > at) {
                let _ = out.push(self.sessions.swap_remove(i));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Removes all sessions (connection teardown), returning them.
    pub fn take_all(&mut self) -> Vec<Session, N> {
        core::mem::take(&mut self.sessions)
    }

    /// The earliest expiry among open sessions (for the caller's timer).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sessions.iter().filter_map(|s| s.expires_at(self.cfg.expiry)).min()
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn limits_in_reference_order() {
        let cfg = SessionConfig { max_sessions: 2, max_per_user: 1, ..SessionConfig::default() };
        let mut tab = SessionTable::<16>::new(cfg);
        tab.open("s1", "u1", t(0)).unwrap();
        assert_eq!(tab.open("s1", "u2", t(0)), Err(SessionError::AlreadyRunning));
        assert_eq!(tab.open("s2", "u1", t(0)), Err(SessionError::TooManyForUser));
        tab.open("s2", "u2", t(0)).unwrap();
        // Full is reported before "already running".
        assert_eq!(tab.open("s1", "u1", t(0)), Err(SessionError::TooManyShells));
        assert_eq!(tab.len(), 2);
        assert_eq!(crate::selftest::display(&SessionError::TooManyForUser), "user has too many open sessions");
    }

    fn const_capacity_bounds_config() {
        let mut tab = SessionTable::<2>::new(SessionConfig { max_sessions: 100, max_per_user: 100, ..SessionConfig::default() });
        tab.open("a", "u", t(0)).unwrap();
        tab.open("b", "u", t(0)).unwrap();
        assert_eq!(tab.open("c", "u", t(0)), Err(SessionError::TooManyShells));
    }

    fn close_and_close_user() {
        let mut tab = SessionTable::<4>::new(SessionConfig { max_per_user: 3, ..SessionConfig::default() });
        for s in ["a", "b", "c"] {
            tab.open(s, "u", t(0)).unwrap();
        }
        tab.open("d", "v", t(0)).unwrap();
        assert_eq!(tab.close("zz"), Err(SessionError::NotFound));
        assert_eq!(tab.close("a").unwrap().user_id, "u");
        let ids = tab.close_user("u").unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(tab.close_user("u"), Err(SessionError::NotFound));
        assert_eq!(tab.len(), 1);
        assert_eq!(tab.take_all().len(), 1);
        assert!(tab.is_empty());
    }

    fn absolute_expiry() {
        let cfg = SessionConfig { expiry: Expiry::from_reference(true, 1024, 0), max_per_user: 2, ..SessionConfig::default() };
        let mut tab = SessionTable::<4>::new(cfg);
        tab.open("a", "u", t(0)).unwrap();
        tab.open("b", "u", t(500)).unwrap();
        tab.touch("a", t(1_000_000)).unwrap();
        assert_eq!(tab.next_expiry(), Some(t(1_024_000)));
        assert!(tab.take_expired(t(1_024_000)).is_empty());
        let gone = tab.take_expired(t(1_024_001));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].sid, "a");
        assert_eq!(tab.next_expiry(), Some(t(1_024_500)));
    }

    /// mender-connect 2.1.0 and 3.0.0 `app/daemon.go`:
    /// `if d.expireSessionsAfter == 0 && d.expireSessionsAfterIdle == 0 { return false }` in
    /// `timeToSweepSessions`, the only caller of `MenderSessionTerminateExpired`: with both
    /// timeouts 0 the session's `expiresAt` (created + 1024 s) is never checked. And with
    /// `StopExpired` off, `applyDefaults` zeroes both.
    fn no_timeout_or_no_stop_expired_never_expires() {
        assert_eq!(Expiry::from_reference(true, 0, 0), None);
        assert_eq!(Expiry::from_reference(false, 600, 0), None);
        assert_eq!(Expiry::from_reference(false, 0, 600), None);
        let cfg = SessionConfig { expiry: Expiry::from_reference(true, 0, 0), ..SessionConfig::default() };
        let mut tab = SessionTable::<4>::new(cfg);
        tab.open("a", "u", t(0)).unwrap();
        assert_eq!(tab.next_expiry(), None);
        assert!(tab.take_expired(t(1_024_001)).is_empty());
        assert!(tab.take_expired(t(u64::MAX / 2)).is_empty());
    }

    /// mender-connect 3.0.0 `config/paths.go`: `DefaultStopExpired = true`,
    /// `DefaultExpireAfterIdle = uint32(600)`.
    fn default_is_three_point_o_idle_expiry() {
        assert_eq!(SessionConfig::default().expiry, Some(Expiry::AfterIdle(600_000)));
    }

    fn idle_expiry_wins_and_touch_extends() {
        let cfg = SessionConfig { expiry: Expiry::from_reference(true, 16, 10), ..SessionConfig::default() };
        assert_eq!(cfg.expiry, Some(Expiry::AfterIdle(10_000)));
        let mut tab = SessionTable::<4>::new(cfg);
        tab.open("a", "u", t(0)).unwrap();
        tab.touch("a", t(9_000)).unwrap();
        assert!(tab.take_expired(t(17_000)).is_empty());
        assert_eq!(tab.take_expired(t(19_001)).len(), 1);
        assert_eq!(tab.touch("a", t(0)), Err(SessionError::NotFound));
    }

    fn long_ids_are_refused() {
        let mut tab = SessionTable::<4>::new(SessionConfig::default());
        let long = [b'x'; ID_CAP + 1];
        let long = core::str::from_utf8(&long).unwrap();
        assert_eq!(tab.open(long, "u", t(0)), Err(SessionError::IdTooLong));
        assert!(tab.is_empty());
    }

    crate::selftests!(
        limits_in_reference_order,
        const_capacity_bounds_config,
        close_and_close_user,
        absolute_expiry,
        no_timeout_or_no_stop_expired_never_expires,
        default_is_three_point_o_idle_expiry,
        idle_expiry_wins_and_touch_extends,
        long_ids_are_refused,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Open(u8, u8),
        Close(u8),
        CloseUser(u8),
        Touch(u8),
        Expire,
    }
    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u8..4).prop_map(|(s, u)| Op::Open(s, u)),
            (0u8..12).prop_map(Op::Close),
            (0u8..4).prop_map(Op::CloseUser),
            (0u8..12).prop_map(Op::Touch),
            Just(Op::Expire),
        ]
    }
    proptest! {
        #[test]
        fn limits_hold_under_any_sequence(ops in proptest::collection::vec(op(), 0..80), max in 1usize..10,
                                          per_user in 1usize..4, idle in any::<bool>()) {
            let expiry = Some(if idle { Expiry::AfterIdle(50) } else { Expiry::AfterCreation(100) });
            let mut tab = SessionTable::<8>::new(SessionConfig { max_sessions: max, max_per_user: per_user, expiry });
            for (i, o) in ops.into_iter().enumerate() {
                let now = Instant::from_millis(i as u64 * 10);
                let sid = |s: u8| std::format!("s{s}");
                let uid = |u: u8| std::format!("u{u}");
                match o {
                    Op::Open(s, u) => {
                        let before = tab.len();
                        match tab.open(&sid(s), &uid(u), now) {
                            Ok(()) => prop_assert_eq!(tab.len(), before + 1),
                            Err(_) => prop_assert_eq!(tab.len(), before),
                        }
                    }
                    Op::Close(s) => { let _ = tab.close(&sid(s)); }
                    Op::CloseUser(u) => { let _ = tab.close_user(&uid(u)); }
                    Op::Touch(s) => { let _ = tab.touch(&sid(s), now); }
                    Op::Expire => {
                        for gone in tab.take_expired(now) {
                            prop_assert!(gone.expires_at(expiry).is_some_and(|at| at < now));
                        }
                    }
                }
                prop_assert!(tab.len() <= max.min(8));
                for s in tab.iter() {
                    prop_assert!(tab.count_for_user(&s.user_id) <= per_user);
                    prop_assert_eq!(tab.iter().filter(|t| t.sid == s.sid).count(), 1);
                }
            }
        }
    }
}
