//! Control-protocol tests that need no std (see [`crate::selftest`]): run on the host and on the bare-metal runner.

use super::*;
use crate::selftest::hex;

// All vectors here are msgpack.Marshal output of vmihailenco/msgpack v5.3.5 (mender-connect
// 2.1.0's vendored version, run from Debian's golang-github-vmihailenco-msgpack.v5-dev) on
// structs with go-lib-micro ws's field names, types and tags.
// ws.Open{Versions: []int{1}} as deviceconnect sends before file transfers: a Go int is
// written compactly -> 01.
const OPEN_V1: &str = "81 a876657273696f6e73 91 01";
// ws.Accept{Version: 1, Protocols: []ws.ProtoType{1, 2}}: Version int -> 01, ProtoType (uint16)
// -> cd each.
const ACCEPT_1_2: &str = "82 a776657273696f6e 01 a970726f746f636f6c73 92 cd0001 cd0002";
// Go: msgpack.Marshal(ws.Error{Error: "x", Close: true, MessageProto: 0xFFFF, MessageType: "open"})
// as session.Error writes a rejected handshake: err, close, (code omitted), msgproto cd,
// msgtype, (msgid omitted).
const ERROR_CLOSE: &str =
    "84 a3657272 a178 a5636c6f7365 c3 a86d736770726f746f cdffff a76d736774797065 a46f70656e";

fn open_vector() {
    let o = Open::decode(&hex(OPEN_V1)).unwrap();
    assert_eq!(o.versions(), &[1]);
    assert!(o.supports(PROTOCOL_VERSION));
    let mut buf = [0u8; 32];
    let n = Open::new(&[1]).unwrap().encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(OPEN_V1)[..]);
}

fn accept_vector() {
    let a = Accept::decode(&hex(ACCEPT_1_2)).unwrap();
    assert_eq!(a.version, 1);
    assert_eq!(a.protocols(), &[Proto::SHELL, Proto::FILE_TRANSFER]);
    let mut buf = [0u8; 64];
    let n = Accept::new(1, &[1, 2]).unwrap().encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(ACCEPT_1_2)[..]);
}

fn error_vector() {
    let e = ControlError {
        err: "x",
        close: true,
        msgproto: Proto::CONTROL,
        msgtype: "open",
        ..Default::default()
    };
    let mut buf = [0u8; 64];
    let n = e.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], &hex(ERROR_CLOSE)[..]);
    assert_eq!(ControlError::decode(&buf[..n]).unwrap(), e);
}

fn error_with_code_and_msgid() {
    // Server-side ws.Error has `code int` between close and msgproto; 404 as a Go int -> cd0194.
    let e = ControlError {
        err: "bad",
        close: false,
        code: 404,
        msgproto: Proto::FILE_TRANSFER,
        msgtype: "stat",
        msgid: "m1",
    };
    let mut buf = [0u8; 96];
    let n = e.encode(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        &hex("86 a3657272 a3626164 a5636c6f7365 c2 a4636f6465 cd0194 \
        a86d736770726f746f cd0002 a76d736774797065 a473746174 a56d73676964 a26d31")[..]
    );
    assert_eq!(ControlError::decode(&buf[..n]).unwrap(), e);
}

fn tolerant_decoding() {
    // Compact widths, nil lists, unknown keys.
    let a = Accept::decode(&hex("83 a3787878 80 a776657273696f6e 01 a970726f746f636f6c73 c0")).unwrap();
    assert_eq!((a.version, a.protocols().len()), (1, 0));
    assert_eq!(Open::decode(&hex("80")).unwrap().versions(), &[] as &[i64]);
    assert_eq!(Open::decode(&hex("c0")).unwrap().versions(), &[] as &[i64]);
    // Errors: wrong element type, out of range protocol, too many versions, truncation.
    assert_eq!(Open::decode(&hex("81 a876657273696f6e73 91 a131")), Err(DecodeError::UnexpectedType));
    assert_eq!(
        Accept::decode(&hex("81 a970726f746f636f6c73 91 ce00010000")),
        Err(DecodeError::IntOutOfRange)
    );
    let mut many = hex("81 a876657273696f6e73 dc0011");
    many.extend(core::iter::repeat_n(1u8, 17));
    assert_eq!(Open::decode(&many), Err(DecodeError::CapacityExceeded));
    let ok = hex(OPEN_V1);
    for cut in 0..ok.len() {
        assert!(Open::decode(&ok[..cut]).is_err());
    }
}

fn control_message_from_frame() {
    let mut buf = [0u8; 128];
    let n = encode_accept_frame(&mut buf, "sid1", &Accept::new(1, &[1, 2, 3, 4]).unwrap()).unwrap();
    let f = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(f.header.sid, "sid1");
    match ControlMessage::from_frame(&f).unwrap() {
        ControlMessage::Accept(a) => assert_eq!(a.protocols().len(), 4),
        m => panic!("{m:?}"),
    }
    let n = encode_open_frame(&mut buf, "s", &Open::new(&[1]).unwrap()).unwrap();
    assert!(
        matches!(ControlMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(ControlMessage::Open(o)) if o.supports(1))
    );
    let n = encode_error_frame(
        &mut buf,
        "s",
        &ControlError { err: "session timeout", close: true, ..Default::default() },
    )
    .unwrap();
    let f = Frame::decode(&buf[..n]).unwrap();
    assert!(
        matches!(ControlMessage::from_frame(&f), Ok(ControlMessage::Error(e)) if e.close && e.err == "session timeout")
    );
    let n = bare(CLOSE, "s").encode(&mut buf).unwrap();
    assert_eq!(ControlMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(ControlMessage::Close));
    let n = bare("weird", "s").encode(&mut buf).unwrap();
    assert_eq!(
        ControlMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()),
        Ok(ControlMessage::Unknown("weird"))
    );
    let n =
        crate::shell::encode_with_status(&mut buf, "new", "s", crate::shell::Status::Normal, b"").unwrap();
    assert_eq!(
        ControlMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()),
        Err(DecodeError::InvalidValue("proto"))
    );
}

crate::selftests!(
    open_vector,
    accept_vector,
    error_vector,
    error_with_code_and_msgid,
    tolerant_decoding,
    control_message_from_frame,
);
