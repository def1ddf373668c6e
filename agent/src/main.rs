//! `mender-connect`: the device daemon (being written; see issue 3).
//!
//! Module ownership while the agent is built in parallel:
//! - `cli`, `config`, `auth`, `pty`, `logging`: command line, configuration, D-Bus auth, pty/shell spawning.
//! - `daemon`, `connection`, `router`, `shell`: websocket connection, message routing, shell sessions.
mod auth;
mod chroot;
mod cli;
mod config;
mod connection;
mod daemon;
mod features;
mod filetransfer;
mod logging;
mod menderclient;
mod portforward;
mod pty;
mod router;
mod shell;

fn main() {
    std::process::exit(cli::main());
}
