//! The `mender-test-auth` binary on a private bus, driven like the daemon tests and the QEMU guest do.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dbus::blocking::Connection;
use dbus::channel::Channel;
use dbus::message::{MatchRule, MessageType};
use mender_test_auth::{INTERFACE, OBJECT_PATH, SERVICE_NAME, TestBus};

/// Failure bound only.
const LIMIT: Duration = Duration::from_secs(30);

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mender-test-auth"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let r = Running { child, stdin, lines };
        r.expect_line("ready");
        r
    }

    fn expect_line(&self, want: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left =
                deadline.checked_duration_since(Instant::now()).unwrap_or_else(|| panic!("no line {want:?}"));
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no line {want:?}"));
            if line == want {
                return;
            }
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(bus: &TestBus) -> Connection {
    let mut c = Channel::open_private(&bus.address).unwrap();
    c.register().unwrap();
    let conn = Connection::from(c);
    let rule = MatchRule::new_signal(INTERFACE, "JwtTokenStateChange");
    conn.add_match_no_cb(&rule.match_str()).unwrap();
    conn
}

fn get(conn: &Connection) -> (String, String) {
    conn.with_proxy(SERVICE_NAME, OBJECT_PATH, LIMIT).method_call(INTERFACE, "GetJwtToken", ()).unwrap()
}

fn next_signal(conn: &Connection) -> (String, String) {
    let deadline = Instant::now() + LIMIT;
    loop {
        while let Some(m) = conn.channel().pop_message() {
            if m.msg_type() == MessageType::Signal && m.member().is_some_and(|n| &*n == "JwtTokenStateChange")
            {
                return m.read2().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no JwtTokenStateChange");
        conn.channel().read_write(Some(Duration::from_millis(100))).unwrap();
    }
}

#[test]
fn serves_the_token_and_emits_changes_from_stdin() {
    let bus = TestBus::start().unwrap();
    let mut svc =
        Running::start(&["--bus", &bus.address, "--token", "tok1", "--server-url", "http://127.0.0.1:1"]);
    let conn = client(&bus);
    assert_eq!(get(&conn), ("tok1".into(), "http://127.0.0.1:1".into()));
    svc.expect_line("GetJwtToken");
    svc.send("tok2 http://127.0.0.1:2");
    assert_eq!(next_signal(&conn), ("tok2".into(), "http://127.0.0.1:2".into()));
    svc.expect_line("emit tok2 http://127.0.0.1:2");
    assert_eq!(get(&conn), ("tok2".into(), "http://127.0.0.1:2".into()));
    svc.send("clear");
    assert_eq!(next_signal(&conn), (String::new(), String::new()));
    svc.expect_line("emit - -");
}

#[test]
fn fetch_hands_out_the_fetch_token() {
    let bus = TestBus::start().unwrap();
    let token_file = bus.dir().join("token");
    std::fs::write(&token_file, "\n").unwrap();
    let svc = Running::start(&[
        "--bus",
        &bus.address,
        "--token-file",
        token_file.to_str().unwrap(),
        "--server-url",
        "http://127.0.0.1:9",
        "--fetch-token",
        "fresh",
    ]);
    let conn = client(&bus);
    assert_eq!(get(&conn).0, "");
    let (ok,): (bool,) = conn
        .with_proxy(SERVICE_NAME, OBJECT_PATH, LIMIT)
        .method_call(INTERFACE, "FetchJwtToken", ())
        .unwrap();
    assert!(ok);
    svc.expect_line("FetchJwtToken");
    assert_eq!(next_signal(&conn), ("fresh".into(), "http://127.0.0.1:9".into()));
}

#[test]
fn a_second_instance_cannot_take_the_name() {
    let bus = TestBus::start().unwrap();
    let _first = Running::start(&["--bus", &bus.address, "--token", "a"]);
    let out = Command::new(env!("CARGO_BIN_EXE_mender-test-auth"))
        .args(["--bus", &bus.address])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not own"), "{out:?}");
}

#[test]
fn the_bus_address_can_come_from_the_environment() {
    let bus = TestBus::start().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mender-test-auth"))
        .args(["--token", "env-token", "--server-url", "http://x"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "ready");
    assert_eq!(get(&client(&bus)).0, "env-token");
    let _ = child.kill();
    let _ = child.wait();
}
