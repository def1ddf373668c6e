//! Dispatch of every websocket message, executing the core's protocol engine
//! ([`mender_connect_core::engine::Engine`]), which decides, as mender-connect 2.1.0 does
//! (`app/daemon.go` `routeMessage`, `session/router.go`, `session/session.go`; the reference's
//! behaviour is written down in `mender_connect_core::control_sessions`):
//!
//! - shell (1): the legacy path, no handshake, handled by `crate::proto::shell::Shells`;
//! - control (0xFFFF) and every other proto: per-sid control sessions, their handshake, idle
//!   pings and timeout, and the caps on what a peer can open ([`MAX_SESSIONS`], [`MAX_ID_LEN`]);
//! - port forward (3): core's device keeps the connection table; its socket work is executed
//!   by `crate::proto::portforward::Forwards`, whose tasks report back through `Router::report`;
//! - file transfer (2): core's device keeps every session's transfer state; its file work is
//!   executed by `crate::proto::filetransfer::Transfers`, whose download tasks report back
//!   through `Router::report`;
//! - mender-client (4): served by a [`SessionHandler`] registered for the
//!   proto; without one the reference's "no handler registered" error.
//!
//! The router owns the engine (the daemon feeds it the link's events too) and the handlers, the
//! part that needs the OS: it creates a handler on a session's first message of its proto and
//! closes it when the engine ends the session.

use std::time::Instant;

use mender_connect_core::control_sessions::{Note, Session, SessionStore};
use mender_connect_core::device::{self, Delivered, Device};
use mender_connect_core::engine::{self, Engine, Routed};
use mender_connect_core::link::{LinkAction, LinkConfig};
use mender_connect_core::shells::ShellConfig;
use mender_connect_core::{EncodeError, Frame, MAX_FRAME_LEN, Proto};

use crate::os::clock;
use crate::proto::by_sid::BySid;
use crate::proto::filetransfer::{self, Transfers};
use crate::proto::portforward::{self, Effect, Forwards};
use crate::proto::shell::{self, Action, Shells};

pub use mender_connect_core::control_sessions::{MAX_ID_LEN, MAX_SESSIONS};

/// One protocol's state inside a control session (file transfer, port forward, ...).
///
/// Handlers are created on the first message of their proto in a session and closed when the
/// session ends. Replies go into `out` as encoded frames; a handler that needs I/O keeps a
/// clone of the outbound sender given to its `HandlerFactory` and spawns its own tasks.
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
pub(crate) struct SessionInfo {
    /// Session id.
    pub(crate) id: String,
    /// `user_id` of the first message, if the server sent one.
    pub(crate) user: String,
    /// The first protocol other than control used in the session.
    pub(crate) proto: Option<Proto>,
    /// First message.
    pub(crate) started: Instant,
    /// Last message.
    pub(crate) last_rx: Instant,
    /// Bytes of the messages received for the session.
    pub(crate) bytes_in: u64,
    /// Bytes of the messages sent for it: replies and the handlers' bulk frames.
    pub(crate) bytes_out: u64,
}

/// Makes a handler for a new session.
pub(crate) type HandlerFactory = Box<dyn Fn() -> Box<dyn SessionHandler>>;

/// What the device asks of the daemon.
#[derive(Debug)]
pub(crate) enum Output {
    /// Link supervision: dial, close, ask the auth service; shells stopped or reaped (the
    /// device has done it already).
    Link(LinkAction),
    /// A keep-alive ping or "session timeout" of a control session, or a shell's health-check
    /// ping: worth nothing late, so it may be dropped when the reply queue is full.
    Send(Vec<u8>),
    /// A shell frame the server must get: the `stop` of a shell the agent ended, a reply.
    Shell(Vec<u8>),
    /// A port-forward frame the user side must get (`new`, `ack`, `stop`, an `error`).
    Forward(Vec<u8>),
    /// A file-transfer frame the user side waits for (an upload's ack, an error).
    Transfer(Vec<u8>),
}

/// What an executor's task reports to the daemon: one channel carries them all, so the event
/// loop waits on one source for every kind.
#[derive(Debug)]
pub(crate) enum Report {
    /// A shell ended by itself.
    Exited(shell::Exited),
    /// A port-forward connection's task.
    Forward(portforward::Event),
    /// A download's task.
    Transfer(filetransfer::Event),
}

/// The control sessions' table, grown on demand (up to the engine's cap of [`MAX_SESSIONS`]):
/// a fixed table of 1,024 sessions with 128-byte ids would hold 320 KB from the start.
#[derive(Debug, Default)]
pub(crate) struct SessionTable(Vec<Session>);

impl SessionStore for SessionTable {
    fn as_slice(&self) -> &[Session] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [Session] {
        &mut self.0
    }
    fn push(&mut self, s: Session) -> bool {
        self.0.push(s);
        true
    }
    fn swap_remove(&mut self, i: usize) -> Session {
        self.0.swap_remove(i)
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The agent's protocol engine.
pub(crate) type AgentEngine = Engine<SessionTable>;
/// Core's device: the engine, the shell table with the reference's capacity, the port-forward
/// and file-transfer tables (both grown on demand).
pub(crate) type AgentDevice =
    Device<SessionTable, { shell::MAX_SHELLS }, { shell::QUEUE }, portforward::Store, filetransfer::Store>;

/// The message router: core's device and the session handlers.
pub(crate) struct Router {
    device: AgentDevice,
    factories: Vec<(Proto, HandlerFactory)>,
    handlers: BySid<Vec<(Proto, Box<dyn SessionHandler>)>>,
    /// The port-forward executor, when the protocol is enabled.
    forwards: Option<Forwards>,
    /// The file-transfer executor, when the protocol is enabled.
    transfers: Option<Transfers>,
    /// Where the engine encodes replies ([`engine::REPLY_BUF_LEN`]), allocated on the first
    /// message: an idle connected daemon holds none of it.
    reply: Vec<u8>,
    /// Outputs met while draining session ends after a message, for the next [`Router::poll`].
    pending: std::collections::VecDeque<Output>,
    /// File-transfer frames for the reply queue, in order.
    transfer_out: Vec<Vec<u8>>,
}

/// A reply of the engine as a frame of its own size. A reply over [`MAX_FRAME_LEN`] (an error
/// echoing a near-limit `typ`) is dropped, as the agent always did.
fn reply_frame(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() > MAX_FRAME_LEN {
        log::warn!("reply: cannot encode frame: {}", EncodeError::BufferTooSmall);
        return None;
    }
    Some(bytes.to_vec())
}

/// The log line of what the engine did with a message, as the reference logs it.
fn log_note(note: &Note<'_>, len: usize) {
    match note {
        Note::Undecodable(e) => log::warn!("dropping undecodable message ({len} bytes): {e}"),
        Note::Refused(r) => log::warn!("session: refusing a new session: {r}"),
        Note::Accepted(sid) => log::info!("session: accepting new session with ID: {sid}"),
        Note::Closed(sid) => log::info!("session: closed {sid}"),
        Note::PeerError(err) => log::error!("session: received error from client: {err}"),
        Note::MalformedPeerError(e) => log::error!("session: received malformed error from client: {e}"),
        _ => {}
    }
}

impl Router {
    /// A router on a link that is already up, for tests and the fuzz harness that feed it
    /// messages directly. `terminal`: the shell protocol is enabled (`Terminal.Disable` off).
    pub(crate) fn new(terminal: bool) -> Self {
        Self::connected(
            terminal,
            LinkConfig::new(1_000, 60_000, 60_000, false),
            ShellConfig::default(),
            clock::now(),
        )
    }

    /// A router whose link came up at `now` (tests, the fuzz harness).
    pub(crate) fn connected(
        terminal: bool,
        link: LinkConfig,
        shells: ShellConfig,
        now: mender_connect_core::time::Instant,
    ) -> Self {
        let mut r = Self::with_link(terminal, link, shells, 0);
        r.device.handle_credentials(mender_connect_core::link::CredentialsUpdate::Changed, now);
        let mut buf = [0u8; device::POLL_BUF_LEN];
        while r.device.poll_action(&mut buf).is_some() {}
        r.device.handle_connected(now);
        r
    }

    /// The daemon's router: no link until the engine dials one. `seed`: random, for the
    /// reconnect jitter.
    pub(crate) fn with_link(terminal: bool, link: LinkConfig, shells: ShellConfig, seed: u64) -> Self {
        let cfg = engine::Config { link, idle: Default::default(), terminal, served: &[] };
        let engine = Engine::with_store(&cfg, seed, SessionTable::default(), MAX_SESSIONS);
        Self {
            device: Device::with_engine(engine, shells),
            factories: Vec::new(),
            handlers: BySid::default(),
            forwards: None,
            transfers: None,
            reply: Vec::new(),
            pending: std::collections::VecDeque::new(),
            transfer_out: Vec::new(),
        }
    }

    /// The protocol engine (link state, sessions).
    pub(crate) fn engine(&self) -> &AgentEngine {
        self.device.engine()
    }

    /// Core's device (engine, shell table, timers).
    pub(crate) fn device(&self) -> &AgentDevice {
        &self.device
    }

    /// Core's device, to feed it the link's events and the clock; drain [`Router::poll`] after.
    pub(crate) fn device_mut(&mut self) -> &mut AgentDevice {
        &mut self.device
    }

    /// Registers the handler of an enabled protocol (2, 3 or 4); it is then listed in `accept`.
    pub(crate) fn register(&mut self, proto: Proto, factory: HandlerFactory) {
        self.factories.retain(|(p, _)| *p != proto);
        self.factories.push((proto, factory));
        self.device.engine_mut().serve(proto);
    }

    /// Enables port forward (3): the device keeps the connections, `Forwards` runs their
    /// sockets; tasks send `forward` frames through `out` and report on `events`.
    pub(crate) fn enable_port_forward(
        &mut self,
        settings: &portforward::Settings,
        out: async_channel::Sender<Vec<u8>>,
        events: async_channel::Sender<Report>,
    ) {
        self.device.enable_forwards(settings.table_config());
        self.device.engine_mut().serve(Proto::PORT_FORWARD);
        self.forwards = Some(Forwards::new(out, events));
    }

    /// An executor's report: fed to the device; drain [`Router::poll`] after.
    pub(crate) fn report(&mut self, r: Report, now: Instant) {
        match r {
            Report::Exited(e) => {
                self.device.handle_shell_exited(&e.sid, e.serial);
            }
            Report::Forward(e) => self.forward_event(e, now),
            Report::Transfer(e) => self.transfer_event(e, now),
        }
    }

    /// A connection task's report.
    fn forward_event(&mut self, ev: portforward::Event, now: Instant) {
        let Some(f) = self.forwards.as_mut() else { return };
        if let Effect::Send { sid, frame } = f.handle(ev, &mut self.device, clock::to_core(now)) {
            self.device.engine_mut().count_sent(&sid, frame.len());
            self.pending.push_back(Output::Forward(frame));
        }
    }

    /// Connections the port-forward executor holds (tests).
    #[cfg(test)]
    pub(crate) fn forwards_len(&self) -> usize {
        self.forwards.as_ref().map_or(0, Forwards::len)
    }

    /// Enables file transfer (2): the device keeps the transfers, `Transfers` runs their file
    /// work; download tasks queue chunks on `out` and report on `events`.
    pub(crate) fn enable_file_transfer(
        &mut self,
        settings: &std::sync::Arc<filetransfer::Settings>,
        out: async_channel::Sender<Vec<u8>>,
        events: async_channel::Sender<Report>,
    ) {
        self.device.serve_transfers(settings.table_config(), clock::now());
        self.transfers = Some(Transfers::new(std::sync::Arc::clone(settings), out, events));
    }

    /// A download task's report.
    fn transfer_event(&mut self, ev: filetransfer::Event, now: Instant) {
        let Some(t) = self.transfers.as_mut() else { return };
        t.event(ev, &mut self.device, clock::to_core(now), &mut self.transfer_out);
    }

    /// Protocols listed in `accept`.
    pub(crate) fn protocols(&self) -> Vec<u16> {
        self.device.engine().protocols().to_vec()
    }

    /// Number of open control sessions.
    #[cfg(test)]
    pub(crate) fn sessions(&self) -> usize {
        self.device.engine().session_count()
    }

    /// Routes one websocket message; the shell actions it leads to are carried out by
    /// `shells` at once, and their frames come back with the replies, in order.
    pub(crate) fn route(&mut self, bytes: &[u8], shells: &mut Shells, now: Instant) -> Vec<Action> {
        let mut reply = std::mem::take(&mut self.reply);
        if reply.is_empty() {
            reply = vec![0; engine::REPLY_BUF_LEN];
        }
        let mut out = match self.device.handle_frame(bytes, clock::to_core(now), &mut reply) {
            Delivered::Transfer(d) => {
                let mut out = Vec::new();
                if let Some(t) = self.transfers.as_mut() {
                    t.delivered(d, bytes, &reply, &mut self.device, clock::to_core(now), &mut out);
                }
                out.into_iter().map(Action::Reply).collect()
            }
            // A port-forward reply is counted in its session's bytes sent by the device.
            Delivered::Handled { reply: n } => {
                n.and_then(|n| reply.get(..n)).and_then(reply_frame).map(Action::Reply).into_iter().collect()
            }
            Delivered::ForwardOpen { sid, cid, protocol, host, port } => {
                if let Some(f) = self.forwards.as_mut() {
                    f.opened(sid, cid, protocol, host, port);
                }
                Vec::new()
            }
            Delivered::ForwardData { sid, cid, bytes } => {
                if let Some(f) = self.forwards.as_mut() {
                    f.write(sid, cid, bytes);
                }
                Vec::new()
            }
            Delivered::ForwardRefused { sid, cid, refusal } => {
                let text = refusal.text(self.device.forwards().config());
                log::warn!("port-forward: refusing {sid}/{cid}: {text}");
                Vec::new()
            }
            Delivered::ForwardPeerError { sid, err } => {
                log::error!("port-forward[{sid}]: error from the user side: {}", err.unwrap_or("(none)"));
                Vec::new()
            }
            Delivered::ShellInput { sid, bytes } => shells.input(sid, bytes),
            Delivered::ShellResize { sid, size } => {
                shells.resize(sid, size);
                Vec::new()
            }
            Delivered::ShellRefused { sid, user_id, refusal } => {
                shells.log_refusal(sid, user_id, refusal, self.device.shells());
                Vec::new()
            }
            Delivered::NoShell { sid } => {
                Shells::log_no_shell(sid);
                Vec::new()
            }
            Delivered::Engine(Routed::Deliver(frame)) => {
                let out = self.serve(&frame);
                let n: usize = out.iter().map(Vec::len).sum();
                self.device.engine_mut().count_sent(frame.header.sid, n);
                out.into_iter().map(Action::Reply).collect()
            }
            Delivered::Engine(Routed::Handled { reply: n, note }) => {
                log_note(&note, bytes.len());
                n.and_then(|n| reply.get(..n)).and_then(reply_frame).map(Action::Reply).into_iter().collect()
            }
            _ => Vec::new(),
        };
        self.reply = reply;
        // What the message set off: shells to start or stop and their frames go out with the
        // replies; the rest (a session the message ended, its handlers go now) waits for `poll`.
        while let Some(o) = self.poll_device(shells, now) {
            match o {
                Output::Shell(f) | Output::Forward(f) | Output::Transfer(f) => out.push(Action::Reply(f)),
                o => self.pending.push_back(o),
            }
        }
        out
    }

    /// A message for a served protocol inside an open session.
    fn serve(&mut self, frame: &Frame<'_>) -> Vec<Vec<u8>> {
        let (sid, proto) = (frame.header.sid, frame.header.proto);
        let mut out = Vec::new();
        let handlers = self.handlers.get_or_insert_with(sid, Vec::new);
        let i = match handlers.iter().position(|(p, _)| *p == proto) {
            Some(i) => i,
            None => match self.factories.iter().find(|(p, _)| *p == proto) {
                Some((_, make)) => {
                    handlers.push((proto, make()));
                    handlers.len() - 1
                }
                // The engine delivers only registered protocols.
                None => return out,
            },
        };
        handlers[i].1.serve(sid, frame, &mut out);
        out
    }

    /// The next thing the device asks of the daemon; session ends are handled here (their
    /// handlers are closed), shells are started and stopped by `shells`. Drain after every call
    /// into the device.
    pub(crate) fn poll(&mut self, shells: &mut Shells) -> Option<Output> {
        self.pending.pop_front().or_else(|| self.poll_device(shells, Instant::now()))
    }

    fn poll_device(&mut self, shells: &mut Shells, now: Instant) -> Option<Output> {
        let mut buf = [0u8; device::POLL_BUF_LEN];
        loop {
            // A few frames at a time (a turn's worth), so taking the first is cheap.
            if !self.transfer_out.is_empty() {
                let f = self.transfer_out.remove(0);
                return Some(Output::Transfer(f));
            }
            let Some(a) = self.device.poll_action(&mut buf) else {
                if let Some(t) = self.transfers.as_mut() {
                    t.flush(&self.device);
                }
                return None;
            };
            match a {
                device::Action::Engine(engine::Action::Link(a)) => {
                    if a == LinkAction::CloseLink {
                        self.disconnected();
                    }
                    return Some(Output::Link(a));
                }
                device::Action::Engine(engine::Action::Send { len, .. }) => {
                    return Some(Output::Send(buf[..len].to_vec()));
                }
                device::Action::Engine(engine::Action::SessionEnded { sid, .. }) => self.close(&sid),
                device::Action::Shell(a) => {
                    if let Some(f) = shells.execute(a, &mut self.device, now) {
                        return Some(Output::Shell(f));
                    }
                }
                device::Action::SendShell { len } => {
                    let f = buf[..len].to_vec();
                    let ping =
                        Frame::decode(&f).is_ok_and(|f| f.header.typ == mender_connect_core::shell::PING);
                    return Some(if ping { Output::Send(f) } else { Output::Shell(f) });
                }
                // Counted in the session's bytes sent by the device.
                device::Action::SendForward { len } => return Some(Output::Forward(buf[..len].to_vec())),
                device::Action::Forward(a) => {
                    if let Some(Effect::Send { sid, frame }) = self.forwards.as_mut().map(|f| f.execute(a)) {
                        self.device.engine_mut().count_sent(&sid, frame.len());
                        return Some(Output::Forward(frame));
                    }
                }
                device::Action::SendTransfer { len } => {
                    if let Some(t) = self.transfers.as_mut() {
                        t.send(buf[..len].to_vec(), &mut self.transfer_out);
                    }
                }
                device::Action::Transfer(a) => {
                    if let Some(t) = self.transfers.as_mut() {
                        t.execute(a, &mut self.device, &mut self.transfer_out);
                    }
                }
                _ => {}
            }
        }
    }

    /// Ends a shell session on local request (`mender-connect sessions kill`): its shell is
    /// stopped as for a server `stop`. `None` if there is no such shell; otherwise the `stop`
    /// for the server (none while the websocket is down).
    pub(crate) fn kill_shell(&mut self, sid: &str, shells: &mut Shells) -> Option<Option<Vec<u8>>> {
        if !self.device.handle_shell_kill(sid) {
            return None;
        }
        let mut stop = None;
        while let Some(o) = self.poll_device(shells, Instant::now()) {
            match o {
                Output::Shell(f) if stop.is_none() => stop = Some(f),
                Output::Shell(_) => {}
                o => self.pending.push_back(o),
            }
        }
        Some(stop)
    }

    fn close(&mut self, sid: &str) {
        if let Some(f) = self.forwards.as_mut() {
            f.session_ended(sid);
        }
        if let Some(t) = self.transfers.as_mut() {
            t.session_ended(sid);
        }
        if let Some(handlers) = self.handlers.remove(sid) {
            for (_, mut h) in handlers {
                h.close();
            }
        }
    }

    /// Whether any session is open.
    pub(crate) fn has_sessions(&self) -> bool {
        self.device.engine().session_count() > 0
    }

    /// The control sessions, for the status CLI (taken only when asked).
    pub(crate) fn sessions_info(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self
            .device
            .engine()
            .sessions()
            .map(|s| {
                let bulk = self
                    .handlers
                    .get(s.sid())
                    .map_or(0, |hs| hs.iter().fold(0u64, |n, (_, h)| n.saturating_add(h.bulk_bytes_out())))
                    .saturating_add(self.forwards.as_ref().map_or(0, |f| f.bulk_bytes_out(s.sid())));
                SessionInfo {
                    id: s.sid().to_owned(),
                    user: s.user().to_owned(),
                    proto: s.proto(),
                    started: clock::to_std(s.started()),
                    last_rx: clock::to_std(s.last_rx()),
                    bytes_in: s.bytes_in(),
                    bytes_out: s.bytes_out().saturating_add(bulk),
                }
            })
            .collect();
        v.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Transfers and forwarded connections of every session.
    pub(crate) fn activity(&self) -> Vec<Activity> {
        let mut out = Vec::new();
        if let Some(f) = &self.forwards {
            f.activity(&mut out);
        }
        if let Some(t) = &self.transfers {
            use crate::ops::status::protocol::{Direction, Transfer};
            for info in self.device.transfers().iter() {
                out.push(Activity::Transfer(Transfer {
                    session_id: info.sid.to_owned(),
                    direction: match info.direction {
                        mender_connect_core::transfers::Direction::Upload => Direction::Upload,
                        _ => Direction::Download,
                    },
                    path: t.path(info.sid).unwrap_or_default().to_owned(),
                    bytes: info.bytes,
                }));
            }
        }
        for (sid, hs) in self.handlers.iter() {
            for (_, h) in hs {
                h.activity(sid, &mut out);
            }
        }
        out
    }

    /// Ends a control session on the device's initiative (`mender-connect sessions kill`):
    /// its handlers are closed and the returned `close` frame tells the server; also returns
    /// the session's first protocol. `None` when there is no such session.
    pub(crate) fn kill(&mut self, sid: &str) -> Option<(Option<Vec<u8>>, Option<Proto>)> {
        let mut buf = [0u8; mender_connect_core::control_sessions::POLL_BUF_LEN];
        let (n, proto) = self.device.kill_session(sid, &mut buf)?;
        self.close(sid);
        log::info!("session: closed {sid} on local request");
        Some((n.map(|n| buf[..n].to_vec()), proto))
    }

    /// The websocket dropped: control sessions do not survive it (the server's side is gone);
    /// every handler is closed.
    fn disconnected(&mut self) {
        if let Some(f) = self.forwards.as_mut() {
            f.disconnected();
        }
        if let Some(t) = self.transfers.as_mut() {
            t.disconnected();
        }
        for (_, handlers) in self.handlers.drain() {
            for (_, mut h) in handlers {
                h.close();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mender_connect_core::FrameOut;
    use mender_connect_core::control::{self, ControlMessage};
    use mender_connect_core::frame::Prop;

    fn frame(typ: &str, sid: &str, user: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 16 * 1024];
        let props = [Prop::str("user_id", user)];
        let n = FrameOut { proto: Proto::CONTROL, typ, sid, props: &props, ..FrameOut::EMPTY }
            .encode(&mut buf)
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// A shell executor whose user does not exist, for tests that route but start no shell
    /// (the port-forward and file-transfer executors' tests use it too).
    pub(crate) fn shells() -> Shells {
        let (data_tx, _) = async_channel::bounded(1);
        let (exited_tx, _) = async_channel::unbounded();
        Shells::new(crate::proto::shell::ShellSettings::none_started(), data_tx, exited_tx)
    }

    /// The replies as (type, error text).
    fn route(r: &mut Router, typ: &str, sid: &str, user: &str) -> Vec<(String, String)> {
        let bytes = frame(typ, sid, user);
        r.route(&bytes, &mut shells(), Instant::now())
            .iter()
            .map(|a| {
                let Action::Reply(b) = a;
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
        assert_eq!(
            out[0].1,
            format!("error close=true too many open sessions on this device (at most {MAX_SESSIONS})")
        );
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

    /// Handlers are created on their protocol's first message in a session and closed with it
    /// (peer close, device kill, dropped link), each exactly once.
    #[test]
    fn handlers_follow_the_engine_s_sessions() {
        use std::cell::RefCell;
        use std::rc::Rc;
        struct H(Rc<RefCell<(usize, usize)>>);
        impl SessionHandler for H {
            fn serve(&mut self, _: &str, _: &Frame<'_>, _: &mut Vec<Vec<u8>>) {}
            fn close(&mut self) {
                self.0.borrow_mut().1 += 1;
            }
        }
        let tally = Rc::new(RefCell::new((0, 0)));
        let mut r = Router::new(false);
        let t = Rc::clone(&tally);
        r.register(
            Proto::PORT_FORWARD,
            Box::new(move || {
                t.borrow_mut().0 += 1;
                Box::new(H(Rc::clone(&t)))
            }),
        );
        assert_eq!(r.protocols(), vec![3]);
        let msg = |sid: &str| {
            let mut buf = vec![0u8; 256];
            let n = FrameOut { proto: Proto::PORT_FORWARD, typ: "new", sid, ..FrameOut::EMPTY }
                .encode(&mut buf)
                .unwrap();
            buf.truncate(n);
            buf
        };
        let mut sh = shells();
        for sid in ["a", "a", "b", "c"] {
            r.route(&msg(sid), &mut sh, Instant::now());
        }
        assert_eq!(*tally.borrow(), (3, 0));
        route(&mut r, control::CLOSE, "a", "");
        assert_eq!(*tally.borrow(), (3, 1));
        let (close, proto) = r.kill("b").unwrap();
        assert_eq!(Frame::decode(&close.unwrap()).unwrap().header.typ, control::CLOSE);
        assert_eq!((proto, tally.borrow().1), (Some(Proto::PORT_FORWARD), 2));
        r.device_mut().handle_link_closed(clock::now());
        let mut outputs = Vec::new();
        while let Some(o) = r.poll(&mut sh) {
            outputs.push(o);
        }
        assert!(matches!(outputs[0], Output::Link(LinkAction::CloseLink)), "{outputs:?}");
        assert_eq!(*tally.borrow(), (3, 3));
        assert_eq!(r.sessions(), 0);
    }
}
