//! Floods a hostile server can send (issue 16, finding 6), against our agent only: the driver
//! *is* the server here (a websocket on 127.0.0.1 that `mender-test-auth` hands out over a private
//! bus), because the real server forces session and user ids to UUIDs and cannot send these.
//!
//! Each flood is followed by a control `ping` on a session opened before it, which must be
//! answered; the table gives the agent's RSS before, the peak during (`VmHWM`, reset before) and
//! RSS after, the open descriptors and the client processes seen. Not a test: nothing asserts a
//! time.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mender_connect_core::frame::Prop;
use mender_connect_core::portforward::{self as pf, PortForwardNew};
use mender_connect_core::{Frame, FrameOut, MAX_FRAME_LEN, Proto};
use mender_connect_interop::TestEnv;
use mender_connect_interop::bus::PrivateBus;
use mender_connect_interop::process::ManagedChild;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use crate::BenchError;
use crate::procfs::Proc;

/// Bound for one flood's replies.
const STEP: Duration = Duration::from_secs(120);

/// One flood's figures.
#[derive(Debug, Clone, Default)]
pub struct FloodResult {
    pub name: String,
    pub rss_before_kib: u64,
    pub peak_kib: u64,
    pub rss_after_kib: u64,
    pub fds_before: usize,
    pub fds_peak: usize,
    pub fds_after: usize,
    pub max_children: usize,
    pub replies: usize,
    pub errors: usize,
    /// Round trip of the control ping after the flood.
    pub ping_ms: Option<f64>,
}

/// What the reader thread saw.
#[derive(Default)]
struct Seen {
    replies: AtomicUsize,
    errors: AtomicUsize,
    pongs: Mutex<Vec<(String, Instant)>>,
}

fn encode(proto: Proto, typ: &str, sid: &str, props: &[Prop<'_>], body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_LEN + sid.len()];
    let n =
        FrameOut { proto, typ, sid, props, body, ..FrameOut::EMPTY }.encode(&mut buf).expect("frame fits");
    buf.truncate(n);
    buf
}

struct Server {
    tx: WebSocket<TcpStream>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Accepts the agent's websocket; a reader thread counts what it sends.
    fn accept(listener: &TcpListener) -> Result<Self, BenchError> {
        let (stream, _) = listener.accept().map_err(|e| BenchError::io("accept", e))?;
        let ws = tungstenite::accept(stream).map_err(|e| BenchError::Ws(e.to_string()))?;
        let stream = ws.into_inner();
        let read_half = stream.try_clone().map_err(|e| BenchError::io("clone", e))?;
        read_half
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| BenchError::io("timeout", e))?;
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        // The agent pings only after 270 s of silence, so this reader never writes a pong that
        // could interleave with the writer's frames during the seconds a flood takes.
        std::thread::spawn(move || {
            let mut rx = WebSocket::from_raw_socket(read_half, Role::Server, None);
            while !st.load(Ordering::Relaxed) {
                match rx.read() {
                    Ok(Message::Binary(b)) => {
                        let Ok(f) = Frame::decode_any_size(&b) else { continue };
                        s.replies.fetch_add(1, Ordering::Relaxed);
                        if f.header.typ == "error" || f.header.props.get_i64("status") == Some(2) {
                            s.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        if f.header.typ == "pong" {
                            s.pongs.lock().unwrap().push((f.header.sid.to_owned(), Instant::now()));
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Server { tx: WebSocket::from_raw_socket(stream, Role::Server, None), seen, stop })
    }

    fn send(&mut self, frame: Vec<u8>) -> Result<(), BenchError> {
        self.tx.send(Message::Binary(frame.into())).map_err(|e| BenchError::Ws(e.to_string()))
    }

    /// Waits until `n` replies in total arrived (bounded).
    fn wait_replies(&self, n: usize, sample: &mut dyn FnMut()) -> Result<(), BenchError> {
        let deadline = Instant::now() + STEP;
        while self.seen.replies.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "{n} replies ({} arrived)",
                    self.seen.replies.load(Ordering::Relaxed)
                )));
            }
            sample();
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// A control ping on `sid`; the round trip in ms.
    fn ping(&mut self, sid: &str) -> Result<f64, BenchError> {
        let start = Instant::now();
        self.send(encode(Proto::CONTROL, "ping", sid, &[], &[]))?;
        while start.elapsed() < STEP {
            if let Some((_, at)) =
                self.seen.pongs.lock().unwrap().iter().find(|(s, at)| s == sid && *at >= start)
            {
                return Ok(at.duration_since(start).as_secs_f64() * 1000.0);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(BenchError::Timeout(format!("the pong for {sid}")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A listener whose accept queue is full: dials to it hang, as to an unresponsive host.
fn hanging_target() -> Result<(u16, rustix::fd::OwnedFd, TcpStream), BenchError> {
    use rustix::net::{AddressFamily, SocketType, bind, listen, socket};
    let io = |e: rustix::io::Errno| BenchError::io("hanging listener", e.into());
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).map_err(io)?;
    bind(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).map_err(io)?;
    listen(&fd, 0).map_err(io)?;
    let addr = std::net::SocketAddr::try_from(rustix::net::getsockname(&fd).map_err(io)?)
        .map_err(|_| BenchError::Check("listener address".into()))?;
    let filler = TcpStream::connect(addr).map_err(|e| BenchError::io("filler", e))?;
    Ok((addr.port(), fd, filler))
}

/// One flood: sends through the server, calling the sampler now and then.
type Flood<'a> = dyn FnMut(&mut Server, &mut dyn FnMut()) -> Result<(), BenchError> + 'a;

/// Runs every flood against `program`; `test_auth` is the `mender-test-auth` binary.
pub fn run(program: &Path, test_auth: &Path) -> Result<Vec<FloodResult>, BenchError> {
    let env = TestEnv::new("bench-flood")?;
    let bus = PrivateBus::start(&env)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("bind", e))?;
    let url =
        format!("http://127.0.0.1:{}", listener.local_addr().map_err(|e| BenchError::io("addr", e))?.port());
    let mut auth = Command::new(test_auth);
    auth.args(["--bus", bus.address(), "--token", "T1", "--server-url", &url]);
    let (_auth, ready) =
        ManagedChild::spawn_reading_first_line(&env, "test-auth", auth, Duration::from_secs(30))?;
    if ready.trim() != "ready" {
        return Err(BenchError::Check(format!("mender-test-auth printed {ready:?}")));
    }
    let dir = env.subdir("agent")?;
    let config = dir.join("mender-connect.conf");
    let doc = serde_json::json!({
        "ShellCommand": "/bin/sh",
        "User": mender_connect_interop::agent::current_user()?,
        "FileTransfer": { "Disable": false },
        "PortForward": { "Disable": false },
        "MenderClient": { "Disable": false },
        "ControlSocket": dir.join("control.sock"),
    });
    std::fs::write(&config, format!("{doc:#}\n")).map_err(|e| BenchError::io("config", e))?;
    let mut cmd = Command::new(program);
    cmd.arg("--config").arg(&config).arg("--fallback-config").arg(dir.join("none.conf")).arg("daemon");
    bus.apply(&mut cmd);
    // MenderClient runs /usr/bin/mender-update or /usr/bin/mender, whichever exists (or
    // answers at once that neither does); the child count shows how many ran at once.
    let agent = ManagedChild::spawn(&env, "agent", cmd)?;
    let pid = agent.id();
    let proc = Proc::new(pid);
    let mut server = Server::accept(&listener)?;
    std::thread::sleep(Duration::from_secs(1));
    server.ping("probe")?;
    server.wait_replies(1, &mut || {})?;

    let mut results = Vec::new();
    let mut measure = |name: &str, server: &mut Server, flood: &mut Flood<'_>| -> Result<(), BenchError> {
        std::thread::sleep(Duration::from_secs(1));
        let before = proc.memory()?;
        let fds_before = fds(pid);
        proc.reset_peak()?;
        let (mut fds_peak, mut max_children) = (fds_before, 0);
        let (r0, e0) =
            (server.seen.replies.load(Ordering::Relaxed), server.seen.errors.load(Ordering::Relaxed));
        let mut sample = || {
            fds_peak = fds_peak.max(fds(pid));
            max_children = max_children.max(proc.children().len());
        };
        flood(server, &mut sample)?;
        let ping_ms = server.ping("probe").ok();
        std::thread::sleep(Duration::from_secs(2));
        let after = proc.memory()?;
        let r = FloodResult {
            name: name.to_owned(),
            rss_before_kib: before.rss_kib,
            peak_kib: after.hwm_kib,
            rss_after_kib: after.rss_kib,
            fds_before,
            fds_peak,
            fds_after: fds(pid),
            max_children,
            replies: server.seen.replies.load(Ordering::Relaxed) - r0,
            errors: server.seen.errors.load(Ordering::Relaxed) - e0,
            ping_ms,
        };
        eprintln!("[bench] flood {r:?}");
        results.push(r);
        Ok(())
    };

    // 20,000 control sessions with 3 KB ids, then 20,000 with UUID-sized ids.
    measure("20,000 control sessions, 3 KB ids", &mut server, &mut |s, sample| {
        let base = s.seen.replies.load(Ordering::Relaxed);
        for i in 0..20_000u32 {
            let sid = format!("{i:08}{}", "x".repeat(3000));
            s.send(encode(Proto::CONTROL, "ping", &sid, &[], &[]))?;
            if i % 500 == 0 {
                sample();
            }
        }
        s.wait_replies(base + 20_000, sample)
    })?;
    measure("20,000 control sessions, 36-byte ids", &mut server, &mut |s, sample| {
        let base = s.seen.replies.load(Ordering::Relaxed);
        for i in 0..20_000u32 {
            let sid = format!("{i:036}");
            s.send(encode(Proto::CONTROL, "ping", &sid, &[], &[]))?;
            if i % 500 == 0 {
                sample();
            }
        }
        s.wait_replies(base + 20_000, sample)
    })?;
    // Room for the next floods: close what was opened.
    for i in 0..20_000u32 {
        server.send(encode(Proto::CONTROL, "close", &format!("{i:036}"), &[], &[]))?;
    }

    let (port, _listener, _filler) = hanging_target()?;
    for (name, forwards) in [
        ("150 dialling forwards x 63 queued 8 KB forwards", 63),
        ("150 dialling forwards x 2 queued 8 KB forwards", 2),
    ] {
        measure(name, &mut server, &mut |s, sample| {
            let mut body = vec![0u8; 256];
            let n = PortForwardNew {
                remote_host: Some("127.0.0.1"),
                remote_port: Some(port),
                protocol: Some("tcp"),
            }
            .encode(&mut body)
            .map_err(|e| BenchError::Check(format!("{e:?}")))?;
            let data = vec![b'x'; 8000];
            for c in 0..150u32 {
                let sid = format!("pf-{c:032}");
                let id = [Prop::str(pf::PROP_CONNECTION_ID, "c1")];
                s.send(encode(Proto::PORT_FORWARD, pf::NEW, &sid, &id, &body[..n]))?;
                for _ in 0..forwards {
                    s.send(encode(Proto::PORT_FORWARD, pf::FORWARD, &sid, &id, &data))?;
                }
                sample();
            }
            // The dials hang: sample while the connections are pending.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                sample();
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })?;
        for c in 0..150u32 {
            server.send(encode(Proto::CONTROL, "close", &format!("pf-{c:032}"), &[], &[]))?;
        }
    }

    measure("25 check-update requests", &mut server, &mut |s, sample| {
        let base = s.seen.replies.load(Ordering::Relaxed);
        for c in 0..25u32 {
            let sid = format!("mc-{c:032}");
            s.send(encode(Proto::MENDER_CLIENT, "check-update", &sid, &[Prop::str("user_id", "u")], &[]))?;
        }
        s.wait_replies(base + 25, sample)
    })?;
    drop(server);
    drop(agent);
    env.pass();
    Ok(results)
}

/// The floods as a Markdown table.
pub fn markdown(results: &[FloodResult]) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    let mut out = String::from(
        "| flood (hostile server) | RSS before MiB | peak MiB | RSS after MiB | fds before/peak/after | client processes at once | replies (errors) | ping after, ms |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {}/{}/{} | {} | {} ({}) | {} |\n",
            r.name,
            mib(r.rss_before_kib),
            mib(r.peak_kib),
            mib(r.rss_after_kib),
            r.fds_before,
            r.fds_peak,
            r.fds_after,
            r.max_children,
            r.replies,
            r.errors,
            r.ping_ms.map_or("no answer".to_owned(), |m| format!("{m:.2}")),
        ));
    }
    out
}
