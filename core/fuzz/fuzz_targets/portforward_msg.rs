//! Fuzzes the port-forward protocol (3) parser: `new` and `error` bodies round-trip through
//! their encoders; whole frames (proto forced to 3) parse the same after a re-encode; the frames
//! the agent answers with parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::frame::{Frame, Proto};
use mender_connect_core::portforward::{self as pf, PfError, PortForwardMessage, PortForwardNew};

const BUF: usize = 4 * MAX_FRAME_LEN;

fn bodies(b: &[u8], buf: &mut [u8]) {
    if let Ok(v) = PortForwardNew::decode(b) {
        let n = v.encode(buf).expect("a decoded new re-encodes");
        assert_eq!(PortForwardNew::decode(&buf[..n]).expect("re-encoded new decodes"), v);
        if let Some((host, port, proto)) = v.target() {
            assert!(!host.is_empty() && port != 0 && !proto.is_empty());
        }
        let _ = v.protocol_kind();
    }
    if let Ok(v) = PfError::decode(b) {
        let n = v.encode(buf).expect("a decoded error re-encodes");
        assert_eq!(PfError::decode(&buf[..n]).expect("re-encoded error decodes"), v);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut buf = vec![0u8; BUF];
    bodies(data, &mut buf);
    let Ok(mut f) = Frame::decode(data) else { return };
    f.header.proto = Proto::PORT_FORWARD;
    bodies(f.body, &mut buf);
    let Ok(msg) = PortForwardMessage::from_frame(&f) else { return };
    let n = f.encode(&mut buf).expect("a decoded port-forward frame re-encodes");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("re-encoded frame decodes");
        assert_eq!(PortForwardMessage::from_frame(&g).expect("re-encoded message parses"), msg);
    }
    let (sid, typ) = (f.header.sid, f.header.typ);
    let connection_id = match msg {
        PortForwardMessage::New { connection_id, .. }
        | PortForwardMessage::Forward { connection_id, .. }
        | PortForwardMessage::Ack { connection_id }
        | PortForwardMessage::Stop { connection_id } => connection_id,
        _ => "",
    };
    let n = pf::encode(&mut buf, typ, sid, connection_id, f.body).expect("a port-forward answer fits");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("answer decodes");
        assert_eq!((g.header.typ, g.header.sid, g.body), (typ, sid, f.body));
        assert_eq!(g.header.props.get_str(pf::PROP_CONNECTION_ID), Some(connection_id));
    }
    let n = pf::encode_error(&mut buf, sid, typ, "fuzz").expect("a port-forward error fits");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("error decodes");
        assert_eq!(
            PortForwardMessage::from_frame(&g),
            Ok(PortForwardMessage::Error(PfError { err: Some("fuzz"), msgtype: Some(typ) }))
        );
    }
});
