//! The device side of the protocol as one sans-IO object: link supervision ([`crate::link`])
//! and control sessions ([`crate::control_sessions`]), driven from bytes and a clock.
//!
//! ```text
//!  credentials, dial results, link closed ──handle_*(…, now)──┐
//!  websocket message bytes ──handle_frame(bytes, now, reply)──┤      ┌── Routed::Shell / Deliver ──> sub-machines
//!  timer ──handle_timeout(now)────────────────────────────────┤      │     (shells, file transfer, port forward,
//!                                                             v      │      mender-client: the caller, for now)
//!                                                          [ Engine ]─┤
//!                                                             │      └── Routed::Handled { reply } ──> send
//!             poll_timeout() ──> caller's one timer           │
//!             poll_action(buf) ──> Dial, CloseLink, RequestReread, ReapOrphans, Send{len}, SessionEnded, …
//! ```
//!
//! Rules for the caller (as in quinn-proto): after every `handle_*` call, drain
//! [`Engine::poll_action`] until it returns `None`, then re-arm one timer at
//! [`Engine::poll_timeout`]. `now` never goes backwards.
//!
//! # The seam for protocol sub-machines
//!
//! The engine owns what every session shares (link, session table, handshake, keep-alive)
//! and hands each protocol's messages out:
//! - [`Routed::Shell`]: a shell message (protocol 1 runs without a control session);
//! - [`Routed::Deliver`]: a message of a served protocol (2, 3, 4) inside an open session;
//! - [`Action::SessionEnded`]: the session is gone, its per-session state must go too;
//! - [`LinkAction::CloseLink`]: every control session is gone; [`LinkAction::ReapOrphans`]
//!   and [`LinkAction::StopAllSessions`]: the shell sessions must go.
//!
//! A sub-machine in core plugs in by taking over one of these outputs inside
//! `handle_frame`/`poll_action` and adding its own actions and deadline to `poll_action` and
//! `poll_timeout`: [`crate::device::Device`] does so for the shell table (protocol 1, orphan
//! reaping, stop-all); the caller handles what no sub-machine has taken over.

use core::time::Duration;

use crate::control_sessions::{
    self, ControlSessions, EndReason, FixedStore, Id, IdleConfig, Note, SendKind, Session, SessionStore,
};
use crate::frame::{Frame, MAX_FRAME_LEN, Proto};
use crate::link::{CredentialsUpdate, LinkAction, LinkConfig, LinkState, Supervisor};
use crate::time::Instant;

pub use crate::control_sessions::Routed;

/// Buffer size with which every reply of [`Engine::handle_frame`] fits: an error reply echoes
/// the message's `typ` (twice), `sid` and `msgid`, which together fit in one incoming frame,
/// and its text is formatted in the same buffer first.
pub const REPLY_BUF_LEN: usize = 3 * MAX_FRAME_LEN + 512;

/// Engine parameters.
#[derive(Clone, Copy, Debug)]
pub struct Config<'p> {
    /// Link supervision.
    pub link: LinkConfig,
    /// Idle control sessions.
    pub idle: IdleConfig,
    /// The shell protocol is enabled (`Terminal.Disable` off).
    pub terminal: bool,
    /// Protocols served inside control sessions (2, 3, 4 as enabled).
    pub served: &'p [Proto],
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Link supervision.
    Link(LinkAction),
    /// Send the first `len` bytes of the buffer given to [`Engine::poll_action`].
    Send {
        /// Frame length.
        len: usize,
        /// What it is.
        kind: SendKind,
    },
    /// A control session left the table: close its handlers.
    SessionEnded {
        /// Its id.
        sid: Id,
        /// Its first protocol other than control.
        proto: Option<Proto>,
        /// Why.
        reason: EndReason,
    },
}

/// The device side of the protocol, its control sessions kept in `S`.
#[derive(Clone, Debug)]
pub struct Engine<S> {
    link: Supervisor,
    sessions: ControlSessions<S>,
    terminal: bool,
}

/// An engine with a fixed table of at most `N` control sessions, inline: what a device needs.
pub type FixedEngine<const N: usize> = Engine<FixedStore<N>>;

impl<const N: usize> Engine<FixedStore<N>> {
    /// A new engine with at most `N` control sessions, without credentials. `seed`: a random
    /// number for the backoff's jitter.
    pub fn new(cfg: &Config<'_>, seed: u64) -> Self {
        Self::with_store(cfg, seed, heapless::Vec::new(), N)
    }
}

impl<S: SessionStore> Engine<S> {
    /// A new engine keeping at most `cap` control sessions in `store`, without credentials.
    /// `seed`: a random number for the backoff's jitter.
    pub fn with_store(cfg: &Config<'_>, seed: u64, store: S, cap: usize) -> Self {
        let mut protocols: heapless::Vec<u16, { control_sessions::MAX_PROTOCOLS }> = heapless::Vec::new();
        for p in cfg.served {
            let _ = protocols.push(p.0);
        }
        if cfg.terminal {
            let _ = protocols.push(Proto::SHELL.0);
        }
        Self {
            link: Supervisor::new(cfg.link, seed),
            sessions: ControlSessions::with_store(cfg.idle, &protocols, store, cap),
            terminal: cfg.terminal,
        }
    }

    /// Protocols listed in `accept`, sorted.
    pub fn protocols(&self) -> &[u16] {
        self.sessions.protocols()
    }

    /// Serves `proto` inside control sessions from now on (a handler was registered for it);
    /// false if the protocol list is full.
    pub fn serve(&mut self, proto: Proto) -> bool {
        proto != Proto::SHELL && proto != Proto::CONTROL && self.sessions.add_protocol(proto.0)
    }

    /// Where the link is.
    pub fn link_state(&self) -> LinkState {
        self.link.state()
    }

    /// The link supervisor (read-only).
    pub fn link(&self) -> &Supervisor {
        &self.link
    }

    /// Open control sessions.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter()
    }

    /// Number of open control sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Adds `n` bytes a handler sent for `sid` (for the status CLI).
    pub fn count_sent(&mut self, sid: &str, n: usize) {
        self.sessions.count_sent(sid, n);
    }

    fn after_link_event(&mut self, dropped: bool) {
        if dropped {
            self.sessions.clear();
        }
    }

    /// The credential source reported.
    pub fn handle_credentials(&mut self, update: CredentialsUpdate, now: Instant) {
        let dropped = self.link.handle_credentials(update, now);
        self.after_link_event(dropped);
    }

    /// The credential source went away.
    pub fn handle_revoked(&mut self, now: Instant) {
        let dropped = self.link.handle_revoked(now);
        self.after_link_event(dropped);
    }

    /// The dial succeeded.
    pub fn handle_connected(&mut self, now: Instant) {
        self.link.handle_connected(now);
    }

    /// The dial failed; returns the delay before the next attempt.
    pub fn handle_dial_failed(&mut self, unauthorized: bool, now: Instant) -> Option<Duration> {
        self.link.handle_dial_failed(unauthorized, now)
    }

    /// The websocket ended; returns the delay before the next attempt.
    pub fn handle_link_closed(&mut self, now: Instant) -> Option<Duration> {
        let delay = self.link.handle_link_closed(now);
        self.after_link_event(delay.is_some());
        delay
    }

    /// The daemon stops.
    pub fn handle_shutdown(&mut self, now: Instant) {
        let dropped = self.link.handle_shutdown(now);
        self.after_link_event(dropped);
    }

    /// One websocket message. A reply, if any, is encoded into `reply` (at least
    /// [`REPLY_BUF_LEN`] bytes for every reply to fit; a reply that does not fit is dropped).
    /// Messages only come over a link: without one (a message the caller read before it
    /// closed the link) the message is dropped, so nothing outlives the link it came on.
    pub fn handle_frame<'a>(&mut self, bytes: &'a [u8], now: Instant, reply: &mut [u8]) -> Routed<'a> {
        if !self.link.is_up() {
            return Routed::Handled { reply: None, note: Note::NotConnected };
        }
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                let n = control_sessions::encode_with_text(
                    reply,
                    format_args!("failed to decode message: {e}"),
                    |b, err| {
                        let e = crate::control::ControlError { err, ..Default::default() };
                        crate::control::encode_error_frame(b, "", &e)
                    },
                )
                .ok();
                return Routed::Handled { reply: n, note: Note::Undecodable(e) };
            }
        };
        if frame.header.proto == Proto::SHELL {
            if self.terminal {
                return Routed::Shell(frame);
            }
            let (typ, sid) = (frame.header.typ, frame.header.sid);
            let n = control_sessions::encode_with_text(
                reply,
                format_args!("unknown message protocol and type: 1/{typ}"),
                |b, text| {
                    crate::shell::encode_with_status(
                        b,
                        typ,
                        sid,
                        crate::shell::Status::Error,
                        text.as_bytes(),
                    )
                },
            )
            .ok();
            return Routed::Handled { reply: n, note: Note::ShellDisabled };
        }
        self.sessions.handle(frame, now, reply)
    }

    /// Ends control session `sid` on the device's initiative; the `close` for the server goes
    /// into `buf`. Returns its length and the session's first protocol, `None` without such a
    /// session. The caller closes the session's handlers (no [`Action::SessionEnded`]).
    pub fn kill_session(&mut self, sid: &str, buf: &mut [u8]) -> Option<(Option<usize>, Option<Proto>)> {
        self.sessions.kill(sid, buf)
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let s = if self.link.is_up() { self.sessions.poll_timeout() } else { None };
        match (self.link.poll_timeout(), s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now);
        if self.link.is_up() {
            self.sessions.handle_timeout(now);
        }
    }

    /// The next action. Frames to send are encoded into `buf` (at least
    /// [`control_sessions::POLL_BUF_LEN`] bytes).
    pub fn poll_action(&mut self, buf: &mut [u8]) -> Option<Action> {
        if let Some(a) = self.link.poll_action() {
            return Some(Action::Link(a));
        }
        if let Some((len, kind)) = self.sessions.poll_send(buf) {
            return Some(Action::Send { len, kind });
        }
        self.sessions.poll_ended().map(|(sid, proto, reason)| Action::SessionEnded { sid, proto, reason })
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;
    use crate::backoff::BackoffConfig;
    use crate::control::{self, ControlError, ControlMessage};
    use crate::control_sessions::{POLL_BUF_LEN, Refusal, Reject};
    use crate::frame::{FrameOut, Prop};

    const CAP: usize = 4;
    const SERVED: &[Proto] = &[Proto::FILE_TRANSFER, Proto::PORT_FORWARD];

    use crate::selftest::t;

    fn engine() -> FixedEngine<CAP> {
        let cfg = Config {
            link: LinkConfig {
                backoff: BackoffConfig { base_ms: 1_000, cap_ms: 60_000, stable_after_ms: 60_000 },
                disconnect_grace_ms: 60_000,
                reread: true,
            },
            idle: IdleConfig::default(),
            terminal: true,
            served: SERVED,
        };
        let mut e = Engine::new(&cfg, 42);
        e.handle_credentials(CredentialsUpdate::Changed, t(0));
        let mut buf = [0u8; POLL_BUF_LEN];
        assert_eq!(e.poll_action(&mut buf), Some(Action::Link(LinkAction::Dial)));
        assert_eq!(e.poll_action(&mut buf), None);
        e.handle_connected(t(0));
        e
    }

    /// A frame from the server, encoded into `buf`.
    fn msg<'b>(buf: &'b mut [u8], proto: Proto, typ: &str, sid: &str, body: &[u8]) -> &'b [u8] {
        let props = [Prop::str("user_id", "u1"), Prop::str("msgid", "m7")];
        let n =
            FrameOut { proto, typ, sid, props: &props, body, ..FrameOut::EMPTY }.encode(buf).expect("fits");
        &buf[..n]
    }

    fn control_reply<'r>(reply: &'r [u8], routed: &Routed<'_>) -> Frame<'r> {
        let Routed::Handled { reply: Some(n), .. } = routed else { panic!("no reply: {routed:?}") };
        Frame::decode(&reply[..*n]).expect("reply decodes")
    }

    fn error_of<'r>(f: &Frame<'r>) -> ControlError<'r> {
        match ControlMessage::from_frame(f) {
            Ok(ControlMessage::Error(e)) => e,
            other => panic!("not an error: {other:?}"),
        }
    }

    /// Handshake, ping, a served message, an unserved one, close.
    fn control_session_lifecycle() {
        let mut e = engine();
        let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
        let open = control::Open::new(&[1]).unwrap();
        let mut body = [0u8; 32];
        let n = open.encode(&mut body).unwrap();
        let r =
            e.handle_frame(msg(&mut inb, Proto::CONTROL, control::OPEN, "s1", &body[..n]), t(5), &mut reply);
        assert!(matches!(r, Routed::Handled { note: Note::Accepted("s1"), .. }));
        let f = control_reply(&reply, &r);
        let Ok(ControlMessage::Accept(a)) = ControlMessage::from_frame(&f) else { panic!() };
        assert_eq!(a.protocols(), &[Proto(1), Proto(2), Proto(3)]);
        assert_eq!(f.header.sid, "s1");
        assert_eq!(e.session_count(), 1);

        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "s1", &[]), t(6), &mut reply);
        assert_eq!(control_reply(&reply, &r).header.typ, control::PONG);

        let r = e.handle_frame(msg(&mut inb, Proto::FILE_TRANSFER, "stat", "s1", b"x"), t(7), &mut reply);
        let Routed::Deliver(f) = r else { panic!("{r:?}") };
        assert_eq!((f.header.proto, f.header.sid, f.body), (Proto::FILE_TRANSFER, "s1", &b"x"[..]));

        let r = e.handle_frame(msg(&mut inb, Proto::MENDER_CLIENT, "x", "s1", &[]), t(8), &mut reply);
        let err = error_of(&control_reply(&reply, &r));
        assert_eq!(err.err, "no handler registered for protocol: 0x0004");
        assert!(!err.close);
        assert_eq!((err.msgproto, err.msgtype, err.msgid), (Proto::MENDER_CLIENT, "x", "m7"));

        let r = e.handle_frame(msg(&mut inb, Proto::SHELL, "new", "s9", &[]), t(9), &mut reply);
        assert!(matches!(r, Routed::Shell(f) if f.header.sid == "s9"));
        assert_eq!(e.session_count(), 1, "shell messages open no control session");

        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::CLOSE, "s1", &[]), t(10), &mut reply);
        assert_eq!(r, Routed::Handled { reply: None, note: Note::Closed("s1") });
        let mut buf = [0u8; POLL_BUF_LEN];
        let Some(Action::SessionEnded { sid, proto, reason }) = e.poll_action(&mut buf) else { panic!() };
        assert_eq!((sid.as_str(), proto, reason), ("s1", Some(Proto::FILE_TRANSFER), EndReason::Closed));
        assert_eq!(e.poll_action(&mut buf), None);
        assert_eq!(e.session_count(), 0);
    }

    /// Idle sessions: ping at 48 s after the last message, "session timeout" at 60 s; any
    /// message in between restarts the clock.
    fn control_ping_at_48s_timeout_at_60s() {
        let mut e = engine();
        let (mut inb, mut reply, mut buf) = ([0u8; 256], [0u8; 1024], [0u8; POLL_BUF_LEN]);
        e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "a", &[]), t(1_000), &mut reply);
        e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "b", &[]), t(2_000), &mut reply);
        assert_eq!(e.poll_timeout(), Some(t(49_000)));
        e.handle_timeout(t(48_999));
        assert_eq!(e.poll_action(&mut buf), None);
        e.handle_timeout(t(49_000));
        let Some(Action::Send { len, kind: SendKind::Ping }) = e.poll_action(&mut buf) else { panic!() };
        let f = Frame::decode(&buf[..len]).unwrap();
        assert_eq!((f.header.proto, f.header.typ, f.header.sid), (Proto::CONTROL, control::PING, "a"));
        assert_eq!(e.poll_action(&mut buf), None);
        assert_eq!(e.poll_timeout(), Some(t(50_000)));
        e.handle_timeout(t(50_000));
        assert!(matches!(e.poll_action(&mut buf), Some(Action::Send { kind: SendKind::Ping, .. })));
        // "b" answers; "a" does not.
        e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PONG, "b", &[]), t(55_000), &mut reply);
        assert_eq!(e.poll_timeout(), Some(t(61_000)));
        e.handle_timeout(t(61_000));
        let Some(Action::Send { len, kind: SendKind::Timeout }) = e.poll_action(&mut buf) else { panic!() };
        let f = Frame::decode(&buf[..len]).unwrap();
        let err = error_of(&f);
        assert_eq!((f.header.sid, err.err, err.close), ("a", "session timeout", true));
        assert_eq!((err.msgproto, err.msgtype, err.msgid), (Proto::INVALID, "", ""));
        let Some(Action::SessionEnded { sid, reason: EndReason::Timeout, .. }) = e.poll_action(&mut buf)
        else {
            panic!()
        };
        assert_eq!(sid.as_str(), "a");
        assert_eq!(e.poll_action(&mut buf), None);
        assert_eq!(e.session_count(), 1);
        assert_eq!(e.poll_timeout(), Some(t(55_000 + 48_000)));
    }

    /// Refusals: too many sessions, ids too long; the open sessions keep being answered and a
    /// closed one makes room.
    fn session_cap_and_id_limits() {
        let mut e = engine();
        let (mut inb, mut reply, mut buf) = ([0u8; 512], [0u8; 1024], [0u8; POLL_BUF_LEN]);
        for sid in ["s0", "s1", "s2", "s3"] {
            let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, sid, &[]), t(1), &mut reply);
            assert_eq!(control_reply(&reply, &r).header.typ, control::PONG);
        }
        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "s4", &[]), t(2), &mut reply);
        assert!(matches!(r, Routed::Handled { note: Note::Refused(Refusal::TooMany(CAP)), .. }));
        let f = control_reply(&reply, &r);
        let err = error_of(&f);
        assert_eq!((f.header.sid, err.close), ("s4", true));
        assert_eq!(err.err, "too many open sessions on this device (at most 4)");
        assert_eq!(e.session_count(), CAP);
        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "s2", &[]), t(3), &mut reply);
        assert_eq!(control_reply(&reply, &r).header.typ, control::PONG);
        e.handle_frame(msg(&mut inb, Proto::CONTROL, control::CLOSE, "s2", &[]), t(4), &mut reply);
        assert!(matches!(e.poll_action(&mut buf), Some(Action::SessionEnded { .. })));
        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "s4", &[]), t(5), &mut reply);
        assert_eq!(control_reply(&reply, &r).header.typ, control::PONG);

        let mut e = engine();
        let long = core::str::from_utf8(&[b'x'; 200]).unwrap();
        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, long, &[]), t(1), &mut reply);
        assert_eq!(error_of(&control_reply(&reply, &r)).err, "session id too long: 200 bytes, at most 128");
        let props = [Prop::str("user_id", long)];
        let n = FrameOut {
            proto: Proto::CONTROL,
            typ: control::PING,
            sid: "s",
            props: &props,
            ..FrameOut::EMPTY
        }
        .encode(&mut inb)
        .unwrap();
        let r = e.handle_frame(&inb[..n], t(1), &mut reply);
        assert_eq!(error_of(&control_reply(&reply, &r)).err, "user_id too long: 200 bytes, at most 128");
        assert_eq!(e.session_count(), 0);
    }

    /// Malformed input: an undecodable message, bad handshake bodies, unknown control types, a
    /// malformed peer error. The link stays up throughout.
    fn malformed_control_frames() {
        let mut e = engine();
        let (mut inb, mut reply, mut buf) = ([0u8; 256], [0u8; 1024], [0u8; POLL_BUF_LEN]);
        let r = e.handle_frame(&[0xc1, 0x00], t(1), &mut reply);
        let f = control_reply(&reply, &r);
        let err = error_of(&f);
        assert_eq!((f.header.sid, err.close), ("", false));
        assert!(err.err.starts_with("failed to decode message: "), "{}", err.err);

        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::OPEN, "h", &[0x93]), t(2), &mut reply);
        let err = error_of(&control_reply(&reply, &r));
        assert!(err.close && err.err.starts_with("failed to decode handshake request: "), "{}", err.err);
        assert!(matches!(
            e.poll_action(&mut buf),
            Some(Action::SessionEnded { reason: EndReason::Rejected, .. })
        ));

        let open2 = [0x81, 0xa8, b'v', b'e', b'r', b's', b'i', b'o', b'n', b's', 0x91, 0x02];
        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::OPEN, "h", &open2), t(3), &mut reply);
        assert_eq!(error_of(&control_reply(&reply, &r)).err, "handshake rejected: require version 1");
        assert!(matches!(e.poll_action(&mut buf), Some(Action::SessionEnded { .. })));

        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, "bogus", "h", &[]), t(4), &mut reply);
        let err = error_of(&control_reply(&reply, &r));
        assert_eq!((err.err, err.close), ("session: control type message not understood: 'bogus'", false));
        assert!(matches!(r, Routed::Handled { note: Note::Rejected(Reject::NotUnderstood("bogus")), .. }));

        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::ERROR, "h", &[0xc1]), t(5), &mut reply);
        assert!(matches!(r, Routed::Handled { reply: None, note: Note::MalformedPeerError(_) }));
        assert_eq!(e.session_count(), 1);
        assert_eq!(e.poll_action(&mut buf), None);
        assert!(e.link().is_up());
    }

    /// The link drops: control sessions go with it (no SessionEnded, CloseLink covers them),
    /// their timers too; the backoff timer and the grace timer remain.
    fn link_drop_clears_sessions() {
        let mut e = engine();
        let (mut inb, mut reply, mut buf) = ([0u8; 256], [0u8; 1024], [0u8; POLL_BUF_LEN]);
        e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "a", &[]), t(1), &mut reply);
        let delay = e.handle_link_closed(t(10)).unwrap();
        assert_eq!(e.poll_action(&mut buf), Some(Action::Link(LinkAction::CloseLink)));
        assert_eq!(e.poll_action(&mut buf), Some(Action::Link(LinkAction::RequestReread)));
        assert_eq!(e.poll_action(&mut buf), None);
        assert_eq!(e.session_count(), 0);
        assert_eq!(e.poll_timeout(), Some(t(10).add_duration(delay)));
        // A message read before the close is dropped: nothing outlives the link.
        let r = e.handle_frame(msg(&mut inb, Proto::CONTROL, control::PING, "b", &[]), t(11), &mut reply);
        assert_eq!(r, Routed::Handled { reply: None, note: Note::NotConnected });
        let r = e.handle_frame(msg(&mut inb, Proto::SHELL, "shell", "x", &[]), t(11), &mut reply);
        assert_eq!(r, Routed::Handled { reply: None, note: Note::NotConnected });
        assert_eq!(e.session_count(), 0);
    }

    /// Terminal disabled: a shell message gets the reference's shell-protocol error.
    fn shell_disabled_reply() {
        let cfg = Config {
            link: LinkConfig::new(1_000, 60_000, 60_000, false),
            idle: IdleConfig::default(),
            terminal: false,
            served: &[],
        };
        let mut e: FixedEngine<2> = Engine::new(&cfg, 1);
        assert_eq!(e.protocols(), &[] as &[u16]);
        assert!(e.serve(Proto::MENDER_CLIENT));
        assert!(!e.serve(Proto::SHELL));
        assert_eq!(e.protocols(), &[4]);
        e.handle_credentials(CredentialsUpdate::Changed, t(0));
        e.handle_connected(t(0));
        let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
        let r = e.handle_frame(msg(&mut inb, Proto::SHELL, "new", "z", &[]), t(1), &mut reply);
        let Routed::Handled { reply: Some(n), note: Note::ShellDisabled } = r else { panic!("{r:?}") };
        let f = Frame::decode(&reply[..n]).unwrap();
        assert_eq!((f.header.proto, f.header.typ, f.header.sid), (Proto::SHELL, "new", "z"));
        assert_eq!(f.body, b"unknown message protocol and type: 1/new");
        assert_eq!(crate::shell::status(&f), Some(crate::shell::Status::Error));
    }

    /// `sessions kill`: a close for the server, the first protocol for the caller.
    fn kill_session_closes() {
        let mut e = engine();
        let (mut inb, mut reply, mut buf) = ([0u8; 256], [0u8; 1024], [0u8; POLL_BUF_LEN]);
        e.handle_frame(msg(&mut inb, Proto::PORT_FORWARD, "new", "k", &[]), t(1), &mut reply);
        let (n, proto) = e.kill_session("k", &mut reply).unwrap();
        let f = Frame::decode(&reply[..n.unwrap()]).unwrap();
        assert_eq!((f.header.typ, f.header.sid, proto), (control::CLOSE, "k", Some(Proto::PORT_FORWARD)));
        assert_eq!(e.kill_session("k", &mut reply), None);
        assert_eq!(e.poll_action(&mut buf), None);
    }

    crate::selftests!(
        control_session_lifecycle,
        control_ping_at_48s_timeout_at_60s,
        session_cap_and_id_limits,
        malformed_control_frames,
        link_drop_clears_sessions,
        shell_disabled_reply,
        kill_session_closes,
    );
}

#[cfg(test)]
mod tests;
