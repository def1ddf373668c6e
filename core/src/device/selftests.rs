//! Simulations of the composed device on a virtual clock: bytes in, clock in, actions out.

use super::*;
use crate::backoff::BackoffConfig;
use crate::control_sessions::IdleConfig;
use crate::frame::{Frame, FrameOut, Prop, Proto};
use crate::link::LinkConfig;
use crate::shells::{Refusal, StopReason};
use heapless::{String, Vec};

type Dev = FixedDevice<2, 4, { shells::queue_len(4) }>;

use crate::selftest::t;

/// What came out, with shell frames decoded.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Engine(engine::Action),
    Shell(shells::Action),
    Frame {
        typ: String<8>,
        sid: String<64>,
        status: Option<i64>,
        timeout: Option<i64>,
        body: String<96>,
    },
    Transfer(transfers::Action),
    /// A file-transfer frame: type, sid, `offset`.
    FtFrame(String<16>, String<64>, Option<i64>),
}

fn s<const N: usize>(v: &str) -> String<N> {
    String::try_from(v).unwrap()
}

fn frame(typ: &str, sid: &str, status: i64, body: &str) -> Out {
    Out::Frame { typ: s(typ), sid: s(sid), status: Some(status), timeout: None, body: s(body) }
}

fn stop(sid: &str, why: StopReason) -> Out {
    Out::Shell(shells::Action::StopShell { sid: s(sid), why })
}

fn link(a: LinkAction) -> Out {
    Out::Engine(engine::Action::Link(a))
}

fn drain(d: &mut Dev) -> Vec<Out, 16> {
    let mut buf = [0u8; POLL_BUF_LEN];
    let mut out = Vec::new();
    while let Some(a) = d.poll_action(&mut buf) {
        let o = match a {
            Action::Engine(a) => Out::Engine(a),
            Action::Shell(a) => Out::Shell(a),
            Action::SendShell { len } => {
                let f = Frame::decode(&buf[..len]).expect("shell frame decodes");
                assert_eq!(f.header.proto, Proto::SHELL);
                Out::Frame {
                    typ: s(f.header.typ),
                    sid: s(f.header.sid),
                    status: f.header.props.get_i64(proto::PROP_STATUS),
                    timeout: f.header.props.get_i64(proto::PROP_TIMEOUT),
                    body: s(core::str::from_utf8(f.body).unwrap()),
                }
            }
            Action::Transfer(a) => Out::Transfer(a),
            Action::SendTransfer { len } => ft_frame(&buf[..len]),
            other => panic!("not a shell scenario: {other:?}"),
        };
        out.push(o).expect("at most 16 actions");
    }
    out
}

/// A device with a link up at `t(0)`; 60 s disconnect grace, no token re-read.
fn device() -> Dev {
    let cfg = Config {
        link: LinkConfig {
            backoff: BackoffConfig { base_ms: 1_000, cap_ms: 1_000, stable_after_ms: 60_000 },
            disconnect_grace_ms: 60_000,
            reread: false,
        },
        idle: IdleConfig::default(),
        terminal: true,
        served: &[],
    };
    let mut d = Dev::new(&cfg, ShellConfig::default(), 7);
    d.handle_credentials(CredentialsUpdate::Changed, t(0));
    assert_eq!(drain(&mut d).as_slice(), &[link(LinkAction::Dial)]);
    d.handle_connected(t(0));
    assert!(drain(&mut d).is_empty());
    d
}

/// A shell frame from the server.
fn msg<'b>(buf: &'b mut [u8], typ: &str, sid: &str, user: &str, body: &[u8]) -> &'b [u8] {
    let props = [Prop::str(proto::PROP_USER_ID, user)];
    let n = FrameOut { proto: Proto::SHELL, typ, sid, props: &props, body, ..FrameOut::EMPTY }
        .encode(buf)
        .unwrap();
    &buf[..n]
}

/// A `new` for `sid` answered by a started shell (serial returned).
fn open(d: &mut Dev, sid: &str, user: &str, now: Instant) -> u64 {
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    let r = d.handle_frame(msg(&mut inb, proto::NEW, sid, user, &[]), now, &mut reply);
    assert_eq!(r, Delivered::Handled { reply: None });
    let out = drain(d);
    let Some(Out::Shell(shells::Action::SpawnShell { sid: got, size: None, serial })) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(got.as_str(), sid);
    let serial = *serial;
    d.handle_shell_spawned(sid, serial, true);
    assert_eq!(drain(d).as_slice(), &[frame(proto::NEW, sid, 1, SHELL_STARTED)]);
    serial
}

/// Runs every timer due up to `until`, answering dials with failures; returns what came out.
fn run_until(d: &mut Dev, until: Instant) -> Vec<(u64, Out), 16> {
    let mut seen = Vec::new();
    for _ in 0..1_000 {
        let Some(at) = d.poll_timeout().filter(|at| *at <= until) else { break };
        d.handle_timeout(at);
        for o in drain(d) {
            if o == link(LinkAction::Dial) {
                d.handle_dial_failed(false, at);
                continue;
            }
            seen.push((at.as_millis(), o)).expect("at most 16 actions");
        }
    }
    seen
}

/// A shell opened through the device: the reply, input and resize for the executor, the
/// reference's answers to unknown sessions and types.
fn shell_opened_through_the_device() {
    let mut d = device();
    let serial = open(&mut d, "s1", "u1", t(5));
    assert_eq!(d.shells().len(), 1);
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    let r = d.handle_frame(msg(&mut inb, proto::SHELL, "s1", "u1", b"ls\n"), t(6), &mut reply);
    assert_eq!(r, Delivered::ShellInput { sid: "s1", bytes: b"ls\n" });
    let r = d.handle_frame(msg(&mut inb, proto::RESIZE, "s1", "u1", &[]), t(7), &mut reply);
    assert_eq!(r, Delivered::ShellResize { sid: "s1", size: None });
    // Resize and pong for no shell: nothing sent, the device is told so it can log it.
    let r = d.handle_frame(msg(&mut inb, proto::RESIZE, "nope", "u1", &[]), t(7), &mut reply);
    assert_eq!(r, Delivered::NoShell { sid: "nope" });
    let r = d.handle_frame(msg(&mut inb, proto::PONG, "nope", "u1", &[]), t(7), &mut reply);
    assert_eq!(r, Delivered::NoShell { sid: "nope" });
    assert!(drain(&mut d).is_empty());
    let r = d.handle_frame(msg(&mut inb, proto::SHELL, "nope", "u1", b"x"), t(8), &mut reply);
    assert_eq!(r, Delivered::Handled { reply: None });
    assert_eq!(drain(&mut d).as_slice(), &[frame(proto::SHELL, "nope", 2, "session not found")]);
    d.handle_frame(msg(&mut inb, proto::STOP, "nope", "u1", &[]), t(8), &mut reply);
    let text = "routeMessage: StopShellMessage: session not found for id nope";
    assert_eq!(drain(&mut d).as_slice(), &[frame(proto::STOP, "nope", 2, text)]);
    let r = d.handle_frame(msg(&mut inb, proto::PING, "s1", "u1", &[]), t(9), &mut reply);
    let Delivered::Handled { reply: Some(n) } = r else { panic!("{r:?}") };
    let f = Frame::decode(&reply[..n]).unwrap();
    assert_eq!((f.header.typ, f.body), (proto::PING, &b"unknown message protocol and type: 1/ping"[..]));
    // The shell ends by itself: reaped, no frame from the table (the executor's reader sent
    // its stop); a stale report of an older serial is ignored.
    assert!(!d.handle_shell_exited("s1", serial + 1));
    assert!(d.handle_shell_exited("s1", serial));
    assert_eq!(drain(&mut d).as_slice(), &[stop("s1", StopReason::Exited)]);
    assert!(d.shells().is_empty());
    assert_eq!(d.poll_timeout(), None);
}

/// Health check: a ping every 60 s with timeout 65; a pong keeps the shell; none for 65 s
/// stops it with the status-2 `stop`.
fn health_check_pings_and_failure() {
    let mut d = device();
    open(&mut d, "s1", "u1", t(0));
    assert_eq!(d.poll_timeout(), Some(t(60_000)));
    let seen = run_until(&mut d, t(60_000));
    let ping =
        Out::Frame { typ: s(proto::PING), sid: s("s1"), status: Some(3), timeout: Some(65), body: s("") };
    assert_eq!(seen.as_slice(), &[(60_000, ping)]);
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    let r = d.handle_frame(msg(&mut inb, proto::PONG, "s1", "u1", &[]), t(60_100), &mut reply);
    assert_eq!(r, Delivered::Handled { reply: None });
    // The next ping at 120 s, unanswered: the check fails 65 s after the last pong, strictly after.
    let seen = run_until(&mut d, t(125_100));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, 120_000);
    let seen = run_until(&mut d, t(200_000));
    assert_eq!(
        seen.as_slice(),
        &[
            (125_101, stop("s1", StopReason::HealthCheck)),
            (125_101, frame(proto::STOP, "s1", 2, STOPPED_SHELL_TEXT))
        ]
    );
    assert!(d.shells().is_empty());
}

/// The link drops: the shell is orphaned, no health check meanwhile; the link supervisor's
/// grace passes and the shell is reaped without telling the server.
fn link_drop_reaps_orphans_after_the_grace() {
    let mut d = device();
    open(&mut d, "s1", "u1", t(0));
    assert!(d.handle_link_closed(t(10_000)).is_some());
    assert_eq!(drain(&mut d).as_slice(), &[link(LinkAction::CloseLink)]);
    let seen = run_until(&mut d, t(120_000));
    assert_eq!(
        seen.as_slice(),
        &[(70_000, stop("s1", StopReason::Orphaned)), (70_000, link(LinkAction::ReapOrphans))],
        "no ping, no stop frame while the link is down"
    );
    assert!(d.shells().is_empty());
}

/// A reconnect within the grace keeps the shell; the user's new terminal replaces the shell
/// the server has not spoken for on the new link.
fn reconnect_then_stale_shell_replaced() {
    let mut d = device();
    open(&mut d, "s1", "u1", t(0));
    d.handle_link_closed(t(10_000));
    drain(&mut d);
    // The redial comes due after the backoff; this one succeeds.
    let at = d.poll_timeout().unwrap();
    d.handle_timeout(at);
    assert_eq!(drain(&mut d).as_slice(), &[link(LinkAction::Dial)]);
    d.handle_connected(at);
    assert!(drain(&mut d).is_empty());
    // The grace no longer applies; the health check restarted with the link.
    assert_eq!(d.poll_timeout(), Some(at.add_millis(60_000)));
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    d.handle_frame(msg(&mut inb, proto::NEW, "s2", "u1", &[]), at.add_millis(5), &mut reply);
    let out = drain(&mut d);
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], stop("s1", StopReason::Replaced));
    assert_eq!(out[1], frame(proto::STOP, "s1", 2, STOPPED_SHELL_TEXT));
    assert!(matches!(&out[2], Out::Shell(shells::Action::SpawnShell { sid, .. }) if sid == "s2"));
    // A second user's `new` on the same sid is refused with the reference's text.
    let r = d.handle_frame(msg(&mut inb, proto::NEW, "s2", "u2", &[]), at.add_millis(6), &mut reply);
    assert_eq!(r, Delivered::ShellRefused { sid: "s2", user_id: "u2", refusal: Refusal::AlreadyRunning });
    let out = drain(&mut d);
    assert_eq!(
        out.as_slice(),
        &[frame(proto::NEW, "s2", 2, "failed to start shell: shell is already running")]
    );
}

/// The token is no longer valid: every shell stops, then the link closes.
fn unauthorized_stops_all() {
    let mut d = device();
    open(&mut d, "a", "u1", t(0));
    open(&mut d, "b", "u2", t(1));
    d.handle_credentials(CredentialsUpdate::Unauthorized, t(2));
    assert_eq!(
        drain(&mut d).as_slice(),
        &[
            stop("a", StopReason::All),
            stop("b", StopReason::All),
            link(LinkAction::StopAllSessions),
            link(LinkAction::CloseLink),
        ]
    );
    assert!(d.shells().is_empty());
    // Nothing outlives the link: a shell message read before the close is dropped.
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    let r = d.handle_frame(msg(&mut inb, proto::NEW, "c", "u1", &[]), t(3), &mut reply);
    assert!(matches!(r, Delivered::Engine(Routed::Handled { reply: None, .. })));
    assert!(drain(&mut d).is_empty());
}

fn ft_frame(bytes: &[u8]) -> Out {
    let f = Frame::decode(bytes).expect("file-transfer frame decodes");
    assert_eq!(f.header.proto, Proto::FILE_TRANSFER);
    let offset = f.header.props.get_int(crate::filetransfer::PROP_OFFSET).and_then(|i| i.as_go_int64());
    Out::FtFrame(s(f.header.typ), s(f.header.sid), offset)
}

fn abort(sid: &str) -> Out {
    Out::Transfer(transfers::Action::Abort { sid: s(sid) })
}

fn ft_msg<'b>(buf: &'b mut [u8], typ: &str, sid: &str, offset: Option<i64>, body: &[u8]) -> &'b [u8] {
    let props = [Prop::int64(crate::filetransfer::PROP_OFFSET, offset.unwrap_or(0))];
    let props = if offset.is_some() { &props[..] } else { &[] };
    let n = FrameOut { proto: Proto::FILE_TRANSFER, typ, sid, props, body, ..FrameOut::EMPTY }
        .encode(buf)
        .unwrap();
    &buf[..n]
}

/// A control session `sid` accepted with protocol 2 offered.
fn open_session(d: &mut Dev, sid: &str, now: Instant) {
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    let mut body = [0u8; 32];
    let n = crate::control::Open::new(&[1]).unwrap().encode(&mut body).unwrap();
    let props = [Prop::str(proto::PROP_USER_ID, "u1")];
    let m = FrameOut {
        proto: Proto::CONTROL,
        typ: crate::control::OPEN,
        sid,
        props: &props,
        body: &body[..n],
        ..FrameOut::EMPTY
    };
    let len = m.encode(&mut inb).unwrap();
    let r = d.handle_frame(&inb[..len], now, &mut reply);
    let Delivered::Engine(Routed::Handled { reply: Some(n), .. }) = r else { panic!("{r:?}") };
    let f = Frame::decode(&reply[..n]).unwrap();
    let Ok(crate::control::ControlMessage::Accept(a)) = crate::control::ControlMessage::from_frame(&f) else {
        panic!("not accepted")
    };
    assert!(a.protocols().contains(&Proto::FILE_TRANSFER));
}

fn path_body(buf: &mut [u8], path: &str) -> usize {
    crate::filetransfer::StatFile { path: Some(path) }.encode(buf).unwrap()
}

/// File transfer composed in: requests for the executor, reads and acks, frames out, and
/// aborts when a session closes or the link drops.
fn file_transfer_through_the_device() {
    let mut d = device();
    d.serve_transfers(transfers::TransferConfig::default(), t(0));
    open_session(&mut d, "c1", t(0));
    let (mut inb, mut reply, mut body) = ([0u8; 256], [0u8; 1024], [0u8; 64]);
    let n = path_body(&mut body, "/etc/f");
    let r = d.handle_frame(
        ft_msg(&mut inb, crate::filetransfer::GET_FILE, "c1", None, &body[..n]),
        t(1),
        &mut reply,
    );
    assert_eq!(r, Delivered::Transfer(transfers::Delivered::OpenDownload { sid: "c1", path: "/etc/f" }));
    d.handle_transfer_download_opened("c1", t(1));
    assert_eq!(
        drain(&mut d).as_slice(),
        &[Out::Transfer(transfers::Action::Read { sid: s("c1"), max: 4096 })]
    );
    let mut chunk = [0u8; 4096 + 256];
    let len = d.handle_transfer_read("c1", b"hello", t(1), &mut chunk).unwrap();
    assert_eq!(ft_frame(&chunk[..len]), Out::FtFrame(s("file_chunk"), s("c1"), Some(0)));
    assert_eq!(
        drain(&mut d).as_slice(),
        &[Out::Transfer(transfers::Action::Read { sid: s("c1"), max: 4096 })]
    );
    let len = d.handle_transfer_read("c1", b"", t(1), &mut chunk).unwrap();
    assert_eq!(ft_frame(&chunk[..len]), Out::FtFrame(s("file_chunk"), s("c1"), Some(5)));
    assert!(drain(&mut d).is_empty());
    assert!(d.transfers().is_busy("c1"));
    let r = d.handle_frame(ft_msg(&mut inb, crate::filetransfer::ACK, "c1", Some(5), &[]), t(2), &mut reply);
    assert_eq!(r, Delivered::Transfer(transfers::Delivered::Handled { reply: None }));
    assert!(!d.transfers().is_busy("c1"));

    // An upload: the initial ack comes out of the device; the session's close aborts it, then
    // the engine reports the session's end.
    let put = crate::filetransfer::UploadRequest { path: Some("/tmp/x"), ..Default::default() };
    let n = put.encode(&mut body).unwrap();
    let r = d.handle_frame(
        ft_msg(&mut inb, crate::filetransfer::PUT_FILE, "c1", None, &body[..n]),
        t(3),
        &mut reply,
    );
    assert!(matches!(
        r,
        Delivered::Transfer(transfers::Delivered::OpenUpload { sid: "c1", path: "/tmp/x", .. })
    ));
    d.handle_transfer_upload_opened("c1", t(3));
    assert_eq!(drain(&mut d).as_slice(), &[Out::FtFrame(s("ack"), s("c1"), Some(0))]);
    let m = FrameOut { proto: Proto::CONTROL, typ: crate::control::CLOSE, sid: "c1", ..FrameOut::EMPTY };
    let len = m.encode(&mut inb).unwrap();
    d.handle_frame(&inb[..len], t(4), &mut reply);
    let out = drain(&mut d);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], abort("c1"));
    assert!(matches!(&out[1], Out::Engine(engine::Action::SessionEnded { sid, .. }) if sid == "c1"));

    // The device's timer includes a download's open deadline.
    let deadline =
        transfers::TransferConfig { open_timeout_ms: Some(30_000), ..transfers::TransferConfig::default() };
    d.serve_transfers(deadline, t(4));
    open_session(&mut d, "c3", t(4));
    let n = path_body(&mut body, "/f");
    d.handle_frame(ft_msg(&mut inb, crate::filetransfer::GET_FILE, "c3", None, &body[..n]), t(4), &mut reply);
    assert_eq!(d.poll_timeout(), Some(t(30_004)));
    d.handle_timeout(t(30_004));
    let out = drain(&mut d);
    assert!(
        out.contains(&Out::Transfer(transfers::Action::TimedOut {
            sid: s("c3"),
            step: transfers::Step::Open
        })),
        "{out:?}"
    );
    let n = d.handle_transfer_failed("c3", "too slow", 0, &mut reply).unwrap();
    assert_eq!(ft_frame(&reply[..n]), Out::FtFrame(s("error"), s("c3"), None));

    // A dropped link aborts what runs.
    open_session(&mut d, "c2", t(5));
    let n = path_body(&mut body, "/f");
    d.handle_frame(ft_msg(&mut inb, crate::filetransfer::GET_FILE, "c2", None, &body[..n]), t(5), &mut reply);
    d.handle_link_closed(t(6));
    let out = drain(&mut d);
    assert_eq!(out.first(), Some(&abort("c2")), "{out:?}");
    assert_eq!(d.transfers().iter().count(), 0);
}

crate::selftests!(
    file_transfer_through_the_device,
    shell_opened_through_the_device,
    health_check_pings_and_failure,
    link_drop_reaps_orphans_after_the_grace,
    reconnect_then_stale_shell_replaced,
    unauthorized_stops_all,
);
