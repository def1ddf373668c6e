//! A management user's terminal session: one websocket to the mock server's
//! `/api/management/v1/deviceconnect/devices/{id}/connect`, as mender-cli opens it, with a
//! shell on the device behind it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use mender_connect_core::frame::{Prop, Proto};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::BenchError;
use crate::wire;

/// The protocol number of the remote terminal.
const SHELL: Proto = Proto(1);

/// One open terminal.
pub struct Terminal {
    ws: WebSocket<TcpStream>,
}

impl Terminal {
    /// Connects as the user holding `token` and asks the device for a shell of `cols`x`rows`.
    pub fn open(base: &str, token: &str, device_id: &str) -> Result<Self, BenchError> {
        let host = base.trim_start_matches("http://");
        let url = format!("ws://{host}/api/management/v1/deviceconnect/devices/{device_id}/connect");
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| BenchError::Ws(format!("request for {url}: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| BenchError::Ws(format!("token header: {e}")))?;
        request.headers_mut().insert("Authorization", auth);
        let stream =
            TcpStream::connect(host).map_err(|e| BenchError::io(&format!("connecting {host}"), e))?;
        stream.set_nodelay(true).map_err(|e| BenchError::io("TCP_NODELAY", e))?;
        let (ws, _) = tungstenite::client(request, stream)
            .map_err(|e| BenchError::Ws(format!("websocket handshake with {url}: {e}")))?;
        let mut term = Terminal { ws };
        term.send_frame(
            "new",
            &[Prop::go_int("terminal_width", 80), Prop::go_int("terminal_height", 24)],
            b"",
        )?;
        Ok(term)
    }

    fn send_frame(&mut self, typ: &str, props: &[Prop<'_>], body: &[u8]) -> Result<(), BenchError> {
        let frame = wire::encode(SHELL, typ, props, body);
        self.ws.send(Message::Binary(frame.into())).map_err(|e| BenchError::Ws(format!("sending {typ}: {e}")))
    }

    /// Sends keystrokes.
    pub fn type_keys(&mut self, keys: &[u8]) -> Result<(), BenchError> {
        self.send_frame("shell", &[], keys)
    }

    /// Bounds how long one [`Terminal::next_output`] may block.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), BenchError> {
        self.ws
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| BenchError::io("setting a read timeout", e))
    }

    /// The next terminal output (the body of a `shell` frame); `Ok(None)` after a read timeout.
    /// Other frames (`new` answer, `ping`) are consumed; a `pong` answers a ping. A `stop` or a
    /// closed socket is an error: the benchmarks never end a shell while reading.
    pub fn next_output(&mut self) -> Result<Option<Vec<u8>>, BenchError> {
        loop {
            let msg = match self.ws.read() {
                Ok(msg) => msg,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(BenchError::Ws(format!("reading: {e}"))),
            };
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(c) => {
                    return Err(BenchError::Ws(format!("server closed the session: {c:?}")));
                }
                _ => continue,
            };
            let frame =
                wire::decode(&data).map_err(|e| BenchError::Ws(format!("frame from the device: {e}")))?;
            if std::env::var_os("BENCH_TRACE").is_some() {
                eprintln!(
                    "[trace] proto {} typ {} body {:?}",
                    frame.proto,
                    frame.typ,
                    String::from_utf8_lossy(&frame.body[..frame.body.len().min(80)])
                );
            }
            if frame.proto != SHELL.0 {
                continue;
            }
            match frame.typ {
                "shell" => return Ok(Some(frame.body.to_vec())),
                "ping" => self.send_frame("pong", &[], b"")?,
                "new" if frame.body != b"Shell started" => {
                    return Err(BenchError::Ws(format!(
                        "the device refused the shell: {}",
                        String::from_utf8_lossy(frame.body)
                    )));
                }
                "stop" => {
                    return Err(BenchError::Ws(format!(
                        "the device stopped the shell: {}",
                        String::from_utf8_lossy(frame.body)
                    )));
                }
                _ => {}
            }
        }
    }

    /// Reads output until `needle` appears (across frame boundaries), returning the number of
    /// output bytes read, at most `limit` later.
    pub fn read_until(&mut self, needle: &[u8], limit: Duration) -> Result<u64, BenchError> {
        let deadline = Instant::now() + limit;
        let mut tail: Vec<u8> = Vec::with_capacity(needle.len() * 2 + 64 * 1024);
        let mut total = 0u64;
        self.set_read_timeout(Duration::from_millis(500))?;
        loop {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "terminal output {:?} ({total} bytes read)",
                    String::from_utf8_lossy(needle)
                )));
            }
            let Some(chunk) = self.next_output()? else {
                continue;
            };
            total += chunk.len() as u64;
            tail.extend_from_slice(&chunk);
            if tail.windows(needle.len()).any(|w| w == needle) {
                return Ok(total);
            }
            let keep = needle.len().saturating_sub(1);
            let cut = tail.len().saturating_sub(keep);
            tail.drain(..cut);
        }
    }

    /// Waits until the shell runs commands (it has printed the marker a first command computes),
    /// then lets the prompt that follows arrive and discards it.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), BenchError> {
        // The marker is computed by the shell so that the echo of the command line does not
        // match it.
        self.type_keys(b"PS1='$ '; echo READY-$((20+22))\r")?;
        self.read_until(b"READY-42", limit)?;
        self.set_read_timeout(Duration::from_millis(300))?;
        while self.next_output()?.is_some() {}
        Ok(())
    }

    /// Closes the websocket (the server then stops the shell on the device).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
