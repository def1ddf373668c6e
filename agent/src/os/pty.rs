//! Pseudo-terminals and shell processes, dropping privileges to the configured user.
//!
//! The shell is a session leader with the pty slave as its controlling terminal and as
//! stdin/stdout/stderr; the master stays with the daemon (non-blocking, close-on-exec).
//! Running as root, the shell gets the user's uid, primary gid and supplementary groups. Not running
//! as root, only the current user can be served: another configured `User` is refused with an
//! error (mender-connect 2.1.0 silently ran the shell as itself with the other user's `HOME`).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use rustix::fs::OFlags;
use rustix::process::{Gid, Pid, Signal, Uid};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

use super::users::{UserEntry, lookup_user, supplementary_groups};

/// `TERM` of spawned shells (reference: `DefaultTerminalString`).
pub const TERMINAL_STRING: &str = "xterm-256color";

/// What to start in a new pty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSpec {
    /// Absolute path of the shell.
    pub command: PathBuf,
    /// Arguments after `argv[0]` (the configured `ShellArguments`).
    pub args: Vec<String>,
    /// Name of the user the shell runs as.
    pub user: String,
    pub rows: u16,
    pub cols: u16,
    /// Extra environment, applied after `HOME`, `USER`, `LOGNAME`, `SHELL`, `TERM` and `PATH`.
    pub env: Vec<(String, String)>,
    /// `user`, looked up beforehand ([`resolve_account`]); `None` looks it up now.
    pub account: Option<Account>,
}

/// The shell user's passwd entry and supplementary groups. Looked up once, when the daemon
/// starts, as the reference does (`user.Lookup` in `Daemon.Run`): NSS may ask a network service
/// (LDAP) and wait as long as it likes, which the event loop must never do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The passwd entry.
    pub user: UserEntry,
    /// The supplementary groups, `None` if they could not be read (then read at spawn).
    pub groups: Option<Vec<u32>>,
}

/// Looks `name` up for [`ShellSpec::account`].
pub fn resolve_account(name: &str) -> io::Result<Option<Account>> {
    Ok(lookup_user(name)?.map(|user| {
        let groups = supplementary_groups(&user).ok();
        Account { user, groups }
    }))
}

/// A running shell. Dropping it kills the shell's process group and reaps the shell, so no zombie
/// is left behind; call [`Shell::hangup`] and wait first for a graceful end.
#[derive(Debug)]
pub struct Shell {
    /// The pty master: read the shell's output from it and write its input to it.
    pub master: OwnedFd,
    /// Process id of the shell, also its process group and session id.
    pub pid: u32,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Shell {
    /// Sets the terminal size (TIOCSWINSZ); the kernel sends SIGWINCH to the foreground group.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        rustix::termios::tcsetwinsize(&self.master, winsize(rows, cols))?;
        Ok(())
    }

    /// Sends SIGHUP to every process of the shell's session (what a terminal hangup does, plus
    /// the background jobs an interactive shell puts into process groups of their own).
    pub fn hangup(&self) -> io::Result<()> {
        self.signal_session(Signal::HUP)
    }

    /// Sends SIGKILL to every process of the shell's session.
    pub fn kill(&self) -> io::Result<()> {
        self.signal_session(Signal::KILL)
    }

    /// The exit status if the shell has ended (reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Blocks until the shell ends.
    #[cfg(test)] // the daemon polls with try_wait; tests block
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }

    fn signal_session(&self, sig: Signal) -> io::Result<()> {
        // Once the shell is reaped its pid may be reused (also as a new session id); leftovers
        // may remain, but signalling a recycled id could hit a stranger.
        if self.exited.is_some() {
            return Ok(());
        }
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid shell pid"));
        };
        match rustix::process::kill_process_group(pid, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => return Err(e.into()),
        }
        // Job control gives background jobs their own process groups within the session; there
        // is no kill-by-session call, so find the members in /proc.
        for member in session_members(self.pid) {
            if let Some(p) = i32::try_from(member).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(p, sig);
            }
        }
        Ok(())
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Processes whose session id is `sid` (from /proc; empty if /proc is unavailable).
fn session_members(sid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // Fields after the command name (which may contain spaces and parentheses):
            // state ppid pgrp session ...
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().is_some_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(3)?.parse::<u32>().ok())
                    == Some(sid)
            })
        })
        .collect()
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

/// PATH for the shell before its profile runs (the one `login` sets on Debian).
fn default_path(uid: u32) -> &'static str {
    if uid == 0 {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    } else {
        "/usr/local/bin:/usr/bin:/bin"
    }
}

/// Opens a pty pair and starts the shell on it.
pub fn spawn_shell(spec: &ShellSpec) -> io::Result<Shell> {
    let user = match &spec.account {
        Some(account) => account.user.clone(),
        None => lookup_user(&spec.user)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("unknown user {}", spec.user)))?,
    };
    let euid = rustix::process::geteuid().as_raw();
    // Root, or an unprivileged service user given CAP_SETUID, CAP_SETGID and CAP_KILL (systemd
    // AmbientCapabilities=, setpriv --ambient-caps), can run shells as anyone. CAP_KILL because
    // without it the shell, once another user's, could not be stopped (hangup, expiry, limits).
    let missing = missing_switch_caps();
    let switch_to = if missing.is_empty() {
        let known = spec.account.as_ref().and_then(|a| a.groups.clone());
        let groups: Vec<Gid> = match known {
            Some(g) => g,
            None => supplementary_groups(&user)?,
        }
        .into_iter()
        .map(Gid::from_raw)
        .collect();
        Some((Uid::from_raw(user.uid), Gid::from_raw(user.gid), groups))
    } else if user.uid == euid {
        None
    } else {
        let who = if euid == 0 { "root".to_owned() } else { format!("uid {euid}, not root,") };
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot start a shell as user {} (uid {}): mender-connect runs as {who} and lacks {}",
                spec.user,
                user.uid,
                missing.join(", ")
            ),
        ));
    };
    // A non-root agent keeps its capabilities across setuid (only a change away from uid 0
    // clears them) and ambient ones survive exec: the user's shell must not inherit them.
    let drop_caps = euid != 0 && user.uid != 0;

    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave_name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        slave_name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::termios::tcsetwinsize(&master, winsize(spec.rows, spec.cols))?;

    let home = if user.home.is_dir() { user.home.as_path() } else { Path::new("/") };
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .env_clear()
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        // The configured shell rather than the passwd one: service users often have nologin there,
        // which would break programs that start $SHELL.
        .env("SHELL", &spec.command)
        .env("TERM", TERMINAL_STRING)
        .env("PATH", default_path(user.uid))
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(home)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));

    // Runs in the forked child before exec and only makes raw system calls (no allocation, no
    // locks): setsid, TIOCSCTTY, setgroups/setgid/setuid on the single remaining thread, signal
    // dispositions, close_range. std's own uid/gid setters cannot be used because std would then clear the
    // supplementary groups after we set them.
    let child_setup = move || -> io::Result<()> {
        rustix::process::setsid()?;
        crate::os::runtime::restore_nofile_limit();
        // SAFETY: fd 0 is the pty slave, installed by std before this closure runs.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        rustix::process::ioctl_tiocsctty(stdin)?;
        if let Some((uid, gid, groups)) = &switch_to {
            rustix::thread::set_thread_groups(groups)?;
            rustix::thread::set_thread_gid(*gid)?;
            rustix::thread::set_thread_uid(*uid)?;
        }
        if drop_caps {
            // SAFETY: plain system calls with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
            // EINVAL: a kernel without ambient capabilities (< 4.3) has none to clear.
            if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(io::Error::last_os_error());
            }
            rustix::thread::set_capabilities(
                None,
                rustix::thread::CapabilitySets {
                    effective: rustix::thread::CapabilitySet::empty(),
                    permitted: rustix::thread::CapabilitySet::empty(),
                    inheritable: rustix::thread::CapabilitySet::empty(),
                },
            )?;
        }
        // Ignored signals survive exec. An agent started under `nohup`, or with `&` from a
        // script (which ignores SIGINT and SIGQUIT), would otherwise give the user a shell that a
        // hangup does not end and whose Ctrl-C does nothing. std has already cleared the signal
        // mask and SIGPIPE; handlers are reset by exec itself.
        for sig in 1..=libc::SIGSYS {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // SAFETY: signal(2) is async-signal-safe and takes plain integers here.
                unsafe { libc::signal(sig, libc::SIG_DFL) };
            }
        }
        // Leaked descriptors (sockets of other sessions) must not reach the user's shell.
        // CLOEXEC instead of closing keeps std's exec-error pipe working; old kernels without
        // close_range rely on Rust opening everything close-on-exec.
        // SAFETY: a plain system call with integer arguments.
        let _ = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
        Ok(())
    };
    // SAFETY: `child_setup` is async-signal-safe (see above).
    unsafe {
        cmd.pre_exec(child_setup);
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(e.kind(), format!("cannot start shell {}: {e}", spec.command.display()))
    })?;
    // The parent's copies of the slave go with `cmd`; the master then sees EOF/EIO when the
    // shell's session ends instead of hanging.
    drop(cmd);
    let flags = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
    let pid = child.id();
    Ok(Shell { master, pid, child, exited: None })
}

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// The capabilities this process lacks to run shells as another user and stop them:
/// CAP_SETUID, CAP_SETGID, CAP_KILL in the effective set (empty: it may).
pub fn missing_switch_caps() -> Vec<&'static str> {
    use rustix::thread::CapabilitySet;
    let Ok(caps) = rustix::thread::capabilities(None) else {
        // No capability query (seccomp, exotic kernels): only root is trusted to switch.
        return if rustix::process::geteuid().is_root() {
            Vec::new()
        } else {
            vec!["CAP_SETUID", "CAP_SETGID", "CAP_KILL"]
        };
    };
    [
        (CapabilitySet::SETUID, "CAP_SETUID"),
        (CapabilitySet::SETGID, "CAP_SETGID"),
        (CapabilitySet::KILL, "CAP_KILL"),
    ]
    .into_iter()
    .filter(|(c, _)| !caps.effective.contains(*c))
    .map(|(_, name)| name)
    .collect()
}

impl AsFd for Shell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

#[cfg(test)]
mod tests;
