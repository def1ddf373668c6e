//! The harness's own foundations with real programs and no server: the private bus, the real
//! Mender client claiming its D-Bus name on it, and the pty driver.

use std::process::Command;
use std::time::Duration;

use mender_connect_interop::auth_bus::{AUTH_SERVICE, AuthBusClient};
use mender_connect_interop::bus::PrivateBus;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mender_client::{MenderClient, MenderClientOptions};
use mender_connect_interop::net::free_port;
use mender_connect_interop::pty::PtySession;
use mender_connect_interop::{Error, TestEnv};

/// Before it has authenticated, mender-client 3.4.0 owns its name on the private bus and answers
/// GetJwtToken with an empty token and an empty URL (nothing reachable: the server port is closed).
#[test]
fn real_client_owns_auth_name_on_private_bus() -> Result<(), Error> {
    let env = TestEnv::new("client-bus-name")?;
    let bus = PrivateBus::start(&env)?;
    let observer = AuthBusClient::connect(&bus)?;
    assert!(!observer.name_has_owner(AUTH_SERVICE)?, "nobody owns the name on a fresh private bus");
    let closed_port = free_port()?;
    let mut client = MenderClient::start(
        &env,
        &bus,
        &MenderClientOptions {
            server_url: format!("http://127.0.0.1:{closed_port}"),
            identity: Identity::mac_for("client-bus-name"),
            device_key: None,
        },
    )?;
    client.wait_for_bus_name(&observer)?;
    let answer = observer.get_jwt_token()?;
    assert_eq!(answer.token, "", "no token before authentication");
    assert_eq!(answer.server_url, "", "no proxy URL before authentication");
    // FetchJwtToken is accepted (true) even though authentication will fail.
    assert!(observer.fetch_jwt_token()?);
    client.ensure_running()?;
    env.pass();
    Ok(())
}

/// The pty driver gives a program a real terminal: `tty` names a pty and the window size is ours.
#[test]
fn pty_driver_runs_program_on_terminal() -> Result<(), Error> {
    let env = TestEnv::new("pty-driver")?;
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "tty; stty size; read line; echo \"got:$line\""]);
    let mut session = PtySession::spawn(&env, "sh-on-pty", cmd)?;
    let at = session.expect_from(0, "/dev/pts/", Duration::from_secs(30))?;
    let size = format!("{} {}", mender_connect_interop::pty::ROWS, mender_connect_interop::pty::COLUMNS);
    let at = session.expect_from(at, &size, Duration::from_secs(30))?;
    session.send(b"hello-pty\r")?;
    session.expect_from(at, "got:hello-pty", Duration::from_secs(30))?;
    let status = session.child().wait_exit(Duration::from_secs(30))?;
    assert!(status.success());
    env.pass();
    Ok(())
}
