//! One HTTP/1.1 request per connection (`Connection: close`) over the same transport as the
//! websocket (proxy, TLS): all the auth request needs, without an HTTP client crate.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

use crate::config::endpoint::Endpoint;
use crate::link::connection::{ConnectError, open_transport};

/// Largest response read (a device token is about 1 KiB).
const MAX_RESPONSE: usize = 256 * 1024;
/// Bound of one request from connect to the last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the request got no complete answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
}

/// Status and body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `POST path` with `headers` and `body` to `endpoint`.
pub(crate) async fn post(
    endpoint: &Endpoint,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    async {
        let mut stream = open_transport(endpoint, tls).await?;
        let default_port = if endpoint.tls { 443 } else { 80 };
        let host = if endpoint.port == default_port { endpoint.url_host() } else { endpoint.authority() };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mender-connect/{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.map_err(ConnectError::Io)?;
        stream.flush().await.map_err(ConnectError::Io)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(r) = parse(&buf, false)? {
                return Ok(r);
            }
            if buf.len() > MAX_RESPONSE {
                return Err(HttpError::Malformed("response too large"));
            }
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // Servers that close without TLS close_notify: what arrived is judged below.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(ConnectError::Io(e).into()),
            }
        }
        parse(&buf, true)?.ok_or(HttpError::Malformed("connection closed before the end of the response"))
    }
    .or(async {
        smol::Timer::after(REQUEST_TIMEOUT).await;
        Err(ConnectError::Timeout.into())
    })
    .await
}

/// A complete response from `buf`, `None` if more bytes are needed (`eof`: no more will come).
pub fn parse(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if eof { Err(HttpError::Malformed("no complete header")) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HttpError::Malformed("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(HttpError::Malformed("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<usize>().map_err(|_| HttpError::Malformed("bad Content-Length"))?;
            if n > MAX_RESPONSE {
                return Err(HttpError::Malformed("Content-Length too large"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    let rest = &buf[end + 4..];
    if chunked {
        return dechunk(rest, eof).map(|b| b.map(|body| Response { status, body }));
    }
    match length {
        Some(n) if rest.len() >= n => Ok(Some(Response { status, body: rest[..n].to_vec() })),
        Some(_) if eof => Err(HttpError::Malformed("body shorter than Content-Length")),
        Some(_) => Ok(None),
        None if eof || status == 204 || status == 304 => Ok(Some(Response { status, body: rest.to_vec() })),
        None => Ok(None),
    }
}

fn dechunk(mut rest: &[u8], eof: bool) -> Result<Option<Vec<u8>>, HttpError> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| HttpError::Malformed("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        // The size is the server's word: anything past the response cap is refused before any
        // arithmetic on it (`ffffffffffffffff` + 2 used to wrap).
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed("bad chunk size"))?;
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err(HttpError::Malformed("chunked body too large"));
        }
        let data = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        let Some(chunk) = data.get(..size) else { break };
        let Some(after) = data.get(size..) else { break };
        match after.get(..2) {
            Some(b"\r\n") => {}
            Some(_) => return Err(HttpError::Malformed("chunk not followed by CRLF")),
            None => break,
        }
        body.extend_from_slice(chunk);
        rest = &after[2..];
    }
    if eof { Err(HttpError::Malformed("truncated chunked body")) } else { Ok(None) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_and_chunked_bodies() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Type: application/jwt\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parse(&full[..full.len() - 1], false).unwrap(), None);
        assert_eq!(parse(full, false).unwrap(), Some(Response { status: 200, body: b"abc".to_vec() }));
        assert!(parse(&full[..full.len() - 1], true).is_err());
        let chunked = b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse(chunked, false).unwrap(), Some(Response { status: 401, body: b"abc".to_vec() }));
        assert_eq!(parse(&chunked[..60], false).unwrap(), None);
        let eof = b"HTTP/1.0 200 OK\r\n\r\ntoken";
        assert_eq!(parse(eof, false).unwrap(), None);
        assert_eq!(parse(eof, true).unwrap().unwrap().body, b"token");
        assert!(parse(b"SSH-2.0\r\n\r\n", true).is_err());
    }

    /// Issue 16, finding 5: the chunk size `ffffffffffffffff` made `size + 2` wrap (a panic in
    /// debug builds, an out-of-range slice and abort in release): an error now, never a panic.
    #[test]
    fn huge_chunk_sizes_are_errors() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for tail in [
            &b"ffffffffffffffff\r\nab"[..],
            b"ffffffffffffffff\r\nab\r\n0\r\n\r\n",
            b"fffffffffffffffe\r\n",
            b"40001\r\n",
            b"3ffff\r\n",
        ] {
            let buf = [&head[..], tail].concat();
            for eof in [false, true] {
                let r = std::panic::catch_unwind(|| parse(&buf, eof));
                assert!(r.is_ok(), "panic on {:?}", String::from_utf8_lossy(tail));
            }
        }
        let huge = [&head[..], b"ffffffffffffffff\r\nab"].concat();
        assert!(matches!(parse(&huge, false), Err(HttpError::Malformed(_))));
        // Chunks that add up past the cap are refused as well.
        let mut many = head.clone();
        for _ in 0..5 {
            many.extend_from_slice(b"10000\r\n");
            many.extend(std::iter::repeat_n(b'a', 0x10000));
            many.extend_from_slice(b"\r\n");
        }
        assert!(matches!(parse(&many, false), Err(HttpError::Malformed(_))));
        // A chunk whose data is not followed by CRLF is malformed, not silently cut.
        assert!(parse(&[&head[..], b"2\r\nabcd\r\n0\r\n\r\n"].concat(), false).is_err());
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert!(parse(big, false).is_err());
    }
}
