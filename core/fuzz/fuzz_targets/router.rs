//! Fuzzes the device side of the protocol (`mender_connect_core::device::Device`: the engine with
//! the shell, port-forward and file-transfer tables composed in) with arbitrary sequences of
//! websocket messages, clock steps and link events, on a virtual clock; every shell it asks for
//! starts, every connection it dials connects at once, and every file step succeeds at once.
//!
//! Input: a sequence of records. `0x00 n` advances the clock by `n` seconds and runs the due
//! timers; `0xFF k` feeds link event `k % 7` (credentials changed / unchanged / unauthorized,
//! revoked, dial succeeded, dial failed, link closed); any other first byte is followed by a
//! little-endian `u16` length and that many bytes, handled as one websocket message.
//!
//! File transfer (2) and port forward (3) are served by the device's own tables (every download
//! is 2,500 bytes, read 1,000 at a time); mender-client (4) is not served (the "no handler"
//! path); the shell protocol is on. Checked: every reply is a decodable frame for the message's
//! sid, an undecodable message gets exactly one control error, no message is delivered raw,
//! every session that leaves the table is reported once (or dropped with the link), the table
//! never exceeds its capacity, timers never lie in the past after they ran, and link actions fit
//! the link's state; shell frames are decodable protocol-1 frames, shell input and resizes go
//! only to open shells, the shell table never exceeds its capacity and is empty once the device
//! is unauthorized or shut down; port-forward frames are decodable protocol-3 frames for open
//! sessions, dials and data are for admitted connections of open sessions, and no connection
//! outlives its session, the link or the table's capacity; file-transfer frames are decodable
//! protocol-2 frames, a read is asked only of a running download, never beyond the window, and
//! transfers run only in open sessions.
#![no_main]

use std::collections::{HashMap, HashSet};

use libfuzzer_sys::fuzz_target;
use mender_connect_core::backoff::BackoffConfig;
use mender_connect_core::control::{self, ControlMessage};
use mender_connect_core::control_sessions::IdleConfig;
use mender_connect_core::device::{Action, Delivered, FixedDevice, POLL_BUF_LEN as DEVICE_POLL_BUF_LEN};
use mender_connect_core::engine::{Action as EngineAction, Config, REPLY_BUF_LEN, Routed};
use mender_connect_core::forwards::{self, FixedForwards, ForwardConfig};
use mender_connect_core::link::{CredentialsUpdate, LinkAction, LinkConfig, LinkState};
use mender_connect_core::shells::{self, ShellConfig};
use mender_connect_core::time::Instant;
use mender_connect_core::transfers::{self, TransferConfig};
use mender_connect_core::{Frame, MAX_FRAME_LEN, Proto};

const CAP: usize = 16;
const SHELLS: usize = 16;
const FORWARDS: usize = 8;
type Dev = FixedDevice<
    CAP,
    SHELLS,
    { shells::queue_len(SHELLS) },
    FixedForwards<FORWARDS, { forwards::queue_len(FORWARDS) }>,
>;

fn open_sids(e: &Dev) -> HashSet<String> {
    e.engine().sessions().map(|s| s.sid().to_owned()).collect()
}

fn check_reply(reply: &[u8], sid: &str) {
    if reply.len() > MAX_FRAME_LEN {
        // Replies echo the offending typ and sid, so a near-limit request can give a larger
        // answer (the agent drops those, as it always did).
        return;
    }
    let f = Frame::decode(reply).expect("every reply decodes");
    assert_eq!(f.header.sid, sid, "reply for another session");
}

/// Drains the actions, checking each against the model of open sessions.
/// `fresh`: the sid of the message just handled, which may have opened and ended a session at
/// once (a `close` or a rejected `open` as its first message). Dials connect at `now`.
fn drain(
    e: &mut Dev,
    open: &mut HashSet<String>,
    buf: &mut [u8],
    fresh: Option<&str>,
    files: &mut Files,
    now: Instant,
) {
    let mut fresh_seen = false;
    while let Some(a) = e.poll_action(buf) {
        let a = match a {
            Action::Engine(a) => a,
            Action::SendTransfer { len } => {
                let f = Frame::decode(&buf[..len]).expect("file-transfer frames decode");
                assert_eq!(f.header.proto, Proto::FILE_TRANSFER);
                continue;
            }
            Action::Transfer(transfers::Action::Read { sid, max }) => {
                assert!(e.transfers().is_busy(&sid), "a read for no transfer");
                assert!(max > 0 && max <= CHUNK, "read of {max}");
                let done = files.entry(sid.to_string()).or_insert(0);
                let n = max.min(1_000).min(FILE - *done);
                *done += n;
                let mut chunk = vec![0u8; n + 1024];
                let len =
                    e.handle_transfer_read(&sid, &vec![7u8; n], Instant::ZERO, &mut chunk).expect("a chunk");
                let f = Frame::decode(&chunk[..len]).expect("chunks decode");
                assert_eq!(
                    (f.header.proto, f.header.sid, f.body.len()),
                    (Proto::FILE_TRANSFER, sid.as_str(), n)
                );
                continue;
            }
            Action::Transfer(transfers::Action::TimedOut { sid, .. }) => {
                let mut answer = [0u8; 1024];
                let n = e.handle_transfer_failed(&sid, "i/o timeout", 0, &mut answer);
                assert!(n.is_some_and(|n| Frame::decode(&answer[..n]).is_ok()), "a timeout unanswered");
                continue;
            }
            Action::Transfer(transfers::Action::Commit { sid }) => {
                e.handle_transfer_committed(&sid);
                continue;
            }
            Action::Transfer(transfers::Action::Abort { sid }) => {
                assert!(!e.transfers().is_busy(&sid), "an aborted transfer stays");
                files.remove(sid.as_str());
                continue;
            }
            Action::SendShell { len } => {
                let f = Frame::decode(&buf[..len]).expect("shell frames decode");
                assert_eq!(f.header.proto, Proto::SHELL);
                continue;
            }
            Action::Shell(shells::Action::SpawnShell { sid, serial, .. }) => {
                assert!(e.shells().get(&sid).is_some(), "a shell spawned for no session");
                e.handle_shell_spawned(&sid, serial, true);
                continue;
            }
            Action::Shell(shells::Action::StopShell { sid, .. }) => {
                assert!(e.shells().get(&sid).is_none(), "a shell stopped whose session stays");
                continue;
            }
            Action::SendForward { len } => {
                let f = Frame::decode(&buf[..len]).expect("port-forward frames decode");
                assert_eq!(f.header.proto, Proto::PORT_FORWARD);
                continue;
            }
            Action::Forward(forwards::Action::Dial { sid, cid }) => {
                assert!(open_sids(e).contains(sid.as_str()), "a dial outside a session");
                assert!(!e.forwards().is_open(&sid, &cid), "dialled twice");
                e.handle_forward_dialed(&sid, &cid, true, now);
                continue;
            }
            Action::Forward(forwards::Action::Close { sid, cid, .. }) => {
                assert!(!e.forwards().is_open(&sid, &cid), "a closed connection stays open");
                continue;
            }
            _ => continue,
        };
        match a {
            EngineAction::Link(LinkAction::Dial) => assert_eq!(e.engine().link_state(), LinkState::Dialing),
            EngineAction::Link(LinkAction::CloseLink) => {
                assert!(!e.engine().link().is_up());
                assert_eq!(e.engine().session_count(), 0, "control sessions outlive the link");
                open.clear();
            }
            EngineAction::Link(LinkAction::StopAllSessions) => assert!(e.shells().is_empty()),
            EngineAction::Link(_) => {}
            EngineAction::Send { len, .. } => {
                let f = Frame::decode(&buf[..len]).expect("timer frames decode");
                assert_eq!(f.header.proto, Proto::CONTROL);
                assert!(open.contains(f.header.sid), "a frame for a session that is not open");
            }
            EngineAction::SessionEnded { sid, .. } => {
                let known = open.remove(sid.as_str());
                assert!(known || fresh == Some(sid.as_str()), "ended twice or never open: {sid:?}");
                if !known {
                    // Once per message.
                    assert!(!fresh_seen, "two ends for one message");
                    fresh_seen = true;
                }
                assert!(!open_sids(e).contains(sid.as_str()));
            }
            _ => {}
        }
    }
    assert!(e.engine().session_count() <= CAP);
    assert!(e.shells().len() <= SHELLS);
    assert!(e.forwards().len() <= FORWARDS);
    assert_eq!(e.forwards().overflowed(), 0);
    let sids = open_sids(e);
    assert!(e.transfers().iter().all(|t| sids.contains(t.sid)), "a transfer outside a session");
}

/// Bytes read of each session's download.
type Files = HashMap<String, usize>;
/// Every download's size.
const FILE: usize = 2_500;
/// Download chunk and window.
const CHUNK: usize = 1_000;

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        link: LinkConfig {
            backoff: BackoffConfig { base_ms: 1_000, cap_ms: 60_000, stable_after_ms: 60_000 },
            disconnect_grace_ms: 60_000,
            reread: true,
        },
        idle: IdleConfig::default(),
        terminal: true,
        served: &[Proto::FILE_TRANSFER, Proto::PORT_FORWARD],
    };
    let mut e: Box<Dev> =
        Box::new(Dev::new(&cfg, ShellConfig::default(), 0x5eed).with_forwards(ForwardConfig::default()));
    let ft = TransferConfig {
        chunk_len: CHUNK,
        window_bytes: 1_500,
        open_timeout_ms: Some(30_000),
        read_timeout_ms: Some(60_000),
        ..TransferConfig::default()
    };
    e.serve_transfers(ft, Instant::ZERO);
    let mut files = Files::new();
    let mut reply = vec![0u8; REPLY_BUF_LEN];
    let mut buf = [0u8; DEVICE_POLL_BUF_LEN];
    let mut open = HashSet::new();
    let mut now = Instant::ZERO;
    e.handle_credentials(CredentialsUpdate::Changed, now);
    drain(&mut e, &mut open, &mut buf, None, &mut files, now);
    e.handle_connected(now);

    let mut rest = data;
    while let [op, tail @ ..] = rest {
        match *op {
            0x00 => {
                let [secs, tail @ ..] = tail else { break };
                now = now.add_millis(u64::from(*secs) * 1_000);
                // Run every timer due by now, as the agent's timer would.
                let mut rounds = 0;
                while let Some(at) = e.poll_timeout().filter(|at| *at <= now) {
                    e.handle_timeout(at);
                    drain(&mut e, &mut open, &mut buf, None, &mut files, now);
                    rounds += 1;
                    assert!(rounds < 4 * CAP + 16, "timer at {at:?} does not advance");
                }
                rest = tail;
            }
            0xFF => {
                let [k, tail @ ..] = tail else { break };
                let was_up = e.engine().link().is_up();
                match k % 7 {
                    0 => e.handle_credentials(CredentialsUpdate::Changed, now),
                    1 => e.handle_credentials(CredentialsUpdate::Unchanged, now),
                    2 => e.handle_credentials(CredentialsUpdate::Unauthorized, now),
                    3 => e.handle_revoked(now),
                    4 => e.handle_connected(now),
                    5 => {
                        let dialing = e.engine().link_state() == LinkState::Dialing;
                        assert_eq!(e.handle_dial_failed(k & 0x80 != 0, now).is_some(), dialing);
                    }
                    _ => assert_eq!(e.handle_link_closed(now).is_some(), was_up),
                }
                drain(&mut e, &mut open, &mut buf, None, &mut files, now);
                if !e.engine().link().is_up() {
                    assert_eq!(e.engine().session_count(), 0);
                    assert!(e.forwards().is_empty(), "connections outlive the link");
                }
                if k % 7 == 2 {
                    assert!(e.shells().is_empty(), "shells outlive the device's authorization");
                }
                rest = tail;
            }
            _ => {
                let [lo, hi, tail @ ..] = tail else { break };
                let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
                let (msg, tail) = tail.split_at(len);
                rest = tail;
                let decoded = Frame::decode(msg).ok();
                let sid = decoded.map_or("", |f| f.header.sid);
                let before = open_sids(&e);
                let up = e.engine().link().is_up();
                match e.handle_frame(msg, now, &mut reply) {
                    Delivered::Handled { reply: n } => {
                        assert!(up, "a shell message handled without a link");
                        let proto = decoded.map(|f| f.header.proto);
                        if let Some(n) = n {
                            let f =
                                Frame::decode(&reply[..n]).expect("shell and port-forward replies decode");
                            assert_eq!(Some(f.header.proto), proto);
                            assert!(matches!(f.header.proto, Proto::SHELL | Proto::PORT_FORWARD));
                            assert_eq!(f.header.sid, sid);
                        }
                        if proto == Some(Proto::SHELL) {
                            assert_eq!(open_sids(&e), before, "a shell message changed the control sessions");
                        }
                    }
                    Delivered::ForwardOpen { sid: s, .. } | Delivered::ForwardData { sid: s, .. } => {
                        assert!(up);
                        assert!(open_sids(&e).contains(s), "a connection outside a session");
                    }
                    Delivered::ShellInput { sid: s, .. } | Delivered::ShellResize { sid: s, .. } => {
                        assert!(up);
                        assert!(e.shells().get(s).is_some(), "shell input for no shell");
                        assert_eq!(open_sids(&e), before, "a shell message changed the control sessions");
                    }
                    Delivered::Engine(Routed::Handled { reply: n, .. }) => {
                        if !up {
                            assert_eq!(n, None, "a reply without a link");
                        } else if decoded.is_none() {
                            let n = n.expect("an undecodable message gets one error");
                            let f = Frame::decode(&reply[..n]).expect("error reply decodes");
                            assert!(matches!(ControlMessage::from_frame(&f), Ok(ControlMessage::Error(_))));
                            assert_eq!(f.header.typ, control::ERROR);
                        }
                        if let Some(n) = n {
                            check_reply(&reply[..n], sid);
                        }
                    }
                    Delivered::Transfer(d) => {
                        assert!(up);
                        assert!(open_sids(&e).contains(sid), "a transfer message outside a session");
                        match d {
                            transfers::Delivered::Handled { reply: Some(n) } => {
                                let f = Frame::decode(&reply[..n]).expect("file-transfer replies decode");
                                assert_eq!((f.header.proto, f.header.sid), (Proto::FILE_TRANSFER, sid));
                            }
                            transfers::Delivered::OpenDownload { sid, .. } => {
                                let sid = sid.to_owned();
                                files.remove(&sid);
                                e.handle_transfer_download_opened(&sid, now);
                            }
                            transfers::Delivered::OpenUpload { sid, .. } => {
                                let sid = sid.to_owned();
                                e.handle_transfer_upload_opened(&sid, now);
                            }
                            transfers::Delivered::CheckUpload { request, .. } => {
                                assert!(e.transfers().is_busy(request.header.sid), "checked while idle");
                            }
                            transfers::Delivered::Write { sid, bytes, .. } => {
                                let (sid, n) = (sid.to_owned(), bytes.len());
                                e.handle_transfer_written(&sid, n, now);
                            }
                            _ => {}
                        }
                    }
                    Delivered::Engine(Routed::Deliver(f)) => {
                        assert!(up);
                        panic!("the device handles both served protocols, got {:?}", f.header.proto);
                    }
                    Delivered::Engine(Routed::Shell(_)) => panic!("the device handles shell messages"),
                    _ => {}
                }
                // New sessions join the model; ended ones are reported by the drain.
                for s in open_sids(&e) {
                    open.insert(s);
                }
                let fresh = (!before.contains(sid)).then_some(sid);
                drain(&mut e, &mut open, &mut buf, fresh, &mut files, now);
                assert_eq!(open, open_sids(&e), "the model and the table disagree");
            }
        }
    }
    e.handle_shutdown(now);
    drain(&mut e, &mut open, &mut buf, None, &mut files, now);
    assert_eq!(e.engine().session_count(), 0);
    assert!(e.shells().is_empty());
    assert!(e.forwards().is_empty());
});
