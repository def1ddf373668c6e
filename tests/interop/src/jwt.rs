//! Reading (not verifying) JWT claims, to compare what the Mender client holds with what the server
//! knows about the device.

use base64::Engine as _;

use crate::Error;

/// The claims (payload) of `token`.
pub fn claims(token: &str) -> Result<serde_json::Value, Error> {
    let bad = |detail: String| Error::protocol("JWT", detail);
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("not three dot-separated parts: {token:?}")));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| bad(format!("payload is not base64url ({e})")))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("payload is not JSON ({e})")))
}
