//! Fuzzes the agent's file transfer as the daemon runs it: core's device keeping the transfers and
//! the real executor doing the file work (`mender_connect::proto::harness`), with sequences of
//! file-transfer messages, confined to a scratch directory by the executor's own
//! `Limits.FileTransfer.Chroot` jail (run this target as an unprivileged user; see README).
//!
//! Input: records as in the `router` target (`0x00 n` = give the download task a moment (`n` yields); else a
//! little-endian `u16` length and a message whose `proto` is forced to 2). Checked: every frame sent
//! (replies, the reply queue's, and what a download task queues) decodes as a file-transfer frame
//! of the session.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mender_connect::config::FileTransferLimits;
use mender_connect::proto::filetransfer::Settings;
use mender_connect::proto::harness::FileTransferHarness;
use mender_connect_core::{Frame, FrameOut, MAX_FRAME_LEN, Proto};

const SID: &str = "fuzz";
/// The jail; `file` (20000 bytes) and `dir/` are created in it.
const ROOT: &str = "/tmp/mc-fuzz-ft";

struct Jail {
    root: PathBuf,
    settings: Arc<Settings>,
}

fn jail() -> &'static Jail {
    static JAIL: OnceLock<Jail> = OnceLock::new();
    JAIL.get_or_init(|| {
        // Fixed, so that seeds can name paths in it (the jail takes absolute paths under it).
        let root = PathBuf::from(ROOT);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("dir")).expect("scratch directory");
        std::fs::write(root.join("file"), vec![b'x'; 20_000]).expect("scratch file");
        let limits = FileTransferLimits {
            chroot: Some(root.clone()),
            max_file_size: Some(64 * 1024),
            allow_overwrite: true,
            ..FileTransferLimits::default()
        };
        Jail { root, settings: Arc::new(Settings::new(true, limits)) }
    })
}

fn check(frame: &[u8]) {
    if frame.len() > MAX_FRAME_LEN {
        return;
    }
    let f = Frame::decode(frame).expect("handler output decodes");
    assert_eq!(f.header.proto, Proto::FILE_TRANSFER);
    assert_eq!(f.header.sid, SID);
}

fuzz_target!(|data: &[u8]| {
    let jail = jail();
    let mut h = FileTransferHarness::new(&jail.settings);
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut rest = data;
    while let [op, tail @ ..] = rest {
        if *op == 0 {
            let [ms, tail @ ..] = tail else { break };
            // Sleeping would cap the rate; yielding lets the download task's thread progress.
            for _ in 0..(*ms % 8) {
                std::thread::yield_now();
            }
            h.pump().iter().for_each(|f| check(f));
            rest = tail;
            continue;
        }
        let [lo, hi, tail @ ..] = tail else { break };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let Ok(f) = Frame::decode(msg) else { continue };
        // Re-encoded as a file-transfer message of the session (the router takes bytes).
        let h0 = &f.header;
        let out = FrameOut {
            proto: Proto::FILE_TRANSFER,
            typ: h0.typ,
            sid: SID,
            base_props: h0.props,
            body: f.body,
            ..FrameOut::EMPTY
        };
        let Ok(n) = out.encode(&mut buf) else { continue };
        h.message(&buf[..n]).iter().for_each(|f| check(f));
    }
    h.end_session(SID).iter().for_each(|f| check(f));
    h.pump().iter().for_each(|f| check(f));
    drop(h);
    // Uploads land in the jail; keep it small.
    for dir in [jail.root.clone(), jail.root.join("dir")] {
        if std::fs::read_dir(&dir).map_or(0, Iterator::count) > 200 {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let n = e.file_name();
                if n != "dir" && n != "file" {
                    let _ = std::fs::remove_file(e.path()).or_else(|_| std::fs::remove_dir_all(e.path()));
                }
            }
        }
    }
});
