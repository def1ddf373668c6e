//! The server goes away and comes back (same address, same state): the agent, fed by the real
//! Mender client whose token stays valid, reconnects through the client's proxy without any
//! help, deviceconnect reports it connected again, and a terminal works.

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{MockOptions, USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::scenarios;
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv};

fn reconnects_after_server_restart(kind: AgentKind) -> Result<(), Error> {
    let name = format!("restart-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let admission = Admission::ManualAccept;
    let options =
        MockOptions { state_file: Some(env.dir().join("mock-state.json")), ..MockOptions::default() };
    let mock = Testbed::start_mock_with(&env, &admission, options)?;
    let mut bed = Testbed::start_device(&env, mock, Identity::mac_for(&name), &admission)?;
    bed.start_agent(&env, kind)?;

    bed.mock.restart(&env)?;
    // The restarted server knows the user and the device, and the agent comes back by itself.
    let api = bed.mock.login()?;
    assert_eq!(api.device(&bed.device_id)?.status, "accepted", "device survives the restart");
    api.wait_connected(&bed.device_id)?;

    let cli = MenderCli::new(&env, bed.mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;
    scenarios::terminal_round_trip(&env, &cli, &bed.device_id)?;
    bed.client.ensure_running()?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

#[test]
fn go_agent_reconnects_after_server_restart() -> Result<(), Error> {
    reconnects_after_server_restart(AgentKind::Go)
}

#[test]
fn go23_agent_reconnects_after_server_restart() -> Result<(), Error> {
    reconnects_after_server_restart(AgentKind::Go23)
}

#[test]
fn rust_agent_reconnects_after_server_restart() -> Result<(), Error> {
    reconnects_after_server_restart(AgentKind::Rust)
}
