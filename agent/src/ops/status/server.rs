//! The daemon side of the control socket: a listener task and one task per client. Requests
//! reach the daemon's event loop as `Ask`s on a channel; the event loop answers each with one
//! [`Response`], so the state is only looked at when a client asks.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::{AsyncWriteExt, FutureExt};
use smol::net::unix::{UnixListener, UnixStream};
use smol::{Task, Timer};

use super::protocol::{
    self, ErrorKind, FrameError, MAX_ID_LEN, MAX_REQUEST, PROTOCOL_VERSION, Request, Response,
};

/// Clients served at once; more get a `busy` error.
pub const MAX_CLIENTS: usize = 8;
/// A client that sends nothing for this long is disconnected.
const IDLE: Duration = Duration::from_secs(30);
/// Time the event loop gets to answer, and a client to take the answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Mode of the socket: owner (root) only.
const SOCKET_MODE: u32 = 0o600;
/// Mode of directories created for the socket.
const DIR_MODE: u32 = 0o700;

/// What a client asked, for the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A status snapshot.
    Status,
    /// End a session.
    Kill(String),
}

/// One request waiting for the event loop's answer.
#[derive(Debug)]
pub(crate) struct Ask {
    /// The request.
    pub(crate) query: Query,
    /// Where the answer goes.
    pub(crate) reply: async_channel::Sender<Response>,
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ServerError {
    /// Another process answers on the path.
    #[error("control socket {0}: another mender-connect daemon is listening there")]
    InUse(PathBuf),
    /// The path exists and is not a socket; it is left alone.
    #[error("control socket {0}: the path exists and is not a socket")]
    NotASocket(PathBuf),
    /// Creating the directory or socket failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The listening control socket; the file is removed when this is dropped.
pub(crate) struct Server {
    path: PathBuf,
    /// Device and inode of the socket we created, so a successor's socket is never removed.
    identity: (u64, u64),
    _accept: Task<()>,
}

impl Server {
    /// Binds `path` (creating missing directories with mode 0700, the socket with 0600) and
    /// starts accepting. Returns the server and the channel of requests for the event loop.
    pub(crate) fn start(path: &Path) -> Result<(Self, async_channel::Receiver<Ask>), ServerError> {
        let io = |source| ServerError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(io)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ServerError::InUse(path.to_owned()));
                }
                // Left over from a daemon that did not shut down cleanly.
                std::fs::remove_file(path).map_err(io)?;
            }
            Ok(_) => return Err(ServerError::NotASocket(path.to_owned())),
            Err(_) => {}
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(io)?;
        let meta = std::fs::symlink_metadata(path).map_err(io)?;
        let (tx, rx) = async_channel::bounded(MAX_CLIENTS);
        let accept = crate::os::runtime::spawn(accept_loop(listener, tx));
        log::info!("control socket listening on {}", path.display());
        Ok((Self { path: path.to_owned(), identity: (meta.dev(), meta.ino()), _accept: accept }, rx))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Counts a client slot; released on drop.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop(listener: UnixListener, asks: async_channel::Sender<Ask>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("control socket: accept failed: {e}");
                Timer::after(Duration::from_millis(200)).await;
                continue;
            }
        };
        let n = active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(Arc::clone(&active));
        if n >= MAX_CLIENTS {
            crate::os::runtime::spawn(async move {
                let mut s = stream;
                let _ =
                    write_response(&mut s, &error(ErrorKind::Busy, "too many control clients; try again"))
                        .await;
                drop(slot);
            })
            .detach();
            continue;
        }
        crate::os::runtime::spawn(serve_client(stream, asks.clone(), slot)).detach();
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error { kind, message: message.into() }
}

/// Why a peer may not use the socket; `Display` is the answer it gets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum PeerError {
    #[error("user {0} may not use the control socket (root only)")]
    NotAllowed(u32),
    #[error("cannot identify the peer: {0}")]
    Unknown(rustix::io::Errno),
}

/// Only root and the daemon's own user may use the socket, whatever its mode was changed to.
fn peer_allowed(stream: &UnixStream) -> Result<(), PeerError> {
    let uid = rustix::net::sockopt::socket_peercred(stream).map_err(PeerError::Unknown)?.uid.as_raw();
    if uid == 0 || uid == rustix::process::geteuid().as_raw() {
        Ok(())
    } else {
        Err(PeerError::NotAllowed(uid))
    }
}

async fn write_response(s: &mut UnixStream, response: &Response) -> std::io::Result<()> {
    let mut frame = protocol::encode_frame(response).map_err(std::io::Error::other)?;
    if frame.len() > 4 + protocol::MAX_RESPONSE {
        let e = error(
            ErrorKind::Unavailable,
            format!("the answer ({} bytes) exceeds the protocol limit", frame.len()),
        );
        frame = protocol::encode_frame(&e).map_err(std::io::Error::other)?;
    }
    async {
        s.write_all(&frame).await?;
        s.flush().await
    }
    .or(async {
        Timer::after(ANSWER_WAIT).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}

async fn serve_client(mut s: UnixStream, asks: async_channel::Sender<Ask>, _slot: Slot) {
    if let Err(why) = peer_allowed(&s) {
        log::warn!("control socket: {why}");
        let _ = write_response(&mut s, &error(ErrorKind::Forbidden, why.to_string())).await;
        return;
    }
    loop {
        let read = async { Some(protocol::read_frame(&mut s, MAX_REQUEST).await) }
            .or(async {
                Timer::after(IDLE).await;
                None
            })
            .await;
        let response = match read {
            None | Some(Err(FrameError::Io(_))) => return,
            Some(Err(e @ FrameError::TooLarge { .. })) => {
                // The rest of the stream cannot be trusted to be framed: answer, then hang up.
                let _ = write_response(&mut s, &error(ErrorKind::TooLarge, e.to_string())).await;
                return;
            }
            Some(Err(e)) => error(ErrorKind::Malformed, e.to_string()),
            Some(Ok(payload)) => answer(&payload, &asks).await,
        };
        if write_response(&mut s, &response).await.is_err() {
            return;
        }
    }
}

async fn answer(payload: &[u8], asks: &async_channel::Sender<Ask>) -> Response {
    let query = match protocol::decode_payload::<Request>(payload) {
        Ok(Request::Status) => Query::Status,
        Ok(Request::KillSession { id }) if id.is_empty() || id.len() > MAX_ID_LEN => {
            return error(ErrorKind::Malformed, format!("session id must be 1 to {MAX_ID_LEN} bytes"));
        }
        Ok(Request::KillSession { id }) => Query::Kill(id),
        Err(FrameError::Version(v)) => {
            return error(
                ErrorKind::UnsupportedVersion,
                format!(
                    "the daemon speaks control protocol version {PROTOCOL_VERSION}, the request has version {v}"
                ),
            );
        }
        Err(e) => return error(ErrorKind::Malformed, e.to_string()),
    };
    let (tx, rx) = async_channel::bounded(1);
    let unavailable = || error(ErrorKind::Unavailable, "the daemon is shutting down");
    if asks.send(Ask { query, reply: tx }).await.is_err() {
        return unavailable();
    }
    async { rx.recv().await.unwrap_or_else(|_| unavailable()) }
        .or(async {
            Timer::after(ANSWER_WAIT).await;
            error(ErrorKind::Unavailable, "the daemon did not answer in time")
        })
        .await
}
