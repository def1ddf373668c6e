//! Bounded polling. Timeouts here are failure bounds only: they are generous because the test machine
//! is shared and loaded, and no test asserts on how long anything took.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::Error;

/// Default bound for a peer to reach a state (authenticate, connect, answer).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `probe` every `interval` until it yields `Some`, or fails with [`Error::Timeout`] naming
/// `what` after `timeout`. A probe error ends the wait at once.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, Error>,
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { what: what.to_owned(), after: timeout });
        }
        std::thread::sleep(interval);
    }
}

/// Waits (bounded) for an uploaded file to appear after the server's 201: the Go reference acks
/// the final chunk, and so lets the server answer, before it renames the upload into place.
pub fn for_upload(path: &Path) -> Result<(), Error> {
    until(
        &format!("{} to appear after the 201", path.display()),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || Ok(path.exists().then_some(())),
    )
}
