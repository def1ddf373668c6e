//! The local status socket, to watch and steer the running daemon: `mender-connect status` and
//! `mender-connect sessions kill <id>`, over a root-only Unix socket.
//!
//! ```text
//!  mender-connect status ──client──► control socket ──server task──► Ask ──► daemon event loop
//!        ▲                           (0600, dir 0700)                         │ snapshot taken
//!        └────────── Response (postcard, length-prefixed, versioned) ◄────────┘ only when asked
//! ```
//!
//! - [`protocol`]: the wire types and framing (also the `--json` shape);
//! - [`server`]: the listener in the daemon (the daemon builds the answer: `daemon::snapshot`);
//! - `text`: times, durations and rates as people read them (here and in the SIGUSR1 dump);
//! - `client`: the command-line side and its text output.

pub(crate) mod client;
pub mod protocol;
pub mod server;
pub(crate) mod text;
