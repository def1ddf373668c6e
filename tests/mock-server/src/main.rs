//! mender-mock-server: a single-process, in-memory stand-in for the Mender Server that the real
//! device side (mender client, mender-connect, our agent) and user side (mender-cli, curl,
//! tests) use as they would the real one. See `--help` and docs/server.md §7.

// Handlers return a finished HTTP response as their error value; boxing it would only add
// allocations on an error path that is answered at once.
#![allow(clippy::result_large_err)]

mod config;
mod control;
mod devauth;
mod deviceconnect;
mod filetransfer;
mod http_util;
mod idjson;
mod jwt;
mod keys;
mod logger;
mod msgpack;
mod multipart;
mod persist;
mod protomsg;
mod routes;
mod state;
mod timefmt;
mod tls;
mod useradm;
mod websocket;

use config::{Config, ConfigError};
use futures_lite::{AsyncRead, AsyncWrite, StreamExt as _, future};
use hyper::service::service_fn;
use smol_hyper::rt::{FuturesIo, SmolTimer};
use state::State;
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;

fn main() {
    let cfg = match Config::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(ConfigError::Help) => {
            print!("{}", config::USAGE);
            return;
        }
        Err(ConfigError::Usage(msg)) => {
            eprintln!("mender-mock-server: {msg}\n\n{}", config::USAGE);
            std::process::exit(2);
        }
    };
    logger::init(cfg.verbose);
    if let Err(e) = smol::block_on(run(cfg)) {
        eprintln!("mender-mock-server: {e}");
        std::process::exit(1);
    }
}

async fn run(cfg: Config) -> Result<(), String> {
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = async_net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let st = Arc::new(State::new(cfg)?);
    if let Some(identity) = st.cfg.device.clone() {
        let created = control::create_device(&st, &identity);
        if let Some(path) = &st.cfg.device_token_out {
            let token = created.get("token").and_then(|v| v.as_str()).unwrap_or_default();
            let id = created.get("device_id").and_then(|v| v.as_str()).unwrap_or_default();
            std::fs::write(path, token).map_err(|e| format!("{}: {e}", path.display()))?;
            let id_path = format!("{}.id", path.display());
            std::fs::write(&id_path, id).map_err(|e| format!("{id_path}: {e}"))?;
        }
        persist::save(&st);
    }
    // Before the URL goes out: a harness may signal as soon as it has read it.
    let mut signals = async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{scheme}://{addr}");
        let _ = out.flush();
    }
    let users: Vec<&str> = st.cfg.users.iter().map(|(e, _)| e.as_str()).collect();
    log::info!(
        "listening on {scheme}://{addr}; users: {}; auto-accept: {}",
        users.join(", "),
        st.cfg.auto_accept
    );
    let accept_loop = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("accept: {e}");
                    async_io::Timer::after(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let st = st.clone();
            match tls.clone() {
                Some(acceptor) => {
                    smol::spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(s) => serve(st, s).await,
                            Err(e) => log::info!("tls handshake with {peer} failed: {e}"),
                        }
                    })
                    .detach();
                }
                None => smol::spawn(serve(st, stream)).detach(),
            }
        }
    };
    let stop = async {
        let sig = signals.next().await;
        log::info!("received {sig:?}; stopping");
    };
    future::or(accept_loop, stop).await;
    Ok(())
}

async fn serve<S>(st: Arc<State>, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(routes::handle(st, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        // Go's net/http server keeps idle keep-alive connections open; the Go clients reuse
        // them and a POST on a connection closed behind their back fails instead of retrying.
        .header_read_timeout(None)
        .serve_connection(FuturesIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        log::debug!("http connection ended: {e}");
    }
}
