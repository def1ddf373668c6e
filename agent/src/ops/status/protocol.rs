//! The local control protocol spoken on the daemon's Unix socket.
//!
//! Every message is one frame: a 4-byte big-endian payload length, then the payload. A payload
//! is the postcard encoding of the sender's [`PROTOCOL_VERSION`] (a `u16`) followed by the
//! postcard encoding of a [`Request`] or [`Response`]. The version comes first and alone so a
//! peer of another version can always read it and say "daemon too old/new" instead of
//! misreading the rest (postcard is not self-describing).
//!
//! Sizes are bounded both ways: requests to [`MAX_REQUEST`], responses to [`MAX_RESPONSE`].
//! A client may send several requests on one connection; each gets exactly one response.
//!
//! The same types serialize to the `--json` output of `mender-connect status` (field names in
//! snake_case are part of the stable interface; new fields may be added, none renamed).

use serde::{Deserialize, Serialize};

/// Version of this protocol; bumped on any incompatible change of the types below.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest request payload the daemon reads.
pub const MAX_REQUEST: usize = 4096;
/// Largest response payload either side handles (16 shells, a few hundred control sessions).
pub const MAX_RESPONSE: usize = 1 << 20;
/// Longest session id accepted in a kill request (server ids are 36-character UUIDs).
pub const MAX_ID_LEN: usize = 256;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// A snapshot of the daemon's state.
    Status,
    /// End one session (shell or control session) by id.
    KillSession {
        /// Session id as shown by `status`.
        id: String,
    },
}

/// The daemon's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<Status>),
    /// The session was ended.
    Killed {
        /// Its id.
        id: String,
        /// What it was.
        kind: SessionKind,
    },
    /// The request was not carried out.
    Error {
        /// Why, for programs.
        kind: ErrorKind,
        /// Why, for people.
        message: String,
    },
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request's protocol version is not the daemon's.
    UnsupportedVersion,
    /// The request did not decode.
    Malformed,
    /// The request is larger than [`MAX_REQUEST`].
    TooLarge,
    /// No session has that id.
    NoSuchSession,
    /// Too many clients at once; try again.
    Busy,
    /// The daemon could not answer (shutting down).
    Unavailable,
    /// The peer's user may not use the socket.
    Forbidden,
}

/// A snapshot of the daemon, taken when asked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `mender-connect` package version of the daemon.
    pub daemon_version: String,
    /// Process id of the daemon.
    pub pid: u32,
    /// When the daemon started (Unix seconds).
    pub started_at: u64,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The websocket to the server.
    pub connection: Connection,
    /// Open sessions: shells and control sessions (file transfer, port forward, mender-client).
    pub sessions: Vec<Session>,
    /// Open port-forward connections.
    pub port_forwards: Vec<PortForward>,
    /// File transfers in progress.
    pub transfers: Vec<Transfer>,
    /// Entries left out of the three lists above because there were too many.
    pub omitted: u32,
    /// Limits and the counters they are checked against.
    pub limits: Limits,
}

/// State of the link to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// No usable token from the auth service (not authorized yet, or de-authorized).
    NoCredentials,
    /// Dialling the server.
    Connecting,
    /// The websocket is up.
    Connected,
    /// Waiting before the next attempt after a failure.
    WaitingToReconnect,
}

/// The websocket to the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Current state.
    pub state: LinkState,
    /// When the link came up, went down or lost its credentials, whichever was last (Unix
    /// seconds); `connecting` and `waiting_to_reconnect` alternate within one "down" period.
    pub since: u64,
    /// Seconds since `since`.
    pub for_secs: u64,
    /// Server URL from the auth service ("" before the first token).
    pub server_url: String,
    /// The last connection error, if any.
    pub last_error: Option<LastError>,
    /// Failed attempts since the last successful connection.
    pub reconnect_attempts: u32,
    /// Successful connections since the daemon started.
    pub connects: u64,
}

/// An error with its time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// The error text (as logged).
    pub message: String,
    /// When it happened (Unix seconds).
    pub at: u64,
}

/// What a session does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// Remote terminal (proto 1).
    Shell,
    /// File transfer (proto 2).
    Filetransfer,
    /// Port forward (proto 3).
    Portforward,
    /// Mender-client triggers (proto 4).
    Menderclient,
    /// A control session that has not used any protocol yet.
    Control,
}

impl SessionKind {
    /// The name used in the text output and the JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Filetransfer => "filetransfer",
            Self::Portforward => "portforward",
            Self::Menderclient => "menderclient",
            Self::Control => "control",
        }
    }
}

/// One session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Session id given by the server.
    pub id: String,
    /// The Mender user (server `user_id`), "" when the server did not say.
    pub user: String,
    /// What it does.
    pub kind: SessionKind,
    /// When it started (Unix seconds).
    pub started_at: u64,
    /// Seconds since it started.
    pub age_secs: u64,
    /// Seconds since the last message from the server for it.
    pub idle_secs: u64,
    /// Payload bytes received from the server for it (keystrokes, uploads, forwarded data).
    pub bytes_in: u64,
    /// Payload bytes sent to the server for it (shell output, replies).
    pub bytes_out: u64,
    /// Shell process id (shells only).
    pub pid: Option<u32>,
}

/// One port-forward connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Session it belongs to.
    pub session_id: String,
    /// Connection id within the session.
    pub connection_id: String,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Target host on the device side.
    pub remote_host: String,
    /// Target port.
    pub remote_port: u16,
}

/// Direction of a file transfer, seen from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Device → server (`get_file`).
    Download,
    /// Server → device (`put_file`).
    Upload,
}

/// One file transfer in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Session it belongs to.
    pub session_id: String,
    /// Which way.
    pub direction: Direction,
    /// The path as requested.
    pub path: String,
    /// Bytes moved so far.
    pub bytes: u64,
}

/// Limits and counters (`Limits` in the configuration; shell limits are always on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// `Limits.Enabled`.
    pub enabled: bool,
    /// Shells running.
    pub shells: u32,
    /// Most shells at once (the reference's 16).
    pub max_shells: u32,
    /// `Sessions.MaxPerUser`.
    pub max_shells_per_user: u32,
    /// The device-wide file-transfer counters; `None` when file transfer is disabled.
    pub file_transfer: Option<RateCounters>,
}

/// The file-transfer byte counters (reference `filetransfer.GetCounters`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateCounters {
    /// Bytes sent to the server since start.
    pub tx_bytes: u64,
    /// Bytes received from the server since start.
    pub rx_bytes: u64,
    /// The moving average the Tx limit is checked against (reference: bytes per 5 s tick
    /// averaged with a one-minute time constant; its SIGUSR1 "1m" value).
    pub tx_avg_1m: f64,
    /// The same for received bytes.
    pub rx_avg_1m: f64,
    /// `Counters.MaxBytesTxPerMinute` (0 or absent: unlimited).
    pub max_tx_per_minute: Option<u64>,
    /// `Counters.MaxBytesRxPerMinute`.
    pub max_rx_per_minute: Option<u64>,
}

/// Why a frame could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The socket failed or closed mid-frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The announced length exceeds the bound.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The payload is empty or its version does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("protocol version {0}")]
    Version(u16),
}

/// Encodes a frame: length prefix, version, `body`.
pub fn encode_frame<T: Serialize>(body: &T) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_stdvec(&PROTOCOL_VERSION)?;
    let payload = postcard::to_extend(body, payload)?;
    let len = u32::try_from(payload.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Splits a payload into its version and the rest.
pub fn split_version(payload: &[u8]) -> Result<(u16, &[u8]), FrameError> {
    postcard::take_from_bytes::<u16>(payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Decodes a payload of this protocol version.
pub fn decode_payload<'de, T: Deserialize<'de>>(payload: &'de [u8]) -> Result<T, FrameError> {
    let (version, rest) = split_version(payload)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    postcard::from_bytes(rest).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one frame's payload (at most `max` bytes).
pub async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    use futures_lite::AsyncReadExt;
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(payload)
}

/// Reads one frame's payload from a blocking reader (the CLI side).
pub fn read_frame_blocking<R: std::io::Read>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_first() {
        let req = Request::KillSession { id: "abc".into() };
        let frame = encode_frame(&req).unwrap();
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let payload = &frame[4..];
        assert_eq!(split_version(payload).unwrap().0, PROTOCOL_VERSION);
        assert_eq!(decode_payload::<Request>(payload).unwrap(), req);
    }

    #[test]
    fn other_versions_and_garbage_are_errors() {
        let payload = postcard::to_stdvec(&(PROTOCOL_VERSION + 1)).unwrap();
        let payload = postcard::to_extend(&Request::Status, payload).unwrap();
        assert!(
            matches!(decode_payload::<Request>(&payload), Err(FrameError::Version(v)) if v == PROTOCOL_VERSION + 1)
        );
        assert!(matches!(decode_payload::<Request>(&[]), Err(FrameError::Malformed(_))));
        let mut bad = postcard::to_stdvec(&PROTOCOL_VERSION).unwrap();
        bad.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(decode_payload::<Request>(&bad), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let mut data: &[u8] = &[0, 0, 0x10, 0x01, 1, 2, 3];
        assert!(matches!(
            read_frame_blocking(&mut data, MAX_REQUEST),
            Err(FrameError::TooLarge { len: 4097, .. })
        ));
    }
}
