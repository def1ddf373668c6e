//! Device authentication, tokens, login and the devauth management API, against the real binary.

mod common;

use common::*;
use serde_json::{Value as Json, json};

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn devices(srv: &Server, user: &str, query: &str) -> Vec<Json> {
    let (code, v) = srv.get_json(&format!("/api/management/v2/devauth/devices{query}"), user);
    assert_eq!(code, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

fn set_status(srv: &Server, user: &str, dev: &str, aid: &str, status: &str) -> HttpResp {
    srv.http(
        "PUT",
        &format!("/api/management/v2/devauth/devices/{dev}/auth/{aid}/status"),
        &[("Authorization", &bearer(user)), ("Content-Type", "application/json")],
        json!({ "status": status }).to_string().as_bytes(),
    )
}

fn inventory(srv: &Server, token: &str) -> u16 {
    srv.http(
        "PUT",
        "/api/devices/v1/inventory/device/attributes",
        &[("Authorization", &bearer(token)), ("Content-Type", "application/json")],
        b"[]",
    )
    .status
}

/// pending → accept → token, for every key type the Mender backend accepts.
#[test]
fn auth_request_each_key_type_pending_then_accepted() {
    let tmp = TempDir::new("keys");
    let srv = Server::start(&[]);
    let user = srv.login();
    for (i, kind) in
        [KeyKind::Rsa3072, KeyKind::P256, KeyKind::P384, KeyKind::Ed25519].into_iter().enumerate()
    {
        let key = DeviceKey::generate(kind, &tmp.0, &format!("k{i}"));
        let identity = json!({ "mac": format!("52:54:00:00:00:{i:02}"), "sku": "a<b>&c" });
        let r = auth_request(&srv, &key, &identity);
        assert_eq!(r.status, 401, "{kind:?}: {}", r.text());
        assert_eq!(r.error(), "dev auth: unauthorized");

        let list = devices(&srv, &user, "?status=pending");
        let dev = list
            .iter()
            .find(|d| d["identity_data"] == identity)
            .unwrap_or_else(|| panic!("{kind:?}: device not listed: {list:?}"));
        assert_eq!(dev["status"], "pending");
        let sets = dev["auth_sets"].as_array().expect("auth_sets");
        assert_eq!(sets.len(), 1);
        // The stored key is the normalised PEM (64-column lines, trailing newline).
        let stored = sets[0]["pubkey"].as_str().expect("pubkey");
        assert!(
            stored.starts_with("-----BEGIN PUBLIC KEY-----\n")
                && stored.ends_with("-----END PUBLIC KEY-----\n")
        );
        assert_eq!(stored.replace('\n', ""), key.public_pem.replace('\n', ""));

        let (dev_id, aid) = (dev["id"].as_str().expect("id"), sets[0]["id"].as_str().expect("aid"));
        assert_eq!(set_status(&srv, &user, dev_id, aid, "accepted").status, 204);
        let r = auth_request(&srv, &key, &identity);
        assert_eq!(r.status, 200, "{kind:?}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/jwt"));
        let token = r.text();
        assert!(!token.ends_with('\n'));
        let claims = jwt_claims(&token);
        assert_eq!(claims["sub"], dev_id);
        assert_eq!(claims["jti"], aid);
        assert_eq!(claims["iss"], "Mender");
        assert_eq!(claims["mender.device"], true);
        assert!(claims["exp"].as_i64() > claims["iat"].as_i64());
        assert_eq!(inventory(&srv, &token), 200);
        // The deviceconnect record exists from acceptance on.
        let (code, v) = srv.get_json(&format!("/api/management/v1/deviceconnect/devices/{dev_id}"), &user);
        assert_eq!((code, v["status"].as_str()), (200, Some("disconnected")));
    }
}

#[test]
fn bad_or_missing_signature_and_bad_requests() {
    let tmp = TempDir::new("badsig");
    let srv = Server::start(&[]);
    let key = DeviceKey::generate(KeyKind::P256, &tmp.0, "k");
    let other = DeviceKey::generate(KeyKind::P256, &tmp.0, "other");
    let identity = json!({ "mac": "aa" });
    let body = auth_body(&identity, &key.public_pem);
    let post = |sig: Option<String>, body: &[u8], ct: &str| {
        let mut h = vec![("Content-Type", ct.to_owned())];
        if let Some(s) = sig {
            h.push(("X-MEN-Signature", s));
        }
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        srv.http("POST", "/api/devices/v1/authentication/auth_requests", &h, body)
    };
    use base64::Engine as _;
    let b64 = |s: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(s);

    let r = post(Some(b64(other.sign(&body))), &body, "application/json");
    assert_eq!((r.status, r.error().as_str()), (401, "signature verification failed"));
    // The signature covers the raw body including the trailing newline.
    let r = post(Some(b64(key.sign(&body[..body.len() - 1]))), &body, "application/json");
    assert_eq!(r.status, 401);
    let r = post(None, &body, "application/json");
    assert_eq!((r.status, r.error().as_str()), (400, "missing request signature header"));
    let r = post(Some(b64(key.sign(&body))), &body, "text/plain");
    assert_eq!(r.status, 415);
    let bad = auth_body(&identity, "not a key");
    let r = post(Some(b64(key.sign(&bad))), &bad, "application/json");
    assert_eq!((r.status, r.error().as_str()), (400, "invalid auth request: cannot decode public key"));
    let r = post(Some("x".into()), b"{", "application/json");
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("failed to decode auth request"), "{}", r.error());
    // Nothing was created by the failed requests.
    let user = srv.login();
    assert!(devices(&srv, &user, "").is_empty());
}

#[test]
fn rejected_device_and_token_revocation() {
    let tmp = TempDir::new("reject");
    let srv = Server::start(&[]);
    let user = srv.login();
    let key = DeviceKey::generate(KeyKind::Ed25519, &tmp.0, "k");
    let identity = json!({ "mac": "rej" });
    assert_eq!(auth_request(&srv, &key, &identity).status, 401);
    let dev = devices(&srv, &user, "").remove(0);
    let (id, aid) = (
        dev["id"].as_str().expect("id").to_owned(),
        dev["auth_sets"][0]["id"].as_str().expect("aid").to_owned(),
    );
    assert_eq!(set_status(&srv, &user, &id, &aid, "accepted").status, 204);
    let token = auth_request(&srv, &key, &identity).text();
    assert_eq!(inventory(&srv, &token), 200);

    // Leaving `accepted` revokes the device's tokens.
    assert_eq!(set_status(&srv, &user, &id, &aid, "rejected").status, 204);
    assert_eq!(inventory(&srv, &token), 401);
    assert_eq!(
        srv.http(
            "GET",
            "/api/devices/v1/deployments/device/deployments/next",
            &[("Authorization", &bearer(&token))],
            b""
        )
        .status,
        401
    );
    let r = auth_request(&srv, &key, &identity);
    assert_eq!(r.status, 401);
    let (_, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{id}"), &user);
    assert_eq!(v["status"], "rejected");
    let (_, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{id}/auth/{aid}/status"), &user);
    assert_eq!(v["status"], "rejected");

    // Invalid transitions and bad values.
    assert_eq!(set_status(&srv, &user, &id, &aid, "preauthorized").status, 400);
    assert_eq!(set_status(&srv, &user, &id, "nope", "accepted").status, 404);
    // rejected → pending → accepted works again.
    assert_eq!(set_status(&srv, &user, &id, &aid, "pending").status, 204);
    assert_eq!(set_status(&srv, &user, &id, &aid, "accepted").status, 204);
    assert_eq!(auth_request(&srv, &key, &identity).status, 200);

    // Delete the accepted auth set: tokens are revoked, the device is left with no sets.
    let token = auth_request(&srv, &key, &identity).text();
    let r = srv.http(
        "DELETE",
        &format!("/api/management/v2/devauth/devices/{id}/auth/{aid}"),
        &[("Authorization", &bearer(&user))],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(inventory(&srv, &token), 401);
    let (_, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{id}"), &user);
    assert_eq!(v["status"], "noauth");
    assert!(v["auth_sets"].is_null());

    // Decommission.
    let r = srv.http(
        "DELETE",
        &format!("/api/management/v2/devauth/devices/{id}"),
        &[("Authorization", &bearer(&user))],
        b"",
    );
    assert_eq!(r.status, 204);
    let (code, _) = srv.get_json(&format!("/api/management/v2/devauth/devices/{id}"), &user);
    assert_eq!(code, 404);
}

#[test]
fn preauthorization_match_mismatch_conflict_and_remove() {
    let tmp = TempDir::new("preauth");
    let srv = Server::start(&[]);
    let user = srv.login();
    let key = DeviceKey::generate(KeyKind::Rsa3072, &tmp.0, "k");
    let wrong = DeviceKey::generate(KeyKind::P384, &tmp.0, "wrong");
    let identity = json!({ "mac": "mac-preauth" });
    let preauth = |identity: &Json, pubkey: &str| {
        srv.http(
            "POST",
            "/api/management/v2/devauth/devices",
            &[("Authorization", &bearer(&user)), ("Content-Type", "application/json")],
            json!({ "identity_data": identity, "pubkey": pubkey }).to_string().as_bytes(),
        )
    };
    let r = preauth(&identity, &key.public_pem);
    assert_eq!(r.status, 201, "{}", r.text());
    let location = r.header("Location").expect("Location").to_owned();
    let dev_id = location.strip_prefix("devices/").expect("Location is devices/<id>").to_owned();
    let list = devices(&srv, &user, "?status=preauthorized");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], dev_id.as_str());
    assert_eq!(list[0]["identity_data"], identity);
    let (_, count) = srv.get_json("/api/management/v2/devauth/devices/count?status=preauthorized", &user);
    assert_eq!(count["count"], 1);

    // Same identity again → 409 with the existing device.
    let r = preauth(&identity, &wrong.public_pem);
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["id"], dev_id.as_str());
    // Identity as a JSON string, or a bad key → 400.
    assert_eq!(preauth(&json!("{\"mac\":\"x\"}"), &key.public_pem).status, 400);
    assert_eq!(preauth(&json!({ "mac": "y" }), "garbage").status, 400);

    // A different key: new pending set, device stays preauthorized, 401.
    assert_eq!(auth_request(&srv, &wrong, &identity).status, 401);
    let (_, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{dev_id}"), &user);
    assert_eq!(v["status"], "preauthorized");
    assert_eq!(v["auth_sets"].as_array().map(Vec::len), Some(2));

    // The preauthorized key: accepted at once.
    let r = auth_request(&srv, &key, &identity);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwt_claims(&r.text())["sub"], dev_id.as_str());
    let (_, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{dev_id}"), &user);
    assert_eq!(v["status"], "accepted");

    // Preauthorize-and-remove: deleting the only (preauthorized) set deletes the device.
    let other = json!({ "mac": "to-remove" });
    let r = preauth(&other, &key.public_pem);
    let other_id = r.header("Location").and_then(|l| l.strip_prefix("devices/")).expect("id").to_owned();
    let (_, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{other_id}"), &user);
    let aid = v["auth_sets"][0]["id"].as_str().expect("aid").to_owned();
    let r = srv.http(
        "DELETE",
        &format!("/api/management/v2/devauth/devices/{other_id}/auth/{aid}"),
        &[("Authorization", &bearer(&user))],
        b"",
    );
    assert_eq!(r.status, 204);
    let (code, _) = srv.get_json(&format!("/api/management/v2/devauth/devices/{other_id}"), &user);
    assert_eq!(code, 404);
}

#[test]
fn auto_accept_and_token_expiry() {
    let tmp = TempDir::new("auto");
    let srv = Server::start(&["--auto-accept", "--device-token-ttl", "1"]);
    let key = DeviceKey::generate(KeyKind::P256, &tmp.0, "k");
    let r = auth_request(&srv, &key, &json!({ "mac": "auto" }));
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.text();
    let exp = jwt_claims(&token)["exp"].as_i64().expect("exp");
    // Wait (bounded) until the token has expired by the clock, then expect 401 as the real server
    // gives (its 403 branch for expired tokens is unreachable), so the client re-authenticates.
    for _ in 0..100 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now > exp {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(inventory(&srv, &token), 401);
    assert!(ws_connect(&srv.addr, "/api/devices/v1/deviceconnect/connect", &token).is_err());
    // Re-authentication gives a fresh, working token.
    let r = auth_request(&srv, &key, &json!({ "mac": "auto" }));
    assert_eq!(r.status, 200);
    assert_eq!(inventory(&srv, &r.text()), 200);
}

#[test]
fn device_and_management_endpoints_check_tokens() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let (_, device) = srv.device("tok");
    assert_eq!(inventory(&srv, &device), 200);
    assert_eq!(inventory(&srv, "garbage"), 401);
    assert_eq!(inventory(&srv, &user), 401, "a user token is not a device token");
    let r = srv.http("PUT", "/api/devices/v1/inventory/device/attributes", &[], b"[]");
    assert_eq!(r.status, 401);
    // Tampered signature.
    let mut forged = device.clone();
    forged.pop();
    forged.push(if device.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(inventory(&srv, &forged), 401);
    // JWT cookie works where the header is absent.
    let r = srv.http(
        "PUT",
        "/api/devices/v1/inventory/device/attributes",
        &[("Cookie", &format!("JWT={device}"))],
        b"[]",
    );
    assert_eq!(r.status, 200);
    // Deployment stubs.
    let next = |m: &str, p: &str| srv.http(m, p, &[("Authorization", &bearer(&device))], b"{}").status;
    assert_eq!(next("POST", "/api/devices/v2/deployments/device/deployments/next"), 204);
    assert_eq!(next("GET", "/api/devices/v1/deployments/device/deployments/next"), 204);
    assert_eq!(next("GET", "/api/devices/v1/nothing/here"), 404);
    // Management with a device token or none → 401.
    let (code, _) = srv.get_json("/api/management/v2/devauth/devices", &device);
    assert_eq!(code, 401);
    let r = srv.http("GET", "/api/management/v2/devauth/devices", &[], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn login_returns_raw_jwt() {
    let srv = Server::start(&["--user", "Alice@Example.com:pw1", "--user", "bob@example.com:pw:with:colons"]);
    use base64::Engine as _;
    let basic = |u: &str, p: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    };
    let path = "/api/management/v1/useradm/auth/login";
    let r = srv.http("POST", path, &[("Authorization", &basic("alice@example.com", "pw1"))], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/jwt"));
    let token = r.text();
    assert_eq!(token.matches('.').count(), 2);
    assert!(!token.ends_with('\n'));
    let claims = jwt_claims(&token);
    assert_eq!(claims["mender.user"], true);
    assert!(claims["sub"].as_str().is_some_and(|s| s.len() == 36));
    let (code, _) = srv.get_json("/api/management/v2/devauth/devices", &token);
    assert_eq!(code, 200);

    let r = srv.http(
        "POST",
        path,
        &[("Authorization", &basic("bob@example.com", "pw:with:colons"))],
        b"{\"token2fa\":\"\"}",
    );
    assert_eq!(r.status, 200);
    let r = srv.http("POST", path, &[("Authorization", &basic("alice@example.com", "wrong"))], b"");
    assert_eq!((r.status, r.error().as_str()), (401, "unauthorized"));
    // The default user exists only when no --user is given.
    let r = srv.http("POST", path, &[("Authorization", &basic(USER, PASSWORD))], b"");
    assert_eq!(r.status, 401);
    let r = srv.http("POST", path, &[], b"");
    assert_eq!(r.status, 401);
}

#[test]
fn listing_paging_search_and_count() {
    let srv = Server::start(&[]);
    let user = srv.login();
    let mut ids: Vec<String> = (0..5).map(|i| srv.device(&format!("m{i}")).0).collect();
    ids.sort();
    let page1 = devices(&srv, &user, "?per_page=2&page=1");
    let page3 = devices(&srv, &user, "?per_page=2&page=3");
    assert_eq!(page1.len(), 2);
    assert_eq!(page3.len(), 1);
    assert_eq!(page1[0]["id"], ids[0].as_str());
    let (code, _) = srv.get_json("/api/management/v2/devauth/devices?per_page=501", &user);
    assert_eq!(code, 400);
    let (code, v) = srv.get_json("/api/management/v2/devauth/devices?status=bogus", &user);
    assert_eq!(code, 400, "{v}");
    let (_, v) = srv.get_json("/api/management/v2/devauth/devices/count?status=accepted", &user);
    assert_eq!(v["count"], 5);
    let r = srv.http(
        "POST",
        "/api/management/v2/devauth/devices/search",
        &[("Authorization", &bearer(&user)), ("Content-Type", "application/json")],
        json!({ "id": [ids[1], ids[3]] }).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
}

#[test]
fn cli_and_shutdown() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mender-mock-server"))
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("admin@example.com") && help.contains("mysecretpassword"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mender-mock-server"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .expect("run");
    assert!(!out.status.success(), "non-loopback must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));

    let srv = Server::start(&[]);
    assert!(srv.url.starts_with("http://127.0.0.1:"));
    let status = srv.stop();
    assert!(status.success(), "SIGTERM should stop the server cleanly: {status:?}");
}

#[test]
fn state_file_keeps_tokens_across_restart() {
    let tmp = TempDir::new("state");
    let state = tmp.path("state.json");
    let tok = tmp.path("token");
    let state_s = state.to_str().expect("utf-8");
    let srv = Server::start(&[
        "--state",
        state_s,
        "--device",
        r#"{"mac":"52:54:00:12:34:56"}"#,
        "--device-token-out",
        tok.to_str().expect("utf-8"),
    ]);
    let token = std::fs::read_to_string(&tok).expect("token file");
    let device_id = std::fs::read_to_string(tmp.path("token.id")).expect("id file");
    assert_eq!(jwt_claims(&token)["sub"], device_id.as_str());
    assert_eq!(inventory(&srv, &token), 200);
    let addr = srv.addr.clone();
    assert!(srv.stop().success());
    let srv = Server::start(&["--listen", &addr, "--state", state_s]);
    assert_eq!(inventory(&srv, &token), 200);
    let user = srv.login();
    let (code, v) = srv.get_json(&format!("/api/management/v2/devauth/devices/{device_id}"), &user);
    assert_eq!((code, v["status"].as_str()), (200, Some("accepted")));
}

#[test]
fn https_with_verified_certificate() {
    let tmp = TempDir::new("tls");
    let (cert, key) = (tmp.path("cert.pem"), tmp.path("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let srv = Server::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    // curl verifies the certificate against the CA file (no -k).
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-X", "POST", "--cacert"])
        .arg(&cert)
        .args(["-u", &format!("{USER}:{PASSWORD}")])
        .arg(format!("{}/api/management/v1/useradm/auth/login", srv.url))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}\n{}", String::from_utf8_lossy(&out.stderr), srv.log());
    let token = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(jwt_claims(&token)["mender.user"], true);
}

/// The Mender documentation's "Preauthorizing devices" flow, as shell commands with curl.
#[test]
fn docs_preauthorization_flow_with_curl() {
    let tmp = TempDir::new("docs");
    let srv = Server::start(&[]);
    let script = r#"
set -eu
cd "$WORK"
openssl genpkey -algorithm RSA -out private.key -pkeyopt rsa_keygen_bits:3072 2>/dev/null
openssl rsa -in private.key -out public.key -pubout 2>/dev/null
JWT=$(curl -sS -X POST -u "$MENDER_SERVER_USER" $MENDER_SERVER_URI/api/management/v1/useradm/auth/login)
DEVICE_IDENTITY_JSON_OBJECT_STRING='{"mac":"02:12:61:13:6c:42"}'
DEVICE_PUBLIC_KEY="$(cat public.key | sed -e :a -e 'N;s/\n/\\n/;ta')"
curl -sS --fail -H "Authorization: Bearer $JWT" -H "Content-Type: application/json" -X POST -d "{ \"identity_data\" : $DEVICE_IDENTITY_JSON_OBJECT_STRING, \"pubkey\" : \"$DEVICE_PUBLIC_KEY\" }" $MENDER_SERVER_URI/api/management/v2/devauth/devices
curl -sS --fail -H "Authorization: Bearer $JWT" "$MENDER_SERVER_URI/api/management/v2/devauth/devices?status=preauthorized" > list.json
"#;
    let out = std::process::Command::new("bash")
        .args(["-c", script])
        .env("WORK", &tmp.0)
        .env("MENDER_SERVER_URI", &srv.url)
        .env("MENDER_SERVER_USER", format!("{USER}:{PASSWORD}"))
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), srv.log());
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path("list.json")).expect("list")).expect("JSON list");
    let dev = &list[0];
    assert_eq!(dev["status"], "preauthorized");
    assert_eq!(dev["identity_data"], json!({ "mac": "02:12:61:13:6c:42" }));
    let public = std::fs::read_to_string(tmp.path("public.key")).expect("public.key");
    assert_eq!(dev["auth_sets"][0]["pubkey"].as_str(), Some(public.as_str()));

    // The device with that key and identity is then accepted on its first request.
    let key = DeviceKey { kind: KeyKind::Rsa3072, private: tmp.path("private.key"), public_pem: public };
    let r = auth_request(&srv, &key, &json!({ "mac": "02:12:61:13:6c:42" }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwt_claims(&r.text())["sub"], dev["id"]);
}
