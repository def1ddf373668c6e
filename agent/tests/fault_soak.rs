//! Fault-injection soak: the agent binary talks to the test's websocket server through a TCP
//! proxy that, at seeded random intervals of 1–10 s, drops (FIN or RST), stalls or refuses the
//! connection, while shells, file transfers and port forwards run through it. Afterwards, with
//! everything stopped, the agent must hold no more file descriptors and no more RSS than before,
//! have no child (live or zombie) and leave no process of any shell session behind; after every
//! fault it must have come back within its reconnect backoff bound.
//!
//! `SOAK_SECONDS` (default 150) sets the fault phase, `SOAK_SEED` the random schedule. Figures
//! are printed (`--nocapture`).

mod common;
mod fault_proxy;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::{
    AuthService, Bus, Conn, SOON, Server, TempDir, children_of, current_user, encode, eventually,
    process_alive,
};
use fault_proxy::Proxy;
use futures_lite::StreamExt;
use mender_connect_core::Frame;
use mender_connect_core::control::{self, Open};
use mender_connect_core::filetransfer::{self as ft, FtError, UploadRequest};
use mender_connect_core::frame::Prop;
use mender_connect_core::portforward::{self as pf, PortForwardNew};

const SHELL: u16 = 1;
const FT: u16 = 2;
const PF: u16 = 3;
const CONTROL: u16 = 0xFFFF;
/// The `user_id` of every shell (MaxPerUser 1: one shell at a time, resumed across reconnects).
const USER: &str = "soak";
/// Reconnect backoff given to the agent: `ReconnectIntervalSeconds` and
/// `ReconnectMaxIntervalSeconds` (faults every 1–10 s never let a link count as stable, so the
/// delay sits at the cap).
const RECONNECT_BASE_SECS: u64 = 1;
const BACKOFF_CAP_SECS: u64 = 4;
/// Allowance on top of the backoff cap for the dial and handshake on a loaded machine.
const DIAL_SLACK: Duration = Duration::from_secs(20);
/// RSS the agent may have grown by over the soak.
const RSS_SLACK_KIB: u64 = 512;
/// Quiet time before each RSS sample: longer than the agent's release of its code pages one
/// second after the last session ends (daemon `RELEASE_AFTER`), so that both samples see it done.
const QUIET_WAIT: Duration = Duration::from_secs(3);

/// The websocket ended (the fault proxy cut it).
#[derive(Debug)]
struct Cut;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    DropFin,
    DropRst,
    Stall,
    Outage,
}

#[derive(Clone, Debug)]
struct Fault {
    kind: Kind,
    at: Instant,
    /// When the path worked again (= `at` for drops).
    restored: Instant,
}

/// Runs the seeded fault schedule until `end`.
fn inject(proxy: &Proxy, seed: u64, end: Instant) -> Vec<Fault> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut faults = Vec::new();
    loop {
        let wait = Duration::from_millis(rng.u64(1000..=10_000));
        if Instant::now() + wait >= end {
            break;
        }
        std::thread::sleep(wait);
        let at = Instant::now();
        let kind = match rng.u32(0..100) {
            0..30 => Kind::DropFin,
            30..60 => Kind::DropRst,
            60..85 => Kind::Stall,
            _ => Kind::Outage,
        };
        match kind {
            Kind::DropFin => {
                proxy.drop_all(fault_proxy::Teardown::Fin);
            }
            Kind::DropRst => {
                proxy.drop_all(fault_proxy::Teardown::Rst);
            }
            Kind::Stall => {
                proxy.stall(true);
                std::thread::sleep(Duration::from_millis(rng.u64(1000..=8000)));
                proxy.stall(false);
            }
            Kind::Outage => {
                proxy.refuse(true);
                proxy.drop_all(fault_proxy::Teardown::Rst);
                std::thread::sleep(Duration::from_millis(rng.u64(1000..=8000)));
                proxy.refuse(false);
            }
        }
        faults.push(Fault { kind, at, restored: Instant::now() });
    }
    faults
}

/// A TCP echo server for the port forwards; counts connections still open.
struct Echo {
    port: u16,
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (Arc::clone(&open), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        o.fetch_add(1, Ordering::SeqCst);
                        let (o, s) = (Arc::clone(&o), Arc::clone(&s));
                        std::thread::spawn(move || {
                            let _ = c.set_nonblocking(false);
                            let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = [0u8; 8192];
                            loop {
                                match c.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if c.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if e.kind() == std::io::ErrorKind::WouldBlock
                                            || e.kind() == std::io::ErrorKind::TimedOut =>
                                    {
                                        if s.load(Ordering::Relaxed) {
                                            break;
                                        }
                                    }
                                    Err(_) => break,
                                }
                            }
                            o.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Echo { port, open, stop, thread: Some(thread) }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn send(conn: &mut Conn, frame: Vec<u8>) -> Result<(), Cut> {
    conn.ws.send(Message::binary(frame)).await.map_err(|_| Cut)
}

/// The next message from the agent that `want` accepts, answering health-check pings on the
/// way. The agent staying silent for [`SOON`] on a live link is a failure.
async fn recv(conn: &mut Conn, what: &str, mut want: impl FnMut(&Frame<'_>) -> bool) -> Result<Vec<u8>, Cut> {
    loop {
        let item = common::timeout(SOON, conn.ws.next()).await;
        let bytes = match item {
            None => panic!("the agent sent nothing for {SOON:?} while waiting for {what}"),
            Some(Some(Ok(Message::Binary(b)))) => b.to_vec(),
            Some(Some(Ok(Message::Close(_)) | Err(_)) | None) => return Err(Cut),
            Some(Some(Ok(_))) => continue,
        };
        let f = Frame::decode_any_size(&bytes).expect("the agent sent an undecodable frame");
        let (proto, typ, sid) = (f.header.proto.0, f.header.typ, f.header.sid.to_owned());
        if proto == SHELL && typ == "ping" {
            send(conn, encode(SHELL, "pong", &sid, &[Prop::str("user_id", USER)], b"")).await?;
            continue;
        }
        if proto == CONTROL && typ == control::PING {
            send(conn, encode(CONTROL, control::PONG, &sid, &[], b"")).await?;
            continue;
        }
        if want(&f) {
            return Ok(bytes);
        }
    }
}

fn typ_of(b: &[u8]) -> String {
    Frame::decode_any_size(b).map(|f| f.header.typ.to_owned()).unwrap_or_default()
}

/// What the driver knows across reconnects.
#[derive(Default)]
struct State {
    n: u64,
    /// The shell session last asked for (it may or may not exist after a cut).
    shell: Option<String>,
    /// Shell pids = their session ids; none of their processes may survive the end.
    shell_pids: BTreeSet<u32>,
    /// Files of transfers cut before the test removed them: each is absent or complete.
    cut_uploads: HashMap<String, Vec<u8>>,
    rng: Option<fastrand::Rng>,
    ok_ops: Vec<Instant>,
    shells_started: u64,
    shells_resumed: u64,
    uploads: u64,
    bytes_moved: u64,
    forwards: u64,
}

impl State {
    fn next(&mut self) -> u64 {
        self.n += 1;
        self.n
    }
    fn rng(&mut self) -> &mut fastrand::Rng {
        self.rng.get_or_insert_with(|| fastrand::Rng::with_seed(7))
    }
}

/// Shell output of `sid` until `done`; `Ok(None)` if the session does not exist (any more).
async fn shell_output(
    conn: &mut Conn,
    sid: &str,
    mut done: impl FnMut(&str) -> bool,
) -> Result<Option<String>, Cut> {
    let mut out = String::new();
    while !done(&out) {
        let b = recv(conn, "shell output", |f| f.header.proto.0 == SHELL && f.header.sid == sid).await?;
        let f = Frame::decode_any_size(&b).unwrap();
        let status = f.header.props.get_i64("status");
        match (f.header.typ, status) {
            ("shell", Some(2)) => {
                assert_eq!(String::from_utf8_lossy(f.body), "session not found");
                return Ok(None);
            }
            // The shell ended (never asked for here): a fault must not kill shells.
            ("stop", _) => panic!("shell {sid} ended: {}", String::from_utf8_lossy(f.body)),
            ("shell", _) => out.push_str(&String::from_utf8_lossy(f.body)),
            _ => {}
        }
    }
    Ok(Some(out))
}

async fn start_shell(conn: &mut Conn, st: &mut State) -> Result<(), Cut> {
    let sid = format!("sh{}", st.next());
    st.shell = Some(sid.clone());
    send(conn, encode(SHELL, "new", &sid, &[Prop::str("user_id", USER)], b"")).await?;
    let b = recv(conn, "new reply", |f| {
        f.header.proto.0 == SHELL && f.header.typ == "new" && f.header.sid == sid
    })
    .await?;
    let f = Frame::decode_any_size(&b).unwrap();
    let status = f.header.props.get_i64("status");
    assert_eq!(status, Some(1), "shell not started: {}", String::from_utf8_lossy(f.body));
    st.shells_started += 1;
    // A background job in the shell's session: it must go when the shell is stopped.
    let cmd = b"sleep 600 & echo PID=$$\n";
    send(conn, encode(SHELL, "shell", &sid, &[Prop::str("user_id", USER)], cmd)).await?;
    let out = shell_output(conn, &sid, |o| common::number_after(o, "PID=").is_some()).await?;
    let out = out.expect("a shell just started is gone");
    st.shell_pids.insert(common::number_after(&out, "PID=").unwrap());
    Ok(())
}

/// Uses the current shell (resuming it after a reconnect) or starts one; every 8th time the
/// shell is stopped and replaced.
async fn shell_op(conn: &mut Conn, st: &mut State, fresh_link: bool) -> Result<(), Cut> {
    let Some(sid) = st.shell.clone() else { return start_shell(conn, st).await };
    let n = st.next();
    let cmd = format!("echo M''{n}\n");
    send(conn, encode(SHELL, "shell", &sid, &[Prop::str("user_id", USER)], cmd.as_bytes())).await?;
    let marker = format!("M{n}\r\n");
    match shell_output(conn, &sid, |o| o.contains(&marker)).await? {
        None => {
            st.shell = None;
            return start_shell(conn, st).await;
        }
        Some(_) if fresh_link => st.shells_resumed += 1,
        Some(_) => {}
    }
    if n % 8 == 0 {
        send(conn, encode(SHELL, "stop", &sid, &[Prop::str("user_id", USER)], b"")).await?;
        let b = recv(conn, "stop reply", |f| {
            f.header.proto.0 == SHELL && f.header.typ == "stop" && f.header.sid == sid
        })
        .await?;
        let f = Frame::decode_any_size(&b).unwrap();
        assert_eq!(f.header.props.get_i64("status"), Some(1));
        st.shell = None;
    }
    Ok(())
}

async fn open_session(conn: &mut Conn, sid: &str) -> Result<(), Cut> {
    let mut buf = vec![0u8; 1024];
    let n = control::encode_open_frame(&mut buf, sid, &Open::new(&[1]).unwrap()).unwrap();
    send(conn, buf[..n].to_vec()).await?;
    let b = recv(conn, "accept", |f| f.header.proto.0 == CONTROL && f.header.sid == sid).await?;
    assert_eq!(typ_of(&b), control::ACCEPT);
    Ok(())
}

async fn close_session(conn: &mut Conn, sid: &str) -> Result<(), Cut> {
    send(conn, encode(CONTROL, control::CLOSE, sid, &[], b"")).await
}

fn ft_error(b: &[u8]) -> Option<String> {
    let f = Frame::decode_any_size(b).ok()?;
    (f.header.typ == ft::ERROR)
        .then(|| FtError::decode(f.body).ok().and_then(|e| e.err).unwrap_or("").to_owned())
}

async fn file_op(conn: &mut Conn, st: &mut State, dir: &std::path::Path) -> Result<(), Cut> {
    let n = st.next();
    let sid = format!("ft{n}");
    let size = st.rng().usize(1..=128 * 1024);
    let mut data = vec![0u8; size];
    st.rng().fill(&mut data);
    let path = dir.join(format!("f{n}")).to_string_lossy().into_owned();
    open_session(conn, &sid).await?;
    st.cut_uploads.insert(path.clone(), data.clone());
    let req = UploadRequest { path: Some(&path), ..Default::default() };
    let mut body = vec![0u8; 4096];
    let len = req.encode(&mut body).unwrap();
    body.truncate(len);
    let is_ft = |f: &Frame<'_>| f.header.proto.0 == FT && f.header.sid == sid;
    send(conn, encode(FT, ft::PUT_FILE, &sid, &[], &body)).await?;
    let b = recv(conn, "put ack", is_ft).await?;
    assert_eq!(typ_of(&b), ft::ACK, "{:?}", ft_error(&b));
    let mut off = 0i64;
    for (i, c) in data.chunks(4096).chain([&[][..]]).enumerate() {
        send(conn, encode(FT, ft::FILE_CHUNK, &sid, &[Prop::int64("offset", off)], c)).await?;
        // The agent acks every 10th chunk and the EOF chunk (empty).
        if (i + 1) % 10 == 0 || c.is_empty() {
            let b = recv(conn, "chunk ack", is_ft).await?;
            assert_eq!(typ_of(&b), ft::ACK, "upload {path}: {:?}", ft_error(&b));
        }
        off += c.len() as i64;
    }
    assert_eq!(std::fs::read(&path).unwrap(), data, "uploaded file differs");

    let req = UploadRequest { path: Some(&path), ..Default::default() };
    let mut body = vec![0u8; 4096];
    let len = req.encode(&mut body).unwrap();
    body.truncate(len);
    send(conn, encode(FT, ft::GET_FILE, &sid, &[], &body)).await?;
    let mut back = Vec::new();
    loop {
        let b = recv(conn, "file chunk", is_ft).await?;
        let f = Frame::decode_any_size(&b).unwrap();
        assert_eq!(f.header.typ, ft::FILE_CHUNK, "download {path}: {:?}", ft_error(&b));
        let off = f.header.props.get_int("offset").and_then(|i| i.as_go_int64()).expect("offset");
        assert_eq!(off, back.len() as i64);
        back.extend_from_slice(f.body);
        let last = f.body.is_empty();
        send(conn, encode(FT, ft::ACK, &sid, &[Prop::int64("offset", off)], &[])).await?;
        if last {
            break;
        }
    }
    assert_eq!(back, data, "downloaded file differs");
    std::fs::remove_file(&path).unwrap();
    st.cut_uploads.remove(&path);
    close_session(conn, &sid).await?;
    st.uploads += 1;
    st.bytes_moved += 2 * size as u64;
    Ok(())
}

async fn forward_op(conn: &mut Conn, st: &mut State, echo_port: u16) -> Result<(), Cut> {
    let n = st.next();
    let sid = format!("pf{n}");
    let cid = format!("c{n}");
    let id = [Prop::str(pf::PROP_CONNECTION_ID, &cid)];
    let size = st.rng().usize(1..=64 * 1024);
    let mut data = vec![0u8; size];
    st.rng().fill(&mut data);
    open_session(conn, &sid).await?;
    let mut body = vec![0u8; 256];
    let len = PortForwardNew {
        remote_host: Some("127.0.0.1"),
        remote_port: Some(echo_port),
        protocol: Some("tcp"),
    }
    .encode(&mut body)
    .unwrap();
    body.truncate(len);
    let is_pf = |f: &Frame<'_>| f.header.proto.0 == PF && f.header.sid == sid;
    send(conn, encode(PF, pf::NEW, &sid, &id, &body)).await?;
    let b = recv(conn, "pf new", is_pf).await?;
    assert_eq!(typ_of(&b), pf::NEW);
    let mut back = Vec::new();
    let mut chunks = data.chunks(4096);
    let mut awaiting_ack = false;
    loop {
        if !awaiting_ack {
            match chunks.next() {
                Some(c) => {
                    send(conn, encode(PF, pf::FORWARD, &sid, &id, c)).await?;
                    awaiting_ack = true;
                }
                None if back.len() >= data.len() => break,
                None => {}
            }
        }
        let b = recv(conn, "pf traffic", is_pf).await?;
        let f = Frame::decode_any_size(&b).unwrap();
        assert_eq!(f.header.props.get_str(pf::PROP_CONNECTION_ID), Some(cid.as_str()));
        match f.header.typ {
            pf::ACK => awaiting_ack = false,
            pf::FORWARD => {
                back.extend_from_slice(f.body);
                send(conn, encode(PF, pf::ACK, &sid, &id, &[])).await?;
            }
            other => panic!("port forward {sid}/{cid}: unexpected {other}"),
        }
    }
    assert_eq!(back, data, "forwarded bytes differ");
    send(conn, encode(PF, pf::STOP, &sid, &id, &[])).await?;
    let b = recv(conn, "pf stop", |f| is_pf(f) && f.header.typ == pf::STOP).await?;
    assert_eq!(typ_of(&b), pf::STOP);
    close_session(conn, &sid).await?;
    st.forwards += 1;
    st.bytes_moved += 2 * size as u64;
    Ok(())
}

/// One round of every workload on `conn`.
async fn round(
    conn: &mut Conn,
    st: &mut State,
    files: &std::path::Path,
    echo_port: u16,
    fresh: bool,
) -> Result<(), Cut> {
    shell_op(conn, st, fresh).await?;
    st.ok_ops.push(Instant::now());
    file_op(conn, st, files).await?;
    st.ok_ops.push(Instant::now());
    forward_op(conn, st, echo_port).await?;
    st.ok_ops.push(Instant::now());
    Ok(())
}

/// Stops every shell of [`USER`] and waits until no process of any shell session is left.
async fn stop_shells(conn: &mut Conn, st: &mut State, agent_pid: u32) -> Result<(), Cut> {
    send(conn, encode(SHELL, "stop", "", &[Prop::str("user_id", USER)], b"")).await?;
    let _ = recv(conn, "stop-all reply", |f| {
        f.header.proto.0 == SHELL && f.header.typ == "stop" && f.header.sid.is_empty()
    })
    .await?;
    st.shell = None;
    eventually("the agent has no children (live or zombie)", || children_of(agent_pid).is_empty());
    let pids = st.shell_pids.clone();
    eventually("no process of any shell session is left", || session_members(&pids).is_empty());
    Ok(())
}

/// Live processes whose session id is one of `sids`.
fn session_members(sids: &BTreeSet<u32>) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(3)?.parse::<u32>().ok())
                    .is_some_and(|sid| sids.contains(&sid))
            })
        })
        .filter(|&pid| process_alive(pid))
        .collect()
}

/// (VmRSS, RssAnon, RssFile) of `pid` in KiB. RssFile grows as code paths run for the first
/// time (a fault kind not seen before), RssAnon is what a leak grows.
fn rss(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// The agent's open descriptors, as their link targets.
fn fds(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| {
            // Socket and pipe inode numbers differ run to run; keep the kind.
            let s = p.to_string_lossy().into_owned();
            s.split_once(":[").map_or(s.clone(), |(k, _)| k.to_owned())
        })
        .collect();
    v.sort();
    v
}

fn stats(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "n=0".into();
    }
    v.sort();
    let ms = |d: Duration| d.as_millis();
    format!("n={} min={}ms median={}ms max={}ms", v.len(), ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

/// What a fault phase works with.
struct Env<'a> {
    server: &'a Server,
    proxy: &'a Arc<Proxy>,
    files: &'a std::path::Path,
    echo_port: u16,
    cap: Duration,
    /// The agent's pid.
    pid: u32,
}

/// Runs the workloads while the seeded fault schedule runs for `dur`, then once more on a clean
/// link. Returns that link, the faults and when the agent reconnected; samples RSS into `trail`.
async fn phase(
    env: &Env<'_>,
    mut conn: Conn,
    st: &mut State,
    dur: Duration,
    seed: u64,
    trail: &mut Vec<(u64, u64, u64)>,
) -> (Conn, Vec<Fault>, Vec<Instant>) {
    let start = Instant::now();
    let end = start + dur;
    let injector = {
        let proxy = Arc::clone(env.proxy);
        std::thread::spawn(move || inject(&proxy, seed, end))
    };
    let mut connects = Vec::new();
    let mut fresh = false;
    let mut next_sample = start;
    while !injector.is_finished() {
        if Instant::now() >= next_sample {
            trail.push(rss(env.pid));
            next_sample += dur / 10;
        }
        match round(&mut conn, st, env.files, env.echo_port, fresh).await {
            Ok(()) => fresh = false,
            Err(Cut) => {
                // Failure bound: the longest outage plus the backoff bound.
                conn = env.server.accept(Duration::from_secs(8) + env.cap + DIAL_SLACK).await;
                connects.push(Instant::now());
                fresh = true;
            }
        }
    }
    let faults = injector.join().unwrap();
    loop {
        match round(&mut conn, st, env.files, env.echo_port, fresh).await {
            Ok(()) => return (conn, faults, connects),
            Err(Cut) => {
                conn = env.server.accept(env.cap + DIAL_SLACK).await;
                connects.push(Instant::now());
                fresh = true;
            }
        }
    }
}

#[test]
fn faults_leak_nothing_and_the_agent_always_reconnects() {
    let soak =
        Duration::from_secs(std::env::var("SOAK_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(150));
    let seed: u64 = std::env::var("SOAK_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let cap = Duration::from_secs(BACKOFF_CAP_SECS);
    smol::block_on(async {
        let dir = TempDir::new("soak");
        let files = TempDir::new("soak-files");
        let echo = Echo::start();
        let bus = Bus::start(dir.path());
        let server = Server::bind().await;
        let proxy = Arc::new(Proxy::start(server.port).await);
        let _auth = AuthService::start(&bus, "T1", &proxy.url());
        // No idle expiry (3.0's default is 600 s): a long soak may leave a shell idle that long,
        // and this test is about faults.
        let config = format!(
            r#"{{"ShellCommand":"/bin/sh","ShellArguments":[],"User":"{}","ReconnectIntervalSeconds":{RECONNECT_BASE_SECS},
               "ReconnectMaxIntervalSeconds":{BACKOFF_CAP_SECS},"FileTransfer":{{"Disable":false}},"PortForward":{{"Disable":false}},
               "Sessions":{{"StopExpired":false}}}}"#,
            current_user()
        );
        let agent = common::Agent::start(dir.path(), &bus, &config, &[]);
        let pid = agent.pid();
        let mut st = State::default();

        let env = Env { server: &server, proxy: &proxy, files: files.path(), echo_port: echo.port, cap, pid };

        // Warm-up: a fifth of the time (at least 10 s) with faults, so that buffers, maps and
        // allocator arenas have grown to their working size; then the quiet state the end is
        // compared to.
        let mut conn = server.accept(SOON).await;
        round(&mut conn, &mut st, files.path(), echo.port, false).await.expect("cut before any fault");
        let warm = (soak / 5).max(Duration::from_secs(10)).min(soak);
        let mut rss_trail = Vec::new();
        let (mut conn, mut faults, mut connects) =
            phase(&env, conn, &mut st, warm, seed ^ 0x5a5a, &mut rss_trail).await;
        stop_shells(&mut conn, &mut st, pid).await.expect("cut after the faults ended");
        eventually("port-forward targets closed", || echo.open.load(Ordering::SeqCst) == 0);
        smol::Timer::after(QUIET_WAIT).await;
        let (fds_before, rss_before) = (fds(pid), rss(pid));

        // The measured faults.
        rss_trail.clear();
        let (mut conn, more_faults, more_connects) =
            phase(&env, conn, &mut st, soak.saturating_sub(warm), seed, &mut rss_trail).await;
        stop_shells(&mut conn, &mut st, pid).await.expect("cut after the faults ended");
        eventually("port-forward targets closed", || echo.open.load(Ordering::SeqCst) == 0);
        let deadline = Instant::now() + SOON;
        while fds(pid).len() > fds_before.len() && Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        smol::Timer::after(QUIET_WAIT).await;
        let (fds_after, rss_after) = (fds(pid), rss(pid));

        // Convergence: time from the path working again to the agent's next websocket (drops,
        // outages) or to the next completed operation (stalls, where the link may survive).
        // A fault whose recovery came only after the next fault began is not counted (the
        // next one's outage would be measured too).
        let mut by_kind: HashMap<Kind, Vec<Duration>> = HashMap::new();
        let mut superseded = 0;
        for (faults, connects) in [(&faults, &connects), (&more_faults, &more_connects)] {
            for (i, f) in faults.iter().enumerate() {
                let evidence: &[Instant] = if f.kind == Kind::Stall { &st.ok_ops } else { connects };
                let t = evidence.iter().find(|&&t| t > f.restored).copied();
                let t = t.unwrap_or_else(|| panic!("no recovery after {f:?}"));
                if faults.get(i + 1).is_some_and(|next| next.at < t) {
                    superseded += 1;
                    continue;
                }
                by_kind.entry(f.kind).or_default().push(t - f.restored);
            }
        }
        faults.extend(more_faults);
        connects.extend(more_connects);
        let (forwarded, refused) = proxy.counts();
        let kinds: BTreeSet<Kind> = faults.iter().map(|f| f.kind).collect();
        println!(
            "soak: {soak:?}, seed {seed}, {} faults injected ({superseded} overtaken by the next), {} reconnects, \
             {forwarded} proxied / {refused} refused connections",
            faults.len(),
            connects.len()
        );
        for k in &kinds {
            let down: Duration = faults.iter().filter(|f| f.kind == *k).map(|f| f.restored - f.at).sum();
            let n = faults.iter().filter(|f| f.kind == *k).count();
            println!(
                "  {k:?}: {n} faults, {down:?} path down, convergence {}",
                stats(by_kind.get(k).cloned().unwrap_or_default())
            );
        }
        println!(
            "  work: {} shells started, {} resumed after a reconnect, {} uploads+downloads, {} port forwards, {} bytes moved, {} transfers cut (files absent or complete)",
            st.shells_started,
            st.shells_resumed,
            st.uploads,
            st.forwards,
            st.bytes_moved,
            st.cut_uploads.len()
        );
        println!(
            "  fds {} -> {}; (VmRSS, RssAnon, RssFile) KiB quiet {rss_before:?} -> {rss_after:?}; busy samples {rss_trail:?}",
            fds_before.len(),
            fds_after.len()
        );

        assert!(faults.len() >= (soak.as_secs() / 12) as usize, "only {} faults", faults.len());
        for (k, v) in &by_kind {
            for d in v {
                assert!(*d <= cap + DIAL_SLACK, "{k:?}: recovery took {d:?}, bound {:?}", cap + DIAL_SLACK);
            }
        }
        let count = |v: &[String], k: &str| v.iter().filter(|x| *x == k).count();
        for k in fds_after.iter().collect::<BTreeSet<_>>() {
            assert!(
                count(&fds_after, k) <= count(&fds_before, k),
                "file descriptors leaked ({k}): before {fds_before:?}, after {fds_after:?}"
            );
        }
        assert!(
            rss_after.0 <= rss_before.0 + RSS_SLACK_KIB,
            "VmRSS grew from {} KiB to {} KiB",
            rss_before.0,
            rss_after.0
        );
        assert!(children_of(pid).is_empty(), "the agent has children left");
        assert!(!agent.log().contains("panicked"), "the agent panicked:\n{}", agent.log());
        // Cut uploads: never a partial file, and nothing else in the directory.
        for entry in std::fs::read_dir(files.path()).unwrap() {
            let p = entry.unwrap().path().to_string_lossy().into_owned();
            let expected =
                st.cut_uploads.get(&p).unwrap_or_else(|| panic!("stray file {p} (temporary file left?)"));
            assert_eq!(&std::fs::read(&p).unwrap(), expected, "{p} is a partial upload");
        }
        drop(conn);
        drop(agent);
    });
}
