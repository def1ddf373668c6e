//! Issue 4, part 1: the real Mender client 3.4.0 authenticates against the mock server on a private
//! D-Bus and serves the token the mock issued, with its local proxy URL, over
//! `io.mender.Authentication1.GetJwtToken`.

use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::device_inventory_status;
use mender_connect_interop::testbed::{Admission, Testbed};
use std::time::Duration;

use mender_connect_interop::{Error, TestEnv, jwt, wait};

/// Checks what the client hands out over D-Bus once authenticated.
fn check_token_and_proxy(bed: &Testbed) -> Result<(), Error> {
    let token = &bed.jwt.token;
    let claims = jwt::claims(token)?;
    assert_eq!(
        claims["sub"].as_str(),
        Some(bed.device_id.as_str()),
        "token subject is the device id: {claims}"
    );
    assert_eq!(claims["mender.device"], serde_json::Value::Bool(true), "a device token: {claims}");

    // The mock accepts it as a device token, and refuses a tampered copy.
    assert_eq!(device_inventory_status(bed.mock.url(), token)?, 200, "mock accepts the client's token");
    let tampered = format!("{token}x");
    assert_eq!(device_inventory_status(bed.mock.url(), &tampered)?, 401, "mock refuses a tampered token");

    // The URL is the client's local proxy on loopback, not the server.
    let url = &bed.jwt.server_url;
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("server URL {url:?} is not http://127.0.0.1:<port>"));
    assert_ne!(port, bed.mock.port()?, "the URL is the client's proxy, not the mock");
    // The proxy forwards device API calls made with the client's token to the mock, and rejects
    // any other bearer token itself.
    assert_eq!(device_inventory_status(url, token)?, 200, "proxy forwards with the device token");
    assert_eq!(device_inventory_status(url, "not-the-token")?, 401, "proxy refuses other tokens");

    // The same pair was announced with the JwtTokenStateChange signal (what mender-connect waits for).
    let announced =
        wait::until("JwtTokenStateChange with the token", Duration::from_secs(60), Duration::ZERO, || {
            let seen = bed.bus_client.token_changes(Duration::from_millis(500))?;
            Ok(seen.contains(&bed.jwt).then_some(seen))
        })?;
    eprintln!(
        "GetJwtToken URL: {url}; JwtTokenStateChange signals: {:?}",
        announced.iter().map(|s| (s.token.len(), s.server_url.as_str())).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn client_authenticates_after_manual_accept() -> Result<(), Error> {
    let env = TestEnv::new("auth-manual")?;
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(&env, &admission)?;
    let identity = Identity::mac_for("auth-manual");
    let mut bed = Testbed::start_device(&env, mock, identity, &admission)?;
    check_token_and_proxy(&bed)?;

    // The key the server holds for the device is the one the client generated.
    let device = bed.api.device(&bed.device_id)?;
    assert_eq!(device.status, "accepted");
    assert_eq!(device.auth_sets.len(), 1, "one auth set: {device:?}");
    let generated = mender_connect_interop::preauth::public_key_pem(&env, &bed.client.key_path())?;
    assert_eq!(device.auth_sets[0].pubkey.trim(), generated.trim(), "server holds the client's key");
    assert_eq!(device.identity, bed.identity.json(), "server holds the client's identity");
    bed.client.ensure_running()?;
    env.pass();
    Ok(())
}

#[test]
fn client_authenticates_with_auto_accept() -> Result<(), Error> {
    let env = TestEnv::new("auth-auto")?;
    let admission = Admission::AutoAccept;
    let mock = Testbed::start_mock(&env, &admission)?;
    let identity = Identity::mac_for("auth-auto");
    let mut bed = Testbed::start_device(&env, mock, identity, &admission)?;
    check_token_and_proxy(&bed)?;
    bed.client.ensure_running()?;
    env.pass();
    Ok(())
}
