//! Fuzzes the frame decoder and everything reachable from a decoded frame: typed message
//! views of every protocol, prop getters/iterators, and re-encoding. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect_core::control::ControlMessage;
use mender_connect_core::filetransfer::FileTransferMessage;
use mender_connect_core::frame::Frame;
use mender_connect_core::menderclient::MenderClientMessage;
use mender_connect_core::portforward::PortForwardMessage;
use mender_connect_core::shell::ShellMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = Frame::decode(data) else { return };
    let _ = ControlMessage::from_frame(&f);
    let _ = ShellMessage::from_frame(&f);
    let _ = FileTransferMessage::from_frame(&f);
    let _ = PortForwardMessage::from_frame(&f);
    let _ = MenderClientMessage::from_frame(&f);
    for (k, v) in f.header.props.iter() {
        let _ = (k.as_str(), v.as_int(), v.as_bytes());
    }
    for (_, raw) in f.header.props.iter_raw() {
        let _ = raw.len();
    }
    let _ = f.header.props.get_int("offset").map(|i| i.as_go_int64());
    // A decoded frame must re-encode and decode to the same view.
    let mut buf = [0u8; 2 * mender_connect_core::MAX_FRAME_LEN];
    let n = f.encode(&mut buf).expect("re-encode of a decoded frame fits twice its size");
    if n > mender_connect_core::MAX_FRAME_LEN {
        // Re-encoding may add a missing `hdr`/`proto`, growing a frame near the limit.
        return;
    }
    let g = Frame::decode(&buf[..n]).expect("re-encoded frame decodes");
    assert_eq!(
        (f.header.proto, f.header.typ, f.header.sid, f.body),
        (g.header.proto, g.header.typ, g.header.sid, g.body)
    );
    assert_eq!(f.header.props.len(), g.header.props.len());
});
