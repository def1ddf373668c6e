//! The device websocket: token, reconnects, keep-alive-independent routing, control protocol,
//! clean shutdown. Real dbus-daemon + mender-test-auth + the agent binary; the test is the server.

mod common;

use std::time::Duration;

use common::{Fixture, Msg, SOON, encode, eventually, process_alive};
use mender_connect_core::control::{Accept, ControlError};
use mender_connect_core::frame::Prop;

const CONTROL: u16 = 0xFFFF;

#[test]
fn connects_with_bearer_token_and_reconnects_on_token_change() {
    smol::block_on(async {
        let mut fx = Fixture::start("token", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        assert_eq!(conn.authorization, "Bearer T1");
        assert_eq!(conn.path, "/api/devices/v1/deviceconnect/connect");

        let url = fx.server.url();
        fx.auth.set("T2", &url);
        let conn2 = fx.server.accept(SOON).await;
        assert_eq!(conn2.authorization, "Bearer T2");
        // The old websocket is closed by the agent.
        assert!(conn.recv_within(SOON).await.is_none(), "old connection still delivers messages");
    });
}

#[test]
fn reconnects_after_server_close() {
    smol::block_on(async {
        let fx = Fixture::start("reconnect", "", &[]).await;
        for _ in 0..3 {
            let mut conn = fx.server.accept(SOON).await;
            assert_eq!(conn.authorization, "Bearer T1");
            conn.ws.close(None).await.unwrap();
        }
        let _ = fx.server.accept(SOON).await;
    });
}

#[test]
fn unauthorized_asks_the_auth_service_for_a_new_token() {
    smol::block_on(async {
        let mut fx = Fixture::start("unauth", "", &[]).await;
        let seen = fx.server.refuse(401, SOON).await;
        assert_eq!(seen, "Bearer T1");
        fx.auth.wait_event("FetchJwtToken", |l| l.starts_with("FetchJwtToken"));
        // It keeps trying.
        let conn = fx.server.accept(Duration::from_secs(60)).await;
        assert_eq!(conn.authorization, "Bearer T1");
    });
}

#[test]
fn control_ping_open_and_bad_frames() {
    smol::block_on(async {
        let fx = Fixture::start("control", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;

        conn.send(encode(CONTROL, "ping", "s1", &[], b"")).await;
        let m = conn.recv().await;
        assert_eq!((m.proto, m.typ.as_str(), m.sid.as_str()), (CONTROL, "pong", "s1"));

        let mut body = [0u8; 64];
        let n = mender_connect_core::control::Open::new(&[1]).unwrap().encode(&mut body).unwrap();
        conn.send(encode(CONTROL, "open", "s2", &[], &body[..n])).await;
        let m = conn.recv().await;
        assert_eq!((m.proto, m.typ.as_str(), m.sid.as_str()), (CONTROL, "accept", "s2"));
        let accept = Accept::decode(&m.body).unwrap();
        assert_eq!(accept.version, 1);
        assert!(accept.protocols().iter().any(|p| p.0 == 1), "shell not accepted: {accept:?}");

        let n = mender_connect_core::control::Open::new(&[7]).unwrap().encode(&mut body).unwrap();
        conn.send(encode(CONTROL, "open", "s3", &[Prop::str("msgid", "m3")], &body[..n])).await;
        let m = conn.recv().await;
        assert_eq!((m.typ.as_str(), m.sid.as_str()), ("error", "s3"));
        let e = ControlError::decode(&m.body).unwrap();
        assert_eq!(e.err, "handshake rejected: require version 1");
        assert!(e.close);
        assert_eq!(e.msgid, "m3");

        // Not msgpack at all: a control error, and the connection stays usable.
        conn.send(vec![0xc1, 0x00, 0x13]).await;
        let m = conn.recv().await;
        assert_eq!((m.proto, m.typ.as_str()), (CONTROL, "error"));
        assert!(!ControlError::decode(&m.body).unwrap().close);

        // A protocol nobody serves yet.
        conn.send(encode(7, "whatever", "s4", &[], b"")).await;
        let m = conn.recv().await;
        assert_eq!((m.typ.as_str(), m.sid.as_str()), ("error", "s4"));
        assert_eq!(ControlError::decode(&m.body).unwrap().err, "no handler registered for protocol: 0x0007");

        conn.send(encode(CONTROL, "ping", "s5", &[], b"")).await;
        let m = conn.recv().await;
        assert_eq!((m.typ.as_str(), m.sid.as_str()), ("pong", "s5"));

        // Unknown shell message type: status 2 with the reference text.
        conn.send(encode(1, "bogus", "s6", &[], b"")).await;
        let m: Msg = conn.recv().await;
        assert_eq!((m.proto, m.typ.as_str(), m.status), (1, "bogus", Some(2)));
        assert_eq!(m.body_str(), "unknown message protocol and type: 1/bogus");
    });
}

#[test]
fn sigterm_stops_shells_and_exits_zero() {
    smol::block_on(async {
        let mut fx = Fixture::start("sigterm", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        conn.new_shell("a", "u1", None).await;
        let m = conn.recv_until("new reply", |m| m.typ == "new").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
        // A background child of the shell must go too (the whole process group is hung up).
        conn.shell_input("a", "u1", b"sleep 1000 & echo BG=$!\n").await;
        let out = conn.output_until_match("a", |o| common::number_after(o, "BG=").is_some()).await;
        let bg = common::number_after(&out, "BG=").unwrap();
        let shells = fx.agent.children();
        assert!(!shells.is_empty());
        assert!(process_alive(bg));
        fx.agent.signal("TERM");
        assert_eq!(fx.agent.wait_exit(), Some(0), "log:\n{}", fx.agent.log());
        // Named as a person knows it, not as a Rust value (`Some(Term)`).
        let log = fx.agent.log();
        assert!(log.contains("msg=\"received SIGTERM, stopping\""), "{log}");
        for pid in shells.into_iter().chain([bg]) {
            eventually("shell processes gone", || !process_alive(pid));
        }
    });
}

/// deviceconnect v4.1.0+ pings every 30 s with payload "60" (before: 54 s) and closes a device
/// that sends nothing for 60 s; the agent answers each ping with a pong carrying the payload,
/// while idle and without a shell.
#[test]
fn server_pings_are_answered_with_pongs() {
    use async_tungstenite::tungstenite::Message;
    use futures_lite::StreamExt;
    smol::block_on(async {
        let fx = Fixture::start("ping", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        for round in 0..3 {
            conn.ws.send(Message::Ping(b"60".to_vec().into())).await.unwrap();
            let pong = common::timeout(SOON, async {
                loop {
                    match conn.ws.next().await {
                        Some(Ok(Message::Pong(p))) => return p,
                        Some(Ok(_)) => {}
                        other => panic!("link ended instead of a pong: {other:?}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|| panic!("no pong for ping {round}"));
            assert_eq!(&pong[..], b"60");
        }
    });
}
