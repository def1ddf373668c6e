//! WebSocket upgrade on top of hyper, with gorilla/websocket's refusal texts, and the adapter
//! from hyper's upgraded IO to futures-io for async-tungstenite.

use crate::http_util::{Resp, error, full};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::rt::{Read as _, ReadBuf, Write as _};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper::{Method, Request, Response, StatusCode};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The server's read limit on every websocket.
pub const MESSAGE_SIZE_LIMIT: usize = 8 << 20;
pub const SUBPROTOCOL: &str = "protomsg/msgpack";

pub type Ws = WebSocketStream<HyperIo>;

/// futures-io view of a hyper upgraded connection.
pub struct HyperIo(Upgraded);

impl futures_lite::AsyncRead for HyperIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, rb.unfilled()) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_lite::AsyncWrite for HyperIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the handshake like gorilla's `Upgrader.Upgrade`, in the same order and with the same texts.
pub fn check(req: &Request<Incoming>) -> Result<(), Resp> {
    const NOT_WS: &str = "websocket: the client is not using the websocket protocol: ";
    let h = req.headers();
    if !has_token(h, header::CONNECTION, "upgrade") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{NOT_WS}'upgrade' token not found in 'Connection' header"),
        ));
    }
    if !has_token(h, header::UPGRADE, "websocket") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{NOT_WS}'websocket' token not found in 'Upgrade' header"),
        ));
    }
    if req.method() != Method::GET {
        return Err(error(StatusCode::METHOD_NOT_ALLOWED, &format!("{NOT_WS}request method is not GET")));
    }
    if !has_token(h, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header",
        ));
    }
    if h.get(header::SEC_WEBSOCKET_KEY).is_none_or(|k| k.as_bytes().is_empty()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header is missing or blank",
        ));
    }
    Ok(())
}

/// Answers 101 and hands back the pending upgrade. Call after `check`.
pub fn accept(req: &mut Request<Incoming>) -> (Resp, OnUpgrade) {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
        .unwrap_or_default();
    let wants_proto = has_token(req.headers(), header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    let on = hyper::upgrade::on(req);
    let mut resp = Response::new(full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hm = resp.headers_mut();
    hm.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hm.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        hm.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if wants_proto {
        hm.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    }
    (resp, on)
}

pub async fn finish(on: OnUpgrade) -> Option<Ws> {
    let upgraded = on.await.ok()?;
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MESSAGE_SIZE_LIMIT))
        .max_frame_size(Some(MESSAGE_SIZE_LIMIT));
    Some(WebSocketStream::from_raw_socket(HyperIo(upgraded), Role::Server, Some(cfg)).await)
}
