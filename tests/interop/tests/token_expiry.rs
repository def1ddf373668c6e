//! The device token expires while the agent is connected (the server does not close the socket
//! for that). When the connection then drops (server restart, same state), reconnecting with the
//! stale token fails at the server, and the system must recover by itself: the agent asks the
//! Mender client for a fresh token (FetchJwtToken) or the client re-authenticates on its own, the
//! agent picks up the new token and reconnects, and a terminal works.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{MockOptions, USER_EMAIL, USER_PASSWORD, device_inventory_status};
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv, jwt, scenarios, wait};

/// Device token lifetime on the mock: long enough to set everything up on a loaded machine.
const TOKEN_TTL_SECS: u64 = 30;

fn recovers_after_token_expiry(kind: AgentKind) -> Result<(), Error> {
    let name = format!("token-expiry-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let admission = Admission::ManualAccept;
    let options = MockOptions {
        state_file: Some(env.dir().join("mock-state.json")),
        extra_args: vec!["--device-token-ttl".into(), TOKEN_TTL_SECS.to_string()],
        ..MockOptions::default()
    };
    let mock = Testbed::start_mock_with(&env, &admission, options)?;
    let mut bed = Testbed::start_device(&env, mock, Identity::mac_for(&name), &admission)?;
    bed.start_agent(&env, kind)?;
    let old_token = bed.jwt.token.clone();
    let exp = jwt::claims(&old_token)?["exp"]
        .as_u64()
        .unwrap_or_else(|| panic!("token without numeric exp: {old_token}"));

    // Wait (bounded) until the server refuses the token: it has expired.
    wait::until(
        "the device token to expire",
        Duration::from_secs(TOKEN_TTL_SECS + 120),
        Duration::from_secs(1),
        || {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            if now <= exp {
                return Ok(None);
            }
            Ok((device_inventory_status(bed.mock.url(), &old_token)? != 200).then_some(()))
        },
    )?;

    bed.mock.restart(&env)?;
    let api = bed.mock.login()?;
    api.wait_connected(&bed.device_id)?;
    let fresh = bed.bus_client.get_jwt_token()?;
    assert_ne!(fresh.token, old_token, "the client holds a new token");
    assert_eq!(device_inventory_status(bed.mock.url(), &fresh.token)?, 200, "and the server accepts it");

    let cli = MenderCli::new(&env, bed.mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;
    scenarios::terminal_round_trip(&env, &cli, &bed.device_id)?;
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

#[test]
fn go_agent_recovers_after_token_expiry() -> Result<(), Error> {
    recovers_after_token_expiry(AgentKind::Go)
}

/// Go mender-connect 2.3.0 does not recover within the bound: after the 401 its reconnect backoff
/// waits 1 min, then 2 min, and each retry dials the old proxy URL although `JwtTokenStateChange`
/// brought the new one meanwhile (seen 2026-12-03; docs/reference-versions.md).
#[test]
#[ignore = "Go 2.3.0 keeps dialling the old proxy URL through its 1-2 min backoff (docs/reference-versions.md)"]
fn go23_agent_recovers_after_token_expiry() -> Result<(), Error> {
    recovers_after_token_expiry(AgentKind::Go23)
}

#[test]
fn rust_agent_recovers_after_token_expiry() -> Result<(), Error> {
    recovers_after_token_expiry(AgentKind::Rust)
}
