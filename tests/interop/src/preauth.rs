//! Preauthorization as the Mender documentation ("Preauthorize devices") does it: the device key
//! pair from `openssl` the way mender's `support/keygen-client` makes it, a user JWT from `curl`
//! on the login endpoint, and the identity and public key posted with `curl` to
//! `/api/management/v2/devauth/devices`, the key's newlines escaped with the documented `sed`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::binaries::Peer;
use crate::device_files::Identity;
use crate::process::ManagedChild;
use crate::{Error, TestEnv};

/// A device key pair in PEM files.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// RSA private key (traditional "RSA PRIVATE KEY" PEM), to install on the device.
    pub private: PathBuf,
    /// Public key (PKIX "PUBLIC KEY" PEM), to preauthorize.
    pub public: PathBuf,
}

fn run_script(
    env: &TestEnv,
    name: &str,
    script: &str,
    vars: &[(&str, &str)],
    dir: &Path,
) -> Result<String, Error> {
    let mut cmd = Command::new("/bin/bash");
    cmd.args(["-euo", "pipefail", "-c", script]).current_dir(dir);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = ManagedChild::spawn(env, name, cmd)?;
    let status = child.wait_exit(crate::cli::COMMAND_TIMEOUT)?;
    let output = child.log_text();
    if !status.success() {
        return Err(child.failure(&format!("exited with {status}: {output}")));
    }
    Ok(output)
}

/// Generates an RSA-3072 key pair in `<test dir>/keys-client-generated/`.
pub fn generate_key_pair(env: &TestEnv) -> Result<KeyPair, Error> {
    generate_key_pair_in(env, "keys-client-generated")
}

/// Generates an RSA-3072 key pair in `<test dir>/<subdir>/`.
pub fn generate_key_pair_in(env: &TestEnv, subdir: &str) -> Result<KeyPair, Error> {
    Peer::OpenSsl.path()?;
    let dir = env.subdir(subdir)?;
    let script = "\
        openssl genpkey -algorithm RSA -out private.key -pkeyopt rsa_keygen_bits:3072\n\
        openssl rsa -in private.key -out private.key\n\
        openssl rsa -in private.key -out public.key -pubout\n";
    run_script(env, "openssl-keygen", script, &[], &dir)?;
    Ok(KeyPair { private: dir.join("private.key"), public: dir.join("public.key") })
}

/// What the preauthorization request answered.
#[derive(Debug, Clone)]
pub struct PreauthAnswer {
    /// HTTP status (201 on success).
    pub status: u16,
    /// What curl printed as the response body (the docs: "no output" means success).
    pub body: String,
}

/// Preauthorizes `identity` with `public_key` on the server at `server` using the documented curl
/// commands.
pub fn preauthorize_with_curl(
    env: &TestEnv,
    server: &str,
    user: &str,
    password: &str,
    identity: &Identity,
    public_key: &Path,
) -> Result<PreauthAnswer, Error> {
    Peer::Curl.path()?;
    let dir = public_key.parent().unwrap_or(Path::new("/"));
    // `-sS` and the trailing status line are the only additions to the documented commands.
    let script = r#"
echo "BODY_START"
JWT=$(curl -sS -X POST -u "$MENDER_SERVER_USER:$MENDER_SERVER_PASSWORD" $MENDER_SERVER_URI/api/management/v1/useradm/auth/login)
DEVICE_PUBLIC_KEY="$(cat "$PUBLIC_KEY_FILE" | sed -e :a  -e 'N;s/\n/\\n/;ta')"
curl -sS -w '\nHTTP_STATUS=%{http_code}\n' -H "Authorization: Bearer $JWT" -H "Content-Type: application/json" -X POST -d "{ \"identity_data\" : $DEVICE_IDENTITY_JSON_OBJECT_STRING, \"pubkey\" : \"$DEVICE_PUBLIC_KEY\" }" $MENDER_SERVER_URI/api/management/v2/devauth/devices
"#;
    let identity_json = identity.json().to_string();
    let key = public_key.display().to_string();
    let output = run_script(
        env,
        "curl-preauthorize",
        script,
        &[
            ("MENDER_SERVER_URI", server),
            ("MENDER_SERVER_USER", user),
            ("MENDER_SERVER_PASSWORD", password),
            ("DEVICE_IDENTITY_JSON_OBJECT_STRING", &identity_json),
            ("PUBLIC_KEY_FILE", &key),
        ],
        dir,
    )?;
    let status = output
        .lines()
        .filter_map(|l| l.strip_prefix("HTTP_STATUS="))
        .next_back()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::protocol("curl", format!("no status line in: {output}")))?;
    // The log holds the harness's command line, then our marker, then curl's output.
    let body = output
        .split_once("BODY_START\n")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.starts_with("HTTP_STATUS="))
        .collect::<Vec<_>>()
        .join("\n");
    Ok(PreauthAnswer { status, body })
}

/// The PKIX public key PEM of the private key in `private_key` (`openssl pkey -pubout`).
pub fn public_key_pem(env: &TestEnv, private_key: &Path) -> Result<String, Error> {
    Peer::OpenSsl.path()?;
    let dir = env.subdir("keys")?;
    let out =
        dir.join(format!("{}.pub.pem", private_key.file_name().and_then(|n| n.to_str()).unwrap_or("key")));
    let key = private_key.display().to_string();
    let out_text = out.display().to_string();
    run_script(
        env,
        "openssl-pubout",
        r#"openssl pkey -in "$KEY" -pubout -out "$OUT""#,
        &[("KEY", &key), ("OUT", &out_text)],
        &dir,
    )?;
    std::fs::read_to_string(&out).map_err(|e| Error::io(format!("reading {}", out.display()), e))
}
