//! The link to the Mender Server: the websocket ([`connection`]) and where its credentials come
//! from (the auth service on D-Bus, `auth`, or the device itself, [`standalone`]).

pub(crate) mod auth;
pub mod connection;
pub(crate) mod credentials;
#[cfg(feature = "standalone")]
pub mod standalone;

use crate::config::{Config, ConfigError};
use auth::AuthError;
use credentials::Auth;

/// The credentials source the configuration asks for: standalone mode when the `Standalone`
/// block is present, else the auth service on D-Bus (`bus`, else the system bus).
pub(crate) fn select(config: &Config, bus: Option<String>) -> Result<Auth, AuthError> {
    #[cfg(feature = "standalone")]
    if let Some(cfg) = &config.standalone {
        return standalone::spawn(cfg, config.reconnect_interval, config.reconnect_max_interval)
            .map_err(|e| AuthError::Standalone(e.to_string()));
    }
    #[cfg(not(feature = "standalone"))]
    if config.standalone.is_some() {
        return Err(AuthError::Standalone("built without the standalone feature".into()));
    }
    let handle = std::rc::Rc::new(auth::spawn(bus)?);
    let credentials = handle.credentials();
    let h = std::rc::Rc::clone(&handle);
    Ok(Auth {
        credentials,
        refresh: Box::new(move || h.fetch()),
        reread: Some(Box::new(move || handle.reread())),
    })
}

/// TLS trust for the websocket: standalone mode's `ServerCertificate`/`SkipVerify`, else the
/// built-in roots.
pub(crate) fn tls_options(config: &Config) -> connection::TlsOptions {
    config.standalone.as_ref().map_or_else(Default::default, |s| connection::TlsOptions {
        ca_file: s.server_certificate.clone(),
        skip_verify: s.skip_verify,
    })
}

/// The checks of a loaded configuration that need this layer (standalone mode: key, identity and
/// certificate file must be usable), for [`Config::load`] and `check-config`.
pub(crate) fn check(config: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    #[cfg(feature = "standalone")]
    standalone::check(config, warnings)?;
    #[cfg(not(feature = "standalone"))]
    let _ = (config, warnings);
    Ok(())
}
