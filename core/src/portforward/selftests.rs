//! Port-forward tests that need no std (see [`crate::selftest`]): run on the host and on the bare-metal runner.

use super::*;
use crate::selftest::hex;

// Vectors equal the msgpack.Marshal output of vmihailenco/msgpack v5.3.5 (checked with Debian's
// golang-github-vmihailenco-msgpack.v5-dev) on go-lib-micro ws/portforward's struct shapes.

// Go: msgpack.Marshal(wspf.PortForwardNew{RemoteHost: &"localhost", RemotePort: &22,
// Protocol: &"tcp"}) as mender-cli sends it: *uint16 -> cd.
const NEW_V: &str = "83 ab72656d6f74655f686f7374 a96c6f63616c686f7374 ab72656d6f74655f706f7274 cd0016 a870726f746f636f6c a3746370";

// Go: the device's forward from MenderPortForwarder.Read: props {"connection_id": id}, body.
const FORWARD_V: &str = "82 a3686472 84 a570726f746f cd0003 a3747970 a7666f7277617264 a3736964 a173 \
    a570726f7073 81 ad636f6e6e656374696f6e5f6964 a163 a4626f6479 c403 616263";

// Go: portForwardHandler error: wspf.Error{Error: &"unknown connection", MessageType: &"ack"},
// header with sid only.
const ERROR_V: &str = "81 a3686472 83 a570726f746f cd0003 a3747970 a56572726f72 a3736964 a173";

fn new_vector() {
    let v = hex(NEW_V);
    let n = PortForwardNew::decode(&v).unwrap();
    assert_eq!(n.target(), Some(("localhost", 22, "tcp")));
    assert_eq!(n.protocol_kind(), Some(Protocol::Tcp));
    let mut buf = [0u8; 64];
    let len = n.encode(&mut buf).unwrap();
    assert_eq!(&buf[..len], &hex(NEW_V)[..]);
}

fn forward_vector() {
    let mut buf = [0u8; 128];
    let n = encode(&mut buf, FORWARD, "s", "c", b"abc").unwrap();
    assert_eq!(&buf[..n], &hex(FORWARD_V)[..]);
    let f = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(
        PortForwardMessage::from_frame(&f),
        Ok(PortForwardMessage::Forward { connection_id: "c", data: b"abc" })
    );
}

fn error_vector() {
    let mut buf = [0u8; 128];
    let n = encode_error(&mut buf, "s", ACK, "unknown connection").unwrap();
    let mut want = hex(ERROR_V);
    want[0] = 0x82;
    want.extend(hex(
        "a4626f6479 c424 82 a3657272 b2756e6b6e6f776e20636f6e6e656374696f6e a76d736774797065 a361636b",
    ));
    assert_eq!(&buf[..n], &want[..]);
    let f = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(
        PortForwardMessage::from_frame(&f),
        Ok(PortForwardMessage::Error(PfError { err: Some("unknown connection"), msgtype: Some(ACK) }))
    );
}

fn incomplete_new_is_detected() {
    // udp with port 0, and a missing host.
    let bad = PortForwardNew { remote_host: Some("h"), remote_port: Some(0), protocol: Some("udp") };
    assert_eq!(bad.target(), None);
    let mut buf = [0u8; 64];
    let n = PortForwardNew { remote_host: None, remote_port: Some(53), protocol: Some("udp") }
        .encode(&mut buf)
        .unwrap();
    let d = PortForwardNew::decode(&buf[..n]).unwrap();
    assert_eq!((d.remote_host, d.target()), (None, None));
    assert_eq!(Protocol::parse("TCP"), None);
    assert_eq!(
        PortForwardNew::decode(&hex("81 ab72656d6f74655f706f7274 ce00010000")),
        Err(DecodeError::IntOutOfRange)
    );
}

fn other_messages() {
    let mut buf = [0u8; 128];
    for (typ, want) in [
        (ACK, PortForwardMessage::Ack { connection_id: "c" }),
        (STOP, PortForwardMessage::Stop { connection_id: "c" }),
        ("zzz", PortForwardMessage::Unknown("zzz")),
    ] {
        let n = encode(&mut buf, typ, "s", "c", b"").unwrap();
        assert_eq!(PortForwardMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(want));
    }
    let body = hex(NEW_V);
    let props = [Prop::str(PROP_CONNECTION_ID, "c1")];
    let n = FrameOut { proto: Proto::PORT_FORWARD, typ: NEW, props: &props, body: &body, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    match PortForwardMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()).unwrap() {
        PortForwardMessage::New { connection_id, request } => {
            assert_eq!(connection_id, "c1");
            assert_eq!(request.target(), Some(("localhost", 22, "tcp")));
        }
        m => panic!("{m:?}"),
    }
}

crate::selftests!(new_vector, forward_vector, error_vector, incomplete_new_is_detected, other_messages,);
