//! Frame tests that need no std (see [`crate::selftest`]): run on the host and on the bare-metal runner.

use super::*;
use crate::msgpack::IntWidth;
use crate::selftest::{hex, hex_n};

// Go: ws.ProtoMsg{Header: ws.ProtoHdr{Proto: 1, MsgType: "new", SessionID: "abc",
// Properties: {"status": wsshell.NormalMessage}}, Body: []byte("Shell started")}
// as mender-connect 2.1.0 app/daemon_shell.go answers a successful `new`. Bytes are the output of
// msgpack.Marshal with vmihailenco/msgpack v5.3.5 (the version 2.1.0 vendors; Debian package
// golang-github-vmihailenco-msgpack.v5-dev): struct -> map in field order, omitempty honoured,
// ProtoType (uint16) -> cd, MenderShellMessageStatus (a Go int) -> compact fixint 01,
// []byte -> bin8 (c4).
pub(super) const SHELL_NEW_REPLY: &str = "82 a3686472 84 \
     a570726f746f cd0001 \
     a3747970 a36e6577 \
     a3736964 a3616263 \
     a570726f7073 81 a6737461747573 01 \
     a4626f6479 c40d 5368656c6c2073746172746564";

fn decodes_go_shell_reply() {
    let bytes = hex(SHELL_NEW_REPLY);
    let f = Frame::decode(&bytes).unwrap();
    assert_eq!(f.header.proto, Proto::SHELL);
    assert_eq!(f.header.typ, "new");
    assert_eq!(f.header.sid, "abc");
    assert_eq!(f.body, b"Shell started");
    let st = f.header.props.get_int("status").unwrap();
    assert_eq!(st.width(), IntWidth::PosFixint);
    assert_eq!(st.as_i64(), Some(1));
    assert_eq!(st.as_go_int64(), None);
    assert_eq!(f.header.props.len(), 1);
}

fn encodes_go_shell_reply_byte_exact() {
    let props = [Prop::go_int("status", 1)];
    let out = FrameOut {
        proto: Proto::SHELL,
        typ: "new",
        sid: "abc",
        props: &props,
        body: b"Shell started",
        ..FrameOut::EMPTY
    };
    let mut buf = [0u8; 128];
    let n = out.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(SHELL_NEW_REPLY)[..]);
}

// Go: ws.ProtoMsg{Header: ws.ProtoHdr{Proto: ws.ProtoTypeControl, MsgType: "ping", SessionID: "s"}}
// (session.Ping in mender-connect 2.1.0): props and body empty, so omitted; hdr has 3 fields.
// Same bytes as msgpack.Marshal with vmihailenco/msgpack v5.3.5.
const CONTROL_PING: &str = "81 a3686472 83 a570726f746f cdffff a3747970 a470696e67 a3736964 a173";

fn control_ping_vector_both_ways() {
    let mut buf = [0u8; 64];
    let n = crate::control::bare(crate::control::PING, "s").encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(CONTROL_PING)[..]);
    let f = Frame::decode(&buf[..n]).unwrap();
    assert_eq!((f.header.proto, f.header.typ, f.header.sid, f.body), (Proto::CONTROL, "ping", "s", &[][..]));
    assert!(f.header.props.is_empty());
}

fn tolerates_nil_fields_any_order_unknown_keys_and_str_body() {
    // What the Python test client sends: {"hdr": {"proto": 1, "typ": "new", "sid": None,
    // "props": None}, "body": None}, here with body first, an unknown top-level key holding a
    // nested map/array, bin keys, and proto as a positive fixint.
    let bytes = hex("84 \
        a4626f6479 c0 \
        a56578747261 82 a161 93 01 c0 81 a162 c3 a163 c70301616263 \
        c403686472 85 a3736964 c0 a570726f7073 c0 a3747970 a36e6577 a570726f746f 01 a3657874 91 90 \
        a4626f6479 a26869");
    let f = Frame::decode(&bytes).unwrap();
    assert_eq!(f.header.proto, Proto::SHELL);
    assert_eq!(f.header.typ, "new");
    assert_eq!(f.header.sid, "");
    assert!(f.header.props.is_empty());
    // The later `body` key (a str "hi") wins over the earlier nil, as in Go.
    assert_eq!(f.body, b"hi");
}

fn missing_hdr_and_top_level_nil_give_zero_frame() {
    let empty = hex("80");
    let f = Frame::decode(&empty).unwrap();
    assert_eq!(f.header.proto, Proto::INVALID);
    let nil = hex("c0");
    let f = Frame::decode(&nil).unwrap();
    assert_eq!(f.header.proto, Proto::INVALID);
    assert!(f.body.is_empty());
}

fn reports_integer_widths_as_found() {
    // props {"status": 1 (fixint), "offset": cd 0400, "timeout": d3 65}
    let bytes = hex("81 a3686472 82 a570726f746f cd0001 a570726f7073 83 \
        a6737461747573 01 a66f6666736574 cd0400 a774696d656f7574 d30000000000000041");
    let f = Frame::decode(&bytes).unwrap();
    let p = f.header.props;
    assert_eq!(p.get_int("status").unwrap().width(), IntWidth::PosFixint);
    assert_eq!(p.get_int("status").unwrap().as_go_int64(), None);
    assert_eq!(p.get_i64("status"), Some(1));
    assert_eq!(p.get_int("offset").unwrap().width(), IntWidth::U16);
    assert_eq!(p.get_i64("offset"), Some(1024));
    assert_eq!(p.get_int("timeout").unwrap().as_go_int64(), Some(65));
    assert_eq!(p.get("nope"), None);
    assert_eq!(p.get_str("status"), None);
}

fn rejects_bad_shapes() {
    // proto 65536 does not fit uint16
    assert_eq!(
        Frame::decode(&hex("81 a3686472 81 a570726f746f ce00010000")),
        Err(DecodeError::IntOutOfRange)
    );
    // negative proto
    assert_eq!(Frame::decode(&hex("81 a3686472 81 a570726f746f ff")), Err(DecodeError::IntOutOfRange));
    // props with an integer key
    assert_eq!(Frame::decode(&hex("81 a3686472 81 a570726f7073 81 01 02")), Err(DecodeError::InvalidKey));
    // top-level integer key
    assert_eq!(Frame::decode(&hex("81 01 02")), Err(DecodeError::InvalidKey));
    // body as a map
    assert_eq!(Frame::decode(&hex("81 a4626f6479 80")), Err(DecodeError::UnexpectedType));
    // typ as an int
    assert_eq!(Frame::decode(&hex("81 a3686472 81 a3747970 05")), Err(DecodeError::UnexpectedType));
    // typ not UTF-8
    assert_eq!(Frame::decode(&hex("81 a3686472 81 a3747970 a1ff")), Err(DecodeError::InvalidUtf8));
    // not a map
    assert_eq!(Frame::decode(&hex("93 01 02 03")), Err(DecodeError::UnexpectedType));
    // reserved marker inside an unknown key's value
    assert_eq!(Frame::decode(&hex("81 a178 c1")), Err(DecodeError::InvalidMarker(0xc1)));
    // map16 claiming 65535 entries in a few bytes
    assert_eq!(Frame::decode(&hex("de ffff a178 01")), Err(DecodeError::Truncated));
}

fn oversize_is_refused_and_limit_is_inclusive() {
    // A frame of exactly 8192 bytes: {"body": bin16 of 8192-1-5-3 bytes}.
    let n = MAX_FRAME_LEN - 1 - 5 - 3;
    let mut v = hex_n::<{ MAX_FRAME_LEN + 1 }>("81 a4626f6479 c5");
    v.extend_from_slice(&(n as u16).to_be_bytes()).unwrap();
    v.resize(MAX_FRAME_LEN, 0x61).unwrap();
    assert_eq!(Frame::decode(&v).unwrap().body.len(), n);
    v.push(0).unwrap();
    assert_eq!(Frame::decode(&v), Err(DecodeError::TooLarge));
}

fn every_truncation_fails_cleanly() {
    let bytes = hex(SHELL_NEW_REPLY);
    for cut in 0..bytes.len() {
        assert!(Frame::decode(&bytes[..cut]).is_err(), "prefix {cut} decoded");
    }
}

/// The proptest `mutated_frames_never_panic` needs std; this deterministic sweep also runs on the
/// 32-bit target, where length arithmetic overflows at 4 GiB instead of 16 EiB: every byte of a Go
/// frame replaced by each msgpack marker class, the result decoded, typed, re-encoded.
fn every_single_byte_mutation_is_handled() {
    const MARKERS: [u8; 16] =
        [0x00, 0x7f, 0x80, 0x8f, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xcd, 0xd3, 0xd9, 0xdb, 0xdf, 0xff];
    let bytes = hex(SHELL_NEW_REPLY);
    let mut decoded = 0;
    for i in 0..bytes.len() {
        for m in MARKERS {
            let mut v = bytes.clone();
            v[i] = m;
            if let Ok(f) = Frame::decode(&v) {
                decoded += 1;
                let _ = crate::shell::ShellMessage::from_frame(&f);
                let _ = crate::control::ControlMessage::from_frame(&f);
                for _ in f.header.props.iter() {}
                let mut buf = [0u8; 256];
                let _ = f.encode(&mut buf);
            }
        }
    }
    // Mutations inside the strings and the body still decode.
    assert!(decoded > 0);
}

fn reencoding_a_go_frame_is_byte_identical() {
    let bytes = hex(SHELL_NEW_REPLY);
    let f = Frame::decode(&bytes).unwrap();
    let mut buf = [0u8; 128];
    let n = f.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
}

fn base_props_are_kept_verbatim_and_overridden_by_key() {
    // Received props: {"status": 01 (fixint), "user_id": "old"}; rewrite user_id as the server
    // does on user->device messages, keeping status' fixint encoding.
    let bytes =
        hex("81 a3686472 82 a570726f746f cd0001 a570726f7073 82 a6737461747573 01 a7757365725f6964 a36f6c64");
    let f = Frame::decode(&bytes).unwrap();
    let props = [Prop::str("user_id", "new-user")];
    let out = FrameOut {
        proto: f.header.proto,
        typ: "x",
        sid: "sid",
        props: &props,
        base_props: f.header.props,
        body: &[],
    };
    let mut buf = [0u8; 128];
    let n = out.encode(&mut buf).unwrap();
    let g = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(g.header.props.len(), 2);
    assert_eq!(g.header.props.get_int("status").unwrap().width(), IntWidth::PosFixint);
    assert_eq!(g.header.props.get_str("user_id"), Some("new-user"));
    assert_eq!(g.header.sid, "sid");
}

fn encode_with_empty_body_omits_body() {
    let out = FrameOut { proto: Proto::CONTROL, typ: "close", sid: "s", ..FrameOut::EMPTY };
    let mut a = [0u8; 64];
    let mut b = [0u8; 64];
    let na = out.encode(&mut a).unwrap();
    let nb = out.encode_with(&mut b, |_| Ok(0)).unwrap();
    assert_eq!(&a[..na], &b[..nb]);
    assert_eq!(a[0], 0x81);
}

fn small_buffers_error_without_panicking() {
    let props = [Prop::go_int("status", 1)];
    let out = FrameOut {
        proto: Proto::SHELL,
        typ: "new",
        sid: "abc",
        props: &props,
        body: b"Shell started",
        ..FrameOut::EMPTY
    };
    let full = hex(SHELL_NEW_REPLY).len();
    for size in 0..full {
        let mut space = [0u8; 128];
        let buf = &mut space[..size];
        assert_eq!(out.encode(buf), Err(EncodeError::BufferTooSmall));
        assert_eq!(
            out.encode_with(buf, |b| {
                let src = b"Shell started";
                let dst = b.get_mut(..src.len()).ok_or(EncodeError::BufferTooSmall)?;
                dst.copy_from_slice(src);
                Ok(src.len())
            }),
            Err(EncodeError::BufferTooSmall)
        );
    }
}

fn non_utf8_and_bin_prop_keys_relay_verbatim() {
    // props {"\xff": 1, bin "k": 2}: Go would keep such keys as strings; relays keep the bytes.
    let bytes = hex("81 a3686472 82 a570726f746f cd0001 a570726f7073 82 a1ff 01 c4016b 02");
    let f = Frame::decode(&bytes).unwrap();
    assert_eq!(f.header.props.len(), 2);
    let mut buf = [0u8; 64];
    let n = f.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &bytes[..]);
}

fn header_vectors_for_every_message_type() {
    // Go: ws.ProtoMsg{Header: ws.ProtoHdr{Proto: p, MsgType: t, SessionID: "s"}} with no props
    // and no body encodes as {"hdr": {"proto": cd p, "typ": fixstr t, "sid": "s"}}. This
    // covers every type of every protocol in both directions of the codec.
    let types: &[(u16, &[&str])] = &[
        (0xffff, &["ping", "pong", "open", "accept", "close", "error"]),
        (1, &["new", "stop", "shell", "resize", "ping", "pong"]),
        (2, &["stat", "file_info", "get_file", "put_file", "file_chunk", "ack", "error"]),
        (3, &["new", "forward", "ack", "stop", "error"]),
        (4, &["check-update", "send-inventory"]),
    ];
    for (proto, typs) in types {
        for typ in *typs {
            let mut want = hex("81 a3686472 83 a570726f746f cd");
            want.extend_from_slice(&proto.to_be_bytes()).unwrap();
            want.extend(hex("a3747970"));
            want.push(0xa0 | typ.len() as u8).unwrap();
            want.extend_from_slice(typ.as_bytes()).unwrap();
            want.extend(hex("a3736964 a173"));
            let mut buf = [0u8; 64];
            let n =
                FrameOut { proto: Proto(*proto), typ, sid: "s", ..FrameOut::EMPTY }.encode(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..], "{proto} {typ}");
            let f = Frame::decode(&want).unwrap();
            assert_eq!((f.header.proto, f.header.typ, f.header.sid), (Proto(*proto), *typ, "s"));
        }
    }
}

crate::selftests!(
    decodes_go_shell_reply,
    encodes_go_shell_reply_byte_exact,
    control_ping_vector_both_ways,
    tolerates_nil_fields_any_order_unknown_keys_and_str_body,
    missing_hdr_and_top_level_nil_give_zero_frame,
    reports_integer_widths_as_found,
    rejects_bad_shapes,
    oversize_is_refused_and_limit_is_inclusive,
    every_truncation_fails_cleanly,
    every_single_byte_mutation_is_handled,
    reencoding_a_go_frame_is_byte_identical,
    base_props_are_kept_verbatim_and_overridden_by_key,
    encode_with_empty_body_omits_body,
    small_buffers_error_without_panicking,
    non_utf8_and_bin_prop_keys_relay_verbatim,
    header_vectors_for_every_message_type,
);
