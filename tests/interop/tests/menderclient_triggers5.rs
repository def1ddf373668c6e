//! Issue 20: `check-update` / `send-inventory` from the server through the real C++ client 5.0.0.
//! The agent runs in the trixie root (as on a device with the client installed), where
//! `/usr/bin/mender-update` is the C++ CLI and there is no `/usr/bin/mender`. `mender-update
//! check-update` finds `mender-updated`'s pid with `systemctl show --property=MainPID
//! mender-updated` and runs `kill -SIGUSR1 <pid>` (`send-inventory`: SIGUSR2); the real
//! `mender-updated` then checks for a deployment (`POST .../v2/deployments/device/deployments/next`)
//! or sends its inventory (`PUT .../inventory/device/attributes`) through mender-auth.
//!
//! No service manager runs in the root: a `systemctl` first in the agent's `PATH` answers that
//! one query from the pid the test gives it, `MainPID=0` once the service stopped (what systemd
//! prints for a stopped unit). With `mender-updated` stopped, the server gets the agent's
//! error reply; the mock logs it (the real server ignores it). Go mender-connect 2.1.0 runs
//! `mender <command>` from `PATH` and so fails against client 5 (no `mender` binary).

use std::time::Duration;

use mender_connect_interop::agent::{Agent, AgentKind};
use mender_connect_interop::client5::{Daemon5, Device5};
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::deviceconnect::DeviceConnect;
use mender_connect_interop::mock::{MockOptions, MockServer};
use mender_connect_interop::trixie::ROOT_PATH;
use mender_connect_interop::{Error, TestEnv, wait};
use serde_json::json;

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Check(what.into())) }
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

const NEXT: &str = "POST /api/devices/v2/deployments/device/deployments/next";
const INVENTORY: &str = "PUT /api/devices/v1/inventory/device/attributes";
const USR1: &str = "SIGUSR1 received, triggering deployments check";
const USR2: &str = "SIGUSR2 received, triggering inventory update";
const INVENTORY_COLLECTED: &str = "msg=\"Inventory data ";

/// Writes `<env>/systemd/systemctl` answering `show --property=MainPID mender-updated` with the
/// pid in `<env>/systemd/mender-updated.pid` (0 when absent); returns the `PATH` for the agent.
fn systemctl_stand_in(env: &TestEnv) -> Result<(String, std::path::PathBuf), Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.subdir("systemd")?;
    let pid_file = dir.join("mender-updated.pid");
    let script = dir.join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Stands for systemd (not running in the test root).\n\
             if [ \"$*\" = \"show --property=MainPID mender-updated\" ]; then\n\
             \x20 pid=$(cat '{pid}' 2>/dev/null || echo 0)\n  echo \"MainPID=$pid\"\n  exit 0\nfi\n\
             echo \"systemctl stand-in: unsupported: $*\" >&2\nexit 1\n",
            pid = pid_file.display()
        ),
    )
    .map_err(|e| Error::io("writing the systemctl stand-in", e))?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("chmod the systemctl stand-in", e))?;
    Ok((format!("{}:{ROOT_PATH}", dir.display()), pid_file))
}

/// Where the effect of a trigger shows.
#[derive(Clone, Copy)]
enum Effect {
    /// One more request of this kind at the mock.
    Request(&'static str),
    /// One more line with this text in mender-updated's log.
    Logged(&'static str),
}

impl Effect {
    fn count(self, updated: &Daemon5, mock: &MockServer) -> usize {
        match self {
            Effect::Request(r) => count(&mock.log_text(), r),
            Effect::Logged(l) => count(&updated.log_text(), l),
        }
    }
}

/// Sends `command` and waits until mender-updated logged `signal` once more and `effect` showed
/// once more.
fn trigger(
    updated: &mut Daemon5,
    mock: &MockServer,
    dc: &DeviceConnect,
    command: &str,
    signal: &str,
    effect: Effect,
) -> Result<(), Error> {
    let (signals, effects) = (count(&updated.log_text(), signal), effect.count(updated, mock));
    let r = dc.mender_client_command(command)?;
    ensure(r.status == 202, format!("POST {command}: expected 202, got {} {:?}", r.status, r.text()))?;
    wait::until(
        &format!("mender-updated to act on {command} ({signal}, then its effect)"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            updated.ensure_running()?;
            let got_signal = count(&updated.log_text(), signal) > signals;
            let got_effect = effect.count(updated, mock) > effects;
            Ok((got_signal && got_effect).then_some(()))
        },
    )
}

/// The mock's record of the agent's reply to `command`: (status, body).
fn reply(mock: &MockServer, command: &str, before: usize) -> Result<(String, String), Error> {
    let prefix = format!("mender-client reply typ={command} status=");
    wait::until(
        &format!("the agent's reply to {command}"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let log = mock.log_text();
            Ok(log
                .lines()
                .filter_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
                .nth(before)
                .map(|rest| {
                    let (status, body) = rest.split_once(" body=").unwrap_or((&rest, ""));
                    (status.to_owned(), body.to_owned())
                }))
        },
    )
}

fn triggers(kind: AgentKind) -> Result<(), Error> {
    let name = format!("menderclient5-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let mock = MockServer::start(&env, &MockOptions::default())?;
    let dev = Device5::start(&env, &mock, Identity::mac_for(&name))?;
    let mut updated = Daemon5::start_updated(&env, &dev.device)?;
    let (path, pid_file) = systemctl_stand_in(&env)?;
    std::fs::write(&pid_file, updated.pid().to_string()).map_err(|e| Error::io("writing the pid file", e))?;
    let overrides = json!({ "MenderClient": { "Disable": false } });
    let mut agent = Agent::start_in(
        &env,
        &dev.bus,
        kind,
        &overrides,
        &[("PATH".to_owned(), path)],
        Some(dev.device.chroot()),
    )?;
    dev.api.wait_connected(&dev.device_id)?;
    // mender-updated authenticates through mender-auth and makes its own first update check and
    // inventory submission after starting; a forced one is told apart by the signal in its log.
    wait::until(
        "mender-updated's first update check and inventory",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || {
            updated.ensure_running()?;
            let log = mock.log_text();
            Ok((log.contains(NEXT) && log.contains(INVENTORY)).then_some(()))
        },
    )?;
    let dc = DeviceConnect::new(mock.url(), dev.api.token(), &dev.device_id);
    if kind == AgentKind::Go {
        // 2.1.0 runs `mender <command>` from PATH; client 5 has no `mender`.
        let r = dc.mender_client_command("check-update")?;
        ensure(r.status == 202, format!("POST check-update: expected 202, got {}", r.status))?;
        let (status, body) = reply(&mock, "check-update", 0)?;
        eprintln!("{name}: reply: status {status}, body {body:?}");
        ensure(
            status == "2" && body.contains("executable file not found in $PATH"),
            format!("2.1.0's check-update with client 5: status {status}, body {body:?}"),
        )?;
        ensure(count(&updated.log_text(), USR1) == 0, "mender-updated got SIGUSR1 from 2.1.0")?;
        agent.ensure_running()?;
        env.pass();
        return Ok(());
    }
    trigger(&mut updated, &mock, &dc, "check-update", USR1, Effect::Request(NEXT))?;
    // 5.0.0 collects the inventory and submits it only when it changed since the last submission
    // ("Inventory data unchanged, not submitting"): the collection is the effect.
    trigger(&mut updated, &mock, &dc, "send-inventory", USR2, Effect::Logged(INVENTORY_COLLECTED))?;
    let (status, body) = reply(&mock, "check-update", 0)?;
    ensure(status == "1" && body.is_empty(), format!("check-update reply: status {status}, body {body:?}"))?;
    if kind == AgentKind::Rust {
        // As 2.2+: the first existing of /usr/bin/mender-update and /usr/bin/mender.
        ensure(
            agent.log_text().contains("running /usr/bin/mender-update check-update"),
            "our agent did not run /usr/bin/mender-update",
        )?;
    }

    // mender-updated stopped: systemd reports MainPID=0, mender-update fails, and the server gets
    // the error the agent reports for a failed command.
    updated.stop();
    std::fs::write(&pid_file, "0").map_err(|e| Error::io("writing the pid file", e))?;
    let r = dc.mender_client_command("check-update")?;
    ensure(r.status == 202, format!("POST check-update: expected 202, got {}", r.status))?;
    let (status, body) = reply(&mock, "check-update", 1)?;
    eprintln!("{name}: reply with mender-updated stopped: status {status}, body {body:?}");
    ensure(
        status == "2" && body == "exit status 1",
        format!("check-update with mender-updated stopped: status {status}, body {body:?}"),
    )?;
    agent.ensure_running()?;
    env.pass();
    Ok(())
}

#[test]
fn rust_agent_triggers_mender_update_5() -> Result<(), Error> {
    triggers(AgentKind::Rust)
}

#[test]
fn go23_agent_triggers_mender_update_5() -> Result<(), Error> {
    triggers(AgentKind::Go23)
}

/// The Debian 12 reference (2.1.0), copied into the root: what a device upgraded to client 5
/// with the old agent gets.
#[test]
fn go_agent_2_1_cannot_trigger_mender_update_5() -> Result<(), Error> {
    triggers(AgentKind::Go)
}
