//! Shared helpers for the agent's integration tests: a private dbus-daemon, the
//! `mender-test-auth` service on it, a websocket peer speaking ProtoMsg on 127.0.0.1:0, and the
//! `mender-connect` binary under test.
#![allow(dead_code)]
// each test binary uses a different subset
// The handshake callback's signature, with its large error type, is tungstenite's.
#![allow(clippy::result_large_err)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::handshake::server::{Request, Response};
use futures_lite::{FutureExt, StreamExt};
use mender_connect_core::frame::{Frame, FrameOut, Prop, Proto};
use smol::net::{TcpListener, TcpStream};

/// Generous failure bound for anything the agent should do "soon" (the machine is loaded).
pub const SOON: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let p = std::env::temp_dir().join(format!("mc-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private dbus-daemon.
pub struct Bus {
    pub address: String,
    _proc: Proc,
}

impl Bus {
    pub fn start(dir: &Path) -> Self {
        let sock = dir.join("bus");
        let mut cmd = Command::new("dbus-daemon");
        cmd.args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", sock.display()));
        Self::spawn(cmd)
    }

    /// A bus with Debian's system policy and the Mender client's policy for its auth service
    /// (`mender_test_auth::system_policy_config`): what local users may do on a real device.
    /// Its directory is made reachable for them.
    pub fn start_system_policy(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.join("system-bus.conf");
        let text = mender_test_auth::system_policy_config(&dir.join("bus")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new("dbus-daemon");
        cmd.args(["--nofork", "--print-address=1"]).arg(format!("--config-file={}", config.display()));
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt package dbus-daemon) must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        Self { address, _proc: Proc(child) }
    }
}

/// Path of a binary of another workspace package, built on demand.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    // tests run from target/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let path = dir.join(bin);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build");
    assert!(status.success(), "building {package} failed");
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// The websocket peer standing in for the server: accepts device connections.
pub struct Server {
    listener: TcpListener,
    pub port: u16,
}

/// One accepted device websocket.
pub struct Conn {
    pub authorization: String,
    pub path: String,
    pub ws: WebSocketStream<TcpStream>,
}

impl Server {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        Self { listener, port }
    }

    /// The URL the auth service hands out (like the Mender client's local proxy).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits for the agent's next websocket (failure after `within`).
    pub async fn accept(&self, within: Duration) -> Conn {
        timeout(within, async {
            loop {
                let (stream, _) = self.listener.accept().await.unwrap();
                let mut authorization = String::new();
                let mut path = String::new();
                let cb = |req: &Request, resp: Response| {
                    authorization = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    path = req.uri().path().to_owned();
                    Ok(resp)
                };
                match async_tungstenite::accept_hdr_async(stream, cb).await {
                    Ok(ws) => return Conn { authorization, path, ws },
                    Err(_) => continue,
                }
            }
        })
        .await
        .expect("the agent did not connect in time")
    }

    /// Accepts a TCP connection and answers the upgrade with HTTP `status` (e.g. 401).
    pub async fn refuse(&self, status: u16, within: Duration) -> String {
        timeout(within, async {
            let (stream, _) = self.listener.accept().await.unwrap();
            let mut authorization = String::new();
            let cb = |req: &Request, _resp: Response| {
                authorization =
                    req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut r = async_tungstenite::tungstenite::handshake::server::ErrorResponse::new(None);
                *r.status_mut() = async_tungstenite::tungstenite::http::StatusCode::from_u16(status).unwrap();
                Err(r)
            };
            let _ = async_tungstenite::accept_hdr_async(stream, cb).await;
            authorization
        })
        .await
        .expect("the agent did not connect in time")
    }
}

pub async fn timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    async { Some(f.await) }
        .or(async {
            smol::Timer::after(d).await;
            None
        })
        .await
}

/// A decoded message from the agent, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub proto: u16,
    pub typ: String,
    pub sid: String,
    pub status: Option<i64>,
    pub props: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole frame as received.
    pub raw: Vec<u8>,
}

impl Msg {
    pub fn decode(bytes: &[u8]) -> Msg {
        let f = Frame::decode_any_size(bytes).expect("agent sent an undecodable frame");
        Msg {
            proto: f.header.proto.0,
            typ: f.header.typ.to_owned(),
            sid: f.header.sid.to_owned(),
            status: f.header.props.get_i64("status"),
            props: f.header.props.iter().map(|(k, v)| (format!("{k:?}"), format!("{v:?}"))).collect(),
            body: f.body.to_vec(),
            raw: bytes.to_vec(),
        }
    }

    /// An integer property.
    pub fn prop_i64(&self, key: &str) -> Option<i64> {
        Frame::decode_any_size(&self.raw).ok()?.header.props.get_i64(key)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Encodes a frame as the server would send it.
pub fn encode(proto: u16, typ: &str, sid: &str, props: &[Prop<'_>], body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 16384];
    let n =
        FrameOut { proto: Proto(proto), typ, sid, props, body, ..FrameOut::EMPTY }.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

impl Conn {
    pub async fn send(&mut self, frame: Vec<u8>) {
        self.ws.send(Message::binary(frame)).await.expect("send to agent");
    }

    /// Shell `new` for `sid` as user `user`, optionally with a terminal size.
    pub async fn new_shell(&mut self, sid: &str, user: &str, size: Option<(u16, u16)>) {
        let mut props = vec![Prop::str("user_id", user)];
        if let Some((w, h)) = size {
            props.push(Prop::int64("terminal_width", i64::from(w)));
            props.push(Prop::int64("terminal_height", i64::from(h)));
        }
        self.send(encode(1, "new", sid, &props, b"")).await;
    }

    pub async fn shell_input(&mut self, sid: &str, user: &str, data: &[u8]) {
        self.send(encode(1, "shell", sid, &[Prop::str("user_id", user)], data)).await;
    }

    /// The next data message, or `None` if the socket closed / nothing came within `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Msg> {
        timeout(within, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Some(Msg::decode(&b)),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .flatten()
    }

    pub async fn recv(&mut self) -> Msg {
        self.recv_within(SOON).await.expect("no message from the agent in time")
    }

    /// Receives until a message matches, skipping others (e.g. health pings).
    pub async fn recv_until(&mut self, what: &str, mut pred: impl FnMut(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.recv_within(left).await.unwrap_or_else(|| panic!("timed out waiting for {what}"));
            if pred(&m) {
                return m;
            }
        }
    }

    /// Collects shell output of `sid` until `needle` appears in it; returns all output.
    pub async fn output_until(&mut self, sid: &str, needle: &str) -> String {
        self.output_until_match(sid, |o| o.contains(needle)).await
    }

    /// Collects shell output of `sid` until `done(output)`; returns all output.
    pub async fn output_until_match(&mut self, sid: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + SOON;
        let mut out = String::new();
        while !done(&out) {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.recv_within(left).await.unwrap_or_else(|| panic!("output incomplete: {out:?}"));
            if m.proto == 1 && m.typ == "shell" && m.sid == sid {
                out.push_str(&m.body_str());
            }
        }
        out
    }
}

/// The agent under test.
pub struct Agent {
    pub proc: Proc,
    pub dir: PathBuf,
}

/// Name of the user running the tests (shells run as this user).
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Agent {
    /// Starts `mender-connect daemon` with `config` (JSON) on the private bus.
    pub fn start(dir: &Path, bus: &Bus, config: &str, extra_env: &[(&str, &str)]) -> Agent {
        let conf = dir.join("mender-connect.conf");
        std::fs::write(&conf, config).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mender-connect"));
        cmd.arg("--config")
            .arg(&conf)
            .arg("--fallback-config")
            .arg(dir.join("missing.conf"))
            .arg("--debug")
            .arg("daemon")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Agent { proc: Proc(cmd.spawn().unwrap()), dir: dir.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Direct children of the agent (the shells).
    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits for the exit code (failure bound [`SOON`]).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + SOON;
        while Instant::now() < deadline {
            if let Some(st) = self.proc.0.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not exit in time; log:\n{}", self.log());
    }
}

/// Children of `pid`, from /proc/<pid>/task/*/children.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie has exited; only a live process counts.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Polls `cond` every 50 ms until it holds or [`SOON`] passes.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// `mender-test-auth` on a private bus (tests/test-auth): the D-Bus auth service stand-in.
pub struct AuthService {
    proc: Proc,
    stdin: std::process::ChildStdin,
    events: std::sync::mpsc::Receiver<String>,
}

impl AuthService {
    /// Ends the service (its bus name leaves the bus), as when `mender-auth` exits.
    pub fn kill(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
    }

    pub fn start(bus: &Bus, token: &str, server_url: &str) -> Self {
        let bin = workspace_bin("mender-test-auth", "mender-test-auth");
        let mut child = Command::new(bin)
            .args(["--bus", &bus.address, "--token", token, "--server-url", server_url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Self { proc: Proc(child), stdin, events: rx };
        s.wait_event("ready", |l| l.trim() == "ready");
        s
    }

    fn line(&mut self, l: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{l}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// New token and URL, emitted as JwtTokenStateChange.
    pub fn set(&mut self, token: &str, url: &str) {
        self.line(&format!("{token} {url}"));
    }

    /// Waits for an event line matching `pred`.
    pub fn wait_event(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + SOON;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("mender-test-auth: no {what} event"),
            }
        }
    }
}

/// A whole setup: private bus, auth service, websocket peer, agent.
pub struct Fixture {
    // Drop order: the agent first, the directory last.
    pub agent: Agent,
    pub auth: AuthService,
    pub server: Server,
    pub bus: Bus,
    pub dir: TempDir,
}

impl Fixture {
    /// `extra` is spliced into the JSON config (e.g. `"Sessions":{...}`), may be empty.
    pub async fn start(tag: &str, extra: &str, env: &[(&str, &str)]) -> Fixture {
        Self::start_with(tag, extra, env, Bus::start).await
    }

    /// As [`Fixture::start`], on a bus with Debian's system policy ([`Bus::start_system_policy`]).
    pub async fn start_system_policy(tag: &str, extra: &str, env: &[(&str, &str)]) -> Fixture {
        Self::start_with(tag, extra, env, Bus::start_system_policy).await
    }

    async fn start_with(tag: &str, extra: &str, env: &[(&str, &str)], bus: fn(&Path) -> Bus) -> Fixture {
        let dir = TempDir::new(tag);
        let bus = bus(dir.path());
        let server = Server::bind().await;
        let auth = AuthService::start(&bus, "T1", &server.url());
        let mut config =
            format!(r#"{{"ShellCommand":"/bin/sh","ShellArguments":[],"User":"{}""#, current_user());
        if !extra.is_empty() {
            config.push(',');
            config.push_str(extra);
        }
        config.push('}');
        let agent = Agent::start(dir.path(), &bus, &config, env);
        Fixture { agent, auth, server, bus, dir }
    }
}

/// The number on a line right after the last `prefix` that is followed by digits and a line end.
pub fn number_after(text: &str, prefix: &str) -> Option<u32> {
    text.match_indices(prefix)
        .filter_map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // Only a complete number: the output may arrive split inside it.
            matches!(rest[digits.len()..].chars().next(), Some('\r' | '\n'))
                .then(|| digits.parse().ok())
                .flatten()
        })
        .last()
}
