//! File transfer protocol (`proto` 2): message types, bodies and frame helpers.
//!
//! Sources: go-lib-micro `ws/filetransfer/model.go` as vendored in mender-connect 2.1.0, and
//! mender-connect 2.1.0 `session/filetransfer.go`. Flow state (offsets, ack window) lives in
//! [`crate::transfer`].
//!
//! Who sends what (server = deviceconnect acting for the user):
//! - `stat` `{"path"}` → device answers `file_info` `{path, size, uid, gid, mode, modtime}`.
//! - `get_file` `{"path"}` → device streams `file_chunk` (props `offset` int64, body ≤ 4096
//!   bytes), then an empty `file_chunk` (EOF, `offset` = total); the server sends `ack` with
//!   `offset`.
//! - `put_file` `{src_path?, path, uid?, gid?, mode?}` → device answers `ack` `offset` 0, the
//!   server streams `file_chunk`s and an empty EOF chunk; the device acks (its ack copies the
//!   header of the last chunk it processed, type changed to `ack`).
//! - `error` `{"err", "msgtype"?, "msgid"?}` either way; the device's error copies the request's
//!   header (sid, props) with `typ` `error`.
//!
//! Go field types: `size` `*int64` (`0xd3`), `uid`/`gid`/`mode` `*uint32` (`0xce`), `modtime`
//! `*time.Time` (MessagePack timestamp extension, type −1), `offset` `int64` (`0xd3`). The
//! reference rejects an `offset` that is not `int64` on the wire.

use crate::error::{DecodeError, EncodeError};
use crate::frame::{Frame, FrameOut, Prop, Proto};
use crate::msgpack::{Int, Value, Writer, int_u32, opt_int, opt_str, read_struct};

/// `stat`: body [`StatFile`].
pub const STAT: &str = "stat";
/// `file_info`: body [`FileInfo`].
pub const FILE_INFO: &str = "file_info";
/// `get_file`: body [`GetFile`].
pub const GET_FILE: &str = "get_file";
/// `put_file`: body [`UploadRequest`].
pub const PUT_FILE: &str = "put_file";
/// `file_chunk`: body = data, props `offset`; an empty body marks the end of the file.
pub const FILE_CHUNK: &str = "file_chunk";
/// `ack`: props `offset`.
pub const ACK: &str = "ack";
/// `error`: body [`FtError`].
pub const ERROR: &str = "error";

/// Property `offset` (Go `int64`).
pub const PROP_OFFSET: &str = "offset";
/// Property `user_id`.
pub const PROP_USER_ID: &str = "user_id";

/// MessagePack extension type of timestamps.
pub const TIMESTAMP_EXT: i8 = -1;

/// A point in time as the MessagePack timestamp extension carries it (what Go writes for
/// `time.Time`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds, `< 1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// Decodes the payload of an ext −1 value (4, 8 or 12 bytes).
    pub fn from_ext(ty: i8, data: &[u8]) -> Result<Self, DecodeError> {
        if ty != TIMESTAMP_EXT {
            return Err(DecodeError::UnexpectedType);
        }
        let ts = match *data {
            [a, b, c, d] => Self { secs: i64::from(u32::from_be_bytes([a, b, c, d])), nanos: 0 },
            [a, b, c, d, e, f, g, h] => {
                let v = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
                Self { secs: (v & 0x3_ffff_ffff) as i64, nanos: (v >> 34) as u32 }
            }
            [a, b, c, d, ref rest @ ..] if rest.len() == 8 => {
                let mut s = [0u8; 8];
                s.copy_from_slice(rest);
                Self { secs: i64::from_be_bytes(s), nanos: u32::from_be_bytes([a, b, c, d]) }
            }
            _ => return Err(DecodeError::InvalidValue("modtime")),
        };
        if ts.nanos >= 1_000_000_000 {
            return Err(DecodeError::InvalidValue("modtime"));
        }
        Ok(ts)
    }

    /// Writes the value in the smallest of the three forms, exactly as vmihailenco/msgpack's
    /// `encodeTime` chooses.
    pub fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.nanos >= 1_000_000_000 {
            return Err(EncodeError::ValueOutOfRange);
        }
        let secs = self.secs as u64;
        if secs >> 34 == 0 {
            let data = (u64::from(self.nanos) << 34) | secs;
            if data & 0xffff_ffff_0000_0000 == 0 {
                w.ext(TIMESTAMP_EXT, &(data as u32).to_be_bytes())
            } else {
                w.ext(TIMESTAMP_EXT, &data.to_be_bytes())
            }
        } else {
            let mut b = [0u8; 12];
            b[..4].copy_from_slice(&self.nanos.to_be_bytes());
            b[4..].copy_from_slice(&self.secs.to_be_bytes());
            w.ext(TIMESTAMP_EXT, &b)
        }
    }
}

fn opt_ts(v: Value<'_>) -> Result<Option<Timestamp>, DecodeError> {
    match v {
        Value::Nil => Ok(None),
        Value::Ext(t, d) => Timestamp::from_ext(t, d).map(Some),
        _ => Err(DecodeError::UnexpectedType),
    }
}

fn opt_i64(v: Value<'_>) -> Result<Option<i64>, DecodeError> {
    opt_int(v, Int::as_i64)
}

fn opt_u32(v: Value<'_>) -> Result<Option<u32>, DecodeError> {
    opt_int(v, int_u32)
}

fn write_opt_str(w: &mut Writer<'_>, v: Option<&str>) -> Result<(), EncodeError> {
    match v {
        Some(s) => w.str(s),
        None => w.nil(),
    }
}

/// Body of `stat`: `{"path": str}` (Go `StatFile`, `path` without omitempty).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StatFile<'a> {
    /// `path`; the reference answers "invalid request parameters" if missing.
    pub path: Option<&'a str>,
}

impl<'a> StatFile<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            if k == b"path" {
                out.path = opt_str(v)?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes the body (a missing path is written as nil, as Go does).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(1)?;
        w.str("path")?;
        write_opt_str(&mut w, self.path)?;
        Ok(w.len())
    }
}

/// Body of `get_file`: `{"path": str}` (Go `GetFile`, `path` with omitempty).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GetFile<'a> {
    /// `path`
    pub path: Option<&'a str>,
}

impl<'a> GetFile<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        StatFile::decode(body).map(|s| Self { path: s.path })
    }

    /// Encodes the body (omits a missing path).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        match self.path {
            Some(p) => {
                w.map_len(1)?;
                w.str("path")?;
                w.str(p)?;
            }
            None => w.map_len(0)?,
        }
        Ok(w.len())
    }
}

/// Body of `file_info` (Go `FileInfo`). `mode` holds Go `os.FileMode` bits, not POSIX
/// `st_mode` (see [`crate::filetransfer::go_file_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileInfo<'a> {
    /// `path` (always written; nil if `None`).
    pub path: Option<&'a str>,
    /// `size`
    pub size: Option<i64>,
    /// `uid`
    pub uid: Option<u32>,
    /// `gid`
    pub gid: Option<u32>,
    /// `mode` (Go `os.FileMode`).
    pub mode: Option<u32>,
    /// `modtime`
    pub modtime: Option<Timestamp>,
}

impl<'a> FileInfo<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"path" => out.path = opt_str(v)?,
                b"size" => out.size = opt_i64(v)?,
                b"uid" => out.uid = opt_u32(v)?,
                b"gid" => out.gid = opt_u32(v)?,
                b"mode" => out.mode = opt_u32(v)?,
                b"modtime" => out.modtime = opt_ts(v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes in Go's field order: path, size?, uid?, gid?, mode?, modtime?.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        let n = 1
            + u32::from(self.size.is_some())
            + u32::from(self.uid.is_some())
            + u32::from(self.gid.is_some())
            + u32::from(self.mode.is_some())
            + u32::from(self.modtime.is_some());
        w.map_len(n)?;
        w.str("path")?;
        write_opt_str(&mut w, self.path)?;
        if let Some(v) = self.size {
            w.str("size")?;
            w.int64(v)?;
        }
        for (k, v) in [("uid", self.uid), ("gid", self.gid), ("mode", self.mode)] {
            if let Some(v) = v {
                w.str(k)?;
                w.uint32(v)?;
            }
        }
        if let Some(t) = self.modtime {
            w.str("modtime")?;
            t.write(&mut w)?;
        }
        Ok(w.len())
    }
}

/// Body of `put_file` (Go `UploadRequest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UploadRequest<'a> {
    /// `src_path`: source file name, appended to `path` if `path` is a directory.
    pub src_path: Option<&'a str>,
    /// `path`: target (always written; nil if `None`).
    pub path: Option<&'a str>,
    /// `size`
    pub size: Option<i64>,
    /// `uid`; the reference defaults to its own uid.
    pub uid: Option<u32>,
    /// `gid`; the reference defaults to its own gid.
    pub gid: Option<u32>,
    /// `mode`; the reference defaults to 0644.
    pub mode: Option<u32>,
    /// `modtime`
    pub modtime: Option<Timestamp>,
}

impl<'a> UploadRequest<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"src_path" => out.src_path = opt_str(v)?,
                b"path" => out.path = opt_str(v)?,
                b"size" => out.size = opt_i64(v)?,
                b"uid" => out.uid = opt_u32(v)?,
                b"gid" => out.gid = opt_u32(v)?,
                b"mode" => out.mode = opt_u32(v)?,
                b"modtime" => out.modtime = opt_ts(v)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes in Go's field order: src_path?, path, size?, uid?, gid?, mode?, modtime?.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        let n = 1
            + u32::from(self.src_path.is_some())
            + u32::from(self.size.is_some())
            + u32::from(self.uid.is_some())
            + u32::from(self.gid.is_some())
            + u32::from(self.mode.is_some())
            + u32::from(self.modtime.is_some());
        w.map_len(n)?;
        if let Some(s) = self.src_path {
            w.str("src_path")?;
            w.str(s)?;
        }
        w.str("path")?;
        write_opt_str(&mut w, self.path)?;
        if let Some(v) = self.size {
            w.str("size")?;
            w.int64(v)?;
        }
        for (k, v) in [("uid", self.uid), ("gid", self.gid), ("mode", self.mode)] {
            if let Some(v) = v {
                w.str(k)?;
                w.uint32(v)?;
            }
        }
        if let Some(t) = self.modtime {
            w.str("modtime")?;
            t.write(&mut w)?;
        }
        Ok(w.len())
    }
}

/// Body of file-transfer `error`: the reference's `filetransfer.Error` (`err`, `msgtype`,
/// `msgid`), plus `code` of go-lib-micro's `ws.Error` (December 2023), which is what the current
/// server decodes file-transfer errors into: a `code` > 0 becomes the HTTP status of the user's
/// request (else 400 for `stat` and uploads, 500 for downloads; a 5xx text is hidden as
/// "internal error").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FtError<'a> {
    /// `err` (always written; nil if `None`).
    pub err: Option<&'a str>,
    /// `msgtype`: type of the message that failed.
    pub msgtype: Option<&'a str>,
    /// `msgid`
    pub msgid: Option<&'a str>,
    /// `code`: 400-599 carry HTTP meaning; 0 = absent (Go `omitempty`; mender-connect never
    /// sets it).
    pub code: i64,
}

impl<'a> FtError<'a> {
    /// Decodes the body.
    pub fn decode(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut out = Self::default();
        read_struct(body, |k, v| {
            match k {
                b"err" => out.err = opt_str(v)?,
                b"msgtype" => out.msgtype = opt_str(v)?,
                b"msgid" => out.msgid = opt_str(v)?,
                b"code" => out.code = opt_int(v, Int::as_i64)?.unwrap_or(0),
                _ => {}
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Encodes in the reference's field order, `code` last when set: err, msgtype?, msgid?,
    /// code? (the server decodes by name).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(buf);
        w.map_len(
            1 + u32::from(self.msgtype.is_some())
                + u32::from(self.msgid.is_some())
                + u32::from(self.code != 0),
        )?;
        w.str("err")?;
        write_opt_str(&mut w, self.err)?;
        if let Some(t) = self.msgtype {
            w.str("msgtype")?;
            w.str(t)?;
        }
        if let Some(t) = self.msgid {
            w.str("msgid")?;
            w.str(t)?;
        }
        if self.code != 0 {
            w.str("code")?;
            w.go_int(self.code)?;
        }
        Ok(w.len())
    }
}

/// A decoded file-transfer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileTransferMessage<'a> {
    /// `stat`
    Stat(StatFile<'a>),
    /// `file_info`
    FileInfo(FileInfo<'a>),
    /// `get_file`
    GetFile(GetFile<'a>),
    /// `put_file`
    PutFile(UploadRequest<'a>),
    /// `file_chunk`; empty `data` = end of file.
    Chunk {
        /// `props.offset` as found (check [`Int::as_go_int64`]).
        offset: Option<Int>,
        /// Body.
        data: &'a [u8],
    },
    /// `ack`
    Ack {
        /// `props.offset` as found.
        offset: Option<Int>,
    },
    /// `error`
    Error(FtError<'a>),
    /// Any other type (the reference answers an `error`
    /// `session: filetransfer message type '<typ>' not supported`).
    Unknown(&'a str),
}

impl<'a> FileTransferMessage<'a> {
    /// Interprets a frame with `proto` 2; other protos give `InvalidValue("proto")`.
    pub fn from_frame(frame: &Frame<'a>) -> Result<Self, DecodeError> {
        if frame.header.proto != Proto::FILE_TRANSFER {
            return Err(DecodeError::InvalidValue("proto"));
        }
        let offset = frame.header.props.get_int(PROP_OFFSET);
        Ok(match frame.header.typ {
            STAT => Self::Stat(StatFile::decode(frame.body)?),
            FILE_INFO => Self::FileInfo(FileInfo::decode(frame.body)?),
            GET_FILE => Self::GetFile(GetFile::decode(frame.body)?),
            PUT_FILE => Self::PutFile(UploadRequest::decode(frame.body)?),
            FILE_CHUNK => Self::Chunk { offset, data: frame.body },
            ACK => Self::Ack { offset },
            ERROR => Self::Error(FtError::decode(frame.body)?),
            other => Self::Unknown(other),
        })
    }
}

/// Encodes a `file_chunk` with props `{"offset": int64}`; empty `data` is the EOF chunk.
pub fn encode_chunk(buf: &mut [u8], sid: &str, offset: i64, data: &[u8]) -> Result<usize, EncodeError> {
    let props = [Prop::int64(PROP_OFFSET, offset)];
    FrameOut {
        proto: Proto::FILE_TRANSFER,
        typ: FILE_CHUNK,
        sid,
        props: &props,
        body: data,
        ..FrameOut::EMPTY
    }
    .encode(buf)
}

/// Encodes an `ack` with props `{"offset": int64}` and no body (the upload's initial ack).
pub fn encode_ack(buf: &mut [u8], sid: &str, offset: i64) -> Result<usize, EncodeError> {
    let props = [Prop::int64(PROP_OFFSET, offset)];
    FrameOut { proto: Proto::FILE_TRANSFER, typ: ACK, sid, props: &props, ..FrameOut::EMPTY }.encode(buf)
}

/// Encodes the reference's chunk acknowledgement: the header of the last processed chunk
/// (sid, all props verbatim) with the type changed to `ack` and no body.
pub fn encode_ack_of(buf: &mut [u8], chunk: &Frame<'_>) -> Result<usize, EncodeError> {
    FrameOut {
        proto: chunk.header.proto,
        typ: ACK,
        sid: chunk.header.sid,
        base_props: chunk.header.props,
        ..FrameOut::EMPTY
    }
    .encode(buf)
}

/// Encodes the reference's error answer to `request`: the request's header (sid, props) with
/// `typ` `error`, body `{"err": text, "msgtype": <request typ>}`.
pub fn encode_error_reply(buf: &mut [u8], request: &Frame<'_>, text: &str) -> Result<usize, EncodeError> {
    encode_coded_error_reply(buf, request, text, 0)
}

/// [`encode_error_reply`] with `code` ([`FtError::code`], 0 = none): the HTTP status the current
/// server answers the user with.
pub fn encode_coded_error_reply(
    buf: &mut [u8],
    request: &Frame<'_>,
    text: &str,
    code: i64,
) -> Result<usize, EncodeError> {
    let body = FtError { err: Some(text), msgtype: Some(request.header.typ), msgid: None, code };
    FrameOut {
        proto: request.header.proto,
        typ: ERROR,
        sid: request.header.sid,
        base_props: request.header.props,
        ..FrameOut::EMPTY
    }
    .encode_with(buf, |b| body.encode(b))
}

/// Encodes a `file_info` frame for session `sid`.
pub fn encode_file_info(buf: &mut [u8], sid: &str, info: &FileInfo<'_>) -> Result<usize, EncodeError> {
    FrameOut { proto: Proto::FILE_TRANSFER, typ: FILE_INFO, sid, ..FrameOut::EMPTY }
        .encode_with(buf, |b| info.encode(b))
}

/// Go `os.FileMode` type bits (the server tests `mode & 0x8F28_0000 == 0` for "regular").
pub mod go_file_mode {
    /// `ModeDir`
    pub const DIR: u32 = 1 << 31;
    /// `ModeSymlink`
    pub const SYMLINK: u32 = 1 << 27;
    /// `ModeDevice`
    pub const DEVICE: u32 = 1 << 26;
    /// `ModeNamedPipe`
    pub const NAMED_PIPE: u32 = 1 << 25;
    /// `ModeSocket`
    pub const SOCKET: u32 = 1 << 24;
    /// `ModeSetuid`
    pub const SETUID: u32 = 1 << 23;
    /// `ModeSetgid`
    pub const SETGID: u32 = 1 << 22;
    /// `ModeCharDevice`
    pub const CHAR_DEVICE: u32 = 1 << 21;
    /// `ModeSticky`
    pub const STICKY: u32 = 1 << 20;
    /// `ModeIrregular`
    pub const IRREGULAR: u32 = 1 << 19;

    /// Converts POSIX `st_mode` to Go `os.FileMode` bits, as Go's `os.Stat` does on Linux.
    pub const fn from_posix(st_mode: u32) -> u32 {
        let mut m = st_mode & 0o777;
        m |= match st_mode & 0o170000 {
            0o060000 => DEVICE,
            0o020000 => DEVICE | CHAR_DEVICE,
            0o040000 => DIR,
            0o010000 => NAMED_PIPE,
            0o120000 => SYMLINK,
            0o140000 => SOCKET,
            _ => 0,
        };
        if st_mode & 0o4000 != 0 {
            m |= SETUID;
        }
        if st_mode & 0o2000 != 0 {
            m |= SETGID;
        }
        if st_mode & 0o1000 != 0 {
            m |= STICKY;
        }
        m
    }

    /// True if no type bit is set (Go `FileMode.IsRegular`).
    pub const fn is_regular(mode: u32) -> bool {
        mode & (DIR | SYMLINK | NAMED_PIPE | SOCKET | DEVICE | CHAR_DEVICE | IRREGULAR) == 0
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;

#[cfg(test)]
mod tests;
