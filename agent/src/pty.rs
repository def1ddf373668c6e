//! Pseudo-terminals and shell processes (rustix), dropping privileges to the configured user.
//!
//! Contract for the rest of the agent: `spawn_shell(&ShellSpec) -> io::Result<Shell>` where
//! `ShellSpec { command, args, user, rows, cols, env }` and `Shell { master: OwnedFd (non-blocking),
//! pid }` with `resize(rows, cols)`, `hangup()` (SIGHUP to the process group), `kill()`,
//! `try_wait()`; the shell is a session leader with the pty as controlling terminal.
