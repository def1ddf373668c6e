//! deviceconnect file transfer (R behaviour): download and upload through the device's websocket,
//! with the handshake, 4096-byte chunks, int64 offsets, acks every 10 chunks and a 20-chunk window.

use crate::deviceconnect::{DeviceState, device_state, register_session, send_to_device, unregister_session};
use crate::http_util::{Resp, error, query_pairs};
use crate::msgpack::Value;
use crate::multipart::{self, Multipart};
use crate::protomsg::{self, PROTO_CONTROL, PROTO_FILE_TRANSFER, Prop, body};
use crate::state::{SessionIn, State, new_id};
use bytes::Bytes;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK_SIZE: usize = 4096;
const ACK_EVERY: u64 = 10;
const WINDOW: i64 = 20 * CHUNK_SIZE as i64;
const UPLOAD_LIMIT: u64 = 1 << 30;
/// Go `os.FileMode` type bits: dir, symlink, device, named pipe, socket, char device, irregular.
const GO_MODE_TYPE_BITS: u64 = 0x8F28_0000;

/// A failed step: HTTP status and message.
struct Fail(StatusCode, String);

impl Fail {
    fn new(status: StatusCode, msg: impl Into<String>) -> Fail {
        Fail(status, msg.into())
    }
    fn timeout() -> Fail {
        Fail::new(StatusCode::REQUEST_TIMEOUT, "file transfer timed out")
    }
}

/// A server-side file-transfer session with the device. Dropping it sends control `close`
/// (once the handshake began) and unregisters the session.
struct Transfer {
    st: Arc<State>,
    sid: String,
    device_id: String,
    user_id: String,
    rx: async_channel::Receiver<SessionIn>,
    opened: bool,
}

/// A device reply, decoded.
struct Reply {
    proto: u16,
    typ: String,
    offset: Option<i64>,
    body: Vec<u8>,
    body_value: Option<Value>,
}

impl Transfer {
    fn new(st: Arc<State>, device_id: String, user_id: String) -> Transfer {
        let sid = new_id();
        let rx = register_session(&st, &sid, &device_id);
        Transfer { st, sid, device_id, user_id, rx, opened: false }
    }

    fn send(&self, proto: u16, typ: &str, offset: Option<i64>, body: Option<&[u8]>) {
        let mut props: Vec<(&str, Prop<'_>)> = Vec::new();
        if let Some(o) = offset {
            props.push(("offset", Prop::I64(o)));
        }
        props.push(("user_id", Prop::Str(&self.user_id)));
        let msg = protomsg::encode(proto, typ, &self.sid, &props, body);
        log::debug!(
            "file transfer {}: -> proto={proto} typ={typ} offset={offset:?} {} bytes",
            self.sid,
            msg.len()
        );
        send_to_device(&self.st, &self.device_id, msg);
    }

    /// The next device message, answering control pings on the way.
    async fn recv(&self) -> Result<Reply, Fail> {
        loop {
            let next = futures_lite::future::or(async { Some(self.rx.recv().await) }, async {
                async_io::Timer::after(STEP_TIMEOUT).await;
                None
            })
            .await;
            let data = match next {
                None => return Err(Fail::timeout()),
                Some(Err(_)) => return Err(Fail::new(StatusCode::INTERNAL_SERVER_ERROR, "session closed")),
                Some(Ok(SessionIn::Frame(d))) => d,
            };
            let msg = protomsg::parse(&data).map_err(|e| {
                Fail::new(StatusCode::INTERNAL_SERVER_ERROR, format!("malformed message: {e}"))
            })?;
            if msg.proto == PROTO_CONTROL && msg.typ == "ping" {
                self.send(PROTO_CONTROL, "pong", None, None);
                continue;
            }
            let offset = match msg.prop("offset") {
                Some(Value::Int(i)) => i64::try_from(i).ok(),
                _ => None,
            };
            return Ok(Reply {
                proto: msg.proto,
                typ: msg.typ.clone(),
                offset,
                body: msg.body_bytes().to_vec(),
                body_value: msg.body_value(),
            });
        }
    }

    /// Control `open` → `accept` with protocol 2.
    async fn handshake(&mut self) -> Result<(), Fail> {
        let open = body::open();
        let msg = protomsg::encode(PROTO_CONTROL, "open", &self.sid, &[], Some(&open));
        if !send_to_device(&self.st, &self.device_id, msg) {
            return Err(Fail::new(StatusCode::CONFLICT, "device not connected"));
        }
        self.opened = true;
        let reply = self.recv().await?;
        match (reply.proto, reply.typ.as_str()) {
            (PROTO_CONTROL, "accept") => {
                let protocols = reply.body_value.as_ref().and_then(|v| v.get("protocols").cloned());
                let has_ft =
                    matches!(protocols, Some(Value::Array(a)) if a.iter().any(|p| p.as_int() == Some(2)));
                if has_ft {
                    Ok(())
                } else {
                    Err(Fail::new(StatusCode::BAD_GATEWAY, "file transfer disabled on device"))
                }
            }
            (PROTO_CONTROL, "error") => Err(Fail::new(StatusCode::INTERNAL_SERVER_ERROR, err_text(&reply))),
            _ => Err(Fail::new(StatusCode::BAD_GATEWAY, "file transfer not implemented on device")),
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.opened {
            let msg = protomsg::encode(
                PROTO_CONTROL,
                "close",
                &self.sid,
                &[("user_id", Prop::Str(&self.user_id))],
                None,
            );
            send_to_device(&self.st, &self.device_id, msg);
        }
        unregister_session(&self.st, &self.sid);
    }
}

fn err_text(reply: &Reply) -> String {
    reply.body_value.as_ref().and_then(|v| v.get("err")).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// The status an FT `error` reply asks for: its `code` when set, else `default`.
fn err_status(reply: &Reply, default: StatusCode) -> StatusCode {
    reply
        .body_value
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_int)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c > 0)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(default)
}

fn device_check(st: &State, device_id: &str) -> Result<(), Resp> {
    match device_state(st, device_id) {
        DeviceState::NotFound => Err(error(StatusCode::NOT_FOUND, "device not found")),
        DeviceState::Disconnected => Err(error(StatusCode::CONFLICT, "device not connected")),
        DeviceState::Connected => Ok(()),
    }
}

/// R's download handler hides the text of every 5xx.
fn download_error(f: Fail) -> Resp {
    if f.0.is_server_error() { error(f.0, "internal error") } else { error(f.0, &f.1) }
}

enum Step {
    Data(Bytes),
    Eof,
}

/// One step of the download loop: the next chunk (acking every 10) or EOF (final ack).
async fn download_step(t: &Transfer, received: &mut i64, chunks: &mut u64) -> Result<Step, Fail> {
    let r = t.recv().await?;
    match (r.proto, r.typ.as_str()) {
        (PROTO_FILE_TRANSFER, "file_chunk") => {
            if r.body.is_empty() {
                t.send(PROTO_FILE_TRANSFER, "ack", Some(*received), None);
                return Ok(Step::Eof);
            }
            if r.offset != Some(*received) {
                return Err(Fail::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "file transfer failed: wrong offset received",
                ));
            }
            *received += r.body.len() as i64;
            *chunks += 1;
            if *chunks % ACK_EVERY == 0 {
                t.send(PROTO_FILE_TRANSFER, "ack", Some(*received), None);
            }
            Ok(Step::Data(Bytes::from(r.body)))
        }
        (PROTO_FILE_TRANSFER, "error") => {
            Err(Fail::new(err_status(&r, StatusCode::INTERNAL_SERVER_ERROR), err_text(&r)))
        }
        (p, typ) => Err(Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected message from device: proto {p} type {typ}"),
        )),
    }
}

/// `GET`/`HEAD /api/management/v1/deviceconnect/devices/{id}/download?path=...`.
pub async fn download(st: Arc<State>, req: Request<Incoming>, device_id: String, user_id: String) -> Resp {
    if let Err(r) = device_check(&st, &device_id) {
        return r;
    }
    let path = query_pairs(req.uri().query())
        .into_iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if path.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad request: path: cannot be blank.");
    }
    if !path.starts_with('/') {
        return error(StatusCode::BAD_REQUEST, "bad request: path: must be absolute.");
    }
    let is_head = req.method() == Method::HEAD;
    drop(req);
    let mut t = Transfer::new(st.clone(), device_id.clone(), user_id);
    log::info!("download {device_id}:{path}: session {}", t.sid);
    if let Err(f) = t.handshake().await {
        return download_error(f);
    }
    t.send(PROTO_FILE_TRANSFER, "stat", None, Some(&body::path(&path)));
    let info = match t.recv().await {
        Ok(r) if r.proto == PROTO_FILE_TRANSFER && r.typ == "file_info" => r,
        Ok(r) if r.proto == PROTO_FILE_TRANSFER && r.typ == "error" => {
            let status = err_status(&r, StatusCode::BAD_REQUEST);
            log::info!("download {device_id}:{path}: failed: {} {}", status.as_u16(), err_text(&r));
            // R's handleResponseError: a device `code` >= 500 is hidden like any 5xx.
            return download_error(Fail::new(
                status,
                format!("failed to retrieve file info: error received from device: {}", err_text(&r)),
            ));
        }
        Ok(r) => {
            return download_error(Fail::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("unexpected message type {}", r.typ),
            ));
        }
        Err(f) => return download_error(f),
    };
    let iv = info.body_value.unwrap_or(Value::Nil);
    let uint = |k: &str| iv.get(k).and_then(Value::as_int).and_then(|i| u64::try_from(i).ok());
    let mode = match uint("mode") {
        Some(m) if m & GO_MODE_TYPE_BITS == 0 => m,
        _ => return error(StatusCode::BAD_REQUEST, "path is not a regular file"),
    };
    let basename = path.rsplit('/').next().unwrap_or("").to_owned();
    let mut headers = vec![
        (header::CONTENT_TYPE.as_str(), "application/octet-stream".to_owned()),
        (header::CONTENT_DISPOSITION.as_str(), format!("attachment; filename=\"{basename}\"")),
        ("X-MEN-File-Path", path.clone()),
    ];
    if let Some(uid) = uint("uid") {
        headers.push(("X-MEN-File-UID", uid.to_string()));
    }
    if let Some(gid) = uint("gid") {
        headers.push(("X-MEN-File-GID", gid.to_string()));
    }
    headers.push(("X-MEN-File-Mode", format!("{mode:o}")));
    if let Some(size) = iv.get("size").and_then(Value::as_int) {
        headers.push(("X-MEN-File-Size", size.to_string()));
    }
    let with_headers = |mut r: Resp| {
        for (k, v) in &headers {
            if let (Ok(k), Ok(v)) = (header::HeaderName::try_from(*k), HeaderValue::from_str(v)) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    };
    if is_head {
        return with_headers(crate::http_util::empty(StatusCode::OK));
    }
    t.send(PROTO_FILE_TRANSFER, "get_file", None, Some(&body::path(&path)));
    let mut received = 0i64;
    let mut chunks = 0u64;
    // Until the first byte goes out, errors can still become a JSON error status (headers kept).
    let first = match download_step(&t, &mut received, &mut chunks).await {
        Ok(s) => s,
        Err(f) => {
            // R answers a 5xx without the device's text; the log keeps it for diagnosis.
            log::info!("download {device_id}:{path}: failed: {} {}", f.0.as_u16(), f.1);
            return with_headers(download_error(f));
        }
    };
    let (tx, rx) = async_channel::bounded::<Result<Frame<Bytes>, std::io::Error>>(8);
    let sid = t.sid.clone();
    smol::spawn(async move {
        let mut step = first;
        loop {
            match step {
                Step::Eof => {
                    log::info!("download session {sid}: done, {received} bytes");
                    break;
                }
                Step::Data(d) => {
                    if tx.send(Ok(Frame::data(d))).await.is_err() {
                        log::info!("download session {sid}: client went away");
                        break;
                    }
                }
            }
            step = match download_step(&t, &mut received, &mut chunks).await {
                Ok(s) => s,
                Err(f) => {
                    log::info!("download session {sid}: failed after {received} bytes: {} {}", f.0, f.1);
                    let _ = tx.send(Err(std::io::Error::other(f.1))).await;
                    break;
                }
            };
        }
        drop(t);
    })
    .detach();
    let mut resp = Response::new(StreamBody::new(rx).boxed());
    *resp.status_mut() = StatusCode::OK;
    with_headers(resp)
}

/// `PUT /api/management/v1/deviceconnect/devices/{id}/upload` (multipart/form-data).
pub async fn upload(st: Arc<State>, req: Request<Incoming>, device_id: String, user_id: String) -> Resp {
    if let Err(r) = device_check(&st, &device_id) {
        return r;
    }
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let Some(boundary) = multipart::boundary(&ct) else {
        return error(
            StatusCode::BAD_REQUEST,
            "malformed request body: request Content-Type isn't multipart/form-data",
        );
    };
    let mut mp = Multipart::new(req.into_body(), &boundary, UPLOAD_LIMIT);
    let resp = upload_inner(st, &mut mp, device_id, user_id).await;
    if !resp.status().is_success() {
        mp.drain().await;
    }
    resp
}

fn parse_uint(s: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(s, radix).map_err(|_| format!("strconv.ParseUint: parsing \"{s}\": invalid syntax"))
}

async fn upload_inner(st: Arc<State>, mp: &mut Multipart, device_id: String, user_id: String) -> Resp {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, &m);
    let (mut path, mut uid, mut gid, mut mode, mut filename) = (String::new(), None, None, None, None);
    let mut have_file = false;
    loop {
        let part = match mp.next_part().await {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) if e == multipart::MultipartError::TooLarge => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
            }
            Err(e) => return bad(e.to_string()),
        };
        if part.name == "file" {
            have_file = true;
            filename = part.filename;
            break;
        }
        let value = match mp.field(CHUNK_SIZE).await {
            Ok(v) => String::from_utf8_lossy(&v).into_owned(),
            Err(e) => return bad(e.to_string()),
        };
        match part.name.as_str() {
            "path" => path = value,
            "uid" => match parse_uint(&value, 10) {
                Ok(v) => uid = Some(v),
                Err(e) => return bad(e),
            },
            "gid" => match parse_uint(&value, 10) {
                Ok(v) => gid = Some(v),
                Err(e) => return bad(e),
            },
            "mode" => match parse_uint(&value, 8) {
                Ok(v) => mode = Some(v),
                Err(e) => return bad(e),
            },
            _ => {}
        }
    }
    let mut problems = Vec::new();
    if !have_file {
        problems.push("file: upload file is required");
    }
    if path.is_empty() {
        problems.push("path: cannot be blank");
    } else if !path.starts_with('/') {
        problems.push("path: must be absolute");
    }
    if !problems.is_empty() {
        return bad(format!("bad request: {}.", problems.join("; ")));
    }
    let mut t = Transfer::new(st, device_id.clone(), user_id);
    log::info!("upload {device_id}:{path}: session {}", t.sid);
    if let Err(f) = t.handshake().await {
        return error(f.0, &f.1);
    }
    let src = filename.unwrap_or_default();
    t.send(PROTO_FILE_TRANSFER, "put_file", None, Some(&body::put_file(&src, &path, uid, gid, mode)));
    let device_error = |r: &Reply| {
        log::info!("upload {device_id}:{path}: device error: {}", err_text(r));
        error(err_status(r, StatusCode::BAD_REQUEST), &err_text(r))
    };
    let mut last_ack: i64 = match t.recv().await {
        Ok(r) if r.proto == PROTO_FILE_TRANSFER && r.typ == "ack" => r.offset.unwrap_or(0),
        Ok(r) if r.proto == PROTO_FILE_TRANSFER && r.typ == "error" => return device_error(&r),
        Ok(r) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("unexpected message type {}", r.typ));
        }
        Err(f) => return error(f.0, &f.1),
    };
    // Handles one device message during streaming: acks move the window, errors end the upload.
    let handle = |r: Reply, last_ack: &mut i64| -> Result<(), Resp> {
        match (r.proto, r.typ.as_str()) {
            (PROTO_FILE_TRANSFER, "ack") => {
                if let Some(o) = r.offset {
                    *last_ack = (*last_ack).max(o);
                }
                Ok(())
            }
            (PROTO_FILE_TRANSFER, "error") => Err(device_error(&r)),
            (p, typ) => Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("unexpected message from device: proto {p} type {typ}"),
            )),
        }
    };
    let mut sent: i64 = 0;
    loop {
        let chunk = match mp.chunk(CHUNK_SIZE).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) if e == multipart::MultipartError::TooLarge => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
            }
            Err(e) => return bad(e.to_string()),
        };
        let offset = sent;
        t.send(PROTO_FILE_TRANSFER, "file_chunk", Some(offset), Some(&chunk));
        sent += chunk.len() as i64;
        while offset > last_ack + WINDOW {
            match t.recv().await {
                Ok(r) => {
                    if let Err(resp) = handle(r, &mut last_ack) {
                        return resp;
                    }
                }
                Err(f) => return error(f.0, &f.1),
            }
        }
        // Pick up early errors (and acks) without waiting.
        while let Ok(SessionIn::Frame(d)) = t.rx.try_recv() {
            let Ok(msg) = protomsg::parse(&d) else { continue };
            if msg.proto == PROTO_CONTROL && msg.typ == "ping" {
                t.send(PROTO_CONTROL, "pong", None, None);
                continue;
            }
            let offset = match msg.prop("offset") {
                Some(Value::Int(i)) => i64::try_from(i).ok(),
                _ => None,
            };
            let r = Reply {
                proto: msg.proto,
                typ: msg.typ.clone(),
                offset,
                body: Vec::new(),
                body_value: msg.body_value(),
            };
            if let Err(resp) = handle(r, &mut last_ack) {
                return resp;
            }
        }
    }
    t.send(PROTO_FILE_TRANSFER, "file_chunk", Some(sent), None);
    while last_ack < sent {
        match t.recv().await {
            Ok(r) => {
                if let Err(resp) = handle(r, &mut last_ack) {
                    return resp;
                }
            }
            Err(f) => return error(f.0, &f.1),
        }
    }
    // Fields after the file part are ignored, as in R; read them so the connection stays usable.
    mp.drain().await;
    log::info!("upload {device_id}:{path}: done, {sent} bytes");
    crate::http_util::empty(StatusCode::CREATED)
}
