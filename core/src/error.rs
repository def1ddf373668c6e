//! Error types of the codec. State machines keep their own errors next to them.

use core::fmt;

/// Why bytes could not be decoded as a frame or message body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than [`crate::frame::MAX_FRAME_LEN`] (the reference agent's websocket
    /// read limit).
    TooLarge,
    /// The input ended inside a value, or a length points past the end.
    Truncated,
    /// Byte `0xc1`, which MessagePack never uses.
    InvalidMarker(u8),
    /// Arrays/maps nest deeper than [`crate::msgpack::MAX_DEPTH`].
    TooDeep,
    /// A value has a type the field cannot hold (e.g. a map where a string belongs).
    UnexpectedType,
    /// A map key is not a str/bin (Go struct and `map[string]...` keys are strings).
    InvalidKey,
    /// An integer does not fit the field's Go type (e.g. `proto` > 65535).
    IntOutOfRange,
    /// A string field is not UTF-8.
    InvalidUtf8,
    /// A required field is missing or nil.
    MissingField(&'static str),
    /// A field holds a value outside the protocol's set (e.g. an unknown port-forward protocol).
    InvalidValue(&'static str),
    /// More elements than the fixed capacity of the decoded view.
    CapacityExceeded,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("frame exceeds the 8192-byte limit"),
            Self::Truncated => f.write_str("truncated msgpack data"),
            Self::InvalidMarker(b) => write!(f, "invalid msgpack marker 0x{b:02x}"),
            Self::TooDeep => f.write_str("msgpack nesting too deep"),
            Self::UnexpectedType => f.write_str("unexpected msgpack type"),
            Self::InvalidKey => f.write_str("map key is not a string"),
            Self::IntOutOfRange => f.write_str("integer out of range"),
            Self::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            Self::MissingField(n) => write!(f, "missing field {n}"),
            Self::InvalidValue(n) => write!(f, "invalid value for {n}"),
            Self::CapacityExceeded => f.write_str("too many elements"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a frame or body could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The caller's buffer is too small.
    BufferTooSmall,
    /// A value does not fit the requested wire width or a length field.
    ValueOutOfRange,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("output buffer too small"),
            Self::ValueOutOfRange => f.write_str("value out of range for its encoding"),
        }
    }
}

impl core::error::Error for EncodeError {}
