//! Loopback TCP helpers: an echo server (the "service on the device" reached through port
//! forwarding) and free-port selection for programs that cannot be told to use port 0.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::Error;
use crate::error::IoContext;

/// A TCP echo server on 127.0.0.1 (one thread per connection), stopped on drop.
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start() -> Result<Self, Error> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context(|| "binding the echo server".to_owned())?;
        let addr = listener.local_addr().context(|| "reading the echo server's address".to_owned())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(EchoServer { addr, stop })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read, close). For programs that take a
/// fixed port; callers retry with a new one if the program then fails to bind.
pub fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context(|| "finding a free port".to_owned())?;
    Ok(listener.local_addr().context(|| "reading a free port".to_owned())?.port())
}

/// A UDP port that was free a moment ago (see [`free_port`]).
pub fn free_udp_port() -> Result<u16, Error> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .context(|| "finding a free UDP port".to_owned())?;
    Ok(socket.local_addr().context(|| "reading a free UDP port".to_owned())?.port())
}

/// Sends `payload` over `stream` while reading the same number of bytes back (on a second thread,
/// so that neither side's buffers can deadlock), and returns what came back.
pub fn round_trip(stream: TcpStream, payload: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
    stream.set_read_timeout(Some(timeout)).context(|| "setting a read timeout".to_owned())?;
    let mut reader = stream.try_clone().context(|| "duplicating the socket".to_owned())?;
    let expected = payload.len();
    let receiver = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut got = vec![0u8; expected];
        reader.read_exact(&mut got)?;
        Ok(got)
    });
    let mut writer = stream;
    writer.write_all(payload).context(|| "sending through the forwarded port".to_owned())?;
    match receiver.join() {
        Ok(result) => result.context(|| format!("reading {expected} echoed bytes back")),
        Err(_) => Err(Error::protocol("echo", "the reader thread panicked")),
    }
}

/// A UDP echo server on 127.0.0.1: every datagram goes back to its sender. Stopped on drop.
pub struct UdpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl UdpEchoServer {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start() -> Result<Self, Error> {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .context(|| "binding the UDP echo server".to_owned())?;
        let addr = socket.local_addr().context(|| "reading the UDP echo server's address".to_owned())?;
        // Wake up now and then to notice the stop flag.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .context(|| "setting the UDP echo server's timeout".to_owned())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !stopping.load(Ordering::SeqCst) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Ok(UdpEchoServer { addr, stop })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
