//! Issue 4, part 3: the preauthorization flow of the Mender documentation. A device key pair from
//! openssl, identity and public key preauthorized with curl; the real Mender client started with
//! that key is accepted on first contact (nobody accepts it), and the agent's terminal works.

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::preauth;
use mender_connect_interop::scenarios;
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv};

fn preauthorized_device_terminal(kind: AgentKind) -> Result<(), Error> {
    let name = format!("preauth-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let keys = preauth::generate_key_pair(&env)?;
    let admission = Admission::Preauthorized { private_key: keys.private.clone() };
    let mock = Testbed::start_mock(&env, &admission)?;
    let identity = Identity::mac_for(&name);
    let answer = preauth::preauthorize_with_curl(
        &env,
        mock.url(),
        USER_EMAIL,
        USER_PASSWORD,
        &identity,
        &keys.public,
    )?;
    assert_eq!(answer.status, 201, "preauthorization answered {answer:?}");
    assert_eq!(answer.body.trim(), "", "success prints nothing (as the docs say)");

    let api = mock.login()?;
    let listed = api
        .find_device("mac", identity.mac())?
        .unwrap_or_else(|| panic!("preauthorized device {} not listed", identity.mac()));
    assert_eq!(listed.status, "preauthorized");
    assert_eq!(listed.auth_sets.len(), 1, "{listed:?}");
    let public_pem = std::fs::read_to_string(&keys.public).map_err(|e| Error::io("reading public.key", e))?;
    assert_eq!(listed.auth_sets[0].pubkey.trim(), public_pem.trim(), "server holds the preauthorized key");

    // No management call between here and the token: the first contact must be accepted.
    let mut bed = Testbed::start_device(&env, mock, identity, &admission)?;
    assert_eq!(bed.device_id, listed.id, "the preauthorized device record is the one accepted");
    let device = bed.api.device(&bed.device_id)?;
    assert_eq!(device.auth_sets.len(), 1, "no new auth set was created: {device:?}");
    assert_eq!(device.auth_sets[0].id, listed.auth_sets[0].id);
    assert_eq!(device.auth_sets[0].status, "accepted");

    bed.start_agent(&env, kind)?;
    let cli = MenderCli::new(&env, bed.mock.url())?;
    cli.login(&env, USER_EMAIL, USER_PASSWORD)?;
    scenarios::terminal_round_trip(&env, &cli, &bed.device_id)?;
    bed.client.ensure_running()?;
    env.pass();
    Ok(())
}

#[test]
fn go_agent_preauthorized_device() -> Result<(), Error> {
    preauthorized_device_terminal(AgentKind::Go)
}

#[test]
fn go23_agent_preauthorized_device() -> Result<(), Error> {
    preauthorized_device_terminal(AgentKind::Go23)
}

#[test]
fn rust_agent_preauthorized_device() -> Result<(), Error> {
    preauthorized_device_terminal(AgentKind::Rust)
}
