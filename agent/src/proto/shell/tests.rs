//! The executor driven on a virtual clock: real shells on real ptys, time passed in as
//! `Instant`s the test chooses, so minutes of expiry and health checks take milliseconds.

use std::time::{Duration, Instant};

use mender_connect_core::frame::Prop;
use mender_connect_core::link::LinkConfig;
use mender_connect_core::shell as proto;
use mender_connect_core::{Frame, FrameOut, Proto};

use crate::os::users::current_user;
use crate::proto::router::{Output, Router};

use super::*;

struct Fx {
    router: Router,
    shells: Shells,
    _data: async_channel::Receiver<Vec<u8>>,
    _exited: async_channel::Receiver<crate::proto::router::Report>,
    t0: Instant,
}

/// What came out of the device while the clock ran: health-check pings, and the frames that
/// must reach the server (`stop`s).
#[derive(Default)]
struct Ticked {
    pings: Vec<Vec<u8>>,
    stops: Vec<Vec<u8>>,
}

impl Fx {
    fn new(expiry: Option<Expiry>, health_interval: Duration, disconnect_grace: Duration) -> Self {
        let settings = ShellSettings {
            command: "/bin/sh".into(),
            args: Vec::new(),
            user: current_user(),
            size: TermSize { width: 80, height: 24 },
            max_per_user: 1,
            expiry,
            health_interval,
            disconnect_grace,
        };
        let t0 = Instant::now();
        let link = LinkConfig::new(1_000, 60_000, clock::millis(disconnect_grace), false);
        let router = Router::connected(true, link, settings.table_config(), clock::to_core(t0));
        let (data, data_rx) = async_channel::bounded(64);
        let (exited, exited_rx) = async_channel::unbounded();
        let shells = Shells::new(settings, data, exited);
        Self { router, shells, _data: data_rx, _exited: exited_rx, t0 }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Routes one message, returning the replies as (typ, sid, status, body).
    fn send(
        &mut self,
        typ: &str,
        sid: &str,
        user: &str,
        body: &[u8],
        ms: u64,
    ) -> Vec<(String, String, Option<i64>, String)> {
        let mut buf = vec![0u8; 1024 + body.len()];
        let props = [Prop::str(proto::PROP_USER_ID, user)];
        let n = FrameOut { proto: Proto::SHELL, typ, sid, props: &props, body, ..FrameOut::EMPTY }
            .encode(&mut buf)
            .unwrap();
        let now = self.at(ms);
        self.router
            .route(&buf[..n], &mut self.shells, now)
            .into_iter()
            .map(|Action::Reply(f)| decode(&f))
            .collect()
    }

    /// Runs the device's timers up to `ms` (dials are left unanswered).
    fn tick(&mut self, ms: u64) -> Ticked {
        let at = clock::to_core(self.at(ms));
        let mut out = Ticked::default();
        for _ in 0..100 {
            self.drain(&mut out);
            let Some(due) = self.router.device().poll_timeout().filter(|due| *due <= at) else { break };
            self.router.device_mut().handle_timeout(due);
        }
        self.drain(&mut out);
        out
    }

    fn drain(&mut self, out: &mut Ticked) {
        while let Some(o) = self.router.poll(&mut self.shells) {
            match o {
                Output::Send(f) => out.pings.push(f),
                Output::Shell(f) => out.stops.push(f),
                Output::Link(_) | Output::Forward(_) | Output::Transfer(_) => {}
            }
        }
    }

    fn link_closed(&mut self, ms: u64) {
        let at = clock::to_core(self.at(ms));
        self.router.device_mut().handle_link_closed(at);
        self.drain(&mut Ticked::default());
    }

    fn connected(&mut self, ms: u64) {
        let at = clock::to_core(self.at(ms));
        self.router.device_mut().handle_connected(at);
        self.drain(&mut Ticked::default());
    }

    fn open(&self) -> usize {
        self.router.device().shells().len()
    }

    fn pid(&self, sid: &str) -> u32 {
        self.shells
            .info(self.router.device().shells())
            .into_iter()
            .find(|s| s.id == sid)
            .map(|s| s.pid)
            .expect("session listed")
    }
}

fn decode(f: &[u8]) -> (String, String, Option<i64>, String) {
    let f = Frame::decode(f).expect("frame decodes");
    let status = f.header.props.get_i64(proto::PROP_STATUS);
    (f.header.typ.to_owned(), f.header.sid.to_owned(), status, String::from_utf8_lossy(f.body).into_owned())
}

fn gone(pid: u32) -> bool {
    // Bounded: the reaper sends SIGKILL after KILL_GRACE.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < until {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn started(fx: &mut Fx, sid: &str, user: &str, ms: u64) {
    let r = fx.send(proto::NEW, sid, user, b"", ms);
    assert_eq!(r, vec![("new".into(), sid.into(), Some(1), "Shell started".into())]);
}

const STOP: (&str, Option<i64>, &str) = ("stop", Some(2), STOPPED_SHELL_TEXT);

fn stop_of(f: &[u8]) -> (String, (String, Option<i64>, String)) {
    let (typ, sid, status, body) = decode(f);
    (sid, (typ, status, body))
}

/// Idle expiry: input moves the deadline, the expired shell is stopped and the server told.
#[test]
fn idle_expiry_on_a_virtual_clock() {
    let mut fx =
        Fx::new(Expiry::from_reference(true, 0, 10), Duration::from_secs(3600), Duration::from_secs(60));
    started(&mut fx, "a", "u1", 0);
    started(&mut fx, "b", "u2", 0);
    let (pa, pb) = (fx.pid("a"), fx.pid("b"));
    assert!(fx.send(proto::SHELL, "b", "u2", b"", 5_000).is_empty());
    let f = fx.tick(10_000);
    assert!(f.stops.is_empty() && f.pings.is_empty());
    let f = fx.tick(10_001);
    let stops: Vec<_> = f.stops.iter().map(|f| stop_of(f)).collect();
    assert_eq!(stops, vec![("a".into(), (STOP.0.into(), STOP.1, STOP.2.into()))]);
    assert!(gone(pa), "expired shell still running");
    assert_eq!(fx.open(), 1);
    let f = fx.tick(15_001);
    assert_eq!(f.stops.len(), 1);
    assert_eq!(fx.open(), 0);
    assert!(gone(pb));
    // The slot is free again.
    started(&mut fx, "c", "u1", 16_000);
    let pc = fx.pid("c");
    let at = clock::to_core(fx.at(16_001));
    fx.router.device_mut().handle_shutdown(at);
    fx.drain(&mut Ticked::default());
    assert_eq!(fx.shells.take_stopped_all(), 1);
    assert!(gone(pc));
}

/// Pings every interval; a reconnect restarts the health-check clock; no pong for interval +
/// 5 s after that stops the shell with a `stop` to the server.
#[test]
fn health_check_and_reconnect_on_a_virtual_clock() {
    let mut fx = Fx::new(None, Duration::from_secs(60), Duration::from_secs(60));
    started(&mut fx, "a", "u1", 0);
    let pid = fx.pid("a");
    let f = fx.tick(60_000);
    assert_eq!(f.pings.len(), 1);
    let ping = Frame::decode(&f.pings[0]).unwrap();
    assert_eq!((ping.header.typ, ping.header.sid), (proto::PING, "a"));
    assert_eq!(ping.header.props.get_i64(proto::PROP_TIMEOUT), Some(65));
    assert_eq!(proto::status(&ping), Some(Status::Control));
    // The websocket drops at 61 s and is back at 100 s: no failure at 65 s.
    fx.link_closed(61_000);
    assert!(fx.tick(90_000).stops.is_empty());
    fx.connected(100_000);
    assert!(fx.tick(160_000).stops.is_empty());
    assert!(fx.send(proto::PONG, "a", "u1", b"", 160_000).is_empty());
    assert!(fx.tick(225_000).stops.is_empty());
    let f = fx.tick(225_001);
    let stops: Vec<_> = f.stops.iter().map(|f| stop_of(f)).collect();
    assert_eq!(stops, vec![("a".into(), (STOP.0.into(), STOP.1, STOP.2.into()))]);
    assert!(gone(pid));
    assert_eq!(fx.open(), 0);
}

/// Shells outlive a dropped websocket: no pings or health-check failures while it is down,
/// and when the link engine's grace ends (`reap_orphans`) they are stopped without a frame
/// (the server forgot them). The grace's timing is the engine's (core::link's tests).
#[test]
fn orphans_are_reaped_when_the_grace_ends() {
    let mut fx = Fx::new(None, Duration::from_secs(1), Duration::from_secs(2));
    started(&mut fx, "a", "u1", 0);
    let pid = fx.pid("a");
    fx.link_closed(500);
    let f = fx.tick(2_000);
    assert!(f.stops.is_empty() && f.pings.is_empty());
    assert_eq!(fx.open(), 1);
    let f = fx.tick(30_000);
    assert!(f.stops.is_empty() && f.pings.is_empty());
    assert_eq!(fx.open(), 0);
    assert!(gone(pid));
}

/// The refusals' texts, and the stop variants, through the executor.
#[test]
fn refusals_and_stops_through_the_executor() {
    let mut fx = Fx::new(None, Duration::from_secs(60), Duration::from_secs(60));
    started(&mut fx, "a", "u1", 0);
    let r = fx.send(proto::NEW, "a2", "u1", b"", 1);
    assert_eq!(r, vec![("new".into(), "a2".into(), Some(2), "user has too many open sessions".into())]);
    let r = fx.send(proto::NEW, "a", "u2", b"", 1);
    assert_eq!(
        r,
        vec![("new".into(), "a".into(), Some(2), "failed to start shell: shell is already running".into())]
    );
    let r = fx.send(proto::SHELL, "zz", "u1", b"x", 1);
    assert_eq!(r, vec![("shell".into(), "zz".into(), Some(2), "session not found".into())]);
    let r = fx.send(proto::STOP, "zz", "u1", b"", 1);
    assert_eq!(
        r,
        vec![(
            "stop".into(),
            "zz".into(),
            Some(2),
            "routeMessage: StopShellMessage: session not found for id zz".into()
        )]
    );
    let pid = fx.pid("a");
    let r = fx.send(proto::STOP, "", "u1", b"", 2);
    assert_eq!(r, vec![("stop".into(), "".into(), Some(1), "".into())]);
    assert!(gone(pid));
    assert!(fx.router.kill_shell("a", &mut fx.shells).is_none());
    started(&mut fx, "b", "u1", 3);
    let f = fx.router.kill_shell("b", &mut fx.shells).expect("b exists").expect("a stop for the server");
    assert_eq!(stop_of(&f), ("b".into(), (STOP.0.into(), STOP.1, STOP.2.into())));
}
