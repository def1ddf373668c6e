//! Remote-terminal sessions (`proto` 1): one shell on a pty per session id.
//!
//! Replies follow mender-connect 2.1.0 (`app/daemon_shell.go`, `session/shell.go`,
//! `shell/exec.go`): `new` → `{"status":1}` "Shell started" or `{"status":2}` with the error text;
//! `stop` → `{"status":1}` or status 2 with the error; a shell that ends is reported with a `stop`
//! `{"status":2}` carrying the read error; a health-check `ping` (`timeout` 65, `status` 3) every
//! 60 s, answered by `pong`; 65 s after the last pong the check fails and the shell is stopped and
//! its session deleted (2.1.2/2.2.1+, MEN-6888; 2.1.0 only marked it expired).
//!
//! Which session is refused, replaced, expired, pinged or failed is decided by core's
//! [`ShellTable`](mender_connect_core::shells::ShellTable) (a sans-IO state machine), which core's
//! [`Device`](mender_connect_core::device::Device) feeds with the server's frames, the link's
//! state and the clock; this module is its executor: it carries out what the device asks for
//! with ptys, shell processes and reader/writer tasks, and reports back what became of them.
//!
//! A session the agent ends by itself (idle or absolute expiry, failed health check) is reported
//! with the same `stop` `{"status":2}` the reference's pty reader sends when its shell is stopped
//! under it ("read /dev/ptmx: file already closed"), so the browser or `mender-cli` closes its
//! terminal instead of showing a dead one. The reference's reader sends it only when a pty read
//! fails, and stopping the shell first marks it not running (a read that still returns output
//! then ends the reader quietly): in practice nothing goes out. 2.1.0 logged no read error and
//! sent nothing on expiry, and `mender-cli` stayed open (3.0's expiry, health-check and reader
//! code is the same). Ours sends it once.
//!
//! Unlike the reference: bulk pty output is coalesced into frames of up to ~8 KiB (flushed after
//! [`COALESCE_IDLE`] without new output; short output such as an echo is sent at once), the reader stops reading the pty while the outbound
//! queue is full (backpressure instead of unbounded buffering), sessions are removed when their
//! shell ends, and sessions left over from a dropped websocket are reaped after a grace period.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, future};
use mender_connect_core::MAX_FRAME_LEN;
use mender_connect_core::shell::{self as proto, Status, TermSize};
use mender_connect_core::shells::{self as table, Refusal, ShellConfig, StopReason};
use smol::{Async, Task, Timer};

use crate::os::clock;
use crate::os::pty;
use crate::proto::by_sid::BySid;
use crate::proto::router::{AgentDevice, Report};

/// The reference's `MaxShellsSpawned`: shells running at once.
pub const MAX_SHELLS: usize = mender_connect_core::sessions::DEFAULT_CAPACITY;
/// Bulk output is flushed when the pty has been quiet this long.
pub const COALESCE_IDLE: Duration = Duration::from_millis(2);
/// Output at least this long counts as bulk and is coalesced; shorter output (keystroke echo,
/// prompts) is sent without waiting, so coalescing adds no latency to typing.
const BULK_OUTPUT: usize = 1024;
/// Turns other tasks get while bulk output waits for more, before the [`COALESCE_IDLE`] timer.
const COALESCE_YIELDS: usize = 2;
/// Time a stopped shell gets between SIGHUP and SIGKILL (the reference waits 2 s).
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Health-check ping period (reference `healthcheckInterval`, 60 s); the check fails
/// [`proto::HEALTHCHECK_TIMEOUT_SECS`] (5 s) after the next ping was due without a pong.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(proto::HEALTHCHECK_INTERVAL_SECS);
/// Default time sessions survive a dropped websocket.
pub const DEFAULT_DISCONNECT_GRACE: Duration =
    Duration::from_millis(mender_connect_core::shells::DEFAULT_DISCONNECT_GRACE_MS);
/// Body of the `stop` sent for a shell ended by the agent or locally: what the reference sends
/// when its shell is stopped under it (the pty read fails on the closed file).
#[cfg(test)]
pub const STOPPED_SHELL_TEXT: &str = table::STOPPED_SHELL_TEXT;
/// Keystroke messages buffered per session; more while the pty takes nothing are refused with
/// [`ERR_INPUT_DROPPED`] on that session.
const INPUT_QUEUE: usize = 16;

/// Input refused because the session's queue is full (the program on the pty reads nothing);
/// the reference has no such limit (its per-session goroutine blocks in the pty write).
pub const ERR_INPUT_DROPPED: &str = "shell input dropped: the terminal does not take input";

/// When sessions expire: core's rule (`mender_connect_core::sessions::Expiry::from_reference`);
/// `None`: never.
pub use mender_connect_core::sessions::Expiry;

/// Actions core's table can queue with the reference's capacity.
pub(crate) const QUEUE: usize = table::queue_len(MAX_SHELLS);
/// The table with the reference's capacity (core's device holds it).
pub(crate) type Table = table::ShellTable<MAX_SHELLS, QUEUE>;

/// What every shell is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellSettings {
    /// `ShellCommand`
    pub command: String,
    /// `ShellArguments`
    pub args: Vec<String>,
    /// `User`
    pub user: String,
    /// `Terminal.Width`/`Height` (used when `new` has no size).
    pub size: TermSize,
    /// `Sessions.MaxPerUser` (at least 1).
    pub max_per_user: usize,
    /// Session expiry (`None`: never).
    pub expiry: Option<Expiry>,
    /// Health-check ping period ([`HEALTH_INTERVAL`]; tests shorten it).
    pub health_interval: Duration,
    /// How long shells outlive a dropped websocket.
    pub disconnect_grace: Duration,
}

impl ShellSettings {
    /// Settings under which no shell ever starts (`user` names no account), for routers driven
    /// without real shells: tests and the fuzz harness (`crate::proto::harness`).
    pub(crate) fn none_started() -> Self {
        Self {
            command: "/bin/sh".into(),
            args: Vec::new(),
            user: "mender-connect-test-no-such-user".into(),
            size: TermSize { width: 80, height: 24 },
            max_per_user: 1,
            expiry: None,
            health_interval: HEALTH_INTERVAL,
            disconnect_grace: DEFAULT_DISCONNECT_GRACE,
        }
    }

    /// How long after the last pong the health check fails (interval + 5 s, as the reference;
    /// core's table applies it, the daemon's tests check it).
    #[cfg(test)]
    pub(crate) fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.table_config().health_timeout_ms())
    }

    pub(crate) fn table_config(&self) -> ShellConfig {
        ShellConfig {
            max_shells: MAX_SHELLS,
            max_per_user: self.max_per_user,
            expiry: self.expiry,
            health_interval_ms: clock::millis(self.health_interval),
            // The link engine owns the grace (`reap_orphans`).
            disconnect_grace_ms: None,
        }
    }
}

/// Why a session ended on its own; the daemon removes it and reaps the shell.
#[derive(Debug)]
pub struct Exited {
    /// Session id.
    pub sid: String,
    /// Which incarnation of that sid (a sid can be reused after a stop).
    pub serial: u64,
}

/// A running shell: what the table does not know about a session.
struct Proc {
    started: Instant,
    shell: pty::Shell,
    input: async_channel::Sender<Vec<u8>>,
    /// Input chunks handed to the writer task and not yet written; direct writes wait for 0
    /// so that keystrokes stay in order.
    input_queued: Arc<AtomicUsize>,
    /// Input is being refused (queue full): the user is told once per such spell, not per
    /// message.
    refusing: bool,
    master: Arc<Async<File>>,
    /// Keystroke bytes from the server (status CLI).
    bytes_in: u64,
    /// Terminal output bytes sent, counted by the reader task (status CLI).
    bytes_out: Arc<AtomicU64>,
    _reader: Task<()>,
    _writer: Task<()>,
}

/// One shell session as the status CLI shows it.
#[derive(Clone, Debug)]
pub struct ShellInfo {
    /// Session id.
    pub id: String,
    /// The server's `user_id`.
    pub user: String,
    /// Shell process id.
    pub pid: u32,
    /// When the shell started.
    pub started: Instant,
    /// Last input from the user.
    pub active: Instant,
    /// Keystroke bytes received.
    pub bytes_in: u64,
    /// Terminal output bytes sent.
    pub bytes_out: u64,
}

/// What the event loop does for a routed message.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action {
    /// Send this frame (router replies; priority queue).
    Reply(Vec<u8>),
}

/// The processes of the shell sessions core's device keeps (its table decides; this is the
/// executor of its `SpawnShell`/`StopShell`).
pub struct Shells {
    settings: ShellSettings,
    procs: BySid<Proc>,
    /// Shells stopped because every session had to go, since [`Shells::take_stopped_all`].
    stopped_all: usize,
    /// Shells being stopped; the daemon waits for them on shutdown.
    reaping: Vec<Task<()>>,
    data: async_channel::Sender<Vec<u8>>,
    exited: async_channel::Sender<Report>,
    /// The shell user, looked up when the daemon starts ([`pty::Account`]); if that failed, at
    /// the next shell start, then kept.
    account: Option<pty::Account>,
}

/// Encodes a shell frame with a status; frames that cannot be encoded (absurd sid) are dropped.
pub fn frame(typ: &str, sid: &str, status: Status, body: &[u8]) -> Option<Vec<u8>> {
    // Header room as in `chunk_len`; a keystroke echo then zeroes ~200 bytes, not 8 KiB.
    let cap = body.len() + sid.len() + typ.len() + 128;
    crate::proto::outframe::encode_within(&format_args!("shell {typ} frame for session {sid:?}"), cap, |b| {
        proto::encode_with_status(b, typ, sid, status, body)
    })
}

impl Shells {
    /// `data` is the bounded outbound data queue (shell output), `exited` tells the daemon
    /// about shells that ended by themselves.
    pub fn new(
        settings: ShellSettings,
        data: async_channel::Sender<Vec<u8>>,
        exited: async_channel::Sender<Report>,
    ) -> Self {
        let account = match pty::resolve_account(&settings.user) {
            Ok(a) => a,
            Err(e) => {
                log::warn!(
                    "cannot look up the shell user {:?} now: {e}; trying again at the first shell",
                    settings.user
                );
                None
            }
        };
        Self { settings, procs: BySid::default(), stopped_all: 0, reaping: Vec::new(), data, exited, account }
    }

    /// Keystrokes for a shell the device's table knows (`sid` is open); returns the frame
    /// telling the user that input was dropped, if it was.
    pub fn input(&mut self, sid: &str, bytes: &[u8]) -> Vec<Action> {
        let Some(s) = self.procs.get_mut(sid) else { return Vec::new() };
        s.bytes_in = s.bytes_in.saturating_add(bytes.len() as u64);
        if bytes.is_empty() {
            return Vec::new();
        }
        // Keystrokes go straight into the pty when nothing queued is ahead of them:
        // no hop through the writer task, so the echo comes back sooner.
        let mut rest = bytes;
        if s.input_queued.load(Ordering::Acquire) == 0 {
            let written = write_now(&s.master, rest);
            rest = &rest[written..];
            if rest.is_empty() {
                return Vec::new();
            }
        }
        // Never waited for here: the router serves every session, so a pty that
        // does not read must cost only its own session its input.
        s.input_queued.fetch_add(1, Ordering::AcqRel);
        match s.input.try_send(rest.to_vec()) {
            Ok(()) => {
                s.refusing = false;
                Vec::new()
            }
            Err(e) => {
                s.input_queued.fetch_sub(1, Ordering::AcqRel);
                // A closed queue: the writer task ended on a failed write, and the
                // reader reports the shell's end.
                if e.is_closed() || std::mem::replace(&mut s.refusing, true) {
                    return Vec::new();
                }
                log::warn!("session {sid}: shell input dropped: the terminal does not take input");
                frame(proto::SHELL, sid, Status::Error, ERR_INPUT_DROPPED.as_bytes())
                    .map(Action::Reply)
                    .into_iter()
                    .collect()
            }
        }
    }

    /// Resizes an open shell's terminal (`None`: the message gave no size).
    pub fn resize(&self, sid: &str, size: Option<TermSize>) {
        if let (Some(s), Some(size)) = (self.procs.get(sid), size) {
            if let Err(e) = s.shell.resize(size.height, size.width) {
                log::debug!("session {sid}: resize failed: {e}");
            }
        }
    }

    /// A `resize` or `pong` for a session without a shell: nothing goes back, the log says so.
    pub fn log_no_shell(sid: &str) {
        log::error!("{}: {sid}", Refusal::SessionNotFound.body(sid));
    }

    /// Refusals are logged on the device too: mender-cli 1.9 shows the user none of them.
    pub fn log_refusal(&self, sid: &str, user_id: &str, refusal: Refusal, table: &Table) {
        match refusal {
            Refusal::TooManyShells => log::warn!(
                "session {sid}: shell refused for user {user_id:?}: {} (at most {})",
                refusal.body(sid),
                table.capacity()
            ),
            Refusal::TooManyForUser => log::warn!(
                "session {sid}: shell refused for user {user_id:?}: {} ({} open, Sessions.MaxPerUser is {})",
                refusal.body(sid),
                table.count_for_user(user_id),
                self.settings.max_per_user.max(1)
            ),
            Refusal::AlreadyRunning => log::warn!("session {sid}: shell refused: shell is already running"),
            _ => log::warn!("session {sid}: shell refused: {}", refusal.body(sid)),
        }
    }

    /// Carries out one shell action of core's device (the frames it encodes itself); returns
    /// the `new` error for a shell that could not start.
    pub(crate) fn execute(
        &mut self,
        action: table::Action,
        device: &mut AgentDevice,
        now: Instant,
    ) -> Option<Vec<u8>> {
        match action {
            table::Action::SpawnShell { sid, size, serial } => {
                let size = size.unwrap_or(self.settings.size);
                match self.spawn(&sid, serial, size, now) {
                    Ok(()) => {
                        let user = device.shells().get(&sid).map_or("", |s| s.user.as_str());
                        log::info!("session {sid}: shell started for user {user:?}");
                        device.handle_shell_spawned(&sid, serial, true);
                    }
                    Err(e) => {
                        log::error!("session {sid}: failed to start shell: {e}");
                        device.handle_shell_spawned(&sid, serial, false);
                        let text = format!("failed to start shell: {e}");
                        return frame(proto::NEW, &sid, Status::Error, text.as_bytes());
                    }
                }
            }
            table::Action::StopShell { sid, why } => {
                match why {
                    StopReason::Expired => log::info!("session {sid}: expired"),
                    StopReason::HealthCheck => {
                        log::error!("session {sid}: health check failed, connection with the client lost")
                    }
                    StopReason::Orphaned => log::info!(
                        "session {sid}: websocket gone for {}, stopping the shell",
                        crate::ops::logging::Secs(self.settings.disconnect_grace)
                    ),
                    StopReason::Replaced => log::info!(
                        "session {sid}: not heard of since the websocket came back; stopping its shell for the user's new terminal"
                    ),
                    StopReason::All => self.stopped_all += 1,
                    _ => {}
                }
                self.stop_shell(&sid);
            }
            _ => {}
        }
        None
    }

    fn spawn(&mut self, sid: &str, serial: u64, size: TermSize, now: Instant) -> io::Result<()> {
        if self.account.is_none() {
            self.account = pty::resolve_account(&self.settings.user)?;
        }
        let spec = pty::ShellSpec {
            command: self.settings.command.clone().into(),
            args: self.settings.args.clone(),
            user: self.settings.user.clone(),
            rows: size.height,
            cols: size.width,
            env: Vec::new(),
            account: self.account.clone(),
        };
        let shell = pty::spawn_shell(&spec)?;
        let master = match shell.master.try_clone().and_then(|fd| Async::new(File::from(fd))) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                self.reap(shell);
                return Err(e);
            }
        };
        let (input, input_rx) = async_channel::bounded(INPUT_QUEUE);
        let bytes_out = Arc::new(AtomicU64::new(0));
        let reader = crate::os::runtime::spawn(pump_output(
            Arc::clone(&master),
            sid.to_owned(),
            serial,
            self.data.clone(),
            self.exited.clone(),
            Arc::clone(&bytes_out),
        ));
        let input_queued = Arc::new(AtomicUsize::new(0));
        let writer =
            crate::os::runtime::spawn(pump_input(Arc::clone(&master), input_rx, Arc::clone(&input_queued)));
        self.procs.insert(
            sid.to_owned(),
            Proc {
                started: now,
                shell,
                input,
                input_queued,
                refusing: false,
                master,
                bytes_in: 0,
                bytes_out,
                _reader: reader,
                _writer: writer,
            },
        );
        Ok(())
    }

    /// Stops a shell (SIGHUP now, SIGKILL after [`KILL_GRACE`]); the table has forgotten it.
    fn stop_shell(&mut self, sid: &str) {
        if let Some(s) = self.procs.remove(sid) {
            log::info!("session {sid}: stopping shell");
            // Dropping the tasks cancels them, so no "stop" frame follows.
            drop(s._reader);
            drop(s._writer);
            let _ = s.shell.hangup();
            self.reap(s.shell);
        }
    }

    fn reap(&mut self, mut shell: pty::Shell) {
        self.reaping.retain(|t| !t.is_finished());
        self.reaping.push(crate::os::runtime::spawn(async move {
            let deadline = Instant::now() + KILL_GRACE;
            let mut killed = false;
            loop {
                match shell.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => {}
                }
                if !killed && Instant::now() >= deadline {
                    let _ = shell.kill();
                    killed = true;
                }
                Timer::after(Duration::from_millis(20)).await;
            }
        }));
    }

    /// How many shells were stopped since the last call because every session had to go
    /// (websocket unauthorized, shutdown).
    pub fn take_stopped_all(&mut self) -> usize {
        std::mem::take(&mut self.stopped_all)
    }

    /// Waits until every stopped shell has been reaped.
    pub async fn reaped(&mut self) {
        for t in self.reaping.drain(..) {
            t.await;
        }
    }

    /// The sessions, for the status CLI (taken only when asked).
    pub fn info(&self, table: &Table) -> Vec<ShellInfo> {
        let mut v: Vec<ShellInfo> = table
            .iter()
            .filter_map(|s| {
                let p = self.procs.get(s.sid.as_str())?;
                Some(ShellInfo {
                    id: s.sid.to_string(),
                    user: s.user.to_string(),
                    pid: p.shell.pid,
                    started: p.started,
                    active: clock::to_std(s.active),
                    bytes_in: p.bytes_in,
                    bytes_out: p.bytes_out.load(Ordering::Relaxed),
                })
            })
            .collect();
        v.sort_by(|a, b| a.started.cmp(&b.started).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// The configured shell command (status dump).
    pub fn command(&self) -> &str {
        &self.settings.command
    }
}

/// Largest pty chunk per frame: the frame (header, sid, status prop, bin header) must stay
/// within [`MAX_FRAME_LEN`]. Bigger output frames were measured (32 KiB: +7% throughput within
/// noise, but the slow-reader peak went over 2 MiB with the queue's 16 frames), so they stay at
/// the size the device itself accepts.
fn chunk_len(sid: &str) -> usize {
    MAX_FRAME_LEN.saturating_sub(128 + sid.len()).max(256)
}

/// pty → outbound queue. Reads coalesce until the buffer is full or the pty has been quiet for
/// [`COALESCE_IDLE`]; `send().await` on the bounded queue is the backpressure.
async fn pump_output(
    master: Arc<Async<File>>,
    sid: String,
    serial: u64,
    data: async_channel::Sender<Vec<u8>>,
    exited: async_channel::Sender<Report>,
    bytes_out: Arc<AtomicU64>,
) {
    let chunk = chunk_len(&sid);
    let mut buf = vec![0u8; chunk];
    let mut end: Option<io::Error> = None;
    while end.is_none() {
        let mut len = match (&*master).read(&mut buf).await {
            Ok(0) => {
                end = Some(io::ErrorKind::UnexpectedEof.into());
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                end = Some(e);
                0
            }
        };
        while end.is_none() && len < chunk {
            let mut pty = &*master;
            let mut read = pty.read(&mut buf[len..]);
            // Output already in the pty is taken without a timer. Otherwise small output (an
            // echo, a prompt) goes out at once, and only bulk output waits briefly for more.
            let mut more = future::poll_once(&mut read).await;
            if more.is_none() && len >= BULK_OUTPUT {
                // Bulk output: let the other tasks run (the writer sends the previous frame
                // meanwhile, the shell refills the pty) and look again, before a timer. Arming
                // a timer per frame wakes the reactor thread per frame.
                for _ in 0..COALESCE_YIELDS {
                    future::yield_now().await;
                    more = future::poll_once(&mut read).await;
                    if more.is_some() {
                        break;
                    }
                }
                if more.is_none() {
                    more = async { Some(read.await) }
                        .or(async {
                            Timer::after(COALESCE_IDLE).await;
                            None
                        })
                        .await;
                }
            }
            match more {
                None => break,
                Some(Ok(0)) => end = Some(io::ErrorKind::UnexpectedEof.into()),
                Some(Ok(n)) => len += n,
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) => end = Some(e),
            }
        }
        if len > 0 {
            let Some(f) = frame(proto::SHELL, &sid, Status::Normal, &buf[..len]) else { break };
            // Counted before it leaves, so a status taken after the server saw it includes it.
            bytes_out.fetch_add(len as u64, Ordering::Relaxed);
            if data.send(f).await.is_err() {
                return;
            }
        }
    }
    // The reference reports the pty read error (EIO once the shell has exited).
    let text = match end {
        Some(e) if e.raw_os_error() == Some(5) => "read /dev/ptmx: input/output error".to_owned(),
        Some(e) => format!("read /dev/ptmx: {e}"),
        None => "read /dev/ptmx: EOF".to_owned(),
    };
    log::info!("session {sid}: shell ended ({text})");
    if let Some(f) = frame(proto::STOP, &sid, Status::Error, text.as_bytes()) {
        let _ = data.send(f).await;
    }
    // Unbounded: never waits.
    let _ = exited.try_send(Report::Exited(Exited { sid, serial }));
}

/// Writes what the pty takes without blocking; returns how many bytes that was (0 when it is
/// full or failed: the queued path then retries and reports the error).
fn write_now(master: &Async<File>, bytes: &[u8]) -> usize {
    use std::io::Write as _;
    let mut written = 0;
    while written < bytes.len() {
        match master.get_ref().write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

/// Queued session input → pty.
async fn pump_input(
    master: Arc<Async<File>>,
    input: async_channel::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) {
    while let Ok(bytes) = input.recv().await {
        let result = (&*master).write_all(&bytes).await;
        queued.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = result {
            log::debug!("pty write failed: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests;
