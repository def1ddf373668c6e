//! A real pseudo-terminal for driving interactive programs (mender-cli `terminal` needs a tty to go
//! into raw mode and read the window size). The child gets the pty's slave side as stdin and
//! stdout; a reader thread collects everything it writes to the master side.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

use crate::error::IoContext;
use crate::process::ManagedChild;
use crate::{Error, TestEnv};

/// Window size the driven program sees.
pub const COLUMNS: u16 = 120;
/// Window size the driven program sees.
pub const ROWS: u16 = 40;

#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    closed: bool,
}

/// A program running on a pty.
pub struct PtySession {
    child: ManagedChild,
    master: File,
    output: Arc<(Mutex<Output>, Condvar)>,
}

fn open_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).map_err(|e| Error::io("opening a pty", e.into()))?;
    rustix::pty::grantpt(&master).map_err(|e| Error::io("grantpt", e.into()))?;
    rustix::pty::unlockpt(&master).map_err(|e| Error::io("unlockpt", e.into()))?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)
        .map_err(|e| Error::io("opening the pty's slave side", e.into()))?;
    let size = Winsize { ws_row: ROWS, ws_col: COLUMNS, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(&slave, size).map_err(|e| Error::io("setting the pty size", e.into()))?;
    Ok((master, slave))
}

impl PtySession {
    /// Starts `cmd` (as `name`) with a pty for stdin and stdout; stderr goes to the log.
    pub fn spawn(env: &TestEnv, name: &str, cmd: Command) -> Result<Self, Error> {
        let (master, slave) = open_pair()?;
        let slave_out = slave.try_clone().context(|| "duplicating the pty slave".to_owned())?;
        let child = ManagedChild::spawn_on(env, name, cmd, Stdio::from(slave), Stdio::from(slave_out))?;
        // Our copies of the slave are gone (moved into the Command and closed after spawn), so a
        // read on the master ends with EIO once the child and its descendants close the slave.
        let master = File::from(master);
        let mut reader = master.try_clone().context(|| "duplicating the pty master".to_owned())?;
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*sink;
                let mut out = lock.lock().unwrap_or_else(|p| p.into_inner());
                if n == 0 {
                    out.closed = true;
                    cv.notify_all();
                    return;
                }
                out.bytes.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        Ok(PtySession { child, master, output })
    }

    /// Types `bytes` into the terminal.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.master.write_all(bytes).context(|| "writing to the pty".to_owned())
    }

    /// Everything the program wrote so far (lossy UTF-8).
    pub fn output(&self) -> String {
        let (lock, _) = &*self.output;
        let out = lock.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&out.bytes).into_owned()
    }

    /// Waits until the output contains `needle` (searching from byte offset `from`), and returns
    /// the offset just after the match.
    pub fn expect_from(&self, from: usize, needle: &str, timeout: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.output;
        let mut out = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let haystack = out.bytes.get(from..).unwrap_or(&[]);
            if let Some(pos) = find(haystack, needle.as_bytes()) {
                return Ok(from + pos + needle.len());
            }
            let now = Instant::now();
            if out.closed || now >= deadline {
                let seen = String::from_utf8_lossy(&out.bytes).into_owned();
                return Err(Error::Timeout {
                    what: format!(
                        "{needle:?} on the terminal (terminal {}; output so far: {seen:?})",
                        if out.closed { "closed" } else { "open" }
                    ),
                    after: timeout,
                });
            }
            out = cv
                .wait_timeout(out, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// The process.
    pub fn child(&mut self) -> &mut ManagedChild {
        &mut self.child
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
