//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// deviceconnect v4.1.0+ (MEN-8439): `pingPeriod = pongWait / 2` with `pongWait` 60 s, payload
/// "60"; the ticker restarts on every frame written to the device.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// deviceconnect's `pongWait`: the read deadline, renewed by every frame from the device.
pub const READ_DEADLINE: Duration = Duration::from_secs(60);

pub const DEFAULT_USER: &str = "admin@example.com";
pub const DEFAULT_PASSWORD: &str = "mysecretpassword";

pub const USAGE: &str = "\
mender-mock-server: in-memory stand-in for the Mender Server (device auth, useradm login,
devauth v2, deviceconnect websockets, file transfer, check-update/send-inventory).

USAGE:
    mender-mock-server [--listen ADDR:PORT] [--tls-cert PEM --tls-key PEM]
                       [--user EMAIL:PASSWORD]... [--auto-accept] [options]

The first line on stdout is the base URL served (http://127.0.0.1:PORT or https://...).
Logs go to stderr, one line per request and per websocket event.

OPTIONS:
    --listen ADDR:PORT        address to bind (default 127.0.0.1:0; port 0 picks a free port)
    --allow-non-loopback      permit binding a non-loopback address
    --tls-cert FILE           PEM certificate chain; serve HTTPS (needs --tls-key)
    --tls-key FILE            PEM private key (PKCS#8, PKCS#1 or SEC1)
    --user EMAIL:PASSWORD     add a management user (repeatable); without any, the default
                              user admin@example.com / mysecretpassword exists
    --auto-accept             accept new devices (new auth sets) on first contact
    --device-token-ttl SECS   device JWT lifetime (default 604800)
    --user-token-ttl SECS     user JWT lifetime (default 604800)
    --ping-interval SECS      websocket ping after this long without output to a device (default 30,
                              as deviceconnect since v4.1.0; 54 before)
    --no-disconnect-notice    do not send users shell `stop` \"device disconnected\" when the
                              device socket ends
    --state FILE              keep signing key, users, devices, auth sets and device tokens in
                              FILE (loaded at start, saved on change) so they survive a restart
    --device IDENTITY_JSON    create an accepted device with this identity at start-up (no key;
                              for agents given a token directly), e.g. '{\"mac\":\"52:54:00:12:34:56\"}'
    --device-token-out FILE   write that device's JWT to FILE (and its id to FILE.id)
    --playback-sleep-ms MS    pause before each session-playback message (default 100)
    --session-byte-limit N    shell output bytes per user session before the server stops the
                              shell (default 8388608, as the real server)
    -v, --verbose             log every websocket frame (debug level)
    -h, --help                print this help
";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub allow_non_loopback: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub users: Vec<(String, String)>,
    pub auto_accept: bool,
    pub device_token_ttl: i64,
    pub user_token_ttl: i64,
    pub ping_interval: Duration,
    pub disconnect_notice: bool,
    pub verbose: bool,
    pub state_file: Option<PathBuf>,
    pub device: Option<serde_json::Value>,
    pub device_token_out: Option<PathBuf>,
    pub playback_sleep: Duration,
    pub session_byte_limit: usize,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    Help,
    Usage(String),
}

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, ConfigError> {
    args.next().ok_or_else(|| ConfigError::Usage(format!("{flag} needs a value")))
}

fn positive(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<i64, ConfigError> {
    let v = value(args, flag)?;
    v.parse::<i64>()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| ConfigError::Usage(format!("{flag}: not a positive number: {v}")))
}

impl Config {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Config, ConfigError> {
        let mut args = args.into_iter();
        let mut cfg = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            tls: None,
            users: Vec::new(),
            auto_accept: false,
            device_token_ttl: 604_800,
            user_token_ttl: 604_800,
            ping_interval: DEFAULT_PING_INTERVAL,
            disconnect_notice: true,
            verbose: false,
            state_file: None,
            device: None,
            device_token_out: None,
            playback_sleep: Duration::from_millis(100),
            session_byte_limit: 8 << 20,
        };
        let (mut cert, mut key) = (None, None);
        while let Some(arg) = args.next() {
            // Accept both "--flag value" and "--flag=value".
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut it = inline.into_iter().chain(&mut args);
            match flag.as_str() {
                "-h" | "--help" => return Err(ConfigError::Help),
                "--listen" => {
                    let v = value(&mut it, "--listen")?;
                    cfg.listen =
                        v.parse().map_err(|_| ConfigError::Usage(format!("--listen: not ADDR:PORT: {v}")))?;
                }
                "--allow-non-loopback" => cfg.allow_non_loopback = true,
                "--tls-cert" => cert = Some(PathBuf::from(value(&mut it, "--tls-cert")?)),
                "--tls-key" => key = Some(PathBuf::from(value(&mut it, "--tls-key")?)),
                "--user" => {
                    let v = value(&mut it, "--user")?;
                    let (email, password) = v
                        .split_once(':')
                        .filter(|(e, _)| !e.is_empty())
                        .ok_or_else(|| ConfigError::Usage(format!("--user: not EMAIL:PASSWORD: {v}")))?;
                    cfg.users.push((email.to_lowercase(), password.to_owned()));
                }
                "--auto-accept" => cfg.auto_accept = true,
                "--device-token-ttl" => cfg.device_token_ttl = positive(&mut it, "--device-token-ttl")?,
                "--user-token-ttl" => cfg.user_token_ttl = positive(&mut it, "--user-token-ttl")?,
                "--ping-interval" => {
                    cfg.ping_interval =
                        Duration::from_secs(positive(&mut it, "--ping-interval")?.unsigned_abs())
                }
                "--no-disconnect-notice" => cfg.disconnect_notice = false,
                "-v" | "--verbose" => cfg.verbose = true,
                "--playback-sleep-ms" => {
                    let v = value(&mut it, "--playback-sleep-ms")?;
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| ConfigError::Usage(format!("--playback-sleep-ms: not a number: {v}")))?;
                    cfg.playback_sleep = Duration::from_millis(ms);
                }
                "--session-byte-limit" => {
                    cfg.session_byte_limit = usize::try_from(positive(&mut it, "--session-byte-limit")?)
                        .map_err(|_| ConfigError::Usage("--session-byte-limit: too large".into()))?;
                }
                "--state" => cfg.state_file = Some(PathBuf::from(value(&mut it, "--state")?)),
                "--device" => {
                    let v = value(&mut it, "--device")?;
                    let id: serde_json::Value = serde_json::from_str(&v)
                        .ok()
                        .filter(serde_json::Value::is_object)
                        .ok_or_else(|| ConfigError::Usage(format!("--device: not a JSON object: {v}")))?;
                    cfg.device = Some(id);
                }
                "--device-token-out" => {
                    cfg.device_token_out = Some(PathBuf::from(value(&mut it, "--device-token-out")?))
                }
                other => return Err(ConfigError::Usage(format!("unknown argument: {other}"))),
            }
        }
        cfg.tls = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::Usage("--tls-cert and --tls-key go together".into())),
        };
        if cfg.device_token_out.is_some() && cfg.device.is_none() {
            return Err(ConfigError::Usage("--device-token-out needs --device".into()));
        }
        if !cfg.allow_non_loopback && !cfg.listen.ip().is_loopback() {
            return Err(ConfigError::Usage(format!(
                "refusing to listen on non-loopback address {} (pass --allow-non-loopback)",
                cfg.listen.ip()
            )));
        }
        if cfg.users.is_empty() {
            cfg.users.push((DEFAULT_USER.into(), DEFAULT_PASSWORD.into()));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mender-server deviceconnect v4.1.0+ `api/http/device.go`: `pingPeriod := pongWait / 2`,
    /// `pongWait` 60 s.
    #[test]
    fn device_ping_interval_follows_deviceconnect_4_1() {
        let cfg = Config::parse(Vec::<String>::new()).unwrap();
        assert_eq!(cfg.ping_interval, Duration::from_secs(30));
        assert_eq!(READ_DEADLINE, 2 * cfg.ping_interval);
    }
}
