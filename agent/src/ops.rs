//! What the device's operator sees and runs locally: the status socket ([`status`]; not the
//! protocol's control messages, which are core's `control`) and the log (`logging`).

pub(crate) mod logging;
pub mod status;

/// The version a user matches to a release: the crate version plus the git commit it was built
/// from, or the packager's `MENDER_CONNECT_VERSION` (build.rs).
pub const VERSION: &str = env!("MENDER_CONNECT_FULL_VERSION");
