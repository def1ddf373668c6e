//! Minimal MessagePack reading and writing on top of `rmp`.
//!
//! Deliberately separate from the project's core codec: the mock must cross-check the agent's
//! encoding rather than share its bugs. Reading keeps the raw byte span of each value, so that
//! header rewrites can copy untouched values verbatim (integer widths matter to Go peers).

use rmp::Marker;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    Truncated,
    Reserved,
    TooDeep,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("msgpack: unexpected end of data"),
            DecodeError::Reserved => f.write_str("msgpack: invalid code"),
            DecodeError::TooDeep => f.write_str("msgpack: nesting too deep"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A decoded value. Integers keep their sign class; widths are not needed after decoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Ext(i8, Vec<u8>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

const MAX_DEPTH: usize = 64;

/// A cursor over an encoded buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        let s = self.take(n)?;
        Ok(s.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn marker(&mut self) -> Result<Marker, DecodeError> {
        let b = *self.take(1)?.first().ok_or(DecodeError::Truncated)?;
        Ok(Marker::from_u8(b))
    }

    fn peek_marker(&self) -> Result<Marker, DecodeError> {
        self.buf.get(self.pos).map(|b| Marker::from_u8(*b)).ok_or(DecodeError::Truncated)
    }

    /// True when the next value is nil (without consuming it).
    pub fn next_is_nil(&self) -> bool {
        matches!(self.peek_marker(), Ok(Marker::Null))
    }

    /// Reads a map header and returns the number of entries.
    pub fn map_len(&mut self) -> Result<Option<usize>, DecodeError> {
        let start = self.pos;
        let n = match self.marker()? {
            Marker::FixMap(n) => usize::from(n),
            Marker::Map16 => self.be(2)? as usize,
            Marker::Map32 => self.be(4)? as usize,
            _ => {
                self.pos = start;
                return Ok(None);
            }
        };
        Ok(Some(n))
    }

    /// Reads a string or binary value as bytes, or None if the next value is neither.
    pub fn str_or_bin(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let start = self.pos;
        let n = match self.marker()? {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 | Marker::Bin8 => self.be(1)? as usize,
            Marker::Str16 | Marker::Bin16 => self.be(2)? as usize,
            Marker::Str32 | Marker::Bin32 => self.be(4)? as usize,
            _ => {
                self.pos = start;
                return Ok(None);
            }
        };
        self.take(n).map(Some)
    }

    /// Skips one value and returns its raw bytes.
    pub fn raw_value(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.skip(0)?;
        Ok(&self.buf[start..self.pos])
    }

    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let (skip_bytes, items) = match self.marker()? {
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => (0, 0),
            Marker::U8 | Marker::I8 => (1, 0),
            Marker::U16 | Marker::I16 => (2, 0),
            Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
            Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
            Marker::FixStr(n) => (usize::from(n), 0),
            Marker::Str8 | Marker::Bin8 => (self.be(1)? as usize, 0),
            Marker::Str16 | Marker::Bin16 => (self.be(2)? as usize, 0),
            Marker::Str32 | Marker::Bin32 => (self.be(4)? as usize, 0),
            Marker::FixArray(n) => (0, usize::from(n)),
            Marker::Array16 => (0, self.be(2)? as usize),
            Marker::Array32 => (0, self.be(4)? as usize),
            Marker::FixMap(n) => (0, 2 * usize::from(n)),
            Marker::Map16 => (0, 2 * self.be(2)? as usize),
            Marker::Map32 => (0, 2 * self.be(4)? as usize),
            Marker::FixExt1 => (2, 0),
            Marker::FixExt2 => (3, 0),
            Marker::FixExt4 => (5, 0),
            Marker::FixExt8 => (9, 0),
            Marker::FixExt16 => (17, 0),
            Marker::Ext8 => (self.be(1)? as usize + 1, 0),
            Marker::Ext16 => (self.be(2)? as usize + 1, 0),
            Marker::Ext32 => (self.be(4)? as usize + 1, 0),
            Marker::Reserved => return Err(DecodeError::Reserved),
        };
        self.take(skip_bytes)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }

    /// Decodes one value.
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let v = match self.marker()? {
            Marker::FixPos(n) => Value::Int(i128::from(n)),
            Marker::FixNeg(n) => Value::Int(i128::from(n)),
            Marker::Null => Value::Nil,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::U8 => Value::Int(i128::from(self.be(1)?)),
            Marker::U16 => Value::Int(i128::from(self.be(2)?)),
            Marker::U32 => Value::Int(i128::from(self.be(4)?)),
            Marker::U64 => Value::Int(i128::from(self.be(8)?)),
            Marker::I8 => Value::Int(i128::from(self.be(1)? as u8 as i8)),
            Marker::I16 => Value::Int(i128::from(self.be(2)? as u16 as i16)),
            Marker::I32 => Value::Int(i128::from(self.be(4)? as u32 as i32)),
            Marker::I64 => Value::Int(i128::from(self.be(8)? as i64)),
            Marker::F32 => Value::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            Marker::F64 => Value::Float(f64::from_bits(self.be(8)?)),
            Marker::FixStr(n) => Value::Str(self.take(usize::from(n))?.to_vec()),
            Marker::Str8 => {
                let n = self.be(1)? as usize;
                Value::Str(self.take(n)?.to_vec())
            }
            Marker::Str16 => {
                let n = self.be(2)? as usize;
                Value::Str(self.take(n)?.to_vec())
            }
            Marker::Str32 => {
                let n = self.be(4)? as usize;
                Value::Str(self.take(n)?.to_vec())
            }
            Marker::Bin8 => {
                let n = self.be(1)? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            Marker::Bin16 => {
                let n = self.be(2)? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            Marker::Bin32 => {
                let n = self.be(4)? as usize;
                Value::Bin(self.take(n)?.to_vec())
            }
            Marker::FixArray(n) => self.array(usize::from(n), depth)?,
            Marker::Array16 => {
                let n = self.be(2)? as usize;
                self.array(n, depth)?
            }
            Marker::Array32 => {
                let n = self.be(4)? as usize;
                self.array(n, depth)?
            }
            Marker::FixMap(n) => self.map(usize::from(n), depth)?,
            Marker::Map16 => {
                let n = self.be(2)? as usize;
                self.map(n, depth)?
            }
            Marker::Map32 => {
                let n = self.be(4)? as usize;
                self.map(n, depth)?
            }
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => {
                let n = self.be(1)? as usize;
                self.ext(n)?
            }
            Marker::Ext16 => {
                let n = self.be(2)? as usize;
                self.ext(n)?
            }
            Marker::Ext32 => {
                let n = self.be(4)? as usize;
                self.ext(n)?
            }
            Marker::Reserved => return Err(DecodeError::Reserved),
        };
        Ok(v)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        // Cap the pre-allocation: a hostile length prefix must not reserve gigabytes.
        let mut items = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            items.push(self.value_at(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let mut items = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let k = self.value_at(depth + 1)?;
            let v = self.value_at(depth + 1)?;
            items.push((k, v));
        }
        Ok(Value::Map(items))
    }

    fn ext(&mut self, n: usize) -> Result<Value, DecodeError> {
        let t = self.be(1)? as u8 as i8;
        Ok(Value::Ext(t, self.take(n)?.to_vec()))
    }
}

/// Decodes a whole buffer as one value.
pub fn decode(buf: &[u8]) -> Result<Value, DecodeError> {
    Reader::new(buf).value()
}

/// Writers with the widths the Go peers use. Writing into a Vec cannot fail, so the
/// `rmp` results are discarded deliberately.
pub mod write {
    pub fn map_len(out: &mut Vec<u8>, n: u32) {
        let _ = rmp::encode::write_map_len(out, n);
    }
    pub fn array_len(out: &mut Vec<u8>, n: u32) {
        let _ = rmp::encode::write_array_len(out, n);
    }
    pub fn str(out: &mut Vec<u8>, s: &str) {
        let _ = rmp::encode::write_str(out, s);
    }
    pub fn bin(out: &mut Vec<u8>, b: &[u8]) {
        let _ = rmp::encode::write_bin(out, b);
    }
    /// Go `int` (and named int types) in msgpack v5: the smallest encoding.
    pub fn int(out: &mut Vec<u8>, v: i64) {
        let _ = rmp::encode::write_sint(out, v);
    }
    /// Go `int64`: always 0xd3 plus 8 bytes.
    pub fn i64(out: &mut Vec<u8>, v: i64) {
        let _ = rmp::encode::write_i64(out, v);
    }
    /// Go `uint16`: always 0xcd plus 2 bytes.
    pub fn u16(out: &mut Vec<u8>, v: u16) {
        let _ = rmp::encode::write_u16(out, v);
    }
    /// Go `uint32`: always 0xce plus 4 bytes.
    pub fn u32(out: &mut Vec<u8>, v: u32) {
        let _ = rmp::encode::write_u32(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_fixed() {
        let mut v = Vec::new();
        write::i64(&mut v, 1);
        assert_eq!(v, [0xd3, 0, 0, 0, 0, 0, 0, 0, 1]);
        v.clear();
        write::u16(&mut v, 1);
        assert_eq!(v, [0xcd, 0, 1]);
        v.clear();
        write::u32(&mut v, 0o644);
        assert_eq!(v, [0xce, 0, 0, 1, 0xa4]);
        v.clear();
        write::int(&mut v, 2);
        assert_eq!(v, [0x02]);
    }

    #[test]
    fn raw_value_spans_nested() {
        let mut v = Vec::new();
        write::map_len(&mut v, 1);
        write::str(&mut v, "a");
        write::array_len(&mut v, 2);
        write::i64(&mut v, -3);
        write::bin(&mut v, b"xy");
        v.push(0xc0);
        let mut r = Reader::new(&v);
        let raw = r.raw_value().unwrap_or_default();
        assert_eq!(raw.len(), v.len() - 1);
        assert!(r.next_is_nil());
    }

    #[test]
    fn truncated_is_error() {
        assert_eq!(decode(&[0xd3, 0]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x92, 1]), Err(DecodeError::Truncated));
    }
}
