//! Issue 4, part 2 (and issue 3's interop part): a device agent fed by the real Mender client
//! 3.4.0 connects to the mock server (deviceconnect reports it `connected`), and the real
//! mender-cli 1.9.0 logs in and uses it: `terminal`, `cp` both ways, `port-forward`.
//!
//! Every scenario runs twice: with Debian's Go mender-connect 2.1.0 (the reference) and with our
//! Rust mender-connect from this workspace, started the same way with the same configuration.

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::scenarios;
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv, jwt};

/// A device with `kind` connected, and mender-cli logged in.
fn connected(env: &TestEnv, name: &str, kind: AgentKind) -> Result<(Testbed, MenderCli), Error> {
    connected_with(env, name, kind, &serde_json::Value::Null)
}

/// [`connected`] with agent configuration overrides.
fn connected_with(
    env: &TestEnv,
    name: &str,
    kind: AgentKind,
    overrides: &serde_json::Value,
) -> Result<(Testbed, MenderCli), Error> {
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(env, &admission)?;
    let mut bed = Testbed::start_device(env, mock, Identity::mac_for(name), &admission)?;
    bed.start_agent_with_config(env, kind, overrides)?;
    let cli = MenderCli::new(env, bed.mock.url())?;
    let login = cli.login(env, USER_EMAIL, USER_PASSWORD)?;
    assert!(login.output.contains("login successful"), "login output: {}", login.output);
    // 1.9.0 stores the server's answer verbatim and sends it back untrimmed: it must be a bare JWT.
    let token =
        std::fs::read_to_string(cli.token_path()).map_err(|e| Error::io("reading mender-cli's token", e))?;
    assert_eq!(jwt::claims(&token)?["mender.user"], serde_json::Value::Bool(true));
    Ok((bed, cli))
}

fn terminal(kind: AgentKind) -> Result<(), Error> {
    let name = format!("terminal-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, cli) = connected(&env, &name, kind)?;
    scenarios::terminal_round_trip(&env, &cli, &bed.device_id)?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

/// An idle terminal expires on the device (`ExpireAfterIdle` 3 s). With ours, mender-cli ends
/// with it. The Go agent (2.1.0; 3.0's `shell/exec.go` and expiry path are the same) stops the
/// shell at its next 32 s sweep but sends nothing, so mender-cli stays open on a dead shell:
/// pinned here, 60 s after the prompt (the sweep has run by then, as its log shows).
fn idle_terminal_ends(kind: AgentKind) -> Result<(), Error> {
    let name = format!("idle-terminal-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let sessions = serde_json::json!({"Sessions": {"StopExpired": true, "ExpireAfterIdle": 3}});
    let (mut bed, cli) = connected_with(&env, &name, kind, &sessions)?;
    let within = std::time::Duration::from_secs(match kind {
        AgentKind::Go => 60,
        _ => 30,
    });
    let ended = scenarios::terminal_ended_by_device(&env, &cli, &bed.device_id, within)?;
    let stopped = bed.agent.as_ref().map(|a| a.log_text()).unwrap_or_default();
    match kind {
        AgentKind::Go => {
            if !stopped.contains("main-loop: stopped 1 sessions") {
                return Err(Error::Check("the Go agent did not expire the idle session".into()));
            }
            if ended {
                return Err(Error::Check("mender-cli ended: the Go agent now sends a stop on expiry".into()));
            }
        }
        _ => {
            if !ended {
                return Err(Error::Check(format!(
                    "mender-cli terminal still open {within:?} after the prompt"
                )));
            }
        }
    }
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

fn file_transfer(kind: AgentKind) -> Result<(), Error> {
    let name = format!("cp-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, cli) = connected(&env, &name, kind)?;
    let device_dir = env.subdir("device-side")?;
    scenarios::file_round_trip(&env, &cli, &bed.device_id, &device_dir, 4 * 1024 * 1024)?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

fn file_transfer_errors(kind: AgentKind) -> Result<(), Error> {
    let name = format!("cp-errors-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, cli) = connected(&env, &name, kind)?;
    let device_dir = env.subdir("device-side")?;
    scenarios::file_transfer_errors(&env, &cli, &bed.device_id, &device_dir)?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

fn port_forward(kind: AgentKind) -> Result<(), Error> {
    let name = format!("pf-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, cli) = connected(&env, &name, kind)?;
    scenarios::port_forward_round_trip(&env, &cli, &bed.device_id)?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

fn udp_port_forward(kind: AgentKind) -> Result<(), Error> {
    let name = format!("udp-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, cli) = connected(&env, &name, kind)?;
    scenarios::udp_port_forward_round_trip(&env, &cli, &bed.device_id)?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

#[test]
fn go_agent_udp_port_forward() -> Result<(), Error> {
    udp_port_forward(AgentKind::Go)
}

#[test]
fn go23_agent_udp_port_forward() -> Result<(), Error> {
    udp_port_forward(AgentKind::Go23)
}

#[test]
fn rust_agent_udp_port_forward() -> Result<(), Error> {
    udp_port_forward(AgentKind::Rust)
}

#[test]
fn go_agent_terminal() -> Result<(), Error> {
    terminal(AgentKind::Go)
}

#[test]
fn go23_agent_terminal() -> Result<(), Error> {
    terminal(AgentKind::Go23)
}

#[test]
fn go_agent_file_transfer() -> Result<(), Error> {
    file_transfer(AgentKind::Go)
}

#[test]
fn go23_agent_file_transfer() -> Result<(), Error> {
    file_transfer(AgentKind::Go23)
}

#[test]
fn go_agent_file_transfer_errors() -> Result<(), Error> {
    file_transfer_errors(AgentKind::Go)
}

#[test]
fn go23_agent_file_transfer_errors() -> Result<(), Error> {
    file_transfer_errors(AgentKind::Go23)
}

#[test]
fn go_agent_port_forward() -> Result<(), Error> {
    port_forward(AgentKind::Go)
}

#[test]
fn go23_agent_port_forward() -> Result<(), Error> {
    port_forward(AgentKind::Go23)
}

#[test]
fn rust_agent_terminal() -> Result<(), Error> {
    terminal(AgentKind::Rust)
}

#[test]
fn rust_agent_idle_terminal_ends() -> Result<(), Error> {
    idle_terminal_ends(AgentKind::Rust)
}

#[test]
fn go_agent_idle_terminal_ends() -> Result<(), Error> {
    idle_terminal_ends(AgentKind::Go)
}

#[test]
fn rust_agent_file_transfer() -> Result<(), Error> {
    file_transfer(AgentKind::Rust)
}

#[test]
fn rust_agent_file_transfer_errors() -> Result<(), Error> {
    file_transfer_errors(AgentKind::Rust)
}

#[test]
fn rust_agent_port_forward() -> Result<(), Error> {
    port_forward(AgentKind::Rust)
}
