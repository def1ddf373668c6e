//! Remote terminal protocol (`proto` 1).
//!
//! Sources: go-lib-micro `ws/shell/model.go`, mender-connect 2.1.0 `app/daemon_shell.go`,
//! `app/daemon.go`, `shell/exec.go`, `session/shell.go`.
//!
//! Who sends what:
//! - user → device: `new` (props `user_id`, optional `terminal_width`/`terminal_height`),
//!   `shell` (body = keystrokes), `resize` (width/height), `stop`, `pong` (health-check answer).
//! - device → user: replies to `new`/`stop` with the same `typ`/`sid` and props
//!   `{"status": 1}` (body `Shell started` for `new`) or `{"status": 2}` with the error text as
//!   body; `shell` output with `{"status": 1}`; `stop` `{"status": 2}` when the shell ends;
//!   `ping` with props `{"timeout": 65, "status": 3}` every 60 s (answer: `pong`).
//!
//! `status` and `timeout` are Go `int`s, which vmihailenco/msgpack v5.3.5 (mender-connect
//! 2.1.0) writes in the smallest form: `status` 1 is the single byte `0x01`. mender-cli 1.9.0
//! (msgpack v4) only acts on `status`/`timeout` when they decode as `int64` (`0xd3`), so with the
//! reference agent it never sees an error status on `new` nor a ping timeout; this crate writes
//! the same bytes as the reference. Terminal sizes are read with any integer width
//! (mender-connect uses `utils.Num64`; mender-cli sends Go `int`s, i.e. compact).

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, FrameOut, Prop, Proto};

/// `new`: start a shell.
pub const NEW: &str = "new";
/// `stop`: stop the shell.
pub const STOP: &str = "stop";
/// `shell`: terminal data (input from the user, output from the device).
pub const SHELL: &str = "shell";
/// `resize`: new terminal size.
pub const RESIZE: &str = "resize";
/// `ping`: health check from the device.
pub const PING: &str = "ping";
/// `pong`: answer to `ping`.
pub const PONG: &str = "pong";

/// Property `status` ([`Status`]).
pub const PROP_STATUS: &str = "status";
/// Property `terminal_width`.
pub const PROP_TERMINAL_WIDTH: &str = "terminal_width";
/// Property `terminal_height`.
pub const PROP_TERMINAL_HEIGHT: &str = "terminal_height";
/// Property `timeout` (seconds, on `ping`).
pub const PROP_TIMEOUT: &str = "timeout";
/// Property `user_id` (set by the server on every user→device message).
pub const PROP_USER_ID: &str = "user_id";

/// Health-check ping period of the reference (`healthcheckInterval`).
pub const HEALTHCHECK_INTERVAL_SECS: u64 = 60;
/// Grace after the period (`healthcheckTimeout`); `timeout` = 60 + 5.
pub const HEALTHCHECK_TIMEOUT_SECS: u64 = 5;

/// Shell message status (Go `MenderShellMessageStatus`, an `int`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// 1
    Normal,
    /// 2
    Error,
    /// 3
    Control,
}

impl Status {
    /// Wire value.
    pub const fn code(self) -> i64 {
        match self {
            Self::Normal => 1,
            Self::Error => 2,
            Self::Control => 3,
        }
    }

    /// From a wire value.
    pub const fn from_code(v: i64) -> Option<Self> {
        match v {
            1 => Some(Self::Normal),
            2 => Some(Self::Error),
            3 => Some(Self::Control),
            _ => None,
        }
    }
}

/// Terminal size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TermSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// Reads `terminal_width`/`terminal_height` as mender-connect does: both must be present and
/// positive integers (any width); values are truncated to `uint16` like Go's `uint16(v)` and a
/// size with a zero side counts as absent.
pub fn terminal_size(frame: &Frame<'_>) -> Option<TermSize> {
    let p = &frame.header.props;
    let h = p.get_i64(PROP_TERMINAL_HEIGHT)?;
    let w = p.get_i64(PROP_TERMINAL_WIDTH)?;
    let h = if h > 0 { h as u16 } else { 0 };
    let w = if w > 0 { w as u16 } else { 0 };
    (h > 0 && w > 0).then_some(TermSize { width: w, height: h })
}

/// A decoded shell-protocol message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShellMessage<'a> {
    /// `new`
    New {
        /// `props.user_id` (empty if absent or not a string, as in the reference).
        user_id: &'a str,
        /// Requested size, if both sides were given.
        size: Option<TermSize>,
    },
    /// `stop`. With an empty `sid`, the reference stops all shells of `user_id`.
    Stop {
        /// `props.user_id`
        user_id: &'a str,
    },
    /// `shell`: bytes for the terminal.
    Data(&'a [u8]),
    /// `resize`
    Resize(Option<TermSize>),
    /// `ping`: from the device; the timeout in seconds if given as an integer.
    Ping {
        /// `props.timeout`
        timeout: Option<i64>,
    },
    /// `pong`
    Pong,
    /// Any other type (the reference answers with the same proto/typ, `status` 2 and body
    /// `unknown message protocol and type: 1/<typ>`).
    Unknown(&'a str),
}

impl<'a> ShellMessage<'a> {
    /// Interprets a frame with `proto` 1; other protos give `InvalidValue("proto")`.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        if frame.header.proto != Proto::SHELL {
            return Err(DecodeError::InvalidValue("proto"));
        }
        let user_id = frame.header.props.get_str(PROP_USER_ID).unwrap_or("");
        Ok(match frame.header.typ {
            NEW => Self::New { user_id, size: terminal_size(frame) },
            STOP => Self::Stop { user_id },
            SHELL => Self::Data(frame.body),
            RESIZE => Self::Resize(terminal_size(frame)),
            PING => Self::Ping { timeout: frame.header.props.get_i64(PROP_TIMEOUT) },
            PONG => Self::Pong,
            other => Self::Unknown(other),
        })
    }
}

/// The `status` of a received shell frame (any integer width) if it is a known value. Use
/// `frame.header.props.get_int(PROP_STATUS)` and [`crate::msgpack::Int::as_go_int64`] to apply
/// mender-cli's stricter `int64`-only check.
pub fn status(frame: &Frame<'_>) -> Option<Status> {
    frame.header.props.get_i64(PROP_STATUS).and_then(Status::from_code)
}

/// Encodes a shell frame with props `{"status": <status>}` (Go `int`, compact) and `body`
/// (omitted if empty): the shape of every reply and output message the reference agent sends.
pub fn encode_with_status(
    buf: &mut [u8],
    typ: &str,
    sid: &str,
    status: Status,
    body: &[u8],
) -> Result<usize, EncodeError> {
    let props = [Prop::go_int(PROP_STATUS, status.code())];
    FrameOut { proto: Proto::SHELL, typ, sid, props: &props, body, ..FrameOut::EMPTY }.encode(buf)
}

/// Encodes the device's health-check `ping`: props `timeout` (seconds) and `status` 3.
pub fn encode_ping(buf: &mut [u8], sid: &str, timeout_secs: i64) -> Result<usize, EncodeError> {
    let props = [Prop::go_int(PROP_TIMEOUT, timeout_secs), Prop::go_int(PROP_STATUS, Status::Control.code())];
    FrameOut { proto: Proto::SHELL, typ: PING, sid, props: &props, ..FrameOut::EMPTY }.encode(buf)
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;
