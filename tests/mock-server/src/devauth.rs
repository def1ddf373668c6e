//! deviceauth: the device authentication request and the management API v2.

use crate::http_util::{self, Resp, error, json, query_pairs};
use crate::idjson;
use crate::keys::{KeyError, PublicKey};
use crate::state::{AuthOutcome, DevauthError, State, Status};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

fn is_json(headers: &HeaderMap) -> Result<bool, ()> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(false);
    };
    let ct = ct.to_str().map_err(|_| ())?;
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.is_empty() || !mime.contains('/') {
        return Err(());
    }
    Ok(mime.eq_ignore_ascii_case("application/json"))
}

/// Parses `id_data` (a JSON object given as a string) into its canonical form.
fn canonical_identity(v: &Value) -> Option<String> {
    let obj: Value = match v {
        Value::String(s) => serde_json::from_str(s).ok()?,
        _ => return None,
    };
    obj.is_object().then(|| idjson::canonical(&obj))
}

/// `POST /api/devices/v1/authentication/auth_requests`.
pub fn auth_request(st: &State, headers: &HeaderMap, body: &Bytes) -> Resp {
    if !body.is_empty() {
        match is_json(headers) {
            Ok(true) => {}
            Ok(false) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Bad Content-Type, expected 'application/json'",
                );
            }
            Err(()) => return error(StatusCode::BAD_REQUEST, "mime: no media type"),
        }
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("failed to decode auth request: {e}")),
    };
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, &format!("invalid auth request: {m}"));
    let id_data = req.get("id_data").filter(|v| v.as_str().is_some_and(|s| !s.is_empty()));
    let Some(id_data) = id_data else {
        return bad("id_data must be provided");
    };
    let Some(pubkey) = req.get("pubkey").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return bad("pubkey must be provided");
    };
    let key = match PublicKey::parse_pem(pubkey) {
        Ok(k) => k,
        Err(_) => return bad("cannot decode public key"),
    };
    let Some(identity) = canonical_identity(id_data) else {
        return bad("failed to decode identity data");
    };
    let Some(sig) = headers.get("X-MEN-Signature").and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
    else {
        return error(StatusCode::BAD_REQUEST, "missing request signature header");
    };
    let verified = STANDARD
        .decode(sig.trim())
        .map_err(|_| KeyError::BadSignature)
        .and_then(|sig| key.verify(body, &sig));
    if verified.is_err() {
        log::info!("auth_requests: signature verification failed for {identity}");
        return error(StatusCode::UNAUTHORIZED, "signature verification failed");
    }
    let mut inner = st.lock();
    match inner.auth_request(&identity, &key.pem, st.cfg.auto_accept) {
        AuthOutcome::Accepted { auth_set_id, device_id } => {
            let token = st.issue_device_token(&mut inner, &auth_set_id, &device_id);
            log::info!("auth_requests: device {device_id} {identity}: accepted, token issued");
            http_util::response(StatusCode::OK, Some("application/jwt"), token)
        }
        AuthOutcome::Unauthorized => {
            let status = inner
                .find_device_by_identity(&identity)
                .and_then(|d| inner.devices.get(&d).map(|d| format!("{} {}", d.id, d.status.as_str())))
                .unwrap_or_default();
            log::info!("auth_requests: device {status} {identity}: not accepted");
            error(StatusCode::UNAUTHORIZED, "dev auth: unauthorized")
        }
    }
}

fn parse_paging(q: &[(String, String)]) -> Result<(usize, usize), Resp> {
    let get = |name: &str, default: usize, max: usize| -> Result<usize, Resp> {
        match q.iter().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1 && *n <= max)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, &format!("invalid {name} query: \"{v}\""))),
        }
    };
    Ok((get("page", 1, usize::MAX)?, get("per_page", 20, 500)?))
}

fn status_filter(values: &[String]) -> Result<Vec<Status>, Resp> {
    values
        .iter()
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "status must be one of: pending, accepted, rejected, preauthorized, noauth",
                )
            })
        })
        .collect()
}

fn list(st: &State, statuses: &[Status], ids: &[String], page: usize, per_page: usize, path: &str) -> Resp {
    let inner = st.lock();
    let mut devs: Vec<&crate::state::Device> = inner
        .devices
        .values()
        .filter(|d| statuses.is_empty() || statuses.contains(&d.status))
        .filter(|d| ids.is_empty() || ids.contains(&d.id))
        .collect();
    devs.sort_by(|a, b| a.status.as_str().cmp(b.status.as_str()).then(a.id.cmp(&b.id)));
    let total = devs.len();
    let start = (page - 1).saturating_mul(per_page);
    let items: Vec<Value> =
        devs.into_iter().skip(start).take(per_page).map(|d| inner.device_json(d)).collect();
    let mut links = vec![format!("<{path}?page=1&per_page={per_page}>; rel=\"first\"")];
    if page > 1 {
        links.push(format!("<{path}?page={}&per_page={per_page}>; rel=\"prev\"", page - 1));
    }
    if start.saturating_add(per_page) < total {
        links.push(format!("<{path}?page={}&per_page={per_page}>; rel=\"next\"", page + 1));
    }
    let mut r = json(StatusCode::OK, &Value::Array(items));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        r.headers_mut().insert(header::LINK, v);
    }
    r
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// `/api/management/v2/devauth/...`; `rest` is the path after that prefix, split on '/'.
pub fn management(
    st: &State,
    method: &Method,
    rest: &[&str],
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Resp {
    let q = query_pairs(query);
    const BASE: &str = "/api/management/v2/devauth/devices";
    match (method, rest) {
        (&Method::GET, ["devices"]) => {
            let (page, per_page) = match parse_paging(&q) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let statuses: Vec<String> =
                q.iter().filter(|(k, _)| k == "status").map(|(_, v)| v.clone()).collect();
            let statuses = match status_filter(&statuses) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let ids: Vec<String> = q.iter().filter(|(k, _)| k == "id").map(|(_, v)| v.clone()).collect();
            list(st, &statuses, &ids, page, per_page, BASE)
        }
        (&Method::POST, ["devices", "search"]) => {
            let (page, per_page) = match parse_paging(&q) {
                Ok(p) => p,
                Err(r) => return r,
            };
            let filter: Value = if body.is_empty() {
                json!({})
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return error(StatusCode::BAD_REQUEST, &format!("malformed request body: {e}")),
                }
            };
            let statuses = match status_filter(&strings(filter.get("status"))) {
                Ok(s) => s,
                Err(r) => return r,
            };
            list(st, &statuses, &strings(filter.get("id")), page, per_page, BASE)
        }
        (&Method::GET, ["devices", "count"]) => {
            let status = q.iter().find(|(k, _)| k == "status").map(|(_, v)| v.clone());
            let filter = match status.as_deref().map(Status::parse) {
                Some(None) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "status must be one of: pending, accepted, rejected, preauthorized, noauth",
                    );
                }
                Some(Some(s)) => Some(s),
                None => None,
            };
            let n = st.lock().devices.values().filter(|d| filter.is_none_or(|s| d.status == s)).count();
            json(StatusCode::OK, &json!({ "count": n }))
        }
        (&Method::POST, ["devices"]) => preauthorize(st, headers, body),
        (&Method::GET, ["devices", id]) => {
            let inner = st.lock();
            match inner.devices.get(*id) {
                Some(d) => json(StatusCode::OK, &inner.device_json(d)),
                None => error(StatusCode::NOT_FOUND, "device not found"),
            }
        }
        (&Method::DELETE, ["devices", id]) => {
            if st.lock().remove_device(id) {
                log::info!("devauth: device {id} decommissioned");
                http_util::empty(StatusCode::NO_CONTENT)
            } else {
                error(StatusCode::NOT_FOUND, "device not found")
            }
        }
        (&Method::GET, ["devices", id, "auth", aid, "status"]) => {
            let inner = st.lock();
            match inner.auth_sets.get(*aid).filter(|a| a.device_id == *id) {
                Some(a) => json(StatusCode::OK, &json!({ "status": a.status.as_str() })),
                None => error(StatusCode::NOT_FOUND, "authorization set not found"),
            }
        }
        (&Method::PUT, ["devices", id, "auth", aid, "status"]) => {
            let req: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, &format!("failed to decode status data: {e}"));
                }
            };
            let to = match req.get("status").and_then(Value::as_str).and_then(Status::parse) {
                Some(s @ (Status::Accepted | Status::Rejected | Status::Pending)) => s,
                _ => return error(StatusCode::BAD_REQUEST, "incorrect device status"),
            };
            let res = st.lock().set_auth_status(id, aid, to);
            match res {
                Ok(()) => {
                    log::info!("devauth: device {id} auth set {aid} -> {}", to.as_str());
                    http_util::empty(StatusCode::NO_CONTENT)
                }
                Err(DevauthError::NotFound) => error(StatusCode::NOT_FOUND, "dev auth: not found"),
                Err(DevauthError::Mismatch) => {
                    error(StatusCode::BAD_REQUEST, "dev auth: dev ID and auth ID mismatch")
                }
                Err(DevauthError::BadTransition) => error(StatusCode::BAD_REQUEST, "dev auth: bad request"),
            }
        }
        (&Method::DELETE, ["devices", id, "auth", aid]) => match st.lock().delete_auth_set(id, aid) {
            Ok(()) => http_util::empty(StatusCode::NO_CONTENT),
            Err(_) => error(StatusCode::NOT_FOUND, "dev auth: not found"),
        },
        (&Method::DELETE, ["tokens", jti]) => {
            if st.lock().tokens.remove(*jti).is_some() {
                http_util::empty(StatusCode::NO_CONTENT)
            } else {
                error(StatusCode::NOT_FOUND, "token not found")
            }
        }
        (&Method::GET, ["limits", "max_devices"]) => json(StatusCode::OK, &json!({ "limit": 0 })),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn preauthorize(st: &State, headers: &HeaderMap, body: &Bytes) -> Resp {
    if is_json(headers) != Ok(true) {
        return error(StatusCode::BAD_REQUEST, "Content-Type must be application/json");
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("failed to decode preauth request: {e}")),
    };
    let Some(identity) = req.get("identity_data").filter(|v| v.is_object()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "failed to decode preauth request: identity_data: must be an object",
        );
    };
    let identity = idjson::canonical(identity);
    let Some(pubkey) = req.get("pubkey").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "failed to decode preauth request: pubkey: cannot be blank");
    };
    let key = match PublicKey::parse_pem(pubkey) {
        Ok(k) => k,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "failed to decode preauth request: cannot decode public key",
            );
        }
    };
    let force = req.get("force").and_then(Value::as_bool).unwrap_or(false);
    let mut inner = st.lock();
    match inner.preauthorize(&identity, &key.pem, force) {
        Ok(id) => {
            log::info!("devauth: preauthorized {identity}");
            let mut r = http_util::empty(StatusCode::CREATED);
            if let Ok(v) = HeaderValue::from_str(&format!("devices/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(existing) => match inner.devices.get(&existing) {
            Some(d) => json(StatusCode::CONFLICT, &inner.device_json(d)),
            None => error(StatusCode::CONFLICT, "device already exists"),
        },
    }
}
