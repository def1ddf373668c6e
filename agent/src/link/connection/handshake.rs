//! Client side of the websocket opening handshake (RFC 6455 §4.1), in place of tungstenite's
//! `handshake` feature: that feature links the `http` crate (a header-name table and map),
//! `httparse` and `sha1`, ~35 KB of the static binary for one request and one response.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ConnectError, b64};

/// RFC 6455 §1.3: appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest response header accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Sends the upgrade request for `path` on `host` (`host[:port]`, as the Host header) with
/// `Authorization: Bearer <token>` and checks the answer. Returns the bytes read past the
/// response header: the first websocket frames, if the server sent them at once.
pub(crate) async fn client<S>(
    stream: &mut S,
    host: &str,
    path: &str,
    token: &str,
) -> Result<Vec<u8>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // As the http crate's HeaderValue: visible ASCII, space and tab (no CR/LF injection).
    if token.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ConnectError::InvalidToken);
    }
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| ConnectError::Io(std::io::Error::other(e.to_string())))?;
    let key = b64::encode(&nonce);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(start) = check_buffered(&buf, &key)? {
            return Ok(buf.split_off(start));
        }
        match stream.read(&mut chunk).await? {
            0 => return Err(ConnectError::Handshake("connection closed during the handshake")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Judges what has arrived of the response to a request with `key`: `Ok(None)` while the header
/// is incomplete, else the offset of the first byte after it (public for the fuzz target in
/// agent/fuzz).
#[doc(hidden)]
pub fn check_buffered(buf: &[u8], key: &str) -> Result<Option<usize>, ConnectError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(ConnectError::Handshake("oversized response header"))
        } else {
            Ok(None)
        };
    };
    check_response(&buf[..end], key)?;
    Ok(Some(end + 4))
}

/// The value `Sec-WebSocket-Accept` must have for `key` (public for the fuzz target).
#[doc(hidden)]
pub fn accept_for(key: &str) -> String {
    let mut input = Vec::with_capacity(key.len() + ACCEPT_GUID.len());
    input.extend_from_slice(key.as_bytes());
    input.extend_from_slice(ACCEPT_GUID);
    b64::encode(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input).as_ref())
}

/// Checks a response header (without the final empty line) as tungstenite did: status 101,
/// `Upgrade: websocket`, `Connection: Upgrade`, the accept hash, and no subprotocol (none was
/// asked for).
fn check_response(head: &[u8], key: &str) -> Result<(), ConnectError> {
    let head =
        std::str::from_utf8(head).map_err(|_| ConnectError::Handshake("response header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|s| s.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ConnectError::Handshake("malformed status line"))?;
    match status {
        101 => {}
        401 => return Err(ConnectError::Unauthorized),
        other => return Err(ConnectError::Http(other)),
    }
    let (mut upgrade, mut connection, mut accept) = (false, false, false);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(ConnectError::Handshake("malformed header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection = value.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = value == accept_for(key);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            return Err(ConnectError::Handshake("server chose a subprotocol that was not offered"));
        }
    }
    match (upgrade, connection, accept) {
        (false, _, _) => Err(ConnectError::Handshake("no \"Upgrade: websocket\" header")),
        (_, false, _) => Err(ConnectError::Handshake("no \"Connection: Upgrade\" header")),
        (_, _, false) => Err(ConnectError::Handshake("missing or wrong Sec-WebSocket-Accept")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn response_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert!(check_response(ok.as_bytes(), key).is_ok());
        assert!(matches!(
            check_response(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0", key),
            Err(ConnectError::Unauthorized)
        ));
        assert!(matches!(check_response(b"HTTP/1.1 502 Bad Gateway", key), Err(ConnectError::Http(502))));
        let wrong = ok.replace("s3pP", "xxxx");
        assert!(matches!(check_response(wrong.as_bytes(), key), Err(ConnectError::Handshake(_))));
        let no_upgrade = ok.replace("upgrade: WebSocket\r\n", "");
        assert!(matches!(check_response(no_upgrade.as_bytes(), key), Err(ConnectError::Handshake(_))));
        let proto = format!("{ok}\r\nSec-WebSocket-Protocol: chat");
        assert!(matches!(check_response(proto.as_bytes(), key), Err(ConnectError::Handshake(_))));
        assert!(matches!(check_response(b"SSH-2.0-OpenSSH", key), Err(ConnectError::Handshake(_))));
    }

    #[test]
    fn buffered_response_waits_for_the_whole_header_and_keeps_what_follows() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_for(key)
        );
        let full = [head.as_bytes(), &[0x81, 0x00]].concat();
        for cut in 0..head.len() {
            assert!(matches!(check_buffered(&full[..cut], key), Ok(None)), "cut at {cut}");
        }
        assert_eq!(check_buffered(&full, key).unwrap(), Some(head.len()));
        assert!(matches!(check_buffered(&vec![b'x'; MAX_HEAD + 1], key), Err(ConnectError::Handshake(_))));
    }
}
