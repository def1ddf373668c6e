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
//! counts traffic in both directions; both are settings. Socket I/O runs in one task per
//! connection so a slow target never blocks the daemon's event loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use mender_connect_core::Frame;
use mender_connect_core::portforward::{self as pf, PortForwardMessage, Protocol};
use smol::Task;
use smol::net::{TcpStream, UdpSocket};

use crate::proto::router::SessionHandler;

/// `forward` messages from the user buffered per connection. The user side (mender-cli) waits
/// for each ack, so more than one queued means a misbehaving peer; this bounds memory (up to
/// 8 KiB each, also while the dial is pending: 64 used to let 150 connections hold 72 MiB; with
/// 2, `MaxConnections` dialling connections hold at most 1 MiB).
pub const INBOUND_QUEUE: usize = 2;

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

const ERR_INVALID: &str = "invalid port-forward message: missing connection_id, remote_port or protocol";
const ERR_UNKNOWN_CONNECTION: &str = "unknown connection";
const ERR_UNKNOWN_TYPE: &str = "unknown message type";

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

/// The connections open in every session of a daemon, against `Settings::max_connections`.
#[derive(Clone, Debug, Default)]
pub struct Budget(Arc<AtomicUsize>);

impl Budget {
    /// A slot if fewer than `max` are taken; it is given back when dropped.
    fn take(&self, max: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Arc::clone(&self.0)))
    }

    #[cfg(test)]
    /// Connections open now.
    pub fn in_use(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One connection's share of the [`Budget`]; lives as long as the connection's task.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn encode(f: impl FnOnce(&mut [u8]) -> Result<usize, mender_connect_core::EncodeError>) -> Option<Vec<u8>> {
    crate::proto::outframe::encode(&"port forward", f)
}

/// [`encode`] into a buffer of `cap` bytes, for `forward` frames sized to their data.
fn encode_within(
    cap: usize,
    f: impl FnOnce(&mut [u8]) -> Result<usize, mender_connect_core::EncodeError>,
) -> Option<Vec<u8>> {
    crate::proto::outframe::encode_within(&"port forward", cap, f)
}

fn error_frame(sid: &str, typ: &str, text: &str) -> Option<Vec<u8>> {
    encode(|b| pf::encode_error(b, sid, typ, text))
}

struct Conn {
    inbound: async_channel::Sender<Vec<u8>>,
    acks: async_channel::Sender<()>,
    task: Task<()>,
    /// `(protocol, host, port)` as requested (status CLI).
    target: (String, String, u16),
}

/// One session's port forwards.
pub struct PortForward {
    settings: Settings,
    out: async_channel::Sender<Vec<u8>>,
    conns: HashMap<String, Conn>,
    /// Bytes of the frames the connections' tasks sent (status CLI).
    sent: Arc<AtomicU64>,
    budget: Budget,
}

impl PortForward {
    #[cfg(test)]
    /// A handler sending connection traffic through `out`, with a budget of its own.
    pub fn new(settings: Settings, out: async_channel::Sender<Vec<u8>>) -> Self {
        Self::sharing(settings, out, Budget::default())
    }

    /// A handler whose connections count against `budget`, shared by every session.
    pub fn sharing(settings: Settings, out: async_channel::Sender<Vec<u8>>, budget: Budget) -> Self {
        Self { settings, out, conns: HashMap::new(), sent: Arc::new(AtomicU64::new(0)), budget }
    }

    /// Forgets connections whose task ended (EOF, error, timeout: `stop` was sent).
    fn prune(&mut self) {
        self.conns.retain(|_, c| !c.task.is_finished());
    }

    fn open(&mut self, sid: &str, id: &str, request: &pf::PortForwardNew<'_>, out: &mut Vec<Vec<u8>>) {
        let Some((host, port, proto)) = request.target().filter(|_| !id.is_empty()) else {
            out.extend(error_frame(sid, pf::NEW, ERR_INVALID));
            return;
        };
        let Some(protocol) = Protocol::parse(proto) else {
            out.extend(error_frame(sid, pf::NEW, &format!("unknown protocol: {proto}")));
            return;
        };
        // A reused id replaces the old connection (closing it, which the reference leaks).
        self.conns.remove(id);
        if self.conns.len() >= self.settings.max_connections_per_session {
            let text = format!(
                "too many port-forward connections in this session (at most {}, PortForward.MaxConnectionsPerSession)",
                self.settings.max_connections_per_session
            );
            log::warn!("port-forward: refusing {sid}/{id}: {text}");
            out.extend(error_frame(sid, pf::NEW, &text));
            return;
        }
        let Some(slot) = self.budget.take(self.settings.max_connections) else {
            let text = format!(
                "too many port-forward connections on this device (at most {}, PortForward.MaxConnections)",
                self.settings.max_connections
            );
            log::warn!("port-forward: refusing {sid}/{id}: {text}");
            out.extend(error_frame(sid, pf::NEW, &text));
            return;
        };
        log::info!("port-forward: new {sid}/{id}: {proto}/{host}:{port}");
        let (inbound, inbound_rx) = async_channel::bounded(INBOUND_QUEUE);
        let (acks, acks_rx) = async_channel::bounded(1);
        let link = Link {
            sid: sid.to_owned(),
            id: id.to_owned(),
            out: self.out.clone(),
            settings: self.settings,
            inbound: inbound_rx,
            acks: acks_rx,
            last_activity: AtomicU64::new(crate::os::clock::now().as_millis()),
            sent: Arc::clone(&self.sent),
            _slot: slot,
        };
        let task = crate::os::runtime::spawn(link.run(protocol, host.to_owned(), port));
        let target = (proto.to_owned(), host.to_owned(), port);
        self.conns.insert(id.to_owned(), Conn { inbound, acks, task, target });
    }
}

impl SessionHandler for PortForward {
    fn serve(&mut self, sid: &str, frame: &Frame<'_>, out: &mut Vec<Vec<u8>>) {
        self.prune();
        let typ = frame.header.typ;
        let msg = match PortForwardMessage::from_frame(frame) {
            Ok(m) => m,
            Err(e) => {
                out.extend(error_frame(sid, typ, &format!("invalid port-forward message: {e}")));
                return;
            }
        };
        match msg {
            PortForwardMessage::New { connection_id, request } => {
                self.open(sid, connection_id, &request, out)
            }
            PortForwardMessage::Forward { connection_id, data } => {
                let Some(c) = self.conns.get(connection_id) else {
                    return out.extend(error_frame(sid, typ, ERR_UNKNOWN_CONNECTION));
                };
                match c.inbound.try_send(data.to_vec()) {
                    Ok(()) => {}
                    Err(async_channel::TrySendError::Full(_)) => {
                        log::error!(
                            "port-forward[{sid}/{connection_id}]: peer sends without waiting for acks; closing"
                        );
                        self.conns.remove(connection_id);
                        out.extend(error_frame(sid, typ, "too many unacknowledged forward messages"));
                        out.extend(encode(|b| pf::encode(b, pf::STOP, sid, connection_id, &[])));
                    }
                    Err(async_channel::TrySendError::Closed(_)) => {
                        self.conns.remove(connection_id);
                        out.extend(error_frame(sid, typ, ERR_UNKNOWN_CONNECTION));
                    }
                }
            }
            PortForwardMessage::Ack { connection_id } => match self.conns.get(connection_id) {
                // A surplus ack is ignored, as the reference's recovered double unlock.
                Some(c) => {
                    let _ = c.acks.try_send(());
                }
                None => out.extend(error_frame(sid, typ, ERR_UNKNOWN_CONNECTION)),
            },
            PortForwardMessage::Stop { connection_id } => {
                if self.conns.remove(connection_id).is_some() {
                    log::info!("port-forward: stop {sid}/{connection_id}");
                    out.extend(encode(|b| pf::encode(b, pf::STOP, sid, connection_id, &[])));
                } else {
                    out.extend(error_frame(sid, typ, ERR_UNKNOWN_CONNECTION));
                }
            }
            // Answering an error with an error could ping-pong; the reference's answer
            // ("unknown message type") carries no information.
            PortForwardMessage::Error(e) => {
                log::error!("port-forward[{sid}]: error from the user side: {}", e.err.unwrap_or("(none)"));
            }
            _ => out.extend(error_frame(sid, typ, ERR_UNKNOWN_TYPE)),
        }
    }

    fn close(&mut self) {
        // Dropping the tasks closes the sockets; like the reference, no `stop` is sent.
        self.conns.clear();
    }

    fn bulk_bytes_out(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn activity(&self, sid: &str, out: &mut Vec<crate::proto::router::Activity>) {
        for (id, c) in self.conns.iter().filter(|(_, c)| !c.task.is_finished()) {
            let (protocol, remote_host, remote_port) = c.target.clone();
            out.push(crate::proto::router::Activity::Forward(crate::ops::status::protocol::PortForward {
                session_id: sid.to_owned(),
                connection_id: id.clone(),
                protocol,
                remote_host,
                remote_port,
            }));
        }
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

struct Link {
    sid: String,
    id: String,
    out: async_channel::Sender<Vec<u8>>,
    settings: Settings,
    inbound: async_channel::Receiver<Vec<u8>>,
    acks: async_channel::Receiver<()>,
    /// The last traffic, on the core's clock (milliseconds).
    last_activity: AtomicU64,
    /// The session's sent-bytes counter.
    sent: Arc<AtomicU64>,
    /// Given back when the task ends or is dropped.
    _slot: Slot,
}

enum End {
    /// The target closed or failed, or the connection idled out: tell the user side.
    Stop,
    /// Tell the user side this error, then `stop`.
    Error(&'static str, String),
    /// The daemon side is gone (queue closed): nothing to send.
    Gone,
}

impl Link {
    fn touch(&self) {
        self.last_activity.store(crate::os::clock::now().as_millis(), Ordering::Relaxed);
    }

    async fn send(&self, frame: Option<Vec<u8>>) -> Result<(), End> {
        match frame {
            Some(f) => {
                self.sent.fetch_add(f.len() as u64, Ordering::Relaxed);
                self.out.send(f).await.map_err(|_| End::Gone)
            }
            None => Ok(()),
        }
    }

    async fn run(self, proto: Protocol, host: String, port: u16) {
        let dialled = dial(proto, &host, port)
            .or(async {
                smol::Timer::after(self.settings.connect_timeout).await;
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout"))
            })
            .await;
        let socket = match dialled {
            Ok(s) => s,
            Err(e) => {
                let text = dial_error(proto, &host, port, &e);
                log::error!("port-forward[{}/{}]: {text}", self.sid, self.id);
                let _ = self.send(error_frame(&self.sid, pf::NEW, &text)).await;
                return;
            }
        };
        if self.send(encode(|b| pf::encode(b, pf::NEW, &self.sid, &self.id, &[]))).await.is_err() {
            return;
        }
        self.touch();
        let end = self.upstream(&socket).or(self.downstream(&socket)).or(self.watchdog()).await;
        match end {
            End::Gone => {}
            End::Error(typ, text) => {
                log::error!("port-forward[{}/{}] error: {text}", self.sid, self.id);
                let _ = self.send(error_frame(&self.sid, typ, &text)).await;
                let _ = self.send(encode(|b| pf::encode(b, pf::STOP, &self.sid, &self.id, &[]))).await;
            }
            End::Stop => {
                log::debug!("port-forward[{}/{}] closed", self.sid, self.id);
                let _ = self.send(encode(|b| pf::encode(b, pf::STOP, &self.sid, &self.id, &[]))).await;
            }
        }
    }

    /// User → target: write each `forward`, then ack it.
    async fn upstream(&self, socket: &Socket) -> End {
        loop {
            let Ok(data) = self.inbound.recv().await else { return End::Gone };
            self.touch();
            if let Err(e) = socket.write(&data).await {
                return End::Error(pf::FORWARD, format!("write: {e}"));
            }
            if let Err(e) = self.send(encode(|b| pf::encode(b, pf::ACK, &self.sid, &self.id, &[]))).await {
                return e;
            }
        }
    }

    /// Target → user: one `forward` in flight at a time.
    async fn downstream(&self, socket: &Socket) -> End {
        let len = match socket {
            Socket::Tcp(_) => TCP_READ_LEN,
            Socket::Udp(_) => pf::BUFFER_SIZE,
        };
        let mut buf = vec![0u8; len];
        loop {
            let n = match socket.read(&mut buf).await {
                Ok(0) if matches!(socket, Socket::Tcp(_)) => return End::Stop,
                Ok(n) => n,
                Err(e) => {
                    log::error!("port-forward[{}/{}] read error: {e}", self.sid, self.id);
                    return End::Stop;
                }
            };
            self.touch();
            let cap = n + self.sid.len() + self.id.len() + FRAME_OVERHEAD;
            let frame = encode_within(cap, |b| pf::encode(b, pf::FORWARD, &self.sid, &self.id, &buf[..n]));
            if let Err(e) = self.send(frame).await {
                return e;
            }
            if self.acks.recv().await.is_err() {
                return End::Gone;
            }
        }
    }

    async fn watchdog(&self) -> End {
        let idle_ms = crate::os::clock::millis(self.settings.idle_timeout);
        loop {
            let last = self.last_activity.load(Ordering::Relaxed);
            let now = crate::os::clock::now().as_millis();
            let due = last.saturating_add(idle_ms);
            if now >= due {
                log::info!(
                    "port-forward[{}/{}] idle for {:?}: closing",
                    self.sid,
                    self.id,
                    self.settings.idle_timeout
                );
                return End::Stop;
            }
            smol::Timer::after(Duration::from_millis(due - now)).await;
        }
    }
}

#[cfg(test)]
mod tests;
