//! What a credentials source (the auth service on D-Bus, or standalone mode) hands the daemon.

/// What the daemon needs to reach the server: the device JWT and the base URL (usually the
/// auth service's local proxy). An empty token means "not authorized (yet)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub token: String,
    pub server_url: String,
}

impl Credentials {
    /// True when both a token and a server URL are present.
    pub fn is_authorized(&self) -> bool {
        !self.token.is_empty() && !self.server_url.is_empty()
    }
}

/// What a credentials source tells the daemon, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The current credentials (empty: the device is not authorized).
    Credentials(Credentials),
    /// Whatever the auth service handed out is void: it left the bus (or the bus went away), and
    /// with it the local proxy whose port another local user could now bind. Nothing may be dialled
    /// until a new owner of the name hands out a token.
    // Only the D-Bus source revokes: standalone mode's tokens are its own.
    #[cfg_attr(not(feature = "dbus-auth"), allow(dead_code))]
    Revoked,
}

impl From<Credentials> for Update {
    fn from(c: Credentials) -> Self {
        Update::Credentials(c)
    }
}

/// Where credentials come from and how to ask for fresh ones.
pub struct Auth {
    /// Current credentials first, then one item per change.
    pub credentials: async_channel::Receiver<Update>,
    /// Asks the auth service for a new token (after HTTP 401).
    pub refresh: Box<dyn Fn()>,
    /// Asks the auth service for the current token again, answered on `credentials` even if
    /// unchanged; `None` where the URL cannot be taken over locally (standalone mode). The daemon
    /// waits for that answer before it redials, as the reference re-reads the token before every
    /// reconnect: a local proxy may have moved, and its old port may now be anyone's.
    pub reread: Option<Box<dyn Fn()>>,
}
