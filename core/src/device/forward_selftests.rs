//! Port forwarding through the composed device on a virtual clock: frames in, clock in,
//! socket work and frames out.

use super::*;
use crate::backoff::BackoffConfig;
use crate::control::CLOSE;
use crate::control_sessions::IdleConfig;
use crate::forwards::{Action as Fw, CloseReason};
use crate::frame::{Frame, FrameOut, Prop, Proto};
use crate::link::LinkConfig;
use crate::portforward::{PROP_CONNECTION_ID, PfError, PortForwardNew};
use crate::sessions::Id;
use heapless::{String, Vec};

type Dev = FixedDevice<4, 2, { shells::queue_len(2) }, FixedForwards<4, { forwards::queue_len(4) }>>;

use crate::selftest::t;

fn id(v: &str) -> Id {
    Id::try_from(v).unwrap()
}

/// What came out, with port-forward frames decoded.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    Engine(engine::Action),
    Socket(Fw),
    /// `typ`, sid, `connection_id`.
    Frame(String<8>, String<64>, String<64>),
    /// sid, `msgtype`, `err`.
    Error(String<64>, String<8>, String<160>),
}

fn st<const N: usize>(v: &str) -> String<N> {
    String::try_from(v).unwrap()
}

fn fr(typ: &str, sid: &str, cid: &str) -> Out {
    Out::Frame(st(typ), st(sid), st(cid))
}

fn err(sid: &str, about: &str, text: &str) -> Out {
    Out::Error(st(sid), st(about), st(text))
}

fn close(sid: &str, cid: &str, why: CloseReason) -> Out {
    Out::Socket(Fw::Close { sid: id(sid), cid: id(cid), why })
}

fn dial(sid: &str, cid: &str) -> Out {
    Out::Socket(Fw::Dial { sid: id(sid), cid: id(cid) })
}

fn decode(bytes: &[u8]) -> Out {
    let f = Frame::decode(bytes).expect("port-forward frame decodes");
    assert_eq!(f.header.proto, Proto::PORT_FORWARD);
    if f.header.typ == pf::ERROR {
        let e = PfError::decode(f.body).unwrap();
        return err(f.header.sid, e.msgtype.unwrap(), e.err.unwrap());
    }
    assert!(f.body.is_empty());
    fr(f.header.typ, f.header.sid, f.header.props.get_str(PROP_CONNECTION_ID).unwrap())
}

fn drain(d: &mut Dev) -> Vec<Out, 24> {
    let mut buf = [0u8; POLL_BUF_LEN];
    let mut out = Vec::new();
    while let Some(a) = d.poll_action(&mut buf) {
        let o = match a {
            Action::Engine(a) => Out::Engine(a),
            Action::Forward(a) => Out::Socket(a),
            Action::SendForward { len } => decode(&buf[..len]),
            other => panic!("not a port-forward scenario: {other:?}"),
        };
        out.push(o).expect("at most 24 actions");
    }
    out
}

/// A device serving port forward with `cfg`, its link up at `t(0)`.
fn device(cfg: ForwardConfig) -> Dev {
    let ecfg = Config {
        link: LinkConfig {
            backoff: BackoffConfig { base_ms: 1_000, cap_ms: 1_000, stable_after_ms: 60_000 },
            disconnect_grace_ms: 60_000,
            reread: false,
        },
        idle: IdleConfig::default(),
        terminal: false,
        served: &[Proto::PORT_FORWARD],
    };
    let mut d = Dev::new(&ecfg, ShellConfig::default(), 7).with_forwards(cfg);
    d.handle_credentials(CredentialsUpdate::Changed, t(0));
    assert_eq!(drain(&mut d).as_slice(), &[Out::Engine(engine::Action::Link(LinkAction::Dial))]);
    d.handle_connected(t(0));
    assert!(drain(&mut d).is_empty());
    d
}

/// A port-forward frame from the user side.
fn msg<'b>(buf: &'b mut [u8], typ: &str, sid: &str, cid: &str, body: &[u8]) -> &'b [u8] {
    let props = [Prop::str(PROP_CONNECTION_ID, cid)];
    let n = FrameOut { proto: Proto::PORT_FORWARD, typ, sid, props: &props, body, ..FrameOut::EMPTY }
        .encode(buf)
        .unwrap();
    &buf[..n]
}

fn new_body<'b>(buf: &'b mut [u8], host: Option<&str>, port: Option<u16>, proto: Option<&str>) -> &'b [u8] {
    let n = PortForwardNew { remote_host: host, remote_port: port, protocol: proto }.encode(buf).unwrap();
    &buf[..n]
}

/// Sends `typ` (empty body) and returns what the device said at once and queued.
fn send(d: &mut Dev, typ: &str, sid: &str, cid: &str, now: Instant) -> Vec<Out, 24> {
    let (mut inb, mut reply) = ([0u8; 512], [0u8; 1024]);
    let r = d.handle_frame(msg(&mut inb, typ, sid, cid, &[]), now, &mut reply);
    let mut out: Vec<Out, 24> = Vec::new();
    match r {
        Delivered::Handled { reply: Some(n) } => out.push(decode(&reply[..n])).unwrap(),
        Delivered::Handled { reply: None } => {}
        other => panic!("{other:?}"),
    }
    for o in drain(d) {
        out.push(o).unwrap();
    }
    out
}

/// A `new` for `sid`/`cid` to 127.0.0.1:8080/tcp: what the device answered (nothing if
/// admitted: the target comes out for the caller, then its dial).
fn new(d: &mut Dev, sid: &str, cid: &str, now: Instant) -> Result<Vec<Out, 24>, forwards::Refusal> {
    let (mut inb, mut body, mut reply) = ([0u8; 512], [0u8; 128], [0u8; 1024]);
    let body = new_body(&mut body, Some("127.0.0.1"), Some(8080), Some("tcp"));
    match d.handle_frame(msg(&mut inb, pf::NEW, sid, cid, body), now, &mut reply) {
        Delivered::ForwardOpen { sid: s, cid: c, protocol: Protocol::Tcp, host: "127.0.0.1", port: 8080 } => {
            assert_eq!((s, c), (sid, cid));
            Ok(drain(d))
        }
        Delivered::ForwardRefused { refusal, .. } => Err(refusal),
        other => panic!("{other:?}"),
    }
}

/// A connection dialled and answered with `new`.
fn open(d: &mut Dev, sid: &str, cid: &str, now: Instant) {
    assert_eq!(new(d, sid, cid, now).unwrap().as_slice(), &[dial(sid, cid)]);
    assert!(d.handle_forward_dialed(sid, cid, true, now));
    assert_eq!(drain(d).as_slice(), &[fr(pf::NEW, sid, cid)]);
}

/// A `forward` from the user: whether the device took its bytes for the target.
fn forward(d: &mut Dev, sid: &str, cid: &str, data: &[u8], now: Instant) -> bool {
    let (mut inb, mut reply) = ([0u8; 512], [0u8; 1024]);
    match d.handle_frame(msg(&mut inb, pf::FORWARD, sid, cid, data), now, &mut reply) {
        Delivered::ForwardData { sid: s, cid: c, bytes } => {
            assert_eq!((s, c, bytes), (sid, cid, data));
            true
        }
        Delivered::Handled { reply: None } => false,
        other => panic!("{other:?}"),
    }
}

/// Runs every timer due up to `until`; returns what came out, with when.
fn run_until(d: &mut Dev, until: Instant) -> Vec<(u64, Out), 24> {
    let mut seen = Vec::new();
    for _ in 0..1_000 {
        let Some(at) = d.poll_timeout().filter(|at| *at <= until) else { break };
        d.handle_timeout(at);
        for o in drain(d) {
            seen.push((at.as_millis(), o)).expect("at most 24 actions");
        }
    }
    seen
}

/// One device `forward` in flight until the user acks it (the ack lets the executor read
/// again); one `ack` per written user `forward`; a user `forward` beyond the unacked ones the
/// device holds ends the connection with the error and `stop`.
fn pf_flow_control() {
    let mut d = device(ForwardConfig::default());
    open(&mut d, "s", "c1", t(0));
    // Device → user.
    assert!(d.handle_forward_read("s", "c1", t(1)));
    assert!(!d.handle_forward_read("s", "c1", t(2)), "a second forward while one is in flight");
    assert!(
        send(&mut d, pf::ACK, "s", "c1", t(3)).as_slice()
            == [Out::Socket(Fw::ReadMore { sid: id("s"), cid: id("c1") })]
    );
    assert!(d.handle_forward_read("s", "c1", t(4)));
    // A surplus ack releases nothing.
    assert!(
        send(&mut d, pf::ACK, "s", "c1", t(5)).as_slice()
            == [Out::Socket(Fw::ReadMore { sid: id("s"), cid: id("c1") })]
    );
    assert!(send(&mut d, pf::ACK, "s", "c1", t(5)).is_empty());
    // User → device: each written forward is acked.
    assert!(forward(&mut d, "s", "c1", b"GET /", t(6)));
    assert!(drain(&mut d).is_empty(), "acked only once written");
    d.handle_forward_written("s", "c1", t(7));
    assert_eq!(drain(&mut d).as_slice(), &[fr(pf::ACK, "s", "c1")]);
    // Forwards taken while dialling count; the third unacked one ends the connection.
    assert_eq!(new(&mut d, "s", "c2", t(8)).unwrap().as_slice(), &[dial("s", "c2")]);
    assert!(forward(&mut d, "s", "c2", b"a", t(9)));
    assert!(forward(&mut d, "s", "c2", b"b", t(9)));
    assert!(!d.handle_forward_read("s", "c2", t(9)), "nothing is read before the dial");
    assert!(!forward(&mut d, "s", "c2", b"c", t(10)));
    assert_eq!(
        drain(&mut d).as_slice(),
        &[
            err("s", pf::FORWARD, "too many unacknowledged forward messages"),
            close("s", "c2", CloseReason::Unacked),
            fr(pf::STOP, "s", "c2"),
        ]
    );
    // Gone: its dial result and further forwards are for nothing.
    assert!(!d.handle_forward_dialed("s", "c2", true, t(11)));
    assert!(!forward(&mut d, "s", "c2", b"d", t(11)));
    assert_eq!(drain(&mut d).as_slice(), &[err("s", pf::FORWARD, "unknown connection")]);
    // A user's stop is answered with stop; the target's end sends stop.
    open(&mut d, "s", "c3", t(12));
    assert_eq!(
        send(&mut d, pf::STOP, "s", "c3", t(13)).as_slice(),
        &[close("s", "c3", CloseReason::Requested), fr(pf::STOP, "s", "c3")]
    );
    assert_eq!(
        send(&mut d, pf::STOP, "s", "c3", t(13)).as_slice(),
        &[err("s", pf::STOP, "unknown connection")]
    );
    d.handle_forward_ended("s", "c1");
    assert_eq!(drain(&mut d).as_slice(), &[close("s", "c1", CloseReason::Ended), fr(pf::STOP, "s", "c1")]);
    assert!(d.forwards().is_empty());
    assert_eq!(d.forwards().overflowed(), 0);
}

/// The dial and idle timeouts run on the device's one timer, next to the engine's.
fn pf_dial_and_idle_timeouts() {
    let cfg =
        ForwardConfig { connect_timeout_ms: 5_000, idle_timeout_ms: 20_000, ..ForwardConfig::default() };
    let mut d = device(cfg);
    assert_eq!(new(&mut d, "s", "slow", t(0)).unwrap().as_slice(), &[dial("s", "slow")]);
    open(&mut d, "s", "c", t(1_000));
    assert_eq!(d.poll_timeout(), Some(t(5_000)));
    let seen = run_until(&mut d, t(5_000));
    assert_eq!(seen.as_slice(), &[(5_000, close("s", "slow", CloseReason::DialTimedOut))]);
    assert!(!d.handle_forward_dialed("s", "slow", true, t(5_001)), "a dial done after its timeout");
    // Traffic either way defers the idle close.
    assert!(forward(&mut d, "s", "c", b"x", t(10_000)));
    d.handle_forward_written("s", "c", t(10_000));
    drain(&mut d);
    assert!(d.handle_forward_read("s", "c", t(15_000)));
    assert!(run_until(&mut d, t(34_999)).is_empty());
    let seen = run_until(&mut d, t(35_000));
    assert_eq!(
        seen.as_slice(),
        &[(35_000, close("s", "c", CloseReason::Idle)), (35_000, fr(pf::STOP, "s", "c"))]
    );
    assert!(d.forwards().is_empty());
}

/// A session's end (peer `close`, device kill) closes its connections without `stop`, before
/// the engine says the session ended; so do a lost link and a revoked authorization, for all.
fn pf_session_close_and_link_loss() {
    let mut d = device(ForwardConfig::default());
    open(&mut d, "a", "1", t(0));
    open(&mut d, "a", "2", t(0));
    open(&mut d, "b", "1", t(0));
    let (mut inb, mut reply) = ([0u8; 256], [0u8; 1024]);
    let n =
        FrameOut { proto: Proto::CONTROL, typ: CLOSE, sid: "a", ..FrameOut::EMPTY }.encode(&mut inb).unwrap();
    d.handle_frame(&inb[..n], t(1), &mut reply);
    let out = drain(&mut d);
    assert_eq!(
        &out[..2],
        &[close("a", "1", CloseReason::SessionClosed), close("a", "2", CloseReason::SessionClosed)]
    );
    assert!(
        matches!(&out[2..], [Out::Engine(engine::Action::SessionEnded { sid, .. })] if sid == "a"),
        "{out:?}"
    );
    assert_eq!(d.forwards().count_in("b"), 1);
    // Killed on the device's initiative.
    assert!(d.kill_session("b", &mut reply).is_some());
    assert_eq!(drain(&mut d).as_slice(), &[close("b", "1", CloseReason::SessionClosed)]);
    // The websocket drops.
    open(&mut d, "c", "1", t(2));
    open(&mut d, "d", "1", t(2));
    d.handle_link_closed(t(3));
    let out = drain(&mut d);
    assert_eq!(
        &out[..2],
        &[close("c", "1", CloseReason::SessionClosed), close("d", "1", CloseReason::SessionClosed)]
    );
    assert!(d.forwards().is_empty());
    // Back up, then unauthorized: connections close with the sessions.
    d.handle_timeout(t(10_000));
    drain(&mut d);
    d.handle_connected(t(10_000));
    drain(&mut d);
    open(&mut d, "e", "1", t(10_001));
    d.handle_credentials(CredentialsUpdate::Unauthorized, t(10_002));
    let out = drain(&mut d);
    assert_eq!(out.first(), Some(&close("e", "1", CloseReason::SessionClosed)), "{out:?}");
    assert!(d.forwards().is_empty());
    // Stopping the daemon closes them too.
    let mut d = device(ForwardConfig::default());
    open(&mut d, "f", "1", t(0));
    d.handle_shutdown(t(1));
    assert_eq!(drain(&mut d).first(), Some(&close("f", "1", CloseReason::SessionClosed)));
}

/// Limits and malformed requests are refused with the reference's (and the agent's) texts.
fn pf_limits_and_refusals() {
    let cfg = ForwardConfig { max_per_session: 2, max_connections: 3, ..ForwardConfig::default() };
    let mut d = device(cfg);
    open(&mut d, "a", "1", t(0));
    open(&mut d, "a", "2", t(0));
    assert_eq!(new(&mut d, "a", "3", t(0)), Err(forwards::Refusal::TooManyInSession));
    assert_eq!(
        drain(&mut d).as_slice(),
        &[err(
            "a",
            pf::NEW,
            "too many port-forward connections in this session (at most 2, PortForward.MaxConnectionsPerSession)"
        )]
    );
    open(&mut d, "b", "1", t(0));
    assert_eq!(new(&mut d, "c", "1", t(0)), Err(forwards::Refusal::TooManyOnDevice));
    assert_eq!(
        drain(&mut d).as_slice(),
        &[err(
            "c",
            pf::NEW,
            "too many port-forward connections on this device (at most 3, PortForward.MaxConnections)"
        )]
    );
    // A reused id replaces its connection: the old socket closes before the new dial.
    assert_eq!(
        new(&mut d, "a", "1", t(1)).unwrap().as_slice(),
        &[close("a", "1", CloseReason::Replaced), dial("a", "1")]
    );
    // Invalid targets are answered at once, nothing is dialled.
    let (mut inb, mut body, mut reply) = ([0u8; 512], [0u8; 128], [0u8; 1024]);
    let invalid = "invalid port-forward message: missing connection_id, remote_port or protocol";
    for (host, port, proto, cid, text) in [
        (Some("h"), None, Some("tcp"), "9", invalid),
        (Some(""), Some(1), Some("tcp"), "9", invalid),
        (Some("h"), Some(1), None, "9", invalid),
        (Some("h"), Some(1), Some("tcp"), "", invalid),
        (Some("h"), Some(1), Some("sctp"), "9", "unknown protocol: sctp"),
    ] {
        let body = new_body(&mut body, host, port, proto);
        let r = d.handle_frame(msg(&mut inb, pf::NEW, "z", cid, body), t(2), &mut reply);
        let Delivered::Handled { reply: Some(n) } = r else { panic!("{r:?}") };
        assert_eq!(decode(&reply[..n]), err("z", pf::NEW, text));
        assert!(drain(&mut d).is_empty());
    }
    assert_eq!(
        send(&mut d, "bogus", "a", "1", t(3)).as_slice(),
        &[err("a", "bogus", "unknown message type")]
    );
    assert_eq!(send(&mut d, pf::ACK, "a", "7", t(3)).as_slice(), &[err("a", pf::ACK, "unknown connection")]);
    let r = d.handle_frame(msg(&mut inb, pf::NEW, "a", "8", b"\xc1"), t(3), &mut reply);
    let Delivered::Handled { reply: Some(n) } = r else { panic!("{r:?}") };
    assert!(
        matches!(decode(&reply[..n]), Out::Error(_, ref about, ref text) if about == "new" && text.starts_with("invalid port-forward message: "))
    );
    assert_eq!(d.forwards().len(), 3);
}

/// Session `sid`'s bytes sent.
fn sent(d: &Dev, sid: &str) -> u64 {
    d.engine().sessions().find(|s| s.sid() == sid).map_or(0, |s| s.bytes_out())
}

/// Every port-forward frame the device sends counts in its session's bytes sent (the status
/// CLI's `bytes_out`): its replies to the user's messages and the table's own frames.
fn pf_frames_count_as_sent() {
    let mut d = device(ForwardConfig::default());
    let (mut inb, mut body, mut reply, mut buf) = ([0u8; 512], [0u8; 128], [0u8; 1024], [0u8; POLL_BUF_LEN]);
    // A reply: the answer to an invalid `new`.
    let body = new_body(&mut body, Some("h"), Some(1), None);
    let r = d.handle_frame(msg(&mut inb, pf::NEW, "s", "x", body), t(0), &mut reply);
    let Delivered::Handled { reply: Some(answer) } = r else { panic!("{r:?}") };
    assert_eq!(decode(&reply[..answer]), err("s", pf::NEW, FORWARD_INVALID_TEXT));
    assert!(drain(&mut d).is_empty());
    assert_eq!(sent(&d, "s"), answer as u64);
    // The table's frames: an `error` for an unknown connection, a `new` once dialled.
    let r = d.handle_frame(msg(&mut inb, pf::ACK, "s", "x", &[]), t(1), &mut reply);
    assert_eq!(r, Delivered::Handled { reply: None });
    let Some(Action::SendForward { len: unknown }) = d.poll_action(&mut buf) else { panic!("no error") };
    assert_eq!(decode(&buf[..unknown]), err("s", pf::ACK, "unknown connection"));
    assert!(d.poll_action(&mut buf).is_none());
    assert_eq!(new(&mut d, "s", "c", t(1)).unwrap().as_slice(), &[dial("s", "c")]);
    assert!(d.handle_forward_dialed("s", "c", true, t(1)));
    let Some(Action::SendForward { len: opened }) = d.poll_action(&mut buf) else { panic!("no new") };
    assert_eq!(decode(&buf[..opened]), fr(pf::NEW, "s", "c"));
    assert!(d.poll_action(&mut buf).is_none());
    assert_eq!(sent(&d, "s"), (answer + unknown + opened) as u64);
}

crate::selftests!(
    pf_flow_control,
    pf_dial_and_idle_timeouts,
    pf_session_close_and_link_loss,
    pf_limits_and_refusals,
    pf_frames_count_as_sent
);
