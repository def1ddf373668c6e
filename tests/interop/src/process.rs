//! Child processes that are always stopped and reaped: each runs in its own process group (so a
//! shell the agent spawned goes with it), its output goes to a log file registered with the
//! [`TestEnv`], and dropping it sends SIGTERM to the group, then SIGKILL if it lingers.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::IoContext;
use crate::{Error, TestEnv};

/// How long a stopped process gets to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A running child process owned by a test.
pub struct ManagedChild {
    name: String,
    child: Child,
    log: PathBuf,
    reaped: Option<ExitStatus>,
}

/// Receives the first stdout line of a child (`None` if stdout closed first).
type FirstLine = std::sync::mpsc::Receiver<Option<String>>;

/// Where a child's standard output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stdout {
    /// Into the log file, with stderr.
    Log,
    /// The first line is returned by [`ManagedChild::spawn_reading_first_line`]; the rest goes to
    /// the log.
    FirstLine,
}

impl ManagedChild {
    /// Spawns `cmd` as `name` with stdin closed and stdout and stderr in its log file.
    pub fn spawn(env: &TestEnv, name: &str, cmd: Command) -> Result<Self, Error> {
        let (child, _) = Self::spawn_with(env, name, cmd, Stdout::Log)?;
        Ok(child)
    }

    /// Spawns `cmd` and waits (up to `timeout`) for the first line of its standard output, which
    /// it returns without the newline. The rest of stdout is copied to the log.
    pub fn spawn_reading_first_line(
        env: &TestEnv,
        name: &str,
        cmd: Command,
        timeout: Duration,
    ) -> Result<(Self, String), Error> {
        let (mut child, rx) = Self::spawn_with(env, name, cmd, Stdout::FirstLine)?;
        let Some(rx) = rx else {
            return Err(child.failure("has no stdout pipe"));
        };
        match rx.recv_timeout(timeout) {
            Ok(Some(line)) => Ok((child, line)),
            Ok(None) => {
                let status = child.wait_timeout(Duration::from_secs(5)).ok().flatten();
                Err(child.failure(&format!("closed stdout before printing a line (exit: {status:?})")))
            }
            Err(_) => {
                Err(Error::Timeout { what: format!("the first stdout line of {name}"), after: timeout })
            }
        }
    }

    /// Spawns `cmd` with the given standard streams for stdin/stdout (e.g. a pty); stderr goes to
    /// the log.
    pub fn spawn_on(
        env: &TestEnv,
        name: &str,
        mut cmd: Command,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Self, Error> {
        let (log, file) = env.log_file(name)?;
        writeln_cmd(&file, &cmd);
        cmd.stdin(stdin).stdout(stdout).stderr(file).process_group(0);
        let child = cmd.spawn().context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(ManagedChild { name: name.to_owned(), child, log, reaped: None })
    }

    fn spawn_with(
        env: &TestEnv,
        name: &str,
        mut cmd: Command,
        stdout: Stdout,
    ) -> Result<(Self, Option<FirstLine>), Error> {
        let (log, file) = env.log_file(name)?;
        writeln_cmd(&file, &cmd);
        let stderr = file.try_clone().context(|| format!("duplicating the log file of {name}"))?;
        cmd.stdin(Stdio::null()).stderr(stderr).process_group(0);
        let log_copy = match stdout {
            Stdout::Log => {
                cmd.stdout(file);
                None
            }
            Stdout::FirstLine => {
                cmd.stdout(Stdio::piped());
                Some(file)
            }
        };
        let mut child = cmd.spawn().context(|| format!("starting {name} ({cmd:?})"))?;
        let mut rx = None;
        if let (Some(mut log_file), Some(pipe)) = (log_copy, child.stdout.take()) {
            let (tx, receiver) = std::sync::mpsc::channel();
            rx = Some(receiver);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut first = String::new();
                let got = matches!(reader.read_line(&mut first), Ok(n) if n > 0);
                let _ = writeln!(log_file, "[stdout] {}", first.trim_end());
                let _ = tx.send(got.then(|| first.trim_end().to_owned()));
                let _ = std::io::copy(&mut reader, &mut log_file);
            });
        }
        Ok((ManagedChild { name: name.to_owned(), child, log, reaped: None }, rx))
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log's content so far (lossy UTF-8).
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        if let Some(status) = self.reaped {
            return Ok(Some(status));
        }
        let status = self.child.try_wait().context(|| format!("checking whether {} exited", self.name))?;
        self.reaped = status;
        Ok(status)
    }

    /// Fails if the process has exited (a daemon that should be running).
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => Err(self.failure(&format!("exited unexpectedly with {status}"))),
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for the process to exit and returns its status, or a timeout error.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        self.wait_timeout(timeout)?
            .ok_or_else(|| Error::Timeout { what: format!("{} to exit", self.name), after: timeout })
    }

    /// An [`Error::Process`] about this child.
    pub fn failure(&self, detail: &str) -> Error {
        Error::Process { name: self.name.clone(), detail: detail.to_owned(), log: self.log.clone() }
    }

    /// Sends `signal` to the child's process group.
    pub fn signal_group(&self, signal: Signal) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            // The group may already be gone; nothing to do then.
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Stops the child (SIGTERM to its group, SIGKILL after a grace period) and reaps it.
    pub fn stop(&mut self) {
        if self.reaped.is_none() {
            self.signal_group(Signal::TERM);
            if !matches!(self.wait_timeout(TERM_GRACE), Ok(Some(_))) {
                self.signal_group(Signal::KILL);
                let _ = self.child.kill();
                self.reaped = self.child.wait().ok();
            }
        }
        // Children of the group that outlived the leader (e.g. a shell) go too.
        self.signal_group(Signal::KILL);
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.stop();
    }
}

fn writeln_cmd(mut file: &std::fs::File, cmd: &Command) {
    let _ = writeln!(file, "[harness] starting {cmd:?}");
}
