//! Issue 5: the port-forward case of the integration suite (mendersoftware/integration
//! `tests/tests/test_portforward.py::TestPortForward::test_portforward`, since moved to
//! mendersoftware/mender-cli `tests/integration/tests/test_portforward.py`), with Debian's
//! mender-cli 1.9.0 against the mock server, the real Mender client 3.4.0 and the agent under test.
//!
//! Upstream: `mender-cli port-forward <dev> 9922:22 udp/9953:8.8.8.8:53`; DNS A and MX queries
//! for mender.io to localhost:9953 must each get at least one answer; a 40 MiB random file goes up
//! and down with `scp -O -P 9922` (exit 0 both) and the checksums match.
//!
//! Here the device's sshd is a real OpenSSH `sshd` on 127.0.0.1 (its own config, host key and
//! authorized key in the test's directory), and 8.8.8.8 (no internet here) is a small DNS
//! responder on 127.0.0.1 that answers A and MX queries; ports are free ones instead of 9922/9953.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mender_connect_interop::agent::{AgentKind, current_user};
use mender_connect_interop::cli::{COMMAND_TIMEOUT, MenderCli};
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::net;
use mender_connect_interop::process::ManagedChild;
use mender_connect_interop::scenarios::{STEP_TIMEOUT, random_bytes, sha256_file};
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv, wait};

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Check(what.into())) }
}

fn run(env: &TestEnv, name: &str, cmd: Command) -> Result<(std::process::ExitStatus, String), Error> {
    let mut child = ManagedChild::spawn(env, name, cmd)?;
    let status = child.wait_exit(COMMAND_TIMEOUT)?;
    Ok((status, child.log_text()))
}

/// A real OpenSSH server on 127.0.0.1 accepting one key for the current user.
struct Sshd {
    _child: ManagedChild,
    port: u16,
    key: std::path::PathBuf,
}

fn start_sshd(env: &TestEnv) -> Result<Sshd, Error> {
    let dir = env.subdir("sshd")?;
    for (file, what) in [("host_ed25519", "host key"), ("user_ed25519", "user key")] {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", what, "-f"]).arg(dir.join(file));
        let (status, log) = run(env, "ssh-keygen", cmd)?;
        ensure(status.success(), format!("ssh-keygen for the {what}: {status}: {log}"))?;
    }
    std::fs::copy(dir.join("user_ed25519.pub"), dir.join("authorized_keys"))
        .map_err(|e| Error::io("writing authorized_keys", e))?;
    // Privilege separation directory Debian's sshd insists on (normally made by its service unit).
    std::fs::create_dir_all("/run/sshd").map_err(|e| Error::io("mkdir /run/sshd", e))?;
    let port = net::free_port()?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            host = dir.join("host_ed25519").display(),
            auth = dir.join("authorized_keys").display(),
        ),
    )
    .map_err(|e| Error::io("writing sshd_config", e))?;
    let mut cmd = Command::new("/usr/sbin/sshd");
    cmd.args(["-D", "-e", "-f"]).arg(&config);
    let mut child = ManagedChild::spawn(env, "sshd", cmd)?;
    wait::until("sshd to listen", STEP_TIMEOUT, Duration::from_millis(100), || {
        child.ensure_running()?;
        Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok().map(|_| ()))
    })?;
    Ok(Sshd { _child: child, port, key: dir.join("user_ed25519") })
}

/// Stands for 8.8.8.8: answers A queries with 127.0.0.2 and MX queries with `10 <qname>`.
struct Dns {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

const TYPE_A: u16 = 1;
const TYPE_MX: u16 = 15;

/// The end of the question section (after QTYPE and QCLASS), if well formed.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len == 0 {
            break;
        }
        i += 1 + len;
    }
    let end = i + 5;
    (end <= msg.len()).then_some(end)
}

fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    let end = question_end(query)?;
    let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
    let rdata: Vec<u8> = match qtype {
        TYPE_A => vec![127, 0, 0, 2],
        // Preference 10, exchange = the question's name (compression pointer to offset 12).
        TYPE_MX => vec![0, 10, 0xc0, 0x0c],
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(end + 16 + rdata.len());
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&[0x81, 0x80, 0, 1]);
    out.extend_from_slice(&[0, u8::from(!rdata.is_empty()), 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..end]);
    if !rdata.is_empty() {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

fn start_dns() -> Result<Dns, Error> {
    let socket =
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::io("binding the DNS responder", e))?;
    let port = socket.local_addr().map_err(|e| Error::io("DNS address", e))?.port();
    socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| Error::io("DNS timeout", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stopping.load(Ordering::SeqCst) {
            if let Ok((n, from)) = socket.recv_from(&mut buf)
                && let Some(answer) = dns_answer(&buf[..n])
            {
                let _ = socket.send_to(&answer, from);
            }
        }
    });
    Ok(Dns { port, stop })
}

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0]);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Sends the query to `port` (re-sent, bounded: UDP may drop) and returns the answer count of the
/// matching response.
fn resolve(port: u16, name: &str, qtype: u16, id: u16) -> Result<u16, Error> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| Error::io("DNS client", e))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| Error::io("DNS client timeout", e))?;
    let query = dns_query(id, name, qtype);
    let mut buf = [0u8; 1500];
    wait::until(&format!("a DNS answer for {name} type {qtype}"), STEP_TIMEOUT, Duration::ZERO, || {
        socket
            .send_to(&query, (Ipv4Addr::LOCALHOST, port))
            .map_err(|e| Error::io("sending a DNS query", e))?;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 => {
                    return Ok(Some(u16::from_be_bytes([buf[6], buf[7]])));
                }
                Ok(_) => continue,
                Err(_) => return Ok(None),
            }
        }
    })
}

fn scp(env: &TestEnv, sshd: &Sshd, local_port: u16, from: &str, to: &str) -> Result<(), Error> {
    let mut cmd = Command::new("scp");
    cmd.args(["-O", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&sshd.key)
        .args(["-P", &local_port.to_string(), from, to]);
    let (status, log) = run(env, "scp", cmd)?;
    ensure(status.success(), format!("scp {from} {to} exited with {status}: {log}"))
}

fn test_portforward(kind: AgentKind) -> Result<(), Error> {
    let name = format!("pf-suite-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let sshd = start_sshd(&env)?;
    let dns = start_dns()?;
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(&env, &admission)?;
    let mut bed = Testbed::start_device(&env, mock, Identity::mac_for(&name), &admission)?;
    bed.start_agent(&env, kind)?;
    let cli = MenderCli::new(&env, bed.mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;

    let (tcp_local, udp_local) = (net::free_port()?, net::free_udp_port()?);
    let tcp_spec = format!("{tcp_local}:127.0.0.1:{}", sshd.port);
    let udp_spec = format!("udp/{udp_local}:127.0.0.1:{}", dns.port);
    let mut forward = ManagedChild::spawn(
        &env,
        "mender-cli-port-forward",
        cli.command("port-forward", &[&bed.device_id, &tcp_spec, &udp_spec, "--bind", "127.0.0.1"]),
    )?;
    wait::until(
        "mender-cli port-forward to listen on both ports",
        STEP_TIMEOUT,
        Duration::from_millis(100),
        || {
            if forward.try_status()?.is_some() {
                return Err(forward.failure("exited before forwarding"));
            }
            let udp_ready = forward.log_text().contains("Forwarding from udp/");
            Ok((udp_ready && TcpStream::connect((Ipv4Addr::LOCALHOST, tcp_local)).is_ok()).then_some(()))
        },
    )?;

    let a = resolve(udp_local, "mender.io", TYPE_A, 0x1234)?;
    ensure(a >= 1, format!("A query: {a} answers"))?;
    let mx = resolve(udp_local, "mender.io", TYPE_MX, 0x4321)?;
    ensure(mx >= 1, format!("MX query: {mx} answers"))?;

    let local = env.subdir("user-side")?;
    let device = env.subdir("device-side")?;
    let original = local.join("random.bin");
    {
        let mut f = std::fs::File::create(&original).map_err(|e| Error::io("creating the 40 MiB file", e))?;
        for _ in 0..40 {
            f.write_all(&random_bytes(1024 * 1024)?).map_err(|e| Error::io("writing the 40 MiB file", e))?;
        }
    }
    let user = current_user()?;
    let remote = device.join("random.bin");
    let started = Instant::now();
    scp(
        &env,
        &sshd,
        tcp_local,
        &original.display().to_string(),
        &format!("{user}@127.0.0.1:{}", remote.display()),
    )?;
    let up = started.elapsed();
    let downloaded = local.join("random.bin.download");
    let started = Instant::now();
    scp(
        &env,
        &sshd,
        tcp_local,
        &format!("{user}@127.0.0.1:{}", remote.display()),
        &downloaded.display().to_string(),
    )?;
    let down = started.elapsed();
    ensure(
        sha256_file(&original)? == sha256_file(&downloaded)?,
        "the file scp'd up and down through the forward differs",
    )?;
    ensure(Path::new(&remote).exists(), "the upload did not reach the device side")?;
    eprintln!(
        "{}: scp 40 MiB through mender-cli port-forward: up {:.1} s ({:.1} MiB/s), down {:.1} s ({:.1} MiB/s)",
        kind.name(),
        up.as_secs_f64(),
        40.0 / up.as_secs_f64(),
        down.as_secs_f64(),
        40.0 / down.as_secs_f64()
    );
    forward.ensure_running()?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

#[test]
fn go_agent_test_portforward() -> Result<(), Error> {
    test_portforward(AgentKind::Go)
}

/// Passed with 2.3.0 (2026-12-03); the 40 MiB scp costs about a minute of CI, and remote_access
/// covers 2.3.0's TCP and UDP forwarding.
#[test]
#[ignore = "same as 2.1.0 (checked 2026-12-03); CI time"]
fn go23_agent_test_portforward() -> Result<(), Error> {
    test_portforward(AgentKind::Go23)
}

#[test]
fn rust_agent_test_portforward() -> Result<(), Error> {
    test_portforward(AgentKind::Rust)
}
