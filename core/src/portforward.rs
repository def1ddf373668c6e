//! Port forwarding protocol (`proto` 3).
//!
//! Sources: go-lib-micro `ws/portforward/model.go` as vendored in mender-connect 2.1.0 and
//! mender-connect 2.1.0 `session/portforward.go`.
//!
//! Every message carries props `{"connection_id": str}` (chosen by the user side).
//! - `new` body `{"remote_host": str, "remote_port": uint16, "protocol": "tcp"|"udp"}` → the
//!   device dials and answers `new` with only `connection_id`.
//! - `forward` body = data, either way; the receiver answers `ack` (same `connection_id`).
//!   The device sends its next `forward` only after the previous one was acked (one in flight),
//!   in reads of up to 4096 bytes.
//! - `stop` either way; the device answers a user's `stop` with `stop`.
//! - `error` body `{"err": str, "msgtype"?: str}`, props absent (the reference does not copy
//!   them). Missing fields in `new` give "invalid port-forward message: missing connection_id,
//!   remote_port or protocol".

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, FrameOut, Prop, Proto};
use crate::msgpack::{Writer, int_u16, opt_int, opt_str, read_struct};

/// `new`: body [`PortForwardNew`].
pub const NEW: &str = "new";
/// `stop`
pub const STOP: &str = "stop";
/// `forward`: body = data.
pub const FORWARD: &str = "forward";
/// `ack`: acknowledges one `forward`.
pub const ACK: &str = "ack";
/// `error`: body [`PfError`].
pub const ERROR: &str = "error";

/// Property `connection_id`.
pub const PROP_CONNECTION_ID: &str = "connection_id";

/// Largest read the reference forwards per `forward` message.
pub const BUFFER_SIZE: usize = 4096;
/// Idle time after which the reference closes a forwarded connection (600 s).
pub const CONNECTION_TIMEOUT_MS: u64 = 600_000;

/// Transport of a forwarded connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// `tcp`
    Tcp,
    /// `udp`
    Udp,
}

impl Protocol {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// From a wire name (exact, lower case, as Go compares).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Self::Tcp),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

/// Body of `new` (Go `PortForwardNew`; all fields pointers without omitempty).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortForwardNew<'a> {
    /// `remote_host`
    pub remote_host: Option<&'a str>,
    /// `remote_port` (Go `*uint16`, `0xcd`).
    pub remote_port: Option<u16>,
    /// `protocol` as sent; see [`PortForwardNew::protocol_kind`].
    pub protocol: Option<&'a str>,
}

impl<'a> PortForwardNew<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"remote_host" => out.remote_host = opt_str(v)?,
                b"remote_port" => out.remote_port = opt_int(v, int_u16)?,
                b"protocol" => out.protocol = opt_str(v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The protocol, if it is `tcp` or `udp`.
    pub fn protocol_kind(&self) -> Option<Protocol> {
        self.protocol.and_then(Protocol::parse)
    }

    /// The request as the reference validates it: non-empty host and protocol, non-zero port.
    pub fn target(&self) -> Option<(&'a str, u16, &'a str)> {
        match (self.remote_host, self.remote_port, self.protocol) {
            (Some(h), Some(p), Some(proto)) if !h.is_empty() && p != 0 && !proto.is_empty() => {
                Some((h, p, proto))
            }
            _ => None,
        }
    }

    /// Encodes in Go's field order; `None` fields are written as nil like Go's nil pointers.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(3)?;
        w.str("remote_host")?;
        match self.remote_host {
            Some(h) => w.str(h)?,
            None => w.nil()?,
        }
        w.str("remote_port")?;
        match self.remote_port {
            Some(p) => w.uint16(p)?,
            None => w.nil()?,
        }
        w.str("protocol")?;
        match self.protocol {
            Some(p) => w.str(p)?,
            None => w.nil()?,
        }
        Ok(w.len())
    }
}

/// Body of port-forward `error` (Go `portforward.Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PfError<'a> {
    /// `err` (nil if `None`).
    pub err: Option<&'a str>,
    /// `msgtype`
    pub msgtype: Option<&'a str>,
}

impl<'a> PfError<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"err" => out.err = opt_str(v)?,
                b"msgtype" => out.msgtype = opt_str(v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes in Go's field order: err, msgtype?.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(1 + u32::from(self.msgtype.is_some()))?;
        w.str("err")?;
        match self.err {
            Some(e) => w.str(e)?,
            None => w.nil()?,
        }
        if let Some(t) = self.msgtype {
            w.str("msgtype")?;
            w.str(t)?;
        }
        Ok(w.len())
    }
}

/// A decoded port-forward message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortForwardMessage<'a> {
    /// `new`
    New {
        /// `props.connection_id` (empty if missing).
        connection_id: &'a str,
        /// Body.
        request: PortForwardNew<'a>,
    },
    /// `forward`
    Forward {
        /// `props.connection_id`
        connection_id: &'a str,
        /// Body.
        data: &'a [u8],
    },
    /// `ack`
    Ack {
        /// `props.connection_id`
        connection_id: &'a str,
    },
    /// `stop`
    Stop {
        /// `props.connection_id`
        connection_id: &'a str,
    },
    /// `error`
    Error(PfError<'a>),
    /// Any other type (the reference answers an `error` "unknown message type").
    Unknown(&'a str),
}

impl<'a> PortForwardMessage<'a> {
    /// Interprets a frame with `proto` 3; other protos give `InvalidValue("proto")`.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        if frame.header.proto != Proto::PORT_FORWARD {
            return Err(DecodeError::InvalidValue("proto"));
        }
        let connection_id = frame.header.props.get_str(PROP_CONNECTION_ID).unwrap_or("");
        Ok(match frame.header.typ {
            NEW => Self::New { connection_id, request: PortForwardNew::decode(frame.body)? },
            FORWARD => Self::Forward { connection_id, data: frame.body },
            ACK => Self::Ack { connection_id },
            STOP => Self::Stop { connection_id },
            ERROR => Self::Error(PfError::decode(frame.body)?),
            other => Self::Unknown(other),
        })
    }
}

/// Encodes a port-forward frame with props `{"connection_id": id}`: `new`/`stop` answers,
/// `ack`, `stop`, and `forward` with data.
pub fn encode(
    buf: &mut [u8],
    typ: &str,
    sid: &str,
    connection_id: &str,
    data: &[u8],
) -> Result<usize, EncodeError> {
    let props = [Prop::str(PROP_CONNECTION_ID, connection_id)];
    FrameOut { proto: Proto::PORT_FORWARD, typ, sid, props: &props, body: data, ..FrameOut::EMPTY }
        .encode(buf)
}

/// Encodes the reference's error answer: `error` with only `sid` (no props), body
/// `{"err": text, "msgtype": failed_typ}`.
pub fn encode_error(buf: &mut [u8], sid: &str, failed_typ: &str, text: &str) -> Result<usize, EncodeError> {
    let body = PfError { err: Some(text), msgtype: Some(failed_typ) };
    FrameOut { proto: Proto::PORT_FORWARD, typ: ERROR, sid, ..FrameOut::EMPTY }
        .encode_with(buf, |b| body.encode(b))
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;

#[cfg(test)]
mod tests;
