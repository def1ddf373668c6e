//! The `Standalone` block (extension): the agent authenticates itself as a Mender device instead
//! of taking the token from the Mender client over D-Bus. Key names follow the Mender client's
//! `mender.conf` (`ServerURL`, `TenantToken`, `ServerCertificate`, `SkipVerify`).
//!
//! ```json
//! "Standalone": {
//!   "ServerURL": "https://hosted.mender.io",
//!   "TenantToken": "",
//!   "PrivateKey": "/var/lib/mender-connect/device.pem",
//!   "IdentityScript": "/usr/share/mender/identity/mender-device-identity",
//!   "ServerCertificate": "/etc/mender/server.crt"
//! }
//! ```

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{ConfigError, Doc, canonical, kind, unknown_key};

/// Default `Standalone.PrivateKey`: where the Mender client keeps its device key.
pub const DEFAULT_PRIVATE_KEY: &str = "/var/lib/mender/mender-agent.pem";
/// Default `Standalone.IdentityScript`: the Mender client's identity script.
pub const DEFAULT_IDENTITY_SCRIPT: &str = "/usr/share/mender/identity/mender-device-identity";

pub(super) const KEYS: &[&str] = &[
    "ServerURL",
    "TenantToken",
    "PrivateKey",
    "IdentityScript",
    "Identity",
    "ServerCertificate",
    "SkipVerify",
];

/// Standalone mode settings (present when `Standalone.ServerURL` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standalone {
    /// `Standalone.ServerURL`: the Mender Server, `https://host[:port]` (or `http://`).
    pub server_url: String,
    /// `Standalone.TenantToken` (hosted Mender / Enterprise; empty for open source).
    pub tenant_token: String,
    /// `Standalone.PrivateKey`: PEM file of the device key.
    pub private_key: PathBuf,
    /// Where the identity attributes come from.
    pub identity: Identity,
    /// `Standalone.ServerCertificate`: PEM certificates trusted besides the built-in roots.
    pub server_certificate: Option<PathBuf>,
    /// `Standalone.SkipVerify`: do not verify the server's certificate (insecure).
    pub skip_verify: bool,
}

/// Identity attributes, sorted by key (Go marshals maps sorted), each with its values in order.
/// A sorted vector: a handful of keys, looked up only while they are collected (a map type of
/// its own would cost the static binary its whole B-tree code).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes(Vec<(String, Vec<String>)>);

impl Attributes {
    /// Adds `value` to `key`'s values.
    // Used by the identity script's parser, which is built with the standalone link only.
    #[cfg_attr(not(feature = "standalone"), allow(dead_code))]
    pub fn add(&mut self, key: &str, value: String) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => self.0[i].1.push(value),
            Err(i) => self.0.insert(i, (key.to_owned(), vec![value])),
        }
    }

    /// Sets `key`'s values.
    pub fn set(&mut self, key: &str, values: Vec<String>) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            Ok(i) => self.0[i].1 = values,
            Err(i) => self.0.insert(i, (key.to_owned(), values)),
        }
    }

    /// True if there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, sorted, with their values.
    #[cfg_attr(not(feature = "standalone"), allow(dead_code))]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

/// `Standalone.Identity` (fixed attributes) or `Standalone.IdentityScript`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A script printing `key=value` lines, as `mender-device-identity`.
    Script(PathBuf),
    /// Attributes given in the configuration; one value or several per key.
    Fixed(Attributes),
}

/// The block as read, before defaults.
#[derive(Debug, Default)]
pub(super) struct RawStandalone {
    server_url: Option<String>,
    tenant_token: String,
    private_key: String,
    identity_script: String,
    identity: Option<Attributes>,
    server_certificate: String,
    skip_verify: bool,
    present: bool,
}

impl RawStandalone {
    pub(super) fn apply(
        &mut self,
        doc: &Doc<'_>,
        v: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let map: &Map<String, Value> = doc.object("Standalone", v)?;
        self.present = true;
        for (k, v) in map {
            let Some(key) = canonical(k, KEYS) else {
                warnings.push(unknown_key(doc, "Standalone.", k, KEYS));
                continue;
            };
            if v.is_null() {
                continue;
            }
            let full = format!("Standalone.{key}");
            match key {
                "ServerURL" => self.server_url = Some(doc.string(&full, v)?),
                "TenantToken" => self.tenant_token = doc.string(&full, v)?,
                "PrivateKey" => self.private_key = doc.string(&full, v)?,
                "IdentityScript" => self.identity_script = doc.string(&full, v)?,
                "ServerCertificate" => self.server_certificate = doc.string(&full, v)?,
                "SkipVerify" => self.skip_verify = doc.bool(&full, v)?,
                _ => {
                    let obj = doc.object(&full, v)?;
                    let mut attrs = Attributes::default();
                    for (name, value) in obj {
                        let values = match value {
                            Value::String(s) => vec![s.clone()],
                            Value::Array(_) => doc.strings(&format!("{full}.{name}"), value)?,
                            other => {
                                return Err(doc.invalid(
                                    &format!("{full}.{name}"),
                                    format!("must be a string or an array of strings, not {}", kind(other)),
                                ));
                            }
                        };
                        if values.is_empty() {
                            return Err(
                                doc.invalid(&format!("{full}.{name}"), "must have at least one value")
                            );
                        }
                        attrs.set(name, values);
                    }
                    self.identity = Some(attrs);
                }
            }
        }
        Ok(())
    }

    /// Defaults and checks that need no file system.
    pub(super) fn finish(self, warnings: &mut Vec<String>) -> Result<Option<Standalone>, ConfigError> {
        let invalid =
            |key: &str, reason: String| ConfigError::Invalid { path: None, key: key.to_owned(), reason };
        if !self.present {
            return Ok(None);
        }
        let Some(server_url) = self.server_url.filter(|u| !u.trim().is_empty()) else {
            return Err(invalid(
                "Standalone.ServerURL",
                "required in the Standalone block (the Mender Server, e.g. \"https://hosted.mender.io\")"
                    .into(),
            ));
        };
        let server_url = server_url.trim().trim_end_matches('/').to_owned();
        let endpoint = super::endpoint::Endpoint::parse(&server_url).map_err(|_| {
            invalid("Standalone.ServerURL", format!("{server_url:?} is not an http(s)://host[:port] URL"))
        })?;
        if !endpoint.tls {
            warnings.push(format!(
                "Standalone.ServerURL {server_url} is not https: the device key's token travels unencrypted"
            ));
        }
        let absolute = |key: &str, value: &str| -> Result<PathBuf, ConfigError> {
            let p = PathBuf::from(value);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(invalid(key, format!("must be an absolute path, not {value:?}")))
            }
        };
        let private_key = if self.private_key.is_empty() {
            PathBuf::from(DEFAULT_PRIVATE_KEY)
        } else {
            absolute("Standalone.PrivateKey", &self.private_key)?
        };
        let identity = match (self.identity, self.identity_script.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(
                    "Standalone.Identity",
                    "give either Standalone.Identity or Standalone.IdentityScript, not both".into(),
                ));
            }
            (Some(attrs), true) if attrs.is_empty() => {
                return Err(invalid("Standalone.Identity", "must have at least one attribute".into()));
            }
            (Some(attrs), true) => Identity::Fixed(attrs),
            (None, true) => Identity::Script(PathBuf::from(DEFAULT_IDENTITY_SCRIPT)),
            (None, false) => Identity::Script(absolute("Standalone.IdentityScript", &self.identity_script)?),
        };
        let server_certificate = if self.server_certificate.is_empty() {
            None
        } else {
            Some(absolute("Standalone.ServerCertificate", &self.server_certificate)?)
        };
        if self.skip_verify {
            warnings.push(
                "Standalone.SkipVerify is true: the server's certificate is not verified (insecure)".into(),
            );
        }
        if !endpoint.tls && (server_certificate.is_some() || self.skip_verify) {
            warnings.push(format!(
                "Standalone.ServerCertificate and Standalone.SkipVerify have no effect with {server_url}"
            ));
        }
        Ok(Some(Standalone {
            server_url,
            tenant_token: self.tenant_token,
            private_key,
            identity,
            server_certificate,
            skip_verify: self.skip_verify,
        }))
    }
}
