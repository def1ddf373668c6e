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
        let dir = env.subdir("dbus")?;
        let socket = dir.join("system_bus_socket");
        let config = dir.join("bus.conf");
        std::fs::write(&config, config_xml(&socket)).context(|| format!("writing {}", config.display()))?;
        Self::start_with_config(env, socket, &config)
    }

    /// Starts a bus that enforces a device's policy: the default policy of Debian's system bus
    /// (`/usr/share/dbus-1/system.conf`: nobody owns names or calls methods unless a policy file
    /// allows it) plus the policy files of `policy_dirs` (e.g. the Mender client's
    /// `io.mender.AuthenticationManager.conf` in a root's `/usr/share/dbus-1/system.d`), listening
    /// at `socket_dir/system_bus_socket`.
    pub fn start_system(env: &TestEnv, socket_dir: &Path, policy_dirs: &[PathBuf]) -> Result<Self, Error> {
        let socket = socket_dir.join("system_bus_socket");
        let config = env.subdir("dbus")?.join("system-bus.conf");
        std::fs::write(&config, system_config_xml(&socket, policy_dirs))
            .context(|| format!("writing {}", config.display()))?;
        Self::start_with_config(env, socket, &config)
    }

    fn start_with_config(env: &TestEnv, socket: PathBuf, config: &Path) -> Result<Self, Error> {
        let program = Peer::DBusDaemon.path()?;
        let mut cmd = Command::new(program);
        cmd.arg(format!("--config-file={}", config.display())).args([
            "--nofork",
            "--nopidfile",
            "--print-address=1",
        ]);
        let (daemon, printed) =
            ManagedChild::spawn_reading_first_line(env, "dbus-daemon", cmd, Duration::from_secs(30))?;
        let address = format!("unix:path={}", socket.display());
        if !printed.starts_with(&address) {
            return Err(daemon.failure(&format!("printed address {printed:?}, expected {address}")));
        }
        Ok(PrivateBus { address, socket, _daemon: daemon })
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
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address).env_remove("DBUS_SESSION_BUS_ADDRESS");
    }
}

/// The daemon configuration: anyone connected may call anything, but only the Mender client's
/// services may be owned, as on a device with the mender-client policy files installed.
fn config_xml(socket: &Path) -> String {
    let owns: String = OWNABLE_NAMES.iter().map(|name| format!("    <allow own=\"{name}\"/>\n")).collect();
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

/// Debian's system bus defaults (`system.conf`) with the given policy directories included.
fn system_config_xml(socket: &Path, policy_dirs: &[PathBuf]) -> String {
    let includes: String =
        policy_dirs.iter().map(|dir| format!("  <includedir>{}</includedir>\n", dir.display())).collect();
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
{includes}</busconfig>
"#,
        socket = socket.display()
    )
}
