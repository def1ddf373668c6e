//! A small blocking HTTP client (ureq, plain http to 127.0.0.1 only) that returns every status as a
//! value, so that tests can assert on the exact answer of the mock server.

use std::time::Duration;

use base64::Engine as _;

use crate::Error;

/// Bound for one HTTP exchange with the mock or a device proxy.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A response: status and body text.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body (lossy UTF-8).
    pub body: String,
    /// The `Location` header, if any.
    pub location: Option<String>,
}

impl Response {
    /// The body parsed as JSON.
    pub fn json(&self, peer: &str) -> Result<serde_json::Value, Error> {
        serde_json::from_str(&self.body)
            .map_err(|e| Error::protocol(peer, format!("body is not JSON ({e}): {}", self.body)))
    }
}

/// Credentials for a request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Auth<'a> {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// HTTP Basic.
    Basic(&'a str, &'a str),
}

/// A body to send.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Body<'a> {
    /// No body.
    Empty,
    /// A JSON document (`Content-Type: application/json`).
    Json(&'a serde_json::Value),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

/// Performs one request and returns its status and body.
pub fn request(method: &str, url: &str, auth: Auth<'_>, body: Body<'_>) -> Result<Response, Error> {
    let err = |detail: String| Error::Http { method: method.to_owned(), url: url.to_owned(), detail };
    let builder = ureq::http::Request::builder().method(method).uri(url);
    let builder = match auth {
        Auth::None => builder,
        Auth::Bearer(token) => builder.header("Authorization", format!("Bearer {token}")),
        Auth::Basic(user, password) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            builder.header("Authorization", format!("Basic {encoded}"))
        }
    };
    let result = match body {
        Body::Empty => builder
            .body(())
            .map_err(|e| err(e.to_string()))
            .and_then(|req| agent().run(req).map_err(|e| err(e.to_string()))),
        Body::Json(value) => builder
            .header("Content-Type", "application/json")
            .body(value.to_string())
            .map_err(|e| err(e.to_string()))
            .and_then(|req| agent().run(req).map_err(|e| err(e.to_string()))),
    };
    let mut response = result?;
    let status = response.status().as_u16();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.body_mut().read_to_string().map_err(|e| err(format!("reading the body: {e}")))?;
    Ok(Response { status, body, location })
}
