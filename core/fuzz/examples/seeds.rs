//! Writes the seed corpora of the message-parser and router targets: frames shaped as the Go
//! peers send them (mender-cli / the server's deviceconnect and the reference agent), built with
//! the core's encoders.
//!
//! `cargo +nightly run --example seeds` in `core/fuzz` (rewrites `corpus/<target>/`).

use std::path::Path;

use mender_connect_core::control::{self, Accept, ControlError, Open};
use mender_connect_core::filetransfer::{
    self as ft, FileInfo, FtError, GetFile, StatFile, Timestamp, UploadRequest,
};
use mender_connect_core::portforward::{self as pf, PfError, PortForwardNew};
use mender_connect_core::shell::{self, Status};
use mender_connect_core::{FrameOut, MAX_FRAME_LEN, Prop, Proto};

const SID: &str = "8f7a4b86-5d0e-4d3c-9f1e-2b1a0c9d8e7f";
const USER: &str = "1d6e2a3b-4c5d-6e7f-8a9b-0c1d2e3f4a5b";

fn out(f: FrameOut<'_>) -> Vec<u8> {
    let mut b = vec![0u8; MAX_FRAME_LEN];
    let n = f.encode(&mut b).expect("seed fits");
    b.truncate(n);
    b
}

fn with_body(
    f: FrameOut<'_>,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, mender_connect_core::EncodeError>,
) -> Vec<u8> {
    let mut b = vec![0u8; MAX_FRAME_LEN];
    let n = f.encode_with(&mut b, fill).expect("seed fits");
    b.truncate(n);
    b
}

fn frame<'a>(
    proto: Proto,
    typ: &'a str,
    sid: &'a str,
    props: &'a [Prop<'a>],
    body: &'a [u8],
) -> FrameOut<'a> {
    FrameOut { proto, typ, sid, props, body, ..FrameOut::EMPTY }
}

fn control_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let c = |typ, sid| out(frame(Proto::CONTROL, typ, sid, &[], &[]));
    let hdr = |typ| frame(Proto::CONTROL, typ, SID, &[], &[]);
    let err = |e: ControlError<'static>| with_body(hdr(control::ERROR), |b| e.encode(b));
    vec![
        ("ping", c(control::PING, SID)),
        ("pong", c(control::PONG, SID)),
        ("close", c(control::CLOSE, SID)),
        ("unknown_typ", c("reboot", SID)),
        ("ping_no_sid", c(control::PING, "")),
        ("open_v1", with_body(hdr(control::OPEN), |b| Open::new(&[1]).unwrap().encode(b))),
        ("open_v1_v2", with_body(hdr(control::OPEN), |b| Open::new(&[2, 1]).unwrap().encode(b))),
        ("open_v2", with_body(hdr(control::OPEN), |b| Open::new(&[2]).unwrap().encode(b))),
        ("open_empty", with_body(hdr(control::OPEN), |b| Open::new(&[]).unwrap().encode(b))),
        (
            "open_big",
            with_body(hdr(control::OPEN), |b| Open::new(&[1, -1, i64::MAX, 70000]).unwrap().encode(b)),
        ),
        ("accept", with_body(hdr(control::ACCEPT), |b| Accept::new(1, &[1, 2, 3, 4]).unwrap().encode(b))),
        ("accept_v3", with_body(hdr(control::ACCEPT), |b| Accept::new(3, &[2]).unwrap().encode(b))),
        ("error_close", err(ControlError { err: "session timeout", close: true, ..ControlError::default() })),
        (
            "error_full",
            err(ControlError {
                err: "handshake rejected",
                close: false,
                code: 500,
                msgproto: Proto::FILE_TRANSFER,
                msgtype: "stat",
                msgid: "42",
            }),
        ),
    ]
}

fn shell_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let user = Prop::str(shell::PROP_USER_ID, USER);
    // mender-cli sends the size as uint16, the web UI's JSON-to-msgpack path as small ints.
    let size16 =
        [user, Prop::uint16(shell::PROP_TERMINAL_HEIGHT, 40), Prop::uint16(shell::PROP_TERMINAL_WIDTH, 120)];
    let size_int =
        [user, Prop::go_int(shell::PROP_TERMINAL_HEIGHT, 24), Prop::go_int(shell::PROP_TERMINAL_WIDTH, 80)];
    let size_neg =
        [user, Prop::go_int(shell::PROP_TERMINAL_HEIGHT, -1), Prop::int64(shell::PROP_TERMINAL_WIDTH, 70000)];
    let ping = [Prop::go_int(shell::PROP_TIMEOUT, 65), Prop::go_int(shell::PROP_STATUS, 3)];
    let ping64 = [Prop::int64(shell::PROP_TIMEOUT, 65), Prop::int64(shell::PROP_STATUS, 3)];
    let s = |typ, sid, props, body| out(frame(Proto::SHELL, typ, sid, props, body));
    let reply = |typ, status, body: &[u8]| {
        let mut b = vec![0u8; MAX_FRAME_LEN];
        let n = shell::encode_with_status(&mut b, typ, SID, status, body).unwrap();
        b.truncate(n);
        b
    };
    vec![
        ("new_uint16_size", s(shell::NEW, SID, &size16, b"")),
        ("new_int_size", s(shell::NEW, SID, &size_int, b"")),
        ("new_bad_size", s(shell::NEW, SID, &size_neg, b"")),
        ("new_no_props", s(shell::NEW, SID, &[], b"")),
        ("stop", s(shell::STOP, SID, &[user], b"")),
        ("stop_all_of_user", s(shell::STOP, "", &[user], b"")),
        ("stop_nothing", s(shell::STOP, "", &[], b"")),
        ("data_echo", s(shell::SHELL, SID, &[user], b"echo hello\n")),
        ("data_ctrl_c", s(shell::SHELL, SID, &[user], b"\x03")),
        ("data_empty", s(shell::SHELL, SID, &[user], b"")),
        ("resize", s(shell::RESIZE, SID, &size16, b"")),
        ("resize_no_size", s(shell::RESIZE, SID, &[user], b"")),
        ("ping", s(shell::PING, SID, &ping, b"")),
        ("ping_int64", s(shell::PING, SID, &ping64, b"")),
        ("pong", s(shell::PONG, SID, &[user], b"")),
        ("unknown_typ", s("spawn", SID, &[user], b"x")),
        ("reply_started", reply(shell::NEW, Status::Normal, b"Shell started")),
        ("reply_error", reply(shell::STOP, Status::Error, b"read /dev/ptmx: input/output error")),
        ("output", reply(shell::SHELL, Status::Normal, b"hello\r\n$ ")),
    ]
}

fn ft_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let user = Prop::str(ft::PROP_USER_ID, USER);
    let hdr = |typ| frame(Proto::FILE_TRANSFER, typ, SID, &[], &[]);
    let ts4 = Timestamp { secs: 1_700_000_000, nanos: 0 };
    let ts8 = Timestamp { secs: 1_700_000_000, nanos: 123_456_789 };
    let ts12 = Timestamp { secs: -5, nanos: 1 };
    let put = UploadRequest {
        src_path: Some("firmware.bin"),
        path: Some("/tmp/upload"),
        size: Some(10_000),
        uid: Some(0),
        gid: Some(0),
        mode: Some(0o644),
        modtime: Some(ts8),
    };
    let info = FileInfo {
        path: Some("/etc/hostname"),
        size: Some(7),
        uid: Some(0),
        gid: Some(0),
        mode: Some(0o644),
        modtime: Some(ts4),
    };
    let dir = FileInfo {
        path: Some("/tmp"),
        mode: Some(ft::go_file_mode::DIR | 0o1777),
        modtime: Some(ts12),
        ..info
    };
    let off = |o: i64| [Prop::int64(ft::PROP_OFFSET, o)];
    let (o0, o4096, small) = (off(0), off(4096), [Prop::go_int(ft::PROP_OFFSET, 4096)]);
    let f = |typ, props, body| out(frame(Proto::FILE_TRANSFER, typ, SID, props, body));
    vec![
        ("stat", with_body(hdr(ft::STAT), |b| StatFile { path: Some("/etc/hostname") }.encode(b))),
        ("stat_nil_path", with_body(hdr(ft::STAT), |b| StatFile { path: None }.encode(b))),
        ("get_file", with_body(hdr(ft::GET_FILE), |b| GetFile { path: Some("/var/log/syslog") }.encode(b))),
        ("get_file_empty", with_body(hdr(ft::GET_FILE), |b| GetFile { path: None }.encode(b))),
        ("put_file", with_body(hdr(ft::PUT_FILE), |b| put.encode(b))),
        (
            "put_file_minimal",
            with_body(hdr(ft::PUT_FILE), |b| {
                UploadRequest { path: Some("/tmp/x"), ..UploadRequest::default() }.encode(b)
            }),
        ),
        ("file_info", with_body(hdr(ft::FILE_INFO), |b| info.encode(b))),
        ("file_info_dir", with_body(hdr(ft::FILE_INFO), |b| dir.encode(b))),
        ("chunk0", f(ft::FILE_CHUNK, &o0[..], &[0x55; 64][..])),
        ("chunk4096", f(ft::FILE_CHUNK, &o4096[..], &b"tail of the file"[..])),
        ("chunk_small_int_offset", f(ft::FILE_CHUNK, &small[..], &b"x"[..])),
        ("chunk_eof", f(ft::FILE_CHUNK, &o4096[..], &b""[..])),
        ("chunk_no_offset", f(ft::FILE_CHUNK, &[user][..], &b"x"[..])),
        ("ack", f(ft::ACK, &o4096[..], &b""[..])),
        ("ack_small_int", f(ft::ACK, &small[..], &b""[..])),
        (
            "error",
            with_body(hdr(ft::ERROR), |b| {
                FtError { err: Some("boom"), msgtype: Some("put_file"), msgid: Some("7"), code: 0 }.encode(b)
            }),
        ),
        ("unknown_typ", f("rm", &[user][..], &b""[..])),
    ]
}

fn pf_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let conn = [Prop::str(pf::PROP_CONNECTION_ID, "c1")];
    let hdr = frame(Proto::PORT_FORWARD, pf::NEW, SID, &conn, &[]);
    let new = |r: PortForwardNew<'static>| with_body(hdr, |b| r.encode(b));
    let p = |typ, props, body| out(frame(Proto::PORT_FORWARD, typ, SID, props, body));
    vec![
        (
            "new_tcp",
            new(PortForwardNew {
                remote_host: Some("127.0.0.1"),
                remote_port: Some(22),
                protocol: Some("tcp"),
            }),
        ),
        (
            "new_udp",
            new(PortForwardNew {
                remote_host: Some("localhost"),
                remote_port: Some(53),
                protocol: Some("udp"),
            }),
        ),
        (
            "new_missing",
            new(PortForwardNew { remote_host: Some("127.0.0.1"), remote_port: None, protocol: None }),
        ),
        (
            "new_port0",
            new(PortForwardNew { remote_host: Some("::1"), remote_port: Some(0), protocol: Some("sctp") }),
        ),
        ("forward", p(pf::FORWARD, &conn[..], &b"GET / HTTP/1.0\r\n\r\n"[..])),
        ("forward_no_conn", p(pf::FORWARD, &[][..], &b"x"[..])),
        ("ack", p(pf::ACK, &conn[..], &b""[..])),
        ("stop", p(pf::STOP, &conn[..], &b""[..])),
        (
            "error",
            with_body(frame(Proto::PORT_FORWARD, pf::ERROR, SID, &[], &[]), |b| {
                PfError { err: Some("connection refused"), msgtype: Some("new") }.encode(b)
            }),
        ),
        ("unknown_typ", p("listen", &conn[..], &b""[..])),
    ]
}

fn mc_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let user = [Prop::str("user_id", USER)];
    let m = |typ, sid, props| out(frame(Proto::MENDER_CLIENT, typ, sid, props, &[]));
    vec![
        ("check_update", m("check-update", "", &user[..])),
        ("send_inventory", m("send-inventory", "", &user[..])),
        ("check_update_sid", m("check-update", SID, &[][..])),
        ("unknown_typ", m("reboot", "", &user[..])),
        ("reply_ok", out(frame(Proto::MENDER_CLIENT, "check-update", "", &[Prop::go_int("status", 1)], &[]))),
        (
            "reply_err",
            out(frame(
                Proto::MENDER_CLIENT,
                "reboot",
                "",
                &[Prop::go_int("status", 2)],
                b"unknown message type",
            )),
        ),
    ]
}

/// Router input: `[1, len_lo, len_hi, frame...]` per message, `[0, secs]` per clock step.
fn seq(parts: &[Step<'_>]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        match p {
            Step::Msg(f) => {
                v.push(1);
                v.extend_from_slice(&u16::try_from(f.len()).unwrap().to_le_bytes());
                v.extend_from_slice(f);
            }
            Step::Wait(s) => v.extend_from_slice(&[0, *s]),
            Step::Link(k) => v.extend_from_slice(&[0xff, *k]),
        }
    }
    v
}

enum Step<'a> {
    Msg(&'a [u8]),
    Wait(u8),
    /// A link event of the router target (`k % 7`: 0 credentials changed, 1 unchanged,
    /// 2 unauthorized, 3 revoked, 4 connected, 5 dial failed, 6 link closed).
    Link(u8),
}

fn router_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let find =
        |set: &[(&'static str, Vec<u8>)], name: &str| set.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let (c, s, f, p, m) = (control_seeds(), shell_seeds(), ft_seeds(), pf_seeds(), mc_seeds());
    let open = find(&c, "open_v1");
    let close = find(&c, "close");
    use Step::{Link, Msg, Wait};
    let mut out = vec![
        (
            "link_drop_redial",
            seq(&[
                Msg(&open),
                Msg(&find(&f, "stat")),
                Link(6),
                Wait(60),
                Link(5),
                Link(1),
                Wait(60),
                Link(4),
                Msg(&open),
            ]),
        ),
        (
            "revoke_while_up",
            seq(&[
                Msg(&open),
                Link(3),
                Msg(&find(&c, "ping")),
                Link(0),
                Link(4),
                Msg(&find(&c, "ping")),
                Link(2),
            ]),
        ),
        ("handshake_stat_close", seq(&[Msg(&open), Msg(&find(&f, "stat")), Msg(&close)])),
        (
            "handshake_upload",
            seq(&[
                Msg(&open),
                Msg(&find(&f, "put_file")),
                Msg(&find(&f, "chunk0")),
                Msg(&find(&f, "chunk_eof")),
            ]),
        ),
        (
            "download_acks",
            seq(&[
                Msg(&open),
                Msg(&find(&f, "get_file")),
                Msg(&find(&f, "ack")),
                Msg(&find(&f, "ack_small_int")),
            ]),
        ),
        ("idle_timeout", seq(&[Msg(&open), Wait(48), Wait(12), Msg(&find(&f, "stat"))])),
        ("ping_pong_idle", seq(&[Msg(&open), Wait(50), Msg(&find(&c, "pong")), Wait(50)])),
        (
            "port_forward",
            seq(&[
                Msg(&open),
                Msg(&find(&p, "new_tcp")),
                Msg(&find(&p, "forward")),
                Msg(&find(&p, "stop")),
                Msg(&close),
            ]),
        ),
        ("no_handler", seq(&[Msg(&find(&m, "check_update")), Msg(&find(&m, "unknown_typ"))])),
        ("bad_version", seq(&[Msg(&find(&c, "open_v2")), Msg(&find(&f, "stat"))])),
        (
            "error_close",
            seq(&[
                Msg(&open),
                Msg(&find(&p, "new_tcp")),
                Msg(&find(&c, "error_close")),
                Msg(&find(&p, "ack")),
            ]),
        ),
        (
            "shell_lifecycle",
            seq(&[
                Msg(&find(&s, "new_uint16_size")),
                Msg(&find(&s, "data_echo")),
                Msg(&find(&s, "resize")),
                Msg(&find(&s, "pong")),
                Msg(&find(&s, "stop")),
            ]),
        ),
        (
            "shell_misc",
            seq(&[
                Msg(&find(&s, "stop_all_of_user")),
                Msg(&find(&s, "stop_nothing")),
                Msg(&find(&s, "ping")),
                Msg(&find(&s, "unknown_typ")),
            ]),
        ),
        (
            "garbage_between",
            seq(&[Msg(&open), Msg(b"\xc1"), Msg(b"\x81\xa3hdr\x81\xa5proto\xcd"), Msg(&find(&c, "ping"))]),
        ),
        (
            "unknown_proto",
            seq(&[Msg(b"\x81\xa3hdr\x82\xa5proto\xcd\x00\x07\xa3sid\xa1x"), Msg(&find(&c, "unknown_typ"))]),
        ),
    ];
    // One message per seed, so every parser seed is a router seed too.
    for (name, bytes) in c.iter().chain(&s).chain(&f).chain(&p).chain(&m).take(20) {
        let leaked: &'static str = Box::leak(format!("single_{name}").into_boxed_str());
        out.push((leaked, seq(&[Msg(bytes)])));
    }
    out
}

/// File-transfer handler sequences on its jail `/tmp/mc-fuzz-ft` (`file` holds 20000 bytes, `dir/` exists).
fn ft_handler_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Step::{Msg, Wait};
    let hdr = |typ| frame(Proto::FILE_TRANSFER, typ, SID, &[], &[]);
    let stat = |p: &'static str| with_body(hdr(ft::STAT), move |b| StatFile { path: Some(p) }.encode(b));
    let get = |p: &'static str| with_body(hdr(ft::GET_FILE), move |b| GetFile { path: Some(p) }.encode(b));
    let put = |p: &'static str, size: i64| {
        with_body(hdr(ft::PUT_FILE), move |b| {
            UploadRequest { path: Some(p), size: Some(size), mode: Some(0o600), ..UploadRequest::default() }
                .encode(b)
        })
    };
    let chunk = |off: i64, data: &'static [u8]| {
        let props = [Prop::int64(ft::PROP_OFFSET, off)];
        out(frame(Proto::FILE_TRANSFER, ft::FILE_CHUNK, SID, &props, data))
    };
    let ack =
        |off: i64| out(frame(Proto::FILE_TRANSFER, ft::ACK, SID, &[Prop::int64(ft::PROP_OFFSET, off)], &[]));
    let err = with_body(hdr(ft::ERROR), |b| {
        FtError { err: Some("abort"), msgtype: Some("get_file"), msgid: None, code: 0 }.encode(b)
    });
    vec![
        (
            "stat_file",
            seq(&[
                Msg(&stat("/tmp/mc-fuzz-ft/file")),
                Msg(&stat("/tmp/mc-fuzz-ft/dir")),
                Msg(&stat("/tmp/mc-fuzz-ft/../../etc/passwd")),
                Msg(&stat("/tmp/mc-fuzz-ft/missing")),
            ]),
        ),
        (
            "download",
            seq(&[
                Msg(&get("/tmp/mc-fuzz-ft/file")),
                Wait(3),
                Msg(&ack(4096)),
                Wait(3),
                Msg(&ack(20_000)),
                Wait(3),
            ]),
        ),
        (
            "download_abort",
            seq(&[Msg(&get("/tmp/mc-fuzz-ft/file")), Wait(1), Msg(&err), Msg(&get("/tmp/mc-fuzz-ft/dir"))]),
        ),
        (
            "upload",
            seq(&[
                Msg(&put("/tmp/mc-fuzz-ft/dir/up", 8)),
                Msg(&chunk(0, b"abcd")),
                Msg(&chunk(4, b"efgh")),
                Msg(&chunk(8, b"")),
            ]),
        ),
        (
            "upload_bad_offset",
            seq(&[Msg(&put("/tmp/mc-fuzz-ft/dir/up2", 8)), Msg(&chunk(4, b"abcd")), Msg(&ack(0))]),
        ),
        (
            "upload_over_dir",
            seq(&[
                Msg(&put("/tmp/mc-fuzz-ft/dir", 1)),
                Msg(&put("/tmp/mc-fuzz-ft/file", 1)),
                Msg(&chunk(0, b"z")),
                Msg(&chunk(1, b"")),
            ]),
        ),
        (
            "upload_then_get",
            seq(&[
                Msg(&put("/tmp/mc-fuzz-ft/up3", 3)),
                Msg(&chunk(0, b"abc")),
                Msg(&chunk(3, b"")),
                Msg(&get("/tmp/mc-fuzz-ft/up3")),
                Wait(3),
                Msg(&ack(3)),
            ]),
        ),
    ]
}

fn write(dir: &Path, seeds: Vec<(&'static str, Vec<u8>)>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write(&root.join("control_msg"), control_seeds());
    write(&root.join("shell_msg"), shell_seeds());
    write(&root.join("filetransfer_msg"), ft_seeds());
    write(&root.join("portforward_msg"), pf_seeds());
    write(&root.join("menderclient_msg"), mc_seeds());
    write(&root.join("router"), router_seeds());
    // The handler target drives the agent's code, so its corpus is in agent/fuzz.
    write(&root.join("../../../agent/fuzz/corpus/filetransfer_handler"), ft_handler_seeds());
}
