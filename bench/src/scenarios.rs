//! The measurements, each run the same way against whichever agent the [`Device`] runs.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mender_connect_interop::TestEnv;
use mender_connect_interop::binaries::Peer;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::net;

use crate::BenchError;
use crate::device::{Device, settle};
use crate::procfs::{Proc, ms_per_tick, reaped_children_ticks};
use crate::user::Terminal;

const MIB: f64 = 1024.0 * 1024.0;

/// Bound for one interactive step or one transfer (the machine is shared and loaded).
const STEP: Duration = Duration::from_secs(300);

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Seconds of connected idleness over which wake-ups are counted.
    pub idle_secs: u64,
    /// Terminal output relayed in the burst, MiB.
    pub burst_mib: u64,
    /// Seconds of slow reading.
    pub slow_secs: u64,
    /// Keystrokes timed.
    pub keystrokes: usize,
    /// File transferred each way, MiB.
    pub file_mib: u64,
    /// Bytes through the port forward each way, MiB.
    pub forward_mib: u64,
    /// Open shells for the RSS figure.
    pub shells: usize,
}

/// A throughput figure with the agent's CPU cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    /// MiB per wall-clock second.
    pub mib_per_s: f64,
    /// Agent CPU milliseconds (user + system) per MiB moved.
    pub cpu_ms_per_mib: f64,
    /// CPU of every process on the path (transfers only), to tell which one limits.
    pub parts: Option<CpuParts>,
}

/// CPU milliseconds (user + system) per MiB moved, per process on a transfer's path.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuParts {
    /// The agent under test.
    pub agent: f64,
    /// The mock Mender Server.
    pub server: f64,
    /// The Mender client 3.4.0, whose local proxy carries the agent's websocket.
    pub client: f64,
    /// `curl` or `mender-cli port-forward`.
    pub user_tool: f64,
    /// This driver (the port-forward service and its TCP client run in it).
    pub driver: f64,
}

impl CpuParts {
    /// All processes together.
    pub fn total(&self) -> f64 {
        self.agent + self.server + self.client + self.user_tool + self.driver
    }
}

/// The process at the user's (or, for terminal output, the producing) end of a transfer.
enum Tool {
    /// Runs to completion as our child (`curl`) and is counted when reaped.
    ReapedChild,
    /// A running process (`mender-cli port-forward`).
    Process(Proc),
    /// A shell with the commands it ran and reaped (`cat`).
    Shell(Proc),
}

/// CPU tick counters of every process on a transfer's path, read before and after it.
struct Meter {
    agent: Proc,
    server: Proc,
    client: Proc,
    tool: Tool,
    driver: Proc,
    start: [u64; 5],
}

impl Meter {
    fn start(device: &Device, tool: Tool) -> Result<Self, BenchError> {
        let mut m = Meter {
            agent: device.proc(),
            server: Proc::new(device.bed.mock.pid()),
            client: Proc::new(device.bed.client.pid()),
            tool,
            driver: Proc::new(std::process::id()),
            start: [0; 5],
        };
        m.start = m.ticks()?;
        Ok(m)
    }

    fn ticks(&self) -> Result<[u64; 5], BenchError> {
        let tool = match &self.tool {
            Tool::ReapedChild => reaped_children_ticks()?,
            Tool::Process(p) => p.cpu_ticks()?,
            Tool::Shell(p) => p.cpu_ticks_with_reaped_children()?,
        };
        Ok([
            self.agent.cpu_ticks()?,
            self.server.cpu_ticks()?,
            self.client.cpu_ticks()?,
            tool,
            self.driver.cpu_ticks()?,
        ])
    }

    /// The throughput of `mib` MiB moved in `secs`, with every process's CPU since the start.
    fn finish(&self, mib: u64, secs: f64) -> Result<Throughput, BenchError> {
        self.finish_bytes(mib as f64, secs)
    }

    /// [`Meter::finish`] for a count of MiB that need not be whole.
    fn finish_bytes(&self, mib: f64, secs: f64) -> Result<Throughput, BenchError> {
        let end = self.ticks()?;
        let per_mib = |i: usize| end[i].saturating_sub(self.start[i]) as f64 * ms_per_tick() / mib;
        let parts = CpuParts {
            agent: per_mib(0),
            server: per_mib(1),
            client: per_mib(2),
            user_tool: per_mib(3),
            driver: per_mib(4),
        };
        Ok(Throughput { mib_per_s: mib / secs, cpu_ms_per_mib: parts.agent, parts: Some(parts) })
    }
}

/// Everything measured for one agent; `None` where the step failed (the error is in `errors`).
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// RSS a few seconds after connecting, KiB.
    pub rss_idle_kib: Option<u64>,
    /// The anonymous part of it (`RssAnon`), KiB.
    pub rss_idle_anon_kib: Option<u64>,
    /// Voluntary context switches per minute while connected and idle.
    pub wakeups_per_min: Option<f64>,
    /// RSS at the end of that idle window (after the keep-alives in it), KiB.
    pub rss_idle_end_kib: Option<u64>,
    /// Threads while idle.
    pub threads_idle: Option<u64>,
    /// RSS with `plan.shells` shells open, KiB.
    pub rss_shells_kib: Option<u64>,
    /// The same `cat` on a bare pty read by a blocking reader, no agent: the floor under
    /// [`Results::terminal`], measured in the same run.
    pub pty_floor: Option<Throughput>,
    /// Terminal output relay.
    pub terminal: Option<Throughput>,
    /// RSS after the burst (settled), KiB.
    pub rss_after_burst_kib: Option<u64>,
    /// Peak RSS during the burst, KiB.
    pub peak_burst_kib: Option<u64>,
    /// Keystroke echo round trip, median and 99th percentile, ms.
    pub echo_ms: Option<(f64, f64)>,
    /// Peak RSS while a slow reader holds back a fast writer, KiB.
    pub peak_slow_reader_kib: Option<u64>,
    /// File download (device → user).
    pub download: Option<Throughput>,
    /// File upload (user → device).
    pub upload: Option<Throughput>,
    /// TCP port forward, device → user.
    pub forward_down: Option<Throughput>,
    /// TCP port forward, user → device.
    pub forward_up: Option<Throughput>,
    /// Steps that failed, with why.
    pub errors: Vec<String>,
}

/// Runs every scenario in order against `device`; a failed step is recorded and the run goes on.
pub fn run_all(env: &TestEnv, device: &mut Device, plan: &Plan) -> Results {
    let mut r = Results::default();
    let p = device.proc();
    settle();
    let idle = p.memory();
    r.rss_idle_anon_kib = idle.as_ref().ok().map(|m| m.anon_kib);
    note(&mut r.errors, "idle RSS", idle.map(|m| m.rss_kib), &mut r.rss_idle_kib);
    eprintln!("[bench] idle RSS parts: {}", p.rss_parts());
    note(&mut r.errors, "threads", p.threads(), &mut r.threads_idle);
    note(&mut r.errors, "idle wake-ups", idle_wakeups(&p, plan.idle_secs), &mut r.wakeups_per_min);
    note(
        &mut r.errors,
        "idle RSS at the end of the idle window",
        p.memory().map(|m| m.rss_kib),
        &mut r.rss_idle_end_kib,
    );
    note(&mut r.errors, "open shells", open_shells(device, plan.shells), &mut r.rss_shells_kib);
    eprintln!("[bench] RSS parts with {} shells: {}", plan.shells, p.rss_parts());
    settle();
    let burst_file = env.dir().join("burst.txt");
    let made = write_text_file(&burst_file, plan.burst_mib);
    if made.is_ok() {
        note(&mut r.errors, "pty floor", crate::ptyfloor::measure(&burst_file), &mut r.pty_floor);
    }
    match made.and_then(|()| terminal_burst(device, &burst_file)) {
        Ok((t, peak, after)) => {
            r.terminal = Some(t);
            r.peak_burst_kib = Some(peak);
            r.rss_after_burst_kib = Some(after);
        }
        Err(e) => r.errors.push(format!("terminal burst: {e}")),
    }
    note(&mut r.errors, "echo latency", echo_latency(device, plan.keystrokes), &mut r.echo_ms);
    eprintln!("[bench] RSS parts after the echo test: {}", p.rss_parts());
    settle();
    match file_transfers(env, device, plan.file_mib) {
        Ok((down, up)) => {
            r.download = Some(down);
            r.upload = Some(up);
        }
        Err(e) => r.errors.push(format!("file transfer: {e}")),
    }
    eprintln!("[bench] RSS parts after the file transfers: {}", p.rss_parts());
    settle();
    match port_forward(env, device, plan.forward_mib) {
        Ok((down, up)) => {
            r.forward_down = Some(down);
            r.forward_up = Some(up);
        }
        Err(e) => r.errors.push(format!("port forward: {e}")),
    }
    eprintln!("[bench] RSS parts after the port forward: {}", p.rss_parts());
    // Last: an agent may stay busy long after a slow reader leaves (the Go agent drains what it
    // buffered), which would disturb any step after it.
    settle();
    note(
        &mut r.errors,
        "slow reader",
        slow_reader(device, &burst_file, plan.slow_secs),
        &mut r.peak_slow_reader_kib,
    );
    eprintln!("[bench] RSS parts after the slow reader: {}", p.rss_parts());
    let _ = std::fs::remove_file(&burst_file);
    if let Err(e) = device.ensure_running() {
        r.errors.push(format!("agent after the run: {e}"));
    }
    r
}

fn note<T>(errors: &mut Vec<String>, what: &str, result: Result<T, BenchError>, slot: &mut Option<T>) {
    match result {
        Ok(v) => *slot = Some(v),
        Err(e) => errors.push(format!("{what}: {e}")),
    }
}

fn idle_wakeups(p: &Proc, secs: u64) -> Result<f64, BenchError> {
    let before = p.voluntary_switches()?;
    let threads_before = p.switches_by_thread();
    std::thread::sleep(Duration::from_secs(secs));
    let after = p.voluntary_switches()?;
    for (thread, n) in p.switches_by_thread() {
        let was = threads_before.iter().find(|(t, _)| *t == thread).map_or(0, |(_, n)| *n);
        eprintln!("[bench] idle wake-ups of thread {thread}: {}", n.saturating_sub(was));
    }
    Ok(after.saturating_sub(before) as f64 * 60.0 / secs as f64)
}

fn open_shells(device: &Device, n: usize) -> Result<u64, BenchError> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut t = Terminal::open(device.server(), device.user_token(), device.id())?;
        t.wait_ready(STEP)?;
        open.push(t);
    }
    settle();
    let rss = device.proc().memory()?.rss_kib;
    for t in open {
        t.close();
    }
    Ok(rss)
}

/// A text file of `mib` MiB in 80-column lines: what a terminal shows, unchanged by the tty
/// except for `\n` becoming `\r\n`.
fn write_text_file(path: &Path, mib: u64) -> Result<(), BenchError> {
    let line: Vec<u8> = (0..79u8).map(|i| b'!' + (i % 90)).chain(std::iter::once(b'\n')).collect();
    let block: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    let mut file = std::fs::File::create(path)
        .map_err(|e| BenchError::io(&format!("creating {}", path.display()), e))?;
    for _ in 0..mib {
        file.write_all(&block).map_err(|e| BenchError::io(&format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// `cat`s the file in a shell and reads all of it: throughput, CPU of every process on the
/// path (the shell's column holds `cat`), peak and settled RSS.
fn terminal_burst(device: &Device, file: &Path) -> Result<(Throughput, u64, u64), BenchError> {
    let p = device.proc();
    let before = p.children();
    let mut t = Terminal::open(device.server(), device.user_token(), device.id())?;
    t.wait_ready(STEP)?;
    let shell = match p.children().into_iter().find(|c| !before.contains(c)) {
        Some(pid) => Proc::new(pid),
        None => return Err(BenchError::Check("the agent started no shell process".into())),
    };
    p.reset_peak()?;
    let meter = Meter::start(device, Tool::Shell(shell))?;
    let start = Instant::now();
    t.type_keys(format!("cat {}; echo BURST-$((40+2))-END\r", file.display()).as_bytes())?;
    let bytes = t.read_until(b"BURST-42-END", STEP)?;
    let secs = start.elapsed().as_secs_f64();
    let mib = bytes as f64 / MIB;
    let throughput = meter.finish_bytes(mib, secs)?;
    let peak = p.memory()?.hwm_kib;
    settle();
    let after = p.memory()?.rss_kib;
    t.close();
    Ok((throughput, peak, after))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Types `n` keys one at a time, each after the previous one's echo came back.
fn echo_latency(device: &Device, n: usize) -> Result<(f64, f64), BenchError> {
    let mut t = Terminal::open(device.server(), device.user_token(), device.id())?;
    t.wait_ready(STEP)?;
    let mut samples = Vec::with_capacity(n);
    t.set_read_timeout(Duration::from_millis(200))?;
    for i in 0..n {
        if i % 50 == 0 && i > 0 {
            // Ctrl-U: keep the line short so that every echo is the plain character.
            t.type_keys(b"\x15")?;
            std::thread::sleep(Duration::from_millis(200));
            while t.next_output()?.is_some() {}
        }
        let start = Instant::now();
        t.type_keys(b"x")?;
        let deadline = start + STEP;
        loop {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!("echo of keystroke {i}")));
            }
            if let Some(out) = t.next_output()? {
                if out.contains(&b'x') {
                    break;
                }
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    t.close();
    samples.sort_by(f64::total_cmp);
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// `cat`s the file while reading one output frame every 20 ms for `secs` seconds: how much the
/// agent buffers for a reader slower than the shell.
fn slow_reader(device: &Device, file: &Path, secs: u64) -> Result<u64, BenchError> {
    let p = device.proc();
    let mut t = Terminal::open(device.server(), device.user_token(), device.id())?;
    t.wait_ready(STEP)?;
    p.reset_peak()?;
    t.type_keys(format!("cat {}\r", file.display()).as_bytes())?;
    t.set_read_timeout(Duration::from_millis(500))?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut peak = 0;
    while Instant::now() < end {
        t.next_output()?;
        peak = peak.max(p.memory()?.rss_kib);
        std::thread::sleep(Duration::from_millis(20));
    }
    peak = peak.max(p.memory()?.hwm_kib);
    t.close();
    Ok(peak)
}

/// Downloads, then uploads, a random file of `mib` MiB with `curl` through the server's
/// deviceconnect download and upload endpoints (what mender-cli `cp` uses).
fn file_transfers(env: &TestEnv, device: &Device, mib: u64) -> Result<(Throughput, Throughput), BenchError> {
    let dir = env.subdir("files")?;
    let on_device = dir.join("device-file.bin");
    let size = mib * (1 << 20);
    let status = Command::new("head")
        .args(["-c", &size.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(&on_device).map_err(|e| BenchError::io("creating the device file", e))?)
        .status()
        .map_err(|e| BenchError::io("running head", e))?;
    if !status.success() {
        return Err(BenchError::Check(format!("head -c exited with {status}")));
    }
    let curl = Peer::Curl.path()?;
    let auth = format!("Authorization: Bearer {}", device.user_token());
    let base = format!("{}/api/management/v1/deviceconnect/devices/{}", device.server(), device.id());

    let meter = Meter::start(device, Tool::ReapedChild)?;
    let start = Instant::now();
    let out = Command::new(&curl)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-H", &auth])
        .arg(format!("{base}/download?path={}", on_device.display()))
        .output()
        .map_err(|e| BenchError::io("running curl", e))?;
    let down = meter.finish(mib, start.elapsed().as_secs_f64())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text != format!("200 {size}") {
        return Err(BenchError::Check(format!(
            "download: curl reported {text:?} (expected \"200 {size}\"): {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    settle();

    let uploaded = dir.join("uploaded.bin");
    let meter = Meter::start(device, Tool::ReapedChild)?;
    let start = Instant::now();
    let out = Command::new(&curl)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", &auth])
        .args(["-F", &format!("path={}", uploaded.display())])
        .args(["-F", &format!("file=@{}", on_device.display())])
        .arg(format!("{base}/upload"))
        .output()
        .map_err(|e| BenchError::io("running curl", e))?;
    let up = meter.finish(mib, start.elapsed().as_secs_f64())?;
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    let got = std::fs::metadata(&uploaded).map(|m| m.len()).unwrap_or(0);
    if !code.starts_with('2') || got != size {
        return Err(BenchError::Check(format!(
            "upload: HTTP {code}, {got} of {size} bytes arrived: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let _ = std::fs::remove_file(&uploaded);
    let _ = std::fs::remove_file(&on_device);
    Ok((down, up))
}

/// A service on the device for the forward: per connection, a first byte `D` asks for `size`
/// bytes (then the server closes), `U` announces `size` bytes (the server answers `K` once they
/// are in). Other connections (mender-cli's listen probe) are closed.
fn start_service(size: u64) -> Result<u16, BenchError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| BenchError::io("binding the device-side service", e))?;
    let port = listener.local_addr().map_err(|e| BenchError::io("service address", e))?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn, size));
        }
    });
    Ok(port)
}

fn serve(mut conn: TcpStream, size: u64) {
    let mut cmd = [0u8; 1];
    if conn.read_exact(&mut cmd).is_err() {
        return;
    }
    let mut buf = vec![0x5au8; 64 * 1024];
    let mut left = size;
    match cmd[0] {
        b'D' => {
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = conn.shutdown(Shutdown::Write);
            // Wait for the far side to close before dropping, so no data is lost to a reset.
            let _ = conn.read(&mut cmd);
        }
        b'U' => {
            while left > 0 {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n as u64),
                }
            }
            let _ = conn.write_all(b"K");
        }
        _ => {}
    }
}

/// TCP through `mender-cli port-forward` and the agent, each way.
fn port_forward(env: &TestEnv, device: &Device, mib: u64) -> Result<(Throughput, Throughput), BenchError> {
    let size = mib * (1 << 20);
    let service = start_service(size)?;
    let cli = MenderCli::new(env, device.server())?;
    cli.login(env, USER_EMAIL, USER_PASSWORD)?;
    let local = net::free_port()?;
    let mut forward = cli.port_forward_to(env, device.id(), local, "127.0.0.1", service)?;
    let deadline = Instant::now() + STEP;
    loop {
        if forward.try_status()?.is_some() {
            return Err(BenchError::Check(format!("mender-cli port-forward exited: {}", forward.log_text())));
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, local)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("mender-cli port-forward to listen".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    let connect = || -> Result<TcpStream, BenchError> {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, local))
            .map_err(|e| BenchError::io("connecting to the forwarded port", e))?;
        s.set_read_timeout(Some(STEP)).map_err(|e| BenchError::io("read timeout", e))?;
        Ok(s)
    };

    let tool = Proc::new(forward.id());
    let mut s = connect()?;
    let meter = Meter::start(device, Tool::Process(tool))?;
    let start = Instant::now();
    s.write_all(b"D").map_err(|e| BenchError::io("asking for data", e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < size {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => return Err(BenchError::io(&format!("forward down after {got} bytes"), e)),
        }
    }
    let down = meter.finish(mib, start.elapsed().as_secs_f64())?;
    drop(s);
    if got != size {
        return Err(BenchError::Check(format!("forward down: {got} of {size} bytes")));
    }
    settle();

    let mut s = connect()?;
    let writer = s.try_clone().map_err(|e| BenchError::io("cloning the socket", e))?;
    let meter = Meter::start(device, Tool::Process(tool))?;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = writer;
        w.write_all(b"U")?;
        let block = vec![0xa5u8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            w.write_all(&block[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let mut ack = [0u8; 1];
    let acked = s.read_exact(&mut ack);
    let up = meter.finish(mib, start.elapsed().as_secs_f64())?;
    let sent = sender.join();
    acked.map_err(|e| BenchError::io("waiting for the service's receipt", e))?;
    if !matches!(sent, Ok(Ok(()))) || ack[0] != b'K' {
        return Err(BenchError::Check(format!("forward up: sender {sent:?}, receipt {ack:?}")));
    }
    forward.ensure_running()?;
    Ok((down, up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranked_samples() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), 101.0);
        assert_eq!(percentile(&samples, 0.99), 198.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
