//! A private D-Bus "system bus" per test: a real `dbus-daemon` with its own configuration, listening
//! on a unix socket in the test's directory. Children get it through `DBUS_SYSTEM_BUS_ADDRESS`, which
//! libdbus, GLib/GIO (the Go peers) and our agent all honour for the system bus.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::binaries::Peer;
use crate::error::IoContext;
use crate::process::ManagedChild;
use crate::{Error, TestEnv};

/// Names the test's services may own on the private bus: the Mender client's two services.
pub const OWNABLE_NAMES: &[&str] = &["io.mender.AuthenticationManager", "io.mender.UpdateManager"];

/// A running private bus.
pub struct PrivateBus {
    address: String,
    socket: PathBuf,
    // Dropped last: the daemon stops with the bus.
    _daemon: ManagedChild,
}

impl PrivateBus {
    /// Starts `dbus-daemon` for the test and waits until it prints its address (it listens then).
    pub fn start(env: &TestEnv) -> Result<Self, Error> {
        let program = Peer::DBusDaemon.path()?;
        let dir = env.subdir("dbus")?;
        let socket = dir.join("system_bus_socket");
        let config = dir.join("bus.conf");
        std::fs::write(&config, config_xml(&socket))
            .context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(program);
        cmd.arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"]);
        let (daemon, printed) = ManagedChild::spawn_reading_first_line(
            env,
            "dbus-daemon",
            cmd,
            Duration::from_secs(30),
        )?;
        let address = format!("unix:path={}", socket.display());
        if !printed.starts_with(&address) {
            return Err(daemon.failure(&format!("printed address {printed:?}, expected {address}")));
        }
        Ok(PrivateBus {
            address,
            socket,
            _daemon: daemon,
        })
    }

    /// The bus address for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The bus socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Points `cmd`'s system bus at this bus (and away from any session bus).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
    }
}

/// The daemon configuration: anyone connected may call anything, but only the Mender client's
/// services may be owned, as on a device with the mender-client policy files installed.
fn config_xml(socket: &Path) -> String {
    let owns: String = OWNABLE_NAMES
        .iter()
        .map(|name| format!("    <allow own=\"{name}\"/>\n"))
        .collect();
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
{owns}    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket = socket.display()
    )
}
