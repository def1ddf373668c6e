//! End-to-end user scenarios with the real mender-cli against a connected device. Each returns
//! [`Error::Check`] when what came back differs from what went in.

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cli::MenderCli;
use crate::error::IoContext;
use crate::net::{self, EchoServer};
use crate::wait;
use crate::{Error, TestEnv};

/// Bound for interactive steps (a prompt, a command's output).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `terminal`: waits for the remote shell's prompt, runs a command whose output differs from its
/// echo (the shell computes `6*7`), then `exit`s and expects mender-cli to end cleanly when the
/// device stops the shell.
pub fn terminal_round_trip(env: &TestEnv, cli: &MenderCli, device_id: &str) -> Result<(), Error> {
    let mut term = cli.terminal(env, device_id)?;
    // A login bash prompt ends in "# " (root) or "$ ". Like a user facing a blank terminal, press
    // Enter every 10 s without one: on a loaded machine the Go agent 2.1.0 has been seen to start
    // the shell and relay nothing of its first prompt (once in many CI runs); a fresh prompt then
    // shows the session works. Lost output past the prompt still fails the command check below.
    let mut polls = 0u32;
    let at = wait::until("a shell prompt on the terminal", STEP_TIMEOUT, Duration::from_millis(100), || {
        term.child().ensure_running()?;
        let out = term.output();
        if out.contains("# ") || out.contains("$ ") {
            return Ok(Some(out.len()));
        }
        polls += 1;
        if polls % 100 == 0 {
            term.send(b"\r")?;
        }
        Ok(None)
    })?;
    term.send(b"echo interop-$((6*7))-done\r")?;
    let at = term.expect_from(at, "interop-42-done", STEP_TIMEOUT)?;
    term.send(b"exit\r")?;
    let status = term.child().wait_exit(STEP_TIMEOUT)?;
    if !status.success() {
        return Err(Error::Check(format!(
            "mender-cli terminal exited with {status} after `exit`; output after the command: {:?}",
            term.output().get(at..).unwrap_or("")
        )));
    }
    Ok(())
}

/// `terminal` left idle after its first prompt, for a device that ends the session by itself
/// (idle expiry): whether mender-cli ended within `within` after the prompt. It ends only if the
/// device tells the server with a `stop`, which the server forwards and on which mender-cli 1.9.0
/// ends (`cmd/terminal.go`: `MessageTypeStopShell` → `c.Stop()`).
pub fn terminal_ended_by_device(
    env: &TestEnv,
    cli: &MenderCli,
    device_id: &str,
    within: Duration,
) -> Result<bool, Error> {
    let mut term = cli.terminal(env, device_id)?;
    let mut polls = 0u32;
    wait::until("a shell prompt on the terminal", STEP_TIMEOUT, Duration::from_millis(100), || {
        term.child().ensure_running()?;
        let out = term.output();
        if out.contains("# ") || out.contains("$ ") {
            return Ok(Some(()));
        }
        polls += 1;
        if polls % 100 == 0 {
            term.send(b"\r")?;
        }
        Ok(None)
    })?;
    Ok(term.child().wait_timeout(within)?.is_some())
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut file = std::fs::File::open(path).context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `size` random bytes from the kernel.
pub fn random_bytes(size: usize) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; size];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context(|| "reading /dev/urandom".to_owned())?;
    Ok(bytes)
}

/// `cp` both ways: uploads a random file of `size` bytes to `device_dir` on the device (the agent
/// runs on this machine, so the test can read the device side directly), then downloads it back;
/// all three copies must have the same SHA-256.
pub fn file_round_trip(
    env: &TestEnv,
    cli: &MenderCli,
    device_id: &str,
    device_dir: &Path,
    size: usize,
) -> Result<(), Error> {
    let local_dir = env.subdir("user-side")?;
    let original = local_dir.join("original.bin");
    std::fs::write(&original, random_bytes(size)?).context(|| "writing the original".to_owned())?;
    let want = sha256_file(&original)?;

    let on_device = device_dir.join("uploaded.bin");
    let up = cli.cp(env, &original.display().to_string(), &format!("{device_id}:{}", on_device.display()))?;
    if !up.status.success() {
        return Err(Error::Check(format!(
            "upload exited with {}: {}",
            up.status,
            up.output_without_harness()
        )));
    }
    let uploaded = sha256_file(&on_device)?;
    if uploaded != want {
        return Err(Error::Check(format!(
            "uploaded file differs: sha256 {uploaded} on the device, {want} sent"
        )));
    }

    let downloaded_path = local_dir.join("downloaded.bin");
    let down =
        cli.cp(env, &format!("{device_id}:{}", on_device.display()), &downloaded_path.display().to_string())?;
    if !down.status.success() {
        return Err(Error::Check(format!(
            "download exited with {}: {}",
            down.status,
            down.output_without_harness()
        )));
    }
    let downloaded = sha256_file(&downloaded_path)?;
    if downloaded != want {
        return Err(Error::Check(format!("downloaded file differs: sha256 {downloaded}, expected {want}")));
    }
    Ok(())
}

/// `port-forward`: an echo server on 127.0.0.1 stands for a service on the device; data sent to
/// mender-cli's local port must come back unchanged, over two successive connections.
pub fn port_forward_round_trip(env: &TestEnv, cli: &MenderCli, device_id: &str) -> Result<(), Error> {
    let echo = EchoServer::start()?;
    // mender-cli takes a fixed local port; if another process grabs it first, the cli exits and
    // a new port is tried (bounded).
    let mut attempt = 0;
    let (mut forward, local_port) = loop {
        attempt += 1;
        let local_port = net::free_port()?;
        let mut forward = cli.port_forward_to(env, device_id, local_port, "127.0.0.1", echo.port())?;
        let connected = wait::until(
            "mender-cli port-forward to listen",
            STEP_TIMEOUT,
            Duration::from_millis(100),
            || {
                if forward.try_status()?.is_some() {
                    return Ok(Some(false));
                }
                Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, local_port)).ok().map(|_| true))
            },
        )?;
        if connected {
            break (forward, local_port);
        }
        if attempt >= 3 || !forward.log_text().contains("address already in use") {
            return Err(forward.failure(&format!(
                "exited before listening; last lines: {:?}",
                log_tail(&forward.log_text(), 5)
            )));
        }
    };
    // The probe connection above was opened and closed; these carry data.
    for (n, size) in [(1, 256 * 1024), (2, 1000)] {
        let payload = random_bytes(size)?;
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, local_port))
            .context(|| format!("connecting to the forwarded port {local_port}"))?;
        let back = net::round_trip(stream, &payload, STEP_TIMEOUT)?;
        if back != payload {
            return Err(Error::Check(format!(
                "connection {n}: {size} bytes through the forward came back different"
            )));
        }
    }
    forward.ensure_running()?;
    Ok(())
}

/// `cp` error paths whose texts come from the device agent (through the server, verbatim) and
/// that mender-cli users see; a drop-in agent must produce the same:
/// - download of a missing file: `... no such file or directory` (the agent's stat error);
/// - download of a directory: `path is not a regular file` (the server's check of the Go
///   `os.FileMode` bits the agent reports in `file_info`);
/// - upload into a missing directory: `failed to create target file`.
pub fn file_transfer_errors(
    env: &TestEnv,
    cli: &MenderCli,
    device_id: &str,
    device_dir: &Path,
) -> Result<(), Error> {
    let local_dir = env.subdir("user-side")?;
    let small = local_dir.join("small.txt");
    std::fs::write(&small, b"interop\n").context(|| "writing a small file".to_owned())?;

    let cases: [(&str, String, String, &str); 3] = [
        (
            "download of a missing file",
            format!("{device_id}:{}", device_dir.join("missing.bin").display()),
            local_dir.join("never.bin").display().to_string(),
            "no such file or directory",
        ),
        (
            "download of a directory",
            format!("{device_id}:{}", device_dir.display()),
            local_dir.join("never-dir.bin").display().to_string(),
            "path is not a regular file",
        ),
        (
            "upload into a missing directory",
            small.display().to_string(),
            format!("{device_id}:{}", device_dir.join("no-such-dir/small.txt").display()),
            "failed to create target file",
        ),
    ];
    for (what, src, dst, expected) in cases {
        let done = cli.cp(env, &src, &dst)?;
        if done.status.success() || !done.output.contains(expected) {
            return Err(Error::Check(format!(
                "{what}: expected a failure mentioning {expected:?}, got {} with output: {}",
                done.status,
                done.output_without_harness()
            )));
        }
    }
    Ok(())
}

/// `port-forward` of UDP (`udp/L:127.0.0.1:E`): a UDP echo server stands for a service on the
/// device; each of several distinct datagrams sent to mender-cli's local port must come back
/// unchanged. UDP may drop datagrams, so each is re-sent (bounded) until its echo arrives.
pub fn udp_port_forward_round_trip(env: &TestEnv, cli: &MenderCli, device_id: &str) -> Result<(), Error> {
    let echo = net::UdpEchoServer::start()?;
    let local_port = net::free_udp_port()?;
    let spec = format!("udp/{local_port}:127.0.0.1:{}", echo.port());
    let mut forward = cli.port_forward_spec(env, device_id, &spec)?;
    // 1.9.0 prints this right before it binds the local UDP port (after the handshake).
    wait::until("mender-cli to set up the UDP forward", STEP_TIMEOUT, Duration::from_millis(100), || {
        if forward.try_status()?.is_some() {
            return Err(forward.failure(&format!(
                "exited before forwarding; last lines: {:?}",
                log_tail(&forward.log_text(), 5)
            )));
        }
        Ok(forward.log_text().contains("Forwarding from udp/").then_some(()))
    })?;
    let socket =
        std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context(|| "binding a UDP client".to_owned())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .context(|| "setting a UDP timeout".to_owned())?;
    let mut buf = [0u8; 4096];
    for n in 0..5u8 {
        let mut payload = random_bytes(600)?;
        payload[0] = n;
        let echoed = wait::until(
            &format!("UDP datagram {n} to come back through the forward"),
            STEP_TIMEOUT,
            Duration::ZERO,
            || {
                socket
                    .send_to(&payload, (Ipv4Addr::LOCALHOST, local_port))
                    .context(|| "sending a datagram".to_owned())?;
                // Read until this datagram's echo or a timeout; stale echoes of earlier re-sends
                // of previous datagrams are skipped.
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((len, _)) if buf[..len] == payload[..] => return Ok(Some(())),
                        Ok(_) => continue,
                        Err(_) => return Ok(None),
                    }
                }
            },
        );
        echoed?;
    }
    forward.ensure_running()?;
    Ok(())
}

/// The last `n` lines of a child's log, without the harness's own lines.
fn log_tail(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with("[harness]")).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| (*l).to_owned()).collect()
}
