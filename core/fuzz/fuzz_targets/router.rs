//! Fuzzes the agent's message router with arbitrary frame sequences, as the daemon's event loop
//! feeds it (`Router::route` per websocket message, `Router::tick` every second).
//!
//! Input: a sequence of records. `0x00 n` advances the clock by `n` seconds and runs the idle
//! tick; any other first byte is followed by a little-endian `u16` length and that many bytes,
//! routed as one websocket message.
//!
//! The shell protocol is enabled with a user that does not exist, so `new` fails before any
//! process is started; file transfer and port forward get recording handlers (their parsers have
//! their own targets), mender-client stays unregistered (the "no handler" path). Checked: every
//! reply is a decodable frame for the message's sid, an undecodable message gets exactly one
//! control error, handlers only see their own proto and sid, are never served after close nor
//! closed twice, and a disconnect closes every handler.
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mender_connect::proto::router::{Router, SessionHandler};
use mender_connect::proto::shell::{Action, ShellSettings, Shells};
use mender_connect_core::control::{self, ControlMessage};
use mender_connect_core::shell::TermSize;
use mender_connect_core::{Frame, MAX_FRAME_LEN, Proto};

#[derive(Default)]
struct Tally {
    created: usize,
    closed: usize,
}

struct Recorder {
    proto: Proto,
    sid: Option<String>,
    closed: bool,
    tally: Rc<RefCell<Tally>>,
}

impl SessionHandler for Recorder {
    fn serve(&mut self, sid: &str, frame: &Frame<'_>, out: &mut Vec<Vec<u8>>) {
        assert!(!self.closed, "handler served after close");
        assert_eq!(frame.header.proto, self.proto, "handler got another protocol's frame");
        assert_eq!(frame.header.sid, sid);
        match &self.sid {
            Some(s) => assert_eq!(s, sid, "handler got another session's frame"),
            None => self.sid = Some(sid.to_owned()),
        }
        // Answer like a handler would: an echo of the request's header.
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        if let Ok(n) = frame.encode(&mut buf) {
            buf.truncate(n);
            out.push(buf);
        }
    }

    fn close(&mut self) {
        assert!(!self.closed, "handler closed twice");
        self.closed = true;
        self.tally.borrow_mut().closed += 1;
    }
}

fn check_reply(reply: &[u8], sid: Option<&str>) {
    if reply.len() > MAX_FRAME_LEN {
        // Replies echo the offending typ and sid, so a near-limit request can give a larger
        // answer; the server has no 8 KiB read limit.
        return;
    }
    let f = Frame::decode(reply).expect("every reply decodes");
    if let Some(sid) = sid {
        assert_eq!(f.header.sid, sid, "reply for another session");
    }
}

fuzz_target!(|data: &[u8]| {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mut router = Router::new(true);
    for proto in [Proto::FILE_TRANSFER, Proto::PORT_FORWARD] {
        let t = Rc::clone(&tally);
        router.register(
            proto,
            Box::new(move || {
                t.borrow_mut().created += 1;
                Box::new(Recorder { proto, sid: None, closed: false, tally: Rc::clone(&t) }) as Box<dyn SessionHandler>
            }),
        );
    }
    let settings = ShellSettings {
        command: "/bin/sh".into(),
        args: Vec::new(),
        user: "mender-connect-fuzz-no-such-user".into(),
        size: TermSize { width: 80, height: 24 },
        max_per_user: 2,
        expiry: None,
        health_interval: mender_connect::proto::shell::HEALTH_INTERVAL,
        disconnect_grace: mender_connect::proto::shell::DEFAULT_DISCONNECT_GRACE,
    };
    let (data_tx, _data_rx) = async_channel::bounded(16);
    let (exited_tx, _exited_rx) = async_channel::unbounded();
    let mut shells = Shells::new(settings, data_tx, exited_tx);
    let mut now = Instant::now();

    let mut rest = data;
    while let [op, tail @ ..] = rest {
        if *op == 0 {
            let [secs, tail @ ..] = tail else { break };
            now += Duration::from_secs(u64::from(*secs));
            for reply in router.tick(now) {
                check_reply(&reply, None);
                let f = Frame::decode(&reply).expect("tick output decodes");
                assert_eq!(f.header.proto, Proto::CONTROL);
            }
            rest = tail;
            continue;
        }
        let [lo, hi, tail @ ..] = tail else { break };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let decoded = Frame::decode(msg).ok();
        let actions = router.route(msg, &mut shells, now);
        if decoded.is_none() {
            assert_eq!(actions.len(), 1, "an undecodable message gets one error");
        }
        for action in actions {
            let Action::Reply(reply) = action else { panic!("input for a shell that cannot exist") };
            check_reply(&reply, Some(decoded.map_or("", |f| f.header.sid)));
            if decoded.is_none() {
                let f = Frame::decode(&reply).expect("error reply decodes");
                assert!(matches!(ControlMessage::from_frame(&f), Ok(ControlMessage::Error(_))));
                assert_eq!(f.header.typ, control::ERROR);
            }
        }
    }
    router.disconnected();
    assert_eq!(router.sessions(), 0);
    let t = tally.borrow();
    assert_eq!(t.created, t.closed, "a disconnect leaves handlers open");
});
