//! What an operator (mender-cli 1.9) sees of sessions that are open while something happens on
//! the device (its token is re-fetched, its auth service restarts): a terminal at a prompt, and a
//! TCP port forward with one connection open through it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use crate::cli::MenderCli;
use crate::error::IoContext;
use crate::net::{self, EchoServer};
use crate::process::ManagedChild;
use crate::pty::PtySession;
use crate::scenarios::STEP_TIMEOUT;
use crate::{Error, TestEnv, wait};

/// Sessions the operator holds open.
pub struct OpenSessions {
    term: PtySession,
    forward: ManagedChild,
    local_port: u16,
    conn: TcpStream,
    // Dropped last: the service behind the forward.
    _echo: EchoServer,
    probes: u32,
}

/// What the operator observed of the sessions opened by [`OpenSessions::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorView {
    /// `mender-cli terminal` ended by itself.
    pub terminal_ended: bool,
    /// A command typed into the open terminal printed its output.
    pub terminal_answers: bool,
    /// `mender-cli port-forward` ended by itself.
    pub forward_ended: bool,
    /// Data sent on the connection that was open through the forward came back.
    pub open_connection_echoes: bool,
    /// A new connection through the same `mender-cli port-forward` carried data both ways.
    pub new_connection_echoes: bool,
}

impl OpenSessions {
    /// Opens a terminal (waits for the prompt) and a port forward to an echo server on the
    /// device, with one connection through it that has carried data.
    pub fn open(env: &TestEnv, cli: &MenderCli, device_id: &str) -> Result<Self, Error> {
        let mut term = cli.terminal(env, device_id)?;
        wait::until(
            "a shell prompt on the operator's terminal",
            STEP_TIMEOUT,
            Duration::from_millis(100),
            || {
                term.child().ensure_running()?;
                let out = term.output();
                Ok((out.contains("# ") || out.contains("$ ")).then_some(()))
            },
        )?;
        let echo = EchoServer::start()?;
        let local_port = net::free_port()?;
        let mut forward = cli.port_forward_to(env, device_id, local_port, "127.0.0.1", echo.port())?;
        let mut conn = wait::until(
            "mender-cli port-forward to listen",
            STEP_TIMEOUT,
            Duration::from_millis(100),
            || {
                forward.ensure_running()?;
                Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, local_port)).ok())
            },
        )?;
        if !echoes(&mut conn, b"before", STEP_TIMEOUT)? {
            return Err(Error::Check("the forwarded connection did not echo before the event".into()));
        }
        Ok(OpenSessions { term, forward, local_port, conn, _echo: echo, probes: 0 })
    }

    /// Probes every session, giving each answer up to `wait`.
    pub fn observe(&mut self, wait: Duration) -> Result<OperatorView, Error> {
        self.probes += 1;
        let marker = format!("operator-probe-{}-{}", self.probes, 6 * 7);
        let from = self.term.output().len();
        // The marker is computed by the shell so that the echo of the typed line does not count.
        let _ = self.term.send(format!("echo operator-probe-{}-$((6*7))\r", self.probes).as_bytes());
        let terminal_answers = self.term.expect_from(from, &marker, wait).is_ok();
        let terminal_ended = self.term.child().try_status()?.is_some();
        let open_connection_echoes = echoes(&mut self.conn, b"after", wait).unwrap_or(false);
        let forward_ended = self.forward.try_status()?.is_some();
        let new_connection_echoes = !forward_ended
            && TcpStream::connect((Ipv4Addr::LOCALHOST, self.local_port))
                .ok()
                .map(|mut c| echoes(&mut c, b"new", wait).unwrap_or(false))
                .unwrap_or(false);
        Ok(OperatorView {
            terminal_ended,
            terminal_answers,
            forward_ended,
            open_connection_echoes,
            new_connection_echoes,
        })
    }
}

/// Sends `payload` and reads until it came back (true), the peer closed, or `wait` passed.
fn echoes(conn: &mut TcpStream, payload: &[u8], wait: Duration) -> Result<bool, Error> {
    if conn.write_all(payload).is_err() {
        return Ok(false);
    }
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.len() < payload.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        conn.set_read_timeout(Some(left)).context(|| "setting a read timeout".to_owned())?;
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Ok(got == payload)
}
