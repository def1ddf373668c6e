//! Bounded, zero-copy MessagePack reading and fixed-buffer writing.
//!
//! Reading is done by a hand-written cursor over `&[u8]` that classifies markers with
//! [`rmp::Marker`] and checks every length against the remaining input before slicing, so no
//! input can make it read out of bounds, allocate, recurse without limit or panic. Nested values
//! are validated once (bounded by [`MAX_DEPTH`]) and then handed out as borrowed views.
//!
//! Writing goes through `rmp::encode` into a caller-owned `&mut [u8]`. The helpers here pick the
//! widths that Go's vmihailenco/msgpack v5 (5.3.5, the version mender-connect 2.1.0 vendors)
//! writes for each Go type, which is what the Go peers type-assert on: sized types keep their
//! width (`int64` → `0xd3`, `uint16` → `0xcd`, `uint32` → `0xce`, `int8` → `0xd0`), while plain
//! `int`/`uint` and named int types are written in the smallest form ([`Writer::go_int`]).
//! Verified against the real library (Debian `golang-github-vmihailenco-msgpack.v5-dev`
//! 5.3.5).

use rmp::Marker;

use crate::error::{DecodeError, EncodeError};

/// Deepest nesting of arrays/maps accepted inside a frame (the frame map itself is depth 0).
///
/// Go's decoder has no such limit, but nothing in the protocol nests deeper than 3; the bound
/// keeps hostile input from costing more than a bounded walk.
pub const MAX_DEPTH: u8 = 32;

/// Which MessagePack encoding an integer was found in.
///
/// Go peers type-assert integers decoded into `interface{}` (e.g. `props`) on their exact Go
/// type, which follows from the wire width (`0xd3` becomes `int64`, positive fixint `int8`, ...).
/// Decoders report it so callers can reproduce those checks where they matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IntWidth {
    /// Positive fixint (`0x00..=0x7f`); Go decodes it as `int8`.
    PosFixint,
    /// Negative fixint (`0xe0..=0xff`); Go decodes it as `int8`.
    NegFixint,
    /// `0xcc`
    U8,
    /// `0xcd`
    U16,
    /// `0xce`
    U32,
    /// `0xcf`
    U64,
    /// `0xd0`
    I8,
    /// `0xd1`
    I16,
    /// `0xd2`
    I32,
    /// `0xd3`: what Go writes for `int64` (plain `int` is written compactly).
    I64,
}

impl IntWidth {
    /// True for the unsigned encodings (`0xcc..=0xcf`).
    pub const fn is_unsigned(self) -> bool {
        matches!(self, Self::U8 | Self::U16 | Self::U32 | Self::U64)
    }
}

/// A MessagePack integer together with the width it was encoded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Int {
    width: IntWidth,
    /// Two's complement bits for signed widths, plain bits for unsigned ones.
    bits: u64,
}

impl Int {
    /// An integer as Go writes an `int64` (`0xd3`).
    pub const fn int64(v: i64) -> Self {
        Self { width: IntWidth::I64, bits: v as u64 }
    }

    /// The encoding it was found in.
    pub const fn width(self) -> IntWidth {
        self.width
    }

    /// The value as `i64`, if it fits.
    pub const fn as_i64(self) -> Option<i64> {
        if self.width.is_unsigned() {
            if self.bits > i64::MAX as u64 { None } else { Some(self.bits as i64) }
        } else {
            Some(self.bits as i64)
        }
    }

    /// The value as `u64`, if it is not negative.
    pub const fn as_u64(self) -> Option<u64> {
        if self.width.is_unsigned() || (self.bits as i64) >= 0 { Some(self.bits) } else { None }
    }

    /// The value as `i64`, but only if it was encoded as `0xd3`, i.e. Go would see an `int64`
    /// after decoding into `interface{}` (the check mender-connect does on `offset`, mender-cli on
    /// shell `status` and `timeout`).
    pub const fn as_go_int64(self) -> Option<i64> {
        match self.width {
            IntWidth::I64 => Some(self.bits as i64),
            _ => None,
        }
    }
}

/// A borrowed, already validated MessagePack value.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// Any integer, with its width.
    Int(Int),
    /// `float 32`
    F32(f32),
    /// `float 64`
    F64(f64),
    /// A str value; bytes as sent (Go strings need not be UTF-8). See [`Value::as_str`].
    Str(&'a [u8]),
    /// A bin value.
    Bin(&'a [u8]),
    /// An array, iterable without allocation.
    Array(Array<'a>),
    /// A map, iterable without allocation.
    Map(Map<'a>),
    /// An extension value: type id and payload.
    Ext(i8, &'a [u8]),
}

impl<'a> Value<'a> {
    /// The integer, if this is one.
    pub const fn as_int(&self) -> Option<Int> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A str value that is valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            Value::Str(b) => core::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a str or bin value (Go decodes either into `[]byte` or `string`).
    pub const fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Str(b) | Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub const fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// A validated array: `len` elements encoded back to back in `raw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Array<'a> {
    len: u32,
    raw: &'a [u8],
    depth: u8,
}

impl<'a> Array<'a> {
    /// Number of elements.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// True when empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded elements, byte for byte as received.
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Iterate the elements.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter { rd: Reader::new(self.raw), left: self.len, depth: self.depth }
    }
}

/// Iterator over an [`Array`].
#[derive(Clone, Debug)]
pub struct ArrayIter<'a> {
    rd: Reader<'a>,
    left: u32,
    depth: u8,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Contents were validated when the array was read; an error here cannot happen, but
        // ending the iteration is the safe answer if it ever did.
        match self.rd.value(self.depth) {
            Ok(v) => Some(v),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

/// A validated map: `len` key/value pairs encoded back to back in `raw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Map<'a> {
    len: u32,
    raw: &'a [u8],
    depth: u8,
}

impl<'a> Map<'a> {
    /// An empty map.
    pub const EMPTY: Map<'static> = Map { len: 0, raw: &[], depth: 1 };

    /// Number of entries (duplicates counted).
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// True when empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded entries, byte for byte as received.
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Iterate `(key, value)` pairs in wire order.
    pub fn iter(&self) -> MapIter<'a> {
        MapIter { rd: Reader::new(self.raw), left: self.len, depth: self.depth }
    }

    /// Iterate entries as `(key, raw encoded value)`, for relaying values without re-encoding.
    pub fn iter_raw(&self) -> MapRawIter<'a> {
        MapRawIter { rd: Reader::new(self.raw), left: self.len, depth: self.depth }
    }

    /// The value of the *last* entry whose key is a str/bin equal to `key` (Go's map decoding
    /// keeps the last duplicate).
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        let mut found = None;
        for (k, v) in self.iter() {
            if k.as_bytes() == Some(key.as_bytes()) {
                found = Some(v);
            }
        }
        found
    }
}

/// Iterator over a [`Map`].
#[derive(Clone, Debug)]
pub struct MapIter<'a> {
    rd: Reader<'a>,
    left: u32,
    depth: u8,
}

impl<'a> Iterator for MapIter<'a> {
    type Item = (Value<'a>, Value<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match (self.rd.value(self.depth), self.rd.value(self.depth)) {
            (Ok(k), Ok(v)) => Some((k, v)),
            _ => {
                self.left = 0;
                None
            }
        }
    }
}

/// Iterator over a [`Map`] yielding keys and raw value encodings.
#[derive(Clone, Debug)]
pub struct MapRawIter<'a> {
    rd: Reader<'a>,
    left: u32,
    depth: u8,
}

impl<'a> Iterator for MapRawIter<'a> {
    type Item = (Value<'a>, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = self.rd.value(self.depth);
        let start = self.rd.pos;
        let val = self.rd.skip(self.depth);
        match (key, val) {
            (Ok(k), Ok(())) => Some((k, &self.rd.buf[start..self.rd.pos])),
            _ => {
                self.left = 0;
                None
            }
        }
    }
}

/// Bounds-checked cursor over MessagePack input.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) const fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len_u8(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from(self.byte()?))
    }

    fn len_u16(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from(u16::from_be_bytes(self.be()?)))
    }

    fn len_u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.be()?))
    }

    fn bytes(&mut self, len: u32) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }

    fn ext(&mut self, len: u32) -> Result<Value<'a>, DecodeError> {
        let ty = self.byte()? as i8;
        Ok(Value::Ext(ty, self.bytes(len)?))
    }

    /// Reads an array/map body of `items` values, validating it, and returns its raw bytes.
    fn container(&mut self, items: u64, depth: u8) -> Result<&'a [u8], DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        // Every value takes at least one byte: reject impossible counts before looping.
        if items > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(&self.buf[start..self.pos])
    }

    fn array(&mut self, len: u32, depth: u8) -> Result<Value<'a>, DecodeError> {
        let raw = self.container(u64::from(len), depth)?;
        Ok(Value::Array(Array { len, raw, depth: depth + 1 }))
    }

    fn map(&mut self, len: u32, depth: u8) -> Result<Value<'a>, DecodeError> {
        let raw = self.container(u64::from(len) * 2, depth)?;
        Ok(Value::Map(Map { len, raw, depth: depth + 1 }))
    }

    /// Reads one complete value at nesting `depth` (containers are validated in full).
    pub(crate) fn value(&mut self, depth: u8) -> Result<Value<'a>, DecodeError> {
        let m = Marker::from_u8(self.byte()?);
        let int = |width, bits| Ok(Value::Int(Int { width, bits }));
        match m {
            Marker::FixPos(v) => int(IntWidth::PosFixint, u64::from(v)),
            Marker::FixNeg(v) => int(IntWidth::NegFixint, i64::from(v) as u64),
            Marker::U8 => int(IntWidth::U8, u64::from(self.byte()?)),
            Marker::U16 => int(IntWidth::U16, u64::from(u16::from_be_bytes(self.be()?))),
            Marker::U32 => int(IntWidth::U32, u64::from(u32::from_be_bytes(self.be()?))),
            Marker::U64 => int(IntWidth::U64, u64::from_be_bytes(self.be()?)),
            Marker::I8 => int(IntWidth::I8, i64::from(self.byte()? as i8) as u64),
            Marker::I16 => int(IntWidth::I16, i64::from(i16::from_be_bytes(self.be()?)) as u64),
            Marker::I32 => int(IntWidth::I32, i64::from(i32::from_be_bytes(self.be()?)) as u64),
            Marker::I64 => int(IntWidth::I64, i64::from_be_bytes(self.be()?) as u64),
            Marker::Null => Ok(Value::Nil),
            Marker::True => Ok(Value::Bool(true)),
            Marker::False => Ok(Value::Bool(false)),
            Marker::F32 => Ok(Value::F32(f32::from_be_bytes(self.be()?))),
            Marker::F64 => Ok(Value::F64(f64::from_be_bytes(self.be()?))),
            Marker::FixStr(n) => Ok(Value::Str(self.bytes(u32::from(n))?)),
            Marker::Str8 => {
                let n = self.len_u8()?;
                Ok(Value::Str(self.bytes(n)?))
            }
            Marker::Str16 => {
                let n = self.len_u16()?;
                Ok(Value::Str(self.bytes(n)?))
            }
            Marker::Str32 => {
                let n = self.len_u32()?;
                Ok(Value::Str(self.bytes(n)?))
            }
            Marker::Bin8 => {
                let n = self.len_u8()?;
                Ok(Value::Bin(self.bytes(n)?))
            }
            Marker::Bin16 => {
                let n = self.len_u16()?;
                Ok(Value::Bin(self.bytes(n)?))
            }
            Marker::Bin32 => {
                let n = self.len_u32()?;
                Ok(Value::Bin(self.bytes(n)?))
            }
            Marker::FixExt1 => self.ext(1),
            Marker::FixExt2 => self.ext(2),
            Marker::FixExt4 => self.ext(4),
            Marker::FixExt8 => self.ext(8),
            Marker::FixExt16 => self.ext(16),
            Marker::Ext8 => {
                let n = self.len_u8()?;
                self.ext(n)
            }
            Marker::Ext16 => {
                let n = self.len_u16()?;
                self.ext(n)
            }
            Marker::Ext32 => {
                let n = self.len_u32()?;
                self.ext(n)
            }
            Marker::FixArray(n) => self.array(u32::from(n), depth),
            Marker::Array16 => {
                let n = self.len_u16()?;
                self.array(n, depth)
            }
            Marker::Array32 => {
                let n = self.len_u32()?;
                self.array(n, depth)
            }
            Marker::FixMap(n) => self.map(u32::from(n), depth),
            Marker::Map16 => {
                let n = self.len_u16()?;
                self.map(n, depth)
            }
            Marker::Map32 => {
                let n = self.len_u32()?;
                self.map(n, depth)
            }
            Marker::Reserved => Err(DecodeError::InvalidMarker(0xc1)),
        }
    }

    /// Skips one complete value, validating it.
    pub(crate) fn skip(&mut self, depth: u8) -> Result<(), DecodeError> {
        self.value(depth).map(|_| ())
    }

    /// Reads a map header only (or nil, giving 0 entries). Returns `None` for nil.
    pub(crate) fn map_header(&mut self) -> Result<Option<u32>, DecodeError> {
        let b = self.byte()?;
        match Marker::from_u8(b) {
            Marker::FixMap(n) => Ok(Some(u32::from(n))),
            Marker::Map16 => Ok(Some(self.len_u16()?)),
            Marker::Map32 => Ok(Some(self.len_u32()?)),
            Marker::Null => Ok(None),
            _ => Err(DecodeError::UnexpectedType),
        }
    }
}

/// Reads a struct-like map (Go struct encoding): calls `field` for every entry with the key bytes
/// and the decoded value. Accepts nil as an empty struct and str or bin keys, as Go does;
/// rejects any other key type.
pub(crate) fn read_struct<'a>(
    buf: &'a [u8],
    mut field: impl FnMut(&'a [u8], Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut rd = Reader::new(buf);
    let Some(n) = rd.map_header()? else {
        return Ok(());
    };
    if u64::from(n) * 2 > rd.remaining() as u64 {
        return Err(DecodeError::Truncated);
    }
    for _ in 0..n {
        let key = match rd.value(1)? {
            Value::Str(k) | Value::Bin(k) => k,
            _ => return Err(DecodeError::InvalidKey),
        };
        let v = rd.value(1)?;
        field(key, v)?;
    }
    Ok(())
}

/// Optional string field: str/bin (UTF-8 checked) or nil (as Go leaves `*string` nil).
pub(crate) fn opt_str(v: Value<'_>) -> Result<Option<&str>, DecodeError> {
    match v {
        Value::Nil => Ok(None),
        Value::Str(b) | Value::Bin(b) => {
            core::str::from_utf8(b).map(Some).map_err(|_| DecodeError::InvalidUtf8)
        }
        _ => Err(DecodeError::UnexpectedType),
    }
}

/// Optional integer field converted with `conv`; nil gives `None`.
pub(crate) fn opt_int<T>(
    v: Value<'_>,
    conv: impl FnOnce(Int) -> Option<T>,
) -> Result<Option<T>, DecodeError> {
    match v {
        Value::Nil => Ok(None),
        Value::Int(i) => conv(i).map(Some).ok_or(DecodeError::IntOutOfRange),
        _ => Err(DecodeError::UnexpectedType),
    }
}

pub(crate) fn int_u16(i: Int) -> Option<u16> {
    i.as_u64().and_then(|v| u16::try_from(v).ok())
}

pub(crate) fn int_u32(i: Int) -> Option<u32> {
    i.as_u64().and_then(|v| u32::try_from(v).ok())
}

/// Writer over a caller-owned buffer, tracking how much has been used.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub const fn len(&self) -> usize {
        self.pos
    }

    /// True if nothing was written yet.
    pub const fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// The written bytes.
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.pos]
    }

    // `rmp` writes into `&mut [u8]` in both its std and no_std builds, with different error
    // types; the only possible failure is running out of space.
    fn rmp<T, E>(&mut self, f: impl FnOnce(&mut &mut [u8]) -> Result<T, E>) -> Result<T, EncodeError> {
        let mut rest: &mut [u8] = &mut self.buf[self.pos..];
        let before = rest.len();
        let r = f(&mut rest);
        let used = before - rest.len();
        match r {
            Ok(v) => {
                self.pos += used;
                Ok(v)
            }
            Err(_) => Err(EncodeError::BufferTooSmall),
        }
    }

    /// Map header with the smallest marker.
    pub fn map_len(&mut self, n: u32) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_map_len(w, n)).map(|_| ())
    }

    /// Array header with the smallest marker.
    pub fn array_len(&mut self, n: u32) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_array_len(w, n)).map(|_| ())
    }

    /// A str with the smallest header (as Go writes a `string`).
    pub fn str(&mut self, s: &str) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_str(w, s))
    }

    /// A str with the smallest header from raw bytes (Go strings need not be UTF-8).
    pub fn str_bytes(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let len = u32::try_from(b.len()).map_err(|_| EncodeError::ValueOutOfRange)?;
        self.rmp(|w| rmp::encode::write_str_len(w, len))?;
        self.raw(b)
    }

    /// A bin with the smallest header (as Go writes a `[]byte`).
    pub fn bin(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_bin(w, b))
    }

    /// `nil`
    pub fn nil(&mut self) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_nil(w))
    }

    /// A bool.
    pub fn bool(&mut self, v: bool) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_bool(w, v))
    }

    /// Go `int` (and named int types such as shell status): vmihailenco/msgpack v5 writes
    /// these in the *smallest* form (fixint, `0xcc`..`0xcf` for non-negative, `0xd0`..`0xd3`
    /// for negative), unlike the sized Go integer types.
    pub fn go_int(&mut self, v: i64) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_sint(w, v)).map(|_| ())
    }

    /// Go `int64`: always `0xd3` + 8 bytes.
    pub fn int64(&mut self, v: i64) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_i64(w, v))
    }

    /// Go `uint16`: always `0xcd` + 2 bytes.
    pub fn uint16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_u16(w, v))
    }

    /// Go `uint32`: always `0xce` + 4 bytes.
    pub fn uint32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.rmp(|w| rmp::encode::write_u32(w, v))
    }

    /// An integer in the given width (for reproducing a peer's encoding exactly).
    pub fn int(&mut self, v: Int) -> Result<(), EncodeError> {
        let b = v.bits;
        match v.width {
            IntWidth::PosFixint => {
                let x = u8::try_from(b).ok().filter(|x| *x < 0x80).ok_or(EncodeError::ValueOutOfRange)?;
                self.raw(&[x])
            }
            IntWidth::NegFixint => {
                let x = b as i64;
                if !(-32..0).contains(&x) {
                    return Err(EncodeError::ValueOutOfRange);
                }
                self.raw(&[x as u8])
            }
            IntWidth::U8 => self
                .raw_int(0xcc, &(u8::try_from(b).map_err(|_| EncodeError::ValueOutOfRange)?).to_be_bytes()),
            IntWidth::U16 => self
                .raw_int(0xcd, &(u16::try_from(b).map_err(|_| EncodeError::ValueOutOfRange)?).to_be_bytes()),
            IntWidth::U32 => self
                .raw_int(0xce, &(u32::try_from(b).map_err(|_| EncodeError::ValueOutOfRange)?).to_be_bytes()),
            IntWidth::U64 => self.raw_int(0xcf, &b.to_be_bytes()),
            IntWidth::I8 => self.raw_int(
                0xd0,
                &(i8::try_from(b as i64).map_err(|_| EncodeError::ValueOutOfRange)?).to_be_bytes(),
            ),
            IntWidth::I16 => self.raw_int(
                0xd1,
                &(i16::try_from(b as i64).map_err(|_| EncodeError::ValueOutOfRange)?).to_be_bytes(),
            ),
            IntWidth::I32 => self.raw_int(
                0xd2,
                &(i32::try_from(b as i64).map_err(|_| EncodeError::ValueOutOfRange)?).to_be_bytes(),
            ),
            IntWidth::I64 => self.int64(b as i64),
        }
    }

    fn raw_int(&mut self, marker: u8, be: &[u8]) -> Result<(), EncodeError> {
        self.raw(&[marker])?;
        self.raw(be)
    }

    /// Extension header (smallest marker) followed by `data`.
    pub fn ext(&mut self, ty: i8, data: &[u8]) -> Result<(), EncodeError> {
        let len = u32::try_from(data.len()).map_err(|_| EncodeError::ValueOutOfRange)?;
        self.rmp(|w| rmp::encode::write_ext_meta(w, len, ty))?;
        self.raw(data)
    }

    /// Drops everything written after `len` bytes.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }

    /// Overwrites one already written byte (used to fix up a map header).
    pub(crate) fn patch(&mut self, at: usize, byte: u8) {
        if at < self.pos {
            self.buf[at] = byte;
        }
    }

    /// Pre-encoded bytes, copied verbatim.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos.checked_add(bytes.len()).ok_or(EncodeError::BufferTooSmall)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(EncodeError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Writes a bin value whose contents are produced by `fill` directly into the buffer
    /// (no second buffer): reserves the largest header, lets `fill` write, then moves the
    /// contents down behind the smallest header for their length, as Go would write it.
    /// Returns the number of content bytes.
    pub fn bin_with(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<usize, EncodeError> {
        const RESERVE: usize = 5;
        let start = self.pos;
        let content_at = start.checked_add(RESERVE).ok_or(EncodeError::BufferTooSmall)?;
        let area = self.buf.get_mut(content_at..).ok_or(EncodeError::BufferTooSmall)?;
        let avail = area.len();
        let n = fill(area)?;
        if n > avail {
            return Err(EncodeError::BufferTooSmall);
        }
        let n32 = u32::try_from(n).map_err(|_| EncodeError::ValueOutOfRange)?;
        let mut hdr = [0u8; RESERVE];
        let hlen = {
            let mut h: &mut [u8] = &mut hdr;
            let before = h.len();
            rmp::encode::write_bin_len(&mut h, n32).map_err(|_| EncodeError::BufferTooSmall)?;
            before - h.len()
        };
        self.buf[start..start + hlen].copy_from_slice(&hdr[..hlen]);
        self.buf.copy_within(content_at..content_at + n, start + hlen);
        self.pos = start + hlen + n;
        Ok(n)
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    fn int_conversions() {
        let i = Int { width: IntWidth::U64, bits: u64::MAX };
        assert_eq!(i.as_i64(), None);
        assert_eq!(i.as_u64(), Some(u64::MAX));
        let n = Int { width: IntWidth::NegFixint, bits: (-5i64) as u64 };
        assert_eq!(n.as_i64(), Some(-5));
        assert_eq!(n.as_u64(), None);
        assert_eq!(n.as_go_int64(), None);
        assert_eq!(Int::int64(7).as_go_int64(), Some(7));
    }

    fn every_width_round_trips_through_writer_and_reader() {
        let cases = [
            Int { width: IntWidth::PosFixint, bits: 5 },
            Int { width: IntWidth::NegFixint, bits: (-3i64) as u64 },
            Int { width: IntWidth::U8, bits: 200 },
            Int { width: IntWidth::U16, bits: 1 },
            Int { width: IntWidth::U32, bits: 70000 },
            Int { width: IntWidth::U64, bits: u64::MAX },
            Int { width: IntWidth::I8, bits: (-100i64) as u64 },
            Int { width: IntWidth::I16, bits: 1 },
            Int { width: IntWidth::I32, bits: (-70000i64) as u64 },
            Int { width: IntWidth::I64, bits: (-1i64) as u64 },
        ];
        for c in cases {
            let mut buf = [0u8; 16];
            let mut w = Writer::new(&mut buf);
            w.int(c).unwrap();
            let n = w.len();
            let mut r = Reader::new(&buf[..n]);
            assert_eq!(r.value(0).unwrap(), Value::Int(c));
            assert_eq!(r.remaining(), 0);
        }
    }

    fn go_int_matches_vmihailenco_v5() {
        // Output of msgpack.Marshal(int(v)) with vmihailenco/msgpack v5.3.5 (Debian package).
        let cases: [(i64, &str); 17] = [
            (0, "00"),
            (127, "7f"),
            (128, "cc80"),
            (255, "ccff"),
            (256, "cd0100"),
            (65535, "cdffff"),
            (65536, "ce00010000"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-128, "d080"),
            (-129, "d1ff7f"),
            (-32768, "d18000"),
            (-32769, "d2ffff7fff"),
            (1 << 31, "ce80000000"),
            (-(1 << 31) - 1, "d3ffffffff7fffffff"),
            (1 << 40, "cf0000010000000000"),
        ];
        for (v, want) in cases {
            let mut buf = [0u8; 16];
            let mut w = Writer::new(&mut buf);
            w.go_int(v).unwrap();
            assert_eq!(w.written(), &crate::selftest::hex(want)[..], "{v}");
            let n = w.len();
            assert_eq!(
                Reader::new(&buf[..n]).value(0).ok().and_then(|x| x.as_int()).and_then(Int::as_i64),
                Some(v)
            );
        }
    }

    fn out_of_range_width_is_refused() {
        let mut buf = [0u8; 16];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.int(Int { width: IntWidth::U8, bits: 300 }), Err(EncodeError::ValueOutOfRange));
        assert_eq!(w.int(Int { width: IntWidth::PosFixint, bits: 128 }), Err(EncodeError::ValueOutOfRange));
    }

    fn nesting_is_bounded() {
        let mut buf = [0x91u8; 100];
        buf[99] = 0xc0;
        assert_eq!(Reader::new(&buf).value(0), Err(DecodeError::TooDeep));
        let ok = [0x91, 0x91, 0xc0];
        assert!(Reader::new(&ok).value(0).is_ok());
    }

    fn huge_counts_are_refused_without_looping() {
        // array32 claiming 4 billion elements in 5 bytes of input.
        let buf = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
        assert_eq!(Reader::new(&buf).value(0), Err(DecodeError::Truncated));
        let buf = [0xdb, 0xff, 0xff, 0xff, 0xff, b'a'];
        assert_eq!(Reader::new(&buf).value(0), Err(DecodeError::Truncated));
    }

    fn bin_with_picks_smallest_header() {
        for n in [0usize, 1, 255, 256, 300] {
            let mut buf = [0u8; 400];
            let mut w = Writer::new(&mut buf);
            w.bin_with(|b| {
                b[..n].fill(0xab);
                Ok(n)
            })
            .unwrap();
            let len = w.len();
            let mut r = Reader::new(&buf[..len]);
            match r.value(0).unwrap() {
                Value::Bin(b) => assert_eq!(b.len(), n),
                v => panic!("{v:?}"),
            }
            let hdr = if n < 256 { 2 } else { 3 };
            assert_eq!(len, hdr + n);
        }
    }

    fn writer_reports_full_buffer() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.int64(1), Err(EncodeError::BufferTooSmall));
        assert_eq!(w.str("ab"), Ok(()));
        assert_eq!(w.written(), &[0xa2, b'a', b'b']);
    }

    crate::selftests!(
        int_conversions,
        every_width_round_trips_through_writer_and_reader,
        go_int_matches_vmihailenco_v5,
        out_of_range_width_is_refused,
        nesting_is_bounded,
        huge_counts_are_refused_without_looping,
        bin_with_picks_smallest_header,
        writer_reports_full_buffer,
    );
}
