//! Unit tests of port forwarding with real TCP/UDP sockets on 127.0.0.1: the router with
//! core's device deciding and `Forwards` executing, the connection tasks' reports pumped back
//! as the daemon does, the device's timer run when due.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use futures_lite::FutureExt;

use mender_connect_core::portforward::{self as pf, PfError, PortForwardNew};
use mender_connect_core::{Frame, FrameOut, MAX_FRAME_LEN, Prop, Proto};

use super::Settings;
use crate::os::clock;
use crate::proto::router::{Output, Router};
use crate::proto::shell::{Action, Shells};

const SID: &str = "pf-session";
const WAIT: Duration = Duration::from_secs(20);

struct H {
    r: Router,
    shells: Shells,
    /// `forward` frames of the connections' tasks.
    rx: async_channel::Receiver<Vec<u8>>,
    events: async_channel::Receiver<crate::proto::router::Report>,
    /// Frames of the device, in order.
    queued: VecDeque<Vec<u8>>,
}

fn handler(settings: Settings) -> H {
    let (tx, rx) = async_channel::bounded(16);
    let (etx, events) = async_channel::unbounded();
    let mut r = Router::new(false);
    r.enable_port_forward(&settings, tx, etx);
    H { r, shells: crate::proto::router::tests::shells(), rx, events, queued: VecDeque::new() }
}

fn frame(typ: &str, id: &str, body: &[u8]) -> Vec<u8> {
    frame_in(SID, typ, id, body)
}

fn frame_in(sid: &str, typ: &str, id: &str, body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let props = [Prop::str(pf::PROP_CONNECTION_ID, id)];
    let props: &[Prop<'_>] = if id.is_empty() { &[] } else { &props };
    let n = FrameOut { proto: Proto::PORT_FORWARD, typ, sid, props, body, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

fn new_body(host: &str, port: u16, proto: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = PortForwardNew { remote_host: Some(host), remote_port: Some(port), protocol: Some(proto) }
        .encode(&mut b)
        .unwrap();
    b.truncate(n);
    b
}

/// A decoded outbound frame.
#[derive(Debug)]
struct Out {
    typ: String,
    id: String,
    body: Vec<u8>,
}

fn decode(bytes: &[u8]) -> Out {
    let f = Frame::decode_any_size(bytes).unwrap();
    assert_eq!(f.header.proto, Proto::PORT_FORWARD);
    Out {
        typ: f.header.typ.to_owned(),
        id: f.header.props.get_str(pf::PROP_CONNECTION_ID).unwrap_or("").to_owned(),
        body: f.body.to_vec(),
    }
}

fn err_text(o: &Out) -> String {
    assert_eq!(o.typ, pf::ERROR, "{o:?}");
    PfError::decode(&o.body).unwrap().err.unwrap_or_default().to_owned()
}

enum Next {
    Frame(Vec<u8>),
    Event(crate::proto::router::Report),
    Timer,
    TimedOut,
}

impl H {
    /// What the device asked for after an input, as the daemon's `execute` does.
    fn drain(&mut self) {
        while let Some(o) = self.r.poll(&mut self.shells) {
            if let Output::Forward(f) = o {
                self.queued.push_back(f);
            }
        }
    }
    /// Routes one message; returns the replies to it.
    fn serve(&mut self, bytes: &[u8]) -> Vec<Out> {
        let replies = self.r.route(bytes, &mut self.shells, std::time::Instant::now());
        self.drain();
        replies.iter().map(|Action::Reply(b)| decode(b)).collect()
    }
    /// The next frame for the user side (the device's or a task's), feeding the tasks' reports
    /// and the device's timer meanwhile.
    fn recv(&mut self) -> Out {
        let until = std::time::Instant::now() + WAIT;
        loop {
            if let Some(f) = self.queued.pop_front() {
                return decode(&f);
            }
            let timer = self.r.device().poll_timeout().map(clock::to_std).unwrap_or(until).min(until);
            let next = smol::block_on(
                async { self.rx.recv().await.map_or(Next::TimedOut, Next::Frame) }
                    .or(async { self.events.recv().await.map_or(Next::TimedOut, Next::Event) })
                    .or(async {
                        smol::Timer::at(timer).await;
                        if timer >= until { Next::TimedOut } else { Next::Timer }
                    }),
            );
            match next {
                Next::Frame(f) => return decode(&f),
                Next::Event(e) => self.r.report(e, std::time::Instant::now()),
                Next::Timer => self.r.device_mut().handle_timeout(clock::now()),
                Next::TimedOut => panic!("no frame from the device or a connection task in time"),
            }
            self.drain();
        }
    }
    /// Feeds the reports that are there (bounded wait) without expecting a frame.
    fn settle(&mut self) {
        for _ in 0..20 {
            while let Ok(e) = self.events.try_recv() {
                self.r.report(e, std::time::Instant::now());
                self.drain();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    /// Connections the device holds.
    fn open_connections(&self) -> usize {
        let n = self.r.device().forwards().len();
        assert_eq!(n, self.r.forwards_len(), "the device and the executor disagree");
        n
    }
    fn open(&mut self, id: &str, port: u16, proto: &str) {
        assert!(self.serve(&frame(pf::NEW, id, &new_body("127.0.0.1", port, proto))).is_empty());
        let o = self.recv();
        assert_eq!((o.typ.as_str(), o.id.as_str()), (pf::NEW, id), "{o:?}");
    }
    /// Sends `data` as one `forward`; returns the frames up to its ack plus the data that came back.
    fn forward(&mut self, id: &str, data: &[u8]) {
        assert!(self.serve(&frame(pf::FORWARD, id, data)).is_empty());
    }
    /// Collects forwarded data for `id` (acking each) until `n` bytes arrived; acks of our own
    /// forwards are counted in `acks`.
    fn collect(&mut self, id: &str, n: usize, acks: &mut usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            let o = self.recv();
            assert_eq!(o.id, id, "{o:?}");
            match o.typ.as_str() {
                pf::ACK => *acks += 1,
                pf::FORWARD => {
                    assert!(o.body.len() <= super::TCP_READ_LEN);
                    got.extend_from_slice(&o.body);
                    assert!(self.serve(&frame(pf::ACK, id, &[])).is_empty());
                }
                other => panic!("unexpected {other}: {o:?}"),
            }
        }
        got
    }
}

fn tcp_echo() -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        // Serves connections until one ends; returns how many were served.
        let mut served = 0;
        let mut handles = Vec::new();
        while served < 2 {
            let Ok((mut s, _)) = l.accept() else { break };
            served += 1;
            handles.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
        served
    });
    (port, t)
}

#[test]
fn tcp_echo_round_trip_on_two_connections() {
    let (port, echo) = tcp_echo();
    let mut h = handler(Settings::default());
    h.open("c1", port, "tcp");
    h.open("c2", port, "tcp");
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let mut acks = 0;
    let mut got = Vec::new();
    for chunk in big.chunks(4096) {
        h.forward("c1", chunk);
        // One forward in flight from the user side too, as mender-cli does.
        let before = acks;
        while acks == before {
            let o = h.recv();
            match o.typ.as_str() {
                pf::ACK => acks += 1,
                pf::FORWARD => {
                    got.extend_from_slice(&o.body);
                    assert!(h.serve(&frame(pf::ACK, "c1", &[])).is_empty());
                }
                other => panic!("unexpected {other}"),
            }
        }
    }
    let rest = big.len() - got.len();
    got.extend(h.collect("c1", rest, &mut acks));
    assert_eq!(got, big);
    h.forward("c2", b"second connection");
    let mut acks2 = 0;
    assert_eq!(h.collect("c2", 17, &mut acks2), b"second connection");
    // Stop from the user is answered with stop; the socket closes (the echo thread ends).
    let r = h.serve(&frame(pf::STOP, "c1", &[]));
    assert_eq!((r[0].typ.as_str(), r[0].id.as_str()), (pf::STOP, "c1"));
    let r = h.serve(&frame(pf::FORWARD, "c1", b"late"));
    assert_eq!(err_text(&r[0]), "unknown connection");
    // Session end closes the rest without messages.
    assert!(h.r.kill(SID).is_some());
    h.drain();
    assert!(h.queued.is_empty());
    assert_eq!(h.open_connections(), 0);
    assert_eq!(echo.join().unwrap(), 2);
}

#[test]
fn target_closing_sends_stop() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"bye").unwrap();
    });
    let mut h = handler(Settings::default());
    h.open("c", port, "tcp");
    let mut acks = 0;
    assert_eq!(h.collect("c", 3, &mut acks), b"bye");
    t.join().unwrap();
    let o = h.recv();
    assert_eq!((o.typ.as_str(), o.id.as_str()), (pf::STOP, "c"));
}

#[test]
fn udp_datagrams_round_trip() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(WAIT)).unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            echo.send_to(&reply, from).unwrap();
        }
    });
    let mut h = handler(Settings::default());
    h.open("u", port, "udp");
    for i in 0..3u8 {
        let msg = vec![i; 600];
        h.forward("u", &msg);
        let mut acks = 0;
        let got = h.collect("u", 605, &mut acks);
        assert_eq!(&got[..5], b"echo:");
        assert_eq!(&got[5..], &msg[..]);
        if acks == 0 {
            assert_eq!(h.recv().typ, pf::ACK);
        }
    }
    t.join().unwrap();
}

#[test]
fn reference_errors() {
    let mut h = handler(Settings::default());
    let r = h.serve(&frame(pf::NEW, "", &new_body("127.0.0.1", 1, "tcp")));
    assert_eq!(
        err_text(&r[0]),
        "invalid port-forward message: missing connection_id, remote_port or protocol"
    );
    let r = h.serve(&frame(pf::NEW, "x", &new_body("127.0.0.1", 0, "tcp")));
    assert_eq!(
        err_text(&r[0]),
        "invalid port-forward message: missing connection_id, remote_port or protocol"
    );
    let r = h.serve(&frame(pf::NEW, "x", &new_body("127.0.0.1", 5, "sctp")));
    assert_eq!(err_text(&r[0]), "unknown protocol: sctp");
    let r = h.serve(&frame(pf::ACK, "nope", &[]));
    assert_eq!(err_text(&r[0]), "unknown connection");
    let r = h.serve(&frame(pf::STOP, "nope", &[]));
    assert_eq!(err_text(&r[0]), "unknown connection");
    let r = h.serve(&frame("bogus", "x", &[]));
    assert_eq!(err_text(&r[0]), "unknown message type");
    // A refused connection: a port that was just free.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(h.serve(&frame(pf::NEW, "r", &new_body("127.0.0.1", port, "tcp"))).is_empty());
    let o = h.recv();
    assert_eq!(err_text(&o), format!("dial tcp 127.0.0.1:{port}: connect: connection refused"));
    assert_eq!(PfError::decode(&o.body).unwrap().msgtype, Some(pf::NEW));
}

#[test]
fn idle_connections_are_closed() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        // EOF when the agent closes the idle connection.
        s.read(&mut b).unwrap()
    });
    let mut h = handler(Settings { idle_timeout: Duration::from_millis(300), ..Settings::default() });
    h.open("i", port, "tcp");
    let o = h.recv();
    assert_eq!((o.typ.as_str(), o.id.as_str()), (pf::STOP, "i"));
    assert_eq!(t.join().unwrap(), 0);
}

/// A listener whose accept queue is full: connecting to it hangs (the kernel drops the SYN), as
/// a dial to an unresponsive host does. Keeps the filler connection open.
fn hanging_target() -> (u16, rustix::fd::OwnedFd, std::net::TcpStream) {
    use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    listen(&fd, 0).unwrap();
    let port = std::net::SocketAddr::try_from(rustix::net::getsockname(&fd).unwrap()).unwrap().port();
    let filler = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A second connect with a short timeout confirms the queue is full.
    let probe =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300));
    assert!(probe.is_err(), "the accept queue is not full; the test cannot make a dial hang");
    (port, fd, filler)
}

/// Issue 16, finding 6: connections per session are bounded; the refusal is an `error` for
/// `new` that names the key, and the session keeps working.
#[test]
fn connections_per_session_are_bounded() {
    let (port, _l, _filler) = hanging_target();
    let mut h = handler(Settings { max_connections_per_session: 3, ..Settings::default() });
    for id in ["a", "b", "c"] {
        assert!(h.serve(&frame(pf::NEW, id, &new_body("127.0.0.1", port, "tcp"))).is_empty());
    }
    let r = h.serve(&frame(pf::NEW, "d", &new_body("127.0.0.1", port, "tcp")));
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(err_text(&r[0]).contains("PortForward.MaxConnectionsPerSession"), "{r:?}");
    assert_eq!(PfError::decode(&r[0].body).unwrap().msgtype, Some(pf::NEW));
    // Reusing an id replaces, it does not count twice; a stopped one frees its place.
    assert!(h.serve(&frame(pf::NEW, "c", &new_body("127.0.0.1", port, "tcp"))).is_empty());
    assert_eq!(h.serve(&frame(pf::STOP, "a", &[]))[0].typ, pf::STOP);
    assert!(h.serve(&frame(pf::NEW, "d", &new_body("127.0.0.1", port, "tcp"))).is_empty());
    assert_eq!(h.open_connections(), 3);
}

/// Issue 16, finding 6: connections of all sessions together are bounded, and given back
/// when a session ends.
#[test]
fn connections_of_all_sessions_are_bounded() {
    let (port, _l, _filler) = hanging_target();
    let mut h = handler(Settings { max_connections: 4, ..Settings::default() });
    let mut refused = 0;
    for sid in ["s0", "s1", "s2"] {
        for id in ["x", "y"] {
            let r = h.serve(&frame_in(sid, pf::NEW, id, &new_body("127.0.0.1", port, "tcp")));
            if let Some(o) = r.first() {
                assert!(err_text(o).contains("PortForward.MaxConnections"), "session {sid}: {r:?}");
                refused += 1;
            }
        }
    }
    h.drain();
    assert_eq!((refused, h.open_connections()), (2, 4));
    assert!(h.r.kill("s0").is_some());
    h.drain();
    assert_eq!(h.open_connections(), 2);
    assert!(h.serve(&frame_in("s2", pf::NEW, "z", &new_body("127.0.0.1", port, "tcp"))).is_empty());
}

/// Issue 16, finding 6: `forward` messages queued while the dial hangs are bounded per
/// connection; one past the bound closes that connection with a clear error.
#[test]
fn forwards_queued_during_a_hanging_dial_are_bounded() {
    let (port, _l, _filler) = hanging_target();
    let mut h = handler(Settings::default());
    assert!(h.serve(&frame(pf::NEW, "q", &new_body("127.0.0.1", port, "tcp"))).is_empty());
    let data = vec![b'x'; 8000];
    let mut queued = 0;
    let refusal = loop {
        let r = h.serve(&frame(pf::FORWARD, "q", &data));
        if !r.is_empty() {
            break r;
        }
        queued += 1;
        assert!(queued <= 63, "63 forwards queued behind a hanging dial");
    };
    assert_eq!(queued, usize::from(mender_connect_core::forwards::INBOUND_QUEUE));
    assert_eq!(err_text(&refusal[0]), "too many unacknowledged forward messages");
    assert_eq!((refusal[1].typ.as_str(), refusal[1].id.as_str()), (pf::STOP, "q"));
    h.settle();
    assert_eq!(h.open_connections(), 0);
}

/// A dial that takes longer than `PortForward.ConnectTimeoutSeconds` is abandoned by the
/// device's timer; the user side gets Go's dial error for it, and the connection is gone.
#[test]
fn hanging_dial_times_out_with_the_dial_error() {
    let (port, _l, _filler) = hanging_target();
    let mut h = handler(Settings { connect_timeout: Duration::from_millis(300), ..Settings::default() });
    assert!(h.serve(&frame(pf::NEW, "t", &new_body("127.0.0.1", port, "tcp"))).is_empty());
    assert_eq!(h.open_connections(), 1);
    let o = h.recv();
    assert_eq!(err_text(&o), format!("dial tcp 127.0.0.1:{port}: i/o timeout"));
    assert_eq!(PfError::decode(&o.body).unwrap().msgtype, Some(pf::NEW));
    assert_eq!(h.open_connections(), 0);
    let r = h.serve(&frame(pf::FORWARD, "t", b"late"));
    assert_eq!(err_text(&r[0]), "unknown connection");
}
