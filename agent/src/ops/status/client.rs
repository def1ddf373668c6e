//! The command-line side: `mender-connect status [--json]`, `mender-connect sessions [list]`
//! and `mender-connect sessions kill <id>`, with errors that say what to do.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{
    self, Direction, ErrorKind, FrameError, MAX_RESPONSE, PROTOCOL_VERSION, Request, Response, Session,
    Status,
};
use super::text::{Hundredths, human_duration, iso_time, link_name};
use crate::ops::logging::escape_controls as esc;

/// How long the CLI waits for the daemon.
const WAIT: Duration = Duration::from_secs(15);

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "cannot reach the mender-connect daemon at {0}: {1}; is the daemon running? (the path is ControlSocket in the configuration, or --socket PATH)"
    )]
    NotRunning(PathBuf, String),
    /// The socket or its directory is not accessible to this user.
    #[error("permission denied on {0}: the control socket is root-only; run this command as root")]
    PermissionDenied(PathBuf),
    /// The daemon speaks another protocol version.
    #[error(
        "the daemon speaks control protocol version {daemon} and this mender-connect version {client}: the daemon is {}; restart it (systemctl restart mender-connect) so both are the same release",
        if daemon < client { "older than this command" } else { "newer than this command" }
    )]
    Version {
        /// The daemon's.
        daemon: u16,
        /// Ours.
        client: u16,
    },
    /// The daemon refused the request.
    #[error("the daemon refused the request: {message}")]
    Refused {
        /// Why, for programs.
        kind: ErrorKind,
        /// Why, for people.
        message: String,
    },
    /// The conversation failed.
    #[error("control socket {0}: {1}")]
    Io(PathBuf, String),
}

/// Sends one request and returns the daemon's answer.
pub fn request(path: &Path, req: &Request) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.to_owned()),
        std::io::ErrorKind::NotFound => ClientError::NotRunning(path.to_owned(), "no such socket".into()),
        std::io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(path.to_owned(), "nothing is listening on it".into())
        }
        _ => ClientError::Io(path.to_owned(), e.to_string()),
    })?;
    let io = |e: &dyn std::fmt::Display| ClientError::Io(path.to_owned(), e.to_string());
    s.set_read_timeout(Some(WAIT)).map_err(|e| io(&e))?;
    s.set_write_timeout(Some(WAIT)).map_err(|e| io(&e))?;
    let frame = protocol::encode_frame(req).map_err(|e| io(&e))?;
    // A daemon refusing the peer answers before reading, so a failed write is not final.
    let written = s.write_all(&frame);
    let payload = match protocol::read_frame_blocking(&mut s, MAX_RESPONSE) {
        Ok(p) => p,
        Err(FrameError::Io(e)) => {
            let e = written.err().unwrap_or(e);
            return Err(
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut {
                    io(&"the daemon did not answer in time")
                } else {
                    io(&e)
                },
            );
        }
        Err(e) => return Err(io(&e)),
    };
    let (version, _) = protocol::split_version(&payload).map_err(|e| io(&e))?;
    if version != PROTOCOL_VERSION {
        return Err(ClientError::Version { daemon: version, client: PROTOCOL_VERSION });
    }
    match protocol::decode_payload::<Response>(&payload).map_err(|e| io(&e))? {
        Response::Error { kind, message } => Err(ClientError::Refused { kind, message }),
        r => Ok(r),
    }
}

/// Asks for a status snapshot.
pub fn status(path: &Path) -> Result<Status, ClientError> {
    match request(path, &Request::Status)? {
        Response::Status(s) => Ok(*s),
        other => Err(unexpected(path, &other)),
    }
}

/// An answer of the wrong kind. Named, not `{:?}`-printed: that would link the derived `Debug` of
/// every protocol type into the binary for a case only a broken daemon produces.
fn unexpected(path: &Path, answer: &Response) -> ClientError {
    let kind = match answer {
        Response::Status(_) => "a status",
        Response::Killed { .. } => "a kill confirmation",
        Response::Error { .. } => "an error",
    };
    ClientError::Io(path.to_owned(), format!("unexpected answer: {kind}"))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Tenths of the largest unit that keeps the value under 1024, rounded half up; integers
    // rather than an f64 (see `Hundredths`).
    let n = u128::from(n);
    let (mut unit, mut div) = (0, 1024u128);
    while n >= div * 1024 && unit + 1 < UNITS.len() {
        div *= 1024;
        unit += 1;
    }
    let tenths = (n * 10 + div / 2) / div;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// The sessions table.
pub fn render_sessions(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "sessions: none\n".to_owned();
    }
    let mut rows = vec![["ID", "KIND", "USER", "AGE", "IDLE", "IN", "OUT", "PID"].map(str::to_owned)];
    for s in sessions {
        rows.push([
            // Ids and user names are the server's choice: escaped, so none of them can drive the
            // terminal of the root user reading this.
            esc(&s.id).into_owned(),
            s.kind.name().to_owned(),
            if s.user.is_empty() { "-".to_owned() } else { esc(&s.user).into_owned() },
            human_duration(s.age_secs),
            human_duration(s.idle_secs),
            bytes(s.bytes_in),
            bytes(s.bytes_out),
            s.pid.map_or("-".to_owned(), |p| p.to_string()),
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("sessions: {}\n", sessions.len());
    for r in &rows {
        let mut line = String::from(" ");
        for (c, w) in r.iter().zip(widths) {
            line.push_str(&format!(" {c:<w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human-readable status.
pub fn render(s: &Status) -> String {
    let c = &s.connection;
    let mut out = format!(
        "mender-connect daemon {} (pid {}), up {}\n",
        esc(&s.daemon_version),
        s.pid,
        human_duration(s.uptime_secs)
    );
    out.push_str(&format!(
        "connection: {} since {} ({})\n",
        link_name(c.state),
        iso_time(c.since),
        human_duration(c.for_secs)
    ));
    out.push_str(&format!(
        "  server: {}\n",
        if c.server_url.is_empty() { "-".into() } else { esc(&c.server_url) }
    ));
    match &c.last_error {
        Some(e) => out.push_str(&format!("  last error: {} (at {})\n", esc(&e.message), iso_time(e.at))),
        None => out.push_str("  last error: none\n"),
    }
    out.push_str(&format!(
        "  reconnect attempts: {} (connections made: {})\n",
        c.reconnect_attempts, c.connects
    ));
    out.push_str(&render_sessions(&s.sessions));
    if s.omitted > 0 {
        out.push_str(&format!("  ({} more sessions, forwards or transfers not listed)\n", s.omitted));
    }
    if s.port_forwards.is_empty() {
        out.push_str("port forwards: none\n");
    } else {
        out.push_str(&format!("port forwards: {}\n", s.port_forwards.len()));
        for f in &s.port_forwards {
            out.push_str(&format!(
                "  {} conn {}: {} {}:{}\n",
                esc(&f.session_id),
                esc(&f.connection_id),
                esc(&f.protocol),
                esc(&f.remote_host),
                f.remote_port
            ));
        }
    }
    if s.transfers.is_empty() {
        out.push_str("transfers: none\n");
    } else {
        out.push_str(&format!("transfers: {}\n", s.transfers.len()));
        for t in &s.transfers {
            let dir = match t.direction {
                Direction::Download => "download",
                Direction::Upload => "upload",
            };
            out.push_str(&format!("  {}: {dir} {} ({})\n", esc(&t.session_id), esc(&t.path), bytes(t.bytes)));
        }
    }
    let l = &s.limits;
    out.push_str(&format!(
        "limits: {}; shells {}/{} (at most {} per user)\n",
        if l.enabled { "enabled" } else { "disabled" },
        l.shells,
        l.max_shells,
        l.max_shells_per_user
    ));
    match &l.file_transfer {
        Some(ft) => {
            let max = |m: Option<u64>| m.map_or("unlimited".to_owned(), |v| format!("limit {v}"));
            out.push_str(&format!(
                "  file transfer tx: {} total, 1m average {} ({})\n",
                bytes(ft.tx_bytes),
                Hundredths(ft.tx_avg_1m),
                max(ft.max_tx_per_minute)
            ));
            out.push_str(&format!(
                "  file transfer rx: {} total, 1m average {} ({})\n",
                bytes(ft.rx_bytes),
                Hundredths(ft.rx_avg_1m),
                max(ft.max_rx_per_minute)
            ));
        }
        None => out.push_str("  file transfer: disabled\n"),
    }
    out
}

fn report(e: &ClientError) -> i32 {
    eprintln!("mender-connect: {}", esc(&e.to_string()));
    1
}

impl ClientError {
    /// A stable name for programs reading `--json` output.
    fn kind_name(&self) -> String {
        match self {
            ClientError::NotRunning(..) => "not_running".into(),
            ClientError::PermissionDenied(_) => "permission_denied".into(),
            ClientError::Version { .. } => "version_mismatch".into(),
            ClientError::Refused { kind, .. } => serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "refused".into()),
            ClientError::Io(..) => "io".into(),
        }
    }
}

/// With `--json`, a failure is JSON on stdout too, so that a script always parses stdout; the
/// message also goes to stderr for the person running it. The exit code is 1 either way.
fn report_as(e: &ClientError, json: bool) -> i32 {
    if json {
        let v = serde_json::json!({ "error": { "kind": e.kind_name(), "message": e.to_string() } });
        match serde_json::to_string_pretty(&v) {
            Ok(text) => println!("{text}"),
            // A map of two strings always serializes; keep stdout valid JSON regardless.
            Err(_) => println!("{{\"error\":{{\"kind\":\"io\",\"message\":\"\"}}}}"),
        }
    }
    report(e)
}

fn print_json<T: serde::Serialize>(v: &T) -> i32 {
    match serde_json::to_string_pretty(v) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("mender-connect: cannot format JSON: {e}");
            1
        }
    }
}

/// `mender-connect status`.
pub fn status_command(path: &Path, json: bool) -> i32 {
    match status(path) {
        Ok(s) if json => print_json(&s),
        Ok(s) => {
            print!("{}", render(&s));
            0
        }
        Err(e) => report_as(&e, json),
    }
}

/// `mender-connect sessions [list]`.
pub fn list_command(path: &Path, json: bool) -> i32 {
    match status(path) {
        Ok(s) if json => print_json(&s.sessions),
        Ok(s) => {
            print!("{}", render_sessions(&s.sessions));
            0
        }
        Err(e) => report_as(&e, json),
    }
}

/// `mender-connect sessions kill <id>`.
pub fn kill_command(path: &Path, id: &str, json: bool) -> i32 {
    match request(path, &Request::KillSession { id: id.to_owned() }) {
        Ok(Response::Killed { id, kind }) => {
            if json {
                print_json(&serde_json::json!({ "killed": id, "kind": kind }))
            } else {
                println!("session {} ({}) ended", esc(&id), kind.name());
                0
            }
        }
        Ok(other) => report_as(&unexpected(path, &other), json),
        Err(ClientError::Refused { kind: ErrorKind::NoSuchSession, message }) if !json => {
            eprintln!("mender-connect: {}", esc(&message));
            1
        }
        Err(e) => report_as(&e, json),
    }
}

#[cfg(test)]
mod tests {
    use super::bytes;

    #[test]
    fn byte_counts_read_as_tenths_of_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1024 * 1024 - 1), "1024.0 KiB");
        assert_eq!(bytes(1024 * 1024), "1.0 MiB");
        assert_eq!(bytes(100 * 1024 * 1024 + 52_429), "100.1 MiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }
}
