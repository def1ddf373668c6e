//! The device websocket: dialling `<server>/api/devices/v1/deviceconnect/connect` (ws or wss),
//! the keep-alive timers of the reference, and the reader/writer halves.
//!
//! The reference (mender-connect 2.1.0 `connection/connection.go`, `connectionmanager/`) keeps
//! only scheme and host of the server URL, maps http→ws and https→wss, sends
//! `Authorization: Bearer <token>` without a subprotocol, limits incoming messages to 8192
//! bytes, pings every 0.9 × 60 s, drops the link when nothing arrives for 60 s and gives every
//! write 4 s.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Bytes, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{FutureExt, StreamExt, future};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::keepalive::KeepaliveConfig;
use mender_connect_core::time::Instant as CoreInstant;
use smol::Timer;
use smol::net::TcpStream;

use crate::os::clock;

use crate::config::endpoint::{Endpoint, InvalidUrl};

pub mod b64;
pub mod handshake;
pub(crate) mod provider;
pub(crate) mod proxy;
pub(crate) mod roots;

/// Path of the device endpoint (reference `config.DefaultDeviceConnectPath`).
pub(crate) const CONNECT_PATH: &str = "/api/devices/v1/deviceconnect/connect";
/// Read deadline: the link is dead when nothing arrives for this long (`DefaultPingWait`).
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(60);
/// Websocket ping period: 0.9 × the read deadline, as the reference; unlike it, counted from the
/// last frame received or ping sent, so a busy or server-pinged link sends no pings of its own.
pub(crate) const PING_PERIOD: Duration = Duration::from_secs(54);
/// Keep-alive towards the Mender client's local proxy (a loopback server URL). The proxy answers
/// pings itself and the hop to the server is kept alive by the server's own pings, which the
/// client answers (docs/design.md §12), so our pings only prove the loopback hop:
/// a closed or restarted proxy is seen at once as EOF, only a hung one waits for this deadline.
/// Pinging that hop every 54 s as the reference does cost four thread wake-ups a minute idle.
pub(crate) const LOOPBACK_READ_DEADLINE: Duration = Duration::from_secs(300);
/// Ping period for [`LOOPBACK_READ_DEADLINE`], 0.9 × as for remote links.
pub(crate) const LOOPBACK_PING_PERIOD: Duration = Duration::from_secs(270);
/// Time allowed for one message write (`writeWait`).
pub(crate) const WRITE_WAIT: Duration = Duration::from_secs(4);
impl From<InvalidUrl> for ConnectError {
    fn from(e: InvalidUrl) -> Self {
        ConnectError::InvalidUrl(e.0)
    }
}

/// Time allowed for TCP connect + TLS + websocket handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the websocket could not be opened or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server URL from the auth service is not `http(s)://` / `ws(s)://host[:port]`.
    #[error("invalid server URL {0:?}")]
    InvalidUrl(String),
    /// The token cannot be put in an HTTP header.
    #[error("token is not a valid HTTP header value")]
    InvalidToken,
    /// TCP or TLS failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the token (HTTP 401): the caller asks for a fresh one.
    #[error("unauthorized (HTTP 401)")]
    Unauthorized,
    /// Any other HTTP status on the upgrade request.
    #[error("websocket upgrade refused with HTTP {0}")]
    Http(u16),
    /// The server's answer to the websocket upgrade is not a valid one.
    #[error("websocket handshake failed: {0}")]
    Handshake(&'static str),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The TLS handshake failed, e.g. the server's certificate is not trusted.
    #[error("TLS handshake with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    /// The proxy setting is unusable or the proxy refused the tunnel.
    #[error("proxy: {0}")]
    Proxy(String),
}

impl Endpoint {
    /// The websocket URL of the device endpoint.
    #[cfg(test)]
    pub(crate) fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{CONNECT_PATH}", self.authority())
    }
}

/// Keep-alive timing of one link: core's scheme in which any frame received extends the read
/// deadline and defers the next ping ([`KeepaliveConfig::any_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Keepalive(pub(crate) KeepaliveConfig);

impl Keepalive {
    /// The reference's timing, for a server reached over the network.
    pub(crate) const REMOTE: Self =
        Self(KeepaliveConfig::any_frame(READ_DEADLINE.as_secs() * 1000, PING_PERIOD.as_secs() * 1000));
    /// For the Mender client's local proxy (see [`LOOPBACK_READ_DEADLINE`]).
    pub(crate) const LOOPBACK: Self = Self(KeepaliveConfig::any_frame(
        LOOPBACK_READ_DEADLINE.as_secs() * 1000,
        LOOPBACK_PING_PERIOD.as_secs() * 1000,
    ));

    /// The timing for the link to `server_url` (remote when the URL does not parse: the
    /// cautious choice; such a URL never dials anyway).
    pub(crate) fn for_url(server_url: &str) -> Self {
        match Endpoint::parse(server_url) {
            Ok(e) if e.is_loopback() => Self::LOOPBACK,
            _ => Self::REMOTE,
        }
    }
}

/// TCP, or TLS over TCP.
pub(crate) enum Transport {
    /// ws://
    Plain(TcpStream),
    /// wss://
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// An open device websocket.
pub(crate) type Socket = WebSocketStream<Transport>;

/// Which servers TLS trusts (the Mender client's `ServerCertificate` and `SkipVerify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// PEM file with CA or server certificates trusted in addition to the system's CA bundle.
    pub(crate) ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (insecure; for bring-up only).
    pub(crate) skip_verify: bool,
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    /// The certificate file cannot be read or holds no usable certificate.
    #[error("server certificate file {path}: {reason}")]
    CaFile { path: String, reason: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// TLS client settings: the system's CA bundle (see [`roots`], read on the first handshake) plus
/// `ca_file`, ring provider; verification on unless `skip_verify`.
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    // `ServerCertificate` only; the system roots join on the first handshake (see `roots`).
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &options.ca_file {
        let bad = |reason: String| TlsError::CaFile { path: path.display().to_string(), reason };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE in PEM format".into()));
        }
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("no certificate could be parsed".into()));
        }
    }
    let provider = Arc::new(provider::provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier = if options.skip_verify {
        roots::Verifier::any(provider)
    } else {
        roots::Verifier::new(roots, provider)
    };
    let verifier = Arc::new(verifier);
    let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens TCP to `endpoint` (through the environment's proxy, see [`proxy`]) and TLS on top when
/// the endpoint wants it.
pub(crate) async fn open_transport(
    endpoint: &Endpoint,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Transport, ConnectError> {
    let proxy = proxy::from_env(endpoint.tls, &endpoint.host, endpoint.port)
        .map_err(|e| ConnectError::Proxy(e.to_string()))?;
    let tcp = match &proxy {
        Some(p) => {
            log::debug!(
                "connecting to {}:{} through proxy {}:{}",
                endpoint.host,
                endpoint.port,
                p.host,
                p.port
            );
            let mut tcp = TcpStream::connect((p.host.as_str(), p.port)).await?;
            tunnel(&mut tcp, p, endpoint).await?;
            tcp
        }
        None => TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?,
    };
    tcp.set_nodelay(true)?;
    if !endpoint.tls {
        return Ok(Transport::Plain(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|_| ConnectError::InvalidUrl(endpoint.host.clone()))?;
    match TlsConnector::from(Arc::clone(tls)).connect(name, tcp).await {
        Ok(stream) => Ok(Transport::Tls(Box::new(stream))),
        Err(e) => Err(ConnectError::Tls { host: endpoint.host.clone(), reason: e.to_string() }),
    }
}

/// `CONNECT host:port` on a fresh proxy connection; Ok when the proxy answers 2xx.
async fn tunnel(tcp: &mut TcpStream, proxy: &proxy::Proxy, endpoint: &Endpoint) -> Result<(), ConnectError> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let target = endpoint.authority();
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(userinfo) = &proxy.userinfo {
        request.push_str(&format!("Proxy-Authorization: Basic {}\r\n", basic_auth(userinfo)));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;
    // Byte by byte: nothing after the proxy's header may be consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(ConnectError::Proxy("oversized answer to CONNECT".into()));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(ConnectError::Proxy("closed the connection during CONNECT".into()));
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(()),
        _ => Err(ConnectError::Proxy(format!("CONNECT {target} refused: {status_line}"))),
    }
}

/// Base64 of `user:password` after percent-decoding, as Go puts the URL's user info in
/// `Proxy-Authorization`.
fn basic_auth(userinfo: &str) -> String {
    let mut raw = Vec::with_capacity(userinfo.len());
    let bytes = userinfo.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                raw.push(b);
                i += 3;
            }
            (b, _) => {
                raw.push(b);
                i += 1;
            }
        }
    }
    b64::encode(&raw)
}

/// Buffers sized for 8 KiB messages instead of tungstenite's 128 KiB defaults.
/// Largest websocket message read; see [`ws_config`].
const OVERSIZE_READ_LIMIT: usize = 4 * MAX_FRAME_LEN;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        // Read up to 4 × the protocol limit so that a message just over 8192 bytes reaches the
        // router, which refuses it with a control error and keeps the link (the reference's read
        // limit ends the websocket instead). Anything larger still ends the link: memory stays
        // bounded.
        .max_message_size(Some(OVERSIZE_READ_LIMIT))
        .max_frame_size(Some(OVERSIZE_READ_LIMIT))
}

/// Opens the device websocket with `Authorization: Bearer <token>`.
pub(crate) async fn dial(
    server_url: &str,
    token: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Socket, ConnectError> {
    let endpoint = Endpoint::parse(server_url)?;
    async {
        let mut transport = open_transport(&endpoint, tls).await?;
        let rest = handshake::client(&mut transport, &endpoint.authority(), CONNECT_PATH, token).await?;
        Ok(WebSocketStream::from_partially_read(transport, rest, Role::Client, Some(ws_config())).await)
    }
    .or(async {
        Timer::after(DIAL_TIMEOUT).await;
        Err(ConnectError::Timeout)
    })
    .await
}

/// Why a connected websocket ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Ended {
    /// The server closed it (close frame or EOF).
    #[error("closed by the server")]
    Closed,
    /// Nothing arrived within the read deadline.
    #[error("no message or pong within {}s", .0.as_secs())]
    ReadTimeout(Duration),
    /// A write did not finish within [`WRITE_WAIT`].
    #[error("write not done within {}s", WRITE_WAIT.as_secs())]
    WriteTimeout,
    /// Transport or protocol error.
    #[error("{0}")]
    Error(tungstenite::Error),
}

/// When something last arrived (on the core's clock), shared by both halves: the reader's
/// deadline and the writer's keep-alive both count from it, so neither needs a timer per message.
#[derive(Clone)]
struct LastReceived(Arc<AtomicU64>);

impl LastReceived {
    fn new(now: CoreInstant) -> Self {
        Self(Arc::new(AtomicU64::new(now.as_millis())))
    }

    fn mark(&self, now: CoreInstant) {
        self.0.store(now.as_millis(), Ordering::Relaxed);
    }

    fn get(&self) -> CoreInstant {
        CoreInstant::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// Reader half: yields message payloads, refreshing the read deadline on every arrival.
pub(crate) struct Reader {
    inner: WebSocketReceiver<Transport>,
    last_received: LastReceived,
    // One timer for the whole link, moved forward only when it fires: arming a timer per
    // message would wake the reactor thread once per frame.
    deadline: Timer,
    keepalive: KeepaliveConfig,
}

impl Reader {
    /// The next data message (binary or text payload). Pings and pongs only refresh the
    /// deadline (tungstenite queues the pong answer itself).
    ///
    /// The payload is a view into tungstenite's read buffer, not a copy: once it is dropped
    /// (before the next read), the buffer is reused in place, so a message costs no allocation.
    /// Copying it into a `Vec` cost an allocation and free per message, which musl's allocator
    /// answered with `mmap`/`munmap` churn on the upload path.
    pub(crate) async fn next(&mut self) -> Result<Bytes, Ended> {
        loop {
            let (inner, deadline) = (&mut self.inner, &mut self.deadline);
            let item = async { Some(inner.next().await) }
                .or(async {
                    deadline.await;
                    None
                })
                .await;
            let now = Instant::now();
            let Some(item) = item else {
                let due = self.keepalive.read_deadline(self.last_received.get());
                if clock::to_core(now) >= due {
                    return Err(Ended::ReadTimeout(Duration::from_millis(self.keepalive.ping_wait_ms)));
                }
                self.deadline.set_at(clock::to_std(due));
                continue;
            };
            self.last_received.mark(clock::to_core(now));
            match item {
                None => return Err(Ended::Closed),
                Some(Ok(Message::Binary(b))) => return Ok(b),
                Some(Ok(Message::Text(t))) => return Ok(t.into()),
                Some(Ok(Message::Close(_))) => return Err(Ended::Closed),
                // A keep-alive answer comes while the link is otherwise idle, when the deadline
                // would be the next thing to wake the daemon: move it now, while awake anyway.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    self.deadline.set_at(clock::to_std(self.keepalive.read_deadline(clock::to_core(now))));
                }
                Some(Ok(_)) => {}
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                    return Err(Ended::Closed);
                }
                Some(Err(e)) => return Err(Ended::Error(e)),
            }
        }
    }
}

/// Writer half: sends frames from the outbound queue and the keep-alive pings.
pub(crate) struct Writer {
    inner: WebSocketSender<Transport>,
    last_received: LastReceived,
    last_ping: CoreInstant,
    ping: Timer,
    keepalive: KeepaliveConfig,
}

impl Writer {
    async fn send(&mut self, msg: Message) -> Result<(), Ended> {
        let mut write = std::pin::pin!(self.inner.send(msg));
        // Most writes finish at once; only a write that waits gets a timer (see `Reader`).
        if let Some(r) = future::poll_once(&mut write).await {
            return r.map_err(Ended::Error);
        }
        async { write.await.map_err(Ended::Error) }
            .or(async {
                Timer::after(WRITE_WAIT).await;
                Err(Ended::WriteTimeout)
            })
            .await
    }

    /// Pumps the queues into the socket until a write fails, `replies` before `data`; pings
    /// when nothing has arrived and no ping went out for the ping period (any frame from the
    /// server, its own pings included, proves the link as well as a pong; an idle link costs
    /// one ping and one pong per period). Returns `Ok` when a queue is closed (shutdown).
    pub(crate) async fn pump(
        &mut self,
        replies: &async_channel::Receiver<Vec<u8>>,
        data: &async_channel::Receiver<Vec<u8>>,
    ) -> Result<(), Ended> {
        loop {
            let ping = &mut self.ping;
            // `or` polls left first: replies win over bulk shell output.
            let next = async { Some(replies.recv().await) }
                .or(async { Some(data.recv().await) })
                .or(async {
                    ping.await;
                    None
                })
                .await;
            match next {
                Some(Ok(frame)) => self.send(Message::binary(frame)).await?,
                Some(Err(_)) => return Ok(()),
                None => {
                    let now = clock::now();
                    let due = self.keepalive.ping_due(self.last_received.get(), self.last_ping);
                    if now < due {
                        self.ping.set_at(clock::to_std(due));
                        continue;
                    }
                    self.last_ping = now;
                    self.ping.set_at(clock::to_std(self.keepalive.ping_due(now, now)));
                    // Payload as the reference: the read deadline in seconds.
                    let mut buf = [0u8; 20];
                    let payload = self.keepalive.ping_payload(&mut buf).to_vec();
                    self.send(Message::Ping(payload.into())).await?;
                }
            }
        }
    }

    /// Sends a close frame (best effort, bounded by [`WRITE_WAIT`]).
    pub(crate) async fn close(&mut self) {
        let _ = self.send(Message::Close(None)).await;
    }
}

/// Splits an open socket into its reader and writer halves, with the given keep-alive timing.
pub(crate) fn split(socket: Socket, keepalive: Keepalive) -> (Reader, Writer) {
    let (tx, rx) = socket.split();
    let Keepalive(keepalive) = keepalive;
    let now = clock::now();
    let last_received = LastReceived::new(now);
    let reader = Reader {
        inner: rx,
        last_received: last_received.clone(),
        deadline: Timer::at(clock::to_std(keepalive.read_deadline(now))),
        keepalive,
    };
    let ping = Timer::at(clock::to_std(keepalive.ping_due(now, now)));
    let writer = Writer { inner: tx, last_received, last_ping: now, ping, keepalive };
    (reader, writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_urls() {
        let e = Endpoint::parse("http://127.0.0.1:40123").unwrap();
        assert_eq!(e, Endpoint { tls: false, host: "127.0.0.1".into(), port: 40123 });
        assert_eq!(e.ws_url(), "ws://127.0.0.1:40123/api/devices/v1/deviceconnect/connect");
        let e = Endpoint::parse("https://hosted.mender.io/some/prefix").unwrap();
        assert_eq!(e.ws_url(), "wss://hosted.mender.io:443/api/devices/v1/deviceconnect/connect");
        let e = Endpoint::parse("HTTP://[::1]:8080/").unwrap();
        assert_eq!(e.ws_url(), "ws://[::1]:8080/api/devices/v1/deviceconnect/connect");
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://:80").is_err());
        assert!(Endpoint::parse("http://h:99999").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn keepalive_is_relaxed_only_for_a_server_on_this_device() {
        for url in ["http://127.0.0.1:40123", "http://localhost:8080/", "ws://[::1]:9", "http://127.8.9.10:1"]
        {
            assert_eq!(Keepalive::for_url(url), Keepalive::LOOPBACK, "{url}");
        }
        for url in [
            "https://hosted.mender.io",
            "http://10.0.2.2:8080",
            "http://[fe80::1]:80",
            "http://localhost.example.com",
            "nonsense",
        ] {
            assert_eq!(Keepalive::for_url(url), Keepalive::REMOTE, "{url}");
        }
        assert_eq!(Keepalive::LOOPBACK.0, KeepaliveConfig::any_frame(300_000, 270_000));
        assert_eq!(Keepalive::REMOTE.0, KeepaliveConfig::any_frame(60_000, 54_000));
    }

    #[test]
    fn proxy_basic_auth_is_percent_decoded() {
        assert_eq!(basic_auth("Aladdin:open%20sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }
}
