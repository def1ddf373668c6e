//! One session's stuck I/O must not stall the others (issue 16, findings 3 and 4): the event
//! loop runs every session on one thread, so a pty that reads nothing or a file whose read
//! blocks forever may cost only its own session. Measured as the round trip of another
//! session's control `ping` while the stuck one is busy, with the bound of 100 ms.

mod common;

use std::time::{Duration, Instant};

use common::{Conn, Fixture, SOON, TempDir, encode};
use mender_connect_core::control::{self, Open};
use mender_connect_core::filetransfer::{self as ft, FtError, StatFile};
use mender_connect_core::frame::Prop;

/// The bound the issue sets on another session's round trip.
const ROUND_TRIP: Duration = Duration::from_millis(100);
const CONTROL: u16 = 0xFFFF;
const FT: u16 = 2;

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

        // The stuck session was told, on its own sid, once per spell of refused input, not once
        // per refused message (about 20 of the 40 are refused). On a loaded machine the writer
        // task may get to run between two messages and move one more chunk into the pty before
        // it fills, which ends a spell and starts another: so a few, never one per message.
        let refusals: Vec<_> =
            seen.iter().filter(|m| m.proto == 1 && m.sid == "s1" && m.status == Some(2)).collect();
        assert!((1..=3).contains(&refusals.len()), "refusals on the stuck session: {refusals:?}");
        assert_eq!(refusals[0].body_str(), "shell input dropped: the terminal does not take input");
        // And the daemon still serves new shells.
        conn.new_shell("s2", "u2", None).await;
        let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == "s2").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
    });
}

async fn open_ft_session(conn: &mut Conn, sid: &str) {
    let mut buf = vec![0u8; 1024];
    let n = control::encode_open_frame(&mut buf, sid, &Open::new(&[1]).unwrap()).unwrap();
    conn.send(buf[..n].to_vec()).await;
    let m = conn.recv_until("accept", |m| m.proto == CONTROL && m.sid == sid).await;
    assert_eq!(m.typ, "accept", "{}", m.body_str());
}

fn get_file(sid: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let n = StatFile { path: Some(path) }.encode(&mut b).unwrap();
    encode(FT, ft::GET_FILE, sid, &[], &b[..n])
}

/// Acks every file chunk of `sid` in `seen` (as the server does), so a download that has data
/// keeps reading until its read blocks; `received` counts the bytes so far (a chunk's offset).
/// Returns the error texts seen on `sid`.
async fn ack_chunks(
    conn: &mut Conn,
    sid: &str,
    seen: &mut Vec<common::Msg>,
    received: &mut i64,
) -> Vec<String> {
    let mut errors = Vec::new();
    for m in seen.drain(..) {
        if m.proto != FT || m.sid != sid {
            continue;
        }
        if m.typ == ft::ERROR {
            errors.push(FtError::decode(&m.body).ok().and_then(|e| e.err).unwrap_or_default().to_owned());
        } else if m.typ == ft::FILE_CHUNK && !m.body.is_empty() {
            let offset = *received;
            *received += m.body.len() as i64;
            conn.send(encode(FT, ft::ACK, sid, &[Prop::int64("offset", offset)], b"")).await;
        }
    }
    errors
}

/// Finding 3: `get_file` of `/proc/kmsg` (the default configuration allows it) used to block
/// the only executor thread in `read(2)` once the kernel log was drained: every session
/// stopped and SIGTERM was ignored. A FIFO without a writer must not block either. Another
/// session's pings stay answered within 100 ms throughout, and SIGTERM ends the daemon within 5 s.
#[test]
fn a_read_that_never_returns_stalls_no_other_session() {
    smol::block_on(async {
        let files = TempDir::new("stall-read-files");
        let fifo = files.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut fx = Fixture::start("stall-read", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        let mut seen = Vec::new();
        ping(&mut conn, "c1", &mut seen).await;

        open_ft_session(&mut conn, "k").await;
        conn.send(get_file("k", "/proc/kmsg")).await;
        let end = Instant::now() + Duration::from_secs(4);
        let mut received = 0;
        let mut worst = Duration::ZERO;
        while Instant::now() < end {
            worst = worst.max(ping(&mut conn, "c1", &mut seen).await);
            ack_chunks(&mut conn, "k", &mut seen, &mut received).await;
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert!(worst < ROUND_TRIP, "another session's ping took {worst:?} during a download of /proc/kmsg");

        open_ft_session(&mut conn, "f").await;
        conn.send(get_file("f", &fifo.to_string_lossy())).await;
        let worst = slowest_ping(&mut conn, "c1", Duration::from_secs(1), &mut seen).await;
        assert!(worst < ROUND_TRIP, "another session's ping took {worst:?} during a download of a FIFO");
        let errors = ack_chunks(&mut conn, "f", &mut seen, &mut 0).await;
        assert_eq!(errors, ["access denied: only regular files are allowed"]);

        let asked = Instant::now();
        fx.agent.signal("TERM");
        let code = loop {
            if let Some(st) = fx.agent.proc.0.try_wait().unwrap() {
                break st.code();
            }
            assert!(asked.elapsed() < Duration::from_secs(5), "SIGTERM did not end the daemon within 5 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(code, Some(0), "{}", fx.agent.log());
    });
}
