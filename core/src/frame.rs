//! The ProtoMsg frame: one MessagePack map per websocket binary message.
//!
//! Wire shape (go-lib-micro `ws.ProtoMsg`, encoded by vmihailenco/msgpack):
//!
//! ```text
//! { "hdr": { "proto": uint16, "typ"?: str, "sid"?: str, "props"?: {str: any} }, "body"?: bin }
//! ```
//!
//! Go writes struct fields in declaration order and omits empty `typ`, `sid`, `props` and `body`.
//!
//! # Decoding
//!
//! ```
//! use mender_connect_core::frame::{Frame, Proto};
//! # let bytes: &[u8] = &[0x81, 0xa3, b'h', b'd', b'r', 0x81, 0xa5, b'p', b'r', b'o', b't', b'o', 0xcd, 0xff, 0xff];
//! let frame = Frame::decode(bytes)?;
//! if frame.header.proto == Proto::CONTROL {
//!     // frame.header.typ, frame.header.sid, frame.header.props.get_str("user_id"), frame.body ...
//! }
//! # Ok::<(), mender_connect_core::DecodeError>(())
//! ```
//!
//! [`Frame::decode`] validates the whole frame (sizes, nesting, key types) up front and borrows
//! everything from the input; nothing is copied. It tolerates any key order, missing keys,
//! explicit nil for `typ`/`sid`/`props`/`body`, a str instead of a bin `body`, and unknown keys
//! (skipped, nested values included), like the Go decoder. Frames over [`MAX_FRAME_LEN`] are
//! refused.
//!
//! # Encoding
//!
//! ```
//! use mender_connect_core::frame::{FrameOut, Proto, Prop};
//! let props = [Prop::go_int("status", 1)];
//! let reply = FrameOut { proto: Proto::SHELL, typ: "new", sid: "abc", props: &props,
//!                        body: b"Shell started", ..FrameOut::EMPTY };
//! let mut buf = [0u8; 256];
//! let n = reply.encode(&mut buf)?;
//! let wire = &buf[..n]; // send as one binary websocket message
//! # assert_eq!(mender_connect_core::frame::Frame::decode(wire).unwrap().body, b"Shell started");
//! # Ok::<(), mender_connect_core::EncodeError>(())
//! ```
//!
//! Message bodies that are themselves MessagePack (control `accept`, file-transfer `file_info`,
//! ...) are written straight into the frame buffer with [`FrameOut::encode_with`], so no second
//! buffer is needed.

use crate::error::{DecodeError, EncodeError};
use crate::msgpack::{
    Int, Map, MapIter, MapRawIter, Reader, Value, Writer, int_u16, opt_int, opt_str, read_struct,
};

/// Largest frame the agent accepts: the reference agent's websocket read limit.
pub const MAX_FRAME_LEN: usize = 8192;

/// The `hdr.proto` value: which protocol a frame belongs to (Go `ws.ProtoType`, a `uint16`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Proto(pub u16);

impl Proto {
    /// 0: uninitialised/invalid.
    pub const INVALID: Proto = Proto(0);
    /// 1: remote terminal.
    pub const SHELL: Proto = Proto(1);
    /// 2: file transfer.
    pub const FILE_TRANSFER: Proto = Proto(2);
    /// 3: port forwarding.
    pub const PORT_FORWARD: Proto = Proto(3);
    /// 4: mender-client triggers (check-update, send-inventory).
    pub const MENDER_CLIENT: Proto = Proto(4);
    /// 0xFFFF: session control (ping/pong/open/accept/close/error).
    pub const CONTROL: Proto = Proto(0xFFFF);
}

/// The borrowed `hdr.props` map, walked lazily; it was validated by [`Frame::decode`].
///
/// Getters return the *last* entry for a key, as Go's map decoding does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Props<'a>(Map<'a>);

impl<'a> Props<'a> {
    /// No properties.
    pub const EMPTY: Props<'static> = Props(Map::EMPTY);

    /// Number of entries.
    pub const fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries (absent, nil or empty map).
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying map view.
    pub const fn as_map(&self) -> Map<'a> {
        self.0
    }

    /// Any value.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.0.get(key)
    }

    /// An integer, with the width it was encoded in (see [`Int::as_go_int64`] for the Go
    /// peers' strict `int64` checks). `None` if absent or not an integer.
    pub fn get_int(&self, key: &str) -> Option<Int> {
        self.get(key).and_then(|v| v.as_int())
    }

    /// An integer of any width as `i64`.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get_int(key).and_then(Int::as_i64)
    }

    /// A UTF-8 str value.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| v.as_str())
    }

    /// Iterate `(key, value)` in wire order.
    pub fn iter(&self) -> MapIter<'a> {
        self.0.iter()
    }

    /// Iterate `(key, raw encoded value)` in wire order, for verbatim relays.
    pub fn iter_raw(&self) -> MapRawIter<'a> {
        self.0.iter_raw()
    }
}

/// The decoded `hdr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// `proto`; [`Proto::INVALID`] when missing or nil.
    pub proto: Proto,
    /// `typ`; empty when missing or nil.
    pub typ: &'a str,
    /// `sid`; empty when missing or nil.
    pub sid: &'a str,
    /// `props`; empty when missing or nil.
    pub props: Props<'a>,
}

/// A decoded frame, borrowing from the input bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// `hdr`
    pub header: Header<'a>,
    /// `body`; empty when missing or nil.
    pub body: &'a [u8],
}

fn decode_header<'a>(buf: &'a [u8]) -> Result<Header<'a>, DecodeError> {
    let mut h = Header { proto: Proto::INVALID, typ: "", sid: "", props: Props::EMPTY };
    read_struct(buf, |key, v| {
        match key {
            b"proto" => h.proto = Proto(opt_int(v, int_u16)?.unwrap_or(0)),
            b"typ" => h.typ = opt_str(v)?.unwrap_or(""),
            b"sid" => h.sid = opt_str(v)?.unwrap_or(""),
            b"props" => {
                h.props = match v {
                    Value::Nil => Props::EMPTY,
                    Value::Map(m) => {
                        // Go decodes props into map[string]interface{}: keys must be strings.
                        if m.iter().any(|(k, _)| k.as_bytes().is_none()) {
                            return Err(DecodeError::InvalidKey);
                        }
                        Props(m)
                    }
                    _ => return Err(DecodeError::UnexpectedType),
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(h)
}

impl<'a> Frame<'a> {
    /// Decodes and validates one frame. Never panics; see the module docs for what is tolerated.
    /// Bytes after the frame's map are ignored, as Go's `msgpack.Unmarshal` ignores them.
    pub fn decode(buf: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        if buf.len() > MAX_FRAME_LEN {
            return Err(DecodeError::TooLarge);
        }
        Self::decode_any_size(buf)
    }

    /// [`Frame::decode`] without the device's 8192-byte read limit: for frames going the other
    /// way (device to server), which the server reads up to 8 MiB, e.g. large download chunks.
    pub fn decode_any_size(buf: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        let mut rd = Reader::new(buf);
        let mut frame = Frame {
            header: Header { proto: Proto::INVALID, typ: "", sid: "", props: Props::EMPTY },
            body: &[],
        };
        // Struct decode: a top-level nil gives the zero ProtoMsg, as in Go.
        let Some(n) = rd.map_header()? else {
            return Ok(frame);
        };
        if u64::from(n) * 2 > rd.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        for _ in 0..n {
            let key = match rd.value(1)? {
                Value::Str(k) | Value::Bin(k) => k,
                _ => return Err(DecodeError::InvalidKey),
            };
            let start = rd.pos();
            let v = rd.value(1)?;
            match key {
                b"hdr" => frame.header = decode_header(&buf[start..rd.pos()])?,
                b"body" => {
                    frame.body = match v {
                        Value::Nil => &[],
                        Value::Bin(b) | Value::Str(b) => b,
                        _ => return Err(DecodeError::UnexpectedType),
                    }
                }
                _ => {}
            }
        }
        Ok(frame)
    }

    /// Re-encodes this frame (props copied byte for byte, so integer widths are preserved).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        FrameOut {
            proto: self.header.proto,
            typ: self.header.typ,
            sid: self.header.sid,
            props: &[],
            base_props: self.header.props,
            body: self.body,
        }
        .encode(buf)
    }
}

/// A property value to encode, in the width Go writes for the field's Go type.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum PropValue<'a> {
    /// Go `int64`: `0xd3` (file-transfer `offset`).
    Int64(i64),
    /// Go `int` and named int types (shell `status`, `timeout`): smallest form, as
    /// vmihailenco/msgpack v5 writes them.
    GoInt(i64),
    /// Go `uint16`: `0xcd`.
    Uint16(u16),
    /// Go `uint32`: `0xce`.
    Uint32(u32),
    /// An integer in an explicit width (e.g. to echo a peer's encoding).
    Int(Int),
    /// Go `string`.
    Str(&'a str),
    /// Go `bool`.
    Bool(bool),
    /// `nil`
    Nil,
    /// An already encoded MessagePack value, copied verbatim (must be one complete value).
    Raw(&'a [u8]),
}

/// One `props` entry to encode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prop<'a> {
    /// Key.
    pub key: &'a str,
    /// Value.
    pub value: PropValue<'a>,
}

impl<'a> Prop<'a> {
    /// A Go `int64` property (`0xd3`), e.g. file-transfer `offset`.
    pub const fn int64(key: &'a str, v: i64) -> Self {
        Self { key, value: PropValue::Int64(v) }
    }

    /// A Go `int` property (smallest form), e.g. shell `status` and `timeout`, mender-client
    /// `status`.
    pub const fn go_int(key: &'a str, v: i64) -> Self {
        Self { key, value: PropValue::GoInt(v) }
    }

    /// A Go `uint16` property (`0xcd`), e.g. `terminal_width` as mender-cli sends it.
    pub const fn uint16(key: &'a str, v: u16) -> Self {
        Self { key, value: PropValue::Uint16(v) }
    }

    /// A string property, e.g. `user_id`, `connection_id`.
    pub const fn str(key: &'a str, v: &'a str) -> Self {
        Self { key, value: PropValue::Str(v) }
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.str(self.key)?;
        match self.value {
            PropValue::Int64(v) => w.int64(v),
            PropValue::GoInt(v) => w.go_int(v),
            PropValue::Uint16(v) => w.uint16(v),
            PropValue::Uint32(v) => w.uint32(v),
            PropValue::Int(v) => w.int(v),
            PropValue::Str(v) => w.str(v),
            PropValue::Bool(v) => w.bool(v),
            PropValue::Nil => w.nil(),
            PropValue::Raw(v) => w.raw(v),
        }
    }
}

/// A frame to encode. Empty `typ`, `sid`, props and `body` are omitted, as Go does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameOut<'a> {
    /// `hdr.proto` (written as uint16, `0xcd`).
    pub proto: Proto,
    /// `hdr.typ`
    pub typ: &'a str,
    /// `hdr.sid`
    pub sid: &'a str,
    /// Properties to write, in this order, after the entries kept from `base_props`.
    pub props: &'a [Prop<'a>],
    /// Received properties to copy verbatim, except keys that also appear in `props`
    /// (which override them). Use [`Props::EMPTY`] for none.
    pub base_props: Props<'a>,
    /// `body` (written as bin). Ignored by [`FrameOut::encode_with`].
    pub body: &'a [u8],
}

impl FrameOut<'static> {
    /// A frame with everything empty; use with struct update syntax.
    pub const EMPTY: FrameOut<'static> =
        FrameOut { proto: Proto::INVALID, typ: "", sid: "", props: &[], base_props: Props::EMPTY, body: &[] };
}

impl<'a> FrameOut<'a> {
    fn overridden(&self, key: &Value<'_>) -> bool {
        key.as_bytes().is_some_and(|k| self.props.iter().any(|p| p.key.as_bytes() == k))
    }

    fn write_header(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let kept = self.base_props.iter_raw().filter(|(k, _)| !self.overridden(k)).count();
        let n_props = kept + self.props.len();
        let n_props = u32::try_from(n_props).map_err(|_| EncodeError::ValueOutOfRange)?;
        let fields =
            1 + u32::from(!self.typ.is_empty()) + u32::from(!self.sid.is_empty()) + u32::from(n_props > 0);
        w.str("hdr")?;
        w.map_len(fields)?;
        w.str("proto")?;
        w.uint16(self.proto.0)?;
        if !self.typ.is_empty() {
            w.str("typ")?;
            w.str(self.typ)?;
        }
        if !self.sid.is_empty() {
            w.str("sid")?;
            w.str(self.sid)?;
        }
        if n_props > 0 {
            w.str("props")?;
            w.map_len(n_props)?;
            for (k, raw) in self.base_props.iter_raw() {
                if self.overridden(&k) {
                    continue;
                }
                // Keys are written back in their received form (str or bin, any bytes).
                match k {
                    Value::Bin(b) => w.bin(b)?,
                    Value::Str(b) => w.str_bytes(b)?,
                    _ => return Err(EncodeError::ValueOutOfRange),
                }
                w.raw(raw)?;
            }
            for p in self.props {
                p.write(w)?;
            }
        }
        Ok(())
    }

    /// Encodes into `buf`, returning the number of bytes used.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(1 + u32::from(!self.body.is_empty()))?;
        self.write_header(&mut w)?;
        if !self.body.is_empty() {
            w.str("body")?;
            w.bin(self.body)?;
        }
        Ok(w.len())
    }

    /// Encodes with a body produced by `fill`, which writes into the given slice (the rest of
    /// `buf`) and returns how many bytes it wrote. A zero-length body is omitted.
    ///
    /// ```
    /// # use mender_connect_core::frame::{FrameOut, Proto};
    /// # use mender_connect_core::control::Accept;
    /// let accept = Accept::new(1, &[1, 2]).unwrap();
    /// let mut buf = [0u8; 128];
    /// let n = FrameOut { proto: Proto::CONTROL, typ: "accept", sid: "s", ..FrameOut::EMPTY }
    ///     .encode_with(&mut buf, |b| accept.encode(b))?;
    /// # assert!(n > 0);
    /// # Ok::<(), mender_connect_core::EncodeError>(())
    /// ```
    pub fn encode_with(
        &self,
        buf: &mut [u8],
        fill: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(2)?;
        self.write_header(&mut w)?;
        let before_body = w.len();
        w.str("body")?;
        let n = w.bin_with(fill)?;
        if n == 0 {
            w.truncate(before_body);
            w.patch(0, 0x81);
        }
        Ok(w.len())
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;

#[cfg(test)]
mod tests;
