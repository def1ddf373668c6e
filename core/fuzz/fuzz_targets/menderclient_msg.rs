//! Fuzzes the mender-client protocol (4) parser and its reply encoder: the reply copies the
//! request's typ and sid, carries `status` 1 or 2 and must parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::frame::{Frame, Proto};
use mender_connect_core::menderclient::{self as mc, MenderClientMessage};

const BUF: usize = 4 * MAX_FRAME_LEN;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = Frame::decode(data) else { return };
    f.header.proto = Proto::MENDER_CLIENT;
    let Ok(msg) = MenderClientMessage::from_frame(&f) else { return };
    let mut buf = vec![0u8; BUF];
    let n = f.encode(&mut buf).expect("a decoded mender-client frame re-encodes");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("re-encoded frame decodes");
        assert_eq!(MenderClientMessage::from_frame(&g).expect("re-encoded message parses"), msg);
    }
    let error = msg.command().is_none().then_some(mc::UNKNOWN_TYPE_ERROR);
    let n = mc::encode_reply(&mut buf, &f, error).expect("a mender-client reply fits");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("reply decodes");
        assert_eq!(
            (g.header.proto, g.header.typ, g.header.sid),
            (Proto::MENDER_CLIENT, f.header.typ, f.header.sid)
        );
        let status = g.header.props.get_i64(mc::PROP_STATUS);
        assert_eq!(status, Some(if error.is_some() { 2 } else { 1 }));
        assert_eq!(g.body, error.unwrap_or("").as_bytes());
    }
});
