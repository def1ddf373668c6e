//! Simulation tests that need std (large inputs, the agent's full capacity).

use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::control::{self, ControlMessage};
use crate::control_sessions::{MAX_SESSIONS, POLL_BUF_LEN, Refusal};
use crate::frame::{FrameOut, Prop};

use crate::selftest::t;

fn agent_engine() -> std::boxed::Box<FixedEngine<MAX_SESSIONS>> {
    let cfg = Config {
        link: LinkConfig::new(1_000, 60_000, 60_000, true),
        idle: IdleConfig::default(),
        terminal: true,
        served: &[Proto::FILE_TRANSFER],
    };
    let mut e = std::boxed::Box::new(Engine::new(&cfg, 9));
    e.handle_credentials(CredentialsUpdate::Changed, t(0));
    let mut buf = [0u8; POLL_BUF_LEN];
    while e.poll_action(&mut buf).is_some() {}
    e.handle_connected(t(0));
    e
}

fn frame(proto: Proto, typ: &str, sid: &str, props: &[Prop<'_>], body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4 * MAX_FRAME_LEN];
    let n = FrameOut { proto, typ, sid, props, body, ..FrameOut::EMPTY }.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn error_text(reply: &[u8], r: &Routed<'_>) -> (String, bool) {
    let Routed::Handled { reply: Some(n), .. } = r else { panic!("no reply: {r:?}") };
    let f = Frame::decode_any_size(&reply[..*n]).unwrap();
    match ControlMessage::from_frame(&f).unwrap() {
        ControlMessage::Error(e) => (e.err.into(), e.close),
        other => panic!("{other:?}"),
    }
}

/// The agent's capacity: 1024 sessions, then a closing refusal; all are pinged and time out
/// together on the virtual clock, in one sweep each.
#[test]
fn full_table_pings_and_times_out() {
    let mut e = agent_engine();
    let mut reply = vec![0u8; REPLY_BUF_LEN];
    for i in 0..MAX_SESSIONS {
        let f = frame(Proto::CONTROL, control::PING, &format!("s{i}"), &[], &[]);
        e.handle_frame(&f, t(1), &mut reply);
    }
    let f = frame(Proto::CONTROL, control::PING, "one-more", &[], &[]);
    let r = e.handle_frame(&f, t(2), &mut reply);
    assert_eq!(error_text(&reply, &r), ("too many open sessions on this device (at most 1024)".into(), true));
    assert!(matches!(r, Routed::Handled { note: Note::Refused(Refusal::TooMany(1024)), .. }));
    assert_eq!(e.session_count(), MAX_SESSIONS);

    let mut buf = [0u8; POLL_BUF_LEN];
    assert_eq!(e.poll_timeout(), Some(t(48_001)));
    e.handle_timeout(t(48_001));
    let mut pings = 0;
    while let Some(a) = e.poll_action(&mut buf) {
        assert!(matches!(a, Action::Send { kind: SendKind::Ping, .. }), "{a:?}");
        pings += 1;
    }
    assert_eq!(pings, MAX_SESSIONS);
    e.handle_timeout(t(60_001));
    let (mut timeouts, mut ended) = (0, 0);
    while let Some(a) = e.poll_action(&mut buf) {
        match a {
            Action::Send { kind: SendKind::Timeout, .. } => timeouts += 1,
            Action::SessionEnded { reason: EndReason::Timeout, .. } => ended += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((timeouts, ended, e.session_count()), (MAX_SESSIONS, MAX_SESSIONS, 0));
    assert_eq!(e.poll_timeout(), None);
}

/// Oversized and near-limit frames: over 8192 bytes is undecodable (one error, empty sid);
/// an unknown control type of nearly 8 KiB is echoed in full, and the reply fits the buffer.
#[test]
fn oversized_and_near_limit_frames() {
    let mut e = agent_engine();
    let mut reply = vec![0u8; REPLY_BUF_LEN];
    let big = frame(Proto::CONTROL, control::PING, "s", &[], &vec![b'x'; MAX_FRAME_LEN]);
    let r = e.handle_frame(&big, t(1), &mut reply);
    assert_eq!(
        error_text(&reply, &r),
        ("failed to decode message: frame exceeds the 8192-byte limit".into(), false)
    );
    assert_eq!(e.session_count(), 0);

    let typ = "t".repeat(MAX_FRAME_LEN - 100);
    let f = frame(Proto::CONTROL, &typ, "s", &[Prop::str("msgid", "m")], &[]);
    assert!(f.len() <= MAX_FRAME_LEN);
    let r = e.handle_frame(&f, t(2), &mut reply);
    let (text, close) = error_text(&reply, &r);
    assert_eq!(text, format!("session: control type message not understood: '{typ}'"));
    assert!(!close);
    // A too-small reply buffer drops the reply instead of panicking.
    let mut small = [0u8; 64];
    let r = e.handle_frame(&f, t(3), &mut small);
    assert!(matches!(r, Routed::Handled { reply: None, .. }));
}

/// A reconnect storm over a simulated day: the link drops after random short lifetimes,
/// every delay stays within its bound, the bound never passes the cap, and one long-lived
/// link resets it.
#[test]
fn reconnect_storm_over_a_day() {
    let cfg = Config {
        link: LinkConfig::new(1_000, 60_000, 60_000, false),
        idle: IdleConfig::default(),
        terminal: true,
        served: &[],
    };
    let mut e: FixedEngine<4> = Engine::new(&cfg, 1234);
    let mut buf = [0u8; POLL_BUF_LEN];
    let mut now = t(0);
    e.handle_credentials(CredentialsUpdate::Changed, now);
    let mut dials = 0u32;
    let mut max_delay = 0u128;
    let mut lcg = 99u64;
    while now < t(86_400_000) {
        while let Some(a) = e.poll_action(&mut buf) {
            if a == Action::Link(LinkAction::Dial) {
                dials += 1;
                // Half the dials fail, the rest connect and live 0..10 s.
                lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1);
                if lcg >> 63 == 0 {
                    let d = e.handle_dial_failed(false, now).unwrap();
                    max_delay = max_delay.max(d.as_millis());
                } else {
                    e.handle_connected(now);
                    now = now.add_millis((lcg >> 20) % 10_000);
                    let d = e.handle_link_closed(now).unwrap();
                    max_delay = max_delay.max(d.as_millis());
                }
            }
        }
        let next = e.poll_timeout().expect("always a retry pending");
        assert!(next >= now);
        now = next;
        e.handle_timeout(now);
    }
    assert!(max_delay <= 60_000 && max_delay > 30_000, "{max_delay}");
    // The cap (60 s) bounds the rate: on average 30 s a dial at worst, so >= ~2,000 a day.
    assert!(dials > 1_000 && dials < 20_000, "{dials}");
    // A stable link resets the bound.
    while e.poll_action(&mut buf).is_some() {}
    assert!(e.link().attempt() > 5);
    let LinkState::Dialing = e.link_state() else { panic!("{:?}", e.link_state()) };
    e.handle_connected(now);
    let d = e.handle_link_closed(now.add_millis(60_000)).unwrap();
    assert!(d.as_millis() <= 1_000);
    assert_eq!(e.link().attempt(), 1);
}

/// A store that grows on demand, as the agent's: the cap is the engine's, not the store's.
struct Grow(Vec<crate::control_sessions::Session>);

impl crate::control_sessions::SessionStore for Grow {
    fn as_slice(&self) -> &[crate::control_sessions::Session] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [crate::control_sessions::Session] {
        &mut self.0
    }
    fn push(&mut self, s: crate::control_sessions::Session) -> bool {
        self.0.push(s);
        true
    }
    fn swap_remove(&mut self, i: usize) -> crate::control_sessions::Session {
        self.0.swap_remove(i)
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

#[test]
fn a_growing_store_keeps_the_engine_s_cap_and_holds_nothing_idle() {
    let cfg = Config {
        link: LinkConfig::new(1_000, 60_000, 60_000, false),
        idle: IdleConfig::default(),
        terminal: false,
        served: &[],
    };
    let mut e = Engine::with_store(&cfg, 1, Grow(Vec::new()), 3);
    assert!(core::mem::size_of_val(&e) < 1_024, "{}", core::mem::size_of_val(&e));
    e.handle_credentials(CredentialsUpdate::Changed, t(0));
    e.handle_connected(t(0));
    let mut reply = vec![0u8; REPLY_BUF_LEN];
    for (i, sid) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let f = frame(Proto::CONTROL, control::PING, sid, &[], &[]);
        let r = e.handle_frame(&f, t(1), &mut reply);
        if i < 3 {
            assert!(matches!(r, Routed::Handled { note: Note::None, reply: Some(_) }), "{r:?}");
        } else {
            assert_eq!(
                error_text(&reply, &r),
                ("too many open sessions on this device (at most 3)".into(), true)
            );
        }
    }
    assert_eq!(e.session_count(), 3);
    e.handle_link_closed(t(2));
    assert_eq!(e.session_count(), 0);
}
