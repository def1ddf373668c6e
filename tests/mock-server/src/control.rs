//! Test-control API under `/__mock/` (not part of the Mender API; no authentication, so the
//! server refuses non-loopback addresses by default).

use crate::http_util::{self, Resp, error, json};
use crate::idjson;
use crate::state::{DeviceOut, State, User, new_id};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

/// Creates (or re-accepts) a keyless accepted device and issues its token.
pub fn create_device(st: &State, identity: &Value) -> Value {
    let identity = idjson::canonical(identity);
    let mut inner = st.lock();
    let (device_id, aid) = inner.accepted_device(&identity);
    let token = st.issue_device_token(&mut inner, &aid, &device_id);
    log::info!("control: accepted device {device_id} {identity}");
    json!({ "device_id": device_id, "auth_set_id": aid, "token": token })
}

pub fn handle(st: &State, method: &Method, rest: &[&str], body: &Bytes) -> Resp {
    let parsed: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")),
        }
    };
    match (method, rest) {
        (&Method::POST, ["devices"]) => {
            let Some(identity) =
                parsed.get("identity_data").or_else(|| parsed.get("identity")).filter(|v| v.is_object())
            else {
                return error(StatusCode::BAD_REQUEST, "identity_data must be a JSON object");
            };
            json(StatusCode::OK, &create_device(st, identity))
        }
        (&Method::POST, ["devices", id, "disconnect"]) => {
            let live = st.lock().live.get(*id).map(|l| l.tx.clone());
            match live {
                Some(tx) => {
                    let _ = tx.try_send(DeviceOut::Close(1011, "connection closed by the server".into()));
                    http_util::empty(StatusCode::NO_CONTENT)
                }
                None => error(StatusCode::NOT_FOUND, "device not connected"),
            }
        }
        (&Method::POST, ["users"]) => {
            let (Some(email), Some(password)) =
                (parsed.get("email").and_then(Value::as_str), parsed.get("password").and_then(Value::as_str))
            else {
                return error(StatusCode::BAD_REQUEST, "email and password are required");
            };
            let id = new_id();
            st.lock()
                .users
                .insert(email.to_lowercase(), User { id: id.clone(), password: password.to_owned() });
            json(StatusCode::CREATED, &json!({ "id": id }))
        }
        (&Method::GET, ["state"]) => {
            let inner = st.lock();
            let devices: Vec<Value> = inner.devices.values().map(|d| inner.device_json(d)).collect();
            let dc: Vec<Value> = inner
                .dc
                .iter()
                .map(|(id, d)| json!({ "device_id": id, "connected": d.connected, "version": d.version }))
                .collect();
            let sessions: Vec<Value> = inner
                .sessions
                .iter()
                .map(|(sid, s)| json!({ "sid": sid, "device_id": s.device_id }))
                .collect();
            let users: Vec<Value> =
                inner.users.iter().map(|(email, u)| json!({ "email": email, "id": u.id })).collect();
            json(
                StatusCode::OK,
                &json!({ "users": users, "devices": devices, "deviceconnect": dc, "sessions": sessions }),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
