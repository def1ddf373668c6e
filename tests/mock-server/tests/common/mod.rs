//! Shared helpers: spawn the real binary on port 0, a small HTTP/1.1 client, websocket clients,
//! ProtoMsg helpers (via rmpv, independent of the server's codec) and device keys made and used
//! with the openssl command line tool (an independent signer).
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rmpv::Value;
use serde_json::Value as Json;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::WebSocket;
use tungstenite::client::IntoClientRequest as _;

pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
pub const USER: &str = "admin@example.com";
pub const PASSWORD: &str = "mysecretpassword";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mock-server-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Server {
    child: Child,
    pub url: String,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mender-mock-server"));
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mender-mock-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read URL line");
        let url = line.trim().to_owned();
        assert!(url.starts_with("http"), "first stdout line is not a URL: {url:?}");
        let addr = url.split("://").nth(1).expect("URL has scheme").to_owned();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Server { child, url, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait for server")
    }

    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResp {
        http(&self.addr, method, path, headers, body)
    }

    pub fn login(&self) -> String {
        let basic = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
        let r = self.http("POST", "/api/management/v1/useradm/auth/login", &[("Authorization", &basic)], b"");
        assert_eq!(r.status, 200, "login: {}", r.text());
        r.text()
    }

    /// An accepted keyless device and its token, via the test-control API.
    pub fn device(&self, mac: &str) -> (String, String) {
        let body = serde_json::json!({ "identity_data": { "mac": mac } }).to_string();
        let r =
            self.http("POST", "/__mock/devices", &[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        (
            v["device_id"].as_str().expect("device_id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    pub fn get_json(&self, path: &str, token: &str) -> (u16, Json) {
        let r = self.http("GET", path, &[("Authorization", &format!("Bearer {token}"))], b"");
        let v = serde_json::from_slice(&r.body).unwrap_or(Json::Null);
        (r.status, v)
    }

    pub fn ws(&self, path: &str, token: &str) -> WebSocket<TcpStream> {
        ws_connect(&self.addr, path, token).unwrap_or_else(|e| panic!("ws {path}: {e}\n{}", self.log()))
    }

    /// Polls the deviceconnect status until it equals `want` (bounded).
    pub fn wait_status(&self, device_id: &str, token: &str, want: &str) {
        for _ in 0..200 {
            let (code, v) =
                self.get_json(&format!("/api/management/v1/deviceconnect/devices/{device_id}"), token);
            if code == 200 && v["status"] == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("device {device_id} never became {want}\n{}", self.log());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct HttpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`; decodes chunked bodies.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResp {
    http_pieces(addr, method, path, headers, body, usize::MAX)
}

/// Like `http`, but writes the body in pieces of `piece` bytes (so the server sees it split
/// at arbitrary places).
pub fn http_pieces(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    piece: usize,
) -> HttpResp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).expect("write head");
    for p in body.chunks(piece.max(1)) {
        s.write_all(p).expect("write body");
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head: bool) -> HttpResp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status: u16 =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head {
        body = dechunk(&body);
    }
    HttpResp { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[(nl + 4 + size).min(b.len())..];
    }
    out
}

pub fn ws_connect(addr: &str, path: &str, token: &str) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().expect("header value"));
    let stream = TcpStream::connect(addr).map_err(tungstenite::Error::Io)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(tungstenite::Error::Io)?;
    let (ws, _) = tungstenite::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })?;
    Ok(ws)
}

/// Reads the next binary (or close) message; panics on timeout.
pub fn read_bin(ws: &mut WebSocket<TcpStream>) -> Vec<u8> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => return b.to_vec(),
            Ok(tungstenite::Message::Close(c)) => panic!("unexpected close: {c:?}"),
            Ok(_) => continue,
            Err(e) => panic!("ws read: {e}"),
        }
    }
}

pub fn send_bin(ws: &mut WebSocket<TcpStream>, data: Vec<u8>) {
    ws.send(tungstenite::Message::Binary(data.into())).expect("ws send");
}

/// Builds a ProtoMsg with rmpv (compact integer encoding, as a non-Go client might send).
pub fn msg(proto: u16, typ: &str, sid: &str, props: Vec<(&str, Value)>, body: Option<&[u8]>) -> Vec<u8> {
    let mut hdr = vec![
        (Value::from("proto"), Value::from(proto)),
        (Value::from("typ"), Value::from(typ)),
        (Value::from("sid"), Value::from(sid)),
    ];
    if !props.is_empty() {
        hdr.push((
            Value::from("props"),
            Value::Map(props.into_iter().map(|(k, v)| (Value::from(k), v)).collect()),
        ));
    }
    let mut top = vec![(Value::from("hdr"), Value::Map(hdr))];
    if let Some(b) = body {
        top.push((Value::from("body"), Value::Binary(b.to_vec())));
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &Value::Map(top)).expect("encode");
    out
}

pub fn decode(b: &[u8]) -> Value {
    rmpv::decode::read_value(&mut &b[..]).expect("valid msgpack")
}

pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_map()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
}

/// A decoded ProtoMsg for assertions.
#[derive(Debug)]
pub struct Proto {
    pub proto: u64,
    pub typ: String,
    pub sid: String,
    pub props: Value,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Proto {
    pub fn prop(&self, k: &str) -> Option<&Value> {
        get(&self.props, k)
    }
    pub fn prop_i64(&self, k: &str) -> Option<i64> {
        self.prop(k).and_then(Value::as_i64)
    }
    pub fn prop_str(&self, k: &str) -> Option<&str> {
        self.prop(k).and_then(Value::as_str)
    }
    pub fn body_value(&self) -> Value {
        decode(&self.body)
    }
}

pub fn parse(b: &[u8]) -> Proto {
    let v = decode(b);
    let hdr = get(&v, "hdr").cloned().unwrap_or(Value::Nil);
    let body = match get(&v, "body") {
        Some(Value::Binary(b)) => b.clone(),
        Some(Value::String(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    };
    Proto {
        proto: get(&hdr, "proto").and_then(Value::as_u64).unwrap_or(0),
        typ: get(&hdr, "typ").and_then(Value::as_str).unwrap_or("").to_owned(),
        sid: get(&hdr, "sid").and_then(Value::as_str).unwrap_or("").to_owned(),
        props: get(&hdr, "props").cloned().unwrap_or(Value::Nil),
        body,
        raw: b.to_vec(),
    }
}

/// The encoded bytes that follow the msgpack string `key` inside `raw` (first occurrence).
pub fn bytes_after_key<'a>(raw: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut enc = vec![0xa0 | key.len() as u8];
    enc.extend_from_slice(key.as_bytes());
    let pos = raw.windows(enc.len()).position(|w| w == enc.as_slice())?;
    Some(&raw[pos + enc.len()..])
}

/// The user id (`sub`) inside one of the server's JWTs.
pub fn jwt_claims(token: &str) -> Json {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    Rsa3072,
    P256,
    P384,
    Ed25519,
}

pub struct DeviceKey {
    pub kind: KeyKind,
    pub private: PathBuf,
    pub public_pem: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl DeviceKey {
    pub fn generate(kind: KeyKind, dir: &Path, name: &str) -> DeviceKey {
        let private = dir.join(format!("{name}.pem"));
        let p = private.to_str().expect("utf-8 path");
        match kind {
            KeyKind::Rsa3072 => {
                openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072", "-out", p])
            }
            KeyKind::P256 => {
                openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p])
            }
            KeyKind::P384 => {
                openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", p])
            }
            KeyKind::Ed25519 => openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]),
        };
        let public_pem = String::from_utf8(openssl(&["pkey", "-in", p, "-pubout"])).expect("PEM is text");
        DeviceKey { kind, private, public_pem }
    }

    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let file = self.private.with_extension(format!("msg{}", std::process::id()));
        std::fs::write(&file, data).expect("write message");
        let (k, f) = (self.private.to_str().expect("utf-8"), file.to_str().expect("utf-8"));
        let sig = match self.kind {
            KeyKind::Ed25519 => openssl(&["pkeyutl", "-sign", "-inkey", k, "-rawin", "-in", f]),
            _ => openssl(&["dgst", "-sha256", "-sign", k, f]),
        };
        let _ = std::fs::remove_file(&file);
        sig
    }
}

/// The auth request body as the Go client writes it (JSON encoder output plus a newline).
pub fn auth_body(identity: &Json, pubkey: &str) -> Vec<u8> {
    let mut body = serde_json::json!({
        "id_data": identity.to_string(),
        "tenant_token": "",
        "pubkey": pubkey,
    })
    .to_string();
    body.push('\n');
    body.into_bytes()
}

pub fn auth_request(srv: &Server, key: &DeviceKey, identity: &Json) -> HttpResp {
    let body = auth_body(identity, &key.public_pem);
    let sig = STANDARD.encode(key.sign(&body));
    srv.http(
        "POST",
        "/api/devices/v1/authentication/auth_requests",
        &[("Content-Type", "application/json"), ("Authorization", "Bearer "), ("X-MEN-Signature", &sig)],
        &body,
    )
}
