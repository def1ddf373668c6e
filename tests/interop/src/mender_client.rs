//! The real Mender client (Debian `mender-client` 3.4.0) as a device daemon on a private bus.
//!
//! Started as `mender --config C --fallback-config F --data D --no-syslog --log-level debug daemon`
//! with `DBUS_SYSTEM_BUS_ADDRESS` pointing at the test's bus. `--data` moves the state directory
//! (LMDB store, `device_type`, and the device key `mender-agent.pem`, generated as RSA-3072 on the
//! first authentication attempt if absent); `--fallback-config` points at a file that does not
//! exist so that `/var/lib/mender/mender.conf` is not read. The identity comes from
//! [`crate::device_files`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::auth_bus::{AUTH_SERVICE, AuthBusClient, JwtAndUrl};
use crate::binaries::Peer;
use crate::bus::PrivateBus;
use crate::device_files::{self, IDENTITY_ENV, Identity};
use crate::error::IoContext;
use crate::process::ManagedChild;
use crate::wait;
use crate::{Error, TestEnv};

/// How to start the client.
#[derive(Debug, Clone)]
pub struct MenderClientOptions {
    /// The server URL written as `ServerURL`.
    pub server_url: String,
    /// The device identity.
    pub identity: Identity,
    /// A private key (PEM) to install as the device key before the first start, as a
    /// manufacturer does for preauthorized devices; `None` lets the client generate one.
    pub device_key: Option<PathBuf>,
}

/// A running Mender client daemon.
pub struct MenderClient {
    child: ManagedChild,
    data_dir: PathBuf,
    options: MenderClientOptions,
}

impl MenderClient {
    /// Writes the configuration and starts the daemon.
    pub fn start(env: &TestEnv, bus: &PrivateBus, options: &MenderClientOptions) -> Result<Self, Error> {
        let program = Peer::MenderClient.path()?;
        device_files::ensure_installed()?;
        let dir = env.subdir("mender-client")?;
        let data_dir = env.subdir("mender-client/data")?;
        std::fs::write(data_dir.join("device_type"), "device_type=interop-test\n")
            .context(|| "writing device_type".to_owned())?;
        if let Some(key) = &options.device_key {
            let target = data_dir.join("mender-agent.pem");
            std::fs::copy(key, &target).context(|| format!("installing the device key {}", key.display()))?;
        }
        let config_path = dir.join("mender.conf");
        // Short retry interval: the client retries authentication at this pace while the device
        // is pending. Poll intervals stay long; the tests do not need update checks.
        let config = json!({
            "ServerURL": options.server_url,
            "RetryPollIntervalSeconds": 1,
            "UpdatePollIntervalSeconds": 60,
            "InventoryPollIntervalSeconds": 60,
            "DBus": { "Enabled": true },
        });
        std::fs::write(&config_path, config.to_string()).context(|| "writing mender.conf".to_owned())?;
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--fallback-config")
            .arg(dir.join("no-fallback.conf"))
            .arg("--data")
            .arg(&data_dir)
            .args(["--no-syslog", "--log-level", "debug", "daemon"])
            .env(IDENTITY_ENV, options.identity.script_output())
            .current_dir(&dir);
        bus.apply(&mut cmd);
        let child = ManagedChild::spawn(env, "mender-client", cmd)?;
        Ok(MenderClient { child, data_dir, options: options.clone() })
    }

    /// Stops the daemon (SIGTERM, as systemd does) and reaps it.
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Stops the daemon and starts it again with the same configuration and state directory
    /// (same device key), as after an update or a service restart.
    pub fn restart(&mut self, env: &TestEnv, bus: &PrivateBus) -> Result<(), Error> {
        self.child.stop();
        let options = MenderClientOptions {
            // The key is in the state directory by now; do not install it again.
            device_key: None,
            ..self.options.clone()
        };
        *self = MenderClient::start(env, bus, &options)?;
        Ok(())
    }

    /// The daemon's process id (what `systemctl show -p MainPID mender-client` reports on a
    /// device; `mender check-update` signals it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The device key file (present once the client generated or was given one).
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("mender-agent.pem")
    }

    /// The state directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Fails if the daemon has exited.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        self.child.ensure_running()
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// Waits until the client owns `io.mender.AuthenticationManager` on the bus.
    pub fn wait_for_bus_name(&mut self, bus: &AuthBusClient) -> Result<(), Error> {
        wait::until(
            &format!("mender-client to own {AUTH_SERVICE}"),
            wait::PEER_TIMEOUT,
            Duration::from_millis(200),
            || {
                self.child.ensure_running()?;
                Ok(bus.name_has_owner(AUTH_SERVICE)?.then_some(()))
            },
        )
    }

    /// Waits until `GetJwtToken` returns a token. Passive: the daemon authenticates on its own
    /// schedule (it retries every `RetryPollIntervalSeconds` while unauthorized).
    pub fn wait_for_token(&mut self, bus: &AuthBusClient) -> Result<JwtAndUrl, Error> {
        wait::until(
            "mender-client to hand out a JWT over D-Bus",
            wait::PEER_TIMEOUT,
            Duration::from_millis(250),
            || {
                self.child.ensure_running()?;
                // The client answers GetJwtToken with an error when its auth manager is busy for
                // 5 s (app/auth.go in 3.4.0), e.g. while an auth request is under way on a loaded
                // machine: a transient answer, not a failure. The bound still ends the wait.
                match bus.get_jwt_token() {
                    Ok(answer) => Ok((!answer.token.is_empty()).then_some(answer)),
                    Err(e) => {
                        eprintln!("GetJwtToken failed (retrying): {e}");
                        Ok(None)
                    }
                }
            },
        )
    }
}
