//! Fuzzes the shell protocol (1) parser: every decodable frame is read with its `proto` forced to
//! shell; the parsed message must survive a re-encode (props copied verbatim), and the reply
//! encoders the agent uses must produce frames that parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::frame::{Frame, Proto};
use mender_connect_core::shell::{self, ShellMessage, Status};

const BUF: usize = 4 * MAX_FRAME_LEN;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = Frame::decode(data) else { return };
    f.header.proto = Proto::SHELL;
    let Ok(msg) = ShellMessage::from_frame(&f) else { return };
    let _ = (shell::status(&f), shell::terminal_size(&f));
    if let Some(s) = shell::terminal_size(&f) {
        assert!(s.width > 0 && s.height > 0);
    }
    let mut buf = vec![0u8; BUF];
    let n = f.encode(&mut buf).expect("a decoded shell frame re-encodes");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("re-encoded shell frame decodes");
        assert_eq!(ShellMessage::from_frame(&g).expect("re-encoded shell message parses"), msg);
    }
    // The reply shape of every answer and output frame: same typ/sid, a status, the body.
    for status in [Status::Normal, Status::Error, Status::Control] {
        let n = shell::encode_with_status(&mut buf, f.header.typ, f.header.sid, status, f.body)
            .expect("a shell reply fits four frames");
        if n > MAX_FRAME_LEN {
            continue;
        }
        let g = Frame::decode(&buf[..n]).expect("shell reply decodes");
        assert_eq!((g.header.typ, g.header.sid, g.body), (f.header.typ, f.header.sid, f.body));
        assert_eq!(shell::status(&g), Some(status));
    }
    if let ShellMessage::Ping { timeout: Some(t) } = msg {
        let n = shell::encode_ping(&mut buf, f.header.sid, t).expect("a ping fits four frames");
        if n <= MAX_FRAME_LEN {
            let g = Frame::decode(&buf[..n]).expect("ping decodes");
            assert_eq!(ShellMessage::from_frame(&g), Ok(ShellMessage::Ping { timeout: Some(t) }));
        }
    }
});
