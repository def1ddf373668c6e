//! Port forwarding (`proto` 3): the user side asks the device to open TCP or UDP connections to
//! `remote_host:remote_port` and relays data over the websocket, as mender-connect 2.1.0
//! `session/portforward.go` does:
//!
//! - `new` → the device dials and answers `new`; failures are `error` with `msgtype` `new`;
//! - `forward` → written to the socket, then acked (one `ack` per `forward`);
//! - socket reads go out as `forward`, one in flight: the next only after the user side's `ack`.
//!   The reference reads up to 4096 bytes; TCP reads here take up to [`TCP_READ_LEN`], so each
//!   round trip to the user carries more (UDP keeps 4096, a datagram per message);
//! - `stop` from the user closes the connection and is answered with `stop`; EOF, an error or
//!   the idle timeout on the device side sends `stop` to the user;
//! - several connections per session; all are closed when the session or the websocket ends.
//!
//! Unlike the reference, the dial has a timeout and the idle timeout (600 s hard-coded there)
//! counts traffic in both directions; both are settings.
//!
//! Core's device decides all of that (`mender_connect_core::forwards`: admission, limits, the
//! unacked forwards, one device forward in flight, both timeouts, what a session's end closes);
//! this module only executes it. Socket I/O runs in one task per connection so a slow target
//! never blocks the daemon's event loop; the task does I/O only and reports what happened
//! ([`Event`]) to the router, which feeds it to the device.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use mender_connect_core::forwards::{self, Action, CloseReason, ForwardConfig, ForwardStore};
use mender_connect_core::portforward::{self as pf, Protocol};
use smol::Task;
use smol::net::{TcpStream, UdpSocket};

use crate::proto::router::Report;

/// Largest TCP read sent as one `forward` to the user side. One message is in flight per
/// connection, so throughput is this over the round trip through the server. The peers accept
/// it: the server's read limit on device websockets is 8 MiB and relays the message unchanged,
/// the Mender client's local proxy and mender-cli (gorilla/websocket) set no read limit, and
/// mender-cli writes whatever body it gets to its socket. Messages *to* the device stay under
/// the reference's 8192-byte read limit, which this does not touch.
pub const TCP_READ_LEN: usize = 32 * 1024;

/// Room for a `forward` frame's header next to its body: the map, keys, session and connection
/// ids (36-byte UUIDs from mender-cli) take under 200 bytes; ids are added on top.
const FRAME_OVERHEAD: usize = 256;

/// Port-forward settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Dial timeout.
    pub connect_timeout: Duration,
    /// A connection without traffic for this long is closed (and `stop` sent).
    pub idle_timeout: Duration,
    /// Open (or dialling) connections of one session.
    pub max_connections_per_session: usize,
    /// Open (or dialling) connections of all sessions together.
    pub max_connections: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: crate::config::DEFAULT_PORT_FORWARD_CONNECT_TIMEOUT,
            idle_timeout: crate::config::DEFAULT_PORT_FORWARD_IDLE_TIMEOUT,
            max_connections_per_session: crate::config::DEFAULT_PORT_FORWARD_MAX_PER_SESSION,
            max_connections: crate::config::DEFAULT_PORT_FORWARD_MAX_CONNECTIONS,
        }
    }
}

impl Settings {
    /// Core's table settings.
    pub(crate) fn table_config(&self) -> ForwardConfig {
        ForwardConfig {
            max_per_session: self.max_connections_per_session,
            max_connections: self.max_connections,
            connect_timeout_ms: crate::os::clock::millis(self.connect_timeout),
            idle_timeout_ms: crate::os::clock::millis(self.idle_timeout),
        }
    }
}

/// The device's connection table, grown on demand: `PortForward.MaxConnections` may be 4096,
/// which a fixed table would hold (megabytes) from the start.
#[derive(Debug, Default)]
pub(crate) struct Store {
    conns: Vec<forwards::Conn>,
    actions: std::collections::VecDeque<Action>,
}

impl ForwardStore for Store {
    fn conns(&self) -> &[forwards::Conn] {
        &self.conns
    }
    fn conns_mut(&mut self) -> &mut [forwards::Conn] {
        &mut self.conns
    }
    fn push_conn(&mut self, c: forwards::Conn) -> bool {
        self.conns.push(c);
        true
    }
    fn remove_conn(&mut self, i: usize) -> forwards::Conn {
        self.conns.remove(i)
    }
    fn conn_capacity(&self) -> usize {
        usize::MAX
    }
    // Bounded by the table: at most `queue_len(connections)` between two drains.
    fn push_action(&mut self, a: Action) -> bool {
        self.actions.push_back(a);
        true
    }
    fn pop_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn action_room(&self) -> usize {
        usize::MAX
    }
}

/// What a connection's task reports to the router (tagged with its connection's serial, so a
/// replaced connection's late reports are ignored).
#[derive(Debug)]
pub(crate) struct Event {
    sid: String,
    cid: String,
    serial: u64,
    what: Happened,
}

#[derive(Debug)]
enum Happened {
    /// The dial succeeded, or failed with Go's `net.Dial` text.
    Dialed(Result<(), String>),
    /// Bytes read from the target (kept by the task until the device allows them out).
    Read,
    /// One `forward` of the user's written to the target.
    Written,
    /// Writing failed (the text of the `error` for `forward`).
    WriteFailed(String),
    /// EOF or a read error.
    Ended,
}

/// `(protocol, host, port)` as requested.
#[derive(Clone, Debug)]
struct Target {
    protocol: Protocol,
    host: String,
    port: u16,
}

struct Conn {
    sid: String,
    cid: String,
    serial: u64,
    target: Target,
    writes: async_channel::Sender<Vec<u8>>,
    /// What the router tells the connection's reader, one channel each (of `()`, a channel
    /// type the agent links anyway): send what was read; the user acked it, read more.
    send_permit: async_channel::Sender<()>,
    more_permit: async_channel::Sender<()>,
    /// Dropping it cancels the I/O and closes the socket.
    _task: Task<()>,
}

/// Executes the device's port-forward actions: the sockets, one task each.
pub(crate) struct Forwards {
    out: async_channel::Sender<Vec<u8>>,
    events: async_channel::Sender<Report>,
    // Vectors, not maps: the device bounds them (`PortForward.MaxConnections`), a lookup is a
    // short scan, and each map type would add its own copy of the hash table's code.
    conns: Vec<Conn>,
    /// Targets of admitted `new`s whose dial comes next: `(sid, cid, target)`.
    pending: Vec<(String, String, Target)>,
    /// Bytes of the `forward` frames the tasks sent, per session (status CLI).
    sent: Vec<(String, Arc<AtomicU64>)>,
    serial: u64,
}

/// An `error` about `typ` with `text`, no props (as the reference).
pub(crate) fn error_frame(sid: &str, typ: &str, text: &str) -> Option<Vec<u8>> {
    crate::proto::outframe::encode(&"port forward", |b| pf::encode_error(b, sid, typ, text))
}

/// What the router must do after a report or an action.
pub(crate) enum Effect {
    /// Nothing.
    None,
    /// Send `frame` to the user side (counted in session `sid`'s bytes sent).
    Send { sid: String, frame: Vec<u8> },
}

impl Effect {
    /// An `error` about a `typ` message of session `sid`.
    fn error(sid: &str, typ: &str, text: &str) -> Self {
        error_frame(sid, typ, text).map_or(Self::None, |frame| Self::Send { sid: sid.to_owned(), frame })
    }
}

impl Forwards {
    /// Tasks send `forward` frames through `out` and report on `events`.
    pub(crate) fn new(out: async_channel::Sender<Vec<u8>>, events: async_channel::Sender<Report>) -> Self {
        Self { out, events, conns: Vec::new(), pending: Vec::new(), sent: Vec::new(), serial: 0 }
    }

    fn conn(&self, sid: &str, cid: &str) -> Option<&Conn> {
        self.conns.iter().find(|c| c.sid == sid && c.cid == cid)
    }

    fn remove_conn(&mut self, sid: &str, cid: &str) -> Option<Conn> {
        let i = self.conns.iter().position(|c| c.sid == sid && c.cid == cid)?;
        Some(self.conns.swap_remove(i))
    }

    /// The byte counter of session `sid`, created on first use.
    fn sent_counter(&mut self, sid: &str) -> Arc<AtomicU64> {
        if let Some((_, n)) = self.sent.iter().find(|(s, _)| s == sid) {
            return Arc::clone(n);
        }
        let n = Arc::new(AtomicU64::new(0));
        self.sent.push((sid.to_owned(), Arc::clone(&n)));
        n
    }

    /// An admitted `new`: its dial follows.
    pub(crate) fn opened(&mut self, sid: &str, cid: &str, protocol: Protocol, host: &str, port: u16) {
        log::info!("port-forward: new {sid}/{cid}: {}/{host}:{port}", protocol.as_str());
        // A reused connection id replaces its predecessor's target, as the table replaces it.
        self.pending.retain(|(s, c, _)| !(s == sid && c == cid));
        self.pending.push((sid.to_owned(), cid.to_owned(), Target { protocol, host: host.to_owned(), port }));
    }

    /// A `forward` the device took: to the connection's writer.
    pub(crate) fn write(&mut self, sid: &str, cid: &str, bytes: &[u8]) {
        if let Some(c) = self.conn(sid, cid) {
            // The device admits at most `forwards::INBOUND_QUEUE` unacked: the queue holds them.
            if c.writes.try_send(bytes.to_vec()).is_err() {
                log::error!("port-forward[{sid}/{cid}]: write queue full; dropping a forward");
            }
        }
    }

    /// Executes one of the device's socket actions.
    pub(crate) fn execute(&mut self, a: Action) -> Effect {
        match a {
            Action::Dial { sid, cid } => {
                let Some(i) = self.pending.iter().position(|(s, c, _)| *s == *sid && *c == *cid) else {
                    return Effect::None;
                };
                let (_, _, target) = self.pending.swap_remove(i);
                self.serial += 1;
                let (writes, writes_rx) = async_channel::bounded(usize::from(forwards::INBOUND_QUEUE));
                let (send_permit, send_permit_rx) = async_channel::bounded(1);
                let (more_permit, more_permit_rx) = async_channel::bounded(1);
                let sent = self.sent_counter(&sid);
                let io = Io {
                    sid: sid.to_string(),
                    cid: cid.to_string(),
                    serial: self.serial,
                    out: self.out.clone(),
                    events: self.events.clone(),
                    writes: writes_rx,
                    send_permit: send_permit_rx,
                    more_permit: more_permit_rx,
                    sent,
                };
                let task = crate::os::runtime::spawn(io.run(target.clone()));
                // A connection id reused: its predecessor (closed by the device) goes.
                self.remove_conn(&sid, &cid);
                let c = Conn {
                    sid: sid.to_string(),
                    cid: cid.to_string(),
                    serial: self.serial,
                    target,
                    writes,
                    send_permit,
                    more_permit,
                    _task: task,
                };
                self.conns.push(c);
                Effect::None
            }
            Action::Close { sid, cid, why } => {
                let Some(c) = self.remove_conn(&sid, &cid) else { return Effect::None };
                match why {
                    CloseReason::DialTimedOut => {
                        let t = &c.target;
                        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout");
                        let text = dial_error(t.protocol, &t.host, t.port, &e);
                        log::error!("port-forward[{sid}/{cid}]: {text}");
                        return Effect::error(&sid, pf::NEW, &text);
                    }
                    CloseReason::Idle => log::info!("port-forward[{sid}/{cid}] idle: closing"),
                    CloseReason::Requested => log::info!("port-forward: stop {sid}/{cid}"),
                    CloseReason::Unacked => {
                        log::error!("port-forward[{sid}/{cid}]: peer sends without waiting for acks; closing")
                    }
                    _ => log::debug!("port-forward[{sid}/{cid}] closed ({why:?})"),
                }
                Effect::None
            }
            Action::ReadMore { sid, cid } => {
                if let Some(c) = self.conn(&sid, &cid) {
                    let _ = c.more_permit.try_send(());
                }
                Effect::None
            }
            _ => Effect::None,
        }
    }

    /// Feeds a task's report to the device; returns a frame to send, if any.
    pub(crate) fn handle<S, const N: usize, const Q: usize, X>(
        &mut self,
        ev: Event,
        device: &mut mender_connect_core::device::Device<S, N, Q, Store, X>,
        now: mender_connect_core::time::Instant,
    ) -> Effect
    where
        S: mender_connect_core::control_sessions::SessionStore,
        X: mender_connect_core::transfers::TransferStore + Default,
    {
        let Event { sid, cid, serial, what } = ev;
        let Some(c) = self.conn(&sid, &cid).filter(|c| c.serial == serial) else {
            return Effect::None;
        };
        match what {
            Happened::Dialed(Ok(())) => {
                device.handle_forward_dialed(&sid, &cid, true, now);
            }
            Happened::Dialed(Err(text)) => {
                self.remove_conn(&sid, &cid);
                if device.handle_forward_dialed(&sid, &cid, false, now) {
                    log::error!("port-forward[{sid}/{cid}]: {text}");
                    return Effect::error(&sid, pf::NEW, &text);
                }
            }
            Happened::Read => {
                if device.handle_forward_read(&sid, &cid, now) {
                    let _ = c.send_permit.try_send(());
                }
            }
            Happened::Written => device.handle_forward_written(&sid, &cid, now),
            Happened::WriteFailed(text) => {
                log::error!("port-forward[{sid}/{cid}] error: {text}");
                device.handle_forward_ended(&sid, &cid);
                return Effect::error(&sid, pf::FORWARD, &text);
            }
            Happened::Ended => {
                log::debug!("port-forward[{sid}/{cid}] closed");
                device.handle_forward_ended(&sid, &cid);
            }
        }
        Effect::None
    }

    /// Session `sid` ended (its connections were closed by the device): its counter goes.
    pub(crate) fn session_ended(&mut self, sid: &str) {
        self.sent.retain(|(s, _)| s != sid);
        self.pending.retain(|(s, _, _)| s != sid);
    }

    /// The websocket dropped (the device closed every connection).
    pub(crate) fn disconnected(&mut self) {
        self.sent.clear();
        self.pending.clear();
    }

    /// Bytes of the `forward` frames sent for session `sid`.
    pub(crate) fn bulk_bytes_out(&self, sid: &str) -> u64 {
        self.sent.iter().find(|(s, _)| s == sid).map_or(0, |(_, n)| n.load(Ordering::Relaxed))
    }

    /// The open (or dialling) connections, for the status CLI.
    pub(crate) fn activity(&self, out: &mut Vec<crate::proto::router::Activity>) {
        for c in &self.conns {
            out.push(crate::proto::router::Activity::Forward(crate::ops::status::protocol::PortForward {
                session_id: c.sid.clone(),
                connection_id: c.cid.clone(),
                protocol: c.target.protocol.as_str().to_owned(),
                remote_host: c.target.host.clone(),
                remote_port: c.target.port,
            }));
        }
    }

    /// Open (or dialling) connections.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }
}

/// The socket side of one connection.
enum Socket {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Socket {
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Tcp(s) => s.clone().read(buf).await,
            Self::Udp(s) => s.recv(buf).await,
        }
    }

    async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Tcp(s) => s.clone().write_all(data).await,
            Self::Udp(s) => s.send(data).await.map(|_| ()),
        }
    }
}

/// Go's `net.Dial` error text, e.g. `dial tcp 127.0.0.1:1: connect: connection refused`.
fn dial_error(proto: Protocol, host: &str, port: u16, e: &std::io::Error) -> String {
    let reason = e.raw_os_error().map_or_else(
        || e.to_string(),
        |n| crate::os::chroot::errno_text(rustix::io::Errno::from_raw_os_error(n)),
    );
    let op = if e.raw_os_error().is_some() { "connect: " } else { "" };
    format!("dial {} {host}:{port}: {op}{reason}", proto.as_str())
}

async fn dial(proto: Protocol, host: &str, port: u16) -> std::io::Result<Socket> {
    match proto {
        Protocol::Udp => {
            let addrs: Vec<SocketAddr> = smol::net::resolve((host, port)).await?;
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no such host");
            for addr in addrs {
                let local: SocketAddr = if addr.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                match UdpSocket::bind(local).await {
                    Ok(s) => match s.connect(addr).await {
                        Ok(()) => return Ok(Socket::Udp(s)),
                        Err(e) => last = e,
                    },
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        _ => {
            let s = TcpStream::connect((host, port)).await?;
            let _ = s.set_nodelay(true);
            Ok(Socket::Tcp(s))
        }
    }
}

/// One connection's I/O.
struct Io {
    sid: String,
    cid: String,
    serial: u64,
    out: async_channel::Sender<Vec<u8>>,
    events: async_channel::Sender<Report>,
    writes: async_channel::Receiver<Vec<u8>>,
    send_permit: async_channel::Receiver<()>,
    more_permit: async_channel::Receiver<()>,
    /// The session's sent-bytes counter.
    sent: Arc<AtomicU64>,
}

impl Io {
    /// Reports to the router; false once it is gone.
    // The channel is unbounded (the device's flow control bounds it): a send never waits, so
    // it is not awaited, which keeps every task's state machine smaller.
    fn report(&self, what: Happened) -> bool {
        let ev = Event { sid: self.sid.clone(), cid: self.cid.clone(), serial: self.serial, what };
        self.events.try_send(Report::Forward(ev)).is_ok()
    }

    /// Dials (the device times the dial out by closing the connection, which drops this task),
    /// then copies both ways until either ends.
    async fn run(self, target: Target) {
        let socket = match dial(target.protocol, &target.host, target.port).await {
            Ok(s) => s,
            Err(e) => {
                let text = dial_error(target.protocol, &target.host, target.port, &e);
                self.report(Happened::Dialed(Err(text)));
                return;
            }
        };
        if !self.report(Happened::Dialed(Ok(()))) {
            return;
        }
        self.upstream(&socket).or(self.downstream(&socket)).await;
    }

    /// User → target: each `forward` the device took, written, then reported.
    async fn upstream(&self, socket: &Socket) {
        while let Ok(data) = self.writes.recv().await {
            if let Err(e) = socket.write(&data).await {
                self.report(Happened::WriteFailed(format!("write: {e}")));
                return;
            }
            if !self.report(Happened::Written) {
                return;
            }
        }
    }

    /// Target → user: a read is sent once the device allows it, the next read once the user
    /// acked it.
    async fn downstream(&self, socket: &Socket) {
        let len = match socket {
            Socket::Tcp(_) => TCP_READ_LEN,
            Socket::Udp(_) => pf::BUFFER_SIZE,
        };
        let mut buf = vec![0u8; len];
        loop {
            let n = match socket.read(&mut buf).await {
                Ok(0) if matches!(socket, Socket::Tcp(_)) => {
                    self.report(Happened::Ended);
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    log::error!("port-forward[{}/{}] read error: {e}", self.sid, self.cid);
                    self.report(Happened::Ended);
                    return;
                }
            };
            if !self.report(Happened::Read) {
                return;
            }
            if self.send_permit.recv().await.is_err() {
                return;
            }
            let cap = n + self.sid.len() + self.cid.len() + FRAME_OVERHEAD;
            let frame = crate::proto::outframe::encode_within(&"port forward", cap, |b| {
                pf::encode(b, pf::FORWARD, &self.sid, &self.cid, &buf[..n])
            });
            if let Some(f) = frame {
                self.sent.fetch_add(f.len() as u64, Ordering::Relaxed);
                if self.out.send(f).await.is_err() {
                    return;
                }
            }
            if self.more_permit.recv().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
