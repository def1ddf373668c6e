//! Harness for the interop tests: the real Debian Mender peers (mender-client 3.4.0, the Go
//! mender-connect 2.1.0, mender-cli 1.9.0; and in a Debian trixie root, see [`trixie`], the C++
//! mender-client 5.0.0 and the Go mender-connect 2.3.0) against the workspace's mock Mender
//! Server, each test on its own private `dbus-daemon`, with the agent under test (Go or our Rust
//! `mender-connect`) as a parameter.
//!
//! Every process a test starts is a [`process::ManagedChild`]: its own process group, output in a
//! log file under the test's temporary directory, stopped and reaped on drop. A [`TestEnv`] that
//! is dropped before [`TestEnv::pass`] was called prints all logs (the test failed).
//!
//! Needs root (the Mender peers' device files live in system paths: see [`device_files`]).
//! Workspace binaries are built on first use; see [`binaries`].

pub mod agent;
pub mod auth_bus;
pub mod binaries;
pub mod bus;
pub mod cli;
pub mod client5;
pub mod device_auth;
pub mod device_files;
pub mod deviceconnect;
pub mod env;
pub mod error;
pub mod http;
pub mod jwt;
pub mod mender_client;
pub mod mock;
pub mod net;
pub mod operator;
pub mod preauth;
pub mod process;
pub mod pty;
pub mod scenarios;
pub mod testbed;
pub mod trixie;
pub mod wait;

pub use env::TestEnv;
pub use error::Error;
