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

/// Each protocol target's seeds are frames of that protocol that its parser takes.
#[test]
fn protocol_seeds_parse_as_their_protocol() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let targets: [(&str, Proto); 5] = [
        ("control_msg", Proto::CONTROL),
        ("shell_msg", Proto::SHELL),
        ("filetransfer_msg", Proto::FILE_TRANSFER),
        ("portforward_msg", Proto::PORT_FORWARD),
        ("menderclient_msg", Proto::MENDER_CLIENT),
    ];
    for (target, proto) in targets {
        let mut seen = 0;
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(f.header.proto, proto, "{}", path.display());
            let ok = match proto {
                Proto::CONTROL => ControlMessage::from_frame(&f).is_ok(),
                Proto::SHELL => ShellMessage::from_frame(&f).is_ok(),
                Proto::FILE_TRANSFER => FileTransferMessage::from_frame(&f).is_ok(),
                Proto::PORT_FORWARD => PortForwardMessage::from_frame(&f).is_ok(),
                _ => MenderClientMessage::from_frame(&f).is_ok(),
            };
            assert!(ok, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 5, "{target}: only {seen} seeds");
    }
}

/// Router and file-transfer-handler seeds are well-formed record sequences (`[0, n]` steps,
/// `[op, len_lo, len_hi, bytes]` messages; for the router also `[0xff, k]` link events) and
/// carry frames the target can act on.
#[test]
fn sequence_seeds_are_message_sequences() {
    sequence_seeds("fuzz/corpus", "router");
    // The handler target drives the agent, so it lives with the agent's targets.
    sequence_seeds("../agent/fuzz/corpus", "filetransfer_handler");
}

fn sequence_seeds(corpus: &str, target: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus).join(target);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (mut rest, mut frames) = (&bytes[..], 0);
        while let [op, tail @ ..] = rest {
            if *op == 0 || (*op == 0xff && target == "router") {
                assert!(!tail.is_empty(), "{}: clock step or link event without argument", path.display());
                rest = &tail[1..];
                continue;
            }
            let [lo, hi, tail @ ..] = tail else { panic!("{}: message without length", path.display()) };
            let len = usize::from(u16::from_le_bytes([*lo, *hi]));
            assert!(len <= tail.len(), "{}: message longer than the file", path.display());
            frames += usize::from(Frame::decode(&tail[..len]).is_ok());
            rest = &tail[len..];
        }
        assert!(frames > 0, "{}: no decodable frame", path.display());
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} {target} seeds");
}
