//! `mender-connect check-config` on `Standalone` blocks: every mistake is an error naming the
//! key, usable settings pass (with warnings where they weaken security).
#![cfg(feature = "standalone")]

mod common;

use std::process::Command;

use common::TempDir;

fn check(dir: &TempDir, standalone: serde_json::Value) -> (bool, String) {
    let doc = serde_json::json!({ "User": common::current_user(), "ShellCommand": "/bin/sh", "Standalone": standalone });
    let path = dir.path().join("mender-connect.conf");
    std::fs::write(&path, doc.to_string()).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_mender-connect")).arg("check-config").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn standalone_block_is_validated() {
    let dir = TempDir::new("standalone-config");
    let key = dir.path().join("device.pem");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = dir.path().join("identity");
    std::fs::write(&script, "#!/bin/sh\necho mac=02:00:00:00:00:07\n").unwrap();
    Command::new("chmod").arg("755").arg(&script).status().unwrap();
    let cert = dir.path().join("not-a-cert.pem");
    std::fs::write(&cert, "nothing here\n").unwrap();
    let (key, script, cert) = (key.to_str().unwrap(), script.to_str().unwrap(), cert.to_str().unwrap());
    let id = serde_json::json!({ "mac": "02:00:00:00:00:07", "serial": ["a", "b"] });

    // (block, passes, text that must appear)
    let cases = [
        (
            serde_json::json!({ "ServerURL": "https://mender.example", "PrivateKey": key, "Identity": id }),
            true,
            "configuration OK",
        ),
        (
            serde_json::json!({ "ServerURL": "http://127.0.0.1:1", "PrivateKey": key, "IdentityScript": script }),
            true,
            "is not https",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": key, "Identity": id, "SkipVerify": true }),
            true,
            "not verified (insecure)",
        ),
        (serde_json::json!({ "PrivateKey": key, "Identity": id }), false, "Standalone.ServerURL: required"),
        (
            serde_json::json!({ "ServerURL": "ftp://x", "PrivateKey": key, "Identity": id }),
            false,
            "Standalone.ServerURL",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": "device.pem", "Identity": id }),
            false,
            "Standalone.PrivateKey: must be an absolute path",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": "/nonexistent/k.pem", "Identity": id }),
            false,
            "/nonexistent/k.pem",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": key, "Identity": id, "IdentityScript": script }),
            false,
            "not both",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": key, "Identity": { "mac": 7 } }),
            false,
            "Standalone.Identity.mac",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": key, "IdentityScript": "/bin/false" }),
            false,
            "Standalone.IdentityScript",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": key, "Identity": id, "ServerCertificate": cert }),
            false,
            "Standalone.ServerCertificate",
        ),
        (
            serde_json::json!({ "ServerURL": "https://m.example", "PrivateKey": key, "Identity": id, "SkipVerfy": true }),
            true,
            "did you mean \"Standalone.SkipVerify\"",
        ),
    ];
    for (block, passes, needle) in cases {
        let (ok, text) = check(&dir, block.clone());
        assert_eq!(ok, passes, "{block}: {text}");
        assert!(text.contains(needle), "{block}: expected {needle:?} in {text}");
    }
}
