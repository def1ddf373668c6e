//! File download and upload through a scripted fake device that speaks the mender-connect
//! file-transfer protocol (handshake, stat, chunks with int64 offsets, acks, window).

mod common;

use common::*;
use rmpv::Value;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::mpsc;
use tungstenite::WebSocket;

const FT: u16 = 2;
const CONTROL: u16 = 0xFFFF;
const DEVICE_WS: &str = "/api/devices/v1/deviceconnect/connect";
const CHUNK: usize = 4096;

#[derive(Clone)]
struct DevFile {
    data: Vec<u8>,
    mode: u32,
}

#[derive(Clone, Default)]
struct Script {
    files: HashMap<String, DevFile>,
    /// Protocols in the `accept` reply; None answers `open` with a shell message instead.
    protocols: Option<Vec<u16>>,
    /// Error text for `put_file`.
    put_error: Option<String>,
    /// Error text sent after this many upload chunks.
    put_error_after: Option<(usize, String)>,
    /// Error text for `get_file`, instead of data.
    get_error: Option<String>,
}

/// What the fake device saw, for assertions.
#[derive(Debug, Default)]
struct Report {
    max_frame: usize,
    max_chunk: usize,
    /// Offsets of the acks received during a download.
    download_acks: Vec<i64>,
    /// put_file request body and the reassembled upload.
    put_request: Option<Vec<u8>>,
    uploaded: Vec<u8>,
    /// Every integer width check that failed.
    width_errors: Vec<String>,
    closes: usize,
    sessions: Vec<String>,
}

fn send(
    ws: &mut WebSocket<TcpStream>,
    proto: u16,
    typ: &str,
    sid: &str,
    offset: Option<i64>,
    body: Option<Vec<u8>>,
) {
    // Written the way mender-connect (Go msgpack) does: int64 offsets, bin bodies.
    let mut props = Vec::new();
    if let Some(o) = offset {
        props.push((Value::from("offset"), Value::from(o)));
    }
    let mut hdr = vec![
        (Value::from("proto"), Value::from(proto)),
        (Value::from("typ"), Value::from(typ)),
        (Value::from("sid"), Value::from(sid)),
    ];
    if !props.is_empty() {
        hdr.push((Value::from("props"), Value::Map(props)));
    }
    let mut top = vec![(Value::from("hdr"), Value::Map(hdr))];
    if let Some(b) = body {
        top.push((Value::from("body"), Value::Binary(b)));
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Map(top)).expect("encode");
    if let Some(o) = offset {
        // rmpv writes compact integers; patch to the int64 form Go uses.
        let pos = out.windows(7).position(|w| w == b"\xa6offset").expect("offset key") + 7;
        let width = match out[pos] {
            0x00..=0x7f => 1,
            0xcc => 2,
            0xcd => 3,
            0xce => 5,
            0xcf | 0xd3 => 9,
            _ => 1,
        };
        let mut int64 = vec![0xd3];
        int64.extend_from_slice(&o.to_be_bytes());
        out.splice(pos..pos + width, int64);
    }
    ws.send(tungstenite::Message::Binary(out.into())).expect("device send");
}

fn map_body(entries: Vec<(&str, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    let v = Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect());
    rmpv::encode::write_value(&mut out, &v).expect("encode");
    out
}

fn check_width(raw: &[u8], key: &str, marker: u8, report: &mut Report) {
    if let Some(b) = bytes_after_key(raw, key) {
        if b.first() != Some(&marker) {
            report
                .width_errors
                .push(format!("{key}: marker {:#x}, want {marker:#x}", b.first().copied().unwrap_or(0)));
        }
    }
}

/// Runs the fake device until its socket closes; returns what it saw.
fn fake_device(
    srv: &Server,
    token: &str,
    script: Script,
) -> (std::thread::JoinHandle<Report>, mpsc::Receiver<()>) {
    let mut ws = srv.ws(DEVICE_WS, token);
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = ready_tx.send(());
        let mut r = Report::default();
        let mut upload_received = 0i64;
        let mut upload_chunks = 0usize;
        loop {
            let raw = match ws.read() {
                Ok(tungstenite::Message::Binary(b)) => b.to_vec(),
                Ok(tungstenite::Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            r.max_frame = r.max_frame.max(raw.len());
            let m = parse(&raw);
            check_width(&raw, "proto", 0xcd, &mut r);
            check_width(&raw, "offset", 0xd3, &mut r);
            if !r.sessions.contains(&m.sid) {
                r.sessions.push(m.sid.clone());
            }
            let sid = m.sid.clone();
            match (m.proto as u16, m.typ.as_str()) {
                (CONTROL, "open") => match &script.protocols {
                    Some(p) => {
                        let protos = Value::Array(p.iter().map(|x| Value::from(*x)).collect());
                        let body = map_body(vec![("version", Value::from(1)), ("protocols", protos)]);
                        send(&mut ws, CONTROL, "accept", &sid, None, Some(body));
                    }
                    None => send(&mut ws, 1, "new", &sid, None, None),
                },
                (CONTROL, "close") => r.closes += 1,
                (FT, "stat") => {
                    let path = get(&m.body_value(), "path").and_then(Value::as_str).unwrap_or("").to_owned();
                    match script.files.get(&path) {
                        Some(f) => {
                            let mut mode_enc = vec![0xce];
                            mode_enc.extend_from_slice(&f.mode.to_be_bytes());
                            let body = map_body(vec![
                                ("path", Value::from(path.as_str())),
                                ("size", Value::from(f.data.len() as i64)),
                                ("uid", Value::from(1000u32)),
                                ("gid", Value::from(100u32)),
                                ("mode", Value::from(f.mode)),
                                ("modtime", Value::Ext(-1, vec![0, 0, 0, 0, 0x60, 0, 0, 0])),
                            ]);
                            send(&mut ws, FT, "file_info", &sid, None, Some(body));
                        }
                        None => {
                            let err = format!(
                                "failed to get file info from path '{path}': stat {path}: no such file or directory"
                            );
                            let body = map_body(vec![
                                ("err", Value::from(err.as_str())),
                                ("msgtype", Value::from("stat")),
                            ]);
                            send(&mut ws, FT, "error", &sid, None, Some(body));
                        }
                    }
                }
                (FT, "get_file") => {
                    if let Some(e) = &script.get_error {
                        send(
                            &mut ws,
                            FT,
                            "error",
                            &sid,
                            None,
                            Some(map_body(vec![("err", Value::from(e.as_str()))])),
                        );
                        continue;
                    }
                    let path = get(&m.body_value(), "path").and_then(Value::as_str).unwrap_or("").to_owned();
                    let data = script.files.get(&path).map(|f| f.data.clone()).unwrap_or_default();
                    let mut offset = 0usize;
                    let mut last_ack = 0i64;
                    let read_ack = |ws: &mut WebSocket<TcpStream>, r: &mut Report| -> i64 {
                        loop {
                            let raw = match ws.read() {
                                Ok(tungstenite::Message::Binary(b)) => b.to_vec(),
                                Ok(_) => continue,
                                Err(e) => panic!("device read during download: {e}"),
                            };
                            check_width(&raw, "offset", 0xd3, r);
                            let a = parse(&raw);
                            if a.typ == "ack" {
                                let o = a.prop_i64("offset").expect("ack offset");
                                r.download_acks.push(o);
                                return o;
                            }
                        }
                    };
                    while offset < data.len() {
                        // mender-connect sends at most 20 chunks beyond the last ack.
                        if offset as i64 - last_ack >= 20 * CHUNK as i64 {
                            last_ack = read_ack(&mut ws, &mut r);
                            continue;
                        }
                        let end = (offset + CHUNK).min(data.len());
                        send(
                            &mut ws,
                            FT,
                            "file_chunk",
                            &sid,
                            Some(offset as i64),
                            Some(data[offset..end].to_vec()),
                        );
                        offset = end;
                    }
                    send(&mut ws, FT, "file_chunk", &sid, Some(data.len() as i64), None);
                    while last_ack < data.len() as i64 || r.download_acks.last() != Some(&(data.len() as i64))
                    {
                        last_ack = read_ack(&mut ws, &mut r);
                    }
                }
                (FT, "put_file") => {
                    r.put_request = Some(m.body.clone());
                    for k in ["uid", "gid", "mode"] {
                        check_width(&m.body, k, 0xce, &mut r);
                    }
                    upload_received = 0;
                    upload_chunks = 0;
                    r.uploaded.clear();
                    match &script.put_error {
                        Some(e) => send(
                            &mut ws,
                            FT,
                            "error",
                            &sid,
                            None,
                            Some(map_body(vec![("err", Value::from(e.as_str()))])),
                        ),
                        None => send(&mut ws, FT, "ack", &sid, Some(0), None),
                    }
                }
                (FT, "file_chunk") => {
                    let off = m.prop_i64("offset").expect("chunk offset");
                    assert_eq!(off, upload_received, "upload offsets are contiguous");
                    r.max_chunk = r.max_chunk.max(m.body.len());
                    if m.body.is_empty() {
                        send(&mut ws, FT, "ack", &sid, Some(off), None);
                        continue;
                    }
                    upload_received += m.body.len() as i64;
                    upload_chunks += 1;
                    r.uploaded.extend_from_slice(&m.body);
                    if let Some((n, e)) = &script.put_error_after {
                        if upload_chunks == *n {
                            send(
                                &mut ws,
                                FT,
                                "error",
                                &sid,
                                None,
                                Some(map_body(vec![("err", Value::from(e.as_str()))])),
                            );
                            continue;
                        }
                    }
                    if upload_chunks % 10 == 0 {
                        send(&mut ws, FT, "ack", &sid, Some(off), None);
                    }
                }
                _ => {}
            }
        }
        r
    });
    let _ = ready_rx.recv();
    let (_tx, rx) = mpsc::channel();
    (h, rx)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn multipart(
    fields_before: &[(&str, &str)],
    file: Option<(&str, &[u8])>,
    fields_after: &[(&str, &str)],
) -> (String, Vec<u8>) {
    let boundary = "xYzBoundary123";
    let mut body = Vec::new();
    let field = |body: &mut Vec<u8>, k: &str, v: &str| {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    };
    for (k, v) in fields_before {
        field(&mut body, k, v);
    }
    if let Some((name, data)) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    for (k, v) in fields_after {
        field(&mut body, k, v);
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

struct Setup {
    srv: Server,
    user: String,
    dev_id: String,
    dev_token: String,
}

fn setup() -> Setup {
    let srv = Server::start(&[]);
    let user = srv.login();
    let (dev_id, dev_token) = srv.device("ft");
    Setup { srv, user, dev_id, dev_token }
}

impl Setup {
    fn download(&self, path: &str) -> HttpResp {
        self.srv.http(
            "GET",
            &format!("/api/management/v1/deviceconnect/devices/{}/download?path={path}", self.dev_id),
            &[("Authorization", &format!("Bearer {}", self.user))],
            b"",
        )
    }
    fn upload(&self, ct: &str, body: &[u8]) -> HttpResp {
        self.srv.http(
            "PUT",
            &format!("/api/management/v1/deviceconnect/devices/{}/upload", self.dev_id),
            &[("Authorization", &format!("Bearer {}", self.user)), ("Content-Type", ct)],
            body,
        )
    }
    fn device(&self, script: Script) -> std::thread::JoinHandle<Report> {
        let h = fake_device(&self.srv, &self.dev_token, script).0;
        self.srv.wait_status(&self.dev_id, &self.user, "connected");
        h
    }
    fn finish(self, h: std::thread::JoinHandle<Report>) -> Report {
        let _ = self.srv.http("POST", &format!("/__mock/devices/{}/disconnect", self.dev_id), &[], b"");
        h.join().expect("fake device thread")
    }
}

fn with_files(files: &[(&str, Vec<u8>, u32)]) -> Script {
    Script {
        files: files
            .iter()
            .map(|(p, d, m)| ((*p).to_owned(), DevFile { data: d.clone(), mode: *m }))
            .collect(),
        protocols: Some(vec![1, 2, 3]),
        ..Script::default()
    }
}

#[test]
fn download_streams_chunks_with_acks_every_ten() {
    let s = setup();
    let data = pattern(45 * CHUNK + 123);
    let h = s.device(with_files(&[("/etc/big.bin", data.clone(), 0o640), ("/tmp/empty", Vec::new(), 0o600)]));
    let r = s.download("/etc/big.bin");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("Content-Disposition"), Some("attachment; filename=\"big.bin\""));
    assert_eq!(r.header("X-MEN-File-Path"), Some("/etc/big.bin"));
    assert_eq!(r.header("X-MEN-File-Mode"), Some("640"));
    assert_eq!(r.header("X-MEN-File-UID"), Some("1000"));
    assert_eq!(r.header("X-MEN-File-GID"), Some("100"));
    assert_eq!(r.header("X-MEN-File-Size"), Some(data.len().to_string().as_str()));
    assert!(r.body == data, "downloaded content differs ({} vs {} bytes)", r.body.len(), data.len());

    let r = s.download("/tmp/empty");
    assert_eq!((r.status, r.body.len()), (200, 0));
    let head = s.srv.http(
        "HEAD",
        &format!("/api/management/v1/deviceconnect/devices/{}/download?path=/etc/big.bin", s.dev_id),
        &[("Authorization", &format!("Bearer {}", s.user))],
        b"",
    );
    assert_eq!(head.status, 200);
    assert_eq!(head.header("X-MEN-File-Mode"), Some("640"));
    let report = s.finish(h);
    // 46 data chunks: acks after chunk 10, 20, 30, 40 and the final ack of the EOF chunk (big
    // file), then the final ack for the empty file.
    let total = data.len() as i64;
    let want: Vec<i64> =
        vec![10, 20, 30, 40].into_iter().map(|n| n * CHUNK as i64).chain([total, 0]).collect();
    assert_eq!(report.download_acks, want);
    assert!(report.width_errors.is_empty(), "{:?}", report.width_errors);
    assert!(report.max_frame <= 8192, "frame of {} bytes to the device", report.max_frame);
    // Every transfer opened a session and closed it.
    assert_eq!(report.closes, 3);
}

#[test]
fn download_error_mapping() {
    let s = setup();
    let fifo_mode = (1u32 << 25) | 0o644;
    let h = s.device(with_files(&[("/tmp/fifo", Vec::new(), fifo_mode)]));
    let r = s.download("/does/not/exist");
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        "failed to retrieve file info: error received from device: failed to get file info from path '/does/not/exist': stat /does/not/exist: no such file or directory"
    );
    let r = s.download("/tmp/fifo");
    assert_eq!((r.status, r.error().as_str()), (400, "path is not a regular file"));
    let r = s.download("relative/path");
    assert_eq!((r.status, r.error().as_str()), (400, "bad request: path: must be absolute."));
    let r = s.download("");
    assert_eq!((r.status, r.error().as_str()), (400, "bad request: path: cannot be blank."));
    let report = s.finish(h);
    assert!(report.max_frame <= 8192);

    // A device without file transfer → 502, text masked by R's download handler.
    let s = setup();
    let h = s.device(Script { protocols: Some(vec![1, 3]), ..Script::default() });
    let r = s.download("/etc/passwd");
    assert_eq!((r.status, r.error().as_str()), (502, "internal error"));
    let report = s.finish(h);
    assert_eq!(report.closes, 1, "control close after a refused handshake");

    // A device that does not speak the handshake.
    let s = setup();
    let h = s.device(Script::default());
    let r = s.download("/etc/passwd");
    assert_eq!(r.status, 502);
    s.finish(h);

    // An error from get_file before any data: 500, masked.
    let s = setup();
    let mut script = with_files(&[("/f", vec![1, 2, 3], 0o644)]);
    script.get_error = Some("access denied".into());
    let h = s.device(script);
    let r = s.download("/f");
    assert_eq!((r.status, r.error().as_str()), (500, "internal error"));
    s.finish(h);

    // Unknown and disconnected devices.
    let s = setup();
    let r = s.download("/f");
    assert_eq!((r.status, r.error().as_str()), (409, "device not connected"));
    let r = s.srv.http(
        "GET",
        "/api/management/v1/deviceconnect/devices/nope/download?path=/f",
        &[("Authorization", &format!("Bearer {}", s.user))],
        b"",
    );
    assert_eq!((r.status, r.error().as_str()), (404, "device not found"));
}

#[test]
fn upload_streams_chunks_and_waits_for_acks() {
    let s = setup();
    let h = s.device(with_files(&[]));
    let data = pattern(37 * CHUNK + 5);
    // mender-cli order: path, file, then mode (ignored: it comes after the file part).
    let (ct, body) = multipart(
        &[("path", "/tmp/up.bin"), ("uid", "101"), ("gid", "102")],
        Some(("local/src.bin", &data)),
        &[("mode", "600")],
    );
    let r = s.upload(&ct, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.body.is_empty());
    // Mode before the file part reaches the device.
    let (ct, body) = multipart(&[("path", "/tmp/small"), ("mode", "4711")], Some(("s", b"hello")), &[]);
    let r = s.upload(&ct, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let report = s.finish(h);
    assert_eq!(report.uploaded, b"hello");
    let put = decode(report.put_request.as_deref().expect("put_file"));
    assert_eq!(get(&put, "path").and_then(Value::as_str), Some("/tmp/small"));
    assert_eq!(get(&put, "mode").and_then(Value::as_u64), Some(0o4711));
    assert!(report.width_errors.is_empty(), "{:?}", report.width_errors);
    assert!(report.max_chunk <= CHUNK);
    assert!(report.max_frame <= 8192, "frame of {} bytes", report.max_frame);

    // The first upload, checked on its own device run.
    let s = setup();
    let h = s.device(with_files(&[]));
    let (ct, body) = multipart(
        &[("path", "/tmp/up.bin"), ("uid", "101"), ("gid", "102")],
        Some(("local/src.bin", &data)),
        &[("mode", "600")],
    );
    assert_eq!(s.upload(&ct, &body).status, 201);
    let report = s.finish(h);
    assert!(report.uploaded == data, "uploaded content differs");
    let put = decode(report.put_request.as_deref().expect("put_file"));
    assert_eq!(get(&put, "src_path").and_then(Value::as_str), Some("local/src.bin"));
    assert_eq!(get(&put, "uid").and_then(Value::as_u64), Some(101));
    assert_eq!(get(&put, "gid").and_then(Value::as_u64), Some(102));
    assert!(get(&put, "mode").is_none(), "fields after the file part are ignored");
    assert!(report.width_errors.is_empty(), "{:?}", report.width_errors);
    assert_eq!(report.max_chunk, CHUNK);
}

#[test]
fn upload_body_split_at_arbitrary_places() {
    let s = setup();
    let h = s.device(with_files(&[]));
    let data = pattern(5 * CHUNK + 77);
    let (ct, body) =
        multipart(&[("path", "/tmp/split"), ("uid", "7")], Some(("f", &data)), &[("mode", "600")]);
    let r = http_pieces(
        &s.srv.addr,
        "PUT",
        &format!("/api/management/v1/deviceconnect/devices/{}/upload", s.dev_id),
        &[("Authorization", &format!("Bearer {}", s.user)), ("Content-Type", &ct)],
        &body,
        97,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let report = s.finish(h);
    assert!(report.uploaded == data, "content differs");
    let put = decode(report.put_request.as_deref().expect("put_file"));
    assert_eq!(get(&put, "uid").and_then(Value::as_u64), Some(7));
}

#[test]
fn upload_error_mapping() {
    let s = setup();
    let mut script = with_files(&[]);
    script.put_error = Some(
        "failed to create target file: failed to create file: open /nope/x: no such file or directory".into(),
    );
    let h = s.device(script);
    let (ct, body) = multipart(&[("path", "/nope/x")], Some(("x", &pattern(10_000))), &[]);
    let r = s.upload(&ct, &body);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        "failed to create target file: failed to create file: open /nope/x: no such file or directory"
    );
    // Validation happens before the device is asked.
    let (ct, body) = multipart(&[("path", "relative/x")], Some(("x", b"1")), &[]);
    let r = s.upload(&ct, &body);
    assert_eq!((r.status, r.error().as_str()), (400, "bad request: path: must be absolute."));
    let (ct, body) = multipart(&[("path", "/x")], None, &[]);
    let r = s.upload(&ct, &body);
    assert_eq!((r.status, r.error().as_str()), (400, "bad request: file: upload file is required."));
    let (ct, body) = multipart(&[("path", "/x"), ("uid", "abc")], Some(("x", b"1")), &[]);
    assert_eq!(s.upload(&ct, &body).status, 400);
    let r = s.upload("text/plain", b"hello");
    assert_eq!(r.status, 400);
    s.finish(h);

    // An error in the middle of the stream is passed through verbatim.
    let s = setup();
    let mut script = with_files(&[]);
    script.put_error_after =
        Some((3, "failed to write file chunk: transmitted bytes limit exhausted".into()));
    let h = s.device(script);
    // A truncated multipart body.
    let (ct, body) = multipart(&[("path", "/x")], Some(("x", &pattern(9000))), &[]);
    let r = s.upload(&ct, &body[..body.len() - 40]);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("did not find closing multipart boundary"), "{}", r.error());
    let (ct, body) = multipart(&[("path", "/tmp/big")], Some(("big", &pattern(300 * CHUNK))), &[]);
    let r = s.upload(&ct, &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "failed to write file chunk: transmitted bytes limit exhausted");
    s.finish(h);
}
