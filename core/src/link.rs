//! The link supervisor: when to dial the server, when to close the websocket, when to ask the
//! auth source for its token again, and what happens to sessions kept across a dropped link.
//!
//! Sans-IO, in quinn-proto's shape: the caller reports events (`handle_*`, each with `now`),
//! drains [`Supervisor::poll_action`] after every call, arms one timer at
//! [`Supervisor::poll_timeout`] and calls [`Supervisor::handle_timeout`] when it fires.
//!
//! ```text
//!                 credentials (changed, or unchanged while idle/held)
//!   NoCredentials ─────────────────────────────────────────────┐
//!        ^  revoked / unauthorized (from any state)             v
//!        │                          retry due     ┌──────── Dialing ──failed──> Waiting
//!      Held <── retry due, re-read pending ── Waiting <─┘         │ connected       ^
//!        └── credentials (any) ──> Dialing              Up <──────┘                 │
//!                                                        └──── link closed ─────────┘
//! ```
//!
//! # The reference's behaviour (mender-connect 2.1.0 / 3.0.0), and what differs
//!
//! Checked in `connectionmanager/connectionmanager.go`, `connectionmanager/exponentialbackoff.go`
//! and `app/daemon.go`:
//! - 2.1.0 redials after a fixed `ReconnectIntervalSeconds` (default 5 s) between attempts, with
//!   no jitter. Later releases (`exponentialbackoff.go`) start at one unit, double every 3
//!   attempts up to a maximum, and add a random 0..5 units. This crate uses full jitter
//!   ([`crate::backoff`]): `random in [0, min(cap, base * 2^attempt)]`, the counter reset only
//!   after a link stayed up for `stable_after_ms` (a server that accepts and drops at once
//!   cannot make the device redial in a tight loop).
//! - Before a reconnect, the reference's D-Bus loop calls `GetJWTToken` again and dials with
//!   what it returns (`dbusEventLoop`, `needsReconnect`). Here: after a failed dial or a dropped
//!   link the supervisor emits [`LinkAction::RequestReread`] (when the credential source can
//!   answer one, [`LinkConfig::reread`]) and holds the redial until the answer arrives
//!   ([`LinkState::Held`]), since a local proxy may have moved and its old port may now be
//!   anyone's.
//! - An empty token (`JwtTokenStateChange` to unauthorized) makes the reference terminate all
//!   sessions and close the connection (`gotAuthToken`): [`CredentialsUpdate::Unauthorized`]
//!   gives [`LinkAction::StopAllSessions`] and a close.
//! - The reference keeps shell sessions across a dropped websocket until they expire. Here they
//!   are kept for `disconnect_grace_ms`, then [`LinkAction::ReapOrphans`] (a reconnect within the
//!   grace keeps them).

use core::time::Duration;

use heapless::Deque;

use crate::backoff::{Backoff, BackoffConfig};
use crate::time::Instant;

/// How long a link must have lasted to reset the backoff (the agent's value).
pub const STABLE_AFTER_MS: u64 = 60_000;
/// How long sessions survive a dropped link, by default.
pub const DEFAULT_DISCONNECT_GRACE_MS: u64 = 60_000;
/// Shortest first backoff bound: a 0 s `ReconnectIntervalSeconds` must not mean a busy loop.
pub const MIN_BACKOFF_BASE_MS: u64 = 100;

/// Supervisor parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// How long sessions kept across a dropped link survive it.
    pub disconnect_grace_ms: u64,
    /// The credential source can confirm its token on request (D-Bus: yes; a standalone device
    /// authenticating itself: no). With it, every redial waits for that confirmation.
    pub reread: bool,
}

/// The agent's reconnect delays from the configuration: `ReconnectIntervalSeconds` as the first
/// bound (at least [`MIN_BACKOFF_BASE_MS`]), `ReconnectMaxIntervalSeconds` as the cap. Used for
/// the websocket ([`LinkConfig::new`]) and for standalone mode's authentication requests.
pub const fn backoff_config(
    reconnect_base_ms: u64,
    reconnect_max_ms: u64,
    stable_after_ms: u64,
) -> BackoffConfig {
    let base_ms =
        if reconnect_base_ms < MIN_BACKOFF_BASE_MS { MIN_BACKOFF_BASE_MS } else { reconnect_base_ms };
    BackoffConfig { base_ms, cap_ms: reconnect_max_ms, stable_after_ms }
}

impl LinkConfig {
    /// The agent's scheme: [`backoff_config`] with [`STABLE_AFTER_MS`].
    pub const fn new(
        reconnect_base_ms: u64,
        reconnect_max_ms: u64,
        disconnect_grace_ms: u64,
        reread: bool,
    ) -> Self {
        Self {
            backoff: backoff_config(reconnect_base_ms, reconnect_max_ms, STABLE_AFTER_MS),
            disconnect_grace_ms,
            reread,
        }
    }
}

/// What the credential source said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsUpdate {
    /// No token (the device is not authorized).
    Unauthorized,
    /// A token and server URL equal to the last ones (e.g. the answer to a re-read).
    Unchanged,
    /// A new token or server URL.
    Changed,
}

/// Where the link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No usable credentials.
    NoCredentials,
    /// The redial is due but waits for the credential source to confirm the token.
    Held,
    /// Waiting before the next dial.
    Waiting {
        /// When the dial is due.
        until: Instant,
    },
    /// A dial is in progress.
    Dialing,
    /// Connected.
    Up {
        /// Since when.
        since: Instant,
    },
}

/// What the caller must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkAction {
    /// Dial the server with the current credentials (replacing any dial in progress).
    Dial,
    /// Abandon the dial in progress.
    CancelDial,
    /// Close the websocket (close frame, writer stopped) and drop everything bound to it:
    /// control sessions and their handlers. Shell sessions stay (orphaned) for the grace.
    CloseLink,
    /// Ask the credential source to confirm its token; answer with `handle_credentials`.
    RequestReread,
    /// The server refused the token (HTTP 401): ask the auth service for a new one.
    RefreshToken,
    /// The device is no longer authorized: stop every session.
    StopAllSessions,
    /// The disconnect grace passed: stop the sessions kept across the drop (the server forgot
    /// them with the link, so it is not told).
    ReapOrphans,
    /// A redial came due while the token re-read is unanswered: it waits for the answer.
    AwaitReread,
}

/// Splitmix64: the backoff's jitter, seeded by the caller.
#[derive(Clone, Debug)]
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The link supervisor.
#[derive(Clone, Debug)]
pub struct Supervisor {
    cfg: LinkConfig,
    state: LinkState,
    backoff: Backoff,
    jitter: Jitter,
    awaiting_reread: bool,
    orphaned_since: Option<Instant>,
    reaped: bool,
    actions: Deque<LinkAction, 8>,
}

impl Supervisor {
    /// A supervisor without credentials; `seed` (random, from the caller) drives the jitter.
    pub fn new(cfg: LinkConfig, seed: u64) -> Self {
        Self {
            cfg,
            state: LinkState::NoCredentials,
            backoff: Backoff::new(cfg.backoff),
            jitter: Jitter(seed),
            awaiting_reread: false,
            orphaned_since: None,
            reaped: false,
            actions: Deque::new(),
        }
    }

    /// The configuration.
    pub const fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Where the link is.
    pub const fn state(&self) -> LinkState {
        self.state
    }

    /// Whether the link is up.
    pub const fn is_up(&self) -> bool {
        matches!(self.state, LinkState::Up { .. })
    }

    /// Since when sessions are orphaned (the link they were opened on dropped and no new one
    /// is up); `None` while up or before any drop.
    pub const fn orphaned_since(&self) -> Option<Instant> {
        self.orphaned_since
    }

    /// Failed attempts counted by the backoff since its last reset.
    pub const fn attempt(&self) -> u32 {
        self.backoff.attempt()
    }

    /// Whether a redial waits for the credential source's answer.
    pub const fn awaiting_reread(&self) -> bool {
        self.awaiting_reread
    }

    fn push(&mut self, a: LinkAction) {
        // At most one of each kind is pending, and there are fewer kinds than slots, so this
        // never fails even if the caller does not drain between calls.
        if !self.actions.iter().any(|x| *x == a) {
            let _ = self.actions.push_back(a);
        }
    }

    /// The next action, if any. Drain after every `handle_*` call.
    pub fn poll_action(&mut self) -> Option<LinkAction> {
        self.actions.pop_front()
    }

    /// When [`Supervisor::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.state {
            LinkState::Waiting { until } => Some(until),
            _ => None,
        };
        let reap = self.reap_at();
        match (retry, reap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn reap_at(&self) -> Option<Instant> {
        match self.orphaned_since {
            Some(t) if !self.reaped => Some(t.add_millis(self.cfg.disconnect_grace_ms)),
            _ => None,
        }
    }

    /// Timers: a due redial, the end of the disconnect grace.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let LinkState::Waiting { until } = self.state {
            if now >= until {
                if self.awaiting_reread {
                    self.state = LinkState::Held;
                    self.push(LinkAction::AwaitReread);
                } else {
                    self.dial();
                }
            }
        }
        if self.reap_at().is_some_and(|t| now >= t) {
            self.reaped = true;
            self.push(LinkAction::ReapOrphans);
        }
    }

    fn dial(&mut self) {
        self.state = LinkState::Dialing;
        self.push(LinkAction::Dial);
    }

    /// Ends the current link or dial. Returns whether a link that was up went down.
    fn disconnect(&mut self, now: Instant) -> bool {
        match self.state {
            LinkState::Up { .. } => {
                self.backoff.on_disconnected(now);
                self.orphaned_since.get_or_insert(now);
                self.reaped = false;
                self.push(LinkAction::CloseLink);
                self.state = LinkState::NoCredentials;
                true
            }
            LinkState::Dialing => {
                self.push(LinkAction::CancelDial);
                self.state = LinkState::NoCredentials;
                false
            }
            _ => {
                self.state = LinkState::NoCredentials;
                false
            }
        }
    }

    fn request_reread(&mut self) {
        if self.cfg.reread {
            self.awaiting_reread = true;
            self.push(LinkAction::RequestReread);
        }
    }

    fn wait(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay_ms(self.jitter.next());
        self.state = LinkState::Waiting { until: now.add_millis(delay) };
        Duration::from_millis(delay)
    }

    /// The credential source reported (an answer to a re-read included). Returns whether a
    /// link that was up went down.
    pub fn handle_credentials(&mut self, update: CredentialsUpdate, now: Instant) -> bool {
        self.awaiting_reread = false;
        match update {
            CredentialsUpdate::Unauthorized => {
                self.push(LinkAction::StopAllSessions);
                self.disconnect(now)
            }
            CredentialsUpdate::Changed => {
                let dropped = self.disconnect(now);
                self.dial();
                dropped
            }
            CredentialsUpdate::Unchanged => {
                if matches!(self.state, LinkState::NoCredentials | LinkState::Held) {
                    self.dial();
                }
                false
            }
        }
    }

    /// The credential source went away (its token is no longer trusted). Returns whether a
    /// link that was up went down.
    pub fn handle_revoked(&mut self, now: Instant) -> bool {
        self.awaiting_reread = false;
        self.disconnect(now)
    }

    /// The dial succeeded.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state != LinkState::Dialing {
            return;
        }
        self.state = LinkState::Up { since: now };
        self.backoff.on_connected(now);
        self.orphaned_since = None;
        self.reaped = false;
    }

    /// The dial failed (`unauthorized`: HTTP 401). Returns the delay before the next attempt.
    pub fn handle_dial_failed(&mut self, unauthorized: bool, now: Instant) -> Option<Duration> {
        if self.state != LinkState::Dialing {
            return None;
        }
        if unauthorized {
            self.push(LinkAction::RefreshToken);
        }
        self.request_reread();
        Some(self.wait(now))
    }

    /// The websocket ended (read or write error, close from the server, write deadline).
    /// Returns the delay before the next attempt, `None` if the link was not up.
    pub fn handle_link_closed(&mut self, now: Instant) -> Option<Duration> {
        if !self.disconnect(now) {
            return None;
        }
        let delay = self.wait(now);
        self.request_reread();
        Some(delay)
    }

    /// The daemon stops: close whatever is open.
    pub fn handle_shutdown(&mut self, now: Instant) -> bool {
        self.awaiting_reread = false;
        self.disconnect(now)
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    use crate::selftest::t;

    fn cfg(reread: bool) -> LinkConfig {
        LinkConfig {
            backoff: BackoffConfig { base_ms: 1_000, cap_ms: 8_000, stable_after_ms: 60_000 },
            disconnect_grace_ms: 60_000,
            reread,
        }
    }

    fn drain(s: &mut Supervisor) -> heapless::Vec<LinkAction, 8> {
        let mut v = heapless::Vec::new();
        while let Some(a) = s.poll_action() {
            v.push(a).expect("fewer than 8 actions");
        }
        v
    }

    fn up(s: &mut Supervisor, now: Instant) {
        assert!(!s.handle_credentials(CredentialsUpdate::Changed, now));
        assert_eq!(drain(s).as_slice(), &[LinkAction::Dial]);
        s.handle_connected(now);
        assert!(s.is_up());
    }

    /// Many drops right after connecting: the bound doubles up to the cap and stays there; a
    /// link that stays up for the stable period resets it.
    fn reconnect_storm_backoff_grows_caps_and_resets() {
        let mut s = Supervisor::new(cfg(false), 7);
        let mut now = t(0);
        up(&mut s, now);
        let mut bounds = [0u64; 8];
        for b in &mut bounds {
            now = now.add_millis(10);
            let delay = s.handle_link_closed(now).expect("was up");
            *b = 1_000u64 << s.attempt().saturating_sub(1).min(3);
            assert!(delay.as_millis() as u64 <= *b, "{} > {}", delay.as_millis(), b);
            assert_eq!(drain(&mut s).as_slice(), &[LinkAction::CloseLink]);
            let LinkState::Waiting { until } = s.state() else { panic!("not waiting") };
            // The grace timer (60 s from this drop) is later than the retry.
            assert_eq!(s.poll_timeout(), Some(until));
            now = until;
            s.handle_timeout(now);
            assert_eq!(drain(&mut s).as_slice(), &[LinkAction::Dial]);
            s.handle_connected(now);
        }
        assert_eq!(bounds, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000, 8_000, 8_000]);
        assert_eq!(s.attempt(), 8);
        // Up for 59.999 s: not stable, the counter keeps growing.
        now = now.add_millis(59_999);
        s.handle_link_closed(now);
        assert_eq!(s.attempt(), 9);
        let LinkState::Waiting { until } = s.state() else { panic!() };
        s.handle_timeout(until);
        drain(&mut s);
        s.handle_connected(until);
        // Up for 60 s: the next delay is drawn from the first bound again.
        now = until.add_millis(60_000);
        let delay = s.handle_link_closed(now).unwrap();
        assert_eq!(s.attempt(), 1);
        assert!(delay.as_millis() <= 1_000);
    }

    /// Full jitter: the delays of two seeds differ, and each lies within its bound.
    fn jitter_comes_from_the_seed() {
        let delays = |seed| {
            let mut s = Supervisor::new(cfg(false), seed);
            up(&mut s, t(0));
            let mut d = [0u128; 4];
            for x in &mut d {
                *x = s.handle_link_closed(t(1)).unwrap().as_millis();
                drain(&mut s);
                s.handle_timeout(t(100_000));
                drain(&mut s);
                s.handle_connected(t(1));
            }
            d
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    /// A failed dial asks for a re-read and the redial waits for its answer; an unchanged
    /// answer then dials at once.
    fn reread_gates_the_redial() {
        let mut s = Supervisor::new(cfg(true), 1);
        s.handle_credentials(CredentialsUpdate::Changed, t(0));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::Dial]);
        let delay = s.handle_dial_failed(true, t(5)).unwrap();
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::RefreshToken, LinkAction::RequestReread]);
        assert!(s.awaiting_reread());
        let due = t(5).add_millis(delay.as_millis() as u64);
        assert_eq!(s.poll_timeout(), Some(due));
        s.handle_timeout(due);
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::AwaitReread]);
        assert_eq!(s.state(), LinkState::Held);
        assert_eq!(s.poll_timeout(), None);
        s.handle_credentials(CredentialsUpdate::Unchanged, due.add_millis(3));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::Dial]);
        assert_eq!(s.state(), LinkState::Dialing);

        // The answer arrives before the retry is due: the retry dials on time, once.
        s.handle_dial_failed(false, t(100_000));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::RequestReread]);
        s.handle_credentials(CredentialsUpdate::Unchanged, t(100_001));
        assert!(drain(&mut s).is_empty());
        let until = s.poll_timeout().unwrap();
        s.handle_timeout(until);
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::Dial]);

        // Without re-read support the redial does not wait.
        let mut s = Supervisor::new(cfg(false), 1);
        up(&mut s, t(0));
        s.handle_link_closed(t(10));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::CloseLink]);
        s.handle_timeout(s.poll_timeout().unwrap());
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::Dial]);
    }

    /// Revocation closes an open link, abandons a dial, cancels a pending retry and a pending
    /// re-read; nothing dials until new credentials arrive.
    fn revocation_while_up_dialling_and_waiting() {
        let mut s = Supervisor::new(cfg(true), 3);
        up(&mut s, t(0));
        assert!(s.handle_revoked(t(10)));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::CloseLink]);
        assert_eq!(s.state(), LinkState::NoCredentials);
        assert_eq!(s.orphaned_since(), Some(t(10)));
        // Only the grace timer is left.
        assert_eq!(s.poll_timeout(), Some(t(60_010)));
        // An unchanged token (a late re-read answer for the revoked source) does dial: the
        // caller reports Unchanged only against credentials it still holds, and it dropped them.
        s.handle_credentials(CredentialsUpdate::Changed, t(20));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::Dial]);
        assert!(!s.handle_revoked(t(30)));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::CancelDial]);
        // Waiting with a re-read pending: revoked, then the retry timer no longer exists.
        s.handle_credentials(CredentialsUpdate::Changed, t(40));
        s.handle_dial_failed(false, t(50));
        drain(&mut s);
        assert!(s.awaiting_reread());
        s.handle_revoked(t(60));
        assert!(drain(&mut s).is_empty());
        assert!(!s.awaiting_reread());
        assert_eq!(s.state(), LinkState::NoCredentials);
        s.handle_timeout(t(59_999));
        assert!(drain(&mut s).is_empty());
    }

    /// Unauthorized: every session stops, the link closes, and no dial follows.
    fn unauthorized_stops_sessions() {
        let mut s = Supervisor::new(cfg(true), 3);
        up(&mut s, t(0));
        assert!(s.handle_credentials(CredentialsUpdate::Unauthorized, t(5)));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::StopAllSessions, LinkAction::CloseLink]);
        assert_eq!(s.state(), LinkState::NoCredentials);
        // A changed token while up: close, then dial at once (no backoff).
        up(&mut s, t(10));
        assert!(s.handle_credentials(CredentialsUpdate::Changed, t(20)));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::CloseLink, LinkAction::Dial]);
        // The same token again while dialling: nothing.
        s.handle_credentials(CredentialsUpdate::Unchanged, t(21));
        assert!(drain(&mut s).is_empty());
    }

    /// Sessions kept across a drop are reaped once, when the grace ends; a reconnect within
    /// the grace keeps them; the grace counts from the first drop.
    fn disconnect_grace_expiry_and_reaping() {
        let mut s = Supervisor::new(cfg(false), 5);
        up(&mut s, t(0));
        s.handle_link_closed(t(1_000));
        drain(&mut s);
        // Redial fails a few times: orphaned_since stays at the first drop.
        for _ in 0..3 {
            let until = match s.state() {
                LinkState::Waiting { until } => until,
                _ => panic!(),
            };
            s.handle_timeout(until);
            drain(&mut s);
            s.handle_dial_failed(false, until);
        }
        assert_eq!(s.orphaned_since(), Some(t(1_000)));
        let mut now = t(1_000);
        let mut reaped = 0;
        while now < t(70_000) {
            let next = s.poll_timeout().unwrap();
            assert!(next >= now);
            now = next;
            s.handle_timeout(now);
            for a in drain(&mut s) {
                match a {
                    LinkAction::ReapOrphans => {
                        assert_eq!(now, t(61_000));
                        reaped += 1;
                    }
                    LinkAction::Dial => s.handle_dial_failed(false, now).map(|_| ()).unwrap_or(()),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(reaped, 1);
        // Reconnect within the grace: no reaping.
        let mut s = Supervisor::new(cfg(false), 5);
        up(&mut s, t(0));
        s.handle_link_closed(t(1_000));
        drain(&mut s);
        let until = s.poll_timeout().unwrap();
        s.handle_timeout(until);
        drain(&mut s);
        s.handle_connected(until);
        assert_eq!(s.orphaned_since(), None);
        assert_eq!(s.poll_timeout(), None);
        s.handle_timeout(t(1_000_000));
        assert!(drain(&mut s).is_empty());
    }

    /// Events that do not fit the state are ignored.
    fn stale_events_are_ignored() {
        let mut s = Supervisor::new(cfg(false), 5);
        s.handle_connected(t(0));
        assert_eq!(s.state(), LinkState::NoCredentials);
        assert_eq!(s.handle_dial_failed(true, t(0)), None);
        assert_eq!(s.handle_link_closed(t(0)), None);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), None);
        up(&mut s, t(1));
        assert!(s.handle_shutdown(t(2)));
        assert_eq!(drain(&mut s).as_slice(), &[LinkAction::CloseLink]);
    }

    crate::selftests!(
        reconnect_storm_backoff_grows_caps_and_resets,
        jitter_comes_from_the_seed,
        reread_gates_the_redial,
        revocation_while_up_dialling_and_waiting,
        unauthorized_stops_sessions,
        disconnect_grace_expiry_and_reaping,
        stale_events_are_ignored,
    );
}
