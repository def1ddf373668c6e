//! Dispatch of every websocket message by `proto`, as mender-connect 2.1.0 does it
//! (`app/daemon.go` `routeMessage`, `session/router.go`, `session/session.go`):
//!
//! - shell (1): the legacy path, no handshake, handled by [`crate::proto::shell::Shells`];
//! - control (0xFFFF) and every other proto: per-sid control sessions. `ping` → `pong`,
//!   `open` → `accept` listing the routes, `close`/`error{close}` end the session, idle
//!   sessions get a control `ping` after 48 s and a closing "session timeout" error 12 s later;
//! - file transfer (2), port forward (3), mender-client (4): served by a [`SessionHandler`]
//!   registered for the proto; without one the reference's "no handler registered" error.
//!
//! A message that does not decode gets a control error and the websocket stays up (the
//! reference drops the connection instead).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mender_connect_core::control::{self, Accept, ControlError, ControlMessage, PROTOCOL_VERSION};
use mender_connect_core::shell::ShellMessage;
use mender_connect_core::{Frame, Proto};

use crate::proto::shell::{Action, Shells};

/// Control-session idle timeout (reference `connectionmanager.DefaultPingWait`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Ping after 4/5 of the idle timeout without messages.
const IDLE_PING: Duration = Duration::from_secs(48);
/// Control sessions open at once. The server opens one per user websocket (a user in the UI, a
/// mender-cli port forward), so this is far above real use; it bounds what a peer can make the
/// daemon hold (20,000 sessions used to take 120 MiB; 1,024 with the longest ids take under
/// 1 MiB). Idle sessions end after 60 s, so a burst of short-lived ones (the malformed-input
/// test sends 720) stays well under it.
pub const MAX_SESSIONS: usize = 1024;
/// Longest session id and `user_id` kept. The server makes session ids UUIDv4 (36 bytes) and
/// forces them on every user message; user ids are the JWT's `sub`, a UUID too.
pub const MAX_ID_LEN: usize = 128;

/// One protocol's state inside a control session (file transfer, port forward, ...).
///
/// Handlers are created on the first message of their proto in a session and closed when the
/// session ends. Replies go into `out` as encoded frames; a handler that needs I/O keeps a
/// clone of the outbound sender given to its [`HandlerFactory`] and spawns its own tasks.
pub trait SessionHandler {
    /// Serves one message of the handler's proto.
    fn serve(&mut self, sid: &str, frame: &Frame<'_>, out: &mut Vec<Vec<u8>>);
    /// The session ended; free resources.
    fn close(&mut self) {}
    /// What the handler is doing right now (transfers, forwarded connections), for the
    /// status CLI; called only when a client asks.
    fn activity(&self, _sid: &str, _out: &mut Vec<Activity>) {}
    /// Bytes of the frames the handler's own tasks sent through the outbound queue (file
    /// chunks, forwarded data), for the session's `bytes_out` in the status CLI.
    fn bulk_bytes_out(&self) -> u64 {
        0
    }
}

/// Work in progress inside a control session, as the status CLI shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    /// A file transfer.
    Transfer(crate::ops::status::protocol::Transfer),
    /// A forwarded connection.
    Forward(crate::ops::status::protocol::PortForward),
}

/// One control session as the status CLI shows it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// Session id.
    pub id: String,
    /// `user_id` of the first message, if the server sent one.
    pub user: String,
    /// The first protocol other than control used in the session.
    pub proto: Option<Proto>,
    /// First message.
    pub started: Instant,
    /// Last message.
    pub last_rx: Instant,
    /// Bytes of the messages received for the session.
    pub bytes_in: u64,
    /// Bytes of the messages sent for it: replies and the handlers' bulk frames.
    pub bytes_out: u64,
}

/// Makes a handler for a new session.
pub type HandlerFactory = Box<dyn Fn() -> Box<dyn SessionHandler>>;

struct ControlSession {
    last_rx: Instant,
    pinged: bool,
    handlers: HashMap<Proto, Box<dyn SessionHandler>>,
    started: Instant,
    user: String,
    proto: Option<Proto>,
    bytes_in: u64,
    bytes_out: u64,
}

impl ControlSession {
    fn close(&mut self) {
        for h in self.handlers.values_mut() {
            h.close();
        }
    }
}

/// The message router.
pub struct Router {
    terminal: bool,
    factories: Vec<(Proto, HandlerFactory)>,
    sessions: HashMap<String, ControlSession>,
}

fn encode(f: impl FnOnce(&mut [u8]) -> Result<usize, mender_connect_core::EncodeError>) -> Option<Vec<u8>> {
    crate::proto::outframe::encode(&"reply", f)
}

fn error_frame(sid: &str, err: &ControlError<'_>) -> Option<Vec<u8>> {
    encode(|b| control::encode_error_frame(b, sid, err))
}

/// The error the reference sends about message `frame`.
fn error_about(sid: &str, frame: &Frame<'_>, close: bool, text: &str) -> Option<Vec<u8>> {
    let err = ControlError {
        err: text,
        close,
        msgproto: frame.header.proto,
        msgtype: frame.header.typ,
        msgid: frame.header.props.get_str("msgid").unwrap_or(""),
        ..ControlError::default()
    };
    error_frame(sid, &err)
}

impl Router {
    /// `terminal`: the shell protocol is enabled (`Terminal.Disable` off).
    pub fn new(terminal: bool) -> Self {
        Self { terminal, factories: Vec::new(), sessions: HashMap::new() }
    }

    /// Registers the handler of an enabled protocol (2, 3 or 4); it is then listed in `accept`.
    pub fn register(&mut self, proto: Proto, factory: HandlerFactory) {
        self.factories.retain(|(p, _)| *p != proto);
        self.factories.push((proto, factory));
    }

    /// Protocols listed in `accept`.
    pub fn protocols(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.factories.iter().map(|(p, _)| p.0).collect();
        if self.terminal {
            v.push(Proto::SHELL.0);
        }
        v.sort_unstable();
        v
    }

    /// Number of open control sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Routes one websocket message.
    pub fn route(&mut self, bytes: &[u8], shells: &mut Shells, now: Instant) -> Vec<Action> {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("dropping undecodable message ({} bytes): {e}", bytes.len());
                let text = format!("failed to decode message: {e}");
                let err = ControlError { err: &text, ..ControlError::default() };
                return error_frame("", &err).map(Action::Reply).into_iter().collect();
            }
        };
        let sid = frame.header.sid;
        if frame.header.proto == Proto::SHELL {
            if !self.terminal {
                let text = format!("unknown message protocol and type: 1/{}", frame.header.typ);
                return crate::proto::shell::frame(frame.header.typ, sid, mender_connect_core::shell::Status::Error, text.as_bytes())
                    .map(Action::Reply)
                    .into_iter()
                    .collect();
            }
            return match ShellMessage::from_frame(&frame) {
                Ok(msg) => shells.handle(msg, frame.header.typ, sid, now),
                Err(_) => Vec::new(),
            };
        }
        self.route_session(&frame, now).into_iter().map(Action::Reply).collect()
    }

    fn route_session(&mut self, frame: &Frame<'_>, now: Instant) -> Vec<Vec<u8>> {
        let sid = frame.header.sid;
        if !self.sessions.contains_key(sid) {
            if let Some(text) = self.refusal(frame) {
                log::warn!("session: refusing a new session: {text}");
                return error_about(sid, frame, true, &text).into_iter().collect();
            }
        }
        let session = self.sessions.entry(sid.to_owned()).or_insert_with(|| ControlSession {
            last_rx: now,
            pinged: false,
            handlers: HashMap::new(),
            started: now,
            user: frame.header.props.get_str("user_id").unwrap_or("").to_owned(),
            proto: None,
            bytes_in: 0,
            bytes_out: 0,
        });
        session.last_rx = now;
        session.pinged = false;
        session.bytes_in = session.bytes_in.saturating_add(frame.body.len() as u64);
        if session.proto.is_none() && frame.header.proto != Proto::CONTROL {
            session.proto = Some(frame.header.proto);
        }
        let out = self.route_in_session(frame, now);
        if let Some(s) = self.sessions.get_mut(sid) {
            let n: usize = out.iter().map(Vec::len).sum();
            s.bytes_out = s.bytes_out.saturating_add(n as u64);
        }
        out
    }

    fn route_in_session(&mut self, frame: &Frame<'_>, _now: Instant) -> Vec<Vec<u8>> {
        let sid = frame.header.sid;
        let mut out = Vec::new();
        if frame.header.proto == Proto::CONTROL {
            let close = self.control(frame, &mut out);
            if close {
                if let Some(mut s) = self.sessions.remove(sid) {
                    s.close();
                }
            }
            return out;
        }
        let proto = frame.header.proto;
        let Some(session) = self.sessions.get_mut(sid) else { return out };
        if let std::collections::hash_map::Entry::Vacant(slot) = session.handlers.entry(proto) {
            match self.factories.iter().find(|(p, _)| *p == proto) {
                Some((_, make)) => {
                    slot.insert(make());
                }
                None => {
                    let text = format!("no handler registered for protocol: 0x{:04X}", proto.0);
                    out.extend(error_about(sid, frame, false, &text));
                    return out;
                }
            }
        }
        if let Some(h) = session.handlers.get_mut(&proto) {
            h.serve(sid, frame, &mut out);
        }
        out
    }

    /// Why a message for an unknown `sid` may not open a session, if it may not.
    fn refusal(&self, frame: &Frame<'_>) -> Option<String> {
        let user = frame.header.props.get_str("user_id").unwrap_or("");
        if frame.header.sid.len() > MAX_ID_LEN {
            Some(format!("session id too long: {} bytes, at most {MAX_ID_LEN}", frame.header.sid.len()))
        } else if user.len() > MAX_ID_LEN {
            Some(format!("user_id too long: {} bytes, at most {MAX_ID_LEN}", user.len()))
        } else if self.sessions.len() >= MAX_SESSIONS {
            Some(format!("too many open sessions on this device (at most {MAX_SESSIONS})"))
        } else {
            None
        }
    }

    /// Handles a control message; returns whether the session ends.
    fn control(&self, frame: &Frame<'_>, out: &mut Vec<Vec<u8>>) -> bool {
        let sid = frame.header.sid;
        let msg = match ControlMessage::from_frame(frame) {
            Ok(m) => m,
            Err(e) => {
                let (close, text) = match frame.header.typ {
                    control::OPEN => (true, format!("failed to decode handshake request: {e}")),
                    control::ACCEPT => (true, format!("malformed handshake response: {e}")),
                    // The reference ignores the decode error of a peer's `error` (session.go
                    // `HandleControl`): it only logs, answers nothing and keeps the session.
                    control::ERROR => {
                        log::error!("session: received malformed error from client: {e}");
                        return false;
                    }
                    _ => (false, format!("failed to decode control message: {e}")),
                };
                out.extend(error_about(sid, frame, close, &text));
                return close;
            }
        };
        match msg {
            ControlMessage::Ping => {
                out.extend(encode(|b| control::bare(control::PONG, sid).encode(b)));
                false
            }
            ControlMessage::Pong => false,
            ControlMessage::Open(open) => {
                if open.supports(PROTOCOL_VERSION) {
                    let protocols = self.protocols();
                    if let Some(accept) = Accept::new(PROTOCOL_VERSION, &protocols) {
                        out.extend(encode(|b| control::encode_accept_frame(b, sid, &accept)));
                        log::info!("session: accepting new session with ID: {sid}");
                    }
                    false
                } else {
                    let text = format!("handshake rejected: require version {PROTOCOL_VERSION}");
                    out.extend(error_about(sid, frame, true, &text));
                    true
                }
            }
            ControlMessage::Accept(a) if a.version != PROTOCOL_VERSION => {
                let text = format!("unsupported protocol version {}: require version {PROTOCOL_VERSION}", a.version);
                out.extend(error_about(sid, frame, true, &text));
                true
            }
            ControlMessage::Accept(_) => false,
            ControlMessage::Close => {
                log::info!("session: closed {sid}");
                true
            }
            ControlMessage::Error(e) => {
                log::error!("session: received error from client: {}", e.err);
                e.close
            }
            ControlMessage::Unknown(typ) => {
                let text = format!("session: control type message not understood: '{typ}'");
                out.extend(error_about(sid, frame, false, &text));
                false
            }
            _ => false,
        }
    }

    /// Idle control sessions: ping after 48 s, end with "session timeout" after 60 s.
    pub fn tick(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (sid, s) in &mut self.sessions {
            let idle = now.duration_since(s.last_rx);
            if s.pinged && idle >= IDLE_TIMEOUT {
                let err = ControlError { err: "session timeout", close: true, ..ControlError::default() };
                out.extend(error_frame(sid, &err));
                ended.push(sid.clone());
            } else if !s.pinged && idle >= IDLE_PING {
                s.pinged = true;
                out.extend(encode(|b| control::bare(control::PING, sid).encode(b)));
            }
        }
        for sid in ended {
            if let Some(mut s) = self.sessions.remove(&sid) {
                s.close();
            }
        }
        out
    }

    /// Whether any session is open: the daemon's 1 s tick only runs while there is one, so an
    /// idle connected device does not wake up every second.
    pub fn has_sessions(&self) -> bool {
        !self.sessions.is_empty()
    }

    /// The control sessions, for the status CLI (taken only when asked).
    pub fn sessions_info(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .sessions
            .iter()
            .map(|(sid, s)| SessionInfo {
                id: sid.clone(),
                user: s.user.clone(),
                proto: s.proto,
                started: s.started,
                last_rx: s.last_rx,
                bytes_in: s.bytes_in,
                bytes_out: s.handlers.values().fold(s.bytes_out, |n, h| n.saturating_add(h.bulk_bytes_out())),
            })
            .collect();
        v.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Transfers and forwarded connections of every session.
    pub fn activity(&self) -> Vec<Activity> {
        let mut out = Vec::new();
        for (sid, s) in &self.sessions {
            for h in s.handlers.values() {
                h.activity(sid, &mut out);
            }
        }
        out
    }

    /// Ends a control session on the device's initiative (`mender-connect sessions kill`):
    /// its handlers are closed and the returned `close` frame tells the server; also returns
    /// the session's first protocol. `None` when there is no such session.
    pub fn kill(&mut self, sid: &str) -> Option<(Option<Vec<u8>>, Option<Proto>)> {
        let mut s = self.sessions.remove(sid)?;
        s.close();
        log::info!("session: closed {sid} on local request");
        Some((encode(|b| control::bare(control::CLOSE, sid).encode(b)), s.proto))
    }

    /// The websocket dropped: control sessions do not survive it (the server's side is gone).
    pub fn disconnected(&mut self) {
        for (_, mut s) in self.sessions.drain() {
            s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mender_connect_core::FrameOut;
    use mender_connect_core::frame::Prop;

    fn frame(typ: &str, sid: &str, user: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 16 * 1024];
        let props = [Prop::str("user_id", user)];
        let n = FrameOut { proto: Proto::CONTROL, typ, sid, props: &props, ..FrameOut::EMPTY }.encode(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// The replies as (type, error text).
    fn route(r: &mut Router, typ: &str, sid: &str, user: &str) -> Vec<(String, String)> {
        let bytes = frame(typ, sid, user);
        let f = Frame::decode(&bytes).unwrap();
        r.route_session(&f, Instant::now())
            .iter()
            .map(|b| {
                let f = Frame::decode_any_size(b).unwrap();
                let text = match ControlMessage::from_frame(&f).unwrap() {
                    ControlMessage::Error(e) => format!("error close={} {}", e.close, e.err),
                    _ => String::new(),
                };
                (f.header.typ.to_owned(), text)
            })
            .collect()
    }

    /// Issue 16, finding 6: sessions are bounded in number and in id length; the refusal is a
    /// closing control error, and the open sessions keep being answered.
    #[test]
    fn sessions_are_bounded_and_the_rest_keep_working() {
        let mut r = Router::new(false);
        for i in 0..MAX_SESSIONS {
            let out = route(&mut r, control::PING, &format!("s{i}"), "u");
            assert_eq!(out[0].0, control::PONG);
        }
        let out = route(&mut r, control::PING, "one-more", "u");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, format!("error close=true too many open sessions on this device (at most {MAX_SESSIONS})"));
        assert_eq!(r.sessions(), MAX_SESSIONS);
        assert_eq!(route(&mut r, control::PING, "s7", "u")[0].0, control::PONG);
        // A closed session makes room.
        assert!(route(&mut r, control::CLOSE, "s7", "u").is_empty());
        assert_eq!(route(&mut r, control::PING, "one-more", "u")[0].0, control::PONG);

        let mut r = Router::new(false);
        let long = "x".repeat(3000);
        let out = route(&mut r, control::PING, &long, "u");
        assert_eq!(out[0].1, "error close=true session id too long: 3000 bytes, at most 128");
        let out = route(&mut r, control::PING, "s", &long);
        assert_eq!(out[0].1, "error close=true user_id too long: 3000 bytes, at most 128");
        assert_eq!(r.sessions(), 0);
        let uuid = "0b7d1a52-3c1e-4f5e-9d0a-2f4c5e6b7a8c";
        assert_eq!(route(&mut r, control::PING, uuid, uuid)[0].0, control::PONG);
    }
}
