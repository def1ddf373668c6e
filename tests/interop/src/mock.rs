//! The workspace's mock Mender Server as a process, and the parts of the real server's management
//! API (as documented and as the real server answers) that the tests drive.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binaries::WorkspaceBin;
use crate::http::{self, Auth, Body, Response};
use crate::process::ManagedChild;
use crate::wait;
use crate::{Error, TestEnv};

/// The management user every test's mock server has.
pub const USER_EMAIL: &str = "interop@example.com";
/// Its password.
pub const USER_PASSWORD: &str = "interop-secret-1";

/// How a mock server is started.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// Accept new devices on first contact (`--auto-accept`).
    pub auto_accept: bool,
    /// Bind this address instead of `127.0.0.1:0`.
    pub listen: Option<std::net::SocketAddr>,
    /// Keep the server's state in this file (`--state`), so that a restarted server (same
    /// `listen` address) keeps its users, devices and tokens.
    pub state_file: Option<std::path::PathBuf>,
    /// Further command-line arguments (see `mender-mock-server --help`), e.g. `--verbose`.
    pub extra_args: Vec<String>,
}

/// A running mock server.
pub struct MockServer {
    url: String,
    options: MockOptions,
    child: ManagedChild,
}

impl MockServer {
    /// Builds (once) and starts `mender-mock-server`, and waits for the base URL it prints.
    pub fn start(env: &TestEnv, options: &MockOptions) -> Result<Self, Error> {
        let program = WorkspaceBin::MockServer.path()?;
        let mut cmd = Command::new(program);
        let listen = options.listen.map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:0".to_owned());
        cmd.args(["--listen", &listen]).args(["--user", &format!("{USER_EMAIL}:{USER_PASSWORD}")]);
        if options.auto_accept {
            cmd.arg("--auto-accept");
        }
        if let Some(state) = &options.state_file {
            cmd.arg("--state").arg(state);
        }
        cmd.args(&options.extra_args);
        let (child, url) =
            ManagedChild::spawn_reading_first_line(env, "mock-server", cmd, Duration::from_secs(60))?;
        if !url.starts_with("http://127.0.0.1:") {
            return Err(child.failure(&format!("printed {url:?}, expected http://127.0.0.1:PORT")));
        }
        Ok(MockServer { url: url.trim_end_matches('/').to_owned(), options: options.clone(), child })
    }

    /// Stops the server and starts it again on the same address with the same options (so with
    /// the same state if `state_file` was set), as when a real server restarts.
    pub fn restart(&mut self, env: &TestEnv) -> Result<(), Error> {
        let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port()?));
        self.child.stop();
        let options = MockOptions { listen: Some(addr), ..self.options.clone() };
        let restarted = MockServer::start(env, &options)?;
        if restarted.url != self.url {
            return Err(Error::protocol(
                "mock-server",
                format!("restarted at {}, expected {}", restarted.url, self.url),
            ));
        }
        *self = restarted;
        Ok(())
    }

    /// Base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port it listens on.
    pub fn port(&self) -> Result<u16, Error> {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Error::protocol("mock-server", format!("no port in {}", self.url)))
    }

    /// Stops the server (SIGTERM, then SIGKILL) and reaps it; restart with [`MockServer::start`]
    /// on the same `listen` address and `state_file`.
    pub fn stop(mut self) {
        self.child.stop();
    }

    /// Fails if the server process has died.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        self.child.ensure_running()
    }

    /// The server's process id (the benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// Logs in as the test user (`POST /api/management/v1/useradm/auth/login`).
    pub fn login(&self) -> Result<ManagementApi, Error> {
        ManagementApi::login(&self.url, USER_EMAIL, USER_PASSWORD)
    }
}

/// A device as the devauth management API lists it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// Device status (`pending`, `accepted`, `preauthorized`, ...).
    pub status: String,
    /// The identity attributes.
    pub identity: Value,
    /// Its authentication sets.
    pub auth_sets: Vec<AuthSet>,
}

/// One authentication set (identity + public key) of a device.
#[derive(Debug, Clone)]
pub struct AuthSet {
    /// Auth set id.
    pub id: String,
    /// Its status.
    pub status: String,
    /// Its public key (normalised PEM).
    pub pubkey: String,
}

impl Device {
    fn from_json(value: &Value) -> Result<Self, Error> {
        let text = |v: &Value, key: &str| -> Result<String, Error> {
            v[key].as_str().map(str::to_owned).ok_or_else(|| {
                Error::protocol("mock-server", format!("device JSON lacks string `{key}`: {v}"))
            })
        };
        let auth_sets = match &value["auth_sets"] {
            Value::Array(sets) => sets
                .iter()
                .map(|set| {
                    Ok(AuthSet {
                        id: text(set, "id")?,
                        status: text(set, "status")?,
                        pubkey: text(set, "pubkey")?,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?,
            // The real server writes `null` when a device has no auth sets.
            _ => Vec::new(),
        };
        Ok(Device {
            id: text(value, "id")?,
            status: text(value, "status")?,
            identity: value["identity_data"].clone(),
            auth_sets,
        })
    }
}

/// A logged-in management API session.
#[derive(Debug, Clone)]
pub struct ManagementApi {
    base: String,
    token: String,
}

fn expect_status(response: &Response, method: &str, url: &str, expected: &[u16]) -> Result<(), Error> {
    if expected.contains(&response.status) {
        Ok(())
    } else {
        Err(Error::Http {
            method: method.to_owned(),
            url: url.to_owned(),
            detail: format!("status {} (expected {expected:?}), body: {}", response.status, response.body),
        })
    }
}

impl ManagementApi {
    /// Logs in with HTTP Basic credentials and keeps the user JWT.
    pub fn login(base: &str, email: &str, password: &str) -> Result<Self, Error> {
        let url = format!("{base}/api/management/v1/useradm/auth/login");
        let response = http::request("POST", &url, Auth::Basic(email, password), Body::Empty)?;
        expect_status(&response, "POST", &url, &[200])?;
        // The real server sends the raw JWT without a newline; mender-cli relies on that.
        if response.body.trim() != response.body || response.body.split('.').count() != 3 {
            return Err(Error::protocol(
                "mock-server",
                format!("login body is not a bare JWT: {:?}", response.body),
            ));
        }
        Ok(ManagementApi { base: base.to_owned(), token: response.body })
    }

    /// The user JWT.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A raw authenticated request to `path` under the server's base URL.
    pub fn request(&self, method: &str, path: &str, body: Body<'_>) -> Result<Response, Error> {
        http::request(method, &format!("{}{path}", self.base), Auth::Bearer(&self.token), body)
    }

    /// `GET /api/management/v2/devauth/devices` (all pages).
    pub fn devices(&self) -> Result<Vec<Device>, Error> {
        let mut devices = Vec::new();
        // Bounded: a test never has more than a handful of devices.
        for page in 1..=20 {
            let path = format!("/api/management/v2/devauth/devices?page={page}&per_page=500");
            let response = self.request("GET", &path, Body::Empty)?;
            expect_status(&response, "GET", &path, &[200])?;
            let list = response.json("mock-server")?;
            let Value::Array(items) = list else {
                return Err(Error::protocol("mock-server", format!("device list is not an array: {list}")));
            };
            let n = items.len();
            for item in &items {
                devices.push(Device::from_json(item)?);
            }
            if n < 500 {
                break;
            }
        }
        Ok(devices)
    }

    /// The device whose identity has `key` = `value`, if listed.
    pub fn find_device(&self, key: &str, value: &str) -> Result<Option<Device>, Error> {
        Ok(self.devices()?.into_iter().find(|d| d.identity[key].as_str() == Some(value)))
    }

    /// `GET /api/management/v2/devauth/devices/{id}`.
    pub fn device(&self, id: &str) -> Result<Device, Error> {
        let path = format!("/api/management/v2/devauth/devices/{id}");
        let response = self.request("GET", &path, Body::Empty)?;
        expect_status(&response, "GET", &path, &[200])?;
        Device::from_json(&response.json("mock-server")?)
    }

    /// Waits until a device with identity `key` = `value` is listed with `status`.
    pub fn wait_for_device(&self, key: &str, value: &str, status: &str) -> Result<Device, Error> {
        wait::until(
            &format!("device {key}={value} to be listed as {status}"),
            wait::PEER_TIMEOUT,
            Duration::from_millis(500),
            || Ok(self.find_device(key, value)?.filter(|d| d.status == status)),
        )
    }

    /// `PUT /api/management/v2/devauth/devices/{id}/auth/{aid}/status` `{"status": status}`.
    pub fn set_auth_set_status(&self, device_id: &str, auth_set_id: &str, status: &str) -> Result<(), Error> {
        let path = format!("/api/management/v2/devauth/devices/{device_id}/auth/{auth_set_id}/status");
        let response = self.request("PUT", &path, Body::Json(&json!({ "status": status })))?;
        expect_status(&response, "PUT", &path, &[204])
    }

    /// Accepts the device's (single) pending auth set.
    pub fn accept_pending(&self, device: &Device) -> Result<(), Error> {
        let set = device.auth_sets.iter().find(|s| s.status == "pending").ok_or_else(|| {
            Error::protocol("mock-server", format!("device {} has no pending auth set", device.id))
        })?;
        self.set_auth_set_status(&device.id, &set.id, "accepted")
    }

    /// `GET /api/management/v1/deviceconnect/devices/{id}`: the connection status, or `None` on 404.
    pub fn connect_status(&self, device_id: &str) -> Result<Option<String>, Error> {
        let path = format!("/api/management/v1/deviceconnect/devices/{device_id}");
        let response = self.request("GET", &path, Body::Empty)?;
        if response.status == 404 {
            return Ok(None);
        }
        expect_status(&response, "GET", &path, &[200])?;
        let value = response.json("mock-server")?;
        value["status"]
            .as_str()
            .map(|s| Some(s.to_owned()))
            .ok_or_else(|| Error::protocol("mock-server", format!("no status in {value}")))
    }

    /// Waits until deviceconnect reports the device `connected`.
    pub fn wait_connected(&self, device_id: &str) -> Result<(), Error> {
        wait::until(
            &format!("device {device_id} to be connected (deviceconnect)"),
            wait::PEER_TIMEOUT,
            Duration::from_millis(500),
            || Ok((self.connect_status(device_id)?.as_deref() == Some("connected")).then_some(())),
        )
    }
}

/// Sends a device API request the Mender client itself makes (inventory update) with `token`, to
/// learn whether the server accepts the token as a device token. Returns the status code.
pub fn device_inventory_status(base: &str, token: &str) -> Result<u16, Error> {
    let url = format!("{base}/api/devices/v1/inventory/device/attributes");
    let body = json!([{ "name": "interop_probe", "value": "1" }]);
    Ok(http::request("PUT", &url, Auth::Bearer(token), Body::Json(&body))?.status)
}
