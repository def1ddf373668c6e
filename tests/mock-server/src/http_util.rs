//! Response builders, body reading and token extraction shared by the handlers.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

/// deviceconnect's limit for ordinary request bodies.
pub const BODY_LIMIT: usize = 1 << 20;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

pub fn response(status: StatusCode, content_type: Option<&'static str>, data: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(full(data));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

pub fn json(status: StatusCode, v: &Value) -> Resp {
    response(status, Some("application/json; charset=utf-8"), v.to_string())
}

pub fn empty(status: StatusCode) -> Resp {
    response(status, None, Bytes::new())
}

/// The standard Mender error body.
pub fn error(status: StatusCode, msg: &str) -> Resp {
    json(status, &json!({ "error": msg }))
}

pub fn unauthorized() -> Resp {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ManagementJWT\""));
    r
}

/// Reads a whole body up to `limit` bytes; over it → 413.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Resp> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "http: request body too large"))
        }
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &format!("failed to read request body: {e}"))),
    }
}

/// The bearer token as the Mender services find it: `Authorization: Bearer <t>` split on one
/// space into exactly two parts (scheme case-insensitive), else a cookie named `JWT`.
pub fn token(headers: &HeaderMap) -> Option<String> {
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        let h = h.to_str().ok()?;
        let mut parts = h.split(' ');
        return match (parts.next(), parts.next(), parts.next()) {
            (Some(scheme), Some(tok), None) if scheme.eq_ignore_ascii_case("bearer") => Some(tok.to_owned()),
            _ => None,
        };
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else { continue };
        for c in cookies.split(';') {
            if let Some(v) = c.trim().strip_prefix("JWT=") {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// Decodes `application/x-www-form-urlencoded` style query strings.
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex =
                    std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
