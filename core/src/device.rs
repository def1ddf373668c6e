//! The device side of the protocol with the shell table composed in: an [`Engine`] (link
//! supervision, control sessions) plus a [`ShellTable`], one sans-IO object driven from
//! bytes and a clock.
//!
//! The engine's seam ([`crate::engine`]) is taken over here: protocol-1 frames
//! ([`Routed::Shell`]) go to the table, the link's transitions become
//! [`ShellTable::handle_disconnected`]/[`ShellTable::handle_reconnected`],
//! [`LinkAction::ReapOrphans`] becomes [`ShellTable::handle_reap_orphans`] (the link supervisor
//! owns the disconnect grace, so the table's own is off) and [`LinkAction::StopAllSessions`]
//! [`ShellTable::handle_stop_all`]. The table's deadline joins the engine's in
//! [`Device::poll_timeout`]; its frames come out of [`Device::poll_action`] encoded into the
//! caller's buffer, the bytes the agent's executor sends today. What needs the OS (ptys,
//! processes) comes out as [`Action::Shell`] and goes back in as
//! [`Device::handle_shell_spawned`]/[`Device::handle_shell_exited`].
//!
//! File transfer (protocol 2) is composed the same way once [`Device::serve_transfers`] is
//! called (before that its messages are delivered as [`Routed::Deliver`], for a handler of the
//! caller's): its messages go to a [`TransferTable`], what they ask of the executor comes back
//! as [`Delivered::Transfer`] (borrowed: a path, a chunk's body) and [`Action::Transfer`]
//! (read, commit, abort), its frames as [`Action::SendTransfer`]; the executor reports back with
//! `handle_transfer_*`. A session that ends, a dropped link and stop-all abort its transfers.
//!
//! Rules for the caller as for the engine: after every `handle_*`, drain
//! [`Device::poll_action`] until `None`, then re-arm one timer at [`Device::poll_timeout`].

use core::fmt::Write as _;

use crate::control_sessions::{Note, SessionStore};
use crate::engine::{self, Config, Engine};
use crate::forwards::{self, FixedForwards, ForwardConfig, ForwardStore, ForwardTable};
use crate::frame::Proto;
use crate::link::{CredentialsUpdate, LinkAction};
use crate::portforward::{self as pf, PortForwardMessage, Protocol};
use crate::shell::{self as proto, ShellMessage, Status, TermSize};
use crate::shells::{self, Reply, SHELL_STARTED, STOPPED_SHELL_TEXT, ShellConfig, ShellTable};
use crate::time::Instant;
use crate::transfers::{self, FixedTransfers, TransferConfig, TransferStore, TransferTable};

pub use crate::control_sessions::{FixedStore, Routed};

/// Buffer size [`Device::poll_action`] needs: the engine's, or a shell reply on the longest
/// sid with the longest refusal text.
pub const POLL_BUF_LEN: usize = crate::control_sessions::POLL_BUF_LEN + 2 * crate::sessions::ID_CAP + 128;

// The table's frames are encoded into the same buffer.
const _: () = assert!(POLL_BUF_LEN >= transfers::POLL_BUF_LEN);

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// An engine action (link, control-session frames, ended sessions). The link's
    /// `ReapOrphans` and `StopAllSessions` are passed on after the shell table acted on them
    /// (their shell stops follow as [`Action::Shell`]).
    Engine(engine::Action),
    /// Start or stop a shell: [`shells::Action::SpawnShell`] (answer with
    /// [`Device::handle_shell_spawned`]) or [`shells::Action::StopShell`].
    Shell(shells::Action),
    /// Send the first `len` bytes of the buffer given to [`Device::poll_action`]: a shell
    /// protocol frame (a reply, a `stop`, or a health-check `ping`).
    SendShell {
        /// Frame length.
        len: usize,
    },
    /// Socket work of a forwarded connection: [`forwards::Action::Dial`] (the target came
    /// with [`Delivered::ForwardOpen`]; answer with [`Device::handle_forward_dialed`]),
    /// [`forwards::Action::Close`], [`forwards::Action::ReadMore`]. The table's frames come
    /// out as [`Action::SendForward`] instead.
    Forward(forwards::Action),
    /// Send the first `len` bytes of the buffer given to [`Device::poll_action`]: a
    /// port-forward frame (`new` once dialled, `ack`, `stop`, or an `error` with the refusal),
    /// counted in its session's bytes sent, as the replies of [`Device::handle_frame`] are.
    SendForward {
        /// Frame length.
        len: usize,
    },
    /// File work of a transfer: [`transfers::Action::Read`], [`transfers::Action::Commit`],
    /// [`transfers::Action::Abort`] or [`transfers::Action::TimedOut`] (answer with the
    /// `handle_transfer_*` it names).
    Transfer(transfers::Action),
    /// Send the first `len` bytes of the buffer given to [`Device::poll_action`]: a file
    /// transfer frame (an ack, an error).
    SendTransfer {
        /// Frame length.
        len: usize,
    },
}

/// Where a message went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivered<'a> {
    /// Handled by the engine or the table; a reply, if any, is in the caller's buffer.
    Handled {
        /// Reply length.
        reply: Option<usize>,
    },
    /// A served protocol's message, or the engine's note on a control frame.
    Engine(Routed<'a>),
    /// Keystrokes for shell `sid`: write them into its terminal.
    ShellInput {
        /// Session id.
        sid: &'a str,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Resize shell `sid`'s terminal (`None`: the message gave no size).
    ShellResize {
        /// Session id.
        sid: &'a str,
        /// New size.
        size: Option<TermSize>,
    },
    /// A `new` for `sid` was refused; the status-2 reply is queued (a [`Action::SendShell`]).
    /// Here so a device can log why: the user's client shows none of it.
    ShellRefused {
        /// Session id.
        sid: &'a str,
        /// The user the shell was asked for.
        user_id: &'a str,
        /// Why.
        refusal: shells::Refusal,
    },
    /// A `resize` or `pong` for `sid`, which has no shell; nothing is sent back (as the
    /// reference does), so this is the device's only word on it.
    NoShell {
        /// Session id.
        sid: &'a str,
    },
    /// A port-forward `new` was admitted: keep its target; the [`forwards::Action::Dial`]
    /// for it follows (after the close of a connection it replaces).
    ForwardOpen {
        /// Session id.
        sid: &'a str,
        /// Connection id.
        cid: &'a str,
        /// Transport.
        protocol: Protocol,
        /// `remote_host`
        host: &'a str,
        /// `remote_port`
        port: u16,
    },
    /// A `forward` taken for connection `cid`: write it to the target (once dialled), then
    /// report [`Device::handle_forward_written`].
    ForwardData {
        /// Session id.
        sid: &'a str,
        /// Connection id.
        cid: &'a str,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A port-forward `new` was refused; the `error` is queued (a [`Action::SendForward`]).
    ForwardRefused {
        /// Session id.
        sid: &'a str,
        /// Connection id.
        cid: &'a str,
        /// Why.
        refusal: forwards::Refusal,
    },
    /// A port-forward `error` from the user side (not answered: an error for an error could
    /// ping-pong).
    ForwardPeerError {
        /// Session id.
        sid: &'a str,
        /// Its `err`.
        err: Option<&'a str>,
    },
    /// A file-transfer message asks something of the executor (or was answered: then
    /// [`transfers::Delivered::Handled`] with the reply in the caller's buffer).
    Transfer(transfers::Delivered<'a>),
}

/// The [`forwards`] storage of a [`Device`] that does not choose one: 4 connections inline.
pub type DefaultForwards = FixedForwards<DEFAULT_FORWARDS, { forwards::queue_len(DEFAULT_FORWARDS) }>;
/// Connections of [`DefaultForwards`].
pub const DEFAULT_FORWARDS: usize = 4;

/// The `error` for a `new` without a valid target (the reference's text).
pub const FORWARD_INVALID_TEXT: &str =
    "invalid port-forward message: missing connection_id, remote_port or protocol";
/// The `error` for a port-forward type the device does not know.
pub const FORWARD_UNKNOWN_TYPE_TEXT: &str = "unknown message type";

/// Transfers a device runs at once by default.
pub const DEFAULT_TRANSFERS: usize = 2;

/// The default transfer store: [`DEFAULT_TRANSFERS`] inline.
pub type DefaultTransfers = FixedTransfers<DEFAULT_TRANSFERS, { transfers::queue_len(DEFAULT_TRANSFERS) }>;

/// The engine and a table of at most `N` shells (`Q` ≥ [`shells::queue_len`]`(N)` queued
/// actions), forwarded connections in `F`, file transfers in `X`; control sessions in `S`.
#[derive(Clone, Debug)]
pub struct Device<S, const N: usize, const Q: usize, F = DefaultForwards, X = DefaultTransfers> {
    engine: Engine<S>,
    shells: ShellTable<N, Q>,
    forwards: ForwardTable<F>,
    /// Port-forward frames go to `forwards` ([`Device::with_forwards`]); otherwise they are
    /// delivered to the caller as the other served protocols' are.
    forwarding: bool,
    up: bool,
    /// An engine action held back until the shell actions it caused are out.
    held: Option<engine::Action>,
    transfers: TransferTable<X>,
    /// Protocol 2 goes to `transfers` ([`Device::serve_transfers`]).
    serve_transfers: bool,
}

/// A device with `C` control sessions and `N` shells inline (and [`DefaultForwards`]).
pub type FixedDevice<const C: usize, const N: usize, const Q: usize, F = DefaultForwards> =
    Device<FixedStore<C>, N, Q, F>;

impl<const C: usize, const N: usize, const Q: usize, F: ForwardStore + Default, X: TransferStore + Default>
    Device<FixedStore<C>, N, Q, F, X>
{
    /// A new device (no credentials). The table's own disconnect grace is turned off: the
    /// link supervisor's ([`crate::link::LinkConfig::disconnect_grace_ms`]) applies.
    pub fn new(cfg: &Config<'_>, shells: ShellConfig, seed: u64) -> Self {
        Self::with_engine(Engine::new(cfg, seed), shells)
    }
}

impl<S: SessionStore, const N: usize, const Q: usize, F: ForwardStore + Default, X: TransferStore + Default>
    Device<S, N, Q, F, X>
{
    /// Composes `engine` (no link up yet) with a shell table. Port-forward messages are
    /// delivered to the caller ([`Routed::Deliver`]) until [`Device::with_forwards`], file
    /// transfer messages until [`Device::serve_transfers`].
    pub fn with_engine(engine: Engine<S>, shells: ShellConfig) -> Self {
        let cfg = ShellConfig { disconnect_grace_ms: None, ..shells };
        Self {
            up: engine.link().is_up(),
            engine,
            shells: ShellTable::new(cfg),
            forwards: ForwardTable::with_store(ForwardConfig::default(), F::default()),
            forwarding: false,
            held: None,
            transfers: TransferTable::with_store(
                TransferConfig::default(),
                X::default(),
                Instant::from_millis(0),
            ),
            serve_transfers: false,
        }
    }

    /// The device running port forward (protocol 3, when the engine serves it) with its
    /// connection table: settings `cfg` (limits, dial and idle timeouts).
    pub fn with_forwards(mut self, cfg: ForwardConfig) -> Self {
        self.enable_forwards(cfg);
        self
    }

    /// [`Device::with_forwards`] in place; any open connection is forgotten (call it before
    /// the link comes up).
    pub fn enable_forwards(&mut self, cfg: ForwardConfig) {
        self.forwards = ForwardTable::with_store(cfg, F::default());
        self.forwarding = true;
    }

    /// The port-forward table (read-only).
    pub fn forwards(&self) -> &ForwardTable<F> {
        &self.forwards
    }

    /// Serves file transfer (protocol 2, listed in `accept`) with the device's own table: its
    /// messages no longer come out as [`Routed::Deliver`]. Rate counters start at `now`. Call it
    /// once, before sessions open: a table in use is replaced without aborting its transfers.
    pub fn serve_transfers(&mut self, cfg: TransferConfig, now: Instant) {
        self.engine.serve(crate::frame::Proto::FILE_TRANSFER);
        self.transfers = TransferTable::with_store(cfg, X::default(), now);
        self.serve_transfers = true;
    }

    /// The file-transfer table (read-only).
    pub fn transfers(&self) -> &TransferTable<X> {
        &self.transfers
    }

    /// The executor opened the temporary file of `sid`'s upload
    /// ([`transfers::Delivered::OpenUpload`]).
    pub fn handle_transfer_upload_opened(&mut self, sid: &str, now: Instant) {
        self.transfers.handle_upload_opened(sid, now);
    }

    /// The executor opened and checked `sid`'s download ([`transfers::Delivered::OpenDownload`]).
    pub fn handle_transfer_download_opened(&mut self, sid: &str, now: Instant) {
        self.transfers.handle_download_opened(sid, now);
    }

    /// The executor wrote `n` bytes of `sid`'s upload ([`transfers::Delivered::Write`]).
    pub fn handle_transfer_written(&mut self, sid: &str, n: usize, now: Instant) {
        self.transfers.handle_written(sid, n, now);
    }

    /// The executor committed `sid`'s upload ([`transfers::Action::Commit`]).
    pub fn handle_transfer_committed(&mut self, sid: &str) {
        self.transfers.handle_committed(sid);
    }

    /// The executor read `data` of `sid`'s download ([`transfers::Action::Read`]; empty: the
    /// end of the file): the chunk to send is the first `n` bytes of `buf`.
    pub fn handle_transfer_read(
        &mut self,
        sid: &str,
        data: &[u8],
        now: Instant,
        buf: &mut [u8],
    ) -> Option<usize> {
        let n = self.transfers.handle_read(sid, data, now, buf);
        if let Some(n) = n {
            self.engine.count_sent(sid, n);
        }
        n
    }

    /// A step of `sid`'s transfer failed in the executor: the answer (`text`, `code`) is the
    /// first `n` bytes of `buf`.
    pub fn handle_transfer_failed(
        &mut self,
        sid: &str,
        text: &str,
        code: u16,
        buf: &mut [u8],
    ) -> Option<usize> {
        let n = self.transfers.handle_failed(sid, text, code, buf);
        if let Some(n) = n {
            self.engine.count_sent(sid, n);
        }
        n
    }

    /// Ends control session `sid` on the device's initiative (see [`Engine::kill_session`]);
    /// its forwarded connections are closed and its transfer is aborted.
    pub fn kill_session(&mut self, sid: &str, buf: &mut [u8]) -> Option<(Option<usize>, Option<Proto>)> {
        let r = self.engine.kill_session(sid, buf)?;
        self.forwards.handle_session_closed(sid);
        self.transfers.handle_session_ended(sid);
        Some(r)
    }

    /// The engine (read-only).
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// The engine, for what the device does not wrap (serving a protocol, `kill_session`, …).
    pub fn engine_mut(&mut self) -> &mut Engine<S> {
        &mut self.engine
    }

    /// The shell table (read-only).
    pub fn shells(&self) -> &ShellTable<N, Q> {
        &self.shells
    }

    /// Tells the table about a link that came up or went down.
    fn sync_link(&mut self, now: Instant) {
        let up = self.engine.link().is_up();
        if up != self.up {
            if up {
                self.shells.handle_reconnected(now);
            } else {
                self.shells.handle_disconnected(now);
                // Control sessions do not survive the link, nor do their connections and
                // transfers.
                self.forwards.handle_all_closed();
                self.transfers.handle_link_down();
            }
            self.up = up;
        }
    }

    /// See [`Engine::handle_credentials`].
    pub fn handle_credentials(&mut self, update: CredentialsUpdate, now: Instant) {
        self.engine.handle_credentials(update, now);
        self.sync_link(now);
    }

    /// See [`Engine::handle_revoked`].
    pub fn handle_revoked(&mut self, now: Instant) {
        self.engine.handle_revoked(now);
        self.sync_link(now);
    }

    /// See [`Engine::handle_connected`].
    pub fn handle_connected(&mut self, now: Instant) {
        self.engine.handle_connected(now);
        self.sync_link(now);
    }

    /// See [`Engine::handle_dial_failed`].
    pub fn handle_dial_failed(&mut self, unauthorized: bool, now: Instant) -> Option<core::time::Duration> {
        let d = self.engine.handle_dial_failed(unauthorized, now);
        self.sync_link(now);
        d
    }

    /// See [`Engine::handle_link_closed`].
    pub fn handle_link_closed(&mut self, now: Instant) -> Option<core::time::Duration> {
        let d = self.engine.handle_link_closed(now);
        self.sync_link(now);
        d
    }

    /// See [`Engine::handle_shutdown`]; every shell stops too.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.engine.handle_shutdown(now);
        self.sync_link(now);
        self.shells.handle_stop_all();
        self.forwards.handle_all_closed();
        self.transfers.handle_stop_all();
    }

    /// The executor started (or failed to start) the shell of an [`shells::Action::SpawnShell`].
    pub fn handle_shell_spawned(&mut self, sid: &str, serial: u64, started: bool) {
        self.shells.handle_spawned(sid, serial, started);
    }

    /// Shell `sid` (`serial`) ended by itself.
    pub fn handle_shell_exited(&mut self, sid: &str, serial: u64) -> bool {
        self.shells.handle_exited(sid, serial)
    }

    /// A local request to stop shell `sid`.
    pub fn handle_shell_kill(&mut self, sid: &str) -> bool {
        self.shells.handle_kill(sid)
    }

    /// One websocket message; a reply, if any, goes into `reply` (at least
    /// [`engine::REPLY_BUF_LEN`] bytes).
    pub fn handle_frame<'a>(&mut self, bytes: &'a [u8], now: Instant, reply: &mut [u8]) -> Delivered<'a> {
        let frame = match self.engine.handle_frame(bytes, now, reply) {
            Routed::Shell(f) => f,
            Routed::Deliver(f) if self.forwarding && f.header.proto == Proto::PORT_FORWARD => {
                let d = self.forward_frame(&f, now, reply);
                if let Delivered::Handled { reply: Some(n) } = d {
                    self.engine.count_sent(f.header.sid, n);
                }
                return d;
            }
            Routed::Deliver(f)
                if self.serve_transfers && f.header.proto == crate::frame::Proto::FILE_TRANSFER =>
            {
                let d = self.transfers.handle_frame(&f, now, reply);
                if let transfers::Delivered::Handled { reply: Some(n) } = d {
                    self.engine.count_sent(f.header.sid, n);
                }
                return Delivered::Transfer(d);
            }
            Routed::Handled { reply, note: Note::ShellDisabled } => return Delivered::Handled { reply },
            other => return Delivered::Engine(other),
        };
        let (typ, sid) = (frame.header.typ, frame.header.sid);
        let msg = match ShellMessage::from_frame(&frame) {
            Ok(m) => m,
            Err(_) => ShellMessage::Unknown(typ),
        };
        match msg {
            ShellMessage::New { user_id, size } => {
                if let Err(refusal) = self.shells.handle_new(sid, user_id, size, now) {
                    return Delivered::ShellRefused { sid, user_id, refusal };
                }
            }
            ShellMessage::Stop { user_id } => {
                let _ = self.shells.handle_stop(sid, user_id);
            }
            ShellMessage::Data(bytes) => {
                if self.shells.handle_input(sid, now) {
                    return Delivered::ShellInput { sid, bytes };
                }
            }
            ShellMessage::Resize(size) => {
                if self.shells.handle_resize(sid) {
                    return Delivered::ShellResize { sid, size };
                }
                return Delivered::NoShell { sid };
            }
            ShellMessage::Pong => {
                if !self.shells.handle_pong(sid, now) {
                    return Delivered::NoShell { sid };
                }
            }
            // `ping` from the server and unknown types: the reference's fallback answer.
            _ => {
                let n = crate::control_sessions::encode_with_text(
                    reply,
                    format_args!("unknown message protocol and type: 1/{typ}"),
                    |b, text| proto::encode_with_status(b, typ, sid, Status::Error, text.as_bytes()),
                )
                .ok();
                return Delivered::Handled { reply: n };
            }
        }
        Delivered::Handled { reply: None }
    }

    /// A port-forward message inside an open session (the engine delivered it: the protocol
    /// is served). Validation errors are answered in `reply`; the table's answers are queued.
    fn forward_frame<'a>(
        &mut self,
        frame: &crate::Frame<'a>,
        now: Instant,
        reply: &mut [u8],
    ) -> Delivered<'a> {
        let (typ, sid) = (frame.header.typ, frame.header.sid);
        let error = |reply: &mut [u8], args: core::fmt::Arguments<'_>| {
            let n = crate::control_sessions::encode_with_text(reply, args, |b, text| {
                pf::encode_error(b, sid, typ, text)
            });
            Delivered::Handled { reply: n.ok() }
        };
        let msg = match PortForwardMessage::from_frame(frame) {
            Ok(m) => m,
            Err(e) => return error(reply, format_args!("invalid port-forward message: {e}")),
        };
        match msg {
            PortForwardMessage::New { connection_id: cid, request } => {
                let Some((host, port, proto)) = request.target().filter(|_| !cid.is_empty()) else {
                    return error(reply, format_args!("{FORWARD_INVALID_TEXT}"));
                };
                let Some(protocol) = Protocol::parse(proto) else {
                    return error(reply, format_args!("unknown protocol: {proto}"));
                };
                match self.forwards.handle_new(sid, cid, now) {
                    Ok(()) => Delivered::ForwardOpen { sid, cid, protocol, host, port },
                    Err(refusal) => Delivered::ForwardRefused { sid, cid, refusal },
                }
            }
            PortForwardMessage::Forward { connection_id: cid, data } => {
                if self.forwards.handle_forward(sid, cid, now) {
                    Delivered::ForwardData { sid, cid, bytes: data }
                } else {
                    Delivered::Handled { reply: None }
                }
            }
            PortForwardMessage::Ack { connection_id: cid } => {
                self.forwards.handle_ack(sid, cid, now);
                Delivered::Handled { reply: None }
            }
            PortForwardMessage::Stop { connection_id: cid } => {
                let _ = self.forwards.handle_stop(sid, cid);
                Delivered::Handled { reply: None }
            }
            PortForwardMessage::Error(e) => Delivered::ForwardPeerError { sid, err: e.err },
            _ => error(reply, format_args!("{FORWARD_UNKNOWN_TYPE_TEXT}")),
        }
    }

    /// The outcome of a [`forwards::Action::Dial`]: connected (`new` is answered), or failed
    /// (the caller sends its dial error). False if the connection is gone already (closed, or
    /// the dial timed out: the caller sent that error on the close).
    pub fn handle_forward_dialed(&mut self, sid: &str, cid: &str, connected: bool, now: Instant) -> bool {
        self.forwards.handle_dialed(sid, cid, connected, now)
    }

    /// The caller wrote one [`Delivered::ForwardData`] to the target: it is acked.
    pub fn handle_forward_written(&mut self, sid: &str, cid: &str, now: Instant) {
        self.forwards.handle_written(sid, cid, now);
    }

    /// The caller read from the target: true if it may send it as a `forward` now (then it
    /// waits for [`forwards::Action::ReadMore`] before reading again).
    pub fn handle_forward_read(&mut self, sid: &str, cid: &str, now: Instant) -> bool {
        self.forwards.handle_read(sid, cid, now)
    }

    /// The target ended the connection (EOF, read or write error): `stop` goes to the user.
    pub fn handle_forward_ended(&mut self, sid: &str, cid: &str) {
        self.forwards.handle_ended(sid, cid);
    }

    /// When [`Device::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.engine.poll_timeout(),
            self.shells.poll_timeout(),
            self.forwards.poll_timeout(),
            self.transfers.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        self.sync_link(now);
        if self.shells.poll_timeout().is_some_and(|at| at <= now) {
            self.shells.handle_timeout(now);
        }
        if self.forwards.poll_timeout().is_some_and(|at| at <= now) {
            self.forwards.handle_timeout(now);
        }
        if self.transfers.poll_timeout().is_some_and(|at| at <= now) {
            self.transfers.handle_timeout(now);
        }
    }

    /// The next action; frames to send are encoded into `buf` (at least [`POLL_BUF_LEN`]
    /// bytes).
    pub fn poll_action(&mut self, buf: &mut [u8]) -> Option<Action> {
        loop {
            if let Some(a) = self.shells.poll_action() {
                if let Some(a) = self.shell_action(a, buf) {
                    return Some(a);
                }
                continue;
            }
            if let Some(a) = self.forwards.poll_action() {
                if let Some(a) = self.forward_action(a, buf) {
                    return Some(a);
                }
                continue;
            }
            if let Some(a) = self.transfers.poll_action(buf) {
                return Some(match a {
                    transfers::Action::Send { len } => {
                        if let Some(f) = buf.get(..len).and_then(|b| crate::Frame::decode(b).ok()) {
                            self.engine.count_sent(f.header.sid, len);
                        }
                        Action::SendTransfer { len }
                    }
                    a => Action::Transfer(a),
                });
            }
            if let Some(a) = self.held.take() {
                return Some(Action::Engine(a));
            }
            let a = self.engine.poll_action(buf)?;
            match &a {
                engine::Action::SessionEnded { sid, .. } => {
                    self.forwards.handle_session_closed(sid);
                    self.transfers.handle_session_ended(sid);
                }
                engine::Action::Link(LinkAction::ReapOrphans) => {
                    self.shells.handle_reap_orphans();
                }
                engine::Action::Link(LinkAction::StopAllSessions) => {
                    self.shells.handle_stop_all();
                    self.forwards.handle_all_closed();
                    self.transfers.handle_stop_all();
                }
                _ => return Some(Action::Engine(a)),
            }
            // Its shell stops, connection closes and transfer aborts first, then the action
            // itself (for the caller's log and its own per-session state).
            self.held = Some(a);
        }
    }

    /// Encodes a table's frame into `buf`; spawns and stops go to the caller. A frame that does
    /// not fit is dropped (`None`).
    fn shell_action(&mut self, a: shells::Action, buf: &mut [u8]) -> Option<Action> {
        let n = match &a {
            shells::Action::SendStop { sid } => {
                proto::encode_with_status(buf, proto::STOP, sid, Status::Error, STOPPED_SHELL_TEXT.as_bytes())
            }
            shells::Action::SendOk { reply, sid } => {
                let body: &[u8] = if *reply == Reply::New { SHELL_STARTED.as_bytes() } else { b"" };
                proto::encode_with_status(buf, reply.typ(), sid, Status::Normal, body)
            }
            shells::Action::SendError { reply, sid, refusal } => {
                let mut text: heapless::String<{ 2 * crate::sessions::ID_CAP + 64 }> =
                    heapless::String::new();
                let _ = write!(text, "{}", refusal.body(sid));
                proto::encode_with_status(buf, reply.typ(), sid, Status::Error, text.as_bytes())
            }
            shells::Action::HealthCheck { sid, timeout_s } => {
                proto::encode_ping(buf, sid, i64::try_from(*timeout_s).unwrap_or(i64::MAX))
            }
            _ => return Some(Action::Shell(a)),
        };
        n.ok().map(|len| Action::SendShell { len })
    }

    /// Encodes the port-forward table's frames into `buf`; socket work goes to the caller.
    fn forward_action(&mut self, a: forwards::Action, buf: &mut [u8]) -> Option<Action> {
        let n = match &a {
            forwards::Action::Send { msg, sid, cid } => pf::encode(buf, msg.typ(), sid, cid, &[]),
            forwards::Action::SendError { about, sid, refusal } => {
                let text = refusal.text(self.forwards.config());
                crate::control_sessions::encode_with_text(buf, format_args!("{text}"), |b, text| {
                    pf::encode_error(b, sid, about.typ(), text)
                })
            }
            _ => return Some(Action::Forward(a)),
        };
        let len = n.ok()?;
        if let forwards::Action::Send { sid, .. } | forwards::Action::SendError { sid, .. } = &a {
            self.engine.count_sent(sid, len);
        }
        Some(Action::SendForward { len })
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;

/// Port-forward simulations of the device that need no std.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod forward_selftests;
