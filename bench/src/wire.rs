//! The user side of ProtoMsg frames, as far as the benchmarks need it.
//!
//! Frames to the device are written with the project's core encoder. Frames from the device are
//! read with this small lenient reader instead of `core::Frame::decode`, because that one enforces
//! the device's 8 KiB receive limit, and the Go agent sends larger frames to the user.

use mender_connect_core::frame::{FrameOut, Prop, Proto};

/// The parts of a received frame the benchmarks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    /// `hdr.proto`
    pub proto: u16,
    /// `hdr.typ`
    pub typ: &'a str,
    /// `body`
    pub body: &'a [u8],
}

/// Why a received frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame ended inside a value.
    #[error("frame truncated")]
    Truncated,
    /// A value of a type a ProtoMsg frame does not have there.
    #[error("unexpected MessagePack type 0x{0:02x}")]
    Unexpected(u8),
    /// Maps and arrays nested deeper than any ProtoMsg frame.
    #[error("nesting too deep")]
    TooDeep,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, WireError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn len(&mut self, n: usize) -> Result<usize, WireError> {
        usize::try_from(self.be(n)?).map_err(|_| WireError::Truncated)
    }

    fn map_len(&mut self) -> Result<Option<usize>, WireError> {
        match self.byte()? {
            b @ 0x80..=0x8f => Ok(Some(usize::from(b & 0x0f))),
            0xde => Ok(Some(self.len(2)?)),
            0xdf => Ok(Some(self.len(4)?)),
            0xc0 => Ok(None),
            b => Err(WireError::Unexpected(b)),
        }
    }

    /// A str or bin value; `None` for nil.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let n = match self.byte()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 | 0xc4 => self.len(1)?,
            0xda | 0xc5 => self.len(2)?,
            0xdb | 0xc6 => self.len(4)?,
            0xc0 => return Ok(None),
            b => return Err(WireError::Unexpected(b)),
        };
        self.take(n).map(Some)
    }

    fn uint(&mut self) -> Result<u64, WireError> {
        match self.byte()? {
            b @ 0x00..=0x7f => Ok(u64::from(b)),
            0xcc | 0xd0 => self.be(1),
            0xcd | 0xd1 => self.be(2),
            0xce | 0xd2 => self.be(4),
            0xcf | 0xd3 => self.be(8),
            0xc0 => Ok(0),
            b => Err(WireError::Unexpected(b)),
        }
    }

    fn skip(&mut self, depth: u8) -> Result<(), WireError> {
        if depth > 8 {
            return Err(WireError::TooDeep);
        }
        let b = self.byte()?;
        let (elements, bytes) = match b {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (2 * usize::from(b & 0x0f), 0),
            0x90..=0x9f => (usize::from(b & 0x0f), 0),
            0xa0..=0xbf => (0, usize::from(b & 0x1f)),
            0xcc | 0xd0 => (0, 1),
            0xcd | 0xd1 => (0, 2),
            0xce | 0xd2 | 0xca => (0, 4),
            0xcf | 0xd3 | 0xcb => (0, 8),
            0xd9 | 0xc4 => (0, self.len(1)?),
            0xda | 0xc5 => (0, self.len(2)?),
            0xdb | 0xc6 => (0, self.len(4)?),
            0xdc => (self.len(2)?, 0),
            0xdd => (self.len(4)?, 0),
            0xde => (2 * self.len(2)?, 0),
            0xdf => (2 * self.len(4)?, 0),
            0xd4 => (0, 2),
            0xd5 => (0, 3),
            0xd6 => (0, 5),
            0xd7 => (0, 9),
            0xd8 => (0, 17),
            0xc7 => (0, self.len(1)? + 1),
            0xc8 => (0, self.len(2)? + 1),
            0xc9 => (0, self.len(4)? + 1),
            b => return Err(WireError::Unexpected(b)),
        };
        self.take(bytes)?;
        for _ in 0..elements {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

/// Reads `hdr.proto`, `hdr.typ` and `body` of a frame from the device.
pub fn decode(buf: &[u8]) -> Result<Received<'_>, WireError> {
    let mut rd = Reader { buf, pos: 0 };
    let mut out = Received { proto: 0, typ: "", body: &[] };
    let Some(fields) = rd.map_len()? else {
        return Ok(out);
    };
    for _ in 0..fields {
        let key = rd.bytes()?.unwrap_or_default();
        match key {
            b"hdr" => {
                let Some(n) = rd.map_len()? else { continue };
                for _ in 0..n {
                    match rd.bytes()?.unwrap_or_default() {
                        b"proto" => out.proto = u16::try_from(rd.uint()?).unwrap_or(0),
                        b"typ" => {
                            out.typ = std::str::from_utf8(rd.bytes()?.unwrap_or_default()).unwrap_or("")
                        }
                        _ => rd.skip(1)?,
                    }
                }
            }
            b"body" => out.body = rd.bytes()?.unwrap_or_default(),
            _ => rd.skip(0)?,
        }
    }
    Ok(out)
}

/// Encodes a user→device frame (the server fills in `sid` and `user_id`).
pub fn encode(proto: Proto, typ: &str, props: &[Prop<'_>], body: &[u8]) -> Vec<u8> {
    let frame = FrameOut { proto, typ, props, body, ..FrameOut::EMPTY };
    // Header and props of these frames are far below 256 bytes.
    let mut buf = vec![0u8; body.len() + 256];
    match frame.encode(&mut buf) {
        Ok(n) => buf.truncate(n),
        Err(_) => buf.clear(),
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_a_frame_written_by_the_core_encoder() {
        let props = [Prop::go_int("status", 1), Prop::str("user_id", "u")];
        let body = vec![b'x'; 20_000];
        let wire = encode(Proto(1), "shell", &props, &body);
        let got = decode(&wire).expect("decodes");
        assert_eq!(got.proto, 1);
        assert_eq!(got.typ, "shell");
        assert_eq!(got.body, &body[..]);
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let wire = encode(Proto(1), "shell", &[], b"hello");
        for cut in 0..wire.len() {
            assert!(decode(&wire[..cut]).is_err(), "cut at {cut}");
        }
    }
}
