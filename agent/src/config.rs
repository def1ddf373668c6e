//! `/etc/mender/mender-connect.conf`: every key of the reference, its defaults and validation.
//!
//! Compatibility with the Go daemon (2.1.0) that existing configuration files rely on:
//! - the fallback file is read first and the primary file is laid over it key by key (nested
//!   objects merge, arrays replace); a missing file is not an error, an unreadable one is;
//! - key names match case-insensitively (Go's `encoding/json`), `null` leaves a value unset;
//! - numbers must fit the reference's integer types (`uint16`, `uint32`, `uint64`, `int`);
//! - the deprecated `ServerURL`, `Servers`, `ClientProtocol`, `HttpsClient`, `SkipVerify` and
//!   `ServerCertificate` are ignored with a warning (the token and URL come from D-Bus).
//!
//! Session expiry defaults are mender-connect 3.0's (what meta-mender ships now): `StopExpired`
//! is true unless a file says false, and with neither `ExpireAfter` nor `ExpireAfterIdle` set
//! (both 0) sessions expire after 600 s idle. 2.x defaulted to no expiry; a 2.x file that wants
//! that keeps it with `"StopExpired": false`.
//!
//! Stricter than the reference, because each of these was silently ignored or only failed later:
//! unknown keys and keys that have no effect give a warning naming them; `Sessions.ExpireAfter`
//! together with `Sessions.ExpireAfterIdle` under an explicit `StopExpired: true` is an error (the
//! reference quietly drops `ExpireAfter`; without `StopExpired` in the file, a warning, as 3.0);
//! a malformed `Limits.FileTransfer.Umask` or relative `Chroot` is an error when limits are enabled.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// Primary configuration file of the reference daemon.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "/etc/mender/mender-connect.conf";
/// Fallback configuration file of the reference daemon (read first, overridden by the primary).
pub(crate) const DEFAULT_FALLBACK_CONFIG_FILE: &str = "/var/lib/mender/mender-connect.conf";

pub(crate) const DEFAULT_SHELL_COMMAND: &str = "/bin/sh";
pub(crate) const DEFAULT_SHELL_ARGUMENTS: &[&str] = &["--login"];
pub(crate) const DEFAULT_TERMINAL_HEIGHT: u16 = 40;
pub(crate) const DEFAULT_TERMINAL_WIDTH: u16 = 80;
pub(crate) const DEFAULT_RECONNECT_INTERVAL: Duration = Duration::from_secs(5);
/// Default of `ReconnectMaxIntervalSeconds` (extension): the longest reconnect delay.
pub(crate) const DEFAULT_RECONNECT_MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Largest `ReconnectMaxIntervalSeconds`.
const MAX_RECONNECT_MAX_INTERVAL_SECS: u64 = 3600;
/// `Sessions.MaxPerUser` when unset or 0 (reference: `session.MaxUserSessions`).
pub(crate) const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 1;
/// `Sessions.StopExpired` when unset (mender-connect 3.0 `DefaultStopExpired`; 2.x: false).
pub(crate) const DEFAULT_STOP_EXPIRED: bool = true;
/// `Sessions.ExpireAfterIdle` when `StopExpired` is on and neither expiry is set (mender-connect
/// 3.0 `DefaultExpireAfterIdle`; 2.x: no expiry).
pub(crate) const DEFAULT_EXPIRE_AFTER_IDLE: Duration =
    Duration::from_secs(mender_connect_core::sessions::DEFAULT_EXPIRE_AFTER_IDLE_S as u64);

/// Checks of a loaded configuration against this machine that [`Config::load`] and `check-config`
/// run after their own; errors and warnings as theirs.
pub(crate) type MoreChecks = fn(&Config, &mut Vec<String>) -> Result<(), ConfigError>;

/// [`MoreChecks`] that check nothing more.
#[cfg(test)]
pub(crate) fn no_more_checks(_: &Config, _: &mut Vec<String>) -> Result<(), ConfigError> {
    Ok(())
}

/// The effective configuration after merging, defaults and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the shell (`ShellCommand`, default `/bin/sh`).
    pub(crate) shell_command: PathBuf,
    /// `ShellArguments`, default `["--login"]`; an explicit `[]` means no arguments.
    pub(crate) shell_arguments: Vec<String>,
    /// `User` the shells run as (required).
    pub(crate) user: String,
    pub(crate) terminal: Terminal,
    pub(crate) sessions: Sessions,
    /// `ReconnectIntervalSeconds`, default 5 s.
    pub(crate) reconnect_interval: Duration,
    /// `ReconnectMaxIntervalSeconds` (extension; the reference always waits
    /// `ReconnectIntervalSeconds`): cap of the growing reconnect delay, default 60 s and never
    /// below `ReconnectIntervalSeconds`.
    pub(crate) reconnect_max_interval: Duration,
    /// `FileTransfer.Disable`.
    pub(crate) file_transfer: Feature,
    /// `PortForward.Disable`.
    pub(crate) port_forward: Feature,
    /// `MenderClient.Disable`.
    pub(crate) mender_client: Feature,
    pub(crate) limits: Limits,
    /// `FileTransfer.AckWindowChunks` (extension; the reference hard-codes 20): download chunks
    /// in flight beyond the last ack.
    pub(crate) file_transfer_ack_window: u32,
    /// `PortForward.ConnectTimeoutSeconds` / `IdleTimeoutSeconds` (extensions; the reference has
    /// no dial timeout and a hard-coded 600 s idle timeout).
    pub(crate) port_forward_timeouts: PortForwardTimeouts,
    /// `PortForward.MaxConnectionsPerSession` / `MaxConnections` (extensions; the reference has
    /// no bound).
    pub(crate) port_forward_limits: PortForwardLimits,
    /// `ControlSocket` (extension): path of the daemon's root-only status/control socket,
    /// default [`DEFAULT_CONTROL_SOCKET`].
    pub control_socket: PathBuf,
    /// `Standalone` (extension): self-authentication as a Mender device, without D-Bus.
    pub(crate) standalone: Option<standalone::Standalone>,
}

/// Default of `FileTransfer.AckWindowChunks`: the reference's download window in chunks
/// (`ACKSlidingWindowRecv`).
pub(crate) const DEFAULT_ACK_WINDOW_CHUNKS: u32 = 20;
/// Largest `FileTransfer.AckWindowChunks`: the server only acks, so any window works; this bounds
/// memory.
pub(crate) const MAX_ACK_WINDOW_CHUNKS: u32 = 256;
/// Default of `PortForward.ConnectTimeoutSeconds`: time allowed to resolve and connect (the
/// reference has none: the OS's ~2 min).
pub(crate) const DEFAULT_PORT_FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `PortForward.IdleTimeoutSeconds`: the reference's `portForwardConnectionTimeout`,
/// the idle timeout of a forwarded connection.
pub(crate) const DEFAULT_PORT_FORWARD_IDLE_TIMEOUT: Duration =
    Duration::from_millis(mender_connect_core::portforward::CONNECTION_TIMEOUT_MS);
/// Default of `PortForward.MaxConnectionsPerSession`: a browser opens about 6 per host.
pub(crate) const DEFAULT_PORT_FORWARD_MAX_PER_SESSION: usize = 16;
/// Default of `PortForward.MaxConnections`, over all sessions: each holds a socket, a task and
/// its queue.
pub(crate) const DEFAULT_PORT_FORWARD_MAX_CONNECTIONS: usize = 64;
/// Default of `ControlSocket`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/mender-connect/control.sock";
/// Largest port-forward timeout accepted: one day.
const MAX_PORT_FORWARD_TIMEOUT_SECS: u64 = 86_400;

/// Largest `PortForward.MaxConnectionsPerSession` / `MaxConnections`: each connection holds a
/// socket, so more than this would only meet the file-descriptor limit.
const MAX_PORT_FORWARD_CONNECTIONS: u64 = 4096;

/// Port-forward connection bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortForwardLimits {
    /// Connections of one session.
    pub(crate) per_session: usize,
    /// Connections of all sessions.
    pub(crate) total: usize,
}

/// Port-forward timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortForwardTimeouts {
    /// How long dialing the target may take.
    pub(crate) connect: Duration,
    /// A forwarded connection without traffic for this long is closed.
    pub(crate) idle: Duration,
}

/// `Terminal` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Terminal {
    /// Remote terminal turned off (`Terminal.Disable`).
    pub(crate) disable: bool,
    /// Initial rows (`Terminal.Height`, default 40).
    pub(crate) height: u16,
    /// Initial columns (`Terminal.Width`, default 80).
    pub(crate) width: u16,
}

/// `Sessions` block, already reduced to what takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sessions {
    /// `Sessions.StopExpired` (default true, as 3.0); when false both expiries below are `None`,
    /// when true at least one is set (`ExpireAfterIdle` 600 s by default).
    pub(crate) stop_expired: bool,
    /// Absolute lifetime of a shell session (`Sessions.ExpireAfter` seconds; 0 = none).
    pub(crate) expire_after: Option<Duration>,
    /// Lifetime without user input (`Sessions.ExpireAfterIdle` seconds; 0 = none).
    pub(crate) expire_after_idle: Option<Duration>,
    /// Shell sessions per Mender user (`Sessions.MaxPerUser`, default 1).
    pub(crate) max_per_user: u32,
}

/// A feature that the configuration can turn off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Feature {
    pub(crate) disable: bool,
}

/// `Limits` block. The file transfer limits only apply when `enabled` is true (as the reference).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Limits {
    pub(crate) enabled: bool,
    pub(crate) file_transfer: FileTransferLimits,
}

/// `Limits.FileTransfer` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransferLimits {
    /// Directory file transfer never leaves (`Chroot`; empty = none).
    pub chroot: Option<PathBuf>,
    pub follow_symlinks: bool,
    pub allow_overwrite: bool,
    /// Owner forced on uploaded files (`OwnerPut`).
    pub owner_put: Option<String>,
    /// Group forced on uploaded files (`GroupPut`).
    pub group_put: Option<String>,
    /// Downloads only of files owned by one of these users (`OwnerGet`; empty = any).
    pub owner_get: Vec<String>,
    /// Downloads only of files owned by one of these groups (`GroupGet`; empty = any).
    pub group_get: Vec<String>,
    /// Umask for uploaded files (`Umask`, an octal string such as `"022"`).
    pub umask: Option<u32>,
    /// `MaxFileSize` in bytes (0 = unlimited).
    pub max_file_size: Option<u64>,
    pub counters: RateLimits,
    pub allow_suid: bool,
    pub regular_files_only: bool,
    /// Always true: the reference forces it regardless of the file (a warning says so).
    pub preserve_mode: bool,
    /// Always true: the reference forces it regardless of the file (a warning says so).
    pub preserve_owner: bool,
}

impl Default for FileTransferLimits {
    fn default() -> Self {
        FileTransferLimits {
            chroot: None,
            follow_symlinks: false,
            allow_overwrite: false,
            owner_put: None,
            group_put: None,
            owner_get: Vec::new(),
            group_get: Vec::new(),
            umask: None,
            max_file_size: None,
            counters: RateLimits::default(),
            allow_suid: false,
            regular_files_only: false,
            preserve_mode: true,
            preserve_owner: true,
        }
    }
}

/// `Limits.FileTransfer.Counters`: device-wide transfer budget per minute (0 = unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    pub max_bytes_tx_per_minute: Option<u64>,
    pub max_bytes_rx_per_minute: Option<u64>,
}

/// The configuration plus the warnings found while reading it (for the log or `check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    /// The files that existed and were read, fallback first.
    pub(crate) files: Vec<PathBuf>,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Not JSON; `line` and `column` are 1-based.
    #[error("{}invalid JSON: {message}", at_line(path.as_deref(), *line, *column))]
    Syntax { path: Option<PathBuf>, line: usize, column: usize, message: String },
    /// A key has a wrong type or a value the daemon cannot work with.
    #[error("{}{key}: {reason}", in_file(path.as_deref()))]
    Invalid { path: Option<PathBuf>, key: String, reason: String },
}

/// `FILE:LINE:COLUMN: `, or `line LINE, column COLUMN: ` for a text of no file.
fn at_line(path: Option<&Path>, line: usize, column: usize) -> String {
    match path {
        Some(p) => format!("{}:{line}:{column}: ", p.display()),
        None => format!("line {line}, column {column}: "),
    }
}

/// `FILE: `, or nothing for a text of no file.
fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

impl Config {
    /// Reads `fallback` then `primary` (either may be missing), applies the defaults and checks the
    /// configuration against this system (shell executable and listed in `/etc/shells`, user exists).
    /// `more` runs last: the checks that need a higher layer (standalone mode's key and
    /// certificate), passed in so that this module stays a leaf.
    pub(crate) fn load(primary: &Path, fallback: &Path, more: MoreChecks) -> Result<Loaded, ConfigError> {
        let mut docs = Vec::new();
        for path in [fallback, primary] {
            match std::fs::read_to_string(path) {
                Ok(text) => docs.push((path.to_path_buf(), text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ConfigError::Read { path: path.to_path_buf(), source });
                }
            }
        }
        let mut warnings = Vec::new();
        let config = Self::load_documents(&docs, &mut warnings, more)?;
        Ok(Loaded { config, warnings, files: docs.into_iter().map(|(p, _)| p).collect() })
    }

    /// [`Config::load`] of documents already read, fallback first; the warnings go to `warnings`
    /// even when an error ends the load (`check-config` reports both).
    pub(crate) fn load_documents(
        docs: &[(PathBuf, String)],
        warnings: &mut Vec<String>,
        more: MoreChecks,
    ) -> Result<Config, ConfigError> {
        let mut raw = Raw::default();
        for (path, text) in docs {
            raw.apply_document(text, Some(path), warnings)?;
        }
        let config = raw.finish(warnings)?;
        system::check(&config, Path::new("/etc/shells"), warnings)?;
        more(&config, warnings)?;
        Ok(config)
    }

    /// A problem of this machine that does not stop the daemon but makes a feature fail: a
    /// `Limits.FileTransfer.Chroot` that is not a directory (every transfer would fail until it
    /// is). The daemon warns; `check-config` fails.
    pub(crate) fn chroot_problem(&self) -> Option<String> {
        let chroot = self.limits.file_transfer.chroot.as_ref().filter(|_| self.limits.enabled)?;
        let problem = match std::fs::metadata(chroot) {
            Ok(m) if m.is_dir() => return None,
            Ok(_) => "is not a directory".to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist".to_owned(),
            Err(e) => format!("cannot be read: {e}"),
        };
        Some(format!(
            "Limits.FileTransfer.Chroot: {} {problem}: every file transfer would fail",
            chroot.display()
        ))
    }

    /// Parses one configuration document and applies the defaults, without the checks that depend
    /// on this system (those are part of `Config::load`).
    pub fn from_json_str(text: &str) -> Result<Loaded, ConfigError> {
        let mut raw = Raw::default();
        let mut warnings = Vec::new();
        raw.apply_document(text, None, &mut warnings)?;
        let config = raw.finish(&mut warnings)?;
        Ok(Loaded { config, warnings, files: Vec::new() })
    }
}

/// What the files said, before defaults: Go zero values plus which keys were present.
#[derive(Debug, Default)]
struct Raw {
    shell_command: String,
    shell_arguments: Option<Vec<String>>,
    user: String,
    terminal_disable: bool,
    terminal_height: u16,
    terminal_width: u16,
    stop_expired: bool,
    expire_after: u32,
    expire_after_idle: u32,
    max_per_user: u32,
    reconnect_interval_seconds: i64,
    reconnect_max_interval_seconds: Option<u64>,
    file_transfer_disable: bool,
    port_forward_disable: bool,
    mender_client_disable: bool,
    ft_ack_window: Option<u32>,
    pf_connect_timeout: Option<u64>,
    pf_idle_timeout: Option<u64>,
    pf_max_per_session: Option<usize>,
    pf_max_connections: Option<usize>,
    control_socket: String,
    standalone: standalone::RawStandalone,
    limits_enabled: bool,
    ft: RawFileTransferLimits,
    /// Keys (full paths) present with a non-null value, in the canonical spelling.
    present: Vec<&'static str>,
}

#[derive(Debug, Default)]
struct RawFileTransferLimits {
    chroot: String,
    follow_symlinks: bool,
    allow_overwrite: bool,
    owner_put: String,
    group_put: String,
    owner_get: Vec<String>,
    group_get: Vec<String>,
    umask: String,
    max_file_size: u64,
    max_bytes_tx_per_minute: u64,
    max_bytes_rx_per_minute: u64,
    allow_suid: bool,
    regular_files_only: bool,
    preserve_mode: bool,
    preserve_owner: bool,
}

/// The reference's deprecated keys: parsed only to warn.
const DEPRECATED: &[&str] =
    &["ServerURL", "Servers", "ClientProtocol", "HttpsClient", "SkipVerify", "ServerCertificate"];

/// Context for one file: where errors and warnings point.
struct Doc<'a> {
    path: Option<&'a Path>,
}

impl Doc<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.map(Path::to_path_buf),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn where_(&self) -> String {
        self.path.map(|p| format!("{}: ", p.display())).unwrap_or_default()
    }

    fn object<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Map<String, Value>, ConfigError> {
        v.as_object().ok_or_else(|| self.invalid(key, format!("must be an object, not {}", kind(v))))
    }

    fn string(&self, key: &str, v: &Value) -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.invalid(key, format!("must be a string, not {}", kind(v))))
    }

    fn bool(&self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        v.as_bool().ok_or_else(|| self.invalid(key, format!("must be true or false, not {}", kind(v))))
    }

    fn strings(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        let arr = v
            .as_array()
            .ok_or_else(|| self.invalid(key, format!("must be an array of strings, not {}", kind(v))))?;
        arr.iter()
            .map(|item| match item {
                // Go decodes a null element of a []string as "".
                Value::Null => Ok(String::new()),
                Value::String(s) => Ok(s.clone()),
                other => Err(self.invalid(key, format!("must be an array of strings, has {}", kind(other)))),
            })
            .collect()
    }

    fn unsigned(&self, key: &str, v: &Value, max: u64, go_type: &str) -> Result<u64, ConfigError> {
        match v.as_u64() {
            Some(n) if n <= max => Ok(n),
            _ => Err(self.invalid(
                key,
                format!("must be a whole number from 0 to {max} ({go_type}), not {}", short(v)),
            )),
        }
    }

    fn signed(&self, key: &str, v: &Value) -> Result<i64, ConfigError> {
        v.as_i64().ok_or_else(|| self.invalid(key, format!("must be a whole number, not {}", short(v))))
    }
}

/// `unknown key "Prefix.Key" (ignored)`, with a suggestion when a known key is a typo away.
fn unknown_key(doc: &Doc<'_>, prefix: &str, key: &str, names: &[&str]) -> String {
    let lower = key.to_ascii_lowercase();
    let best = names
        .iter()
        .map(|n| (edit_distance(&lower, &n.to_ascii_lowercase()), *n))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= 2);
    match best {
        Some((_, name)) => {
            format!(
                "{}unknown key \"{prefix}{key}\" (ignored; did you mean \"{prefix}{name}\"?)",
                doc.where_()
            )
        }
        None => format!("{}unknown key \"{prefix}{key}\" (ignored)", doc.where_()),
    }
}

/// Levenshtein distance over bytes (key names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s }
}

/// Looks a JSON key up in `names` the way Go's `encoding/json` does: exact first, then ASCII
/// case-insensitively.
fn canonical(key: &str, names: &[&'static str]) -> Option<&'static str> {
    names.iter().find(|n| **n == key).or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(key))).copied()
}

const TOP_KEYS: &[&str] = &[
    "ShellCommand",
    "ShellArguments",
    "User",
    "Terminal",
    "Sessions",
    "Limits",
    "ReconnectIntervalSeconds",
    "ReconnectMaxIntervalSeconds",
    "FileTransfer",
    "PortForward",
    "MenderClient",
    "ControlSocket",
    "Standalone",
];
const TERMINAL_KEYS: &[&str] = &["Width", "Height", "Disable"];
const SESSIONS_KEYS: &[&str] = &["StopExpired", "ExpireAfter", "ExpireAfterIdle", "MaxPerUser"];
const DISABLE_KEYS: &[&str] = &["Disable"];
const FILE_TRANSFER_KEYS: &[&str] = &["Disable", "AckWindowChunks"];
const PORT_FORWARD_KEYS: &[&str] =
    &["Disable", "ConnectTimeoutSeconds", "IdleTimeoutSeconds", "MaxConnectionsPerSession", "MaxConnections"];
const LIMITS_KEYS: &[&str] = &["Enabled", "FileTransfer"];
const FT_KEYS: &[&str] = &[
    "Chroot",
    "FollowSymLinks",
    "AllowOverwrite",
    "OwnerPut",
    "GroupPut",
    "OwnerGet",
    "GroupGet",
    "Umask",
    "MaxFileSize",
    "Counters",
    "AllowSuid",
    "RegularFilesOnly",
    "PreserveMode",
    "PreserveOwner",
];
const COUNTERS_KEYS: &[&str] = &["MaxBytesTxPerMinute", "MaxBytesRxPerMinute"];

impl Raw {
    fn mark(&mut self, key: &'static str) {
        if !self.present.contains(&key) {
            self.present.push(key);
        }
    }

    fn has(&self, key: &str) -> bool {
        self.present.contains(&key)
    }

    fn apply_document(
        &mut self,
        text: &str,
        path: Option<&Path>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.map(Path::to_path_buf),
            line: e.line(),
            column: e.column(),
            message: syntax_message(&e),
        })?;
        let doc = Doc { path };
        match &value {
            // Go's json.Unmarshal of `null` leaves the configuration untouched.
            Value::Null => Ok(()),
            Value::Object(map) => self.apply_top(&doc, map, warnings),
            other => Err(doc.invalid("(top level)", format!("must be a JSON object, not {}", kind(other)))),
        }
    }

    fn apply_top(
        &mut self,
        doc: &Doc<'_>,
        map: &Map<String, Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        for (key, v) in map {
            if let Some(dep) = canonical(key, DEPRECATED) {
                check_deprecated(doc, dep, v)?;
                warnings.push(format!("{}{dep} field is deprecated, ignoring.", doc.where_()));
                continue;
            }
            let Some(name) = canonical(key, TOP_KEYS) else {
                warnings.push(unknown_key(doc, "", key, TOP_KEYS));
                continue;
            };
            if v.is_null() {
                continue;
            }
            match name {
                "ShellCommand" => {
                    self.shell_command = doc.string(name, v)?;
                    self.mark("ShellCommand");
                }
                "ShellArguments" => {
                    self.shell_arguments = Some(doc.strings(name, v)?);
                    self.mark("ShellArguments");
                }
                "User" => {
                    self.user = doc.string(name, v)?;
                    self.mark("User");
                }
                "ReconnectIntervalSeconds" => {
                    self.reconnect_interval_seconds = doc.signed(name, v)?;
                    self.mark("ReconnectIntervalSeconds");
                }
                "ReconnectMaxIntervalSeconds" => {
                    let n = doc.unsigned(name, v, MAX_RECONNECT_MAX_INTERVAL_SECS, "seconds")?;
                    if n == 0 {
                        return Err(doc.invalid(
                            name,
                            format!("must be from 1 to {MAX_RECONNECT_MAX_INTERVAL_SECS} seconds, not 0"),
                        ));
                    }
                    self.reconnect_max_interval_seconds = Some(n);
                    self.mark("ReconnectMaxIntervalSeconds");
                }
                "ControlSocket" => {
                    self.control_socket = doc.string(name, v)?;
                    self.mark("ControlSocket");
                }
                "Standalone" => self.standalone.apply(doc, v, warnings)?,
                "Terminal" => {
                    for (k, v) in doc.object(name, v)? {
                        let Some(sub) = canonical(k, TERMINAL_KEYS) else {
                            warnings.push(unknown_key(doc, "Terminal.", k, TERMINAL_KEYS));
                            continue;
                        };
                        if v.is_null() {
                            continue;
                        }
                        match sub {
                            "Width" => {
                                self.terminal_width =
                                    doc.unsigned("Terminal.Width", v, u16::MAX.into(), "uint16")? as u16;
                                self.mark("Terminal.Width");
                            }
                            "Height" => {
                                self.terminal_height =
                                    doc.unsigned("Terminal.Height", v, u16::MAX.into(), "uint16")? as u16;
                                self.mark("Terminal.Height");
                            }
                            _ => {
                                self.terminal_disable = doc.bool("Terminal.Disable", v)?;
                                self.mark("Terminal.Disable");
                            }
                        }
                    }
                }
                "Sessions" => {
                    for (k, v) in doc.object(name, v)? {
                        let Some(sub) = canonical(k, SESSIONS_KEYS) else {
                            warnings.push(unknown_key(doc, "Sessions.", k, SESSIONS_KEYS));
                            continue;
                        };
                        if v.is_null() {
                            continue;
                        }
                        let u32max = u64::from(u32::MAX);
                        match sub {
                            "StopExpired" => {
                                self.stop_expired = doc.bool("Sessions.StopExpired", v)?;
                                self.mark("Sessions.StopExpired");
                            }
                            "ExpireAfter" => {
                                self.expire_after =
                                    doc.unsigned("Sessions.ExpireAfter", v, u32max, "uint32")? as u32;
                                self.mark("Sessions.ExpireAfter");
                            }
                            "ExpireAfterIdle" => {
                                self.expire_after_idle =
                                    doc.unsigned("Sessions.ExpireAfterIdle", v, u32max, "uint32")? as u32;
                                self.mark("Sessions.ExpireAfterIdle");
                            }
                            _ => {
                                self.max_per_user =
                                    doc.unsigned("Sessions.MaxPerUser", v, u32max, "uint32")? as u32;
                                self.mark("Sessions.MaxPerUser");
                            }
                        }
                    }
                }
                "FileTransfer" | "PortForward" | "MenderClient" => {
                    let keys = match name {
                        "FileTransfer" => FILE_TRANSFER_KEYS,
                        "PortForward" => PORT_FORWARD_KEYS,
                        _ => DISABLE_KEYS,
                    };
                    for (k, v) in doc.object(name, v)? {
                        let Some(key) = canonical(k, keys) else {
                            warnings.push(unknown_key(doc, &format!("{name}."), k, keys));
                            continue;
                        };
                        if v.is_null() {
                            continue;
                        }
                        if key != "Disable" {
                            self.apply_extension(doc, name, key, v)?;
                            continue;
                        }
                        let (key, slot) = match name {
                            "FileTransfer" => ("FileTransfer.Disable", &mut self.file_transfer_disable),
                            "PortForward" => ("PortForward.Disable", &mut self.port_forward_disable),
                            _ => ("MenderClient.Disable", &mut self.mender_client_disable),
                        };
                        *slot = doc.bool(key, v)?;
                        self.mark(key);
                    }
                }
                _ => self.apply_limits(doc, name, v, warnings)?,
            }
        }
        Ok(())
    }

    /// The keys this agent adds to the reference's `FileTransfer` and `PortForward` blocks.
    fn apply_extension(
        &mut self,
        doc: &Doc<'_>,
        block: &str,
        key: &str,
        v: &Value,
    ) -> Result<(), ConfigError> {
        match (block, key) {
            ("FileTransfer", _) => {
                let full = "FileTransfer.AckWindowChunks";
                let n = doc.unsigned(full, v, u64::from(MAX_ACK_WINDOW_CHUNKS), "chunks")?;
                if n == 0 {
                    return Err(
                        doc.invalid(full, format!("must be from 1 to {MAX_ACK_WINDOW_CHUNKS}, not 0"))
                    );
                }
                self.ft_ack_window = Some(n as u32);
                self.mark(full);
            }
            (_, "ConnectTimeoutSeconds") | (_, "IdleTimeoutSeconds") => {
                let (full, slot) = if key == "ConnectTimeoutSeconds" {
                    ("PortForward.ConnectTimeoutSeconds", &mut self.pf_connect_timeout)
                } else {
                    ("PortForward.IdleTimeoutSeconds", &mut self.pf_idle_timeout)
                };
                let n = doc.unsigned(full, v, MAX_PORT_FORWARD_TIMEOUT_SECS, "seconds")?;
                if n == 0 {
                    return Err(doc.invalid(
                        full,
                        format!("must be from 1 to {MAX_PORT_FORWARD_TIMEOUT_SECS} seconds, not 0"),
                    ));
                }
                *slot = Some(n);
                self.mark(full);
            }
            (_, "MaxConnectionsPerSession") | (_, "MaxConnections") => {
                let (full, slot) = if key == "MaxConnections" {
                    ("PortForward.MaxConnections", &mut self.pf_max_connections)
                } else {
                    ("PortForward.MaxConnectionsPerSession", &mut self.pf_max_per_session)
                };
                let n = doc.unsigned(full, v, MAX_PORT_FORWARD_CONNECTIONS, "connections")?;
                if n == 0 {
                    return Err(
                        doc.invalid(full, format!("must be from 1 to {MAX_PORT_FORWARD_CONNECTIONS}, not 0"))
                    );
                }
                *slot = Some(n as usize);
                self.mark(full);
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_limits(
        &mut self,
        doc: &Doc<'_>,
        name: &str,
        v: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        for (k, v) in doc.object(name, v)? {
            let Some(sub) = canonical(k, LIMITS_KEYS) else {
                warnings.push(unknown_key(doc, "Limits.", k, LIMITS_KEYS));
                continue;
            };
            if v.is_null() {
                continue;
            }
            if sub == "Enabled" {
                self.limits_enabled = doc.bool("Limits.Enabled", v)?;
                self.mark("Limits.Enabled");
                continue;
            }
            for (k, v) in doc.object("Limits.FileTransfer", v)? {
                let Some(key) = canonical(k, FT_KEYS) else {
                    if k.eq_ignore_ascii_case("PreserveGroup") {
                        warnings.push(format!(
                            "{}unknown key \"Limits.FileTransfer.{k}\" (mender-connect has no such setting: \
                             the group follows PreserveOwner)",
                            doc.where_()
                        ));
                    } else {
                        warnings.push(unknown_key(doc, "Limits.FileTransfer.", k, FT_KEYS));
                    }
                    continue;
                };
                if v.is_null() {
                    continue;
                }
                self.apply_ft(doc, key, v, warnings)?;
            }
        }
        Ok(())
    }

    fn apply_ft(
        &mut self,
        doc: &Doc<'_>,
        key: &'static str,
        v: &Value,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let ft = &mut self.ft;
        let full = ft_path(key);
        match key {
            "Chroot" => ft.chroot = doc.string(full, v)?,
            "FollowSymLinks" => ft.follow_symlinks = doc.bool(full, v)?,
            "AllowOverwrite" => ft.allow_overwrite = doc.bool(full, v)?,
            "OwnerPut" => ft.owner_put = doc.string(full, v)?,
            "GroupPut" => ft.group_put = doc.string(full, v)?,
            "OwnerGet" => ft.owner_get = doc.strings(full, v)?,
            "GroupGet" => ft.group_get = doc.strings(full, v)?,
            "Umask" => ft.umask = doc.string(full, v)?,
            "MaxFileSize" => ft.max_file_size = doc.unsigned(full, v, u64::MAX, "uint64")?,
            "AllowSuid" => ft.allow_suid = doc.bool(full, v)?,
            "RegularFilesOnly" => ft.regular_files_only = doc.bool(full, v)?,
            "PreserveMode" => ft.preserve_mode = doc.bool(full, v)?,
            "PreserveOwner" => ft.preserve_owner = doc.bool(full, v)?,
            _ => {
                for (k, v) in doc.object(full, v)? {
                    let Some(c) = canonical(k, COUNTERS_KEYS) else {
                        warnings.push(unknown_key(doc, "Limits.FileTransfer.Counters.", k, COUNTERS_KEYS));
                        continue;
                    };
                    if v.is_null() {
                        continue;
                    }
                    let full = counters_path(c);
                    let n = doc.unsigned(full, v, u64::MAX, "uint64")?;
                    if c == "MaxBytesTxPerMinute" {
                        self.ft.max_bytes_tx_per_minute = n;
                    } else {
                        self.ft.max_bytes_rx_per_minute = n;
                    }
                    self.mark(full);
                }
                return Ok(());
            }
        }
        self.mark(full);
        Ok(())
    }

    /// Applies defaults, reduces to what takes effect and reports what is ignored.
    fn finish(mut self, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
        let invalid =
            |key: &str, reason: String| ConfigError::Invalid { path: None, key: key.to_owned(), reason };

        let shell_command = if self.shell_command.is_empty() {
            // Leaving the key out is how one asks for the default; only an explicit "" is odd.
            if self.has("ShellCommand") {
                warnings.push(format!("ShellCommand is empty, defaulting to {DEFAULT_SHELL_COMMAND}"));
            }
            PathBuf::from(DEFAULT_SHELL_COMMAND)
        } else {
            PathBuf::from(&self.shell_command)
        };
        let shell_arguments = self
            .shell_arguments
            .clone()
            .unwrap_or_else(|| DEFAULT_SHELL_ARGUMENTS.iter().map(|s| (*s).to_owned()).collect());

        let terminal = Terminal {
            disable: self.terminal_disable,
            height: if self.terminal_height == 0 { DEFAULT_TERMINAL_HEIGHT } else { self.terminal_height },
            width: if self.terminal_width == 0 { DEFAULT_TERMINAL_WIDTH } else { self.terminal_width },
        };
        if terminal.disable {
            for key in ["Terminal.Height", "Terminal.Width", "ShellArguments", "Sessions.MaxPerUser"] {
                if self.has(key) {
                    warnings.push(format!(
                        "{key} has no effect: the remote terminal is disabled (Terminal.Disable)"
                    ));
                }
            }
        }

        let secs = |n: u32| (n > 0).then(|| Duration::from_secs(n.into()));
        // mender-connect 3.0 (`applyDefaults`): StopExpired defaults to true, and with neither
        // expiry set (both 0) ExpireAfterIdle becomes 600 s.
        let stop_expired =
            if self.has("Sessions.StopExpired") { self.stop_expired } else { DEFAULT_STOP_EXPIRED };
        let sessions = if stop_expired {
            if self.expire_after > 0 && self.expire_after_idle > 0 {
                if !self.has("Sessions.StopExpired") {
                    // A 2.x file with both keys and no StopExpired had no expiry at all; under
                    // 3.0's default it starts with a warning, idle winning: so does ours.
                    warnings.push(
                        "Sessions.ExpireAfter has no effect: Sessions.ExpireAfterIdle is also set \
                         (and Sessions.StopExpired now defaults to true)"
                            .into(),
                    );
                    self.expire_after = 0;
                } else {
                    return Err(invalid(
                        "Sessions.ExpireAfter",
                        "cannot be combined with Sessions.ExpireAfterIdle: set only one of them \
                         (mender-connect 2.1.0 ignored ExpireAfter in that case)"
                            .into(),
                    ));
                }
            }
            if self.expire_after == 0 && self.expire_after_idle == 0 {
                self.expire_after_idle =
                    u32::try_from(DEFAULT_EXPIRE_AFTER_IDLE.as_secs()).unwrap_or(u32::MAX);
            }
            Sessions {
                stop_expired: true,
                expire_after: secs(self.expire_after),
                expire_after_idle: secs(self.expire_after_idle),
                max_per_user: self.max_per_user.max(DEFAULT_MAX_SESSIONS_PER_USER),
            }
        } else {
            for key in ["Sessions.ExpireAfter", "Sessions.ExpireAfterIdle"] {
                let set =
                    if key == "Sessions.ExpireAfter" { self.expire_after } else { self.expire_after_idle };
                if set > 0 {
                    warnings.push(format!("{key} has no effect: Sessions.StopExpired is false"));
                }
            }
            Sessions {
                stop_expired: false,
                expire_after: None,
                expire_after_idle: None,
                max_per_user: self.max_per_user.max(DEFAULT_MAX_SESSIONS_PER_USER),
            }
        };

        let reconnect_interval = match self.reconnect_interval_seconds {
            0 => DEFAULT_RECONNECT_INTERVAL,
            n if n < 0 => {
                warnings.push(format!(
                    "ReconnectIntervalSeconds: {n} is negative, using the default {}",
                    DEFAULT_RECONNECT_INTERVAL.as_secs()
                ));
                DEFAULT_RECONNECT_INTERVAL
            }
            n => Duration::from_secs(n.unsigned_abs()),
        };
        let reconnect_max_interval = match self.reconnect_max_interval_seconds {
            Some(n) if Duration::from_secs(n) < reconnect_interval => {
                return Err(invalid(
                    "ReconnectMaxIntervalSeconds",
                    format!("{n} is less than ReconnectIntervalSeconds ({})", reconnect_interval.as_secs()),
                ));
            }
            Some(n) => Duration::from_secs(n),
            None => DEFAULT_RECONNECT_MAX_INTERVAL.max(reconnect_interval),
        };

        let limits = self.finish_limits(warnings)?;
        if self.file_transfer_disable && self.has("FileTransfer.AckWindowChunks") {
            warnings.push("FileTransfer.AckWindowChunks has no effect: file transfer is disabled (FileTransfer.Disable)".into());
        }
        if self.port_forward_disable
            && (self.has("PortForward.ConnectTimeoutSeconds") || self.has("PortForward.IdleTimeoutSeconds"))
        {
            warnings.push(
                "PortForward timeouts have no effect: port forwarding is disabled (PortForward.Disable)"
                    .into(),
            );
        }
        if self.port_forward_disable
            && (self.has("PortForward.MaxConnectionsPerSession") || self.has("PortForward.MaxConnections"))
        {
            warnings.push("PortForward connection limits have no effect: port forwarding is disabled (PortForward.Disable)".into());
        }
        let port_forward_limits = PortForwardLimits {
            per_session: self.pf_max_per_session.unwrap_or(DEFAULT_PORT_FORWARD_MAX_PER_SESSION),
            total: self.pf_max_connections.unwrap_or(DEFAULT_PORT_FORWARD_MAX_CONNECTIONS),
        };
        if port_forward_limits.per_session > port_forward_limits.total {
            warnings.push(format!(
                "PortForward.MaxConnectionsPerSession ({}) is above PortForward.MaxConnections ({}): the latter bounds every session",
                port_forward_limits.per_session, port_forward_limits.total
            ));
        }
        let file_transfer_ack_window = self.ft_ack_window.unwrap_or(DEFAULT_ACK_WINDOW_CHUNKS);
        let port_forward_timeouts = PortForwardTimeouts {
            connect: self
                .pf_connect_timeout
                .map_or(DEFAULT_PORT_FORWARD_CONNECT_TIMEOUT, Duration::from_secs),
            idle: self.pf_idle_timeout.map_or(DEFAULT_PORT_FORWARD_IDLE_TIMEOUT, Duration::from_secs),
        };

        let control_socket = if self.control_socket.is_empty() {
            PathBuf::from(DEFAULT_CONTROL_SOCKET)
        } else {
            PathBuf::from(&self.control_socket)
        };
        if !control_socket.is_absolute() {
            return Err(invalid(
                "ControlSocket",
                format!("{} is not an absolute path", control_socket.display()),
            ));
        }

        let standalone = std::mem::take(&mut self.standalone).finish(warnings)?;
        if standalone.is_some() && !cfg!(feature = "standalone") {
            return Err(invalid(
                "Standalone",
                "this build has no standalone mode (cargo feature standalone)".into(),
            ));
        }
        if standalone.is_none() && !cfg!(feature = "dbus-auth") {
            return Err(invalid(
                "Standalone.ServerURL",
                "required: this build has no D-Bus support (feature dbus-auth), so the agent must authenticate itself".into(),
            ));
        }
        Ok(Config {
            standalone,
            control_socket,
            shell_command,
            shell_arguments,
            user: self.user,
            terminal,
            sessions,
            reconnect_interval,
            reconnect_max_interval,
            file_transfer: Feature { disable: self.file_transfer_disable },
            port_forward: Feature { disable: self.port_forward_disable },
            mender_client: Feature { disable: self.mender_client_disable },
            limits,
            file_transfer_ack_window,
            port_forward_timeouts,
            port_forward_limits,
        })
    }

    fn finish_limits(&self, warnings: &mut Vec<String>) -> Result<Limits, ConfigError> {
        let ft = &self.ft;
        let enabled = self.limits_enabled;
        let invalid =
            |key: &str, reason: String| ConfigError::Invalid { path: None, key: key.to_owned(), reason };

        let umask = if ft.umask.is_empty() {
            None
        } else {
            match parse_umask(&ft.umask) {
                Some(m) => Some(m),
                None if enabled => {
                    return Err(invalid(
                        "Limits.FileTransfer.Umask",
                        format!("{:?} is not an octal umask from 0 to 0777 (e.g. \"022\")", ft.umask),
                    ));
                }
                None => None,
            }
        };
        let chroot = (!ft.chroot.is_empty()).then(|| PathBuf::from(&ft.chroot));
        if enabled && chroot.as_ref().is_some_and(|c| !c.is_absolute()) {
            return Err(invalid(
                "Limits.FileTransfer.Chroot",
                format!("{:?} is not an absolute path", ft.chroot),
            ));
        }

        let limit_keys: Vec<&str> =
            self.present.iter().copied().filter(|k| k.starts_with("Limits.FileTransfer.")).collect();
        if !enabled {
            for key in &limit_keys {
                warnings.push(format!("{key} has no effect: Limits.Enabled is not true"));
            }
        } else {
            for (key, val) in [
                ("Limits.FileTransfer.PreserveMode", ft.preserve_mode),
                ("Limits.FileTransfer.PreserveOwner", ft.preserve_owner),
            ] {
                if self.has(key) && !val {
                    warnings.push(format!(
                        "{key}: false has no effect: mender-connect always preserves it (as 2.1.0 does)"
                    ));
                }
            }
        }
        if self.file_transfer_disable && enabled && !limit_keys.is_empty() {
            warnings.push(
                "Limits.FileTransfer has no effect: file transfer is disabled (FileTransfer.Disable)".into(),
            );
        }

        let nonzero = |n: u64| (n > 0).then_some(n);
        let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
        Ok(Limits {
            enabled,
            file_transfer: FileTransferLimits {
                chroot,
                follow_symlinks: ft.follow_symlinks,
                allow_overwrite: ft.allow_overwrite,
                owner_put: nonempty(&ft.owner_put),
                group_put: nonempty(&ft.group_put),
                owner_get: ft.owner_get.clone(),
                group_get: ft.group_get.clone(),
                umask,
                max_file_size: nonzero(ft.max_file_size),
                counters: RateLimits {
                    max_bytes_tx_per_minute: nonzero(ft.max_bytes_tx_per_minute),
                    max_bytes_rx_per_minute: nonzero(ft.max_bytes_rx_per_minute),
                },
                allow_suid: ft.allow_suid,
                regular_files_only: ft.regular_files_only,
                // The reference overwrites both with true after loading.
                preserve_mode: true,
                preserve_owner: true,
            },
        })
    }
}

fn ft_path(key: &str) -> &'static str {
    FT_FULL.iter().find(|f| f.rsplit('.').next() == Some(key)).copied().unwrap_or("Limits.FileTransfer")
}

const FT_FULL: &[&str] = &[
    "Limits.FileTransfer.Chroot",
    "Limits.FileTransfer.FollowSymLinks",
    "Limits.FileTransfer.AllowOverwrite",
    "Limits.FileTransfer.OwnerPut",
    "Limits.FileTransfer.GroupPut",
    "Limits.FileTransfer.OwnerGet",
    "Limits.FileTransfer.GroupGet",
    "Limits.FileTransfer.Umask",
    "Limits.FileTransfer.MaxFileSize",
    "Limits.FileTransfer.Counters",
    "Limits.FileTransfer.AllowSuid",
    "Limits.FileTransfer.RegularFilesOnly",
    "Limits.FileTransfer.PreserveMode",
    "Limits.FileTransfer.PreserveOwner",
];

fn counters_path(key: &str) -> &'static str {
    if key == "MaxBytesTxPerMinute" {
        "Limits.FileTransfer.Counters.MaxBytesTxPerMinute"
    } else {
        "Limits.FileTransfer.Counters.MaxBytesRxPerMinute"
    }
}

/// The reference parses `Umask` with `strconv.ParseUint(s, 8, 32)`: octal digits only.
fn parse_umask(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

/// The deprecated keys are still type-checked by the reference (it decodes them into a struct).
fn check_deprecated(doc: &Doc<'_>, key: &str, v: &Value) -> Result<(), ConfigError> {
    match (key, v) {
        (_, Value::Null) => Ok(()),
        ("SkipVerify", Value::Bool(_)) => Ok(()),
        ("Servers", Value::Array(_)) | ("HttpsClient", Value::Object(_)) => Ok(()),
        ("ServerURL" | "ClientProtocol" | "ServerCertificate", Value::String(_)) => Ok(()),
        _ => Err(doc.invalid(
            key,
            format!("has the wrong type ({}) (deprecated and ignored, but must still parse)", kind(v)),
        )),
    }
}

fn syntax_message(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the position is reported separately.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Checks against this machine: the shell and the user.
mod system {
    use super::{Config, ConfigError, DEFAULT_SHELL_COMMAND};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn invalid(key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid { path: None, key: key.to_owned(), reason }
    }

    pub(super) fn check(
        config: &Config,
        shells: &Path,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let shell = &config.shell_command;
        if !shell.is_absolute() {
            return Err(invalid(
                "ShellCommand",
                format!("given shell ({}) is not an absolute path", shell.display()),
            ));
        }
        let executable = std::fs::metadata(shell)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            return Err(invalid(
                "ShellCommand",
                format!("given shell ({}) is not executable", shell.display()),
            ));
        }
        if config.user.is_empty() {
            return Err(invalid("User", "please provide a user to run the shell as".into()));
        }
        match crate::os::users::lookup_user(&config.user) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(invalid("User", format!("unknown user {}", config.user))),
            Err(e) => {
                return Err(invalid("User", format!("cannot look up user {}: {e}", config.user)));
            }
        }
        match std::fs::read_to_string(shells) {
            Ok(list) => {
                let listed = list.lines().map(str::trim).any(|l| Path::new(l) == shell.as_path());
                if !listed {
                    return Err(invalid(
                        "ShellCommand",
                        format!("{} is not present in {}", shell.display(), shells.display()),
                    ));
                }
            }
            // Without /etc/shells the reference accepts only its default shell.
            Err(_) if shell.as_path() == Path::new(DEFAULT_SHELL_COMMAND) => {}
            Err(e) => {
                return Err(invalid(
                    "ShellCommand",
                    format!("{} cannot be checked against {}: {e}", shell.display(), shells.display()),
                ));
            }
        }
        let ft = &config.limits.file_transfer;
        if config.limits.enabled {
            if let Some(owner) = &ft.owner_put {
                if !matches!(crate::os::users::lookup_user(owner), Ok(Some(_))) {
                    warnings.push(format!(
                        "Limits.FileTransfer.OwnerPut: unknown user {owner}: every upload will fail"
                    ));
                }
            }
            if let Some(group) = &ft.group_put {
                if !matches!(crate::os::users::lookup_group(group), Ok(Some(_))) {
                    warnings.push(format!(
                        "Limits.FileTransfer.GroupPut: unknown group {group}: every upload will fail"
                    ));
                }
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::super::Config;
        use super::check;
        use std::path::Path;

        fn cfg(json: &str) -> Config {
            Config::from_json_str(json).map(|l| l.config).unwrap_or_else(|e| panic!("{e}"))
        }

        #[test]
        fn relative_shell_is_rejected() {
            let e =
                check(&cfg(r#"{"ShellCommand":"sh","User":"root"}"#), Path::new("/etc/shells"), &mut vec![])
                    .unwrap_err()
                    .to_string();
            assert!(e.starts_with("ShellCommand:") && e.contains("absolute"), "{e}");
        }

        #[test]
        fn non_executable_shell_is_rejected() {
            let e = check(
                &cfg(r#"{"ShellCommand":"/etc/passwd","User":"root"}"#),
                Path::new("/etc/shells"),
                &mut vec![],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("not executable"), "{e}");
        }

        #[test]
        fn missing_user_is_rejected() {
            let e = check(&cfg(r#"{"ShellCommand":"/bin/sh"}"#), Path::new("/etc/shells"), &mut vec![])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("User:") && e.contains("provide a user"), "{e}");
            let e = check(
                &cfg(r#"{"ShellCommand":"/bin/sh","User":"no-such-user-mcrs"}"#),
                Path::new("/etc/shells"),
                &mut vec![],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("unknown user no-such-user-mcrs"), "{e}");
        }

        #[test]
        fn shell_must_be_listed() {
            let dir = std::env::temp_dir().join(format!("mcrs-shells-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let shells = dir.join("shells");
            std::fs::write(&shells, "# comment\n/bin/sh\n").unwrap();
            let ok = check(&cfg(r#"{"ShellCommand":"/bin/sh","User":"root"}"#), &shells, &mut vec![]);
            assert!(ok.is_ok(), "{ok:?}");
            let e = check(&cfg(r#"{"ShellCommand":"/usr/bin/env","User":"root"}"#), &shells, &mut vec![])
                .unwrap_err()
                .to_string();
            assert!(e.contains("/usr/bin/env is not present in"), "{e}");
            // Without the file only the default shell passes.
            let missing = dir.join("absent");
            assert!(
                check(&cfg(r#"{"ShellCommand":"/bin/sh","User":"root"}"#), &missing, &mut vec![]).is_ok()
            );
            assert!(
                check(&cfg(r#"{"ShellCommand":"/usr/bin/env","User":"root"}"#), &missing, &mut vec![])
                    .is_err()
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

pub(crate) mod check;
pub(crate) mod endpoint;
pub(crate) mod standalone;

#[cfg(test)]
mod tests;
