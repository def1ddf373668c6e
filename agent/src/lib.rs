//! `mender-connect`: the device daemon, as a library so that fuzz targets, benchmarks and
//! integration tests can drive the same router and handlers the binary runs.
//!
//! Layers, each importing only those below it:
//!
//! ```text
//!  cli ──► daemon (event loop, status snapshots)
//!            │
//!            ├──► proto: router ──► shell │ filetransfer │ portforward │ menderclient
//!            ├──► link:  connection (websocket, backoff, keepalive), auth (D-Bus), standalone
//!            ├──► ops:   status socket, logging
//!            ├──► config (plain data, validated)
//!            └──► os:    users, pty, chroot, runtime
//! ```
pub mod cli;
pub mod config;
pub(crate) mod daemon;
pub mod link;
pub mod ops;
pub(crate) mod os;
pub mod proto;
