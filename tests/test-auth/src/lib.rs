//! Test stand-ins for the D-Bus side of Mender: a private `dbus-daemon` per test ([`TestBus`]) and an
//! `io.mender.AuthenticationManager` service ([`AuthService`]) that behaves like the Mender client
//! 3.x / `mender-auth` 4.x: `GetJwtToken() -> (token, server_url)`, `FetchJwtToken() -> bool`, and a
//! broadcast `JwtTokenStateChange(token, server_url)` signal.
//!
//! The `mender-test-auth` binary is a command-line front end to [`AuthService`].

use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dbus::Message;
use dbus::blocking::Connection;
use dbus::channel::{BusType, Channel};
use dbus::message::MessageType;

pub const SERVICE_NAME: &str = "io.mender.AuthenticationManager";
pub const OBJECT_PATH: &str = "/io/mender/AuthenticationManager";
pub const INTERFACE: &str = "io.mender.Authentication1";

const INTROSPECTION: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="io.mender.Authentication1">
    <method name="GetJwtToken">
      <arg type="s" name="token" direction="out"/>
      <arg type="s" name="server_url" direction="out"/>
    </method>
    <method name="FetchJwtToken">
      <arg type="b" name="success" direction="out"/>
    </method>
    <signal name="JwtTokenStateChange">
      <arg type="s" name="token"/>
      <arg type="s" name="server_url"/>
    </signal>
  </interface>
</node>
"#;

/// Errors of the test helpers.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    Io(io::Error),
    Bus(String),
    /// Another connection owns the service name.
    NameTaken(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Bus(e) => write!(f, "D-Bus: {e}"),
            Error::NameTaken(e) => write!(f, "could not own {SERVICE_NAME}: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<dbus::Error> for Error {
    fn from(e: dbus::Error) -> Self {
        Error::Bus(e.message().unwrap_or("unknown error").to_owned())
    }
}

/// A private `dbus-daemon` on a unix socket in its own temporary directory, allowing everything.
/// Killed and cleaned up on drop.
#[derive(Debug)]
pub struct TestBus {
    child: Child,
    dir: PathBuf,
    /// The address to give to clients (`unix:path=...`), e.g. as `DBUS_SYSTEM_BUS_ADDRESS`.
    pub address: String,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

impl TestBus {
    /// Starts a bus in a new temporary directory.
    pub fn start() -> Result<TestBus, Error> {
        let dir = std::env::temp_dir().join(format!(
            "mcrs-bus-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Self::start_in(dir)
    }

    /// Starts a bus whose socket is `dir/bus` (reusing `dir` restarts a bus at the same address).
    pub fn start_in(dir: PathBuf) -> Result<TestBus, Error> {
        let socket = dir.join("bus");
        let config = bus_config(&socket);
        Self::start_with(dir, &config)
    }

    /// Starts a bus in a new temporary directory with the policy of a Debian system bus: the
    /// `<policy>` blocks of `/usr/share/dbus-1/system.conf` (any user may connect and send
    /// signals to anyone; method calls are denied unless a service's file allows them) and the
    /// Mender client's `io.mender.AuthenticationManager.conf` (only root owns and calls the
    /// service). What a local unprivileged user can do to the agent on a real device, it can do
    /// here.
    pub fn start_system_policy() -> Result<TestBus, Error> {
        let dir = std::env::temp_dir().join(format!(
            "mcrs-sysbus-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let config = system_policy_config(&dir.join("bus"))?;
        Self::start_with(dir, &config)
    }

    fn start_with(dir: PathBuf, config_text: &str) -> Result<TestBus, Error> {
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("bus");
        let _ = std::fs::remove_file(&socket);
        let config = dir.join("bus.conf");
        std::fs::write(&config, config_text)?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Kept for post-mortems; as root it complains about fd limits on every start.
            .stderr(
                std::fs::File::create(dir.join("dbus-daemon.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start dbus-daemon (apt-get install dbus-daemon): {e}"),
                )
            })?;
        // The daemon prints its address once it listens.
        let mut line = String::new();
        let read = child.stdout.take().map(|out| BufReader::new(out).read_line(&mut line));
        if !matches!(read, Some(Ok(n)) if n > 0) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Bus(format!("dbus-daemon did not start: {read:?}")));
        }
        // Without the guid, like a system bus address: a restarted daemon has a new guid, and
        // libdbus refuses an address whose guid does not match.
        let address =
            line.trim().split(',').filter(|p| !p.starts_with("guid=")).collect::<Vec<_>>().join(",");
        Ok(TestBus { child, dir, address })
    }

    /// The directory holding the socket and the configuration.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the daemon but keeps the directory (for a restart at the same address).
    pub fn stop(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::take(&mut self.dir);
        std::mem::forget(self);
        dir
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Debian's system bus configuration.
pub const DEBIAN_SYSTEM_CONF: &str = "/usr/share/dbus-1/system.conf";
/// The Mender client's policy for its auth service (Debian package `mender-client`).
pub const MENDER_AUTH_POLICY: &str = "/usr/share/dbus-1/system.d/io.mender.AuthenticationManager.conf";

/// A bus configuration listening on `socket` with the policy of a Debian system bus (see
/// [`TestBus::start_system_policy`]): the installed files themselves, not a copy, so the tests
/// follow what Debian ships.
pub fn system_policy_config(socket: &Path) -> Result<String, Error> {
    let system = std::fs::read_to_string(DEBIAN_SYSTEM_CONF).map_err(|e| {
        io::Error::new(e.kind(), format!("{DEBIAN_SYSTEM_CONF}: {e} (apt-get install dbus-daemon)"))
    })?;
    if !Path::new(MENDER_AUTH_POLICY).exists() {
        return Err(Error::Bus(format!("{MENDER_AUTH_POLICY} missing (apt-get install mender-client)")));
    }
    // Everything but the policy (user, fork, pid file, syslog, service helper, listen address)
    // belongs to the machine's own bus.
    let mut policies = String::new();
    let mut rest = system.as_str();
    while let Some(start) = rest.find("<policy") {
        let Some(len) = rest[start..].find("</policy>") else { break };
        let end = start + len + "</policy>".len();
        policies.push_str("  ");
        policies.push_str(&rest[start..end]);
        policies.push('\n');
        rest = &rest[end..];
    }
    if !policies.contains("context=\"default\"") {
        return Err(Error::Bus(format!("no default policy found in {DEBIAN_SYSTEM_CONF}")));
    }
    Ok(format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
{policies}  <include>{MENDER_AUTH_POLICY}</include>
</busconfig>
"#,
        socket.display()
    ))
}

/// The uid and gid of Debian's `nobody`: the local unprivileged user of the attack tests.
pub const NOBODY: u32 = 65534;

/// Runs `script` with `sh -c` as the unprivileged user [`NOBODY`] (real uid, gid, no groups, no
/// capabilities), with `DBUS_SYSTEM_BUS_ADDRESS` set to `bus`; returns its exit status and output
/// (stdout and stderr). The script can use `dbus-send --system` as any local user could.
pub fn run_as_nobody(bus: &str, script: &str) -> io::Result<(std::process::ExitStatus, String)> {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"])
        .args(["sh", "-c", script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("setpriv (util-linux): {e}")))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status, text))
}

/// A shell script for [`run_as_nobody`] that does what an attacker on the device can: list the
/// bus's connections and send each of them, and everyone, `JwtTokenStateChange` with a server URL
/// of its own from the service's object path. Prints `sent N` (N unicast signals).
pub fn forge_token_signal_script(token: &str, server_url: &str) -> String {
    let signal = format!(
        "--type=signal {OBJECT_PATH} {INTERFACE}.JwtTokenStateChange string:{token} string:{server_url}"
    );
    format!(
        r#"set -e
names=$(dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.ListNames | sed -n 's/.*string "\(:[0-9.]*\)".*/\1/p')
n=0
for name in $names; do dbus-send --system --dest="$name" {signal}; n=$((n+1)); done
dbus-send --system {signal}
echo "sent $n"
"#
    )
}

/// What the service saw or did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    GetJwtToken,
    FetchJwtToken,
    /// A `JwtTokenStateChange` signal was sent with this token and URL.
    Emitted(String, String),
}

enum Control {
    Set(String, String),
    Emit,
    Stop,
}

/// A running `io.mender.AuthenticationManager` on its own thread and bus connection.
/// Dropping it (or [`AuthService::stop`]) closes the connection, so the name leaves the bus.
pub struct AuthService {
    control: mpsc::Sender<Control>,
    events: mpsc::Receiver<Event>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for AuthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

/// Initial state of an [`AuthService`].
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// Bus address; `None` = `DBUS_SYSTEM_BUS_ADDRESS` or the system bus.
    pub bus: Option<String>,
    pub token: String,
    pub server_url: String,
    /// Token handed out when `FetchJwtToken` is called while the token is empty.
    pub fetch_token: Option<String>,
}

fn connect(bus: Option<&str>) -> Result<Connection, Error> {
    let channel = match bus {
        Some(addr) => {
            let mut c = Channel::open_private(addr)?;
            c.register()?;
            c
        }
        None => Channel::get_private(BusType::System)?,
    };
    Ok(Connection::from(channel))
}

impl AuthService {
    /// Connects, owns the service name and starts serving; returns once the name is owned.
    pub fn start(config: ServiceConfig) -> Result<AuthService, Error> {
        let conn = connect(config.bus.as_deref())?;
        use dbus::blocking::stdintf::org_freedesktop_dbus::RequestNameReply;
        match conn.request_name(SERVICE_NAME, false, true, true)? {
            RequestNameReply::PrimaryOwner => {}
            other => return Err(Error::NameTaken(format!("{other:?}"))),
        }
        let (control_tx, control_rx) = mpsc::channel();
        let (events_tx, events_rx) = mpsc::channel();
        let mut state = Served {
            conn,
            token: config.token,
            server_url: config.server_url,
            fetch_token: config.fetch_token,
            events: events_tx,
        };
        let thread =
            std::thread::Builder::new().name("test-auth".into()).spawn(move || state.run(&control_rx))?;
        Ok(AuthService { control: control_tx, events: events_rx, thread: Some(thread) })
    }

    /// Sets token and URL and emits `JwtTokenStateChange`.
    pub fn set(&self, token: &str, server_url: &str) {
        let _ = self.control.send(Control::Set(token.to_owned(), server_url.to_owned()));
    }

    /// Empties token and URL and emits (what a failed authorization looks like).
    pub fn clear(&self) {
        self.set("", "");
    }

    /// Emits the current pair again.
    pub fn emit(&self) {
        let _ = self.control.send(Control::Emit);
    }

    /// The next event, waiting up to `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Waits up to `timeout` for an event matching `pred`, discarding others.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let e = self.events.recv_timeout(left).ok()?;
            if pred(&e) {
                return Some(e);
            }
        }
    }

    /// Events so far, without waiting.
    pub fn drain_events(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }

    /// False once the service thread ended (bus connection lost).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops serving and closes the bus connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Served {
    conn: Connection,
    token: String,
    server_url: String,
    fetch_token: Option<String>,
    events: mpsc::Sender<Event>,
}

impl Served {
    fn run(&mut self, control: &mpsc::Receiver<Control>) {
        loop {
            if !self.conn.channel().is_connected() {
                return;
            }
            // Short waits keep control commands responsive; this is a test tool, not a daemon.
            let _ = self.conn.channel().read_write(Some(Duration::from_millis(20)));
            while let Some(msg) = self.conn.channel().pop_message() {
                self.handle(&msg);
            }
            loop {
                match control.try_recv() {
                    Ok(Control::Set(t, u)) => {
                        self.token = t;
                        self.server_url = u;
                        self.emit();
                    }
                    Ok(Control::Emit) => self.emit(),
                    Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
    }

    fn emit(&self) {
        if let Ok(m) = Message::new_signal(OBJECT_PATH, INTERFACE, "JwtTokenStateChange") {
            let m = m.append2(self.token.as_str(), self.server_url.as_str());
            let _ = self.conn.channel().send(m);
            self.conn.channel().flush();
            let _ = self.events.send(Event::Emitted(self.token.clone(), self.server_url.clone()));
        }
    }

    fn reply(&self, reply: Message) {
        let _ = self.conn.channel().send(reply);
        self.conn.channel().flush();
    }

    fn handle(&mut self, msg: &Message) {
        if msg.msg_type() != MessageType::MethodCall {
            return;
        }
        let path_ok = msg.path().is_some_and(|p| &*p == OBJECT_PATH);
        let iface = msg.interface().map(|i| i.to_string());
        let member = msg.member().map(|m| m.to_string()).unwrap_or_default();
        match (path_ok, iface.as_deref(), member.as_str()) {
            (true, Some(INTERFACE) | None, "GetJwtToken") => {
                let _ = self.events.send(Event::GetJwtToken);
                self.reply(msg.method_return().append2(self.token.as_str(), self.server_url.as_str()));
            }
            (true, Some(INTERFACE) | None, "FetchJwtToken") => {
                let _ = self.events.send(Event::FetchJwtToken);
                if self.token.is_empty() {
                    if let Some(t) = &self.fetch_token {
                        self.token = t.clone();
                    }
                }
                // Like the real services: answer first, the new token follows as a signal.
                self.reply(msg.method_return().append1(true));
                self.emit();
            }
            (_, Some("org.freedesktop.DBus.Introspectable"), "Introspect") => {
                self.reply(msg.method_return().append1(INTROSPECTION));
            }
            (_, Some("org.freedesktop.DBus.Peer"), "Ping") => self.reply(msg.method_return()),
            _ => {
                let name = dbus::strings::ErrorName::from("org.freedesktop.DBus.Error.UnknownMethod");
                let text = std::ffi::CString::new(format!("no method {member} here")).unwrap_or_default();
                self.reply(msg.error(&name, &text));
            }
        }
    }
}
