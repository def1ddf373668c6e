//! Mender-client triggers (`proto` 4): `check-update` and `send-inventory` from the server make
//! the device's Mender client act now instead of at its next poll.
//!
//! Like mender-connect 2.2 (`session/menderclient.go`; 2.1.0 ran `mender <cmd>` from `PATH`), the
//! first existing binary of `/usr/bin/mender-update` (client 4.x) and `/usr/bin/mender`
//! (client 3.x) is run with the command as its argument; the answer has `status` 1, or 2 with the
//! error text as body. The command runs in its own task with a time limit, so a hanging client
//! never blocks the daemon.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mender_connect_core::Frame;
use mender_connect_core::menderclient::{self as mc, MenderClientMessage};

use crate::proto::router::SessionHandler;

/// How long the client command may run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Which client binaries are tried, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Candidate binaries; the first that exists is run.
    pub candidates: Vec<PathBuf>,
    /// Time limit of one command.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            candidates: vec![PathBuf::from("/usr/bin/mender-update"), PathBuf::from("/usr/bin/mender")],
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

fn encode(request: &[u8], error: Option<&str>) -> Option<Vec<u8>> {
    let frame = Frame::decode(request).ok()?;
    crate::proto::outframe::encode(&"mender-client reply", |b| mc::encode_reply(b, &frame, error))
}

/// Why a client command failed; `Display` is the reference's text, sent in the reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RunError {
    /// None of the candidate binaries exists.
    #[error("Cannot find Mender client binary, tried [{}]", tried.join(" "))]
    NotFound { tried: Vec<String> },
    /// The binary could not be started (Go's `fork/exec` text).
    #[error("fork/exec {}: {reason}", binary.display())]
    Spawn { binary: PathBuf, reason: String },
    /// Its state could not be read.
    #[error("{0}")]
    Wait(String),
    /// It ran longer than the settings allow.
    #[error("{} {command}: timed out after {timeout:?}", binary.display())]
    Timeout { binary: PathBuf, command: String, timeout: Duration },
    /// It failed (Go's `*exec.ExitError` texts from here on).
    #[error("exit status {0}")]
    Exit(i32),
    #[error("signal: {0}")]
    Signal(i32),
    #[error("exit status unknown")]
    Unknown,
}

/// Runs `command` with the first existing candidate.
pub(crate) async fn run(settings: &Settings, command: &str) -> Result<(), RunError> {
    let Some(binary) = settings.candidates.iter().find(|p| p.exists()) else {
        let tried = settings.candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(RunError::NotFound { tried });
    };
    log::info!("mender-client: running {} {command}", binary.display());
    let child = std::process::Command::new(binary)
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| RunError::Spawn { binary: binary.clone(), reason: go_io_text(&e) })?;
    let mut child = Running(Some(child));
    let deadline = Instant::now() + settings.timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| RunError::Wait(go_io_text(&e)))? {
            break status;
        }
        if Instant::now() >= deadline {
            let (binary, command) = (binary.clone(), command.to_owned());
            return Err(RunError::Timeout { binary, command, timeout: settings.timeout });
        }
        smol::Timer::after(POLL).await;
    };
    match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        _ if status.success() => Ok(()),
        (Some(c), _) => Err(RunError::Exit(c)),
        (None, Some(sig)) => Err(RunError::Signal(sig)),
        _ => Err(RunError::Unknown),
    }
}

/// How often a running client command is checked for its end. Polled like the shells' reaping
/// (`shell.rs`) rather than through async-process, whose reaper and driver would be linked for
/// this one caller; the commands take seconds, so the reply's extra delay does not matter.
const POLL: Duration = Duration::from_millis(50);

/// A started client command; killed and reaped if it is dropped while running (timeout, or the
/// daemon ending).
struct Running(Option<std::process::Child>);

impl Running {
    /// The exit status once it ended (then it is reaped). After an error the child is let go
    /// unkilled: `waitpid` failing means it is no longer ours to wait for, so its pid may be reused.
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        let Some(child) = &mut self.0 else { return Ok(None) };
        let status = child.try_wait();
        if !matches!(status, Ok(None)) {
            self.0 = None;
        }
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            // SIGKILL ends it at once; reaping on a task keeps a child stuck in the kernel from
            // holding up the executor.
            crate::os::runtime::spawn(async move {
                for _ in 0..600 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return;
                    }
                    smol::Timer::after(POLL).await;
                }
            })
            .detach();
        }
    }
}

fn go_io_text(e: &std::io::Error) -> String {
    e.raw_os_error().map_or_else(
        || e.to_string(),
        |n| crate::os::chroot::errno_text(rustix::io::Errno::from_raw_os_error(n)),
    )
}

/// Requests waiting for one command beyond the first. The server sends one per click in the UI;
/// this bounds what a peer flooding requests makes the daemon hold.
pub const MAX_WAITING: usize = 64;

/// Who asked for a running command: the request (its reply copies proto, type and sid) and
/// where the reply goes.
struct Waiter {
    request: Vec<u8>,
    out: async_channel::Sender<Vec<u8>>,
}

/// The client commands running now, shared by every session's handler. A request for a command
/// that runs already joins it and gets its result: at most one client process per command (25
/// `check-update` requests used to start 25 processes at once). A vector, not a map: there are
/// two commands.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<Vec<Joined>>>);

/// A command running, with the requests that wait for its result.
type Joined = (&'static str, Vec<Waiter>);

impl InFlight {
    fn waiters(&self) -> std::sync::MutexGuard<'_, Vec<Joined>> {
        // A panic elsewhere while holding the lock leaves the map consistent (pushes, removes).
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    /// Client processes running now.
    pub fn running(&self) -> usize {
        self.waiters().len()
    }
}

/// The mender-client handler of a session.
pub struct MenderClient {
    settings: Arc<Settings>,
    out: async_channel::Sender<Vec<u8>>,
    in_flight: InFlight,
}

impl MenderClient {
    #[cfg(test)]
    /// A handler replying through `out` once the command finished, coalescing only its own
    /// requests.
    pub fn new(settings: Arc<Settings>, out: async_channel::Sender<Vec<u8>>) -> Self {
        Self::sharing(settings, out, InFlight::default())
    }

    /// A handler whose commands join those of every handler sharing `in_flight`.
    pub fn sharing(
        settings: Arc<Settings>,
        out: async_channel::Sender<Vec<u8>>,
        in_flight: InFlight,
    ) -> Self {
        Self { settings, out, in_flight }
    }
}

impl SessionHandler for MenderClient {
    fn serve(&mut self, _sid: &str, frame: &Frame<'_>, out: &mut Vec<Vec<u8>>) {
        let Some(request) =
            crate::proto::outframe::encode(&"mender-client request copy", |b| frame.encode(b))
        else {
            return;
        };
        let command = match MenderClientMessage::from_frame(frame) {
            Ok(m) => m.command(),
            Err(_) => None,
        };
        let Some(command) = command else {
            out.extend(encode(&request, Some(mc::UNKNOWN_TYPE_ERROR)));
            return;
        };
        let waiter = Waiter { request, out: self.out.clone() };
        {
            let mut running = self.in_flight.waiters();
            if let Some((_, waiting)) = running.iter_mut().find(|(c, _)| *c == command) {
                if waiting.len() > MAX_WAITING {
                    let text = format!("too many requests waiting for {command} (at most {MAX_WAITING})");
                    log::warn!("mender-client: {text}");
                    out.extend(encode(&waiter.request, Some(&text)));
                } else {
                    log::info!("mender-client: {command} is running; this request gets its result");
                    waiting.push(waiter);
                }
                return;
            }
            running.push((command, vec![waiter]));
        }
        let (settings, in_flight) = (Arc::clone(&self.settings), self.in_flight.clone());
        // Bounded by the settings' timeout; the replies go out whenever it is done.
        crate::os::runtime::spawn(async move {
            let result = run(&settings, command).await.map_err(|e| e.to_string());
            if let Err(e) = &result {
                log::error!("mender-client {command} failed: {e}");
            }
            let waiters = {
                let mut running = in_flight.waiters();
                running.iter().position(|(c, _)| *c == command).map(|i| running.swap_remove(i).1)
            }
            .unwrap_or_default();
            for w in waiters {
                if let Some(reply) = encode(&w.request, result.as_ref().err().map(String::as_str)) {
                    let _ = w.out.send(reply).await;
                }
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests;
