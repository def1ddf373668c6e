//! Port forwarding through the agent binary: a TCP echo round trip over the websocket, and the
//! forwarded socket closed when the websocket drops.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use async_tungstenite::tungstenite::Message;
use common::{Conn, Fixture, SOON, encode};
use futures_lite::StreamExt;
use mender_connect_core::Frame;
use mender_connect_core::control::{self, Accept, Open};
use mender_connect_core::frame::Prop;
use mender_connect_core::portforward::{self as pf, PortForwardNew};

const PF: u16 = 3;

async fn open_session(conn: &mut Conn, sid: &str) -> Vec<u16> {
    let mut buf = vec![0u8; 1024];
    let n = control::encode_open_frame(&mut buf, sid, &Open::new(&[1]).unwrap()).unwrap();
    conn.send(buf[..n].to_vec()).await;
    let m = conn.recv_until("accept", |m| m.proto == 0xFFFF && m.sid == sid).await;
    assert_eq!(m.typ, "accept", "{}", m.body_str());
    Accept::decode(&m.body).unwrap().protocols().iter().map(|p| p.0).collect()
}

/// Next port-forward message: (typ, connection_id, body).
async fn next_pf(conn: &mut Conn) -> (String, String, Vec<u8>) {
    let got = common::timeout(SOON, async {
        loop {
            match conn.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    let f = Frame::decode_any_size(&b).unwrap();
                    if f.header.proto.0 == PF {
                        let id = f.header.props.get_str(pf::PROP_CONNECTION_ID).unwrap_or("").to_owned();
                        return Some((f.header.typ.to_owned(), id, f.body.to_vec()));
                    }
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .flatten();
    got.expect("no port-forward message from the agent in time")
}

fn new_body(port: u16) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    let n = PortForwardNew { remote_host: Some("127.0.0.1"), remote_port: Some(port), protocol: Some("tcp") }
        .encode(&mut b)
        .unwrap();
    b.truncate(n);
    b
}

#[test]
fn tcp_round_trip_and_teardown_on_disconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(SOON)).unwrap();
        let mut buf = [0u8; 8192];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n;
                    s.write_all(&buf[..n]).unwrap();
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    smol::block_on(async {
        let fx = Fixture::start("pf-daemon", r#""PortForward":{"Disable":false}"#, &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        assert!(open_session(&mut conn, "p1").await.contains(&PF));
        let id = [Prop::str(pf::PROP_CONNECTION_ID, "c1")];
        conn.send(encode(PF, pf::NEW, "p1", &id, &new_body(port))).await;
        assert_eq!(next_pf(&mut conn).await.0, pf::NEW);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
        let mut back = Vec::new();
        for chunk in data.chunks(4096) {
            conn.send(encode(PF, pf::FORWARD, "p1", &id, chunk)).await;
            // Wait for our ack, acking the echoed data on the way.
            loop {
                let (typ, cid, body) = next_pf(&mut conn).await;
                assert_eq!(cid, "c1");
                match typ.as_str() {
                    pf::ACK => break,
                    pf::FORWARD => {
                        back.extend_from_slice(&body);
                        conn.send(encode(PF, pf::ACK, "p1", &id, &[])).await;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
        }
        while back.len() < data.len() {
            let (typ, _, body) = next_pf(&mut conn).await;
            assert_eq!(typ, pf::FORWARD);
            back.extend_from_slice(&body);
            conn.send(encode(PF, pf::ACK, "p1", &id, &[])).await;
        }
        assert_eq!(back, data);
        // The websocket drops: the forwarded socket is closed (the echo server sees EOF).
        drop(conn);
        let total = echo.join().unwrap().expect("echo server saw no EOF");
        assert_eq!(total, data.len());
        drop(fx);
    });
}

/// A quick measurement, not a test: `cargo test -p mender-connect --test portforward_daemon -- --ignored --nocapture`.
#[test]
#[ignore = "measurement (100 MiB through a forwarded TCP connection)"]
fn throughput_100_mib() {
    const SIZE: usize = 100 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A sink that counts and answers one byte at the end.
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 65536];
        let mut total = 0;
        while total < SIZE {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        let _ = s.write_all(b"!");
        total
    });
    smol::block_on(async {
        let fx = Fixture::start("pf-throughput", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        open_session(&mut conn, "p").await;
        let id = [Prop::str(pf::PROP_CONNECTION_ID, "c")];
        conn.send(encode(PF, pf::NEW, "p", &id, &new_body(port))).await;
        assert_eq!(next_pf(&mut conn).await.0, pf::NEW);
        let block = vec![7u8; 4096];
        let start = std::time::Instant::now();
        for _ in 0..SIZE / 4096 {
            conn.send(encode(PF, pf::FORWARD, "p", &id, &block)).await;
            assert_eq!(next_pf(&mut conn).await.0, pf::ACK);
        }
        let (typ, _, body) = next_pf(&mut conn).await;
        assert_eq!((typ.as_str(), body.as_slice()), (pf::FORWARD, &b"!"[..]));
        let d = start.elapsed();
        println!(
            "port forward 100 MiB user→target (one 4 KiB forward in flight): {d:?} ({:.1} MiB/s)",
            100.0 / d.as_secs_f64()
        );
        drop(fx);
    });
    assert_eq!(sink.join().unwrap(), SIZE);
}

/// The other direction, a quick measurement too: the target sends 100 MiB, the user side acks
/// each `forward` (one in flight).
#[test]
#[ignore = "measurement (100 MiB back through a forwarded TCP connection)"]
fn throughput_100_mib_target_to_user() {
    const SIZE: usize = 100 << 20;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let source = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let block = vec![7u8; 65536];
        for _ in 0..SIZE / block.len() {
            s.write_all(&block).unwrap();
        }
    });
    smol::block_on(async {
        let fx = Fixture::start("pf-throughput-back", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        open_session(&mut conn, "p").await;
        let id = [Prop::str(pf::PROP_CONNECTION_ID, "c")];
        conn.send(encode(PF, pf::NEW, "p", &id, &new_body(port))).await;
        assert_eq!(next_pf(&mut conn).await.0, pf::NEW);
        let start = std::time::Instant::now();
        let mut total = 0;
        while total < SIZE {
            let (typ, _, body) = next_pf(&mut conn).await;
            assert_eq!(typ, pf::FORWARD);
            total += body.len();
            conn.send(encode(PF, pf::ACK, "p", &id, &[])).await;
        }
        let d = start.elapsed();
        println!(
            "port forward 100 MiB target→user (one forward in flight): {d:?} ({:.1} MiB/s)",
            100.0 / d.as_secs_f64()
        );
        drop(fx);
    });
    source.join().unwrap();
}
