//! Bounded polling. Timeouts here are failure bounds only: they are generous because the test machine
//! is shared and loaded, and no test asserts on how long anything took.

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
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        std::thread::sleep(interval);
    }
}
