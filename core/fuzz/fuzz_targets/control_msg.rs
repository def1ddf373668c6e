//! Fuzzes the control protocol (0xFFFF) parser: every input is read both as a whole frame (its
//! `proto` forced to control, so every `typ`/body combination reaches the parser) and as a bare
//! `open`/`accept`/`error` body. Whatever parses must re-encode and parse back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::control::{self, Accept, ControlError, ControlMessage, Open};
use mender_connect_core::frame::{Frame, Proto};

const BUF: usize = 4 * MAX_FRAME_LEN;

fn bodies(b: &[u8]) {
    let mut buf = vec![0u8; BUF];
    if let Ok(o) = Open::decode(b) {
        let n = o.encode(&mut buf).expect("a decoded open re-encodes");
        assert_eq!(Open::decode(&buf[..n]).expect("re-encoded open decodes"), o);
        let _ = o.supports(control::PROTOCOL_VERSION);
    }
    if let Ok(a) = Accept::decode(b) {
        let n = a.encode(&mut buf).expect("a decoded accept re-encodes");
        assert_eq!(Accept::decode(&buf[..n]).expect("re-encoded accept decodes"), a);
    }
    if let Ok(e) = ControlError::decode(b) {
        let n = e.encode(&mut buf).expect("a decoded error re-encodes");
        assert_eq!(ControlError::decode(&buf[..n]).expect("re-encoded error decodes"), e);
    }
}

fuzz_target!(|data: &[u8]| {
    bodies(data);
    let Ok(mut f) = Frame::decode(data) else { return };
    f.header.proto = Proto::CONTROL;
    bodies(f.body);
    let Ok(msg) = ControlMessage::from_frame(&f) else { return };
    let sid = f.header.sid;
    let mut buf = vec![0u8; BUF];
    // The agent's own encoders must produce frames that parse back to the same message.
    let n = match &msg {
        ControlMessage::Open(o) => control::encode_open_frame(&mut buf, sid, o),
        ControlMessage::Accept(a) => control::encode_accept_frame(&mut buf, sid, a),
        ControlMessage::Error(e) => control::encode_error_frame(&mut buf, sid, e),
        ControlMessage::Ping | ControlMessage::Pong | ControlMessage::Close | ControlMessage::Unknown(_) => {
            f.encode(&mut buf)
        }
        _ => return,
    }
    .expect("encoding a decoded control message fits four frames");
    if n > MAX_FRAME_LEN {
        return;
    }
    let g = Frame::decode(&buf[..n]).expect("re-encoded control frame decodes");
    assert_eq!(g.header.sid, sid);
    assert_eq!(ControlMessage::from_frame(&g).expect("re-encoded control message parses"), msg);
});
