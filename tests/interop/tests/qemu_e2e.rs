//! Issue 6: our agent on an emulated device. `qemu/build-image.sh` builds a small x86_64 image from
//! Debian packages (kernel, busybox, dbus-daemon) with the agent and the test auth service built
//! statically; `qemu/run.sh` boots it under TCG. The guest reaches the mock server on this machine's
//! 127.0.0.1 through QEMU's user-mode network (gateway 10.0.2.2). The device token comes from the
//! mock's test-control API and reaches the guest on the kernel command line; the guest's
//! `mender-test-auth` serves it on the guest's system bus as `io.mender.AuthenticationManager`.
//!
//! `QEMU_E2E_ARCH=aarch64` runs the same tests on the opt-in arm64 image (see qemu/README.md).
//!
//! Users act through the real Debian `mender-cli` (user websockets to the mock server).
//! Each test boots its own guest, so the tests are independent (and slow: a TCG boot plus the
//! agent's start-up). Run: `cargo test -p mender-connect-interop --test qemu_e2e -- --nocapture`
//! to see the boot-to-connected times.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mender_connect_interop::binaries::WorkspaceBin;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::http::{self, Auth, Body};
use mender_connect_interop::mock::{ManagementApi, USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::net::{self, EchoServer};
use mender_connect_interop::process::ManagedChild;
use mender_connect_interop::scenarios::{self, STEP_TIMEOUT};
use mender_connect_interop::{Error, TestEnv, wait};
use rustix::process::{Pid, Signal};
use serde_json::json;

/// Bound for building the image: a cold build compiles the agent in release mode for musl.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
/// Bound for a booted guest's agent to show up connected (TCG boot on a loaded machine).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound for the guest to power off after the power button.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);
/// Hard limit `qemu/run.sh` enforces on a guest, in case a test hangs.
const GUEST_LIMIT_SECS: u32 = 1200;
/// The guest's name for the host's 127.0.0.1 (QEMU user-mode networking).
const HOST_FROM_GUEST: &str = "10.0.2.2";
/// What the guest's /etc/hostname says (qemu/rootfs/etc/hostname); proves a command ran in the
/// guest, not on this machine.
const GUEST_HOSTNAME: &str = "qemu-mender";

/// The guest architecture: x86_64 unless `QEMU_E2E_ARCH` asks for the opt-in aarch64 image.
fn arch() -> String {
    std::env::var("QEMU_E2E_ARCH").unwrap_or_else(|_| "x86_64".to_owned())
}

fn qemu_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../qemu")
}

/// Builds the image (or finds it in qemu/cache) and returns its directory.
fn build_image(env: &TestEnv) -> Result<PathBuf, Error> {
    let mut cmd = Command::new("bash");
    cmd.arg(qemu_dir().join("build-image.sh")).args(["--arch", &arch()]);
    let (mut child, dir) = ManagedChild::spawn_reading_first_line(env, "build-image", cmd, BUILD_TIMEOUT)?;
    let status = child.wait_exit(Duration::from_secs(60))?;
    if !status.success() {
        return Err(child.failure(&format!("exited with {status}")));
    }
    let dir = PathBuf::from(dir);
    if !dir.join("vmlinuz").is_file() || !dir.join("initrd.img").is_file() {
        return Err(child.failure(&format!("printed {}, which holds no image", dir.display())));
    }
    Ok(dir)
}

/// The mock server as a process whose state (signing key, users, devices, tokens) lives in a file,
/// so that it can be stopped and started again with the device's token still valid.
struct Mock {
    child: ManagedChild,
    url: String,
    port: u16,
    state: PathBuf,
}

impl Mock {
    fn start(env: &TestEnv, port: u16, state: &Path) -> Result<Self, Error> {
        let mut cmd = Command::new(WorkspaceBin::MockServer.path()?);
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--user", &format!("{USER_EMAIL}:{USER_PASSWORD}")])
            .arg("--state")
            .arg(state);
        let (child, url) =
            ManagedChild::spawn_reading_first_line(env, "mock-server", cmd, Duration::from_secs(60))?;
        let url = url.trim_end_matches('/').to_owned();
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| child.failure(&format!("printed {url:?}, expected http://127.0.0.1:PORT")))?;
        Ok(Mock { child, url, port, state: state.to_owned() })
    }

    /// Stops the process and starts a new one on the same port with the same state.
    fn restart(&mut self, env: &TestEnv) -> Result<(), Error> {
        self.child.stop();
        let port = self.port;
        let state = self.state.clone();
        // Bounded: the old socket is closed by now, but the port may take a moment to be free.
        let fresh =
            wait::until("the mock server to start again", STEP_TIMEOUT, Duration::from_secs(1), || {
                match Mock::start(env, port, &state) {
                    Ok(mock) => Ok(Some(mock)),
                    Err(Error::Process { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
        *self = fresh;
        Ok(())
    }

    /// An accepted device with `identity`, and its device JWT (mock test-control API).
    fn create_device(&self, identity: &serde_json::Value) -> Result<(String, String), Error> {
        let url = format!("{}/__mock/devices", self.url);
        let response =
            http::request("POST", &url, Auth::None, Body::Json(&json!({ "identity_data": identity })))?;
        if !(200..300).contains(&response.status) {
            return Err(Error::protocol(
                "mock-server",
                format!("POST /__mock/devices: status {}: {}", response.status, response.body),
            ));
        }
        let value = response.json("mock-server")?;
        match (value["device_id"].as_str(), value["token"].as_str()) {
            (Some(id), Some(token)) => Ok((id.to_owned(), token.to_owned())),
            _ => Err(Error::protocol("mock-server", format!("no device_id/token in {value}"))),
        }
    }

    fn login(&self) -> Result<ManagementApi, Error> {
        ManagementApi::login(&self.url, USER_EMAIL, USER_PASSWORD)
    }
}

/// A booted guest: `qemu/run.sh` and its serial console log.
struct Guest {
    runner: ManagedChild,
    console: PathBuf,
    booted_at: Instant,
}

impl Guest {
    fn boot(env: &TestEnv, image: &Path, mock: &Mock, token: &str) -> Result<Self, Error> {
        let token_file = env.dir().join("device-token");
        std::fs::write(&token_file, token).map_err(|e| Error::io("writing the device token", e))?;
        let (console, _) = env.log_file("guest-console")?;
        let mut cmd = Command::new("bash");
        cmd.arg(qemu_dir().join("run.sh"))
            .args(["--arch", &arch()])
            .arg("--image")
            .arg(image)
            .args(["--server-url", &format!("http://{HOST_FROM_GUEST}:{}", mock.port)])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--log")
            .arg(&console)
            .args(["--timeout", &GUEST_LIMIT_SECS.to_string()]);
        let runner = ManagedChild::spawn(env, "qemu-run", cmd)?;
        Ok(Guest { runner, console, booted_at: Instant::now() })
    }

    fn console_text(&self) -> String {
        std::fs::read(&self.console).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits until deviceconnect reports the device connected; fails early if QEMU died.
    fn wait_connected(&mut self, api: &ManagementApi, device_id: &str) -> Result<Duration, Error> {
        wait::until(
            &format!("device {device_id} in the guest to be connected"),
            CONNECT_TIMEOUT,
            Duration::from_millis(500),
            || {
                self.runner.ensure_running()?;
                Ok((api.connect_status(device_id)?.as_deref() == Some("connected")).then_some(()))
            },
        )?;
        Ok(self.booted_at.elapsed())
    }

    /// Presses the power button (SIGTERM to run.sh only) and waits for QEMU to end.
    fn power_off(&mut self) -> Result<std::process::ExitStatus, Error> {
        let pid =
            Pid::from_raw(self.runner.id() as i32).ok_or_else(|| Error::protocol("qemu-run", "no pid"))?;
        rustix::process::kill_process(pid, Signal::TERM)
            .map_err(|e| Error::io("signalling qemu/run.sh", e.into()))?;
        self.runner.wait_exit(SHUTDOWN_TIMEOUT)
    }
}

/// Mock, device, booted guest and a logged-in mender-cli, with the device connected. Fields drop in
/// order: the guest goes before the server, so the agent's last log lines are not about a lost server.
struct Bed {
    guest: Guest,
    mock: Mock,
    api: ManagementApi,
    cli: MenderCli,
    device_id: String,
}

fn boot_connected(env: &TestEnv, name: &str) -> Result<Bed, Error> {
    let image = build_image(env)?;
    let mock = Mock::start(env, 0, &env.dir().join("mock-state.json"))?;
    let (device_id, token) = mock.create_device(&json!({ "mac": "52:54:00:12:34:56", "test": name }))?;
    let api = mock.login()?;
    let mut guest = Guest::boot(env, &image, &mock, &token)?;
    let took = guest.wait_connected(&api, &device_id)?;
    eprintln!(
        "{name}: boot-to-connected {:.1} s (qemu start to deviceconnect `connected`)",
        took.as_secs_f64()
    );
    let cli = MenderCli::new(env, &mock.url)?;
    cli.login(env, USER_EMAIL, USER_PASSWORD)?;
    Ok(Bed { guest, mock, api, cli, device_id })
}

/// Opens `mender-cli terminal`, runs `command` in the guest's shell and waits for `expect`, then
/// `exit`s. Returns the terminal output.
fn run_in_guest(env: &TestEnv, bed: &Bed, command: &str, expect: &str) -> Result<String, Error> {
    let mut term = bed.cli.terminal(env, &bed.device_id)?;
    let at = wait::until("a shell prompt on the terminal", STEP_TIMEOUT, Duration::from_millis(100), || {
        term.child().ensure_running()?;
        let out = term.output();
        Ok((out.contains("# ") || out.contains("$ ")).then_some(out.len()))
    })?;
    term.send(format!("{command}\r").as_bytes())?;
    term.expect_from(at, expect, STEP_TIMEOUT)?;
    term.send(b"exit\r")?;
    let status = term.child().wait_exit(STEP_TIMEOUT)?;
    if !status.success() {
        return Err(Error::Check(format!("mender-cli terminal exited with {status} after `exit`")));
    }
    Ok(term.output())
}

/// A command whose expected output is not in its own echo: the shell must run it in the guest.
fn guest_probe(tag: &str) -> (String, String) {
    (format!("echo {tag}-$(cat /etc/hostname)-$((6*7))"), format!("{tag}-{GUEST_HOSTNAME}-42"))
}

/// Boot, connected, a shell command through mender-cli's user websocket, the agent reconnects
/// after the mock server restarts, and the guest shuts down cleanly on the power button.
#[test]
fn qemu_boot_shell_reconnect_shutdown() -> Result<(), Error> {
    let env = TestEnv::new("qemu-e2e")?;
    let mut bed = boot_connected(&env, "qemu-e2e")?;

    let (command, expect) = guest_probe("first");
    run_in_guest(&env, &bed, &command, &expect)?;

    // The demo's "another shell from a second terminal": the image allows 4 shells per user
    // (Sessions.MaxPerUser; the default 1 refused the second one), and the agent on the device
    // lists both.
    let mut first = bed.cli.terminal(&env, &bed.device_id)?;
    wait::until("a first shell's prompt", STEP_TIMEOUT, Duration::from_millis(100), || {
        first.child().ensure_running()?;
        let out = first.output();
        Ok((out.contains("# ") || out.contains("$ ")).then_some(()))
    })?;
    run_in_guest(
        &env,
        &bed,
        "echo shells-$(mender-connect sessions | grep -c ' shell ')-open",
        "shells-2-open",
    )?;
    first.send(b"exit\r")?;
    first.child().wait_exit(STEP_TIMEOUT)?;

    // The agent must notice the lost connection and come back to the new server process.
    bed.mock.restart(&env)?;
    bed.api = bed.mock.login()?;
    let restarted = Instant::now();
    bed.guest.wait_connected(&bed.api, &bed.device_id)?;
    eprintln!(
        "qemu-e2e: reconnected {:.1} s after the mock server restarted",
        restarted.elapsed().as_secs_f64()
    );
    // A live connection, not a status left over from before the restart.
    let (command, expect) = guest_probe("after-restart");
    run_in_guest(&env, &bed, &command, &expect)?;

    let status = bed.guest.power_off()?;
    let console = bed.guest.console_text();
    if !status.success() {
        return Err(Error::Check(format!("qemu/run.sh exited with {status} after the power button")));
    }
    if !console.contains("qemu-guest: shutdown: mender-connect stopped, exit status 0") {
        return Err(Error::Check("the agent did not exit with status 0 on SIGTERM at shutdown".to_owned()));
    }
    if !console.contains("reboot: Power down") {
        return Err(Error::Check("the guest did not power off".to_owned()));
    }
    wait::until("the device to be reported disconnected", STEP_TIMEOUT, Duration::from_millis(500), || {
        Ok((bed.api.connect_status(&bed.device_id)?.as_deref() == Some("disconnected")).then_some(()))
    })?;
    env.pass();
    Ok(())
}

/// `mender-cli cp` to the guest and back: the three copies (sent, in the guest, received) match.
#[test]
fn qemu_file_round_trip() -> Result<(), Error> {
    let env = TestEnv::new("qemu-cp")?;
    let bed = boot_connected(&env, "qemu-cp")?;
    let local = env.subdir("user-side")?;
    let original = local.join("original.bin");
    std::fs::write(&original, scenarios::random_bytes(1024 * 1024)?)
        .map_err(|e| Error::io("writing the original", e))?;
    let want = scenarios::sha256_file(&original)?;

    let remote = format!("{}:/tmp/uploaded.bin", bed.device_id);
    let up = bed.cli.cp(&env, &original.display().to_string(), &remote)?;
    if !up.status.success() {
        return Err(Error::Check(format!("upload exited with {}: {}", up.status, up.output)));
    }
    // busybox sha256sum in the guest prints the hash of what arrived there.
    run_in_guest(&env, &bed, "sha256sum /tmp/uploaded.bin", &want)?;

    let back = local.join("downloaded.bin");
    let down = bed.cli.cp(&env, &remote, &back.display().to_string())?;
    if !down.status.success() {
        return Err(Error::Check(format!("download exited with {}: {}", down.status, down.output)));
    }
    let got = scenarios::sha256_file(&back)?;
    if got != want {
        return Err(Error::Check(format!("downloaded sha256 {got}, sent {want}")));
    }
    env.pass();
    Ok(())
}

/// `mender-cli port-forward` to a TCP service the guest reaches (an echo server on this machine's
/// 127.0.0.1, which the guest dials as 10.0.2.2): data comes back unchanged.
#[test]
fn qemu_port_forward() -> Result<(), Error> {
    let env = TestEnv::new("qemu-pf")?;
    let bed = boot_connected(&env, "qemu-pf")?;
    let echo = EchoServer::start()?;
    let local_port = net::free_port()?;
    let mut forward =
        bed.cli.port_forward_to(&env, &bed.device_id, local_port, HOST_FROM_GUEST, echo.port())?;
    wait::until("mender-cli port-forward to listen", STEP_TIMEOUT, Duration::from_millis(100), || {
        forward.ensure_running()?;
        Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, local_port)).ok().map(|_| ()))
    })?;
    for size in [64 * 1024, 1000] {
        let payload = scenarios::random_bytes(size)?;
        let stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, local_port)))
            .map_err(|e| Error::io("connecting to the forwarded port", e))?;
        let back = net::round_trip(stream, &payload, STEP_TIMEOUT)?;
        if back != payload {
            return Err(Error::Check(format!("{size} bytes through the forward came back different")));
        }
    }
    forward.ensure_running()?;
    env.pass();
    Ok(())
}
