//! Standalone mode: the agent authenticates itself as a Mender device, for devices without
//! D-Bus or without the Mender client.
//!
//! What the Mender client 3.4 does, without the client: identity attributes from a script or the
//! configuration, the device key from a PEM file, a signed
//! `POST /api/devices/v1/authentication/auth_requests` (body
//! `{"id_data":"<identity JSON>","tenant_token":"…","pubkey":"<PEM>"}` (the client's field order
//! and Go's HTML escaping) plus the newline Go's encoder adds, `X-MEN-Signature` = base64 signature over the exact body,
//! `Authorization: Bearer <tenant token>`), retried with the core's full-jitter backoff while the
//! server answers 401 (pending, rejected) or cannot be reached. The token goes to the daemon as the
//! D-Bus token would; a 401 on the websocket (token expired or revoked) asks for a new one here.
//!
//! ```text
//!  config ──► identity (script | fixed) ─┐
//!             key (PEM) ────────────────┼─► auth task ──Credentials──► daemon
//!                                       │       ▲
//!             http (proxy, TLS) ◄────────┘       └── refresh (websocket 401)
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;

use crate::config::endpoint::Endpoint;
use crate::config::standalone::{Identity, Standalone};
use crate::config::{Config, ConfigError};
use crate::link::connection::{ConnectError, TlsError, TlsOptions, b64};
use crate::link::credentials::{Auth, Credentials, Update};

pub mod http;
pub(crate) mod identity;
pub mod key;

/// The device authentication endpoint.
pub(crate) const AUTH_PATH: &str = "/api/devices/v1/authentication/auth_requests";

/// Why standalone mode cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum StandaloneError {
    #[error("Standalone.PrivateKey: {0}")]
    Key(#[from] key::KeyError),
    #[error("Standalone identity: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("Standalone.ServerCertificate: {0}")]
    Tls(#[from] TlsError),
    #[error("Standalone.ServerURL: {0}")]
    Url(ConnectError),
}

/// The answer to one auth request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Outcome {
    /// HTTP 200: the device token.
    Token(String),
    /// Any other status (401: pending, rejected or bad signature), with the server's message.
    Refused { status: u16, message: String },
}

/// Everything one auth request needs.
#[derive(Debug)]
pub(crate) struct Device {
    endpoint: Endpoint,
    server_url: String,
    key: key::DeviceKey,
    id_data: String,
    tenant_token: String,
}

/// Field order of the client's `AuthReqData`.
#[derive(serde::Serialize)]
struct AuthRequest<'a> {
    id_data: &'a str,
    tenant_token: &'a str,
    pubkey: &'a str,
}

/// Go's `encoding/json` escapes these (HTML safety) where serde_json writes them as they are; only
/// string contents can hold them, so replacing them keeps the JSON valid and byte-equal to Go's.
pub(crate) fn go_json_escape(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

impl Device {
    /// Loads key and identity (runs the identity script).
    pub(crate) fn load(cfg: &Standalone) -> Result<Self, StandaloneError> {
        let endpoint = Endpoint::parse(&cfg.server_url).map_err(|e| StandaloneError::Url(e.into()))?;
        let key = key::DeviceKey::load(&cfg.private_key)?;
        let attrs = match &cfg.identity {
            Identity::Script(path) => identity::from_script(path)?,
            Identity::Fixed(attrs) => attrs.clone(),
        };
        Ok(Self {
            endpoint,
            server_url: cfg.server_url.clone(),
            key,
            id_data: go_json_escape(&identity::to_json(&attrs)),
            tenant_token: cfg.tenant_token.clone(),
        })
    }

    /// The exact body that is signed and sent.
    pub(crate) fn request_body(&self) -> String {
        let request = AuthRequest {
            id_data: &self.id_data,
            pubkey: self.key.public_pem(),
            tenant_token: &self.tenant_token,
        };
        // Serializing three strings cannot fail; Go's json.Encoder ends the body with a newline.
        go_json_escape(&serde_json::to_string(&request).unwrap_or_default()) + "\n"
    }

    /// Sends one signed auth request.
    pub(crate) async fn authorize(
        &self,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Outcome, http::HttpError> {
        let body = self.request_body();
        let signature = self
            .key
            .sign_base64(body.as_bytes())
            .map_err(|_| http::HttpError::Malformed("signing failed"))?;
        let bearer = format!("Bearer {}", self.tenant_token);
        let headers = [
            ("Content-Type", "application/json"),
            ("Authorization", bearer.as_str()),
            ("X-MEN-Signature", signature.as_str()),
        ];
        let r = http::post(&self.endpoint, tls, AUTH_PATH, &headers, body.as_bytes()).await?;
        if r.status == 200 {
            let token = String::from_utf8_lossy(&r.body).trim().to_owned();
            if token.is_empty() {
                return Err(http::HttpError::Malformed("HTTP 200 without a token"));
            }
            return Ok(Outcome::Token(token));
        }
        let text = String::from_utf8_lossy(&r.body);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        Ok(Outcome::Refused { status: r.status, message })
    }
}

/// The TLS settings of standalone mode.
pub(crate) fn tls_options(cfg: &Standalone) -> TlsOptions {
    TlsOptions { ca_file: cfg.server_certificate.clone(), skip_verify: cfg.skip_verify }
}

/// `check-config` and start-up: key, identity and certificate file must be usable.
pub(crate) fn check(config: &Config, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let Some(cfg) = &config.standalone else { return Ok(()) };
    let invalid = |key: &str, e: &dyn std::fmt::Display| ConfigError::Invalid {
        path: None,
        key: key.to_owned(),
        reason: e.to_string(),
    };
    crate::link::connection::client_config(&tls_options(cfg))
        .map_err(|e| invalid("Standalone.ServerCertificate", &e))?;
    let device = Device::load(cfg).map_err(|e| match e {
        StandaloneError::Key(e) => invalid("Standalone.PrivateKey", &e),
        StandaloneError::Identity(e) => {
            let key = if matches!(cfg.identity, Identity::Fixed(_)) {
                "Standalone.Identity"
            } else {
                "Standalone.IdentityScript"
            };
            invalid(key, &e)
        }
        other => invalid("Standalone", &other),
    })?;
    let meta = std::fs::metadata(&cfg.private_key);
    if meta.is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o077 != 0) {
        warnings.push(format!(
            "Standalone.PrivateKey {} is readable by group or others (chmod 600 it)",
            cfg.private_key.display()
        ));
    }
    log::debug!("standalone: {} key, identity {}", device.key.kind(), device.id_data);
    Ok(())
}

/// The device id (`sub` claim) of a token, for the log; the token is otherwise opaque.
pub(crate) fn token_subject(token: &str) -> Option<String> {
    let payload = b64::decode(token.split('.').nth(1)?)?;
    // from_str, not from_slice: the config reader already instantiates serde_json's str reader.
    let claims: serde_json::Value = serde_json::from_str(std::str::from_utf8(&payload).ok()?).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// Starts the auth task; the daemon gets its credentials as from D-Bus.
pub(crate) fn spawn(
    cfg: &Standalone,
    retry_base: Duration,
    retry_max: Duration,
) -> Result<Auth, StandaloneError> {
    let device = Device::load(cfg)?;
    let tls = crate::link::connection::client_config(&tls_options(cfg))?;
    log::info!(
        "standalone mode: authenticating to {} with a {} key as {}",
        device.server_url,
        device.key.kind(),
        device.id_data
    );
    let (tx, rx) = async_channel::unbounded();
    let (refresh_tx, refresh_rx) = async_channel::unbounded::<()>();
    crate::os::runtime::spawn(run(device, tls, tx, refresh_rx, retry_base, retry_max)).detach();
    Ok(Auth {
        credentials: rx,
        refresh: Box::new(move || {
            let _ = refresh_tx.try_send(());
        }),
        // The URL is the server's own, verified by TLS: nothing local can take it over.
        reread: None,
    })
}

/// The websocket's reconnect rule; an authentication that succeeds resets the counter itself,
/// so no connection counts as stable.
fn new_backoff(base: Duration, cap: Duration) -> mender_connect_core::backoff::Backoff {
    let ms = crate::os::clock::millis;
    mender_connect_core::backoff::Backoff::new(mender_connect_core::link::backoff_config(
        ms(base),
        ms(cap),
        u64::MAX,
    ))
}

async fn run(
    device: Device,
    tls: Arc<rustls::ClientConfig>,
    out: async_channel::Sender<Update>,
    refresh: async_channel::Receiver<()>,
    base: Duration,
    cap: Duration,
) {
    let mut rng = fastrand::Rng::new();
    let mut backoff = new_backoff(base, cap);
    let mut have_token = false;
    while !out.is_closed() {
        let url = format!("{}{AUTH_PATH}", device.server_url);
        let retry = match device.authorize(&tls).await {
            Ok(Outcome::Token(token)) => {
                let sub = token_subject(&token).unwrap_or_else(|| "?".into());
                log::info!("standalone: authorized by {} (device id {sub})", device.server_url);
                have_token = true;
                backoff = new_backoff(base, cap);
                if out
                    .send(Credentials { token, server_url: device.server_url.clone() }.into())
                    .await
                    .is_err()
                {
                    return;
                }
                // Until the daemon reports the token refused.
                if refresh.recv().await.is_err() {
                    return;
                }
                while refresh.try_recv().is_ok() {}
                log::info!("standalone: the server refused the token; authenticating again");
                continue;
            }
            Ok(Outcome::Refused { status, message }) => {
                if status == 401 {
                    log::info!(
                        "standalone: {url}: not authorized ({message}); the device must be accepted or preauthorized"
                    );
                } else {
                    log::error!("standalone: {url}: HTTP {status}: {message}");
                }
                if have_token {
                    have_token = false;
                    let _ = out
                        .send(Credentials { token: String::new(), server_url: String::new() }.into())
                        .await;
                }
                true
            }
            Err(e) => {
                log::error!("standalone: auth request to {url} failed: {e}");
                true
            }
        };
        if retry {
            let delay = Duration::from_millis(backoff.next_delay_ms(rng.u64(..)));
            log::info!("standalone: next auth request in {}", crate::ops::logging::Secs(delay));
            let closed = async {
                smol::Timer::after(delay).await;
                false
            }
            .or(async {
                // Stop waiting only when the daemon is gone.
                while refresh.recv().await.is_ok() {}
                true
            })
            .await;
            if closed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escapes_html_characters() {
        let json = serde_json::to_string(&serde_json::json!({ "a": "<b>&\u{2028}" })).unwrap();
        let escaped = go_json_escape(&json);
        assert_eq!(escaped, r#"{"a":"\u003cb\u003e\u0026\u2028"}"#);
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["a"], "<b>&\u{2028}");
    }

    #[test]
    fn subject_of_a_token() {
        let claims = b64::encode(br#"{"sub":"0f6c","exp":1}"#);
        assert_eq!(token_subject(&format!("h.{}.s", claims.trim_end_matches('='))).as_deref(), Some("0f6c"));
        assert_eq!(token_subject("opaque"), None);
    }
}
