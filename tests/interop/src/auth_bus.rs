//! A D-Bus client of `io.mender.AuthenticationManager` on a private bus (libdbus through the `dbus`
//! crate): what mender-connect does to get its token, done by the test to observe the client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbus::blocking::Connection;
use dbus::channel::Channel;
use dbus::message::MatchRule;

use crate::Error;
use crate::bus::PrivateBus;

/// Bus name of the Mender client's authentication service.
pub const AUTH_SERVICE: &str = "io.mender.AuthenticationManager";
/// Its object path.
pub const AUTH_PATH: &str = "/io/mender/AuthenticationManager";
/// Its interface.
pub const AUTH_INTERFACE: &str = "io.mender.Authentication1";

/// Bound for one D-Bus call. The client answers GetJwtToken from memory; 3.4.0 gives up after 5 s.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the private bus.
pub struct AuthBusClient {
    conn: Connection,
    token_changes: Arc<Mutex<Vec<JwtAndUrl>>>,
}

/// What `GetJwtToken` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAndUrl {
    /// The device JWT ("" before authentication).
    pub token: String,
    /// The server URL handed to mender-connect (the client's local proxy).
    pub server_url: String,
}

fn dbus_err(what: &str) -> impl FnOnce(dbus::Error) -> Error + '_ {
    move |source| Error::DBus { what: what.to_owned(), source }
}

impl AuthBusClient {
    /// Connects to `bus` (a private connection; the process's own system bus is not touched).
    pub fn connect(bus: &PrivateBus) -> Result<Self, Error> {
        let mut channel =
            Channel::open_private(bus.address()).map_err(dbus_err("connecting to the private bus"))?;
        channel.register().map_err(dbus_err("registering on the private bus"))?;
        Ok(AuthBusClient { conn: Connection::from(channel), token_changes: Arc::new(Mutex::new(Vec::new())) })
    }

    /// Subscribes to `JwtTokenStateChange` signals; [`AuthBusClient::token_changes`] returns them.
    pub fn watch_token_changes(&self) -> Result<(), Error> {
        let rule = MatchRule::new_signal(AUTH_INTERFACE, "JwtTokenStateChange").with_path(AUTH_PATH);
        let sink = Arc::clone(&self.token_changes);
        self.conn
            .add_match(rule, move |(token, server_url): (String, String), _, _| {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(JwtAndUrl { token, server_url });
                true
            })
            .map_err(dbus_err("subscribing to JwtTokenStateChange"))?;
        Ok(())
    }

    /// The `JwtTokenStateChange` signals received since [`AuthBusClient::watch_token_changes`],
    /// after dispatching those that arrived within `wait`.
    pub fn token_changes(&self, wait: Duration) -> Result<Vec<JwtAndUrl>, Error> {
        let deadline = std::time::Instant::now() + wait;
        // Bounded: one message per iteration, and a connection in a test sees few.
        for _ in 0..10_000 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let processed = self
                .conn
                .process(left.min(Duration::from_millis(100)))
                .map_err(dbus_err("receiving signals"))?;
            if !processed && left.is_zero() {
                break;
            }
        }
        Ok(self.token_changes.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Whether `name` currently has an owner on the bus.
    pub fn name_has_owner(&self, name: &str) -> Result<bool, Error> {
        let proxy = self.conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", CALL_TIMEOUT);
        let (owned,): (bool,) = proxy
            .method_call("org.freedesktop.DBus", "NameHasOwner", (name,))
            .map_err(dbus_err("NameHasOwner"))?;
        Ok(owned)
    }

    /// Calls `io.mender.Authentication1.GetJwtToken`.
    pub fn get_jwt_token(&self) -> Result<JwtAndUrl, Error> {
        let proxy = self.conn.with_proxy(AUTH_SERVICE, AUTH_PATH, CALL_TIMEOUT);
        let (token, server_url): (String, String) =
            proxy.method_call(AUTH_INTERFACE, "GetJwtToken", ()).map_err(dbus_err("GetJwtToken"))?;
        Ok(JwtAndUrl { token, server_url })
    }

    /// Calls `io.mender.Authentication1.FetchJwtToken` (asks the client to authenticate now).
    pub fn fetch_jwt_token(&self) -> Result<bool, Error> {
        let proxy = self.conn.with_proxy(AUTH_SERVICE, AUTH_PATH, CALL_TIMEOUT);
        let (accepted,): (bool,) =
            proxy.method_call(AUTH_INTERFACE, "FetchJwtToken", ()).map_err(dbus_err("FetchJwtToken"))?;
        Ok(accepted)
    }
}
