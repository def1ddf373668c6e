//! Request routing: the gateway's token checks merged with the services' handlers.

use crate::devauth;
use crate::deviceconnect;
use crate::filetransfer;
use crate::http_util::{self, BODY_LIMIT, Resp, error, read_body};
use crate::state::{AuthFail, Identity, State};
use crate::useradm;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use std::sync::Arc;

pub async fn handle(st: Arc<State>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("X-MEN-RequestID")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(crate::state::new_id);
    let mut resp = route(st.clone(), req).await;
    if method != Method::GET && method != Method::HEAD && !resp.status().is_server_error() {
        crate::persist::save(&st);
    }
    log::info!("http {method} {path} -> {}", resp.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("X-MEN-RequestID", v);
    }
    resp
}

fn device_auth(st: &State, req: &Request<Incoming>) -> Result<String, Resp> {
    match st.authenticate(http_util::token(req.headers()).as_deref()) {
        Ok(Identity::Device { device_id }) => Ok(device_id),
        // deviceauth's 403 branch for expired tokens is dead code: golang-jwt reports an expired
        // token as invalid first, so the real server answers 401, and the Mender client only
        // re-authenticates on 401.
        Err(AuthFail::Expired) => {
            log::info!("device token expired");
            Err(http_util::unauthorized())
        }
        _ => Err(http_util::unauthorized()),
    }
}

fn user_auth(st: &State, req: &Request<Incoming>) -> Result<String, Resp> {
    match st.authenticate(http_util::token(req.headers()).as_deref()) {
        Ok(Identity::User { user_id }) => Ok(user_id),
        _ => Err(http_util::unauthorized()),
    }
}

async fn route(st: Arc<State>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    match segs.as_slice() {
        ["api", "devices", "v1", "authentication", "auth_requests"] => {
            if method != Method::POST {
                return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            let headers = req.headers().clone();
            match read_body(req.into_body(), BODY_LIMIT).await {
                Ok(body) => devauth::auth_request(&st, &headers, &body),
                Err(r) => r,
            }
        }
        ["api", "devices", rest @ ..] => {
            let device_id = match device_auth(&st, &req) {
                Ok(d) => d,
                Err(r) => return r,
            };
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            device_routes(st, req, &method, &rest, device_id).await
        }
        ["api", "management", "v1", "useradm", "auth", "login"] => {
            if method != Method::POST {
                return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            let headers = req.headers().clone();
            match read_body(req.into_body(), BODY_LIMIT).await {
                Ok(body) => useradm::login(&st, &headers, &body),
                Err(r) => r,
            }
        }
        ["api", "management", rest @ ..] => {
            let user_id = match user_auth(&st, &req) {
                Ok(u) => u,
                Err(r) => return r,
            };
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            management_routes(st, req, &method, &rest, user_id).await
        }
        ["api", "internal", "v1", "deviceconnect", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            match read_body(req.into_body(), BODY_LIMIT).await {
                Ok(body) => deviceconnect::internal(&st, &method, &rest, &body),
                Err(r) => r,
            }
        }
        ["__mock", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            match read_body(req.into_body(), BODY_LIMIT).await {
                Ok(body) => crate::control::handle(&st, &method, &rest, &body),
                Err(r) => r,
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn device_routes(
    st: Arc<State>,
    req: Request<Incoming>,
    method: &Method,
    rest: &[&str],
    device_id: String,
) -> Resp {
    match (method, rest) {
        (_, ["v1", "deviceconnect", "connect"]) => deviceconnect::device_connect(st, req, device_id),
        (&Method::PUT | &Method::PATCH, ["v1", "inventory", "device", "attributes"]) => {
            // Drain the body so the connection stays usable.
            match read_body(req.into_body(), BODY_LIMIT).await {
                Ok(_) => http_util::empty(StatusCode::OK),
                Err(r) => r,
            }
        }
        (&Method::POST, ["v2", "deployments", "device", "deployments", "next"])
        | (&Method::POST | &Method::GET, ["v1", "deployments", "device", "deployments", "next"]) => {
            let _ = read_body(req.into_body(), BODY_LIMIT).await;
            http_util::empty(StatusCode::NO_CONTENT)
        }
        (&Method::PUT, ["v1", "deployments", "device", "deployments", _, "status" | "log"]) => {
            let _ = read_body(req.into_body(), 64 << 20).await;
            http_util::empty(StatusCode::NO_CONTENT)
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn management_routes(
    st: Arc<State>,
    req: Request<Incoming>,
    method: &Method,
    rest: &[&str],
    user_id: String,
) -> Resp {
    match (method, rest) {
        (_, ["v2", "devauth", tail @ ..]) => {
            let tail: Vec<&str> = tail.to_vec();
            let query = req.uri().query().map(str::to_owned);
            let headers = req.headers().clone();
            let body = match read_body(req.into_body(), BODY_LIMIT).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            devauth::management(&st, method, &tail, query.as_deref(), &headers, &body)
        }
        (&Method::GET, ["v1", "deviceconnect", "devices", id]) => deviceconnect::device_status(&st, id),
        (_, ["v1", "deviceconnect", "devices", id, "connect"]) => {
            let id = (*id).to_owned();
            deviceconnect::user_connect(st, req, id, user_id)
        }
        (&Method::GET | &Method::HEAD, ["v1", "deviceconnect", "devices", id, "download"]) => {
            let id = (*id).to_owned();
            filetransfer::download(st, req, id, user_id).await
        }
        (&Method::PUT, ["v1", "deviceconnect", "devices", id, "upload"]) => {
            let id = (*id).to_owned();
            filetransfer::upload(st, req, id, user_id).await
        }
        (_, ["v1", "deviceconnect", "sessions", sid, "playback"]) => {
            let sid = (*sid).to_owned();
            deviceconnect::playback(st, req, sid)
        }
        (
            &Method::POST,
            ["v1", "deviceconnect", "devices", id, cmd @ ("check-update" | "send-inventory")],
        ) => deviceconnect::mender_client_command(&st, id, &user_id, cmd),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
