//! The Mender client restarts (service restart, update): its local proxy comes back on a new
//! port, and the agent must follow it. Deterministic order: stop the client, wait until the
//! server sees the device disconnected (the proxy, and with it the agent's websocket, is gone),
//! start the client again with the same state, and expect the agent to reconnect by itself
//! through the new proxy; then a terminal works.

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv, scenarios, wait};

fn follows_client_restart(kind: AgentKind) -> Result<(), Error> {
    let name = format!("client-restart-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(&env, &admission)?;
    let mut bed = Testbed::start_device(&env, mock, Identity::mac_for(&name), &admission)?;
    bed.start_agent(&env, kind)?;
    let old_url = bed.jwt.server_url.clone();

    bed.client.stop();
    wait::until(
        "the server to see the device disconnected after the client stopped",
        wait::PEER_TIMEOUT,
        std::time::Duration::from_millis(500),
        || Ok((bed.api.connect_status(&bed.device_id)?.as_deref() == Some("disconnected")).then_some(())),
    )?;

    bed.client.restart(&env, &bed.bus)?;
    bed.client.wait_for_bus_name(&bed.bus_client)?;
    let jwt = bed.client.wait_for_token(&bed.bus_client)?;
    assert_ne!(jwt.server_url, old_url, "the restarted client's proxy listens on a new port");
    bed.api.wait_connected(&bed.device_id)?;

    let cli = MenderCli::new(&env, bed.mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;
    // Our agent must relay the first terminal after the restart. The Go agent 2.1.0 has been
    // seen (CI, 2026-11-23) to reconnect through the new proxy, start the shell and take input,
    // yet relay no output until its 60 s keep-alive ended the link: a race in its reconnect
    // path, not in the server or the proxy (the Rust agent never showed it). The Go 2.3 agent
    // was seen once (2026-12-03, on a loaded machine) to miss the prompt in the same step; its
    // cause was not established. The Go runs only check that the scenario is sound, so they may take
    // up to three terminals, each after the server sees the device connected again; all three
    // failing still fails the test.
    let attempts = if matches!(kind, AgentKind::Go | AgentKind::Go23) { 3 } else { 1 };
    for attempt in 1..=attempts {
        match scenarios::terminal_round_trip(&env, &cli, &bed.device_id) {
            Ok(()) => break,
            Err(e) if attempt < attempts => {
                eprintln!("terminal attempt {attempt} with the Go agent failed, retrying: {e}");
                bed.api.wait_connected(&bed.device_id)?;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

#[test]
fn go_agent_follows_client_restart() -> Result<(), Error> {
    follows_client_restart(AgentKind::Go)
}

#[test]
fn go23_agent_follows_client_restart() -> Result<(), Error> {
    follows_client_restart(AgentKind::Go23)
}

#[test]
fn rust_agent_follows_client_restart() -> Result<(), Error> {
    follows_client_restart(AgentKind::Rust)
}
