//! deviceconnect: the device websocket, the user websocket relay, connection state and the
//! mender-client commands.

use crate::http_util::{self, Resp, error, json};
use crate::protomsg::{self, PROTO_MENDER_CLIENT, PROTO_SHELL, Prop};
use crate::state::{DcDevice, DeviceOut, LiveConn, Session, SessionIn, State};
use crate::timefmt::rfc3339;
use crate::websocket::{self, Ws};
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use futures_lite::StreamExt as _;
use futures_lite::future;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The device agent's read limit; nothing the mock builds for a device may exceed it.
pub const DEVICE_FRAME_LIMIT: usize = 8192;
/// Depth of a session's inbound queue (device → user frames).
const SESSION_QUEUE: usize = 256;

/// Sends one frame to the device's live connection. False when the device is not connected.
pub fn send_to_device(st: &State, device_id: &str, frame: Vec<u8>) -> bool {
    if frame.len() > DEVICE_FRAME_LIMIT {
        log::warn!(
            "device {device_id}: frame of {} bytes exceeds the agent's {DEVICE_FRAME_LIMIT}-byte limit",
            frame.len()
        );
    }
    let tx = st.lock().live.get(device_id).map(|l| l.tx.clone());
    match tx {
        Some(tx) => tx.try_send(DeviceOut::Frame(frame)).is_ok(),
        None => false,
    }
}

/// Registers a server-side session (user socket, file transfer) and returns its inbound queue.
pub fn register_session(st: &State, sid: &str, device_id: &str) -> async_channel::Receiver<SessionIn> {
    let (tx, rx) = async_channel::bounded(SESSION_QUEUE);
    st.lock()
        .sessions
        .insert(sid.to_owned(), Session { device_id: device_id.to_owned(), tx, shell_answered: false });
    rx
}

pub fn unregister_session(st: &State, sid: &str) {
    st.lock().sessions.remove(sid);
}

/// `GET /api/devices/v1/deviceconnect/connect`.
pub fn device_connect(st: Arc<State>, mut req: Request<Incoming>, device_id: String) -> Resp {
    if let Err(r) = websocket::check(&req) {
        return r;
    }
    let (resp, on) = websocket::accept(&mut req);
    smol::spawn(async move {
        if let Some(ws) = websocket::finish(on).await {
            run_device(st, device_id, ws).await;
        }
    })
    .detach();
    resp
}

enum DevEv {
    In(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Out(Result<DeviceOut, async_channel::RecvError>),
    Ping,
}

async fn run_device(st: Arc<State>, device_id: String, mut ws: Ws) {
    let conn_id = st.next_seq();
    let (tx, rx) = async_channel::unbounded();
    let version = {
        let mut inner = st.lock();
        if let Some(old) = inner.live.insert(device_id.clone(), LiveConn { conn_id, tx }) {
            log::info!("ws device {device_id}: newer connection #{conn_id} replaces #{}", old.conn_id);
            let _ = old.tx.try_send(DeviceOut::Close(1011, "connection closed by the server".into()));
        }
        let now = SystemTime::now();
        let rec = inner.dc.entry(device_id.clone()).or_insert_with(|| DcDevice {
            connected: false,
            created: now,
            updated: now,
            version: 0,
        });
        rec.connected = true;
        rec.updated = now;
        rec.version += 1;
        rec.version
    };
    log::info!("ws device {device_id}: connected (#{conn_id})");
    let mut last_out = Instant::now();
    let mut last_in = Instant::now();
    // R's 60 s read deadline (`pongWait`), renewed by every frame from the device (pongs
    // included): without any, the peer is gone (e.g. a cut network that sent no FIN). Checked
    // when a ping is due, so it fires within a ping period after.
    let read_deadline = crate::config::READ_DEADLINE;
    let reason: String = loop {
        let deadline = last_out + st.cfg.ping_interval;
        let ev = future::or(
            async { DevEv::In(ws.next().await) },
            future::or(async { DevEv::Out(rx.recv().await) }, async {
                async_io::Timer::at(deadline).await;
                DevEv::Ping
            }),
        )
        .await;
        if matches!(ev, DevEv::In(_)) {
            last_in = Instant::now();
        }
        match ev {
            DevEv::In(Some(Ok(Message::Binary(b)))) => {
                if let Err(why) = route_from_device(&st, &device_id, b.to_vec()).await {
                    log::info!("ws device {device_id}: closing: {why}");
                    let _ = ws.close(Some(close_frame(1011, &why))).await;
                    break why;
                }
            }
            DevEv::In(Some(Ok(Message::Text(t)))) => {
                let b: bytes::Bytes = t.into();
                if let Err(why) = route_from_device(&st, &device_id, b.to_vec()).await {
                    let _ = ws.close(Some(close_frame(1011, &why))).await;
                    break why;
                }
            }
            DevEv::In(Some(Ok(Message::Close(c)))) => {
                log::info!("ws device {device_id}: close frame from device: {c:?}");
            }
            DevEv::In(Some(Ok(_))) => {}
            DevEv::In(Some(Err(e))) => break format!("read error: {e}"),
            DevEv::In(None) => break "closed by device".into(),
            DevEv::Out(Ok(DeviceOut::Frame(b))) => {
                last_out = Instant::now();
                if let Err(e) = ws.send(Message::Binary(b.into())).await {
                    break format!("write error: {e}");
                }
            }
            DevEv::Out(Ok(DeviceOut::Close(code, text))) => {
                let _ = ws.close(Some(close_frame(code, &text))).await;
                break format!("closed by server: {code} {text}");
            }
            DevEv::Out(Err(_)) => break "connection replaced".into(),
            DevEv::Ping => {
                if last_in.elapsed() > read_deadline {
                    let _ = ws.close(Some(close_frame(1011, "i/o timeout"))).await;
                    break "read deadline exceeded".into();
                }
                last_out = Instant::now();
                if let Err(e) = ws.send(Message::Ping(bytes::Bytes::from_static(b"60"))).await {
                    break format!("ping write error: {e}");
                }
            }
        }
    };
    log::info!("ws device {device_id}: disconnected (#{conn_id}): {reason}");
    let notices = {
        let mut inner = st.lock();
        if inner.live.get(&device_id).is_some_and(|l| l.conn_id == conn_id) {
            inner.live.remove(&device_id);
        }
        if let Some(rec) = inner.dc.get_mut(&device_id) {
            // A newer connection bumped the version: it owns the status now.
            if rec.version == version {
                rec.connected = false;
                rec.updated = SystemTime::now();
            }
        }
        let still_live = inner.live.contains_key(&device_id);
        if st.cfg.disconnect_notice && !still_live {
            inner
                .sessions
                .iter()
                .filter(|(_, s)| s.device_id == device_id && s.shell_answered)
                .map(|(sid, s)| (sid.clone(), s.tx.clone()))
                .collect()
        } else {
            Vec::new()
        }
    };
    for (sid, tx) in notices {
        let msg = protomsg::encode(
            PROTO_SHELL,
            "stop",
            &sid,
            &[("status", Prop::Int(2))],
            Some(b"device disconnected"),
        );
        let _ = tx.try_send(SessionIn::Frame(msg));
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame { code: code.into(), reason: reason.into() }
}

/// Forwards a device frame, unchanged, to the session named by its `sid`.
async fn route_from_device(st: &State, device_id: &str, data: Vec<u8>) -> Result<(), String> {
    let target = {
        let msg = protomsg::parse(&data).map_err(|e| e.to_string())?;
        log::debug!(
            "ws device {device_id}: <- proto={} typ={} sid={} {} bytes",
            msg.proto,
            msg.typ,
            msg.sid,
            data.len()
        );
        if msg.sid.is_empty() {
            if msg.proto == PROTO_SHELL {
                return Err("api: message missing required session ID".into());
            }
            if msg.proto == PROTO_MENDER_CLIENT {
                // The real server ignores these replies; the mock logs them so that tests can see
                // what a device reports (status 1 ok, 2 error with the text as body).
                let status = match msg.prop("status") {
                    Some(crate::msgpack::Value::Int(n)) => n.to_string(),
                    other => format!("{other:?}"),
                };
                log::info!(
                    "ws device {device_id}: mender-client reply typ={} status={status} body={}",
                    msg.typ,
                    String::from_utf8_lossy(msg.body_bytes()).escape_debug()
                );
            }
            log::info!("ws device {device_id}: dropping proto={} typ={} without sid", msg.proto, msg.typ);
            return Ok(());
        }
        let mut inner = st.lock();
        match inner.sessions.get_mut(&msg.sid) {
            Some(s) if s.device_id == device_id => {
                if msg.proto == PROTO_SHELL && msg.typ == "new" {
                    s.shell_answered = true;
                }
                Some(s.tx.clone())
            }
            _ => {
                log::info!(
                    "ws device {device_id}: dropping proto={} typ={} for unknown session {}",
                    msg.proto,
                    msg.typ,
                    msg.sid
                );
                None
            }
        }
    };
    if let Some(tx) = target {
        let _ = tx.send(SessionIn::Frame(data)).await;
    }
    Ok(())
}

/// Device record check shared by the management handlers.
pub enum DeviceState {
    NotFound,
    Disconnected,
    Connected,
}

pub fn device_state(st: &State, device_id: &str) -> DeviceState {
    match st.lock().dc.get(device_id) {
        None => DeviceState::NotFound,
        Some(d) if d.connected => DeviceState::Connected,
        Some(_) => DeviceState::Disconnected,
    }
}

/// `GET /api/management/v1/deviceconnect/devices/{id}`.
pub fn device_status(st: &State, device_id: &str) -> Resp {
    match st.lock().dc.get(device_id) {
        None => error(StatusCode::NOT_FOUND, "device not found"),
        Some(d) => json(
            StatusCode::OK,
            &json!({
                "device_id": device_id,
                "status": if d.connected { "connected" } else { "disconnected" },
                "created_ts": rfc3339(d.created),
                "updated_ts": rfc3339(d.updated),
            }),
        ),
    }
}

/// `POST .../devices/{id}/check-update` and `.../send-inventory`.
pub fn mender_client_command(st: &State, device_id: &str, user_id: &str, typ: &str) -> Resp {
    match device_state(st, device_id) {
        DeviceState::NotFound => return error(StatusCode::NOT_FOUND, "device not found"),
        DeviceState::Disconnected => {
            // R's quirk: the error field is an empty object.
            return json(StatusCode::CONFLICT, &json!({ "error": {} }));
        }
        DeviceState::Connected => {}
    }
    let msg = protomsg::encode(PROTO_MENDER_CLIENT, typ, "", &[("user_id", Prop::Str(user_id))], None);
    if !send_to_device(st, device_id, msg) {
        return json(StatusCode::CONFLICT, &json!({ "error": {} }));
    }
    log::info!("device {device_id}: sent {typ}");
    http_util::response(StatusCode::ACCEPTED, Some("application/json; charset=utf-8"), "null")
}

/// `GET /api/management/v1/deviceconnect/devices/{id}/connect`.
pub fn user_connect(st: Arc<State>, mut req: Request<Incoming>, device_id: String, user_id: String) -> Resp {
    match device_state(&st, &device_id) {
        DeviceState::NotFound => return error(StatusCode::NOT_FOUND, "device not found"),
        DeviceState::Disconnected => return error(StatusCode::NOT_FOUND, "device not connected"),
        DeviceState::Connected => {}
    }
    if let Err(r) = websocket::check(&req) {
        return r;
    }
    let sid = crate::state::new_id();
    let rx = register_session(&st, &sid, &device_id);
    let (resp, on) = websocket::accept(&mut req);
    smol::spawn(async move {
        match websocket::finish(on).await {
            Some(ws) => run_user(st, sid, device_id, user_id, ws, rx).await,
            None => unregister_session(&st, &sid),
        }
    })
    .detach();
    resp
}

enum UserEv {
    In(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Dev(Result<SessionIn, async_channel::RecvError>),
}

async fn run_user(
    st: Arc<State>,
    sid: String,
    device_id: String,
    user_id: String,
    mut ws: Ws,
    rx: async_channel::Receiver<SessionIn>,
) {
    log::info!("ws user {user_id} -> device {device_id}: session {sid} opened");
    let mut shell_running = false;
    let mut output_bytes = 0usize;
    let mut limit_hit = false;
    let reason: String = loop {
        let ev =
            future::or(async { UserEv::In(ws.next().await) }, async { UserEv::Dev(rx.recv().await) }).await;
        let data = match ev {
            UserEv::In(Some(Ok(Message::Binary(b)))) => b,
            UserEv::In(Some(Ok(Message::Text(t)))) => t.into(),
            UserEv::In(Some(Ok(Message::Close(_)))) => continue,
            UserEv::In(Some(Ok(_))) => continue,
            UserEv::In(Some(Err(e))) => break format!("read error: {e}"),
            UserEv::In(None) => break "closed by user".into(),
            UserEv::Dev(Ok(SessionIn::Frame(b))) => {
                let out_len = shell_output_len(&b);
                if let Some(n) = out_len {
                    if output_bytes >= st.cfg.session_byte_limit {
                        if !limit_hit {
                            limit_hit = true;
                            log::info!("ws user session {sid}: session byte limit exceeded");
                            let text = b"session byte limit exceeded";
                            let stop = protomsg::encode(
                                PROTO_SHELL,
                                "stop",
                                &sid,
                                &[("status", Prop::Int(2)), ("user_id", Prop::Str(&user_id))],
                                Some(text),
                            );
                            send_to_device(&st, &device_id, stop);
                            let notice = protomsg::encode(
                                PROTO_SHELL,
                                "shell",
                                &sid,
                                &[("status", Prop::Int(2))],
                                Some(text),
                            );
                            if let Err(e) = ws.send(Message::Binary(notice.into())).await {
                                break format!("write error: {e}");
                            }
                        }
                        continue;
                    }
                    output_bytes += n;
                    record(&st, &sid, &b);
                }
                if let Err(e) = ws.send(Message::Binary(b.into())).await {
                    break format!("write error: {e}");
                }
                continue;
            }
            UserEv::Dev(Err(_)) => break "session ended".into(),
        };
        let out = match protomsg::parse(&data) {
            Ok(msg) => {
                log::debug!(
                    "ws user session {sid}: -> proto={} typ={} {} bytes",
                    msg.proto,
                    msg.typ,
                    data.len()
                );
                if msg.proto == PROTO_SHELL {
                    match msg.typ.as_str() {
                        "new" => shell_running = true,
                        "stop" => shell_running = false,
                        _ => {}
                    }
                }
                protomsg::rewrite_for_device(&msg, &sid, &user_id)
            }
            Err(e) => {
                let why = e.to_string();
                let _ = ws.close(Some(close_frame(1011, &why))).await;
                break format!("bad message: {why}");
            }
        };
        if !send_to_device(&st, &device_id, out) {
            log::info!("ws user session {sid}: device {device_id} not connected; message dropped");
        }
    };
    unregister_session(&st, &sid);
    if shell_running {
        let stop = protomsg::encode(
            PROTO_SHELL,
            "stop",
            &sid,
            &[("status", Prop::Int(2)), ("user_id", Prop::Str(&user_id))],
            Some(b"user disconnected"),
        );
        send_to_device(&st, &device_id, stop);
    }
    log::info!("ws user session {sid}: closed: {reason}");
}

/// Recorded output per session is capped like R's session byte limit.
const RECORDING_LIMIT: usize = 8 << 20;
/// R adds a delay marker when output pauses this long.
const DELAY_MARKER_MIN: Duration = Duration::from_millis(1500);
/// Playback sends recorded output in pieces of at most this size.
const PLAYBACK_CHUNK: usize = 1024;

/// The body length of a shell `shell` (output) message, None for any other message.
fn shell_output_len(frame: &[u8]) -> Option<usize> {
    let m = protomsg::parse(frame).ok()?;
    (m.proto == PROTO_SHELL && m.typ == "shell").then(|| m.body_bytes().len())
}

/// Records the body of a device→user shell `shell` message for playback.
fn record(st: &State, sid: &str, frame: &[u8]) {
    let Ok(m) = protomsg::parse(frame) else { return };
    let body = m.body_bytes();
    if m.proto != PROTO_SHELL || m.typ != "shell" || body.is_empty() {
        return;
    }
    let mut inner = st.lock();
    let rec = inner.recordings.entry(sid.to_owned()).or_default();
    if rec.output.len() >= RECORDING_LIMIT {
        return;
    }
    let now = Instant::now();
    if let Some(prev) = rec.last_output {
        let gap = now.duration_since(prev);
        if gap >= DELAY_MARKER_MIN {
            let ms = u16::try_from(gap.as_millis()).unwrap_or(u16::MAX);
            let at = rec.output.len();
            rec.delays.push((at, ms));
        }
    }
    rec.last_output = Some(now);
    rec.output.extend_from_slice(body);
}

/// `GET /api/management/v1/deviceconnect/sessions/{sid}/playback` (websocket).
pub fn playback(st: Arc<State>, mut req: Request<Incoming>, sid: String) -> Resp {
    if let Err(r) = websocket::check(&req) {
        return r;
    }
    let (resp, on) = websocket::accept(&mut req);
    smol::spawn(async move {
        if let Some(ws) = websocket::finish(on).await {
            run_playback(st, sid, ws).await;
        }
    })
    .detach();
    resp
}

async fn run_playback(st: Arc<State>, sid: String, mut ws: Ws) {
    let (output, delays) = match st.lock().recordings.get(&sid) {
        Some(r) => (r.output.clone(), r.delays.clone()),
        None => (Vec::new(), Vec::new()),
    };
    let mut msgs = Vec::new();
    let mut pos = 0;
    let mut markers = delays.iter().peekable();
    while pos < output.len() || markers.peek().is_some() {
        if let Some((at, ms)) = markers.peek().copied() {
            if *at <= pos {
                msgs.push(protomsg::encode(
                    PROTO_SHELL,
                    "delay",
                    &sid,
                    &[("delay_value", Prop::U16(*ms))],
                    None,
                ));
                markers.next();
                continue;
            }
        }
        let limit = markers.peek().map_or(output.len(), |(at, _)| (*at).min(output.len()));
        let end = (pos + PLAYBACK_CHUNK).min(limit).max(pos + 1).min(output.len());
        if end <= pos {
            break;
        }
        msgs.push(protomsg::encode(PROTO_SHELL, "shell", &sid, &[], Some(&output[pos..end])));
        pos = end;
    }
    log::info!("ws playback {sid}: {} messages, {} bytes", msgs.len(), output.len());
    for m in msgs {
        async_io::Timer::after(st.cfg.playback_sleep).await;
        if ws.send(Message::Binary(m.into())).await.is_err() {
            return;
        }
    }
    // R keeps the socket open after the last message until the client closes it.
    while let Some(Ok(m)) = ws.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    log::info!("ws playback {sid}: closed");
}

/// deviceconnect's internal API (no authentication, as behind the real gateway).
pub fn internal(st: &State, method: &hyper::Method, rest: &[&str], body: &[u8]) -> Resp {
    use hyper::Method;
    match (method, rest) {
        (&Method::GET, ["alive" | "health"]) => http_util::empty(StatusCode::NO_CONTENT),
        (&Method::POST, ["tenants", _tid, "devices"]) => {
            let id = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("device_id").and_then(|d| d.as_str()).map(str::to_owned))
                .filter(|d| !d.is_empty());
            let Some(id) = id else {
                return error(StatusCode::BAD_REQUEST, "device_id is empty");
            };
            let now = SystemTime::now();
            st.lock().dc.entry(id).or_insert(DcDevice {
                connected: false,
                created: now,
                updated: now,
                version: 0,
            });
            http_util::empty(StatusCode::CREATED)
        }
        (&Method::DELETE, ["tenants", _tid, "devices", id]) => {
            st.lock().dc.remove(*id);
            http_util::empty(StatusCode::ACCEPTED)
        }
        (&Method::DELETE, ["tenants", _tid]) => {
            st.lock().dc.clear();
            http_util::empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["tenants", _tid, "devices", id, cmd @ ("check-update" | "send-inventory")]) => {
            match device_state(st, id) {
                DeviceState::NotFound => error(StatusCode::NOT_FOUND, "device not found"),
                DeviceState::Disconnected => json(StatusCode::CONFLICT, &json!({ "error": {} })),
                DeviceState::Connected => {
                    let msg = protomsg::encode(PROTO_MENDER_CLIENT, cmd, "", &[], None);
                    send_to_device(st, id, msg);
                    http_util::response(StatusCode::ACCEPTED, Some("application/json; charset=utf-8"), "null")
                }
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}
