//! The deviceconnect management endpoints the integration suite drives with `requests`: file
//! download (`GET .../devices/{id}/download?path=`), multipart upload (`PUT .../upload`), and the
//! mender-client triggers (`POST .../check-update`, `.../send-inventory`). Bodies stream, so
//! 100 MiB transfers and paced uploads do not sit in memory.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// Bound for one transfer request (a paced minute-long upload, or 100 MiB on a loaded machine).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// The deviceconnect API of one device, as a logged-in user.
#[derive(Debug, Clone)]
pub struct DeviceConnect {
    base: String,
    token: String,
    device_id: String,
}

/// A finished request: status, headers, and the body when it was kept.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body, unless it was streamed elsewhere.
    pub body: Vec<u8>,
    /// Body bytes read (also counts bytes streamed to a sink).
    pub body_len: u64,
}

impl Answer {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The `error` string of a JSON error body.
    pub fn error(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()?
            .get("error")?
            .as_str()
            .map(str::to_owned)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The multipart fields of an upload besides the file, as the integration suite's `upload_file`
/// sends them (strings, as typed by a user; `None` leaves a field out).
#[derive(Debug, Clone, Copy)]
pub struct UploadFields<'a> {
    /// Target path on the device.
    pub path: &'a str,
    /// Octal mode (the suite's default is `600`).
    pub mode: Option<&'a str>,
    /// Owner uid (default `0`).
    pub uid: Option<&'a str>,
    /// Group gid (default `0`).
    pub gid: Option<&'a str>,
}

impl<'a> UploadFields<'a> {
    /// The suite's defaults: mode `600`, uid and gid `0`.
    pub fn new(path: &'a str) -> Self {
        UploadFields { path, mode: Some("600"), uid: Some("0"), gid: Some("0") }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TRANSFER_TIMEOUT))
        .build()
        .into()
}

/// Percent-encodes a query value as Python's `urllib.parse.quote` does (keeps `/`).
fn quote(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl DeviceConnect {
    /// The API at `base` (`http://127.0.0.1:PORT`) with a user JWT, for `device_id`.
    pub fn new(base: &str, token: &str, device_id: &str) -> Self {
        DeviceConnect {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            device_id: device_id.to_owned(),
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/api/management/v1/deviceconnect/devices/{}/{tail}", self.base, self.device_id)
    }

    fn err(method: &str, url: &str, detail: String) -> Error {
        Error::Http { method: method.to_owned(), url: url.to_owned(), detail }
    }

    /// `GET .../download?path=PATH`, keeping the body.
    pub fn download(&self, path: &str) -> Result<Answer, Error> {
        let mut body = Vec::new();
        let mut answer = self.download_to(path, &mut body)?;
        if answer.status == 200 {
            answer.body = body;
        }
        Ok(answer)
    }

    /// `GET .../download?path=PATH`, streaming a 200 body into `sink` (an error body is kept in
    /// [`Answer::body`]).
    pub fn download_to(&self, path: &str, sink: &mut dyn Write) -> Result<Answer, Error> {
        let url = format!("{}?path={}", self.url("download"), quote(path));
        let request = ureq::http::Request::builder()
            .method("GET")
            .uri(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .body(())
            .map_err(|e| Self::err("GET", &url, e.to_string()))?;
        let mut response = agent().run(request).map_err(|e| Self::err("GET", &url, e.to_string()))?;
        let status = response.status().as_u16();
        let headers = headers_of(&response);
        let mut reader = response.body_mut().as_reader();
        let mut kept = Vec::new();
        let body_len = if status == 200 {
            std::io::copy(&mut reader, sink)
        } else {
            std::io::copy(&mut reader, &mut kept)
        }
        .map_err(|e| Self::err("GET", &url, format!("reading the body: {e}")))?;
        Ok(Answer { status, headers, body: kept, body_len })
    }

    /// `PUT .../upload` as `multipart/form-data`: the `fields`, then the `file` part named after
    /// the target's base name with `content`, streamed.
    pub fn upload(&self, fields: &UploadFields<'_>, content: &mut dyn Read) -> Result<Answer, Error> {
        let url = self.url("upload");
        // Random enough to never occur in test payloads by accident.
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let boundary = format!(
            "interop-boundary-{}-{}-{nanos:08x}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        );
        let mut head = String::new();
        let mut field = |name: &str, value: &str| {
            head.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        };
        field("path", fields.path);
        if let Some(mode) = fields.mode {
            field("mode", mode);
        }
        if let Some(uid) = fields.uid {
            field("uid", uid);
        }
        if let Some(gid) = fields.gid {
            field("gid", gid);
        }
        let filename = fields.path.rsplit('/').next().unwrap_or("");
        head.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ));
        let tail = format!("\r\n--{boundary}--\r\n");
        let mut body = head.as_bytes().chain(content).chain(tail.as_bytes());
        let request = ureq::http::Request::builder()
            .method("PUT")
            .uri(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
            .body(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| Self::err("PUT", &url, e.to_string()))?;
        let mut response = agent().run(request).map_err(|e| Self::err("PUT", &url, e.to_string()))?;
        let status = response.status().as_u16();
        let headers = headers_of(&response);
        let mut kept = Vec::new();
        let body_len = std::io::copy(&mut response.body_mut().as_reader(), &mut kept)
            .map_err(|e| Self::err("PUT", &url, format!("reading the body: {e}")))?;
        Ok(Answer { status, headers, body: kept, body_len })
    }

    /// `POST .../check-update` or `.../send-inventory` (`command`).
    pub fn mender_client_command(&self, command: &str) -> Result<Answer, Error> {
        let url = self.url(command);
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .body(())
            .map_err(|e| Self::err("POST", &url, e.to_string()))?;
        let mut response = agent().run(request).map_err(|e| Self::err("POST", &url, e.to_string()))?;
        let status = response.status().as_u16();
        let headers = headers_of(&response);
        let mut kept = Vec::new();
        let body_len = std::io::copy(&mut response.body_mut().as_reader(), &mut kept)
            .map_err(|e| Self::err("POST", &url, format!("reading the body: {e}")))?;
        Ok(Answer { status, headers, body: kept, body_len })
    }
}

fn headers_of(response: &ureq::http::Response<ureq::Body>) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

/// A reader that yields `total` pseudo-random bytes at about `bytes_per_second` (in slices of at
/// most 1 KiB), counting what was read in a shared counter, so that a test can keep a transfer
/// running at a known rate for a minute.
pub struct Paced {
    rate: u64,
    total: u64,
    started: Option<Instant>,
    read: Arc<AtomicU64>,
    state: u64,
}

impl Paced {
    /// `total` bytes at `bytes_per_second`.
    pub fn new(total: u64, bytes_per_second: u64) -> Self {
        Paced {
            rate: bytes_per_second.max(1),
            total,
            started: None,
            read: Arc::new(AtomicU64::new(0)),
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Bytes handed out so far (shared, readable while the upload runs).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }
}

impl Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let done = self.read.load(Ordering::Relaxed);
        if done >= self.total || buf.is_empty() {
            return Ok(0);
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        // Sleep until the schedule allows the next byte; bounded by one slice's worth.
        let due = Duration::from_secs_f64(done as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let n = buf.len().min(1024).min((self.total - done) as usize);
        for byte in &mut buf[..n] {
            // xorshift: incompressible filler without reading /dev/urandom per slice.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *byte = self.state as u8;
        }
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
