//! Unit tests of port forwarding with real TCP/UDP sockets on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use mender_connect_core::portforward::{self as pf, PfError, PortForwardNew};
use mender_connect_core::{Frame, FrameOut, MAX_FRAME_LEN, Prop, Proto};

use super::{PortForward, Settings};
use crate::router::SessionHandler;

const SID: &str = "pf-session";
const WAIT: Duration = Duration::from_secs(20);

struct H {
    h: PortForward,
    rx: async_channel::Receiver<Vec<u8>>,
}

fn handler(settings: Settings) -> H {
    let (tx, rx) = async_channel::bounded(16);
    H { h: PortForward::new(settings, tx), rx }
}

fn frame(typ: &str, id: &str, body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let props = [Prop::str(pf::PROP_CONNECTION_ID, id)];
    let props: &[Prop<'_>] = if id.is_empty() { &[] } else { &props };
    let n = FrameOut { proto: Proto::PORT_FORWARD, typ, sid: SID, props, body, ..FrameOut::EMPTY }.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn new_body(host: &str, port: u16, proto: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = PortForwardNew { remote_host: Some(host), remote_port: Some(port), protocol: Some(proto) }.encode(&mut b).unwrap();
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
    assert_eq!(f.header.sid, SID);
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

impl H {
    fn serve(&mut self, bytes: &[u8]) -> Vec<Out> {
        let f = Frame::decode_any_size(bytes).unwrap();
        let mut out = Vec::new();
        self.h.serve(SID, &f, &mut out);
        out.iter().map(|b| decode(b)).collect()
    }
    fn recv(&self) -> Out {
        let b = smol::block_on(futures_lite::FutureExt::or(async { self.rx.recv().await.ok() }, async {
            smol::Timer::after(WAIT).await;
            None
        }))
        .expect("no frame from the connection task in time");
        decode(&b)
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
    h.h.close();
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
    assert_eq!(err_text(&r[0]), "invalid port-forward message: missing connection_id, remote_port or protocol");
    let r = h.serve(&frame(pf::NEW, "x", &new_body("127.0.0.1", 0, "tcp")));
    assert_eq!(err_text(&r[0]), "invalid port-forward message: missing connection_id, remote_port or protocol");
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
