//! `mender-connect`: the device daemon, as a library so that fuzz targets, benchmarks and
//! integration tests can drive the same router and handlers the binary runs.
//!
//! ```text
//!  cli ──► config ──► daemon ──► connection (websocket, backoff, keepalive)
//!                       │            │
//!                       │            ▼
//!                       │         router ──► shell │ filetransfer │ portforward │ menderclient
//!                       ▼
//!                     auth (D-Bus token + URL)          pty, chroot: OS helpers
//! ```
pub mod auth;
pub mod chroot;
pub mod cli;
pub mod config;
pub mod connection;
pub mod control;
pub mod daemon;
pub mod features;
pub mod filetransfer;
pub mod logging;
pub mod menderclient;
pub mod outframe;
pub mod portforward;
pub mod pty;
pub mod router;
pub mod runtime;
pub mod shell;
#[cfg(feature = "standalone")] pub mod standalone;
