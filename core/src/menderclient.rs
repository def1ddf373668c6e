//! Mender-client protocol (`proto` 4): the server asks the device to run
//! `mender check-update` or `mender send-inventory`.
//!
//! Sources: go-lib-micro `ws/menderclient/model.go`, mender-connect 2.1.0
//! `session/menderclient.go`. The server sends `{"hdr":{"proto":4,"typ":"check-update",
//! "props":{"user_id":...}}}` without `sid` or body. The device answers with the same
//! proto/typ/sid and props `{"status": 1}` (Go `int`, written compactly: `0x01`), or `{"status": 2}` and the error
//! text as body; an unknown type gets status 2 and body `unknown message type`.

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, FrameOut, Prop, Proto};

/// `check-update`
pub const CHECK_UPDATE: &str = "check-update";
/// `send-inventory`
pub const SEND_INVENTORY: &str = "send-inventory";
/// Property `status` (1 normal, 2 error).
pub const PROP_STATUS: &str = "status";
/// Body the reference sends for an unknown type.
pub const UNKNOWN_TYPE_ERROR: &str = "unknown message type";

/// What the server asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MenderClientMessage<'a> {
    /// `check-update`
    CheckUpdate,
    /// `send-inventory`
    SendInventory,
    /// Anything else.
    Unknown(&'a str),
}

impl<'a> MenderClientMessage<'a> {
    /// Interprets a frame with `proto` 4; other protos give `InvalidValue("proto")`.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        if frame.header.proto != Proto::MENDER_CLIENT {
            return Err(DecodeError::InvalidValue("proto"));
        }
        Ok(match frame.header.typ {
            CHECK_UPDATE => Self::CheckUpdate,
            SEND_INVENTORY => Self::SendInventory,
            other => Self::Unknown(other),
        })
    }

    /// The `mender` sub-command to run, if known.
    pub const fn command(&self) -> Option<&'static str> {
        match self {
            Self::CheckUpdate => Some(CHECK_UPDATE),
            Self::SendInventory => Some(SEND_INVENTORY),
            Self::Unknown(_) => None,
        }
    }
}

/// Encodes the device's answer to `request`: same proto/typ/sid, props `{"status": 1}` when
/// `error` is `None`, else `{"status": 2}` with the error text as body.
pub fn encode_reply(buf: &mut [u8], request: &Frame<'_>, error: Option<&str>) -> Result<usize, EncodeError> {
    let status = if error.is_some() { 2 } else { 1 };
    let props = [Prop::go_int(PROP_STATUS, status)];
    FrameOut {
        proto: request.header.proto,
        typ: request.header.typ,
        sid: request.header.sid,
        props: &props,
        body: error.unwrap_or("").as_bytes(),
        ..FrameOut::EMPTY
    }
    .encode(buf)
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;
