//! Fuzzes the websocket upgrade response check (`connection::handshake`): arbitrary bytes as what
//! the server sent so far. Any panic is a bug. `@A` in the input stands for the correct
//! `Sec-WebSocket-Accept` value, so that the accepting path is reachable without a SHA-1 preimage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mender_connect::link::connection::ConnectError;
use mender_connect::link::connection::handshake::{accept_for, check_buffered};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    let accept = accept_for(KEY);
    let mut buf = Vec::with_capacity(data.len() + 32);
    let mut rest = data;
    while let Some(i) = rest.windows(2).position(|w| w == b"@A") {
        buf.extend_from_slice(&rest[..i]);
        buf.extend_from_slice(accept.as_bytes());
        rest = &rest[i + 2..];
    }
    buf.extend_from_slice(rest);
    match check_buffered(&buf, KEY) {
        Ok(Some(start)) => {
            // Accepted: the header ends right before `start`, and says 101.
            assert!(start <= buf.len() && buf[..start].ends_with(b"\r\n\r\n"));
            assert!(buf.starts_with(b"HTTP/1.") && buf.get(9..12) == Some(&b"101"[..]));
        }
        // Incomplete: no header end yet.
        Ok(None) => assert!(!buf.windows(4).any(|w| w == b"\r\n\r\n")),
        Err(ConnectError::Unauthorized | ConnectError::Http(_) | ConnectError::Handshake(_)) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
