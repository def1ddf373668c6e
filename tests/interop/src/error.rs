//! The harness's error type: every failure names what the harness was doing.

use std::path::PathBuf;
use std::time::Duration;

/// A failure of the harness or of a peer it drives.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A peer program is not installed. The test command installs it; a missing one is a setup bug.
    #[error(
        "required peer program `{program}` not found (install the Debian package `{package}`: \
         apt-get install {package}; tests/apt-packages.txt lists it)"
    )]
    PeerMissing {
        /// The program looked for.
        program: String,
        /// The Debian package that ships it.
        package: String,
    },
    /// Building a workspace binary failed.
    #[error("building workspace binary `{binary}` failed: {detail}")]
    Build {
        /// The binary.
        binary: String,
        /// Cargo's output or the reason.
        detail: String,
    },
    /// A condition was not reached within its bound.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        after: Duration,
    },
    /// A child process ended or failed unexpectedly.
    #[error("process `{name}` {detail} (log: {})", log.display())]
    Process {
        /// The process's name in the test.
        name: String,
        /// What happened.
        detail: String,
        /// Its log file.
        log: PathBuf,
    },
    /// An HTTP request to the mock server failed or got an unexpected answer.
    #[error("HTTP {method} {url}: {detail}")]
    Http {
        /// Method.
        method: String,
        /// URL.
        url: String,
        /// Status and body, or the transport error.
        detail: String,
    },
    /// A D-Bus call failed.
    #[error("D-Bus {what}: {source}")]
    DBus {
        /// The call.
        what: String,
        /// The error.
        #[source]
        source: dbus::Error,
    },
    /// An end-to-end check failed: what came out is not what went in.
    #[error("check failed: {0}")]
    Check(String),
    /// A peer answered something the harness cannot use.
    #[error("unexpected answer from {peer}: {detail}")]
    Protocol {
        /// Which peer.
        peer: String,
        /// What was wrong.
        detail: String,
    },
}

/// Tests return `Result<(), Error>` and libtest prints the error with `Debug`: show the readable
/// message (which already includes the cause) rather than the enum's structure.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl Error {
    /// Wraps an I/O error with what the harness was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// A protocol error from `peer`.
    pub fn protocol(peer: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Protocol { peer: peer.into(), detail: detail.into() }
    }
}

/// Adds context to I/O results.
pub trait IoContext<T> {
    /// Maps the error into [`Error::Io`] with `context`.
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|source| Error::io(context(), source))
    }
}
