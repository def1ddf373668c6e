//! What the daemon needs from the operating system, with no knowledge of the protocol or the
//! configuration: user and group lookups, pseudo-terminals, path confinement, the executor.

pub mod chroot;
pub mod clock;
pub mod pty;
pub mod runtime;
pub mod users;
