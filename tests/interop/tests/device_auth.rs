//! The harness's client-less device authentication (openssl-signed auth requests, as
//! mender-client 3.4.0 signs them) against the mock: pending until accepted, then a device token;
//! a request signed with another key than the one presented is refused.

use mender_connect_interop::device_auth::request_token;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::{MockOptions, MockServer, device_inventory_status};
use mender_connect_interop::{Error, TestEnv, jwt, preauth};

#[test]
fn signed_auth_request_pending_then_accepted() -> Result<(), Error> {
    let env = TestEnv::new("device-auth")?;
    let keys = preauth::generate_key_pair(&env)?;
    let public_pem = std::fs::read_to_string(&keys.public).map_err(|e| Error::io("reading public.key", e))?;
    let mock = MockServer::start(&env, &MockOptions::default())?;
    let api = mock.login()?;
    let identity = Identity::mac_for("device-auth");
    let work = env.subdir("auth")?;

    let first = request_token(mock.url(), &identity, &keys.private, &public_pem, &work)?;
    assert_eq!(first.status, 401, "a new device is pending: {}", first.body);
    let pending = api.wait_for_device("mac", identity.mac(), "pending")?;
    api.accept_pending(&pending)?;

    let second = request_token(mock.url(), &identity, &keys.private, &public_pem, &work)?;
    assert_eq!(second.status, 200, "accepted: {}", second.body);
    let claims = jwt::claims(&second.body)?;
    assert_eq!(claims["sub"].as_str(), Some(pending.id.as_str()));
    assert_eq!(device_inventory_status(mock.url(), &second.body)?, 200);

    // Same identity and public key, signed with a different private key.
    let other = preauth::generate_key_pair_in(&env, "other-keys")?;
    let forged = request_token(mock.url(), &identity, &other.private, &public_pem, &work)?;
    assert_eq!(forged.status, 401, "bad signature refused: {}", forged.body);
    env.pass();
    Ok(())
}
