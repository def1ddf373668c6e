//! Fuzzes the file-transfer protocol (2) parser: bodies (`stat`, `get_file`, `file_info`,
//! `put_file`, `error`) must round-trip through their encoders; whole frames (proto forced to 2)
//! must parse the same after a re-encode; the reply encoders that copy the request's header
//! (`ack`, `error`) must produce decodable frames; chunk/ack offsets drive the transfer state
//! machines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::filetransfer::{
    self as ft, FileInfo, FileTransferMessage, FtError, GetFile, StatFile, UploadRequest,
};
use mender_connect_core::frame::{Frame, Proto};
use mender_connect_core::transfer::{DownloadWindow, UploadState};

const BUF: usize = 4 * MAX_FRAME_LEN;

macro_rules! round_trip {
    ($ty:ident, $b:expr, $buf:expr) => {
        if let Ok(v) = $ty::decode($b) {
            let n = v.encode($buf).expect(concat!("a decoded ", stringify!($ty), " re-encodes"));
            assert_eq!(
                $ty::decode(&$buf[..n]).expect(concat!("re-encoded ", stringify!($ty), " decodes")),
                v
            );
        }
    };
}

fn bodies(b: &[u8], buf: &mut [u8]) {
    round_trip!(StatFile, b, buf);
    round_trip!(GetFile, b, buf);
    round_trip!(FileInfo, b, buf);
    round_trip!(UploadRequest, b, buf);
    round_trip!(FtError, b, buf);
}

fuzz_target!(|data: &[u8]| {
    let mut buf = vec![0u8; BUF];
    bodies(data, &mut buf);
    let Ok(mut f) = Frame::decode(data) else { return };
    f.header.proto = Proto::FILE_TRANSFER;
    bodies(f.body, &mut buf);
    let Ok(msg) = FileTransferMessage::from_frame(&f) else { return };
    let n = f.encode(&mut buf).expect("a decoded file-transfer frame re-encodes");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("re-encoded frame decodes");
        assert_eq!(FileTransferMessage::from_frame(&g).expect("re-encoded message parses"), msg);
    }
    match msg {
        FileTransferMessage::Chunk { offset, data } => {
            let mut up = UploadState::new();
            if up.on_chunk(offset, data.len()).is_ok() {
                assert!(up.offset() >= 0);
            }
            let _ = up.should_ack(false);
            let n = ft::encode_ack_of(&mut buf, &f).expect("an ack of a decoded chunk fits");
            if n <= MAX_FRAME_LEN {
                let g = Frame::decode(&buf[..n]).expect("ack decodes");
                assert_eq!((g.header.typ, g.header.sid), (ft::ACK, f.header.sid));
                assert_eq!(g.header.props.len(), f.header.props.len());
            }
        }
        FileTransferMessage::Ack { offset } => {
            let mut down = DownloadWindow::new();
            let _ = down.on_ack(offset);
            let _ = down.next_chunk_len();
        }
        _ => {}
    }
    let n = ft::encode_error_reply(&mut buf, &f, "fuzz").expect("an error reply fits four frames");
    if n <= MAX_FRAME_LEN {
        let g = Frame::decode(&buf[..n]).expect("error reply decodes");
        let Ok(FileTransferMessage::Error(e)) = FileTransferMessage::from_frame(&g) else {
            panic!("error reply does not parse as an error");
        };
        assert_eq!((e.err, e.msgtype), (Some("fuzz"), Some(f.header.typ)));
    }
});
