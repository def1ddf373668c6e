//! Remote-terminal sessions with real shells on real ptys, through the agent binary.

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, SOON, encode, eventually, number_after, process_alive};
use mender_connect_core::frame::Prop;

/// Starts a shell and waits for its "Shell started" reply.
async fn started(conn: &mut common::Conn, sid: &str, user: &str, size: Option<(u16, u16)>) {
    conn.new_shell(sid, user, size).await;
    let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == sid).await;
    assert_eq!((m.proto, m.status), (1, Some(1)), "new failed: {}", m.body_str());
    assert_eq!(m.body_str(), "Shell started");
}

/// The shell's pid, asked from the shell itself.
async fn shell_pid(conn: &mut common::Conn, sid: &str, user: &str) -> u32 {
    conn.shell_input(sid, user, b"echo PID=$$\n").await;
    let out = conn.output_until_match(sid, |o| number_after(o, "PID=").is_some()).await;
    number_after(&out, "PID=").unwrap()
}

#[test]
fn echo_resize_and_stop() {
    smol::block_on(async {
        let fx = Fixture::start("echo", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", Some((100, 30))).await;
        // Quotes keep the echoed command line from matching.
        conn.shell_input("s1", "u1", b"echo hel''lo\n").await;
        conn.output_until("s1", "hello\r\n").await;
        conn.shell_input("s1", "u1", b"stty size\n").await;
        conn.output_until("s1", "30 100\r\n").await;

        let resize = [
            Prop::str("user_id", "u1"),
            Prop::int64("terminal_width", 132),
            Prop::int64("terminal_height", 43),
        ];
        conn.send(encode(1, "resize", "s1", &resize, b"")).await;
        conn.shell_input("s1", "u1", b"stty size\n").await;
        conn.output_until("s1", "43 132\r\n").await;

        let pid = shell_pid(&mut conn, "s1", "u1").await;
        conn.send(encode(1, "stop", "s1", &[Prop::str("user_id", "u1")], b"")).await;
        let m = conn.recv_until("stop reply", |m| m.typ == "stop").await;
        assert_eq!((m.sid.as_str(), m.status), ("s1", Some(1)));
        eventually("stopped shell gone", || !process_alive(pid));

        // The session is gone: input is refused as the reference does.
        conn.shell_input("s1", "u1", b"true\n").await;
        let m = conn.recv_until("error reply", |m| m.typ == "shell").await;
        assert_eq!((m.status, m.body_str().as_str()), (Some(2), "session not found"));
    });
}

#[test]
fn shell_exit_is_reported_with_stop() {
    smol::block_on(async {
        let fx = Fixture::start("exit", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        conn.shell_input("s1", "u1", b"exit\n").await;
        let m = conn.recv_until("stop", |m| m.typ == "stop").await;
        assert_eq!((m.sid.as_str(), m.status), ("s1", Some(2)));
        assert!(!m.body.is_empty());
        // The user's slot is free again.
        started(&mut conn, "s2", "u1", None).await;
    });
}

#[test]
fn sessions_are_isolated_and_limited_per_user() {
    smol::block_on(async {
        let fx = Fixture::start("isolated", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "a", "alice", None).await;
        started(&mut conn, "b", "bob", None).await;

        // MaxPerUser defaults to 1.
        conn.new_shell("a2", "alice", None).await;
        let m = conn.recv_until("limit reply", |m| m.typ == "new" && m.sid == "a2").await;
        assert_eq!(m.status, Some(2));
        assert_eq!(m.body_str(), "user has too many open sessions");
        // The device's log says so too, with the limit to raise (mender-cli shows nothing).
        eventually("refusal logged", || {
            let log = fx.agent.log();
            log.lines().any(|l| {
                l.contains("level=warning")
                    && l.contains("session a2: shell refused for user")
                    && l.contains("alice")
                    && l.contains("user has too many open sessions (1 open, Sessions.MaxPerUser is 1)")
            })
        });

        conn.shell_input("a", "alice", b"X=only-in-a; echo A:$X:\n").await;
        conn.output_until("a", "A:only-in-a:").await;
        conn.shell_input("b", "bob", b"echo B:$X:\n").await;
        let out = conn.output_until("b", "B::").await;
        assert!(!out.contains("only-in-a"), "b saw a's state: {out:?}");
        let pa = shell_pid(&mut conn, "a", "alice").await;
        let pb = shell_pid(&mut conn, "b", "bob").await;
        assert_ne!(pa, pb);
    });
}

/// The reference's `stop` when its shell is stopped under it (`shell/exec.go` `pipeStdout`:
/// the pty read fails and `sendStopMessage` sends status 2 with the read error).
const STOPPED: &str = "read /dev/ptmx: file already closed";

/// An idle session is stopped, and the server hears a `stop` for it, so the user's terminal
/// closes instead of showing a dead shell.
#[test]
fn idle_sessions_expire_and_the_server_hears_a_stop() {
    smol::block_on(async {
        let fx = Fixture::start("idle", r#""Sessions":{"StopExpired":true,"ExpireAfterIdle":2}"#, &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        let pid = shell_pid(&mut conn, "s1", "u1").await;
        let m = conn.recv_until("stop for the idle session", |m| m.typ == "stop").await;
        assert_eq!((m.proto, m.sid.as_str(), m.status, m.body_str().as_str()), (1, "s1", Some(2), STOPPED));
        eventually("idle shell stopped", || !process_alive(pid));
        started(&mut conn, "s2", "u1", None).await;
    });
}

/// mender-connect 2.1.2/2.2.1+ (MEN-6888, `session/shell.go` `healthcheck`): a shell `ping`
/// with `timeout` = interval + 5 and `status` 3 every interval; no `pong` for interval + 5 s
/// stops the shell and deletes the session. Ours also sends the server a `stop`. The interval
/// is shortened from 60 s to 1 s here.
#[test]
fn failed_health_check_stops_the_shell_and_the_server_hears_a_stop() {
    smol::block_on(async {
        let fx = Fixture::start("health", "", &[("MENDER_CONNECT_HEALTHCHECK_INTERVAL_SECS", "1")]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        let pid = shell_pid(&mut conn, "s1", "u1").await;
        let started_at = Instant::now();
        let ping = conn.recv_until("health-check ping", |m| m.typ == "ping").await;
        assert_eq!((ping.proto, ping.sid.as_str(), ping.status), (1, "s1", Some(3)));
        assert_eq!(ping.prop_i64("timeout"), Some(6), "{:?}", ping.props);
        // No pong: the check fails 6 s after the last pong (the start).
        let m = conn.recv_until("stop after the failed check", |m| m.typ == "stop").await;
        assert_eq!((m.proto, m.sid.as_str(), m.status, m.body_str().as_str()), (1, "s1", Some(2), STOPPED));
        assert!(started_at.elapsed() >= Duration::from_secs(4), "stopped too early");
        eventually("unhealthy shell stopped", || !process_alive(pid));
        // The session is deleted, so the user's slot is free (2.1.0 refused new shells here).
        started(&mut conn, "s2", "u1", None).await;
    });
}

/// Answered pings keep the shell: the check counts from the last pong.
#[test]
fn answered_health_checks_keep_the_shell() {
    smol::block_on(async {
        let fx = Fixture::start("healthy", "", &[("MENDER_CONNECT_HEALTHCHECK_INTERVAL_SECS", "1")]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        let pid = shell_pid(&mut conn, "s1", "u1").await;
        let until = Instant::now() + Duration::from_secs(9);
        while Instant::now() < until {
            let Some(m) = conn.recv_within(Duration::from_millis(500)).await else { continue };
            assert_ne!(m.typ, "stop", "a healthy shell was stopped: {}", m.body_str());
            if m.typ == "ping" {
                conn.send(encode(1, "pong", "s1", &[Prop::str("user_id", "u1")], b"")).await;
            }
        }
        assert!(process_alive(pid));
        conn.shell_input("s1", "u1", b"echo al''ive\n").await;
        conn.output_until("s1", "alive\r\n").await;
    });
}

#[test]
fn sessions_of_a_dropped_websocket_are_reaped() {
    smol::block_on(async {
        let fx = Fixture::start("stale", "", &[("MENDER_CONNECT_DISCONNECT_GRACE_SECS", "2")]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        let pid = shell_pid(&mut conn, "s1", "u1").await;
        // The websocket drops without a close handshake and the server does not take the
        // agent's reconnect, so the session stays orphaned longer than the grace period: it is
        // reaped instead of locking the user out with "too many open sessions".
        drop(conn);
        eventually("orphaned shell reaped", || !process_alive(pid));
        let mut conn = fx.server.accept(Duration::from_secs(120)).await;
        started(&mut conn, "s2", "u1", None).await;
    });
}

#[test]
fn output_burst_to_a_slow_reader_keeps_memory_flat() {
    smol::block_on(async {
        let fx = Fixture::start("burst", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        // The quotes keep the pty's echo of the typed line from matching: only the command's
        // own output says READY, and by then echo is off.
        conn.shell_input("s1", "u1", b"stty -echo; echo READ''Y\n").await;
        conn.output_until("s1", "READY\r\n").await;

        const TOTAL: usize = 50 * 1000 * 1000;
        let base = fx.agent.rss_kib();
        let mut peak = base;
        // 'Z' (octal 132) never appears in the command itself.
        let cmd = format!("head -c {TOTAL} /dev/zero | tr '\\000' '\\132'; echo; echo BURST-''END\n");
        conn.shell_input("s1", "u1", cmd.as_bytes()).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        let (mut zs, mut frames, mut largest) = (0usize, 0usize, 0usize);
        let mut tail = String::new();
        while !tail.contains("BURST-END") {
            assert!(Instant::now() < deadline, "burst incomplete: {zs} bytes");
            let m = conn.recv_within(SOON).await.expect("output stalled");
            if m.typ != "shell" || m.sid != "s1" {
                continue;
            }
            frames += 1;
            largest = largest.max(m.body.len());
            zs += m.body.iter().filter(|&&b| b == b'Z').count();
            let text = m.body_str();
            tail = format!("{}{}", &tail[tail.len().saturating_sub(16)..], text.replace('Z', ""));
            if frames % 64 == 0 {
                peak = peak.max(fx.agent.rss_kib());
                // The slow reader: the agent must hold back instead of buffering.
                smol::Timer::after(Duration::from_millis(20)).await;
            }
        }
        peak = peak.max(fx.agent.rss_kib());
        assert_eq!(zs, TOTAL, "bytes lost or duplicated");
        assert!(largest <= 8192, "frame body {largest} too large");
        assert!(frames < TOTAL / 1024, "output not coalesced: {frames} frames");
        assert!(peak.saturating_sub(base) < 8 * 1024, "RSS grew from {base} KiB to {peak} KiB");
    });
}

/// A server that stops reading while a shell floods output: the agent's write deadline ends the
/// websocket, and the agent dials again instead of dying (it used to poll the finished writer
/// task a second time and abort).
#[test]
fn stalled_server_ends_the_link_and_the_agent_reconnects() {
    smol::block_on(async {
        let fx = Fixture::start("stall", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        conn.shell_input("s1", "u1", b"yes flood-line\n").await;
        // Not reading: the socket buffers fill and the agent's writes stop making progress.
        let log_says_ended = || fx.agent.log().contains("websocket ended");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !log_says_ended() {
            assert!(
                Instant::now() < deadline,
                "the write deadline never ended the link:\n{}",
                fx.agent.log()
            );
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        drop(conn);
        let mut conn = fx.server.accept(Duration::from_secs(120)).await;
        assert!(process_alive(fx.agent.pid()), "the agent died:\n{}", fx.agent.log());
        // Another user: u1's flooding shell carries on across the reconnect.
        started(&mut conn, "s2", "u2", None).await;
        conn.shell_input("s2", "u2", b"echo al''ive\n").await;
        conn.output_until("s2", "alive\r\n").await;
        assert!(!fx.agent.log().contains("panicked"), "{}", fx.agent.log());
    });
}

/// mender-connect 2.3.1 (ME-530): the shell gets the configured user's supplementary groups.
/// Needs root (useradd, and the agent switching users).
#[test]
fn shell_has_the_users_supplementary_groups() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("\n*** SKIPPED shell_has_the_users_supplementary_groups: needs root ***\n");
        return;
    }
    let (user, group) = ("mcrs-sgrp-user", "mcrs-sgrp-extra");
    let run = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status().map(|s| s.code());
    // Idempotent and bounded: another run may have created them (9: name taken; 10: passwd
    // file locked by a parallel useradd).
    let _ = run(&["groupadd", "-f", group]);
    for _ in 0..50 {
        match run(&[
            "useradd",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/bin/sh",
            "-G",
            group,
            user,
        ]) {
            Ok(Some(10)) => std::thread::sleep(Duration::from_millis(100)),
            _ => break,
        }
    }
    let gid_of = |g: &str| -> u32 {
        let out = std::process::Command::new("getent").args(["group", g]).output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        line.split(':')
            .nth(2)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no group {g}: {line:?}"))
    };
    let extra = gid_of(group);
    smol::block_on(async {
        let dir = common::TempDir::new("sgroups");
        let bus = common::Bus::start(dir.path());
        let server = common::Server::bind().await;
        let _auth = common::AuthService::start(&bus, "T1", &server.url());
        let config = format!(r#"{{"ShellCommand":"/bin/sh","ShellArguments":[],"User":"{user}"}}"#);
        let _agent = common::Agent::start(dir.path(), &bus, &config, &[]);
        let mut conn = server.accept(SOON).await;
        started(&mut conn, "s1", "u1", None).await;
        // The quotes keep the echoed command line from matching.
        conn.shell_input("s1", "u1", b"echo G''R=$(id -G | tr ' ' ,)=\n").await;
        let done = |o: &str| o.split("GR=").nth(1).is_some_and(|rest| rest.contains("=\r\n"));
        let out = conn.output_until_match("s1", done).await;
        let list = out.split("GR=").nth(1).and_then(|rest| rest.split('=').next()).unwrap_or("");
        let groups: Vec<u32> = list.split(',').filter_map(|g| g.trim().parse().ok()).collect();
        assert!(groups.contains(&extra), "supplementary group {extra} missing: {out:?}");
        assert!(!groups.contains(&0), "root's group kept: {out:?}");
    });
}

/// After the websocket comes back, a user's shell the server has not spoken for since is the
/// leftover of a terminal the server ended with the old link: the user's new terminal takes its
/// slot (`MaxPerUser` 1), and the server hears a `stop` for it. A shell that is spoken for on the
/// new link is kept, and the new terminal refused as before.
#[test]
fn a_new_terminal_after_a_reconnect_replaces_the_users_unheard_shell() {
    smol::block_on(async {
        let fx = Fixture::start("stale", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, "old", "alice", None).await;
        started(&mut conn, "bobs", "bob", None).await;
        let old_pid = shell_pid(&mut conn, "old", "alice").await;
        let bob_pid = shell_pid(&mut conn, "bobs", "bob").await;

        // The link drops and comes back; bob's terminal is still attached and types.
        conn.ws.close(None).await.unwrap();
        drop(conn);
        let mut conn = fx.server.accept(SOON).await;
        conn.shell_input("bobs", "bob", b"echo still-here\n").await;
        conn.output_until("bobs", "still-here").await;

        // Alice opens a new terminal: her unheard shell is stopped, the server hears it, and the
        // new one starts.
        conn.new_shell("new", "alice", None).await;
        let stop = conn
            .recv_until("stop for the unheard shell", |m| {
                m.typ == "stop" || (m.typ == "new" && m.sid == "new")
            })
            .await;
        assert_eq!(
            (stop.typ.as_str(), stop.sid.as_str(), stop.status),
            ("stop", "old", Some(2)),
            "{}",
            stop.body_str()
        );
        let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == "new").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
        eventually("unheard shell gone", || !process_alive(old_pid));

        // Bob's shell was heard on this link: his second terminal is refused as before.
        conn.new_shell("bob2", "bob", None).await;
        let m = conn.recv_until("limit reply", |m| m.typ == "new" && m.sid == "bob2").await;
        assert_eq!((m.status, m.body_str().as_str()), (Some(2), "user has too many open sessions"));
        assert!(process_alive(bob_pid));
    });
}
