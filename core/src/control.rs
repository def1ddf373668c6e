//! Session control protocol (`proto` 0xFFFF): ping, pong, open, accept, close, error.
//!
//! Sources: go-lib-micro `ws/protomsg.go` (`Open`, `Accept`, `Error`) and mender-connect 2.1.0
//! `session/session.go` (`HandleControl`). The server (file transfer) sends `open`
//! `{"versions":[1]}`; the agent answers `accept` `{"version":1,"protocols":[...]}` or an
//! `error` with `close: true` ("handshake rejected: require version 1"). `ping` is answered with
//! a `pong` carrying the same `sid` and no props; `close` ends the session.
//!
//! Go field types decide the wire widths (vmihailenco/msgpack v5.3.5): `Open.Versions []int`,
//! `Accept.Version int` and `Error.Code int` are plain `int`s, written in the smallest form
//! (version 1 is `0x01`); `Accept.Protocols []ProtoType` and `Error.MessageProto` are `uint16`,
//! always `0xcd`.

use heapless::Vec;

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, FrameOut, Proto};
use crate::msgpack::{Int, Value, Writer, int_u16, opt_int, opt_str, read_struct};

/// `ping`: the receiver must answer `pong`.
pub const PING: &str = "ping";
/// `pong`
pub const PONG: &str = "pong";
/// `open`: handshake request, body [`Open`].
pub const OPEN: &str = "open";
/// `accept`: handshake answer, body [`Accept`].
pub const ACCEPT: &str = "accept";
/// `close`: the session ends.
pub const CLOSE: &str = "close";
/// `error`: body [`ControlError`]; `close: true` also ends the session.
pub const ERROR: &str = "error";

/// The only protocol version (go-lib-micro `ws.ProtocolVersion`).
pub const PROTOCOL_VERSION: i64 = 1;

/// Capacity of the version and protocol lists (the reference has at most 5 protocols).
pub const MAX_LIST: usize = 16;

fn decode_list<T, const N: usize>(
    v: Value<'_>,
    mut conv: impl FnMut(Int) -> Option<T>,
) -> Result<Vec<T, N>, DecodeError> {
    let mut out = Vec::new();
    match v {
        Value::Nil => {}
        Value::Array(a) => {
            for item in a.iter() {
                let i = item.as_int().ok_or(DecodeError::UnexpectedType)?;
                let x = conv(i).ok_or(DecodeError::IntOutOfRange)?;
                out.push(x).map_err(|_| DecodeError::CapacityExceeded)?;
            }
        }
        _ => return Err(DecodeError::UnexpectedType),
    }
    Ok(out)
}

fn list_len(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| EncodeError::ValueOutOfRange)
}

/// Body of `open`: `{"versions": [int...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Open {
    versions: Vec<i64, MAX_LIST>,
}

impl Open {
    /// An `open` offering `versions`; `None` if more than [`MAX_LIST`].
    pub fn new(versions: &[i64]) -> Option<Self> {
        Some(Self { versions: Vec::from_slice(versions).ok()? })
    }

    /// Offered versions.
    pub fn versions(&self) -> &[i64] {
        &self.versions
    }

    /// Whether `v` is offered.
    pub fn supports(&self, v: i64) -> bool {
        self.versions.contains(&v)
    }

    /// Decodes the body. Missing or nil `versions` gives an empty list, as in Go.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            if k == b"versions" {
                out.versions = decode_list(v, Int::as_i64)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes the body into `buf`, returning the length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(1)?;
        w.str("versions")?;
        w.array_len(list_len(self.versions.len())?)?;
        for v in &self.versions {
            w.go_int(*v)?;
        }
        Ok(w.len())
    }
}

/// Body of `accept`: `{"version": int, "protocols": [uint16...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Accept {
    /// Accepted version.
    pub version: i64,
    protocols: Vec<Proto, MAX_LIST>,
}

impl Accept {
    /// An `accept` for `version` listing `protocols`; `None` if more than [`MAX_LIST`].
    pub fn new(version: i64, protocols: &[u16]) -> Option<Self> {
        let mut p = Vec::new();
        for x in protocols {
            p.push(Proto(*x)).ok()?;
        }
        Some(Self { version, protocols: p })
    }

    /// Protocols the peer accepts.
    pub fn protocols(&self) -> &[Proto] {
        &self.protocols
    }

    /// Decodes the body; missing fields give zero values, as in Go.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"version" => out.version = opt_int(v, Int::as_i64)?.unwrap_or(0),
                b"protocols" => out.protocols = decode_list(v, |i| int_u16(i).map(Proto))?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes the body into `buf`, returning the length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(2)?;
        w.str("version")?;
        w.go_int(self.version)?;
        w.str("protocols")?;
        w.array_len(list_len(self.protocols.len())?)?;
        for p in &self.protocols {
            w.uint16(p.0)?;
        }
        Ok(w.len())
    }
}

/// Body of control `error` (go-lib-micro `ws.Error`). Zero values mean "absent" (Go
/// `omitempty`), except `err` and `close` which are always written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ControlError<'a> {
    /// `err`: description.
    pub err: &'a str,
    /// `close`: the session is closed because of this error.
    pub close: bool,
    /// `code`: 400-599 carry HTTP meaning; 0 = absent (mender-connect never sets it).
    pub code: i64,
    /// `msgproto`: protocol of the offending message; [`Proto::INVALID`] = absent.
    pub msgproto: Proto,
    /// `msgtype`: type of the offending message; empty = absent.
    pub msgtype: &'a str,
    /// `msgid`: the offending message's `props.msgid`; empty = absent.
    pub msgid: &'a str,
}

impl<'a> ControlError<'a> {
    /// Decodes the body (missing fields are zero values).
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"err" => out.err = opt_str(v)?.unwrap_or(""),
                b"close" => {
                    out.close = match v {
                        Value::Nil => false,
                        Value::Bool(b) => b,
                        _ => return Err(DecodeError::UnexpectedType),
                    }
                }
                b"code" => out.code = opt_int(v, Int::as_i64)?.unwrap_or(0),
                b"msgproto" => out.msgproto = Proto(opt_int(v, int_u16)?.unwrap_or(0)),
                b"msgtype" => out.msgtype = opt_str(v)?.unwrap_or(""),
                b"msgid" => out.msgid = opt_str(v)?.unwrap_or(""),
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes the body in Go's field order: err, close, code?, msgproto?, msgtype?, msgid?.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        let n = 2
            + u32::from(self.code != 0)
            + u32::from(self.msgproto != Proto::INVALID)
            + u32::from(!self.msgtype.is_empty())
            + u32::from(!self.msgid.is_empty());
        w.map_len(n)?;
        w.str("err")?;
        w.str(self.err)?;
        w.str("close")?;
        w.bool(self.close)?;
        if self.code != 0 {
            w.str("code")?;
            w.go_int(self.code)?;
        }
        if self.msgproto != Proto::INVALID {
            w.str("msgproto")?;
            w.uint16(self.msgproto.0)?;
        }
        if !self.msgtype.is_empty() {
            w.str("msgtype")?;
            w.str(self.msgtype)?;
        }
        if !self.msgid.is_empty() {
            w.str("msgid")?;
            w.str(self.msgid)?;
        }
        Ok(w.len())
    }
}

/// A decoded control message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlMessage<'a> {
    /// `ping`
    Ping,
    /// `pong`
    Pong,
    /// `open`
    Open(Open),
    /// `accept`
    Accept(Accept),
    /// `close`
    Close,
    /// `error`
    Error(ControlError<'a>),
    /// Any other `typ` (the reference answers with a non-closing error
    /// `session: control type message not understood: '<typ>'`).
    Unknown(&'a str),
}

impl<'a> ControlMessage<'a> {
    /// Interprets a frame with `proto` 0xFFFF. Frames of other protocols give
    /// `Err(DecodeError::InvalidValue("proto"))`.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        if frame.header.proto != Proto::CONTROL {
            return Err(DecodeError::InvalidValue("proto"));
        }
        Ok(match frame.header.typ {
            PING => Self::Ping,
            PONG => Self::Pong,
            OPEN => Self::Open(Open::decode(frame.body)?),
            ACCEPT => Self::Accept(Accept::decode(frame.body)?),
            CLOSE => Self::Close,
            ERROR => Self::Error(ControlError::decode(frame.body)?),
            other => Self::Unknown(other),
        })
    }
}

/// A control frame without body or props (ping, pong, close), as the reference writes them.
pub const fn bare<'a>(typ: &'static str, sid: &'a str) -> FrameOut<'a> {
    FrameOut { proto: Proto::CONTROL, typ, sid, ..FrameOut::EMPTY }
}

/// Encodes a complete control `error` frame for session `sid`.
pub fn encode_error_frame(buf: &mut [u8], sid: &str, err: &ControlError<'_>) -> Result<usize, EncodeError> {
    FrameOut { proto: Proto::CONTROL, typ: ERROR, sid, ..FrameOut::EMPTY }.encode_with(buf, |b| err.encode(b))
}

/// Encodes a complete control `accept` frame for session `sid`.
pub fn encode_accept_frame(buf: &mut [u8], sid: &str, accept: &Accept) -> Result<usize, EncodeError> {
    FrameOut { proto: Proto::CONTROL, typ: ACCEPT, sid, ..FrameOut::EMPTY }
        .encode_with(buf, |b| accept.encode(b))
}

/// Encodes a complete control `open` frame for session `sid`.
pub fn encode_open_frame(buf: &mut [u8], sid: &str, open: &Open) -> Result<usize, EncodeError> {
    FrameOut { proto: Proto::CONTROL, typ: OPEN, sid, ..FrameOut::EMPTY }.encode_with(buf, |b| open.encode(b))
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;

#[cfg(test)]
mod tests;
