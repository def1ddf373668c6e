//! A fault-injecting TCP proxy on 127.0.0.1 between the agent and the test's websocket server:
//! it passes bytes both ways until told to drop every connection (FIN or RST), stall them (stop
//! forwarding for a while, sockets stay open) or refuse new ones for a while (a server outage).
#![allow(dead_code)] // each test binary uses a different subset

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::Task;
use smol::net::{TcpListener, TcpStream};

/// How a connection is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Teardown {
    /// Orderly shutdown of both sockets (the peers read EOF).
    Fin,
    /// SO_LINGER 0, then close: both peers get a connection reset.
    Rst,
}

struct Shared {
    upstream_port: u16,
    stalled: AtomicBool,
    refusing: AtomicBool,
    /// Kill switches of the live connections, with how they are to be dropped.
    kills: Mutex<Vec<async_channel::Sender<Teardown>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// The proxy; stops accepting when dropped.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    _accept: Task<()>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to 127.0.0.1:`upstream_port`.
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream_port,
            stalled: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            kills: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let accept = smol::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if s.refusing.load(Ordering::SeqCst) {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    reset(&client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", s.upstream_port)).await else {
                    reset(&client);
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::Relaxed);
                let (kill_tx, kill_rx) = async_channel::bounded(1);
                s.kills.lock().unwrap().push(kill_tx);
                smol::spawn(relay(client, upstream, Arc::clone(&s), kill_rx)).detach();
            }
        });
        Proxy { port, shared, _accept: accept }
    }

    /// The URL to hand to the agent.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every live connection; returns how many there were.
    pub fn drop_all(&self, how: Teardown) -> usize {
        let kills: Vec<_> = std::mem::take(&mut *self.shared.kills.lock().unwrap());
        kills.iter().filter(|k| k.try_send(how).is_ok()).count()
    }

    /// Stops (true) or resumes (false) forwarding on every connection, new ones included.
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// Refuses (resets) new connections while on.
    pub fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    /// Connections forwarded / refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.shared.accepted.load(Ordering::Relaxed), self.shared.refused.load(Ordering::Relaxed))
    }
}

/// Closes with SO_LINGER 0 so the peer sees a reset instead of EOF.
fn reset(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    shared: Arc<Shared>,
    kill: async_channel::Receiver<Teardown>,
) {
    let up = pump(client.clone(), upstream.clone(), Arc::clone(&shared));
    let down = pump(upstream.clone(), client.clone(), Arc::clone(&shared));
    let how = async {
        up.or(down).await;
        Teardown::Fin
    }
    .or(async { kill.recv().await.unwrap_or(Teardown::Fin) })
    .await;
    for s in [&client, &upstream] {
        match how {
            Teardown::Fin => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Teardown::Rst => reset(s),
        }
    }
}

/// Copies `from` → `to` until EOF or error, holding data back while the proxy is stalled.
async fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while shared.stalled.load(Ordering::SeqCst) {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while shared.stalled.load(Ordering::SeqCst) {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
