//! `mender-connect status` / `sessions kill` against the running daemon binary: real
//! dbus-daemon + mender-test-auth, the test is the server, the CLI is the binary under test.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Conn, Fixture, SOON, TempDir, eventually, number_after, process_alive};
use mender_connect::ops::status::protocol::{
    self, ErrorKind, MAX_RESPONSE, PROTOCOL_VERSION, Request, Response,
};
use mender_connect_core::control::{self, Open};
use mender_connect_core::frame::Prop;
use mender_connect_core::portforward::{self as pf, PortForwardNew};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mender-connect");

/// A daemon with its control socket in a directory of its own (created by the daemon).
async fn start(tag: &str) -> (Fixture, TempDir, PathBuf) {
    start_with(tag, "").await
}

async fn start_with(tag: &str, more: &str) -> (Fixture, TempDir, PathBuf) {
    let sock_dir = TempDir::new(&format!("{tag}-sock"));
    let sock = sock_dir.path().join("run").join("control.sock");
    let extra = format!(r#""ControlSocket":"{}","Sessions":{{"MaxPerUser":2}}{more}"#, sock.display());
    let fx = Fixture::start(tag, &extra, &[]).await;
    eventually("control socket created", || sock.exists());
    (fx, sock_dir, sock)
}

fn cli(args: &[&str], sock: &Path) -> Output {
    Command::new(BIN).args(args).arg("--socket").arg(sock).output().expect("run mender-connect")
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_json(sock: &Path) -> Value {
    let out = ok_stdout(&cli(&["status", "--json"], sock));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
}

fn session<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["sessions"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("session {id} not in {status:#}"))
}

fn session_ids(status: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        status["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    v.sort();
    v
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

async fn started(conn: &mut Conn, sid: &str, user: &str) -> u32 {
    conn.new_shell(sid, user, None).await;
    let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == sid).await;
    assert_eq!(m.status, Some(1), "new failed: {}", m.body_str());
    conn.shell_input(sid, user, b"echo PID=$$\n").await;
    let out = conn.output_until_match(sid, |o| number_after(o, "PID=").is_some()).await;
    number_after(&out, "PID=").unwrap()
}

#[test]
fn status_lists_sessions_and_kill_ends_one() {
    smol::block_on(async {
        let (fx, _sock_dir, sock) = start("status").await;
        let mut conn = fx.server.accept(SOON).await;
        let pid1 = started(&mut conn, "s1", "alice").await;
        let pid2 = started(&mut conn, "s2", "bob").await;

        let st = status_json(&sock);
        assert_eq!(st["connection"]["state"], "connected", "{st:#}");
        assert_eq!(st["connection"]["server_url"], fx.server.url().as_str());
        assert_eq!(u(&st["connection"]["reconnect_attempts"]), 0);
        assert_eq!(u(&st["connection"]["connects"]), 1);
        assert_eq!(u(&st["pid"]), u64::from(fx.agent.pid()));
        assert_eq!(session_ids(&st), ["s1", "s2"]);
        for (sid, user, pid) in [("s1", "alice", pid1), ("s2", "bob", pid2)] {
            let s = session(&st, sid);
            assert_eq!((s["kind"].as_str(), s["user"].as_str()), (Some("shell"), Some(user)));
            assert_eq!(u(&s["pid"]), u64::from(pid));
            assert!(u(&s["bytes_in"]) >= "echo PID=$$\n".len() as u64, "{s}");
            assert!(u(&s["bytes_out"]) > 0, "{s}");
        }
        assert_eq!(u(&st["limits"]["shells"]), 2);
        assert_eq!(u(&st["limits"]["max_shells"]), 16);
        assert_eq!(u(&st["limits"]["max_shells_per_user"]), 2);
        assert!(st["limits"]["file_transfer"]["tx_bytes"].is_u64(), "{st:#}");

        // The counters grow with traffic.
        let (in1, out1) = (u(&session(&st, "s1")["bytes_in"]), u(&session(&st, "s1")["bytes_out"]));
        conn.shell_input("s1", "alice", b"echo mo''re-output\n").await;
        conn.output_until("s1", "more-output\r\n").await;
        let st = status_json(&sock);
        assert!(u(&session(&st, "s1")["bytes_in"]) > in1);
        assert!(u(&session(&st, "s1")["bytes_out"]) > out1);

        let text = ok_stdout(&cli(&["status"], &sock));
        assert!(text.contains("connection: connected since "), "{text}");
        assert!(text.contains(&fx.server.url()), "{text}");
        for needle in ["s1", "s2", "alice", "bob", "shell", &pid1.to_string()] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }

        // Kill s1: the server hears a stop for it, its shell dies, s2 keeps working.
        let out = ok_stdout(&cli(&["sessions", "kill", "s1"], &sock));
        assert!(out.contains("session s1 (shell) ended"), "{out}");
        let m = conn.recv_until("stop for s1", |m| m.typ == "stop" && m.sid == "s1").await;
        assert_eq!((m.proto, m.status), (1, Some(2)), "{}", m.body_str());
        eventually("killed shell gone", || !process_alive(pid1));
        conn.shell_input("s2", "bob", b"echo sti''ll-alive\n").await;
        conn.output_until("s2", "still-alive\r\n").await;
        assert!(process_alive(pid2));
        assert_eq!(session_ids(&status_json(&sock)), ["s2"]);

        let out = cli(&["sessions", "kill", "s1"], &sock);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no session with id"), "{out:?}");

        // SIGUSR1 still dumps the status to the log, in the reference's shape.
        fx.agent.signal("USR1");
        eventually("status dump in the log", || fx.agent.log().contains("   1m: tx rx "));
        let log = fx.agent.log();
        for needle in
            [" status: ", "  shells: 1/16", "  sessions: 1", "   id:s2 status:0 started:", "  file-transfer:"]
        {
            assert!(log.contains(needle), "{needle:?} missing from the log:\n{log}");
        }
    });
}

#[test]
fn control_sessions_are_listed_and_killed_with_a_close() {
    smol::block_on(async {
        let (fx, _sock_dir, sock) = start("status-ctl").await;
        let mut conn = fx.server.accept(SOON).await;
        let mut buf = vec![0u8; 1024];
        let n = control::encode_open_frame(&mut buf, "ft1", &Open::new(&[1]).unwrap()).unwrap();
        conn.send(buf[..n].to_vec()).await;
        conn.recv_until("accept", |m| m.proto == 0xFFFF && m.sid == "ft1").await;
        // A file-transfer stat gives the session its kind.
        let mut body = vec![0u8; 256];
        let req = mender_connect_core::filetransfer::UploadRequest { path: Some("/"), ..Default::default() };
        let len = req.encode(&mut body).unwrap();
        conn.send(common::encode(2, "stat", "ft1", &[], &body[..len])).await;
        conn.recv_until("stat reply", |m| m.proto == 2 && m.sid == "ft1").await;

        let st = status_json(&sock);
        let s = session(&st, "ft1");
        assert_eq!(s["kind"], "filetransfer", "{st:#}");
        assert!(u(&s["bytes_in"]) > 0 && u(&s["bytes_out"]) > 0, "{s}");
        assert!(s["pid"].is_null());

        let out = ok_stdout(&cli(&["sessions", "kill", "ft1", "--json"], &sock));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((v["killed"].as_str(), v["kind"].as_str()), (Some("ft1"), Some("filetransfer")));
        let m = conn.recv_until("close", |m| m.proto == 0xFFFF && m.sid == "ft1").await;
        assert_eq!(m.typ, "close");
        assert!(session_ids(&status_json(&sock)).is_empty());
    });
}

/// Sends raw bytes, returns the daemon's decoded answer (`None`: it hung up without one).
fn raw_exchange(sock: &Path, bytes: &[u8]) -> Option<Response> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(bytes).unwrap();
    let payload = protocol::read_frame_blocking(&mut s, MAX_RESPONSE).ok()?;
    Some(protocol::decode_payload(&payload).unwrap())
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn error_kind(r: Option<Response>) -> ErrorKind {
    match r {
        Some(Response::Error { kind, .. }) => kind,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn garbage_requests_get_errors_and_the_daemon_keeps_serving() {
    smol::block_on(async {
        let (fx, _sock_dir, sock) = start("status-garbage").await;
        let mut conn = fx.server.accept(SOON).await;
        let pid = started(&mut conn, "s1", "alice").await;

        let mut version = postcard::to_stdvec(&PROTOCOL_VERSION).unwrap();
        version.extend_from_slice(&[0xff; 40]);
        assert_eq!(error_kind(raw_exchange(&sock, &frame(&version))), ErrorKind::Malformed);
        assert_eq!(error_kind(raw_exchange(&sock, &frame(&[]))), ErrorKind::Malformed);
        let newer =
            postcard::to_extend(&Request::Status, postcard::to_stdvec(&(PROTOCOL_VERSION + 7)).unwrap())
                .unwrap();
        assert_eq!(error_kind(raw_exchange(&sock, &frame(&newer))), ErrorKind::UnsupportedVersion);
        assert_eq!(error_kind(raw_exchange(&sock, &[0xff, 0xff, 0xff, 0xff, 1, 2])), ErrorKind::TooLarge);
        let long_id = Request::KillSession { id: "x".repeat(1000) };
        assert_eq!(
            error_kind(raw_exchange(&sock, &protocol::encode_frame(&long_id).unwrap())),
            ErrorKind::Malformed
        );
        // Half a frame, then gone.
        {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(&[0, 0, 0, 50, 1, 2]).unwrap();
        }
        // Several requests on one connection, several connections at once.
        let mut held: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&sock).unwrap()).collect();
        for s in &mut held {
            s.set_read_timeout(Some(SOON)).unwrap();
            s.write_all(&protocol::encode_frame(&Request::Status).unwrap()).unwrap();
        }
        for s in &mut held {
            for _ in 0..2 {
                let payload = protocol::read_frame_blocking(s, MAX_RESPONSE).unwrap();
                match protocol::decode_payload::<Response>(&payload).unwrap() {
                    Response::Status(st) => assert_eq!(st.sessions.len(), 1),
                    other => panic!("{other:?}"),
                }
                s.write_all(&protocol::encode_frame(&Request::Status).unwrap()).unwrap();
            }
        }
        drop(held);

        // Idle clients hold their slots; one more than the limit is told to come back later.
        let idle: Vec<UnixStream> = (0..mender_connect::ops::status::server::MAX_CLIENTS)
            .map(|_| UnixStream::connect(&sock).unwrap())
            .collect();
        let mut extra = UnixStream::connect(&sock).unwrap();
        extra.set_read_timeout(Some(SOON)).unwrap();
        let payload = protocol::read_frame_blocking(&mut extra, MAX_RESPONSE).unwrap();
        assert_eq!(error_kind(Some(protocol::decode_payload(&payload).unwrap())), ErrorKind::Busy);
        drop(idle);
        eventually("slots freed", || cli(&["status"], &sock).status.success());

        // The daemon, its socket and the websocket all still work.
        assert!(process_alive(fx.agent.pid()));
        assert_eq!(session_ids(&status_json(&sock)), ["s1"]);
        conn.shell_input("s1", "alice", b"echo af''ter\n").await;
        conn.output_until("s1", "after\r\n").await;
        assert!(process_alive(pid));
    });
}

#[test]
fn socket_is_root_only_and_others_are_refused() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    smol::block_on(async {
        let (fx, _sock_dir, sock) = start("status-perm").await;
        let _conn = fx.server.accept(SOON).await;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sock), 0o600);
        assert_eq!(mode(sock.parent().unwrap()), 0o700);

        // The binary must be reachable by `nobody`; a copy in a world-readable directory is.
        let bin_dir = TempDir::new("status-bin");
        std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = bin_dir.path().join("mender-connect");
        // Copied by `cp`, not in this process: a file this multi-threaded test process holds
        // open for writing can be inherited by another test thread's fork, and exec'ing it
        // then fails with ETXTBSY ("Text file busy", seen once under load).
        let st = Command::new("cp").arg(BIN).arg(&bin).status().expect("cp");
        assert!(st.success(), "cp {BIN}: {st:?}");
        let as_nobody = || {
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&bin)
                .args(["status", "--socket"])
                .arg(&sock)
                .output()
                .expect("setpriv (util-linux)")
        };
        let out = as_nobody();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("permission denied") && err.contains("root"), "{err}");

        // Even with the file modes opened up, the daemon itself refuses other users.
        std::fs::set_permissions(sock.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = as_nobody();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("may not use the control socket"), "{err}");
        // Root still gets its answer.
        assert_eq!(status_json(&sock)["connection"]["state"], "connected");
    });
}

#[test]
fn client_errors_say_what_is_wrong() {
    let dir = TempDir::new("status-client");
    // No daemon.
    let missing = dir.path().join("missing.sock");
    let out = cli(&["status"], &missing);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the daemon running?") && err.contains("missing.sock"), "{err}");

    // A daemon of another protocol version: a stand-in that answers with version 99.
    let sock = dir.path().join("newer.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut req).unwrap();
        let body = Response::Error { kind: ErrorKind::Malformed, message: String::new() };
        let payload = postcard::to_extend(&body, postcard::to_stdvec(&99u16).unwrap()).unwrap();
        s.write_all(&frame(&payload)).unwrap();
    });
    let out = cli(&["status"], &sock);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 99") && err.contains("newer than this command"), "{err}");

    // Not a socket at all.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = cli(&["status"], &file);
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}

/// Scripts parse stdout of `--json`: it is JSON whether or not a daemon answers.
#[test]
fn json_output_is_json_when_no_daemon_answers() {
    let dir = TempDir::new("status-json-err");
    let missing = dir.path().join("missing.sock");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    for (args, sock, kind) in [
        (&["status", "--json"][..], &missing, "not_running"),
        (&["sessions", "--json"], &missing, "not_running"),
        (&["sessions", "list", "--json"], &missing, "not_running"),
        (&["sessions", "kill", "abc", "--json"], &missing, "not_running"),
        (&["status", "--json"], &file, "not_running"),
    ] {
        let out = cli(args, sock);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {stdout:?}"));
        assert_eq!(v["error"]["kind"], kind, "{args:?}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("is the daemon running?"), "{args:?}: {v}");
        // The person at the terminal still reads the message on stderr.
        assert!(String::from_utf8_lossy(&out.stderr).contains("is the daemon running?"), "{args:?}");
    }
    // Without --json, stdout stays empty.
    assert!(cli(&["status"], &missing).stdout.is_empty());
}

async fn open_session(conn: &mut Conn, sid: &str) {
    let mut buf = vec![0u8; 1024];
    let n = control::encode_open_frame(&mut buf, sid, &Open::new(&[1]).unwrap()).unwrap();
    conn.send(buf[..n].to_vec()).await;
    let m = conn.recv_until("accept", |m| m.proto == 0xFFFF && m.sid == sid).await;
    assert_eq!(m.typ, "accept", "{}", m.body_str());
}

#[test]
fn port_forwards_transfers_and_counters_are_shown() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The forward's target: holds the connection until the agent closes it, then reports EOF.
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(SOON)).unwrap();
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(0))
    });
    smol::block_on(async {
        let limits =
            r#","Limits":{"Enabled":true,"FileTransfer":{"Counters":{"MaxBytesTxPerMinute":1000000000}}}"#;
        let (fx, _sock_dir, sock) = start_with("status-activity", limits).await;
        let mut conn = fx.server.accept(SOON).await;

        open_session(&mut conn, "p1").await;
        let mut body = vec![0u8; 256];
        let n =
            PortForwardNew { remote_host: Some("127.0.0.1"), remote_port: Some(port), protocol: Some("tcp") }
                .encode(&mut body)
                .unwrap();
        let id = [Prop::str(pf::PROP_CONNECTION_ID, "c1")];
        conn.send(common::encode(3, pf::NEW, "p1", &id, &body[..n])).await;
        let m = conn.recv_until("new reply", |m| m.proto == 3 && m.sid == "p1").await;
        assert_eq!(m.typ, pf::NEW, "{}", m.body_str());

        // A download larger than the ack window, never acknowledged: it stays in progress.
        let files = TempDir::new("status-files");
        let path = files.path().join("big");
        std::fs::write(&path, vec![7u8; 4 << 20]).unwrap();
        open_session(&mut conn, "f1").await;
        let req =
            mender_connect_core::filetransfer::UploadRequest { path: path.to_str(), ..Default::default() };
        let mut body = vec![0u8; 1024];
        let n = req.encode(&mut body).unwrap();
        conn.send(common::encode(2, "get_file", "f1", &[], &body[..n])).await;
        let m = conn.recv_until("first chunk", |m| m.proto == 2 && m.sid == "f1").await;
        assert_eq!(m.typ, "file_chunk", "{}", m.body_str());

        let mut st = status_json(&sock);
        let deadline = std::time::Instant::now() + SOON;
        while st["transfers"][0]["bytes"].as_u64().unwrap_or(0) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            st = status_json(&sock);
        }
        let t = &st["transfers"][0];
        assert_eq!(
            (t["session_id"].as_str(), t["direction"].as_str()),
            (Some("f1"), Some("download")),
            "{st:#}"
        );
        assert_eq!(t["path"].as_str(), path.to_str());
        assert!(u(&t["bytes"]) > 0 && u(&t["bytes"]) < 4 << 20, "{t}");
        let f = &st["port_forwards"][0];
        assert_eq!(
            (
                f["session_id"].as_str(),
                f["connection_id"].as_str(),
                f["protocol"].as_str(),
                f["remote_host"].as_str()
            ),
            (Some("p1"), Some("c1"), Some("tcp"), Some("127.0.0.1")),
            "{st:#}"
        );
        assert_eq!(u(&f["remote_port"]), u64::from(port));
        assert_eq!(session(&st, "p1")["kind"], "portforward");
        assert_eq!(session(&st, "f1")["kind"], "filetransfer");
        // The session's bytes_out includes the chunks its download task sent.
        assert!(u(&session(&st, "f1")["bytes_out"]) >= u(&t["bytes"]), "{st:#}");
        let ft = &st["limits"]["file_transfer"];
        assert_eq!(st["limits"]["enabled"], true);
        assert!(u(&ft["tx_bytes"]) > 0, "{ft}");
        assert_eq!(u(&ft["max_tx_per_minute"]), 1_000_000_000);
        assert!(ft["max_rx_per_minute"].is_null());

        let text = ok_stdout(&cli(&["status"], &sock));
        for needle in [
            "port forwards: 1",
            &format!("tcp 127.0.0.1:{port}"),
            "transfers: 1",
            "download",
            "limit 1000000000",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }

        // Killing the port-forward session closes the forwarded connection.
        ok_stdout(&cli(&["sessions", "kill", "p1"], &sock));
        let m = conn.recv_until("close", |m| m.proto == 0xFFFF && m.sid == "p1").await;
        assert_eq!(m.typ, "close");
        assert!(target.join().unwrap(), "the forwarded connection was not closed");
        assert!(status_json(&sock)["port_forwards"].as_array().unwrap().is_empty());
    });
}

#[test]
fn control_socket_key_defaults_and_must_be_absolute() {
    use mender_connect::config::Config;
    let base = r#""ShellCommand":"/bin/sh","User":"root""#;
    let loaded = Config::from_json_str(&format!("{{{base}}}")).unwrap();
    assert_eq!(loaded.config.control_socket, Path::new(mender_connect::config::DEFAULT_CONTROL_SOCKET));
    assert_eq!(mender_connect::config::DEFAULT_CONTROL_SOCKET, "/run/mender-connect/control.sock");
    let loaded = Config::from_json_str(&format!(r#"{{{base},"ControlSocket":"/run/x/c.sock"}}"#)).unwrap();
    assert_eq!(loaded.config.control_socket, Path::new("/run/x/c.sock"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let err = Config::from_json_str(&format!(r#"{{{base},"ControlSocket":"relative.sock"}}"#)).unwrap_err();
    assert!(err.to_string().contains("ControlSocket"), "{err}");
}

/// Issue 16, finding 8: the server picks session ids, user ids and connection ids; `status` and
/// `sessions list` print them escaped, so none can drive root's terminal (OSC 52 clipboard write,
/// clear screen, carriage-return overwrite, 8-bit CSI). JSON stays JSON, carrying the ids as sent.
#[test]
fn server_chosen_ids_are_escaped_in_human_output() {
    const SID: &str = "s\u{1b}]52;c;cHduZWQ=\u{7}\u{1b}[2J\r\u{9b}31m";
    const USER: &str = "u\u{1b}[H\u{8}\u{7f}";
    const PSID: &str = "p\u{1b}[2J";
    const CONN: &str = "c\u{1b}]0;title\u{7}\n";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(SOON)).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    });
    smol::block_on(async {
        let (fx, _sock_dir, sock) = start("status-escape").await;
        let mut conn = fx.server.accept(SOON).await;
        started(&mut conn, SID, USER).await;
        open_session(&mut conn, PSID).await;
        let mut body = vec![0u8; 256];
        let n =
            PortForwardNew { remote_host: Some("127.0.0.1"), remote_port: Some(port), protocol: Some("tcp") }
                .encode(&mut body)
                .unwrap();
        conn.send(common::encode(3, pf::NEW, PSID, &[Prop::str(pf::PROP_CONNECTION_ID, CONN)], &body[..n]))
            .await;
        let m = conn.recv_until("new reply", |m| m.proto == 3 && m.sid == PSID).await;
        assert_eq!(m.typ, pf::NEW, "{}", m.body_str());

        let st = status_json(&sock);
        assert_eq!(session(&st, SID)["user"].as_str(), Some(USER));
        assert_eq!(st["port_forwards"][0]["connection_id"].as_str(), Some(CONN), "{st:#}");
        let list_json: Value =
            serde_json::from_str(&ok_stdout(&cli(&["sessions", "list", "--json"], &sock))).unwrap();
        assert_eq!(list_json.as_array().map(Vec::len), Some(2));

        for args in [&["status"][..], &["sessions"], &["sessions", "list"]] {
            let out = cli(args, &sock);
            assert!(out.status.success(), "{args:?}: {out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let raw: Vec<char> = text.chars().filter(|&c| c != '\n' && c.is_control()).collect();
            assert!(raw.is_empty(), "{args:?} printed raw control characters {raw:?}:\n{text:?}");
            // Escaped, still recognisable.
            assert!(text.contains("s\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\r\\u009b31m"), "{args:?}:\n{text}");
            assert!(text.contains("u\\x1b[H\\x08\\x7f"), "{args:?}:\n{text}");
        }
        let text = ok_stdout(&cli(&["status"], &sock));
        assert!(text.contains("p\\x1b[2J conn c\\x1b]0;title\\x07\\n: tcp 127.0.0.1:"), "{text}");
        drop(conn);
        drop(fx);
    });
    target.join().unwrap();
}
