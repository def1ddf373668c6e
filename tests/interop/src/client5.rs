//! The C++ Mender client 5.0.0 (Debian experimental) as device daemons in the trixie root:
//! `mender-auth daemon` (the D-Bus token service, passive: it authenticates only when someone
//! calls `FetchJwtToken`, and hands out a local forwarder `http://127.0.0.1:<port>` that moves to
//! a new port after every successful fetch) and `mender-update daemon` (`mender-updated`, which
//! the `mender-update check-update`/`send-inventory` shims signal).
//!
//! Both run as systemd would start them (`ExecStart=` of `mender-authd.service` and
//! `mender-updated.service`, plus `--log-level debug`), with the device files of a
//! [`RootDevice`] and the private system bus at the root's default `/run/dbus/system_bus_socket`.
//! The bus ([`Device5::bus`]) enforces the Mender client's own D-Bus policy file from the root.

use std::time::Duration;

use crate::auth_bus::{AUTH_SERVICE, AuthBusClient};
use crate::bus::PrivateBus;
use crate::device_files::Identity;
use crate::mock::{ManagementApi, MockServer, USER_EMAIL, USER_PASSWORD};
use crate::preauth;
use crate::process::ManagedChild;
use crate::trixie::{self, RootDevice};
use crate::{Error, TestEnv, wait};

/// Where the root's packages put their system bus policy files.
pub const POLICY_DIR: &str = "/usr/share/dbus-1/system.d";

/// A daemon of the C++ client.
pub struct Daemon5 {
    name: &'static str,
    program: &'static str,
    child: ManagedChild,
}

impl Daemon5 {
    fn start(
        env: &TestEnv,
        device: &RootDevice,
        name: &'static str,
        program: &'static str,
    ) -> Result<Self, Error> {
        let mut cmd = device.chroot().command(program, &["--log-level", "debug", "daemon"]);
        // The root's programs find the bus at its default path (the device's /run/dbus); no
        // session bus.
        cmd.env_remove("DBUS_SYSTEM_BUS_ADDRESS").env_remove("DBUS_SESSION_BUS_ADDRESS");
        let child = ManagedChild::spawn(env, name, cmd)?;
        Ok(Daemon5 { name, program, child })
    }

    /// `mender-auth daemon`.
    pub fn start_auth(env: &TestEnv, device: &RootDevice) -> Result<Self, Error> {
        Self::start(env, device, "mender-auth", "/usr/bin/mender-auth")
    }

    /// `mender-update daemon` (the service `mender-updated`).
    pub fn start_updated(env: &TestEnv, device: &RootDevice) -> Result<Self, Error> {
        Self::start(env, device, "mender-updated", "/usr/bin/mender-update")
    }

    /// Stops it (SIGTERM, as systemd does) and reaps it.
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// Stops it and starts it again on the same device.
    pub fn restart(&mut self, env: &TestEnv, device: &RootDevice) -> Result<(), Error> {
        self.child.stop();
        *self = Self::start(env, device, self.name, self.program)?;
        Ok(())
    }

    /// Its process id (what `systemctl show --property=MainPID` reports on a device).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if it has exited.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        self.child.ensure_running()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }

    /// Waits until it owns `io.mender.AuthenticationManager`.
    pub fn wait_for_bus_name(&mut self, bus: &AuthBusClient) -> Result<(), Error> {
        wait::until(
            &format!("{} to own {AUTH_SERVICE}", self.name),
            wait::PEER_TIMEOUT,
            Duration::from_millis(200),
            || {
                self.child.ensure_running()?;
                Ok(bus.name_has_owner(AUTH_SERVICE)?.then_some(()))
            },
        )
    }
}

/// A preauthorized device of the C++ client 5.0.0 against the mock server: device files in the
/// root, the private system bus with the client's policy, and `mender-auth` owning its name but
/// not yet authenticated (nobody called `FetchJwtToken`). Fields stop in declaration order.
pub struct Device5 {
    /// `mender-auth daemon`.
    pub auth: Daemon5,
    /// The test's own connection to the bus.
    pub bus_client: AuthBusClient,
    /// The private system bus; its socket is the root's `/run/dbus/system_bus_socket`.
    pub bus: PrivateBus,
    /// The device's files.
    pub device: RootDevice,
    /// The device identity.
    pub identity: Identity,
    /// The id of the preauthorized device record.
    pub device_id: String,
    /// A logged-in management API session.
    pub api: ManagementApi,
}

impl Device5 {
    /// Preauthorizes a fresh key pair for `identity` on `mock` (the documented curl flow), writes
    /// the device files with that key and starts bus and `mender-auth`.
    pub fn start(env: &TestEnv, mock: &MockServer, identity: Identity) -> Result<Self, Error> {
        Self::start_with(env, mock, identity, true)
    }

    /// Like [`Device5::start`]; with `preauthorize` false the device key is still the test's own
    /// but the server does not know it: the first authentication leaves the device pending, and
    /// `device_id` is empty until the test looks the device up.
    pub fn start_with(
        env: &TestEnv,
        mock: &MockServer,
        identity: Identity,
        preauthorize: bool,
    ) -> Result<Self, Error> {
        let keys = preauth::generate_key_pair(env)?;
        let api = mock.login()?;
        let mut device_id = String::new();
        if preauthorize {
            let answer = preauth::preauthorize_with_curl(
                env,
                mock.url(),
                USER_EMAIL,
                USER_PASSWORD,
                &identity,
                &keys.public,
            )?;
            if answer.status != 201 {
                return Err(Error::Check(format!("preauthorization answered {answer:?}")));
            }
            device_id = api.wait_for_device("mac", identity.mac(), "preauthorized")?.id;
        }
        let device = RootDevice::new(env, &identity, mock.url(), Some(&keys.private))?;
        let root = trixie::root()?;
        let bus = PrivateBus::start_system(
            env,
            device.run_dbus_dir(),
            &[root.join(POLICY_DIR.trim_start_matches('/'))],
        )?;
        let bus_client = AuthBusClient::connect(&bus)?;
        bus_client.watch_token_changes()?;
        let mut auth = Daemon5::start_auth(env, &device)?;
        auth.wait_for_bus_name(&bus_client)?;
        Ok(Device5 { auth, bus_client, bus, device, identity, device_id, api })
    }

    /// The root's package versions (`dpkg-query -W` output written at build time).
    pub fn versions() -> Result<String, Error> {
        let path = trixie::root()?.join(".interop-versions");
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }
}

/// The port of a `http://127.0.0.1:<port>` URL.
pub fn url_port(url: &str) -> Option<u16> {
    url.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}
