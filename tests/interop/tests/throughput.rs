//! Issue 5's throughput figures (not a pass/fail criterion: the machine is shared, so nothing here
//! asserts a speed). For each agent: a 100 MiB put and get through the mock server's deviceconnect
//! HTTP endpoints and with Debian's `mender-cli cp`, and 100 MiB each way through a TCP
//! `mender-cli port-forward` to an echo server. Every transfer's content is checked.
//!
//! Ignored by default (about a minute per agent in a debug build); run with
//! `cargo test -p mender-connect-interop --test throughput -- --ignored --nocapture --test-threads=1`.
//! `MENDER_INTEROP_MENDER_CONNECT_BIN` selects another build of our agent (e.g. release).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::deviceconnect::{DeviceConnect, Paced, UploadFields};
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::net::{self, EchoServer};
use mender_connect_interop::scenarios::{STEP_TIMEOUT, sha256_file};
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv, wait};
use sha2::{Digest, Sha256};

const SIZE: u64 = 100 * 1024 * 1024;

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Check(what.into())) }
}

fn rate(what: &str, kind: AgentKind, bytes: u64, took: Duration) {
    eprintln!(
        "THROUGHPUT {}: {what}: {} MiB in {:.1} s = {:.1} MiB/s",
        kind.name(),
        bytes / (1024 * 1024),
        took.as_secs_f64(),
        bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
    );
}

struct Hashing(Sha256, u64);

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn measure(kind: AgentKind) -> Result<(), Error> {
    let name = format!("throughput-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(&env, &admission)?;
    let mut bed = Testbed::start_device(&env, mock, Identity::mac_for(&name), &admission)?;
    bed.start_agent(&env, kind)?;
    let dc = DeviceConnect::new(bed.mock.url(), bed.api.token(), &bed.device_id);
    let device = env.subdir("device-side")?;
    let local = env.subdir("user-side")?;

    // The payload, once, as a file (mender-cli needs one) and its digest.
    let original = local.join("payload.bin");
    {
        let mut f = std::fs::File::create(&original).map_err(|e| Error::io("creating the payload", e))?;
        std::io::copy(&mut Paced::new(SIZE, u64::MAX), &mut f)
            .map_err(|e| Error::io("writing the payload", e))?;
    }
    let want = sha256_file(&original)?;

    // HTTP put / get.
    let target = device.join("http.bin");
    let mut body = std::fs::File::open(&original).map_err(|e| Error::io("opening the payload", e))?;
    let started = Instant::now();
    let r = dc.upload(&UploadFields::new(&target.display().to_string()), &mut body)?;
    let took = started.elapsed();
    ensure(r.status == 201, format!("HTTP put: {} {:?}", r.status, r.text()))?;
    wait::until("the upload to appear", Duration::from_secs(10), Duration::from_millis(50), || {
        Ok(target.exists().then_some(()))
    })?;
    ensure(sha256_file(&target)? == want, "HTTP put: content differs")?;
    rate("HTTP PUT .../upload", kind, SIZE, took);
    let mut sink = Hashing(Sha256::new(), 0);
    let started = Instant::now();
    let r = dc.download_to(&target.display().to_string(), &mut sink)?;
    let took = started.elapsed();
    ensure(r.status == 200 && sink.1 == SIZE, format!("HTTP get: {} after {} bytes", r.status, sink.1))?;
    ensure(hex(&sink.0.finalize()) == want, "HTTP get: content differs")?;
    rate("HTTP GET .../download", kind, SIZE, took);

    // mender-cli cp both ways.
    let cli = MenderCli::new(&env, bed.mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;
    let on_device = device.join("cli.bin");
    let started = Instant::now();
    let up =
        cli.cp(&env, &original.display().to_string(), &format!("{}:{}", bed.device_id, on_device.display()))?;
    let took = started.elapsed();
    ensure(up.status.success(), format!("cp up: {}", up.output_without_harness()))?;
    wait::until("the cp upload to appear", Duration::from_secs(10), Duration::from_millis(50), || {
        Ok(on_device.exists().then_some(()))
    })?;
    ensure(sha256_file(&on_device)? == want, "cp up: content differs")?;
    rate("mender-cli cp (put)", kind, SIZE, took);
    let back = local.join("back.bin");
    let started = Instant::now();
    let down =
        cli.cp(&env, &format!("{}:{}", bed.device_id, on_device.display()), &back.display().to_string())?;
    let took = started.elapsed();
    ensure(down.status.success(), format!("cp down: {}", down.output_without_harness()))?;
    ensure(sha256_file(&back)? == want, "cp down: content differs")?;
    rate("mender-cli cp (get)", kind, SIZE, took);

    // TCP port forward to an echo server: 100 MiB each way at once.
    let echo = EchoServer::start()?;
    let local_port = net::free_port()?;
    let mut forward = cli.port_forward_to(&env, &bed.device_id, local_port, "127.0.0.1", echo.port())?;
    wait::until("mender-cli port-forward to listen", STEP_TIMEOUT, Duration::from_millis(100), || {
        if forward.try_status()?.is_some() {
            return Err(forward.failure("exited before listening"));
        }
        Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, local_port)).ok().map(|_| ()))
    })?;
    let mut payload = Vec::with_capacity(SIZE as usize);
    std::fs::File::open(&original)
        .and_then(|mut f| f.read_to_end(&mut payload))
        .map_err(|e| Error::io("reading the payload", e))?;
    let stream =
        TcpStream::connect((Ipv4Addr::LOCALHOST, local_port)).map_err(|e| Error::io("connecting", e))?;
    let started = Instant::now();
    let echoed = net::round_trip(stream, &payload, Duration::from_secs(300))?;
    let took = started.elapsed();
    ensure(echoed == payload, "port forward: echoed data differs")?;
    rate("mender-cli port-forward TCP echo (each way)", kind, SIZE, took);
    forward.ensure_running()?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

#[test]
#[ignore = "measurement (about a minute per agent); run with --ignored --nocapture"]
fn go_agent_throughput() -> Result<(), Error> {
    measure(AgentKind::Go)
}

#[test]
#[ignore = "measurement (about a minute per agent); run with --ignored --nocapture"]
fn rust_agent_throughput() -> Result<(), Error> {
    measure(AgentKind::Rust)
}
