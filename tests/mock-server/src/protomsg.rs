//! The ProtoMsg envelope used on every deviceconnect websocket:
//! `{"hdr": {"proto", "typ", "sid", "props"}, "body": bin}`.

use crate::msgpack::{self, DecodeError, Reader, Value, write};

pub const PROTO_SHELL: u16 = 1;
pub const PROTO_FILE_TRANSFER: u16 = 2;
pub const PROTO_MENDER_CLIENT: u16 = 4;
pub const PROTO_CONTROL: u16 = 0xFFFF;

/// A decoded message whose header values keep their original encoding.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub proto: u16,
    pub typ: String,
    pub sid: String,
    /// Property name and the raw encoded value, in wire order.
    pub props: Vec<(String, &'a [u8])>,
    pub body: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    Msgpack(DecodeError),
    NotAMap,
    BadField(&'static str),
}

impl From<DecodeError> for ProtoError {
    fn from(e: DecodeError) -> Self {
        ProtoError::Msgpack(e)
    }
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtoError::Msgpack(e) => write!(f, "{e}"),
            ProtoError::NotAMap => f.write_str("msgpack: message is not a map"),
            ProtoError::BadField(name) => write!(f, "msgpack: invalid type for field {name}"),
        }
    }
}

impl std::error::Error for ProtoError {}

impl<'a> Parsed<'a> {
    pub fn prop(&self, name: &str) -> Option<Value> {
        self.props.iter().find(|(k, _)| k == name).and_then(|(_, raw)| msgpack::decode(raw).ok())
    }

    /// The raw encoded bytes of a property (to check integer widths).
    #[cfg(test)]
    pub fn prop_raw(&self, name: &str) -> Option<&'a [u8]> {
        self.props.iter().find(|(k, _)| k == name).map(|(_, raw)| *raw)
    }

    pub fn body_bytes(&self) -> &'a [u8] {
        self.body.unwrap_or(&[])
    }

    /// The body decoded as a msgpack value (file-transfer and control bodies).
    pub fn body_value(&self) -> Option<Value> {
        self.body.and_then(|b| msgpack::decode(b).ok())
    }
}

fn opt_string(r: &mut Reader<'_>, field: &'static str) -> Result<String, ProtoError> {
    if r.next_is_nil() {
        r.raw_value()?;
        return Ok(String::new());
    }
    match r.str_or_bin()? {
        Some(b) => String::from_utf8(b.to_vec()).map_err(|_| ProtoError::BadField(field)),
        None => Err(ProtoError::BadField(field)),
    }
}

/// Decodes a ProtoMsg, accepting any key order, missing keys and explicit nils.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, ProtoError> {
    let mut r = Reader::new(buf);
    let n = r.map_len()?.ok_or(ProtoError::NotAMap)?;
    let mut msg = Parsed { proto: 0, typ: String::new(), sid: String::new(), props: Vec::new(), body: None };
    for _ in 0..n {
        let key = r.str_or_bin()?.ok_or(ProtoError::BadField("key"))?;
        match key {
            b"hdr" => parse_header(&mut r, &mut msg)?,
            b"body" => {
                if r.next_is_nil() {
                    r.raw_value()?;
                } else {
                    let b = r.str_or_bin()?.ok_or(ProtoError::BadField("body"))?;
                    msg.body = Some(b);
                }
            }
            _ => {
                r.raw_value()?;
            }
        }
    }
    Ok(msg)
}

fn parse_header<'a>(r: &mut Reader<'a>, msg: &mut Parsed<'a>) -> Result<(), ProtoError> {
    if r.next_is_nil() {
        r.raw_value()?;
        return Ok(());
    }
    let n = r.map_len()?.ok_or(ProtoError::BadField("hdr"))?;
    for _ in 0..n {
        let key = r.str_or_bin()?.ok_or(ProtoError::BadField("hdr key"))?;
        match key {
            b"proto" => {
                let v = r.value()?;
                msg.proto = match v {
                    Value::Nil => 0,
                    Value::Int(i) => u16::try_from(i).map_err(|_| ProtoError::BadField("proto"))?,
                    _ => return Err(ProtoError::BadField("proto")),
                };
            }
            b"typ" => msg.typ = opt_string(r, "typ")?,
            b"sid" => msg.sid = opt_string(r, "sid")?,
            b"props" => {
                if r.next_is_nil() {
                    r.raw_value()?;
                    continue;
                }
                let m = r.map_len()?.ok_or(ProtoError::BadField("props"))?;
                for _ in 0..m {
                    let k = r.str_or_bin()?.ok_or(ProtoError::BadField("props key"))?;
                    let k = String::from_utf8(k.to_vec()).map_err(|_| ProtoError::BadField("props key"))?;
                    let raw = r.raw_value()?;
                    msg.props.push((k, raw));
                }
            }
            _ => {
                r.raw_value()?;
            }
        }
    }
    Ok(())
}

/// A property value for messages the mock writes itself.
#[derive(Debug, Clone)]
pub enum Prop<'a> {
    /// Go `int64` (file-transfer `offset`): always 0xd3.
    I64(i64),
    /// Go `int` or a named int type (shell `status`): smallest encoding, as msgpack v5 writes it.
    Int(i64),
    /// Go `uint16` (playback `delay_value`): always 0xcd.
    U16(u16),
    Str(&'a str),
    /// An already-encoded value copied verbatim.
    Raw(&'a [u8]),
}

/// Encodes a ProtoMsg the way the Go server does: `proto` as uint16, empty `typ`/`sid`/`props`/
/// `body` omitted, `body` as bin.
pub fn encode(proto: u16, typ: &str, sid: &str, props: &[(&str, Prop<'_>)], body: Option<&[u8]>) -> Vec<u8> {
    let body = body.filter(|b| !b.is_empty());
    let mut out = Vec::with_capacity(64 + body.map_or(0, <[u8]>::len));
    write::map_len(&mut out, if body.is_some() { 2 } else { 1 });
    write::str(&mut out, "hdr");
    let hdr_len = 1 + u32::from(!typ.is_empty()) + u32::from(!sid.is_empty()) + u32::from(!props.is_empty());
    write::map_len(&mut out, hdr_len);
    write::str(&mut out, "proto");
    write::u16(&mut out, proto);
    if !typ.is_empty() {
        write::str(&mut out, "typ");
        write::str(&mut out, typ);
    }
    if !sid.is_empty() {
        write::str(&mut out, "sid");
        write::str(&mut out, sid);
    }
    if !props.is_empty() {
        write::str(&mut out, "props");
        write::map_len(&mut out, props.len() as u32);
        for (k, v) in props {
            write::str(&mut out, k);
            match v {
                Prop::I64(i) => write::i64(&mut out, *i),
                Prop::Int(i) => write::int(&mut out, *i),
                Prop::U16(i) => write::u16(&mut out, *i),
                Prop::Str(s) => write::str(&mut out, s),
                Prop::Raw(r) => out.extend_from_slice(r),
            }
        }
    }
    if let Some(b) = body {
        write::str(&mut out, "body");
        write::bin(&mut out, b);
    }
    out
}

/// Rewrites a user message for the device: `sid` forced to the session id, `props.user_id`
/// set, every other property copied with its original encoding.
pub fn rewrite_for_device(msg: &Parsed<'_>, sid: &str, user_id: &str) -> Vec<u8> {
    let mut props: Vec<(&str, Prop<'_>)> = msg
        .props
        .iter()
        .filter(|(k, _)| k != "user_id")
        .map(|(k, raw)| (k.as_str(), Prop::Raw(raw)))
        .collect();
    props.push(("user_id", Prop::Str(user_id)));
    encode(msg.proto, &msg.typ, sid, &props, msg.body)
}

/// Body encoders for the mock's own messages.
pub mod body {
    use crate::msgpack::write;

    /// Control `open`: `{"versions": [1]}`; Go `[]int`, so compact integers.
    pub fn open() -> Vec<u8> {
        let mut out = Vec::new();
        write::map_len(&mut out, 1);
        write::str(&mut out, "versions");
        write::array_len(&mut out, 1);
        write::int(&mut out, 1);
        out
    }

    /// `stat` and `get_file`: `{"path": ...}`.
    pub fn path(path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write::map_len(&mut out, 1);
        write::str(&mut out, "path");
        write::str(&mut out, path);
        out
    }

    /// `put_file`: `{"src_path", "path", "uid"?, "gid"?, "mode"?}`; ids and mode as uint32.
    pub fn put_file(
        src_path: &str,
        path: &str,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Vec<u8> {
        let n = 2 + u32::from(uid.is_some()) + u32::from(gid.is_some()) + u32::from(mode.is_some());
        let mut out = Vec::new();
        write::map_len(&mut out, n);
        write::str(&mut out, "src_path");
        write::str(&mut out, src_path);
        write::str(&mut out, "path");
        write::str(&mut out, path);
        for (k, v) in [("uid", uid), ("gid", gid), ("mode", mode)] {
            if let Some(v) = v {
                write::str(&mut out, k);
                write::u32(&mut out, v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_widths_and_forces_sid() {
        // User message with sid "x", props {status: fixint 1, timeout: int64 5, user_id: "evil"}.
        let mut m = Vec::new();
        write::map_len(&mut m, 2);
        write::str(&mut m, "hdr");
        write::map_len(&mut m, 4);
        write::str(&mut m, "proto");
        m.push(0x01);
        write::str(&mut m, "typ");
        write::str(&mut m, "new");
        write::str(&mut m, "sid");
        write::str(&mut m, "x");
        write::str(&mut m, "props");
        write::map_len(&mut m, 3);
        write::str(&mut m, "status");
        m.push(0x01);
        write::str(&mut m, "timeout");
        write::i64(&mut m, 5);
        write::str(&mut m, "user_id");
        write::str(&mut m, "evil");
        write::str(&mut m, "body");
        write::str(&mut m, "hi");
        let p = parse(&m).unwrap_or_else(|e| panic!("{e}"));
        let out = rewrite_for_device(&p, "S1", "U1");
        let q = parse(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.proto, 1);
        assert_eq!(q.sid, "S1");
        assert_eq!(q.prop("user_id").and_then(|v| v.as_str().map(str::to_owned)).as_deref(), Some("U1"));
        assert_eq!(q.prop_raw("status"), Some(&[0x01][..]));
        assert_eq!(q.prop_raw("timeout").map(|r| r[0]), Some(0xd3));
        assert_eq!(q.body, Some(&b"hi"[..]));
        // body is re-encoded as bin, proto as uint16
        assert!(out.windows(3).any(|w| w == [0xc4, 2, b'h']));
        assert!(out.windows(3).any(|w| w == [0xcd, 0, 1]));
    }

    #[test]
    fn nil_fields_are_accepted() {
        let mut m = Vec::new();
        write::map_len(&mut m, 2);
        write::str(&mut m, "hdr");
        write::map_len(&mut m, 4);
        write::str(&mut m, "proto");
        m.push(0x01);
        write::str(&mut m, "typ");
        write::str(&mut m, "new");
        write::str(&mut m, "sid");
        m.push(0xc0);
        write::str(&mut m, "props");
        m.push(0xc0);
        write::str(&mut m, "body");
        m.push(0xc0);
        let p = parse(&m).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.sid, "");
        assert!(p.props.is_empty());
        assert!(p.body.is_none());
    }

    #[test]
    fn empty_fields_are_omitted() {
        let out = encode(PROTO_MENDER_CLIENT, "check-update", "", &[("user_id", Prop::Str("u"))], None);
        let v = msgpack::decode(&out).unwrap_or(Value::Nil);
        assert!(v.get("body").is_none());
        assert!(v.get("hdr").and_then(|h| h.get("sid")).is_none());
    }
}
