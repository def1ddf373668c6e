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
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{self, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::{FutureExt, StreamExt};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use mender_connect_core::MAX_FRAME_LEN;
use smol::Timer;
use smol::net::TcpStream;

/// Path of the device endpoint (reference `config.DefaultDeviceConnectPath`).
pub const CONNECT_PATH: &str = "/api/devices/v1/deviceconnect/connect";
/// Read deadline: the link is dead when nothing arrives for this long (`DefaultPingWait`).
pub const READ_DEADLINE: Duration = Duration::from_secs(60);
/// Websocket ping period: 0.9 × the read deadline, as the reference.
pub const PING_PERIOD: Duration = Duration::from_secs(54);
/// Time allowed for one message write (`writeWait`).
pub const WRITE_WAIT: Duration = Duration::from_secs(4);
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
    /// Websocket protocol error.
    #[error("websocket error: {0}")]
    Ws(tungstenite::Error),
    /// No answer in time.
    #[error("timed out")]
    Timeout,
}

/// Where to dial, parsed from the auth service's server URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Use TLS (wss).
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/path...]`; like the reference, any path is dropped.
    pub fn parse(server_url: &str) -> Result<Self, ConnectError> {
        let bad = || ConnectError::InvalidUrl(server_url.to_owned());
        let (scheme, rest) = server_url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => true,
            "http" | "ws" => false,
            _ => return Err(bad()),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        // Credentials in the URL are never sent; the token is the only credential.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self { tls, host: host.to_owned(), port })
    }

    /// The websocket URL of the device endpoint.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{host}:{}{CONNECT_PATH}", self.port)
    }
}

/// TCP, or TLS over TCP.
pub enum Transport {
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
pub type Socket = WebSocketStream<Transport>;

/// TLS client settings: webpki roots, verification always on, ring provider.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(c) => Arc::new(c),
        // The ring provider supports the default versions; this arm is unreachable in practice,
        // and an empty-root config still refuses every server (fail closed).
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}

/// Buffers sized for 8 KiB messages instead of tungstenite's 128 KiB defaults.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Opens the device websocket with `Authorization: Bearer <token>`.
pub async fn dial(server_url: &str, token: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Socket, ConnectError> {
    let endpoint = Endpoint::parse(server_url)?;
    async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        tcp.set_nodelay(true)?;
        let transport = if endpoint.tls {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|_| ConnectError::InvalidUrl(server_url.to_owned()))?;
            let stream = TlsConnector::from(Arc::clone(tls)).connect(name, tcp).await?;
            Transport::Tls(Box::new(stream))
        } else {
            Transport::Plain(tcp)
        };
        let mut request = endpoint.ws_url().into_client_request().map_err(ConnectError::Ws)?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ConnectError::InvalidToken)?;
        request.headers_mut().insert(header::AUTHORIZATION, auth);
        match async_tungstenite::client_async_with_config(request, transport, Some(ws_config())).await {
            Ok((socket, _response)) => Ok(socket),
            Err(tungstenite::Error::Http(resp)) if resp.status() == StatusCode::UNAUTHORIZED => {
                Err(ConnectError::Unauthorized)
            }
            Err(tungstenite::Error::Http(resp)) => Err(ConnectError::Http(resp.status().as_u16())),
            Err(e) => Err(ConnectError::Ws(e)),
        }
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
pub enum Ended {
    /// The server closed it (close frame or EOF).
    #[error("closed by the server")]
    Closed,
    /// Nothing arrived within the read deadline.
    #[error("no message or pong within {}s", READ_DEADLINE.as_secs())]
    ReadTimeout,
    /// A write did not finish within [`WRITE_WAIT`].
    #[error("write not done within {}s", WRITE_WAIT.as_secs())]
    WriteTimeout,
    /// Transport or protocol error.
    #[error("{0}")]
    Error(tungstenite::Error),
}

/// Reader half: yields message payloads, refreshing the read deadline on every arrival.
pub struct Reader {
    inner: WebSocketReceiver<Transport>,
}

impl Reader {
    /// The next data message (binary or text payload). Pings and pongs only refresh the
    /// deadline (tungstenite queues the pong answer itself).
    pub async fn next(&mut self) -> Result<Vec<u8>, Ended> {
        loop {
            let item = async { Some(self.inner.next().await) }
                .or(async {
                    Timer::after(READ_DEADLINE).await;
                    None
                })
                .await;
            let Some(item) = item else {
                return Err(Ended::ReadTimeout);
            };
            match item {
                None => return Err(Ended::Closed),
                Some(Ok(Message::Binary(b))) => return Ok(b.into()),
                Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
                Some(Ok(Message::Close(_))) => return Err(Ended::Closed),
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
pub struct Writer {
    inner: WebSocketSender<Transport>,
    last_ping: Instant,
}

impl Writer {
    async fn send(&mut self, msg: Message) -> Result<(), Ended> {
        let inner = &mut self.inner;
        async { inner.send(msg).await.map_err(Ended::Error) }
            .or(async {
                Timer::after(WRITE_WAIT).await;
                Err(Ended::WriteTimeout)
            })
            .await
    }

    /// Pumps the queues into the socket until a write fails, `replies` before `data`; pings
    /// every [`PING_PERIOD`]. Returns `Ok` when a queue is closed (shutdown).
    pub async fn pump(
        &mut self,
        replies: &async_channel::Receiver<Vec<u8>>,
        data: &async_channel::Receiver<Vec<u8>>,
    ) -> Result<(), Ended> {
        loop {
            let until_ping = PING_PERIOD.saturating_sub(self.last_ping.elapsed());
            // `or` polls left first: replies win over bulk shell output.
            let next = async { Some(replies.recv().await) }
                .or(async { Some(data.recv().await) })
                .or(async {
                    Timer::after(until_ping).await;
                    None
                })
                .await;
            match next {
                Some(Ok(frame)) => self.send(Message::binary(frame)).await?,
                Some(Err(_)) => return Ok(()),
                None => {
                    self.last_ping = Instant::now();
                    // Payload as the reference: the read deadline in seconds.
                    self.send(Message::Ping(READ_DEADLINE.as_secs().to_string().into_bytes().into())).await?;
                }
            }
        }
    }

    /// Sends a close frame (best effort, bounded by [`WRITE_WAIT`]).
    pub async fn close(&mut self) {
        let _ = self.send(Message::Close(None)).await;
    }
}

/// Splits an open socket into its reader and writer halves.
pub fn split(socket: Socket) -> (Reader, Writer) {
    let (tx, rx) = socket.split();
    (Reader { inner: rx }, Writer { inner: tx, last_ping: Instant::now() })
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
}
