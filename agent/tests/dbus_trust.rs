//! The D-Bus trust boundary, attacked as a local unprivileged user would on a real device: a
//! private dbus-daemon with Debian's system-bus policy (any user may send signals, to everyone or
//! to one connection) and the Mender client's root-only policy for its auth service; the attacker
//! is uid 65534 (`setpriv`); the agent is the real binary, the server a websocket peer on
//! 127.0.0.1.
//!
//! - A `JwtTokenStateChange` sent straight to the agent (or broadcast) with the attacker's server
//!   URL must not make the agent dial it: that would hand the attacker a root shell.
//! - When the auth service exits, its local proxy port is free for anyone to bind: the agent must
//!   drop the token and the link and dial nothing until a new owner of the name hands out a token.
//! - Before any redial the agent reads the token again, as the reference does.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{AuthService, Fixture, SOON};

/// How long the agent is given to take the bait. Its reconnect delay is at most 1 s here, so an
/// agent that dials a forged or stale URL does so several times within this window.
const BAIT_WINDOW: Duration = Duration::from_secs(6);

/// Reconnects at most 1 s apart, so a vulnerable agent shows itself quickly.
const FAST_RECONNECT: &str = r#""ReconnectIntervalSeconds":1,"ReconnectMaxIntervalSeconds":1"#;

/// A listener that records whether anybody connected to it within `within`.
fn connected_within(listener: &TcpListener, within: Duration) -> bool {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if listener.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// True once the agent ends the websocket (close frame, EOF or error) within `within`; false if
/// it is still open then.
async fn closed_within(conn: &mut common::Conn, within: Duration) -> bool {
    use async_tungstenite::tungstenite::Message;
    use futures_lite::StreamExt;
    common::timeout(within, async {
        loop {
            match conn.ws.next().await {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_some()
}

#[test]
fn forged_token_signal_from_a_local_user_is_ignored() {
    smol::block_on(async {
        let mut fx = Fixture::start_system_policy("forge", FAST_RECONNECT, &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        assert_eq!(conn.authorization, "Bearer T1");

        // The attacker's server, and its signal to every connection on the bus and to everyone.
        let evil = TcpListener::bind("127.0.0.1:0").unwrap();
        let evil_url = format!("http://127.0.0.1:{}", evil.local_addr().unwrap().port());
        let script = mender_test_auth::forge_token_signal_script("forged", &evil_url);
        let (status, out) = mender_test_auth::run_as_nobody(&fx.bus.address, &script).unwrap();
        assert!(status.success(), "the attack itself failed: {out}");
        assert!(out.trim() != "sent 0", "the attacker reached no connection: {out}");

        assert!(
            !connected_within(&evil, BAIT_WINDOW),
            "the agent dialled the attacker's server; log:\n{}",
            fx.agent.log()
        );
        // The real link stayed up: a control ping is still answered on it.
        conn.send(common::encode(0xFFFF, "ping", "s1", &[], b"")).await;
        let pong = conn.recv_until("pong", |m| m.typ == "pong").await;
        assert_eq!(pong.sid, "s1");
        assert!(fx.agent.log().contains("ignoring JwtTokenStateChange from"), "log:\n{}", fx.agent.log());

        // The real owner is still followed.
        let url = fx.server.url();
        fx.auth.set("T2", &url);
        let conn2 = fx.server.accept(SOON).await;
        assert_eq!(conn2.authorization, "Bearer T2");
    });
}

#[test]
fn a_local_user_squatting_the_dead_proxy_port_gets_nothing() {
    smol::block_on(async {
        let mut fx = Fixture::start_system_policy("squat", FAST_RECONNECT, &[]).await;
        let port = fx.server.port;
        let mut conn = fx.server.accept(SOON).await;
        assert_eq!(conn.authorization, "Bearer T1");

        // mender-auth exits; the agent must give up the link and the token at once ...
        fx.auth.kill();
        assert!(closed_within(&mut conn, SOON).await, "the agent kept the link of a departed auth service");
        // ... and its proxy with it: the port is free.
        drop(conn);
        drop(std::mem::replace(&mut fx.server, common::Server::bind().await));

        // uid 65534 binds the port and waits for the agent.
        let squatter = format!(
            r#"exec python3 -c '
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port}))
s.listen(8)
s.settimeout({secs})
try:
    c, _ = s.accept()
    c.settimeout(2)
    print("GOT", c.recv(4096))
except socket.timeout:
    print("nothing")
'"#,
            secs = BAIT_WINDOW.as_secs()
        );
        let bus = fx.bus.address.clone();
        let attacker = std::thread::spawn(move || mender_test_auth::run_as_nobody(&bus, &squatter).unwrap());
        let (status, out) = attacker.join().unwrap();
        assert!(status.success(), "the squatter failed: {out}");
        assert_eq!(out.trim(), "nothing", "the squatter was reached; log:\n{}", fx.agent.log());
        assert!(!out.contains("Bearer"), "the device token leaked: {out}");

        // A new auth service hands out a new proxy: the agent follows it.
        let new_url = fx.server.url();
        let _auth = AuthService::start(&fx.bus, "T2", &new_url);
        let conn = fx.server.accept(SOON).await;
        assert_eq!(conn.authorization, "Bearer T2");
    });
}

#[test]
fn the_token_is_read_again_before_a_redial() {
    smol::block_on(async {
        let mut fx = Fixture::start("reread", FAST_RECONNECT, &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        fx.auth.wait_event("first GetJwtToken", |l| l == "GetJwtToken");
        conn.ws.close(None).await.unwrap();
        drop(conn);
        // The proxy may have moved or gone: the agent asks before it dials again.
        fx.auth.wait_event("GetJwtToken after the drop", |l| l == "GetJwtToken");
        let conn = fx.server.accept(SOON).await;
        assert_eq!(conn.authorization, "Bearer T1");
    });
}
