//! A device authentication request made the way mender-client 3.4.0 makes it, without running the
//! client: `POST /api/devices/v1/authentication/auth_requests` with the JSON body
//! `{"id_data": "<identity JSON>", "pubkey": "<PEM>", "tenant_token": ""}` plus the newline Go's
//! encoder appends, signed with `openssl dgst -sha256 -sign` (RSA PKCS#1 v1.5 over SHA-256 of the
//! exact body) in `X-MEN-Signature`. For tests that need a device token but no device (e.g. a
//! QEMU guest that runs its own client).

use std::path::Path;
use std::process::Command;

use base64::Engine as _;

use crate::Error;
use crate::binaries::Peer;
use crate::device_files::Identity;
use crate::error::IoContext;

/// The server's answer to an auth request.
#[derive(Debug, Clone)]
pub struct AuthAnswer {
    /// HTTP status: 200 with a token when accepted, 401 while pending or rejected.
    pub status: u16,
    /// The body: the raw device JWT on 200, an error document otherwise.
    pub body: String,
}

/// Sends one signed auth request for `identity` with the RSA key in `private_key` (PEM) to
/// `server`. `work_dir` holds the signed body and signature files.
pub fn request_token(
    server: &str,
    identity: &Identity,
    private_key: &Path,
    public_key_pem: &str,
    work_dir: &Path,
) -> Result<AuthAnswer, Error> {
    let openssl = Peer::OpenSsl.path()?;
    let document = serde_json::json!({
        "id_data": identity.json().to_string(),
        "pubkey": public_key_pem,
        "tenant_token": "",
    });
    let body = format!("{document}\n");
    let body_path = work_dir.join("auth_request.json");
    let sig_path = work_dir.join("auth_request.sig");
    std::fs::write(&body_path, &body).context(|| format!("writing {}", body_path.display()))?;
    let out = Command::new(openssl)
        .args(["dgst", "-sha256", "-sign"])
        .arg(private_key)
        .arg("-out")
        .arg(&sig_path)
        .arg(&body_path)
        .output()
        .context(|| "running openssl dgst -sign".to_owned())?;
    if !out.status.success() {
        return Err(Error::protocol(
            "openssl dgst",
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ));
    }
    let signature = std::fs::read(&sig_path).context(|| format!("reading {}", sig_path.display()))?;
    let signature = base64::engine::general_purpose::STANDARD.encode(signature);

    let url = format!("{server}/api/devices/v1/authentication/auth_requests");
    let err = |detail: String| Error::Http { method: "POST".to_owned(), url: url.clone(), detail };
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("Content-Type", "application/json")
        .header("Authorization", "Bearer ")
        .header("X-MEN-Signature", signature)
        .body(body)
        .map_err(|e| err(e.to_string()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent.run(request).map_err(|e| err(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| err(format!("reading the body: {e}")))?;
    Ok(AuthAnswer { status, body })
}
