//! useradm: management-user login.

use crate::http_util::{self, Resp, error};
use crate::jwt;
use crate::state::{State, new_id};
use crate::timefmt::unix_now;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap};

/// `POST /api/management/v1/useradm/auth/login`: Basic auth in, raw JWT out (no newline).
pub fn login(st: &State, headers: &HeaderMap, body: &Bytes) -> Resp {
    if !body.is_empty() && serde_json::from_slice::<serde_json::Value>(body).is_err() {
        return error(StatusCode::BAD_REQUEST, "failed to decode login request body");
    }
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(|b64| STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.split_once(':').map(|(e, p)| (e.to_lowercase(), p.to_owned())));
    let Some((email, password)) = creds else {
        return error(StatusCode::UNAUTHORIZED, "invalid or missing auth header");
    };
    let user_id = {
        let inner = st.lock();
        match inner.users.get(&email) {
            Some(u) if u.password == password => u.id.clone(),
            _ => {
                log::info!("login: {email}: bad credentials");
                return error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
        }
    };
    let token = st.signer.sign(&jwt::user_claims(&new_id(), &user_id, unix_now(), st.cfg.user_token_ttl));
    log::info!("login: {email} (user {user_id})");
    http_util::response(StatusCode::OK, Some("application/jwt"), token)
}
