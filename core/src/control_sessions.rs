//! Control sessions (`proto` 0xFFFF and every protocol served inside a session): the table of
//! open sessions, the handshake, keep-alive pings of idle sessions, their timeout, and the
//! bounds on what a peer can make the device hold.
//!
//! Every message whose `proto` is not the shell's belongs to the session named by its `sid`;
//! the first message of an unknown `sid` opens one (the reference's `session.Router`). Control
//! messages are answered here; messages of the served protocols (file transfer, port forward,
//! mender-client) are handed back as [`Routed::Deliver`] for their handler.
//!
//! # The reference's behaviour (mender-connect 2.1.0 / 3.0.0), and what differs
//!
//! Checked in `session/router.go`, `session/session.go` (`ListenAndServe`, `HandleControl`,
//! `Error`) and `app/daemon.go` (`NewRouter(..., Config{IdleTimeout:
//! connectionmanager.DefaultPingWait})`, 60 s):
//! - a session idle for 4/5 of the idle timeout (48 s) gets a control `ping`; any message
//!   resets that timer; still idle 1/5 later (60 s after the last message) it ends with a
//!   closing control `error` "session timeout" that carries no message fields;
//! - `ping` → `pong` with the same `sid` and no body; `pong` does nothing; `close` ends the
//!   session (`session: closed <sid>` in the log); `error` is logged (`session: received error
//!   from client: <err>`) and ends the session when its `close` is set; any other `typ` gets a
//!   non-closing error `session: control type message not understood: '<typ>'`;
//! - a message of a protocol without a registered handler gets a non-closing error "no handler
//!   registered for protocol: 0x%04X"; error replies carry the offending message's `proto`,
//!   `typ` and `msgid` prop;
//! - `open` with version 1 is answered with `accept` listing the routes (later go-lib-micro;
//!   2.1.0 treats `open` as a no-op); without it, a closing "handshake rejected: require
//!   version 1".
//!
//! Not in the reference: at most `N` sessions ([`MAX_SESSIONS`] in the agent) and ids of at
//! most [`MAX_ID_LEN`] bytes; a message that would open one more, or carries a longer `sid` or
//! `user_id`, is refused with a closing error ([`Refusal`]) and no session is opened. An
//! undecodable message gets a non-closing error with an empty `sid` and the link stays up (the
//! reference drops the connection).

use core::fmt::{self, Write as _};

use heapless::{String, Vec};

use crate::control::{self, Accept, ControlError, ControlMessage, PROTOCOL_VERSION};
use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, Proto};
use crate::time::Instant;

/// Control sessions open at once in the agent. The server opens one per user websocket, so
/// this is far above real use; it bounds what a peer can make the daemon hold.
pub const MAX_SESSIONS: usize = 1024;
/// Longest session id and `user_id` kept. The server makes session ids UUIDv4 (36 bytes); user
/// ids are the JWT's `sub`, a UUID too.
pub const MAX_ID_LEN: usize = 128;
/// Idle timeout (reference `connectionmanager.DefaultPingWait`).
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Ping after 4/5 of the idle timeout without messages.
pub const IDLE_PING_MS: u64 = IDLE_TIMEOUT_MS / 5 * 4;
/// Protocols listed in `accept`, at most.
pub const MAX_PROTOCOLS: usize = control::MAX_LIST;
/// Smallest buffer [`ControlSessions::poll_send`] needs for any ping or timeout error.
pub const POLL_BUF_LEN: usize = 2 * MAX_ID_LEN + 128;

/// An inline session or user id.
pub type Id = String<MAX_ID_LEN>;

/// Timing of idle sessions, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleConfig {
    /// A session idle this long gets a control `ping`.
    pub ping_ms: u64,
    /// A session idle this long (and pinged) ends with "session timeout".
    pub timeout_ms: u64,
}

impl Default for IdleConfig {
    /// The reference's: ping after 48 s, end after 60 s.
    fn default() -> Self {
        Self { ping_ms: IDLE_PING_MS, timeout_ms: IDLE_TIMEOUT_MS }
    }
}

/// Why a message for an unknown `sid` did not open a session. `Display` gives the wire text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The `sid` is longer than [`MAX_ID_LEN`] (its length).
    SidTooLong(usize),
    /// The `user_id` is longer than [`MAX_ID_LEN`] (its length).
    UserTooLong(usize),
    /// The table is full (its capacity).
    TooMany(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SidTooLong(n) => write!(f, "session id too long: {n} bytes, at most {MAX_ID_LEN}"),
            Self::UserTooLong(n) => write!(f, "user_id too long: {n} bytes, at most {MAX_ID_LEN}"),
            Self::TooMany(n) => write!(f, "too many open sessions on this device (at most {n})"),
        }
    }
}

/// An error the device sends about a message. `Display` gives the wire text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject<'a> {
    /// `open` body does not decode (closing).
    BadOpen(DecodeError),
    /// `accept` body does not decode (closing).
    BadAccept(DecodeError),
    /// Another control body does not decode.
    BadControl(DecodeError),
    /// `open` without version 1 (closing).
    VersionRejected,
    /// `accept` with another version (closing).
    UnsupportedVersion(i64),
    /// Unknown control `typ`.
    NotUnderstood(&'a str),
    /// A protocol nobody serves.
    NoHandler(Proto),
}

impl Reject<'_> {
    /// Whether the error ends the session.
    pub const fn closes(&self) -> bool {
        matches!(
            self,
            Self::BadOpen(_) | Self::BadAccept(_) | Self::VersionRejected | Self::UnsupportedVersion(_)
        )
    }
}

impl fmt::Display for Reject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadOpen(e) => write!(f, "failed to decode handshake request: {e}"),
            Self::BadAccept(e) => write!(f, "malformed handshake response: {e}"),
            Self::BadControl(e) => write!(f, "failed to decode control message: {e}"),
            Self::VersionRejected => write!(f, "handshake rejected: require version {PROTOCOL_VERSION}"),
            Self::UnsupportedVersion(v) => {
                write!(f, "unsupported protocol version {v}: require version {PROTOCOL_VERSION}")
            }
            Self::NotUnderstood(typ) => write!(f, "session: control type message not understood: '{typ}'"),
            Self::NoHandler(p) => write!(f, "no handler registered for protocol: 0x{:04X}", p.0),
        }
    }
}

/// What happened to a message, for the caller's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Note<'a> {
    /// Nothing worth a log line (ping, pong, a served message).
    None,
    /// No link is up: the message was dropped.
    NotConnected,
    /// The message did not decode (an error with an empty `sid` was replied).
    Undecodable(DecodeError),
    /// The shell protocol is disabled (`Terminal.Disable`); a shell error was replied.
    ShellDisabled,
    /// No session was opened.
    Refused(Refusal),
    /// An error was replied about the message.
    Rejected(Reject<'a>),
    /// `open` accepted for this session id.
    Accepted(&'a str),
    /// The peer closed the session with this id.
    Closed(&'a str),
    /// The peer sent an `error` (text), closing the session if it said so.
    PeerError(&'a str),
    /// The peer sent an `error` that does not decode; ignored, as the reference does.
    MalformedPeerError(DecodeError),
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Routed<'a> {
    /// Handled here. If `reply` is `Some(n)`, send the first `n` bytes of the reply buffer.
    Handled {
        /// Length of the reply in the caller's buffer.
        reply: Option<usize>,
        /// For the log.
        note: Note<'a>,
    },
    /// A message of a served protocol inside an open session: for that protocol's handler
    /// (`frame.header.proto`, `frame.header.sid`).
    Deliver(Frame<'a>),
    /// A shell message (protocol 1 has no control session): for the shell sessions.
    Shell(Frame<'a>),
}

/// Why a session left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The peer sent `close`.
    Closed,
    /// The peer sent an `error` with `close`.
    PeerError,
    /// The device sent a closing error (bad handshake).
    Rejected,
    /// Idle past the timeout ("session timeout" was sent).
    Timeout,
}

/// A frame to send from [`ControlSessions::poll_send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendKind {
    /// Keep-alive ping of an idle session: worth nothing late, may be dropped under pressure.
    Ping,
    /// "session timeout": the session ended.
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Nothing,
    Ping,
    Timeout,
}

/// One control session.
#[derive(Clone, Debug)]
pub struct Session {
    sid: Id,
    user: Id,
    started: Instant,
    last_rx: Instant,
    pinged: bool,
    due: Due,
    ended: Option<EndReason>,
    proto: Option<Proto>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Session {
    /// Session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }
    /// `user_id` of the first message, empty if none.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// First message.
    pub const fn started(&self) -> Instant {
        self.started
    }
    /// Last message.
    pub const fn last_rx(&self) -> Instant {
        self.last_rx
    }
    /// The first protocol other than control used in the session.
    pub const fn proto(&self) -> Option<Proto> {
        self.proto
    }
    /// Body bytes received for the session.
    pub const fn bytes_in(&self) -> u64 {
        self.bytes_in
    }
    /// Bytes sent for the session: replies, and what the caller counted with
    /// [`ControlSessions::count_sent`].
    pub const fn bytes_out(&self) -> u64 {
        self.bytes_out
    }
}

/// Counts the bytes `args` formats to.
struct Count(usize);

impl fmt::Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.saturating_add(s.len());
        Ok(())
    }
}

struct Fill<'b>(&'b mut [u8], usize);

impl fmt::Write for Fill<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.1.checked_add(s.len()).ok_or(fmt::Error)?;
        self.0.get_mut(self.1..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

/// Encodes a frame whose body holds the text `args`: the text is formatted into the end of
/// `buf` and `encode` writes the frame into the rest, so no second buffer is needed.
pub(crate) fn encode_with_text(
    buf: &mut [u8],
    args: fmt::Arguments<'_>,
    encode: impl FnOnce(&mut [u8], &str) -> Result<usize, EncodeError>,
) -> Result<usize, EncodeError> {
    let mut count = Count(0);
    count.write_fmt(args).map_err(|_| EncodeError::BufferTooSmall)?;
    let split = buf.len().checked_sub(count.0).ok_or(EncodeError::BufferTooSmall)?;
    let (head, tail) = buf.split_at_mut(split);
    let mut fill = Fill(tail, 0);
    fill.write_fmt(args).map_err(|_| EncodeError::BufferTooSmall)?;
    let text = core::str::from_utf8(tail).map_err(|_| EncodeError::BufferTooSmall)?;
    encode(head, text)
}

/// A control `error` about `frame`, in the reference's shape.
fn encode_error_about(
    buf: &mut [u8],
    sid: &str,
    frame: &Frame<'_>,
    close: bool,
    text: &dyn fmt::Display,
) -> Option<usize> {
    encode_with_text(buf, format_args!("{text}"), |b, err| {
        let e = ControlError {
            err,
            close,
            msgproto: frame.header.proto,
            msgtype: frame.header.typ,
            msgid: frame.header.props.get_str("msgid").unwrap_or(""),
            ..ControlError::default()
        };
        control::encode_error_frame(b, sid, &e)
    })
    .ok()
}

/// Where the session table lives. A fixed array ([`FixedStore`]) is all a device needs; a
/// caller with an allocator may grow its storage on demand instead, so that memory follows use
/// (the agent's cap of [`MAX_SESSIONS`] sessions of up to [`MAX_ID_LEN`]-byte ids would
/// otherwise be 320 KB held from the start).
pub trait SessionStore {
    /// The sessions.
    fn as_slice(&self) -> &[Session];
    /// The sessions, mutably.
    fn as_mut_slice(&mut self) -> &mut [Session];
    /// Adds a session; false when there is no room.
    fn push(&mut self, s: Session) -> bool;
    /// Removes session `i` (`i` < the length), moving the last one into its place.
    fn swap_remove(&mut self, i: usize) -> Session;
    /// Removes every session.
    fn clear(&mut self);
}

/// A session table of at most `N` sessions, inline.
pub type FixedStore<const N: usize> = Vec<Session, N>;

impl<const N: usize> SessionStore for Vec<Session, N> {
    fn as_slice(&self) -> &[Session] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [Session] {
        self
    }
    fn push(&mut self, s: Session) -> bool {
        Vec::push(self, s).is_ok()
    }
    fn swap_remove(&mut self, i: usize) -> Session {
        Vec::swap_remove(self, i)
    }
    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// The table of control sessions, at most `cap`, kept in `S`.
#[derive(Clone, Debug)]
pub struct ControlSessions<S> {
    idle: IdleConfig,
    protocols: Vec<u16, MAX_PROTOCOLS>,
    sessions: S,
    cap: usize,
    /// Some session has a frame to send or an end to report.
    pending: bool,
}

impl<const N: usize> ControlSessions<FixedStore<N>> {
    /// An empty table of at most `N` sessions. `protocols` are listed in `accept`, sorted (the
    /// shell's included when enabled); messages of those other than the shell are delivered,
    /// others refused.
    pub fn new(idle: IdleConfig, protocols: &[u16]) -> Self {
        Self::with_store(idle, protocols, Vec::new(), N)
    }
}

impl<S: SessionStore> ControlSessions<S> {
    /// An empty table in `store`, of at most `cap` sessions (and what `store` can hold).
    pub fn with_store(idle: IdleConfig, protocols: &[u16], mut store: S, cap: usize) -> Self {
        let mut p: Vec<u16, MAX_PROTOCOLS> = Vec::new();
        for x in protocols {
            if !p.contains(x) {
                let _ = p.push(*x);
            }
        }
        p.sort_unstable();
        store.clear();
        Self { idle, protocols: p, sessions: store, cap, pending: false }
    }

    /// Protocols listed in `accept`.
    pub fn protocols(&self) -> &[u16] {
        &self.protocols
    }

    /// Lists `proto` in `accept` from now on (and delivers its messages unless it is the
    /// shell's); false if the list is full.
    pub fn add_protocol(&mut self, proto: u16) -> bool {
        if !self.protocols.contains(&proto) {
            if self.protocols.push(proto).is_err() {
                return false;
            }
            self.protocols.sort_unstable();
        }
        true
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.as_slice().iter().filter(|s| s.ended.is_none()).count()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open sessions, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.as_slice().iter().filter(|s| s.ended.is_none())
    }

    fn find(&self, sid: &str) -> Option<usize> {
        self.sessions.as_slice().iter().position(|s| s.ended.is_none() && s.sid == sid)
    }

    /// Adds `n` bytes sent for `sid` by its handler (status only).
    pub fn count_sent(&mut self, sid: &str, n: usize) {
        if let Some(i) = self.find(sid) {
            let s = &mut self.sessions.as_mut_slice()[i];
            s.bytes_out = s.bytes_out.saturating_add(n as u64);
        }
    }

    fn refusal(&self, frame: &Frame<'_>) -> Option<Refusal> {
        let user = frame.header.props.get_str("user_id").unwrap_or("");
        if frame.header.sid.len() > MAX_ID_LEN {
            Some(Refusal::SidTooLong(frame.header.sid.len()))
        } else if user.len() > MAX_ID_LEN {
            Some(Refusal::UserTooLong(user.len()))
        } else if self.sessions.as_slice().len() >= self.cap {
            Some(Refusal::TooMany(self.cap))
        } else {
            None
        }
    }

    /// A decoded message of any protocol but the shell's. Replies go into `reply` (at least
    /// [`crate::engine::REPLY_BUF_LEN`] bytes for any reply to fit).
    pub fn handle<'a>(&mut self, frame: Frame<'a>, now: Instant, reply: &mut [u8]) -> Routed<'a> {
        let sid = frame.header.sid;
        let i = match self.find(sid) {
            Some(i) => i,
            None => {
                if let Some(r) = self.refusal(&frame) {
                    let reply = encode_error_about(reply, sid, &frame, true, &r);
                    return Routed::Handled { reply, note: Note::Refused(r) };
                }
                let mut id = Id::new();
                let mut user = Id::new();
                // Both fit: `refusal` checked the lengths.
                let _ = id.push_str(sid);
                let _ = user.push_str(frame.header.props.get_str("user_id").unwrap_or(""));
                let s = Session {
                    sid: id,
                    user,
                    started: now,
                    last_rx: now,
                    pinged: false,
                    due: Due::Nothing,
                    ended: None,
                    proto: None,
                    bytes_in: 0,
                    bytes_out: 0,
                };
                if !self.sessions.push(s) {
                    let r = Refusal::TooMany(self.cap);
                    let reply = encode_error_about(reply, sid, &frame, true, &r);
                    return Routed::Handled { reply, note: Note::Refused(r) };
                }
                self.sessions.as_slice().len() - 1
            }
        };
        let proto = frame.header.proto;
        let s = &mut self.sessions.as_mut_slice()[i];
        s.last_rx = now;
        s.pinged = false;
        s.due = Due::Nothing;
        s.bytes_in = s.bytes_in.saturating_add(frame.body.len() as u64);
        if s.proto.is_none() && proto != Proto::CONTROL {
            s.proto = Some(proto);
        }
        let routed = if proto == Proto::CONTROL {
            self.control(i, frame, reply)
        } else if proto == Proto::SHELL || !self.protocols.contains(&proto.0) {
            let r = Reject::NoHandler(proto);
            let reply = encode_error_about(reply, sid, &frame, false, &r);
            Routed::Handled { reply, note: Note::Rejected(r) }
        } else {
            Routed::Deliver(frame)
        };
        if let Routed::Handled { reply: Some(n), .. } = routed {
            let s = &mut self.sessions.as_mut_slice()[i];
            s.bytes_out = s.bytes_out.saturating_add(n as u64);
        }
        routed
    }

    fn end(&mut self, i: usize, why: EndReason) {
        self.sessions.as_mut_slice()[i].ended = Some(why);
        self.pending = true;
    }

    fn control<'a>(&mut self, i: usize, frame: Frame<'a>, reply: &mut [u8]) -> Routed<'a> {
        let sid = frame.header.sid;
        let reject = |s: &mut Self, r: Reject<'a>, reply: &mut [u8]| {
            let n = encode_error_about(reply, sid, &frame, r.closes(), &r);
            if r.closes() {
                s.end(i, EndReason::Rejected);
            }
            Routed::Handled { reply: n, note: Note::Rejected(r) }
        };
        let msg = match ControlMessage::from_frame(&frame) {
            Ok(m) => m,
            Err(e) => {
                return match frame.header.typ {
                    control::OPEN => reject(self, Reject::BadOpen(e), reply),
                    control::ACCEPT => reject(self, Reject::BadAccept(e), reply),
                    // The reference ignores the decode error of a peer's `error`: it only
                    // logs, answers nothing and keeps the session.
                    control::ERROR => Routed::Handled { reply: None, note: Note::MalformedPeerError(e) },
                    _ => reject(self, Reject::BadControl(e), reply),
                };
            }
        };
        match msg {
            ControlMessage::Ping => {
                let n = control::bare(control::PONG, sid).encode(reply).ok();
                Routed::Handled { reply: n, note: Note::None }
            }
            ControlMessage::Open(open) if open.supports(PROTOCOL_VERSION) => {
                let n = Accept::new(PROTOCOL_VERSION, &self.protocols)
                    .and_then(|a| control::encode_accept_frame(reply, sid, &a).ok());
                Routed::Handled { reply: n, note: Note::Accepted(sid) }
            }
            ControlMessage::Open(_) => reject(self, Reject::VersionRejected, reply),
            ControlMessage::Accept(a) if a.version != PROTOCOL_VERSION => {
                reject(self, Reject::UnsupportedVersion(a.version), reply)
            }
            ControlMessage::Close => {
                self.end(i, EndReason::Closed);
                Routed::Handled { reply: None, note: Note::Closed(sid) }
            }
            ControlMessage::Error(e) => {
                if e.close {
                    self.end(i, EndReason::PeerError);
                }
                Routed::Handled { reply: None, note: Note::PeerError(e.err) }
            }
            ControlMessage::Unknown(typ) => reject(self, Reject::NotUnderstood(typ), reply),
            _ => Routed::Handled { reply: None, note: Note::None },
        }
    }

    /// When [`ControlSessions::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.iter()
            .map(|s| s.last_rx.add_millis(if s.pinged { self.idle.timeout_ms } else { self.idle.ping_ms }))
            .min()
    }

    /// Idle sessions: ping after `ping_ms`, end after `timeout_ms` (frames from
    /// [`ControlSessions::poll_send`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.idle;
        for s in self.sessions.as_mut_slice().iter_mut().filter(|s| s.ended.is_none()) {
            let quiet = now.millis_since(s.last_rx);
            if s.pinged && quiet >= idle.timeout_ms {
                s.due = Due::Timeout;
                self.pending = true;
            } else if !s.pinged && quiet >= idle.ping_ms {
                s.pinged = true;
                s.due = Due::Ping;
                self.pending = true;
            }
        }
    }

    /// The next due ping or timeout error, encoded into `buf` (at least [`POLL_BUF_LEN`]).
    pub fn poll_send(&mut self, buf: &mut [u8]) -> Option<(usize, SendKind)> {
        if !self.pending {
            return None;
        }
        for s in self.sessions.as_mut_slice().iter_mut().filter(|s| s.ended.is_none()) {
            let due = core::mem::replace(&mut s.due, Due::Nothing);
            let sent = match due {
                Due::Nothing => continue,
                Due::Ping => {
                    control::bare(control::PING, &s.sid).encode(buf).ok().map(|n| (n, SendKind::Ping))
                }
                Due::Timeout => {
                    s.ended = Some(EndReason::Timeout);
                    let e = ControlError { err: "session timeout", close: true, ..ControlError::default() };
                    control::encode_error_frame(buf, &s.sid, &e).ok().map(|n| (n, SendKind::Timeout))
                }
            };
            if let Some((n, _)) = sent {
                s.bytes_out = s.bytes_out.saturating_add(n as u64);
                return sent;
            }
        }
        None
    }

    /// The next session that left the table (closed, rejected, timed out), removing it for
    /// good: its handlers must be closed.
    pub fn poll_ended(&mut self) -> Option<(Id, Option<Proto>, EndReason)> {
        if !self.pending {
            return None;
        }
        match self.sessions.as_slice().iter().position(|s| s.ended.is_some()) {
            Some(i) => {
                let s = self.sessions.swap_remove(i);
                s.ended.map(|why| (s.sid, s.proto, why))
            }
            None => {
                self.pending = self.sessions.as_slice().iter().any(|s| s.due != Due::Nothing);
                None
            }
        }
    }

    /// Ends `sid` on the device's initiative (a local `sessions kill`), encoding the `close`
    /// that tells the server into `buf`. Returns the reply length and the session's first
    /// protocol; `None` without such a session. No [`ControlSessions::poll_ended`] follows.
    pub fn kill(&mut self, sid: &str, buf: &mut [u8]) -> Option<(Option<usize>, Option<Proto>)> {
        let i = self.find(sid)?;
        let s = self.sessions.swap_remove(i);
        Some((control::bare(control::CLOSE, sid).encode(buf).ok(), s.proto))
    }

    /// The link dropped: every session is gone (the server's side went with it). No
    /// [`ControlSessions::poll_ended`] follows; the caller drops all handlers.
    pub fn clear(&mut self) {
        self.sessions.clear();
        self.pending = false;
    }
}
