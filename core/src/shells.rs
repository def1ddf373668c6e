//! The remote-terminal session table as a sans-IO state machine (quinn-proto's shape).
//!
//! [`ShellTable`] owns every decision about shell sessions: which `new` is refused and with
//! which text, which of a user's shells a new terminal replaces after a reconnect, when a session
//! expires, when a health-check `ping` goes out and when a missing `pong` ends the session, and
//! when shells left behind by a dropped websocket are reaped. It owns no pty, process or socket:
//! the caller (the agent's `shell.rs`, or an engine on a microcontroller) feeds it events and
//! executes what it asks for.
//!
//! ```text
//!  handle_new / handle_input / handle_resize / handle_pong / handle_stop     (server frames)
//!  handle_spawned / handle_exited / handle_kill / handle_stop_all             (executor, local)
//!  handle_disconnected / handle_reconnected                                   (link)
//!  handle_timeout(now) at poll_timeout()                                      (clock)
//!        |
//!        v
//!  poll_action() -> SpawnShell, StopShell, SendStop, SendOk, SendError, HealthCheck
//! ```
//!
//! Every `handle_*` takes the current [`Instant`] where time matters and queues [`Action`]s;
//! the caller drains [`ShellTable::poll_action`] until `None` after each call (the queue holds
//! what the worst single call produces, so it cannot overflow then), and calls
//! [`ShellTable::handle_timeout`] when [`ShellTable::poll_timeout`] is due. Actions come out in
//! the order the frames must reach the server (a replaced shell's `stop` before the new
//! terminal's "Shell started").
//!
//! Reference behaviour (mender-connect 2.1.0 and 3.0.0; `3.0.0` below is the `3.0.0-build3`
//! tag, identical to the `3.0.x` branch):
//! - refusals in this order, with these texts (`app/daemon_shell.go`
//!   `routeMessageSpawnShell`, `session/shell.go`): more than `MaxShellsSpawned` (16) shells
//!   "too many shells spawned"; a `new` for a running sid "failed to start shell: shell is
//!   already running"; `Sessions.MaxPerUser` reached "user has too many open sessions".
//! - `stop` (`routeMessageStopShell`): status 1 and an empty body; unknown sid "routeMessage:
//!   StopShellMessage: session not found for id {sid}"; no sid stops all of `user_id`'s shells
//!   ("session not found" if none, "StopShellMessage: sessionId not given and userId empty"
//!   without a user).
//! - expiry: [`Expiry::from_reference`], which settles the question whether the 1024 s
//!   `defaultSessionExpiredTimeout` (2.1.0 `session/shell.go:68`, 3.0.0 `:69`, stored by
//!   `NewMenderShellSession` when `ExpireAfter` is 0, 2.1.0 `:146-148`, 3.0.0 `:147-149`) ever
//!   applies: it does not. The only caller of `MenderSessionTerminateExpired` is the main loop's
//!   sweep (2.1.0 `app/daemon.go:517`, 3.0.0 `:534`), guarded by `timeToSweepSessions`, which
//!   returns false when both `expireSessionsAfter` and `expireSessionsAfterIdle` are 0 (2.1.0
//!   and 3.0.0 `app/daemon.go:165-168`). `StopExpired` off zeroes both (2.1.0
//!   `config/config.go:269-271`, 3.0.0 `:280-282`); 3.0.0 then turns "both 0" into
//!   `ExpireAfterIdle` 600 s (`config/config.go:288-291`, `config/paths.go:47-48`), so with 3.0's
//!   configuration the case only arises from a hand-built configuration. `IsExpired` (2.1.0
//!   `session/shell.go:373-383`, 3.0.0 `:387-397`) checks only the idle deadline when
//!   `ExpireAfterIdle` is set, strictly after it (`time.Now().After`). The reference sweeps every
//!   32 s; expiry here is exact to the caller's clock.
//! - health check (2.1.2/2.2.1+ and 3.0.0 `session/shell.go` `healthcheck`, MEN-6888): a `ping`
//!   with `timeout` = interval + 5 s every interval (60 s); no `pong` for interval + 5 s stops the
//!   shell and deletes the session. Not while the websocket is down: a reconnect restarts the
//!   clock, since no pong can arrive meanwhile.
//!
//! Composition into an engine: the engine forwards protocol-1 frames to the `handle_*` for
//! their type, its link events to [`ShellTable::handle_disconnected`] and
//! [`ShellTable::handle_reconnected`], and includes [`ShellTable::poll_action`] and
//! [`ShellTable::poll_timeout`] in its own. If its link supervisor owns the disconnect grace,
//! it sets [`ShellConfig::disconnect_grace_ms`] to `None` and calls
//! [`ShellTable::handle_reap_orphans`] when the grace passes (and
//! [`ShellTable::handle_stop_all`] when the device is no longer authorized).
//!
//! Ours beyond the reference (see the agent's `shell.rs` for why): a shell the agent ends
//! (expiry, failed health check, local kill, replaced after a reconnect) is reported with a
//! `stop` status 2 [`STOPPED_SHELL_TEXT`]; shells orphaned by a dropped websocket are stopped
//! after the disconnect grace; after a reconnect, a user's new terminal replaces that user's
//! shells the server has not spoken for on the new link when that is what makes room under
//! `MaxPerUser`, oldest input first.

use core::fmt;

use heapless::{Deque, Vec};

use crate::sessions::{Expiry, Id};
use crate::shell::{HEALTHCHECK_INTERVAL_SECS, HEALTHCHECK_TIMEOUT_SECS, TermSize};
use crate::time::Instant;

/// Body of the `stop` (status 2) for a shell the agent ended: what the reference's pty reader
/// sends when its shell is stopped under it.
pub const STOPPED_SHELL_TEXT: &str = "read /dev/ptmx: file already closed";
/// Body of the status-1 reply to a `new` that started a shell.
pub const SHELL_STARTED: &str = "Shell started";
/// Default health-check period (the reference's `healthcheckInterval`).
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = HEALTHCHECK_INTERVAL_SECS * 1000;
/// Default time shells outlive a dropped websocket.
pub const DEFAULT_DISCONNECT_GRACE_MS: u64 = 60_000;

/// Action-queue length a table of `n` sessions needs: the worst single call stops and reports
/// every session (2 actions each) and may start one more shell.
pub const fn queue_len(n: usize) -> usize {
    2 * n + 2
}

/// A table with the reference's 16 shells.
pub type DefaultShellTable =
    ShellTable<{ crate::sessions::DEFAULT_CAPACITY }, { queue_len(crate::sessions::DEFAULT_CAPACITY) }>;

/// Table settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShellConfig {
    /// Most shells at once (`MaxShellsSpawned`; also bounded by the table's capacity).
    pub max_shells: usize,
    /// `Sessions.MaxPerUser` (0 counts as 1).
    pub max_per_user: usize,
    /// Expiry rule ([`Expiry::from_reference`]; `None`: never).
    pub expiry: Option<Expiry>,
    /// Health-check ping period.
    pub health_interval_ms: u64,
    /// How long shells outlive a dropped websocket. `None`: the table does not reap them by
    /// itself; the caller does, with [`ShellTable::handle_reap_orphans`] (when composed into an
    /// engine whose link supervisor owns the grace).
    pub disconnect_grace_ms: Option<u64>,
}

impl Default for ShellConfig {
    /// The reference's: 16 shells, 1 per user, mender-connect 3.0's 600 s idle expiry, 60 s
    /// health check; 60 s disconnect grace.
    fn default() -> Self {
        Self {
            max_shells: crate::sessions::DEFAULT_CAPACITY,
            max_per_user: 1,
            expiry: Expiry::from_reference(true, 0, crate::sessions::DEFAULT_EXPIRE_AFTER_IDLE_S),
            health_interval_ms: DEFAULT_HEALTH_INTERVAL_MS,
            disconnect_grace_ms: Some(DEFAULT_DISCONNECT_GRACE_MS),
        }
    }
}

impl ShellConfig {
    /// How long after the last pong the health check fails (interval + 5 s, as the reference);
    /// also the `timeout` its pings carry.
    pub const fn health_timeout_ms(&self) -> u64 {
        self.health_interval_ms.saturating_add(HEALTHCHECK_TIMEOUT_SECS * 1000)
    }
}

/// Which request a reply answers (its `typ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// `new`
    New,
    /// `stop`
    Stop,
    /// `shell` (input)
    Shell,
}

impl Reply {
    /// The frame's `typ`.
    pub const fn typ(self) -> &'static str {
        match self {
            Self::New => crate::shell::NEW,
            Self::Stop => crate::shell::STOP,
            Self::Shell => crate::shell::SHELL,
        }
    }
}

/// Why a request was refused; the status-2 reply body is [`Refusal::body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `MaxShellsSpawned` shells are running.
    TooManyShells,
    /// This sid already has a shell.
    AlreadyRunning,
    /// The user reached `Sessions.MaxPerUser`.
    TooManyForUser,
    /// A session or user id longer than [`crate::sessions::ID_CAP`].
    IdTooLong,
    /// Input for an unknown session.
    SessionNotFound,
    /// A `stop` without sid for a user with no shell.
    NoShellOfUser,
    /// A `stop` with neither sid nor user.
    StopWithoutIds,
    /// A `stop` for an unknown sid.
    StopNotFound,
}

impl Refusal {
    /// The reply body for a request on session `sid`.
    pub const fn body(self, sid: &str) -> RefusalBody<'_> {
        RefusalBody { refusal: self, sid }
    }
}

/// A refusal's reply body (the reference's texts).
#[derive(Clone, Copy, Debug)]
pub struct RefusalBody<'a> {
    refusal: Refusal,
    sid: &'a str,
}

impl fmt::Display for RefusalBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.refusal {
            Refusal::TooManyShells => f.write_str("too many shells spawned"),
            Refusal::AlreadyRunning => f.write_str("failed to start shell: shell is already running"),
            Refusal::TooManyForUser => f.write_str("user has too many open sessions"),
            Refusal::IdTooLong => f.write_str("failed to start shell: id too long"),
            Refusal::SessionNotFound | Refusal::NoShellOfUser => f.write_str("session not found"),
            Refusal::StopWithoutIds => f.write_str("StopShellMessage: sessionId not given and userId empty"),
            Refusal::StopNotFound => {
                write!(f, "routeMessage: StopShellMessage: session not found for id {}", self.sid)
            }
        }
    }
}

/// Why a shell is being stopped (for the executor's log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// A `stop` from the server.
    Requested,
    /// Idle or absolute expiry.
    Expired,
    /// No `pong` within the health-check timeout.
    HealthCheck,
    /// The websocket has been gone longer than the disconnect grace.
    Orphaned,
    /// Unheard since the reconnect, and its user's new terminal needs the slot.
    Replaced,
    /// The shell ended by itself ([`ShellTable::handle_exited`]).
    Exited,
    /// A local request ([`ShellTable::handle_kill`]).
    Killed,
    /// Everything is being stopped ([`ShellTable::handle_stop_all`]).
    All,
}

/// What the table asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Start a shell for `sid` and report the outcome with [`ShellTable::handle_spawned`]
    /// (the executor sends the "failed to start shell: …" reply itself: only it knows the OS
    /// error). `size` is the requested terminal size, if the `new` gave one; the user is
    /// [`ShellTable::get`]`(sid)` (not repeated here: the largest action sizes the queue).
    SpawnShell {
        /// Session id.
        sid: Id,
        /// Requested terminal size.
        size: Option<TermSize>,
        /// Tells this shell from an earlier one of the same sid ([`ShellTable::handle_exited`]).
        serial: u64,
    },
    /// Stop `sid`'s shell (hang up, kill after a grace, reap); the session is already gone.
    StopShell {
        /// Session id.
        sid: Id,
        /// Why.
        why: StopReason,
    },
    /// Send the server a `stop` status 2 with body [`STOPPED_SHELL_TEXT`] for `sid`.
    SendStop {
        /// Session id.
        sid: Id,
    },
    /// Send a status-1 reply to `reply` on `sid`: body [`SHELL_STARTED`] for `new`, empty for
    /// `stop` (whose `sid` is empty when the request stopped a user's shells).
    SendOk {
        /// Which request.
        reply: Reply,
        /// Session id.
        sid: Id,
    },
    /// Send a status-2 reply to `reply` on `sid` with body `refusal.body(sid)`.
    SendError {
        /// Which request.
        reply: Reply,
        /// Session id.
        sid: Id,
        /// Why.
        refusal: Refusal,
    },
    /// Send a health-check `ping` with `timeout` = `timeout_s` and status 3 on `sid`.
    HealthCheck {
        /// Session id.
        sid: Id,
        /// Seconds, the `timeout` property.
        timeout_s: u64,
    },
}

/// One open session, as [`ShellTable::iter`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellSession {
    /// Session id.
    pub sid: Id,
    /// The server's `user_id` from the `new`.
    pub user: Id,
    /// Which shell of this sid ([`Action::SpawnShell`]).
    pub serial: u64,
    /// When the `new` came.
    pub created: Instant,
    /// Last user input (or `created`).
    pub active: Instant,
    last_pong: Instant,
    next_ping: Instant,
    /// The link ([`ShellTable::handle_reconnected`] counts them) the server last spoke on
    /// for this session.
    heard_on: u32,
}

/// The shell sessions of one device: up to `N` sessions and `Q` (≥ [`queue_len`]`(N)`)
/// queued actions.
#[derive(Clone, Debug)]
pub struct ShellTable<const N: usize, const Q: usize> {
    cfg: ShellConfig,
    sessions: Vec<ShellSession, N>,
    actions: Deque<Action, Q>,
    serial: u64,
    link: u32,
    /// When the websocket dropped; `None` while it is up.
    orphaned_since: Option<Instant>,
    /// Actions dropped on a full queue (only if the caller did not drain it).
    overflowed: u32,
}

fn id(s: &str) -> Option<Id> {
    Id::try_from(s).ok()
}

impl<const N: usize, const Q: usize> ShellTable<N, Q> {
    /// An empty table, link up.
    pub const fn new(cfg: ShellConfig) -> Self {
        const { assert!(Q >= queue_len(N), "the action queue must hold 2 * N + 2 actions") };
        Self {
            cfg,
            sessions: Vec::new(),
            actions: Deque::new(),
            serial: 0,
            link: 0,
            orphaned_since: None,
            overflowed: 0,
        }
    }

    /// The settings.
    pub const fn config(&self) -> &ShellConfig {
        &self.cfg
    }

    /// Most shells at once (configuration bounded by `N`).
    pub fn capacity(&self) -> usize {
        self.cfg.max_shells.min(N)
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True if no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The open sessions, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &ShellSession> {
        self.sessions.iter()
    }

    /// A session by id.
    pub fn get(&self, sid: &str) -> Option<&ShellSession> {
        self.sessions.iter().find(|s| s.sid == sid)
    }

    /// Open sessions of `user`.
    pub fn count_for_user(&self, user: &str) -> usize {
        self.sessions.iter().filter(|s| s.user == user).count()
    }

    /// Actions dropped because the caller did not drain the queue (0 when used as documented).
    pub const fn overflowed(&self) -> u32 {
        self.overflowed
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn push(&mut self, a: Action) {
        if self.actions.push_back(a).is_err() {
            self.overflowed = self.overflowed.saturating_add(1);
        }
    }

    fn refuse(&mut self, reply: Reply, sid: &str, refusal: Refusal) -> Refusal {
        // An over-long sid cannot be echoed back in a reply either: the frame goes out on "".
        let sid = id(sid).unwrap_or_default();
        self.push(Action::SendError { reply, sid, refusal });
        refusal
    }

    fn link_up(&self) -> bool {
        self.orphaned_since.is_none()
    }

    /// Removes session `i` and queues its `StopShell` (and `SendStop` if `tell` and the link is
    /// up: the server drops frames for sessions of a link that is gone).
    fn end(&mut self, i: usize, why: StopReason, tell: bool) {
        let s = self.sessions.remove(i);
        let up = self.link_up();
        if tell && up {
            self.push(Action::StopShell { sid: s.sid.clone(), why });
            self.push(Action::SendStop { sid: s.sid });
        } else {
            self.push(Action::StopShell { sid: s.sid, why });
        }
    }

    fn position(&self, sid: &str) -> Option<usize> {
        self.sessions.iter().position(|s| s.sid == sid)
    }

    /// A `new` from the server. Queues the refusal, or the stops of replaced shells and a
    /// `SpawnShell`; returns the refusal too, for the caller's log.
    pub fn handle_new(
        &mut self,
        sid: &str,
        user: &str,
        size: Option<TermSize>,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.sessions.len() >= self.capacity() {
            return Err(self.refuse(Reply::New, sid, Refusal::TooManyShells));
        }
        if self.get(sid).is_some() {
            return Err(self.refuse(Reply::New, sid, Refusal::AlreadyRunning));
        }
        let (Some(sid_id), Some(user_id)) = (id(sid), id(user)) else {
            return Err(self.refuse(Reply::New, sid, Refusal::IdTooLong));
        };
        let max = self.cfg.max_per_user.max(1);
        self.replace_unheard(user, max);
        if self.count_for_user(user) >= max {
            return Err(self.refuse(Reply::New, sid, Refusal::TooManyForUser));
        }
        self.serial = self.serial.wrapping_add(1);
        let s = ShellSession {
            sid: sid_id.clone(),
            user: user_id,
            serial: self.serial,
            created: now,
            active: now,
            last_pong: now,
            next_ping: now.add_millis(self.cfg.health_interval_ms),
            heard_on: self.link,
        };
        // Cannot fail: the capacity check above bounds the length by N.
        if self.sessions.push(s).is_err() {
            return Err(self.refuse(Reply::New, sid, Refusal::TooManyShells));
        }
        self.push(Action::SpawnShell { sid: sid_id, size, serial: self.serial });
        Ok(())
    }

    /// Makes room for one more shell of `user` under `max` by ending that user's shells the
    /// server has not spoken for since the websocket came back, oldest input first. A dropped
    /// websocket ends the user's terminal on the server (and mender-cli with it), but the shell
    /// outlives the drop for the disconnect grace; without this the user's next terminal would
    /// be refused with "user has too many open sessions" until the orphan's health check fails a
    /// minute later (the symptom of upstream integration PR #2953). A shell whose terminal is
    /// still attached answers health checks and sends input, so it is heard on the new link and
    /// kept. Nothing is stopped unless that makes room.
    fn replace_unheard(&mut self, user: &str, max: usize) {
        let mine = self.count_for_user(user);
        if mine < max {
            return;
        }
        let excess = mine + 1 - max;
        let link = self.link;
        let unheard = |s: &ShellSession| s.user == user && s.heard_on != link;
        if self.sessions.iter().filter(|s| unheard(s)).count() < excess {
            return;
        }
        for _ in 0..excess {
            // The least recently active unheard shell (ties: the smaller sid, as before).
            let oldest = self
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, s)| unheard(s))
                .min_by(|(_, a), (_, b)| (a.active, &a.sid).cmp(&(b.active, &b.sid)))
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                self.end(i, StopReason::Replaced, true);
            }
        }
    }

    /// The executor's outcome of [`Action::SpawnShell`] `serial`: on success the `new` is
    /// answered "Shell started"; on failure the session is forgotten (the executor replies).
    pub fn handle_spawned(&mut self, sid: &str, serial: u64, started: bool) {
        let Some(i) = self.sessions.iter().position(|s| s.sid == sid && s.serial == serial) else { return };
        if started {
            let sid = self.sessions[i].sid.clone();
            self.push(Action::SendOk { reply: Reply::New, sid });
        } else {
            self.sessions.remove(i);
        }
    }

    /// Keystrokes for `sid` (the executor writes them if this returns true): user activity.
    /// An unknown session is answered "session not found".
    pub fn handle_input(&mut self, sid: &str, now: Instant) -> bool {
        let link = self.link;
        match self.sessions.iter_mut().find(|s| s.sid == sid) {
            Some(s) => {
                s.active = now;
                s.heard_on = link;
                true
            }
            None => {
                self.refuse(Reply::Shell, sid, Refusal::SessionNotFound);
                false
            }
        }
    }

    /// A `resize` for `sid` (the executor resizes if this returns true; the reference answers
    /// an unknown session with nothing). Not activity.
    pub fn handle_resize(&mut self, sid: &str) -> bool {
        self.heard(sid).is_some()
    }

    /// A `pong` for `sid`: the health check counts from now. False for an unknown session.
    pub fn handle_pong(&mut self, sid: &str, now: Instant) -> bool {
        match self.heard(sid) {
            Some(s) => {
                s.last_pong = now;
                true
            }
            None => false,
        }
    }

    fn heard(&mut self, sid: &str) -> Option<&mut ShellSession> {
        let link = self.link;
        let s = self.sessions.iter_mut().find(|s| s.sid == sid)?;
        s.heard_on = link;
        Some(s)
    }

    /// A `stop` from the server for `sid`, or for all of `user`'s shells when `sid` is empty.
    /// Returns how many shells are stopped.
    pub fn handle_stop(&mut self, sid: &str, user: &str) -> Result<usize, Refusal> {
        if sid.is_empty() {
            if user.is_empty() {
                return Err(self.refuse(Reply::Stop, "", Refusal::StopWithoutIds));
            }
            let mut n = 0;
            while let Some(i) = self.sessions.iter().position(|s| s.user == user) {
                self.end(i, StopReason::Requested, false);
                n += 1;
            }
            if n == 0 {
                return Err(self.refuse(Reply::Stop, "", Refusal::NoShellOfUser));
            }
            self.push(Action::SendOk { reply: Reply::Stop, sid: Id::new() });
            return Ok(n);
        }
        match self.position(sid) {
            Some(i) => {
                let sid = self.sessions[i].sid.clone();
                self.end(i, StopReason::Requested, false);
                self.push(Action::SendOk { reply: Reply::Stop, sid });
                Ok(1)
            }
            None => Err(self.refuse(Reply::Stop, sid, Refusal::StopNotFound)),
        }
    }

    /// Shell `serial` of `sid` ended by itself (the executor has told the server): the session
    /// is forgotten and its process reaped. A stale report (an older shell of a reused sid) is
    /// ignored; returns whether it was current.
    pub fn handle_exited(&mut self, sid: &str, serial: u64) -> bool {
        match self.sessions.iter().position(|s| s.sid == sid && s.serial == serial) {
            Some(i) => {
                self.end(i, StopReason::Exited, false);
                true
            }
            None => false,
        }
    }

    /// A local request to end `sid` (`mender-connect sessions kill`): stopped, and the server
    /// told. False for an unknown session.
    pub fn handle_kill(&mut self, sid: &str) -> bool {
        match self.position(sid) {
            Some(i) => {
                self.end(i, StopReason::Killed, true);
                true
            }
            None => false,
        }
    }

    /// Stops every shell without telling the server (shutdown, device no longer authorized).
    /// Returns how many.
    pub fn handle_stop_all(&mut self) -> usize {
        let n = self.sessions.len();
        while !self.sessions.is_empty() {
            self.end(0, StopReason::All, false);
        }
        n
    }

    /// The disconnect grace passed (the caller's, when [`ShellConfig::disconnect_grace_ms`] is
    /// `None`): every shell kept across the drop is stopped, without a `stop` frame (the server
    /// forgot those sessions with the link). Returns how many.
    pub fn handle_reap_orphans(&mut self) -> usize {
        let n = self.sessions.len();
        while !self.sessions.is_empty() {
            self.end(0, StopReason::Orphaned, false);
        }
        n
    }

    /// The websocket is gone (idempotent: the first drop counts). Health checks pause and,
    /// after the disconnect grace (if [`ShellConfig::disconnect_grace_ms`] is set), the shells
    /// are stopped unless the link comes back.
    pub fn handle_disconnected(&mut self, now: Instant) {
        self.orphaned_since.get_or_insert(now);
    }

    /// A websocket is up again. The health-check clock restarts (no pong could arrive while it
    /// was down), and sessions count as unheard until the server speaks for them on this link.
    pub fn handle_reconnected(&mut self, now: Instant) {
        self.link = self.link.wrapping_add(1);
        self.orphaned_since = None;
        let next = now.add_millis(self.cfg.health_interval_ms);
        for s in &mut self.sessions {
            s.last_pong = now;
            s.next_ping = next;
        }
    }

    fn expires_at(&self, s: &ShellSession) -> Option<Instant> {
        Some(self.cfg.expiry?.deadline(s.created, s.active))
    }

    fn health_fails_at(&self, s: &ShellSession) -> Instant {
        s.last_pong.add_millis(self.cfg.health_timeout_ms())
    }

    fn orphans_reaped_at(&self) -> Option<Instant> {
        Some(self.orphaned_since?.add_millis(self.cfg.disconnect_grace_ms?))
    }

    /// When [`ShellTable::handle_timeout`] has something to do (`None`: nothing until the next
    /// event).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.sessions.is_empty() {
            return None;
        }
        let up = self.link_up();
        let mut at = self.orphans_reaped_at();
        for s in &self.sessions {
            // Expiry and the health check are strict ("after"): due 1 ms past their deadline.
            let mut t = self.expires_at(s).map(|e| e.add_millis(1));
            if up {
                let health = self.health_fails_at(s).add_millis(1).min(s.next_ping);
                t = Some(t.map_or(health, |e| e.min(health)));
            }
            at = match (at, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        at
    }

    /// Expires sessions, stops orphans after the grace, fails health checks and sends pings,
    /// as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let up = self.link_up();
        let reap_orphans = self.orphans_reaped_at().is_some_and(|at| now >= at);
        let mut i = 0;
        while i < self.sessions.len() {
            // Room for this session's worst case; the rest waits for the next call, which
            // `poll_timeout` makes due at once.
            if self.actions.capacity() - self.actions.len() < 2 {
                return;
            }
            let s = &self.sessions[i];
            if self.expires_at(s).is_some_and(|at| now > at) {
                self.end(i, StopReason::Expired, true);
            } else if reap_orphans {
                self.end(i, StopReason::Orphaned, false);
            } else if up && now > self.health_fails_at(s) {
                self.end(i, StopReason::HealthCheck, true);
            } else if up && now >= s.next_ping {
                // At least 1 ms, so that a zero period cannot make the timer due forever.
                let next = now.add_millis(self.cfg.health_interval_ms.max(1));
                let timeout_s = self.cfg.health_timeout_ms() / 1000;
                let s = &mut self.sessions[i];
                s.next_ping = next;
                let sid = s.sid.clone();
                self.push(Action::HealthCheck { sid, timeout_s });
                i += 1;
            } else {
                i += 1;
            }
        }
    }
}

/// Deterministic simulations on a virtual clock that need no std: run on the host and on the
/// bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    type Table = ShellTable<4, { queue_len(4) }>;
    type Out = Vec<Action, { queue_len(4) }>;

    use crate::selftest::t;

    fn s(v: &str) -> Id {
        Id::try_from(v).unwrap_or_default()
    }

    fn cfg(expiry: Option<Expiry>) -> ShellConfig {
        ShellConfig { expiry, ..ShellConfig::default() }
    }

    fn drain(tab: &mut Table) -> Out {
        let mut out = Out::new();
        while let Some(a) = tab.poll_action() {
            assert!(out.push(a).is_ok());
        }
        out
    }

    /// Opens `sid` for `user` and confirms the spawn; asserts nothing else happened.
    fn open(tab: &mut Table, sid: &str, user: &str, now: Instant) {
        assert_eq!(tab.handle_new(sid, user, None, now), Ok(()));
        let out = drain(tab);
        let serial = match out.as_slice() {
            [Action::SpawnShell { sid: got, serial, .. }]
                if got == sid && tab.get(sid).is_some_and(|x| x.user == user) =>
            {
                *serial
            }
            _ => panic!("expected one spawn"),
        };
        tab.handle_spawned(sid, serial, true);
        assert_eq!(drain(tab).as_slice(), &[Action::SendOk { reply: Reply::New, sid: s(sid) }]);
    }

    /// Runs the clock from `from` to `to` the way an executor does: sleep until
    /// `poll_timeout`, `handle_timeout`, drain. Returns every action with its time.
    fn run(tab: &mut Table, from: u64, to: u64, out: &mut Vec<(u64, Action), 64>) {
        let mut now = from;
        // Bounded: every step either advances the clock or acts.
        for _ in 0..10_000 {
            let Some(at) = tab.poll_timeout() else { return };
            if at.as_millis() > to {
                return;
            }
            now = now.max(at.as_millis());
            tab.handle_timeout(t(now));
            while let Some(a) = tab.poll_action() {
                assert!(out.push((now, a)).is_ok());
            }
        }
        panic!("the timers did not settle");
    }

    fn stops_at(out: &[(u64, Action)], sid: &str) -> Option<u64> {
        out.iter()
            .find_map(|(at, a)| matches!(a, Action::StopShell { sid: x, .. } if x == sid).then_some(*at))
    }

    /// Every configuration combination, in milliseconds of virtual time.
    fn expiry_combinations() {
        // (StopExpired, ExpireAfter s, ExpireAfterIdle s) -> stopped at (ms after start)
        let cases: [(bool, u32, u32, Option<u64>); 8] = [
            (false, 0, 0, None),
            (false, 30, 0, None),
            (false, 0, 30, None),
            (false, 30, 20, None),
            // Both 0: the reference never sweeps (no 1024 s default).
            (true, 0, 0, None),
            (true, 30, 0, Some(30_001)),
            (true, 0, 20, Some(20_001)),
            // Idle wins.
            (true, 30, 20, Some(20_001)),
        ];
        for (stop_expired, after, idle, want) in cases {
            let mut tab = Table::new(ShellConfig {
                health_interval_ms: u64::MAX / 4,
                ..cfg(Expiry::from_reference(stop_expired, after, idle))
            });
            open(&mut tab, "s1", "u1", t(0));
            let mut out = Vec::new();
            run(&mut tab, 0, 2_000_000, &mut out);
            assert_eq!(stops_at(&out, "s1"), want);
            if want.is_some() {
                assert!(matches!(out[0].1, Action::StopShell { why: StopReason::Expired, .. }));
                assert_eq!(out[1].1, Action::SendStop { sid: s("s1") });
                assert!(tab.is_empty());
            } else {
                assert!(out.is_empty());
                assert_eq!(tab.len(), 1);
            }
        }
    }

    /// Input moves the idle deadline; resize and pong do not; absolute expiry ignores input.
    fn idle_expiry_follows_input() {
        let mut tab = Table::new(ShellConfig {
            health_interval_ms: u64::MAX / 4,
            ..cfg(Expiry::from_reference(true, 0, 10))
        });
        open(&mut tab, "s1", "u1", t(0));
        let mut out = Vec::new();
        run(&mut tab, 0, 9_000, &mut out);
        assert!(tab.handle_input("s1", t(9_000)));
        assert!(tab.handle_resize("s1"));
        assert!(tab.handle_pong("s1", t(15_000)));
        run(&mut tab, 9_000, 19_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(tab.poll_timeout(), Some(t(19_001)));
        run(&mut tab, 19_000, 30_000, &mut out);
        assert_eq!(stops_at(&out, "s1"), Some(19_001));

        let mut tab = Table::new(ShellConfig {
            health_interval_ms: u64::MAX / 4,
            ..cfg(Expiry::from_reference(true, 10, 0))
        });
        open(&mut tab, "s1", "u1", t(0));
        assert!(tab.handle_input("s1", t(9_999)));
        let mut out = Vec::new();
        run(&mut tab, 0, 30_000, &mut out);
        assert_eq!(stops_at(&out, "s1"), Some(10_001));
    }

    /// Pings every interval with `timeout` = interval + 5 s; a pong keeps the shell; no pong for
    /// interval + 5 s stops it and tells the server.
    fn health_check_sequence() {
        let mut tab = Table::new(ShellConfig { health_interval_ms: 60_000, ..cfg(None) });
        open(&mut tab, "s1", "u1", t(0));
        let mut out = Vec::new();
        run(&mut tab, 0, 61_000, &mut out);
        assert_eq!(out.as_slice(), &[(60_000, Action::HealthCheck { sid: s("s1"), timeout_s: 65 })]);
        assert!(tab.handle_pong("s1", t(61_000)));
        out.clear();
        run(&mut tab, 61_000, 1_000_000, &mut out);
        // Pinged at 120 s; the pong at 61 s counts until 126 s.
        assert_eq!(out[0], (120_000, Action::HealthCheck { sid: s("s1"), timeout_s: 65 }));
        assert_eq!(out[1], (126_001, Action::StopShell { sid: s("s1"), why: StopReason::HealthCheck }));
        assert_eq!(out[2], (126_001, Action::SendStop { sid: s("s1") }));
        assert_eq!(out.len(), 3);
        assert!(tab.is_empty());
        assert_eq!(tab.poll_timeout(), None);
        assert!(!tab.handle_pong("s1", t(130_000)));
    }

    /// While the websocket is down: no pings, no failed checks; reconnecting restarts the
    /// clock; staying down past the grace stops the shells without a `stop` frame.
    fn disconnect_grace_and_reconnect() {
        let mut tab = Table::new(ShellConfig {
            health_interval_ms: 1_000,
            disconnect_grace_ms: Some(2_000),
            ..cfg(None)
        });
        open(&mut tab, "s1", "u1", t(0));
        tab.handle_disconnected(t(500));
        tab.handle_disconnected(t(900));
        assert_eq!(tab.poll_timeout(), Some(t(2_500)));
        let mut out = Vec::new();
        run(&mut tab, 500, 2_400, &mut out);
        assert!(out.is_empty());
        tab.handle_reconnected(t(2_400));
        run(&mut tab, 2_400, 3_400, &mut out);
        assert_eq!(out.as_slice(), &[(3_400, Action::HealthCheck { sid: s("s1"), timeout_s: 6 })]);
        tab.handle_disconnected(t(3_500));
        out.clear();
        run(&mut tab, 3_500, 10_000, &mut out);
        assert_eq!(out.as_slice(), &[(5_500, Action::StopShell { sid: s("s1"), why: StopReason::Orphaned })]);
        assert!(tab.is_empty());

        // Without a grace of its own, the table waits for the caller's.
        let mut tab =
            Table::new(ShellConfig { health_interval_ms: 1_000, disconnect_grace_ms: None, ..cfg(None) });
        open(&mut tab, "s1", "u1", t(0));
        open(&mut tab, "s2", "u2", t(0));
        tab.handle_disconnected(t(500));
        assert_eq!(tab.poll_timeout(), None);
        assert_eq!(tab.handle_reap_orphans(), 2);
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[
                Action::StopShell { sid: s("s1"), why: StopReason::Orphaned },
                Action::StopShell { sid: s("s2"), why: StopReason::Orphaned }
            ]
        );
    }

    /// After a reconnect a user's new terminal replaces that user's shell the server has not
    /// spoken for on the new link (its `stop` before the new spawn); a shell heard on the new
    /// link is kept and the new terminal refused.
    fn reconnect_replaces_unheard_shells() {
        let mut tab = Table::new(cfg(None));
        open(&mut tab, "old", "alice", t(0));
        open(&mut tab, "bobs", "bob", t(0));
        tab.handle_disconnected(t(10));
        tab.handle_reconnected(t(20));
        assert!(tab.handle_input("bobs", t(30)));
        assert_eq!(tab.handle_new("new", "alice", None, t(40)), Ok(()));
        let out = drain(&mut tab);
        assert_eq!(out[0], Action::StopShell { sid: s("old"), why: StopReason::Replaced });
        assert_eq!(out[1], Action::SendStop { sid: s("old") });
        assert!(matches!(&out[2], Action::SpawnShell { sid, .. } if sid == "new"));
        assert_eq!(out.len(), 3);
        assert_eq!(tab.handle_new("bob2", "bob", None, t(50)), Err(Refusal::TooManyForUser));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[Action::SendError { reply: Reply::New, sid: s("bob2"), refusal: Refusal::TooManyForUser }]
        );
        // Without a reconnect nothing is replaced.
        let mut tab = Table::new(cfg(None));
        open(&mut tab, "a", "alice", t(0));
        assert_eq!(tab.handle_new("b", "alice", None, t(1)), Err(Refusal::TooManyForUser));
    }

    /// With MaxPerUser 2, only as many unheard shells as make room go, oldest input first.
    fn replacement_takes_only_what_makes_room() {
        let mut tab = Table::new(ShellConfig { max_per_user: 2, ..cfg(None) });
        open(&mut tab, "a", "u", t(0));
        open(&mut tab, "b", "u", t(0));
        assert!(tab.handle_input("b", t(5)));
        assert!(tab.handle_input("a", t(6)));
        tab.handle_reconnected(t(10));
        assert_eq!(tab.handle_new("c", "u", None, t(20)), Ok(()));
        let out = drain(&mut tab);
        assert_eq!(out[0], Action::StopShell { sid: s("b"), why: StopReason::Replaced });
        assert_eq!(out.len(), 3);
        assert!(tab.get("a").is_some());
    }

    /// Refusals in the reference's order, capacity, and the stop variants' texts.
    fn refusals_and_stops() {
        let mut tab = Table::new(ShellConfig { max_shells: 2, ..cfg(None) });
        open(&mut tab, "s1", "u1", t(0));
        assert_eq!(tab.handle_new("s1", "u2", None, t(0)), Err(Refusal::AlreadyRunning));
        assert_eq!(tab.handle_new("s2", "u1", None, t(0)), Err(Refusal::TooManyForUser));
        let mut out = drain(&mut tab);
        open(&mut tab, "s2", "u2", t(0));
        // Full comes before "already running".
        assert_eq!(tab.handle_new("s1", "u1", None, t(0)), Err(Refusal::TooManyShells));
        out.extend(drain(&mut tab));
        assert_eq!(out.len(), 3);
        let mut buf: heapless::String<128> = heapless::String::new();
        let texts = [
            (Refusal::AlreadyRunning, "failed to start shell: shell is already running"),
            (Refusal::TooManyForUser, "user has too many open sessions"),
            (Refusal::TooManyShells, "too many shells spawned"),
        ];
        for (a, (refusal, text)) in out.iter().zip(texts) {
            assert!(matches!(a, Action::SendError { reply: Reply::New, refusal: r, .. } if *r == refusal));
            buf.clear();
            assert!(fmt::write(&mut buf, format_args!("{}", refusal.body("s1"))).is_ok());
            assert_eq!(buf.as_str(), text);
        }

        assert_eq!(tab.handle_stop("nope", "u1"), Err(Refusal::StopNotFound));
        buf.clear();
        assert!(fmt::write(&mut buf, format_args!("{}", Refusal::StopNotFound.body("nope"))).is_ok());
        assert_eq!(buf.as_str(), "routeMessage: StopShellMessage: session not found for id nope");
        assert_eq!(tab.handle_stop("", ""), Err(Refusal::StopWithoutIds));
        assert_eq!(tab.handle_stop("", "nobody"), Err(Refusal::NoShellOfUser));
        drain(&mut tab);
        assert_eq!(tab.handle_stop("s1", "u1"), Ok(1));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[
                Action::StopShell { sid: s("s1"), why: StopReason::Requested },
                Action::SendOk { reply: Reply::Stop, sid: s("s1") }
            ]
        );
        assert_eq!(tab.handle_stop("", "u2"), Ok(1));
        assert_eq!(drain(&mut tab).len(), 2);
        assert!(tab.is_empty());
        assert!(!tab.handle_input("s1", t(1)));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[Action::SendError { reply: Reply::Shell, sid: s("s1"), refusal: Refusal::SessionNotFound }]
        );
    }

    /// The const capacity bounds the configuration; a failed spawn frees the slot; an exit
    /// report for an older shell of a reused sid is ignored.
    fn capacity_spawn_failure_and_exits() {
        let mut tab = Table::new(ShellConfig { max_shells: 100, max_per_user: 100, ..cfg(None) });
        for sid in ["a", "b", "c", "d"] {
            open(&mut tab, sid, "u", t(0));
        }
        assert_eq!(tab.handle_new("e", "u", None, t(0)), Err(Refusal::TooManyShells));
        drain(&mut tab);
        let old = tab.get("a").map(|x| x.serial).unwrap_or(0);
        assert_eq!(tab.handle_stop("a", "u"), Ok(1));
        drain(&mut tab);
        assert_eq!(tab.handle_new("a", "u", None, t(1)), Ok(()));
        let new = match drain(&mut tab).as_slice() {
            [Action::SpawnShell { serial, .. }] => *serial,
            _ => panic!("expected a spawn"),
        };
        assert_ne!(old, new);
        tab.handle_spawned("a", new, false);
        assert!(drain(&mut tab).is_empty());
        assert_eq!(tab.len(), 3);
        open(&mut tab, "a", "u", t(2));
        let cur = tab.get("a").map(|x| x.serial).unwrap_or(0);
        assert!(!tab.handle_exited("a", old));
        assert!(tab.handle_exited("a", cur));
        assert_eq!(drain(&mut tab).as_slice(), &[Action::StopShell { sid: s("a"), why: StopReason::Exited }]);
        assert!(tab.handle_kill("b"));
        assert_eq!(drain(&mut tab).len(), 2);
        assert!(!tab.handle_kill("b"));
        assert_eq!(tab.handle_stop_all(), 2);
        assert_eq!(drain(&mut tab).len(), 2);
        assert_eq!(tab.overflowed(), 0);
        let long = [b'x'; crate::sessions::ID_CAP + 1];
        let long = core::str::from_utf8(&long).unwrap_or("");
        assert_eq!(tab.handle_new(long, "u", None, t(0)), Err(Refusal::IdTooLong));
        assert_eq!(tab.handle_new("s", long, None, t(0)), Err(Refusal::IdTooLong));
        assert!(tab.is_empty());
    }

    /// A full table expiring at once, with the queue filled before the call: nothing is
    /// dropped, the rest is done at the next (immediately due) call.
    fn mass_expiry_never_overflows() {
        let mut tab = Table::new(ShellConfig { max_per_user: 4, ..cfg(Expiry::from_reference(true, 1, 0)) });
        for sid in ["a", "b", "c", "d"] {
            open(&mut tab, sid, "u", t(0));
        }
        // An undrained caller: 8 of 10 slots taken.
        for _ in 0..8 {
            assert!(!tab.handle_input("zz", t(0)));
        }
        tab.handle_timeout(t(1_001));
        assert_eq!(tab.len(), 3);
        assert_eq!(tab.poll_timeout(), Some(t(1_001)));
        drain(&mut tab);
        tab.handle_timeout(t(1_001));
        assert_eq!(drain(&mut tab).len(), 6);
        assert!(tab.is_empty());
        assert_eq!(tab.overflowed(), 0);
    }

    /// A reconnect storm: drops shorter than the grace, redials that fail in between (the
    /// grace counts from the first drop), pongs answered only while up. No shell is failed for
    /// a pong it could not get, pings go out only while up, and a drop that outlasts the grace
    /// (counted from its first moment) reaps without a `stop` frame.
    fn reconnect_storm() {
        let mut tab = Table::new(ShellConfig {
            health_interval_ms: 1_000,
            disconnect_grace_ms: Some(3_000),
            ..cfg(None)
        });
        open(&mut tab, "a", "u1", t(0));
        open(&mut tab, "b", "u2", t(0));
        let mut now = 0;
        let mut out = Vec::new();
        for _ in 0..20 {
            // Up for 2.5 s, answering every ping at once.
            let until = now + 2_500;
            while let Some(at) = tab.poll_timeout().filter(|at| at.as_millis() <= until) {
                tab.handle_timeout(at);
                while let Some(a) = tab.poll_action() {
                    match a {
                        Action::HealthCheck { sid, .. } => assert!(tab.handle_pong(&sid, at)),
                        _ => panic!("only pings while up"),
                    }
                }
            }
            now = until;
            // Down for 2.9 s, with a failed redial (another drop report) in between.
            tab.handle_disconnected(t(now));
            tab.handle_disconnected(t(now + 1_000));
            run(&mut tab, now, now + 2_900, &mut out);
            assert!(out.is_empty());
            now += 2_900;
            tab.handle_reconnected(t(now));
        }
        assert_eq!(tab.len(), 2);
        tab.handle_disconnected(t(now));
        tab.handle_disconnected(t(now + 2_000));
        run(&mut tab, now, now + 10_000, &mut out);
        assert_eq!(out.len(), 2);
        assert!(
            out.iter().all(|(at, a)| *at == now + 3_000
                && matches!(a, Action::StopShell { why: StopReason::Orphaned, .. }))
        );
        assert!(tab.is_empty());
    }

    crate::selftests!(
        reconnect_storm,
        expiry_combinations,
        idle_expiry_follows_input,
        health_check_sequence,
        disconnect_grace_and_reconnect,
        reconnect_replaces_unheard_shells,
        replacement_takes_only_what_makes_room,
        refusals_and_stops,
        capacity_spawn_failure_and_exits,
        mass_expiry_never_overflows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::string::{String, ToString};
    use std::vec;

    #[derive(Debug, Clone)]
    enum Ev {
        New(u8, u8),
        Input(u8),
        Resize(u8),
        Pong(u8),
        Stop(u8),
        StopUser(u8),
        Exit(u8),
        SpawnFails(u8),
        Kill(u8),
        StopAll,
        Down,
        Up,
        Wait(u16),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            4 => (0u8..10, 0u8..3).prop_map(|(s, u)| Ev::New(s, u)),
            3 => (0u8..10).prop_map(Ev::Input),
            1 => (0u8..10).prop_map(Ev::Resize),
            2 => (0u8..10).prop_map(Ev::Pong),
            1 => (0u8..10).prop_map(Ev::Stop),
            1 => (0u8..3).prop_map(Ev::StopUser),
            1 => (0u8..10).prop_map(Ev::Exit),
            1 => (0u8..10).prop_map(Ev::SpawnFails),
            1 => (0u8..10).prop_map(Ev::Kill),
            1 => Just(Ev::StopAll),
            1 => Just(Ev::Down),
            1 => Just(Ev::Up),
            4 => (0u16..5000).prop_map(Ev::Wait),
        ]
    }

    proptest! {
        /// A model executor driven by any event sequence: the shells it runs are exactly the
        /// table's sessions after every drain, every stop is for a running shell, limits hold,
        /// nothing overflows, and timeouts never go backwards.
        #[test]
        fn executor_and_table_agree(evs in proptest::collection::vec(ev(), 0..120), max in 1usize..6,
                                    per_user in 0usize..3, which in 0u8..3, interval in prop_oneof![Just(0u64), Just(1_000)]) {
            let expiry = match which {
                0 => None,
                1 => Expiry::from_reference(true, 0, 3),
                _ => Expiry::from_reference(true, 4, 0),
            };
            let cfg = ShellConfig { max_shells: max, max_per_user: per_user, expiry, health_interval_ms: interval, disconnect_grace_ms: Some(2_500) };
            let mut tab = ShellTable::<4, { queue_len(4) }>::new(cfg);
            // sid -> serial of the shell the model runs.
            let mut running: BTreeMap<String, u64> = BTreeMap::new();
            let mut fail_next: Option<String> = None;
            let mut now = 0u64;
            for e in evs {
                let sid = |s: u8| std::format!("s{s}");
                let uid = |u: u8| std::format!("u{u}");
                let at = Instant::from_millis(now);
                match e {
                    Ev::New(s, u) => { let _ = tab.handle_new(&sid(s), &uid(u), None, at); }
                    Ev::Input(s) => { let _ = tab.handle_input(&sid(s), at); }
                    Ev::Resize(s) => { let _ = tab.handle_resize(&sid(s)); }
                    Ev::Pong(s) => { let _ = tab.handle_pong(&sid(s), at); }
                    Ev::Stop(s) => { let _ = tab.handle_stop(&sid(s), "u0"); }
                    Ev::StopUser(u) => { let _ = tab.handle_stop("", &uid(u)); }
                    Ev::Exit(s) => {
                        if let Some(serial) = running.get(&sid(s)).copied() {
                            prop_assert!(tab.handle_exited(&sid(s), serial));
                        }
                    }
                    Ev::SpawnFails(s) => fail_next = Some(sid(s)),
                    Ev::Kill(s) => { let _ = tab.handle_kill(&sid(s)); }
                    Ev::StopAll => { let _ = tab.handle_stop_all(); }
                    Ev::Down => tab.handle_disconnected(at),
                    Ev::Up => tab.handle_reconnected(at),
                    Ev::Wait(ms) => {
                        let until = now + u64::from(ms);
                        let mut steps = 0;
                        while let Some(due) = tab.poll_timeout().map(Instant::as_millis) {
                            if due > until { break; }
                            // A due time in the past is fine (due at once) as long as
                            // handling it makes progress.
                            steps += 1;
                            prop_assert!(steps <= 6_000, "handle_timeout makes no progress");
                            now = now.max(due);
                            tab.handle_timeout(Instant::from_millis(now));
                            execute(&mut tab, &mut running, &mut fail_next)?;
                        }
                        now = until;
                    }
                }
                execute(&mut tab, &mut running, &mut fail_next)?;
                let open: std::vec::Vec<(String, u64)> = tab.iter().map(|s| (s.sid.to_string(), s.serial)).collect();
                let model: std::vec::Vec<(String, u64)> = running.iter().map(|(k, v)| (k.clone(), *v)).collect();
                let mut open_sorted = open.clone();
                open_sorted.sort();
                prop_assert_eq!(open_sorted, model);
                prop_assert!(tab.len() <= max.min(4));
                for s in tab.iter() {
                    prop_assert!(tab.count_for_user(&s.user) <= per_user.max(1));
                }
                prop_assert_eq!(tab.overflowed(), 0);
            }
        }
    }

    fn execute(
        tab: &mut ShellTable<4, { queue_len(4) }>,
        running: &mut BTreeMap<String, u64>,
        fail_next: &mut Option<String>,
    ) -> Result<(), TestCaseError> {
        let mut stopped: std::vec::Vec<String> = std::vec::Vec::new();
        while let Some(a) = tab.poll_action() {
            match a {
                Action::SpawnShell { sid, serial, .. } => {
                    prop_assert!(!running.contains_key(sid.as_str()), "spawned twice: {}", sid);
                    let ok = fail_next.take_if(|f| f.as_str() == sid.as_str()).is_none();
                    if ok {
                        running.insert(sid.to_string(), serial);
                    }
                    tab.handle_spawned(&sid, serial, ok);
                }
                Action::StopShell { sid, .. } => {
                    prop_assert!(
                        running.remove(sid.as_str()).is_some(),
                        "stopped a shell not running: {}",
                        sid
                    );
                    stopped.push(sid.to_string());
                }
                Action::SendStop { sid } => {
                    prop_assert!(stopped.contains(&sid.to_string()), "stop frame for a live shell")
                }
                Action::HealthCheck { sid, .. } => prop_assert!(running.contains_key(sid.as_str())),
                Action::SendOk { .. } | Action::SendError { .. } => {}
            }
        }
        Ok(())
    }
}
