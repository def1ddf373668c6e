//! Local control of the running daemon: `mender-connect status` and
//! `mender-connect sessions kill <id>`, over a root-only Unix socket.
//!
//! ```text
//!  mender-connect status ──client──► control socket ──server task──► Ask ──► daemon event loop
//!        ▲                           (0600, dir 0700)                         │ snapshot taken
//!        └────────── Response (postcard, length-prefixed, versioned) ◄────────┘ only when asked
//! ```
//!
//! - [`protocol`]: the wire types and framing (also the `--json` shape);
//! - [`server`]: the listener in the daemon;
//! - [`snapshot`]: building a [`protocol::Status`] from the daemon's state, the SIGUSR1 dump;
//! - [`client`]: the command-line side and its text output.

pub mod client;
pub mod protocol;
pub mod server;
pub mod snapshot;

/// Default path of the control socket (`ControlSocket` in the configuration).
pub const DEFAULT_SOCKET: &str = "/run/mender-connect/control.sock";
