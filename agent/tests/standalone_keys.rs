//! Standalone mode's device keys against openssl: every key format openssl writes for the three
//! supported types loads, its public key PEM is byte-for-byte what `openssl pkey -pubout` prints
//! (what gets preauthorized), and openssl verifies the `X-MEN-Signature` the agent computes the
//! way deviceauth does (SHA-256 RSA PKCS#1 v1.5 / ECDSA DER, Ed25519 over the raw body).
//! Unsupported keys fail with an error naming the file and what is supported.
#![cfg(feature = "standalone")]

mod common;

use std::path::Path;
use std::process::Command;

use common::TempDir;
use mender_connect::link::connection::b64;
use mender_connect::link::standalone::key::{DeviceKey, KeyError};

fn sh(dir: &Path, script: &str) -> std::process::Output {
    let out = Command::new("/bin/bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn openssl_keys_load_and_their_signatures_verify() {
    let cases = [
        (
            "rsa-pkcs1",
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out t.pem && openssl rsa -traditional -in t.pem -out key.pem",
            "RSA",
        ),
        ("rsa-pkcs8", "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out key.pem", "RSA"),
        ("ec-sec1", "openssl ecparam -name prime256v1 -genkey -noout -out key.pem", "EC P-256"),
        (
            "ec-pkcs8",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out key.pem",
            "EC P-256",
        ),
        ("ed25519", "openssl genpkey -algorithm ed25519 -out key.pem", "Ed25519"),
    ];
    let body =
        b"{\"id_data\":\"{\\\"mac\\\":\\\"02:00:00:00:00:01\\\"}\",\"pubkey\":\"x\",\"tenant_token\":\"\"}\n";
    for (name, generate, kind) in cases {
        let dir = TempDir::new(&format!("key-{name}"));
        sh(dir.path(), &format!("{generate}\nopenssl pkey -in key.pem -pubout -out pub.pem"));
        let key = DeviceKey::load(&dir.path().join("key.pem")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.kind(), kind, "{name}");
        let openssl_pub = std::fs::read_to_string(dir.path().join("pub.pem")).unwrap();
        assert_eq!(key.public_pem(), openssl_pub, "{name}: public key PEM");

        std::fs::write(dir.path().join("body"), body).unwrap();
        let sig = b64::decode(&key.sign_base64(body).unwrap()).expect("base64");
        std::fs::write(dir.path().join("sig"), sig).unwrap();
        let verify = if kind == "Ed25519" {
            "openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in body -sigfile sig"
        } else {
            "openssl dgst -sha256 -verify pub.pem -signature sig body"
        };
        let out = sh(dir.path(), verify);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Verified"), "{name}: {out:?}");
        // A changed body must not verify: the check above is not vacuous.
        std::fs::write(dir.path().join("body"), b"tampered").unwrap();
        let status =
            Command::new("/bin/bash").args(["-c", verify]).current_dir(dir.path()).output().unwrap().status;
        assert!(!status.success(), "{name}: tampered body verified");
    }
}

#[test]
fn unsupported_keys_are_named() {
    let dir = TempDir::new("key-bad");
    sh(
        dir.path(),
        "openssl ecparam -name secp384r1 -genkey -noout -out p384.pem\necho hello > not-a-key.pem",
    );
    let err = DeviceKey::load(&dir.path().join("p384.pem")).unwrap_err();
    assert!(matches!(err, KeyError::Unsupported { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("p384.pem") && text.contains("EC P-256"), "{text}");
    let err = DeviceKey::load(&dir.path().join("not-a-key.pem")).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }), "{err}");
    let err = DeviceKey::load(&dir.path().join("missing.pem")).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
