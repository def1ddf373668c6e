//! Device token and server URL from `io.mender.AuthenticationManager` on the system D-Bus.
//!
//! Contract for the rest of the agent: a blocking libdbus thread that the async side talks to
//! through channels:
//! `spawn(bus: BusAddress) -> Result<AuthHandle, AuthError>`;
//! `AuthHandle::credentials() -> async_channel::Receiver<Credentials>` (current credentials first,
//! then one item per `JwtTokenStateChange`), `AuthHandle::fetch()` (asks for a new token,
//! e.g. after a 401). `Credentials { token: String, server_url: String }`; an empty token means
//! "not authorized yet".
