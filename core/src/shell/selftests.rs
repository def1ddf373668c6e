//! Shell-protocol tests that need no std (see [`crate::selftest`]): run on the host and on the bare-metal runner.

use super::*;
use crate::msgpack::IntWidth;
use crate::selftest::hex;

// Go: the device's health-check ping from mender-connect 2.1.0 session/shell.go
// healthcheckPing: props {"timeout": int(60+5), "status": wsshell.ControlMessage}; both Go ints,
// which vmihailenco/msgpack v5.3.5 writes compactly (41, 03). Go map iteration order is random;
// this vector fixes timeout first (our encoder's order), which any decoder accepts.
const PING: &str = "81 a3686472 84 a570726f746f cd0001 a3747970 a470696e67 a3736964 a173 \
    a570726f7073 82 a774696d656f7574 41 a6737461747573 03";

// Go: shell output from shell/exec.go pipeStdout: typ "shell", props {"status": NormalMessage},
// body = pty bytes as bin. Bytes = msgpack.Marshal with vmihailenco/msgpack v5.3.5.
const OUTPUT: &str = "82 a3686472 84 a570726f746f cd0001 a3747970 a57368656c6c a3736964 a173 \
    a570726f7073 81 a6737461747573 01 a4626f6479 c402 2420";

fn ping_vector() {
    let mut buf = [0u8; 128];
    let n = encode_ping(&mut buf, "s", 65).unwrap();
    assert_eq!(&buf[..n], &hex(PING)[..]);
    let f = Frame::decode(&buf[..n]).unwrap();
    assert_eq!(ShellMessage::from_frame(&f), Ok(ShellMessage::Ping { timeout: Some(65) }));
    assert_eq!(status(&f), Some(Status::Control));
}

fn output_vector() {
    let mut buf = [0u8; 128];
    let n = encode_with_status(&mut buf, SHELL, "s", Status::Normal, b"$ ").unwrap();
    assert_eq!(&buf[..n], &hex(OUTPUT)[..]);
    let output = hex(OUTPUT);
    let f = Frame::decode(&output).map(|f| (f.body, status(&f))).unwrap();
    assert_eq!(f, (&b"$ "[..], Some(Status::Normal)));
}

fn new_from_user_with_size_in_any_width() {
    // mender-cli style `new`: props user_id (str), terminal_width/height as uint16 (cd).
    let bytes = hex("82 a3686472 84 a570726f746f cd0001 a3747970 a36e6577 a3736964 a3736964 \
        a570726f7073 83 a7757365725f6964 a175 ae7465726d696e616c5f7769647468 cd0050 af7465726d696e616c5f686569676874 18 \
        a4626f6479 c400");
    let f = Frame::decode(&bytes).unwrap();
    assert_eq!(f.header.props.get_int(PROP_TERMINAL_WIDTH).map(|i| i.width()), Some(IntWidth::U16));
    assert_eq!(
        ShellMessage::from_frame(&f),
        Ok(ShellMessage::New { user_id: "u", size: Some(TermSize { width: 80, height: 24 }) })
    );
}

fn size_needs_both_sides_positive() {
    let mut buf = [0u8; 128];
    let props = [Prop::int64(PROP_TERMINAL_WIDTH, 80)];
    let n = FrameOut { proto: Proto::SHELL, typ: RESIZE, props: &props, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    assert_eq!(ShellMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(ShellMessage::Resize(None)));
    let props = [Prop::int64(PROP_TERMINAL_WIDTH, 80), Prop::int64(PROP_TERMINAL_HEIGHT, -3)];
    let n = FrameOut { proto: Proto::SHELL, typ: RESIZE, props: &props, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    assert_eq!(ShellMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(ShellMessage::Resize(None)));
    // 65536 truncates to 0 as Go's uint16() does -> absent.
    let props = [Prop::int64(PROP_TERMINAL_WIDTH, 65536), Prop::int64(PROP_TERMINAL_HEIGHT, 5)];
    let n = FrameOut { proto: Proto::SHELL, typ: RESIZE, props: &props, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    assert_eq!(ShellMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(ShellMessage::Resize(None)));
}

fn status_any_width_and_strict_check() {
    // status 2 as positive fixint (what the reference writes) and as d3 (what mender-cli's
    // int64 check wants): `status()` accepts both, `as_go_int64` tells them apart.
    // A `stop` whose props end in "status": the value follows.
    const STOP_STATUS_KEY: &str =
        "81 a3686472 83 a570726f746f cd0001 a3747970 a473746f70 a570726f7073 81 a6737461747573";
    for (enc, strict) in [("02", None), ("d30000000000000002", Some(2))] {
        let mut bytes = hex(STOP_STATUS_KEY);
        bytes.extend(hex(enc));
        let f = Frame::decode(&bytes).unwrap();
        assert_eq!(status(&f), Some(Status::Error));
        assert_eq!(f.header.props.get_int(PROP_STATUS).and_then(|i| i.as_go_int64()), strict);
    }
}

fn other_types() {
    let mut buf = [0u8; 64];
    for (typ, want) in [
        (STOP, ShellMessage::Stop { user_id: "" }),
        (PONG, ShellMessage::Pong),
        ("bogusmessage", ShellMessage::Unknown("bogusmessage")),
    ] {
        let n = FrameOut { proto: Proto::SHELL, typ, sid: "s", ..FrameOut::EMPTY }.encode(&mut buf).unwrap();
        assert_eq!(ShellMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(want));
    }
    let n = FrameOut { proto: Proto::SHELL, typ: SHELL, body: b"ls\n", ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    assert_eq!(ShellMessage::from_frame(&Frame::decode(&buf[..n]).unwrap()), Ok(ShellMessage::Data(b"ls\n")));
}

crate::selftests!(
    ping_vector,
    output_vector,
    new_from_user_with_size_in_any_width,
    size_needs_both_sides_positive,
    status_any_width_and_strict_check,
    other_types,
);
