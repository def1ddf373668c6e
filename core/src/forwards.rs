//! The port-forward connection table (`proto` 3) as a sans-IO state machine, in the shape of
//! [`crate::shells::ShellTable`]: `handle_*(…, now)`, [`ForwardTable::poll_action`],
//! [`ForwardTable::poll_timeout`], [`ForwardTable::handle_timeout`].
//!
//! It decides which `new` is admitted (`PortForward.MaxConnectionsPerSession` per session,
//! `PortForward.MaxConnections` on the device; a reused connection id replaces its connection,
//! which the reference leaks), keeps each connection's flow state (forwards from the user handed
//! to the executor and not yet written and acked, at most [`INBOUND_QUEUE`]: the user side
//! waits for each ack, so more is a misbehaving peer and ends the connection; one `forward` of
//! the device's in flight until the user acks it), and closes connections that take longer
//! than the connect timeout to dial or carry no traffic, either way, for the idle timeout. The
//! executor owns the sockets and the bytes: it validates the `new` body with the codec
//! ([`crate::portforward::PortForwardNew::target`]), dials, writes, reads, and reports back.
//!
//! Reference: mender-connect 2.1.0 `session/portforward.go` (texts, one `ack` per `forward`, one
//! device `forward` in flight, a user's `stop` answered with `stop`, EOF or error sends `stop`;
//! its idle timeout is 600 s of no reads from the target, ours counts both directions, and it
//! has no dial timeout, no per-session or device limit, and no bound on unacked forwards).

use core::fmt;

use heapless::{Deque, Vec};

use crate::sessions::Id;
use crate::time::Instant;

/// Forwards from the user handed to the executor and not yet acked, per connection.
pub const INBOUND_QUEUE: u8 = 2;
/// Default `PortForward.MaxConnectionsPerSession` (a browser opens about 6 per host).
pub const DEFAULT_MAX_PER_SESSION: usize = 16;
/// Default `PortForward.MaxConnections` over all sessions.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default dial timeout (the reference has none: the OS's ~2 min).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 30_000;

/// Action-queue length a table of `n` connections needs: the worst single call closes and
/// reports every connection (2 actions each) and may add two more.
pub const fn queue_len(n: usize) -> usize {
    2 * n + 2
}

/// Table settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Open or dialling connections of one session.
    pub max_per_session: usize,
    /// Open or dialling connections of all sessions (also bounded by the table's capacity).
    pub max_connections: usize,
    /// A dial not done after this long is abandoned.
    pub connect_timeout_ms: u64,
    /// An open connection without traffic either way for this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_per_session: DEFAULT_MAX_PER_SESSION,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            idle_timeout_ms: crate::portforward::CONNECTION_TIMEOUT_MS,
        }
    }
}

/// Why a message was refused; the `error` body's `err` is [`Refusal::text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A `new` without connection id (or an id longer than [`crate::sessions::ID_CAP`]).
    Invalid,
    /// `MaxConnectionsPerSession` reached.
    TooManyInSession,
    /// `MaxConnections` reached.
    TooManyOnDevice,
    /// A message for a connection that is not open.
    UnknownConnection,
    /// A `forward` while [`INBOUND_QUEUE`] are unacked: the connection is ended.
    Unacked,
}

impl Refusal {
    /// The error text, with the limits of `cfg`.
    pub const fn text(self, cfg: &ForwardConfig) -> RefusalText {
        RefusalText { refusal: self, per_session: cfg.max_per_session, device: cfg.max_connections }
    }
}

/// A refusal's text ([`Refusal::text`]).
#[derive(Clone, Copy, Debug)]
pub struct RefusalText {
    refusal: Refusal,
    per_session: usize,
    device: usize,
}

impl fmt::Display for RefusalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.refusal {
            Refusal::Invalid => {
                f.write_str("invalid port-forward message: missing connection_id, remote_port or protocol")
            }
            Refusal::TooManyInSession => write!(
                f,
                "too many port-forward connections in this session (at most {}, PortForward.MaxConnectionsPerSession)",
                self.per_session
            ),
            Refusal::TooManyOnDevice => write!(
                f,
                "too many port-forward connections on this device (at most {}, PortForward.MaxConnections)",
                self.device
            ),
            Refusal::UnknownConnection => f.write_str("unknown connection"),
            Refusal::Unacked => f.write_str("too many unacknowledged forward messages"),
        }
    }
}

/// Which message a reply or error is about (its `typ`, or the error's `msgtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Msg {
    /// `new`
    New,
    /// `forward`
    Forward,
    /// `ack`
    Ack,
    /// `stop`
    Stop,
}

impl Msg {
    /// Wire name.
    pub const fn typ(self) -> &'static str {
        match self {
            Self::New => crate::portforward::NEW,
            Self::Forward => crate::portforward::FORWARD,
            Self::Ack => crate::portforward::ACK,
            Self::Stop => crate::portforward::STOP,
        }
    }
}

/// Why a connection is closed (for the executor's log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// A `stop` from the user.
    Requested,
    /// A `new` reused its id.
    Replaced,
    /// Too many unacked forwards.
    Unacked,
    /// The dial took longer than the connect timeout (the executor sends the dial error).
    DialTimedOut,
    /// No traffic for the idle timeout.
    Idle,
    /// The target ended it (EOF, error): the executor's report.
    Ended,
    /// Its session ended.
    SessionClosed,
}

/// What the table asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Dial the target of the `new` just handled; report with [`ForwardTable::handle_dialed`].
    Dial {
        /// Session id.
        sid: Id,
        /// Connection id.
        cid: Id,
    },
    /// Close the connection's socket and drop what it queued.
    Close {
        /// Session id.
        sid: Id,
        /// Connection id.
        cid: Id,
        /// Why.
        why: CloseReason,
    },
    /// Send the user side `typ` (`new` once dialled, `ack` once a forward is written, `stop`
    /// when the connection ends) with only `connection_id`.
    Send {
        /// Which message.
        msg: Msg,
        /// Session id.
        sid: Id,
        /// Connection id.
        cid: Id,
    },
    /// Send an `error` with `msgtype` `about` and text `refusal.text(config)`.
    SendError {
        /// What it is about.
        about: Msg,
        /// Session id.
        sid: Id,
        /// Why.
        refusal: Refusal,
    },
    /// The user acked the device's forward: the executor may read and send the next one.
    ReadMore {
        /// Session id.
        sid: Id,
        /// Connection id.
        cid: Id,
    },
}

/// One connection's state (opaque: kept by a [`ForwardStore`]).
#[derive(Clone, Debug)]
pub struct Conn {
    sid: Id,
    cid: Id,
    /// False while dialling (since `opened`).
    open: bool,
    opened: Instant,
    last_activity: Instant,
    unacked_in: u8,
    awaiting_ack: bool,
}

/// Where a [`ForwardTable`] keeps its connections and queued actions: fixed capacities
/// ([`FixedForwards`]) on a microcontroller, or storage that grows on demand (the agent allows
/// up to 4096 connections, which fixed would hold megabytes from the start).
pub trait ForwardStore {
    /// The connections.
    fn conns(&self) -> &[Conn];
    /// The connections, mutable.
    fn conns_mut(&mut self) -> &mut [Conn];
    /// Adds one; false if full.
    fn push_conn(&mut self, c: Conn) -> bool;
    /// Removes the `i`th, keeping the order of the rest.
    fn remove_conn(&mut self, i: usize) -> Conn;
    /// How many connections fit.
    fn conn_capacity(&self) -> usize;
    /// Queues an action; false if full.
    fn push_action(&mut self, a: Action) -> bool;
    /// The oldest queued action.
    fn pop_action(&mut self) -> Option<Action>;
    /// Room left in the action queue.
    fn action_room(&self) -> usize;
}

/// Inline storage for up to `N` connections and `Q` (≥ [`queue_len`]`(N)`) queued actions.
#[derive(Clone, Debug, Default)]
pub struct FixedForwards<const N: usize, const Q: usize> {
    conns: Vec<Conn, N>,
    actions: Deque<Action, Q>,
}

impl<const N: usize, const Q: usize> FixedForwards<N, Q> {
    /// Empty.
    pub const fn new() -> Self {
        const { assert!(Q >= queue_len(N), "the action queue must hold 2 * N + 2 actions") };
        Self { conns: Vec::new(), actions: Deque::new() }
    }
}

impl<const N: usize, const Q: usize> ForwardStore for FixedForwards<N, Q> {
    fn conns(&self) -> &[Conn] {
        &self.conns
    }
    fn conns_mut(&mut self) -> &mut [Conn] {
        &mut self.conns
    }
    fn push_conn(&mut self, c: Conn) -> bool {
        self.conns.push(c).is_ok()
    }
    fn remove_conn(&mut self, i: usize) -> Conn {
        self.conns.remove(i)
    }
    fn conn_capacity(&self) -> usize {
        N
    }
    fn push_action(&mut self, a: Action) -> bool {
        self.actions.push_back(a).is_ok()
    }
    fn pop_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn action_room(&self) -> usize {
        self.actions.capacity() - self.actions.len()
    }
}

/// The forwarded connections of every session, kept in `St`.
#[derive(Clone, Debug)]
pub struct ForwardTable<St> {
    cfg: ForwardConfig,
    st: St,
    overflowed: u32,
}

/// A table of up to `N` connections and `Q` (≥ [`queue_len`]`(N)`) queued actions, inline.
pub type FixedForwardTable<const N: usize, const Q: usize> = ForwardTable<FixedForwards<N, Q>>;

impl<const N: usize, const Q: usize> ForwardTable<FixedForwards<N, Q>> {
    /// An empty table.
    pub const fn new(cfg: ForwardConfig) -> Self {
        Self::with_store(cfg, FixedForwards::new())
    }
}

fn id(s: &str) -> Option<Id> {
    Id::try_from(s).ok()
}

impl<St: ForwardStore> ForwardTable<St> {
    /// An empty table keeping its state in `st` (empty).
    pub const fn with_store(cfg: ForwardConfig, st: St) -> Self {
        Self { cfg, st, overflowed: 0 }
    }

    /// The settings.
    pub const fn config(&self) -> &ForwardConfig {
        &self.cfg
    }

    /// Open or dialling connections.
    pub fn len(&self) -> usize {
        self.st.conns().len()
    }

    /// True if there is none.
    pub fn is_empty(&self) -> bool {
        self.st.conns().is_empty()
    }

    /// Connections of session `sid`.
    pub fn count_in(&self, sid: &str) -> usize {
        self.st.conns().iter().filter(|c| c.sid == sid).count()
    }

    /// Whether `sid`/`cid` is dialled and open.
    pub fn is_open(&self, sid: &str, cid: &str) -> bool {
        self.find(sid, cid).is_some_and(|i| self.st.conns()[i].open)
    }

    /// Actions dropped because the caller did not drain the queue (0 when used as documented).
    pub const fn overflowed(&self) -> u32 {
        self.overflowed
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.st.pop_action()
    }

    fn push(&mut self, a: Action) {
        if !self.st.push_action(a) {
            self.overflowed = self.overflowed.saturating_add(1);
        }
    }

    fn find(&self, sid: &str, cid: &str) -> Option<usize> {
        self.st.conns().iter().position(|c| c.sid == sid && c.cid == cid)
    }

    fn refuse(&mut self, about: Msg, sid: &str, refusal: Refusal) -> Refusal {
        let sid = id(sid).unwrap_or_default();
        self.push(Action::SendError { about, sid, refusal });
        refusal
    }

    fn close(&mut self, i: usize, why: CloseReason, stop: bool) {
        let c = self.st.remove_conn(i);
        if stop {
            self.push(Action::Close { sid: c.sid.clone(), cid: c.cid.clone(), why });
            self.push(Action::Send { msg: Msg::Stop, sid: c.sid, cid: c.cid });
        } else {
            self.push(Action::Close { sid: c.sid, cid: c.cid, why });
        }
    }

    /// A valid `new` (the executor checked its target) for `sid`/`cid`.
    pub fn handle_new(&mut self, sid: &str, cid: &str, now: Instant) -> Result<(), Refusal> {
        let (Some(sid_id), Some(cid_id)) = (id(sid), id(cid).filter(|c| !c.is_empty())) else {
            return Err(self.refuse(Msg::New, sid, Refusal::Invalid));
        };
        if let Some(i) = self.find(sid, cid) {
            self.close(i, CloseReason::Replaced, false);
        }
        if self.count_in(sid) >= self.cfg.max_per_session {
            return Err(self.refuse(Msg::New, sid, Refusal::TooManyInSession));
        }
        if self.st.conns().len() >= self.cfg.max_connections.min(self.st.conn_capacity()) {
            return Err(self.refuse(Msg::New, sid, Refusal::TooManyOnDevice));
        }
        let c = Conn {
            sid: sid_id.clone(),
            cid: cid_id.clone(),
            open: false,
            opened: now,
            last_activity: now,
            unacked_in: 0,
            awaiting_ack: false,
        };
        if !self.st.push_conn(c) {
            return Err(self.refuse(Msg::New, sid, Refusal::TooManyOnDevice));
        }
        self.push(Action::Dial { sid: sid_id, cid: cid_id });
        Ok(())
    }

    /// The outcome of [`Action::Dial`]: connected (the user side is answered `new`), or failed
    /// (forgotten; the executor sends the dial error). False if the connection is gone already.
    pub fn handle_dialed(&mut self, sid: &str, cid: &str, connected: bool, now: Instant) -> bool {
        let Some(i) = self.find(sid, cid).filter(|&i| !self.st.conns()[i].open) else { return false };
        if !connected {
            self.st.remove_conn(i);
            return true;
        }
        let c = &mut self.st.conns_mut()[i];
        c.open = true;
        c.last_activity = now;
        let (sid, cid) = (c.sid.clone(), c.cid.clone());
        self.push(Action::Send { msg: Msg::New, sid, cid });
        true
    }

    /// A `forward` from the user: true if the executor takes its data (writes it once the
    /// connection is open); false if refused (unknown, or the connection ended for too many
    /// unacked forwards).
    pub fn handle_forward(&mut self, sid: &str, cid: &str, now: Instant) -> bool {
        let Some(i) = self.find(sid, cid) else {
            self.refuse(Msg::Forward, sid, Refusal::UnknownConnection);
            return false;
        };
        if self.st.conns()[i].unacked_in >= INBOUND_QUEUE {
            self.refuse(Msg::Forward, sid, Refusal::Unacked);
            self.close(i, CloseReason::Unacked, true);
            return false;
        }
        let c = &mut self.st.conns_mut()[i];
        c.unacked_in += 1;
        c.last_activity = now;
        true
    }

    /// The executor wrote one taken forward to the target: it is acked.
    pub fn handle_written(&mut self, sid: &str, cid: &str, now: Instant) {
        let Some(i) = self.find(sid, cid) else { return };
        let c = &mut self.st.conns_mut()[i];
        c.unacked_in = c.unacked_in.saturating_sub(1);
        c.last_activity = now;
        let (sid, cid) = (c.sid.clone(), c.cid.clone());
        self.push(Action::Send { msg: Msg::Ack, sid, cid });
    }

    /// The executor read from the target and sends it as a `forward`: true if allowed (open,
    /// nothing in flight); it then waits for [`Action::ReadMore`].
    pub fn handle_read(&mut self, sid: &str, cid: &str, now: Instant) -> bool {
        let Some(i) = self.find(sid, cid) else { return false };
        let c = &mut self.st.conns_mut()[i];
        if !c.open || c.awaiting_ack {
            return false;
        }
        c.awaiting_ack = true;
        c.last_activity = now;
        true
    }

    /// An `ack` from the user. A surplus ack is ignored (the reference recovers from its double
    /// unlock); an unknown connection is answered with an error.
    pub fn handle_ack(&mut self, sid: &str, cid: &str, now: Instant) {
        let Some(i) = self.find(sid, cid) else {
            self.refuse(Msg::Ack, sid, Refusal::UnknownConnection);
            return;
        };
        let c = &mut self.st.conns_mut()[i];
        if core::mem::replace(&mut c.awaiting_ack, false) {
            c.last_activity = now;
            let (sid, cid) = (c.sid.clone(), c.cid.clone());
            self.push(Action::ReadMore { sid, cid });
        }
    }

    /// A `stop` from the user: closed and answered with `stop`.
    pub fn handle_stop(&mut self, sid: &str, cid: &str) -> Result<(), Refusal> {
        match self.find(sid, cid) {
            Some(i) => {
                self.close(i, CloseReason::Requested, true);
                Ok(())
            }
            None => Err(self.refuse(Msg::Stop, sid, Refusal::UnknownConnection)),
        }
    }

    /// The target ended the connection (EOF, read or write error): the user side gets `stop`.
    pub fn handle_ended(&mut self, sid: &str, cid: &str) {
        if let Some(i) = self.find(sid, cid) {
            self.close(i, CloseReason::Ended, true);
        }
    }

    /// Session `sid` ended (or the websocket): its connections close without `stop`, as the
    /// reference's.
    pub fn handle_session_closed(&mut self, sid: &str) {
        while let Some(i) = self.st.conns().iter().position(|c| c.sid == sid) {
            self.close(i, CloseReason::SessionClosed, false);
        }
    }

    /// Every session ended (the websocket dropped, the device stops): every connection
    /// closes without `stop`.
    pub fn handle_all_closed(&mut self) {
        while !self.st.conns().is_empty() {
            self.close(0, CloseReason::SessionClosed, false);
        }
    }

    fn due(&self, c: &Conn) -> Instant {
        if c.open {
            c.last_activity.add_millis(self.cfg.idle_timeout_ms)
        } else {
            c.opened.add_millis(self.cfg.connect_timeout_ms)
        }
    }

    /// When [`ForwardTable::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.st.conns().iter().map(|c| self.due(c)).min()
    }

    /// Abandons dials past the connect timeout and closes connections idle for the idle
    /// timeout (with `stop`), as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.st.conns().len() {
            if self.st.action_room() < 2 {
                return;
            }
            if now >= self.due(&self.st.conns()[i]) {
                if self.st.conns()[i].open {
                    self.close(i, CloseReason::Idle, true);
                } else {
                    self.close(i, CloseReason::DialTimedOut, false);
                }
            } else {
                i += 1;
            }
        }
    }
}

/// Deterministic simulations on a virtual clock that need no std.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    type Table = FixedForwardTable<4, { queue_len(4) }>;

    use crate::selftest::t;

    fn s(v: &str) -> Id {
        Id::try_from(v).unwrap_or_default()
    }

    fn drain(tab: &mut Table) -> Vec<Action, { queue_len(4) }> {
        let mut out = Vec::new();
        while let Some(a) = tab.poll_action() {
            assert!(out.push(a).is_ok());
        }
        out
    }

    fn open(tab: &mut Table, sid: &str, cid: &str, now: Instant) {
        assert_eq!(tab.handle_new(sid, cid, now), Ok(()));
        assert_eq!(drain(tab).as_slice(), &[Action::Dial { sid: s(sid), cid: s(cid) }]);
        assert!(tab.handle_dialed(sid, cid, true, now));
        assert_eq!(drain(tab).as_slice(), &[Action::Send { msg: Msg::New, sid: s(sid), cid: s(cid) }]);
    }

    /// Per-session and device limits, and a reused id replacing its connection.
    fn limits_and_reuse() {
        let cfg = ForwardConfig { max_per_session: 2, max_connections: 3, ..ForwardConfig::default() };
        let mut tab = Table::new(cfg);
        open(&mut tab, "a", "1", t(0));
        open(&mut tab, "a", "2", t(0));
        assert_eq!(tab.handle_new("a", "3", t(0)), Err(Refusal::TooManyInSession));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[Action::SendError { about: Msg::New, sid: s("a"), refusal: Refusal::TooManyInSession }]
        );
        open(&mut tab, "b", "1", t(0));
        assert_eq!(tab.handle_new("c", "1", t(0)), Err(Refusal::TooManyOnDevice));
        drain(&mut tab);
        // Reusing "a"/"1" closes the old one (no stop) and takes its place.
        assert_eq!(tab.handle_new("a", "1", t(5)), Ok(()));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[
                Action::Close { sid: s("a"), cid: s("1"), why: CloseReason::Replaced },
                Action::Dial { sid: s("a"), cid: s("1") }
            ]
        );
        assert_eq!(tab.handle_new("a", "", t(5)), Err(Refusal::Invalid));
        let mut text: heapless::String<128> = heapless::String::new();
        assert!(fmt::write(&mut text, format_args!("{}", Refusal::TooManyInSession.text(&cfg))).is_ok());
        assert_eq!(
            text.as_str(),
            "too many port-forward connections in this session (at most 2, PortForward.MaxConnectionsPerSession)"
        );
    }

    /// One `ack` per written `forward`; a third unacked `forward` ends the connection; one
    /// device `forward` in flight until the user acks it.
    fn flow_control() {
        let mut tab = Table::new(ForwardConfig::default());
        // Forwards taken while dialling count too.
        assert_eq!(tab.handle_new("a", "1", t(0)), Ok(()));
        drain(&mut tab);
        assert!(tab.handle_forward("a", "1", t(1)));
        assert!(!tab.handle_read("a", "1", t(1)));
        assert!(tab.handle_dialed("a", "1", true, t(2)));
        drain(&mut tab);
        tab.handle_written("a", "1", t(3));
        assert_eq!(drain(&mut tab).as_slice(), &[Action::Send { msg: Msg::Ack, sid: s("a"), cid: s("1") }]);
        assert!(tab.handle_forward("a", "1", t(4)));
        assert!(tab.handle_forward("a", "1", t(4)));
        assert!(!tab.handle_forward("a", "1", t(4)));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[
                Action::SendError { about: Msg::Forward, sid: s("a"), refusal: Refusal::Unacked },
                Action::Close { sid: s("a"), cid: s("1"), why: CloseReason::Unacked },
                Action::Send { msg: Msg::Stop, sid: s("a"), cid: s("1") }
            ]
        );
        assert!(!tab.handle_forward("a", "1", t(5)));
        drain(&mut tab);

        open(&mut tab, "a", "2", t(10));
        assert!(tab.handle_read("a", "2", t(11)));
        assert!(!tab.handle_read("a", "2", t(11)));
        tab.handle_ack("a", "2", t(12));
        assert_eq!(drain(&mut tab).as_slice(), &[Action::ReadMore { sid: s("a"), cid: s("2") }]);
        // A surplus ack is ignored; an ack for nothing is an error.
        tab.handle_ack("a", "2", t(13));
        assert!(drain(&mut tab).is_empty());
        tab.handle_ack("a", "9", t(13));
        assert_eq!(drain(&mut tab).len(), 1);
        assert!(tab.handle_read("a", "2", t(14)));
    }

    /// Dial timeout, idle timeout counted from traffic either way, stop, end, session close.
    fn timeouts_and_endings() {
        let cfg =
            ForwardConfig { connect_timeout_ms: 1_000, idle_timeout_ms: 10_000, ..ForwardConfig::default() };
        let mut tab = Table::new(cfg);
        assert_eq!(tab.handle_new("a", "slow", t(0)), Ok(()));
        drain(&mut tab);
        open(&mut tab, "a", "1", t(0));
        assert_eq!(tab.poll_timeout(), Some(t(1_000)));
        tab.handle_timeout(t(1_000));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[Action::Close { sid: s("a"), cid: s("slow"), why: CloseReason::DialTimedOut }]
        );
        // A dial that completes after its timeout is too late.
        assert!(!tab.handle_dialed("a", "slow", true, t(1_001)));
        assert!(tab.handle_read("a", "1", t(4_000)));
        tab.handle_ack("a", "1", t(6_000));
        drain(&mut tab);
        assert_eq!(tab.poll_timeout(), Some(t(16_000)));
        tab.handle_timeout(t(15_999));
        assert!(drain(&mut tab).is_empty());
        tab.handle_timeout(t(16_000));
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[
                Action::Close { sid: s("a"), cid: s("1"), why: CloseReason::Idle },
                Action::Send { msg: Msg::Stop, sid: s("a"), cid: s("1") }
            ]
        );
        open(&mut tab, "a", "1", t(20_000));
        open(&mut tab, "a", "2", t(20_000));
        open(&mut tab, "b", "1", t(20_000));
        assert_eq!(tab.handle_stop("a", "1"), Ok(()));
        assert_eq!(drain(&mut tab).len(), 2);
        assert_eq!(tab.handle_stop("a", "1"), Err(Refusal::UnknownConnection));
        drain(&mut tab);
        tab.handle_ended("a", "2");
        assert_eq!(drain(&mut tab).len(), 2);
        open(&mut tab, "a", "3", t(20_000));
        tab.handle_session_closed("a");
        assert_eq!(
            drain(&mut tab).as_slice(),
            &[Action::Close { sid: s("a"), cid: s("3"), why: CloseReason::SessionClosed }]
        );
        assert!(tab.is_open("b", "1"));
        assert_eq!(tab.len(), 1);
        assert_eq!(tab.overflowed(), 0);
    }

    crate::selftests!(limits_and_reuse, flow_control, timeouts_and_endings);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::string::{String, ToString};

    #[derive(Debug, Clone)]
    enum Ev {
        New(u8, u8),
        Dialed(u8, u8, bool),
        Forward(u8, u8),
        Written(u8, u8),
        Read(u8, u8),
        Ack(u8, u8),
        Stop(u8, u8),
        Ended(u8, u8),
        SessionClosed(u8),
        Wait(u16),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        let k = || (0u8..3, 0u8..4);
        prop_oneof![
            3 => k().prop_map(|(s, c)| Ev::New(s, c)),
            3 => (k(), any::<bool>()).prop_map(|((s, c), ok)| Ev::Dialed(s, c, ok)),
            3 => k().prop_map(|(s, c)| Ev::Forward(s, c)),
            2 => k().prop_map(|(s, c)| Ev::Written(s, c)),
            2 => k().prop_map(|(s, c)| Ev::Read(s, c)),
            2 => k().prop_map(|(s, c)| Ev::Ack(s, c)),
            1 => k().prop_map(|(s, c)| Ev::Stop(s, c)),
            1 => k().prop_map(|(s, c)| Ev::Ended(s, c)),
            1 => (0u8..3).prop_map(Ev::SessionClosed),
            2 => (0u16..20_000).prop_map(Ev::Wait),
        ]
    }

    proptest! {
        /// A model executor: the sockets it holds are exactly the table's connections after
        /// every drain, a close is for a socket it holds, limits hold, nothing overflows.
        #[test]
        fn executor_and_table_agree(evs in proptest::collection::vec(ev(), 0..150), per in 1usize..4, max in 1usize..6) {
            let cfg = ForwardConfig { max_per_session: per, max_connections: max, connect_timeout_ms: 3_000, idle_timeout_ms: 8_000 };
            let mut tab = FixedForwardTable::<4, { queue_len(4) }>::new(cfg);
            let mut sockets: BTreeSet<(String, String)> = BTreeSet::new();
            let mut now = 0u64;
            for e in evs {
                let at = Instant::from_millis(now);
                let k = |s: u8, c: u8| (std::format!("s{s}"), std::format!("c{c}"));
                match e {
                    Ev::New(s, c) => { let (s, c) = k(s, c); let _ = tab.handle_new(&s, &c, at); }
                    Ev::Dialed(s, c, ok) => {
                        let (s, c) = k(s, c);
                        if sockets.contains(&(s.clone(), c.clone())) && !tab.is_open(&s, &c) {
                            prop_assert!(tab.handle_dialed(&s, &c, ok, at));
                            if !ok { sockets.remove(&(s, c)); }
                        }
                    }
                    Ev::Forward(s, c) => { let (s, c) = k(s, c); let _ = tab.handle_forward(&s, &c, at); }
                    Ev::Written(s, c) => { let (s, c) = k(s, c); tab.handle_written(&s, &c, at); }
                    Ev::Read(s, c) => { let (s, c) = k(s, c); let _ = tab.handle_read(&s, &c, at); }
                    Ev::Ack(s, c) => { let (s, c) = k(s, c); tab.handle_ack(&s, &c, at); }
                    Ev::Stop(s, c) => { let (s, c) = k(s, c); let _ = tab.handle_stop(&s, &c); }
                    Ev::Ended(s, c) => { let (s, c) = k(s, c); tab.handle_ended(&s, &c); }
                    Ev::SessionClosed(s) => tab.handle_session_closed(&std::format!("s{s}")),
                    Ev::Wait(ms) => {
                        let until = now + u64::from(ms);
                        let mut steps = 0;
                        while let Some(due) = tab.poll_timeout().map(Instant::as_millis).filter(|d| *d <= until) {
                            steps += 1;
                            prop_assert!(steps < 100);
                            now = now.max(due);
                            tab.handle_timeout(Instant::from_millis(now));
                            execute(&mut tab, &mut sockets)?;
                        }
                        now = until;
                    }
                }
                execute(&mut tab, &mut sockets)?;
                prop_assert_eq!(tab.len(), sockets.len());
                prop_assert!(tab.len() <= max.min(4));
                for (s, c) in &sockets {
                    prop_assert!(tab.count_in(s) <= per);
                    prop_assert!(tab.find(s, c).is_some());
                }
                prop_assert_eq!(tab.overflowed(), 0);
            }
        }
    }

    fn execute(
        tab: &mut FixedForwardTable<4, { queue_len(4) }>,
        sockets: &mut BTreeSet<(String, String)>,
    ) -> Result<(), TestCaseError> {
        while let Some(a) = tab.poll_action() {
            match a {
                Action::Dial { sid, cid } => prop_assert!(sockets.insert((sid.to_string(), cid.to_string()))),
                Action::Close { sid, cid, .. } => {
                    prop_assert!(sockets.remove(&(sid.to_string(), cid.to_string())))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
