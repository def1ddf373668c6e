//! HS256 JSON Web Tokens signed with a per-process random key. Every Mender client treats the
//! token as opaque, so the algorithm is free; the claims follow deviceauth and useradm.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    pub fn random() -> Signer {
        let mut key = [0u8; 32];
        // Without OS randomness, a fixed key would make tokens forgeable; refuse to run instead.
        if getrandom::fill(&mut key).is_err() {
            eprintln!("mender-mock-server: no OS randomness available");
            std::process::exit(1);
        }
        Signer { key }
    }

    pub fn from_key(key: [u8; 32]) -> Signer {
        Signer { key }
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Checks signature and expiry; returns the claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Malformed)?;
        let claims: Value = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or(TokenError::Malformed)?;
        if exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

pub fn device_claims(auth_set_id: &str, device_id: &str, now: i64, ttl: i64) -> Value {
    json!({
        "jti": auth_set_id,
        "sub": device_id,
        "iss": "Mender",
        "exp": now + ttl,
        "iat": now,
        "mender.device": true,
        "mender.plan": "enterprise",
        "mender.trial": false,
        "mender.addons": [
            {"name": "configure", "enabled": true},
            {"name": "troubleshoot", "enabled": true},
            {"name": "monitor", "enabled": true}
        ],
    })
}

pub fn user_claims(jti: &str, user_id: &str, now: i64, ttl: i64) -> Value {
    json!({
        "jti": jti,
        "sub": user_id,
        "iss": "mender.useradm",
        "exp": now + ttl,
        "iat": now,
        "mender.user": true,
        "mender.plan": "enterprise",
        "mender.trial": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_expiry() {
        let s = Signer::random();
        let t = s.sign(&device_claims("a", "d", 100, 10));
        assert!(s.verify(&t, 105).is_ok());
        assert_eq!(s.verify(&t, 110), Err(TokenError::Expired));
        let other = Signer::random();
        assert_eq!(other.verify(&t, 105), Err(TokenError::BadSignature));
        assert_eq!(s.verify("a.b", 105), Err(TokenError::Malformed));
    }
}
