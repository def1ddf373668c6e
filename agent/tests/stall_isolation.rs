//! One session's stuck I/O must not stall the others (issue 16, findings 3 and 4): the event
//! loop runs every session on one thread, so a pty that reads nothing or a file whose read
//! blocks forever may cost only its own session. Measured as the round trip of another
//! session's control `ping` while the stuck one is busy, with the bound of 100 ms.

mod common;

use std::time::{Duration, Instant};

use common::{Conn, Fixture, SOON, encode};
use mender_connect_core::control;

/// The bound the issue sets on another session's round trip.
const ROUND_TRIP: Duration = Duration::from_millis(100);
const CONTROL: u16 = 0xFFFF;

/// Round trip of a control `ping` on `sid`; other messages that arrive meanwhile are added to
/// `seen`.
async fn ping(conn: &mut Conn, sid: &str, seen: &mut Vec<common::Msg>) -> Duration {
    let start = Instant::now();
    conn.send(encode(CONTROL, control::PING, sid, &[], b"")).await;
    conn.recv_until("pong", |m| {
        let pong = m.proto == CONTROL && m.typ == control::PONG && m.sid == sid;
        if !pong {
            seen.push(m.clone());
        }
        pong
    })
    .await;
    start.elapsed()
}

/// Pings `sid` for `span`, every 50 ms; returns the slowest round trip.
async fn slowest_ping(conn: &mut Conn, sid: &str, span: Duration, seen: &mut Vec<common::Msg>) -> Duration {
    let end = Instant::now() + span;
    let mut worst = Duration::ZERO;
    while Instant::now() < end {
        worst = worst.max(ping(conn, sid, seen).await);
        smol::Timer::after(Duration::from_millis(50)).await;
    }
    worst
}

/// Finding 4: a shell whose program reads nothing (`stty raw -echo; sleep 3600`) gets 40
/// messages of 8000 bytes. The router used to wait up to 4 s per message for the session's
/// queue; now it never waits, and that session's surplus input is refused on that session.
#[test]
fn a_pty_that_reads_nothing_stalls_no_other_session() {
    smol::block_on(async {
        let fx = Fixture::start("stall-pty", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        conn.new_shell("s1", "u1", None).await;
        let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == "s1").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
        conn.shell_input("s1", "u1", b"stty raw -echo; echo RE''ADY; sleep 3600\n").await;
        conn.output_until("s1", "READY").await;
        let mut seen = Vec::new();
        // The control session exists before the flood.
        ping(&mut conn, "c1", &mut seen).await;

        let block = vec![b'x'; 8000];
        for _ in 0..40 {
            conn.shell_input("s1", "u1", &block).await;
        }
        let worst = slowest_ping(&mut conn, "c1", Duration::from_secs(3), &mut seen).await;
        assert!(worst < ROUND_TRIP, "another session's ping took {worst:?} while a pty was stuck");

        // The stuck session was told, on its own sid.
        let refusal = seen.iter().find(|m| m.proto == 1 && m.sid == "s1" && m.status == Some(2));
        let refusal = refusal.unwrap_or_else(|| panic!("no refusal on the stuck session; got {seen:?}"));
        assert_eq!(refusal.body_str(), "shell input dropped: the terminal does not take input");
        // And the daemon still serves new shells.
        conn.new_shell("s2", "u2", None).await;
        let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == "s2").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
    });
}
