//! The fuzz seed corpus must hold valid frames: each seed decodes and its typed view parses.

use crate::control::ControlMessage;
use crate::filetransfer::FileTransferMessage;
use crate::frame::{Frame, Proto};
use crate::menderclient::MenderClientMessage;
use crate::portforward::PortForwardMessage;
use crate::shell::ShellMessage;

#[test]
fn every_seed_is_a_valid_typed_frame() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame_decode");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ok = match f.header.proto {
            Proto::CONTROL => ControlMessage::from_frame(&f).is_ok(),
            Proto::SHELL => ShellMessage::from_frame(&f).is_ok(),
            Proto::FILE_TRANSFER => FileTransferMessage::from_frame(&f).is_ok(),
            Proto::PORT_FORWARD => PortForwardMessage::from_frame(&f).is_ok(),
            Proto::MENDER_CLIENT => MenderClientMessage::from_frame(&f).is_ok(),
            _ => false,
        };
        assert!(ok, "{}", path.display());
        // Go-shaped seeds re-encode exactly; two seeds imitate non-Go clients (explicit nils,
        // an empty bin body).
        let mut buf = [0u8; 512];
        let n = f.encode(&mut buf).unwrap();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !["python_nil_fields", "shell_new_user"].contains(&name) {
            assert_eq!(&buf[..n], &bytes[..], "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} seeds");
}
