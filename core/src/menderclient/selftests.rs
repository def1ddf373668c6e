//! Mender-client-protocol tests that need no std (see [`crate::selftest`]): run on the host and on the bare-metal runner.

use super::*;
use crate::selftest::hex;

// Go: deviceconnect's check-update request (server.md §3.6): ProtoMsg{Header{Proto: 4,
// MsgType: "check-update", Properties: {"user_id": "u"}}}: no sid, no body.
const REQ_V: &str = "81 a3686472 83 a570726f746f cd0004 a3747970 ac636865636b2d757064617465 a570726f7073 81 a7757365725f6964 a175";
// Go: menderClientHandler's success answer: props {"status": int(1)} -> compact 01 with
// vmihailenco/msgpack v5.3.5 (checked against the library), sid "" omitted.
const OK_V: &str = "81 a3686472 83 a570726f746f cd0004 a3747970 ac636865636b2d757064617465 a570726f7073 81 a6737461747573 01";

fn request_and_reply_vectors() {
    let req = hex(REQ_V);
    let f = Frame::decode(&req).unwrap();
    let m = MenderClientMessage::from_frame(&f).unwrap();
    assert_eq!(m, MenderClientMessage::CheckUpdate);
    assert_eq!(m.command(), Some("check-update"));
    let mut buf = [0u8; 128];
    let n = FrameOut {
        proto: Proto::MENDER_CLIENT,
        typ: CHECK_UPDATE,
        props: &[Prop::str("user_id", "u")],
        ..FrameOut::EMPTY
    }
    .encode(&mut buf)
    .unwrap();
    assert_eq!(&buf[..n], &req[..]);
    let n = encode_reply(&mut buf, &f, None).unwrap();
    assert_eq!(&buf[..n], &hex(OK_V)[..]);
}

fn error_reply_and_unknown() {
    let mut buf = [0u8; 128];
    let n = FrameOut { proto: Proto::MENDER_CLIENT, typ: "reboot", sid: "s", ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    let req = heapless::Vec::<u8, 128>::from_slice(&buf[..n]).unwrap();
    let f = Frame::decode(&req).unwrap();
    assert_eq!(MenderClientMessage::from_frame(&f), Ok(MenderClientMessage::Unknown("reboot")));
    let n = encode_reply(&mut buf, &f, Some(UNKNOWN_TYPE_ERROR)).unwrap();
    let r = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(
        r.header.props.get_int(PROP_STATUS).map(|i| (i.width(), i.as_i64())),
        Some((crate::msgpack::IntWidth::PosFixint, Some(2)))
    );
    assert_eq!((r.header.typ, r.header.sid, r.body), ("reboot", "s", UNKNOWN_TYPE_ERROR.as_bytes()));
}

crate::selftests!(request_and_reply_vectors, error_reply_and_unknown,);
