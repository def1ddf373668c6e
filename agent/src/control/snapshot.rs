//! Building a [`Status`] from the daemon's state (only when a client or SIGUSR1 asks), the
//! connection bookkeeping the event loop keeps for it, and the SIGUSR1 log dump.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use mender_connect_core::Proto;

use super::protocol::{
    Connection, Direction, LastError, Limits, LinkState, PortForward, RateCounters, Session, SessionKind, Status,
    Transfer,
};
use crate::features::Features;
use crate::router::{Activity, Router};
use crate::shell::{Expiry, MAX_SHELLS, Shells};

/// Entries per list at most (shells come first, so all 16 are always listed); with session
/// ids of at most a frame's size this keeps a status below [`super::protocol::MAX_RESPONSE`]
/// in practice, and the server refuses to send anything larger.
pub const MAX_LISTED: usize = 64;

/// Unix seconds of a wall-clock time.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix seconds of a monotonic instant, given the current instant.
pub fn unix_of(t: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now();
    unix(wall.checked_sub(now.saturating_duration_since(t)).unwrap_or(wall))
}

/// Connection history the event loop keeps: a few assignments per connection event.
#[derive(Clone, Debug)]
pub struct LinkStats {
    state: LinkState,
    since: Instant,
    last_error: Option<LastError>,
    attempts: u32,
    connects: u64,
}

impl LinkStats {
    /// No credentials yet.
    pub fn new(now: Instant) -> Self {
        Self { state: LinkState::NoCredentials, since: now, last_error: None, attempts: 0, connects: 0 }
    }

    /// The link is in `state` now. "Since" moves only when the link comes up, goes down or
    /// loses its credentials: dialling and waiting between attempts are one "down" period, so
    /// a reconnect loop shows when the link was lost, not the last attempt.
    pub fn observe(&mut self, state: LinkState, now: Instant) {
        let period = |s: LinkState| match s {
            LinkState::NoCredentials => 0,
            LinkState::Connecting | LinkState::WaitingToReconnect => 1,
            LinkState::Connected => 2,
        };
        if period(state) != period(self.state) {
            self.since = now;
        }
        self.state = state;
    }

    /// A dial succeeded.
    pub fn connected(&mut self) {
        self.connects = self.connects.saturating_add(1);
        self.attempts = 0;
    }

    /// A dial failed.
    pub fn dial_failed(&mut self, message: String) {
        self.attempts = self.attempts.saturating_add(1);
        self.error(message);
    }

    /// The link failed (dropped connection, refused token).
    pub fn error(&mut self, message: String) {
        self.last_error = Some(LastError { message, at: unix(SystemTime::now()) });
    }

    fn connection(&self, server_url: &str, now: Instant) -> Connection {
        Connection {
            state: self.state,
            since: unix_of(self.since, now),
            for_secs: now.saturating_duration_since(self.since).as_secs(),
            server_url: server_url.to_owned(),
            last_error: self.last_error.clone(),
            reconnect_attempts: self.attempts,
            connects: self.connects,
        }
    }
}

/// What a snapshot is made of.
pub struct Sources<'a> {
    /// When the daemon started.
    pub started: Instant,
    /// Connection history.
    pub link: &'a LinkStats,
    /// Current server URL.
    pub server_url: &'a str,
    /// Shell sessions.
    pub shells: &'a Shells,
    /// Control sessions.
    pub router: &'a Router,
    /// Optional protocols (for the file-transfer counters).
    pub features: &'a Features,
    /// `Sessions.MaxPerUser`.
    pub max_per_user: usize,
}

fn kind_of(proto: Option<Proto>) -> SessionKind {
    match proto {
        Some(Proto::SHELL) => SessionKind::Shell,
        Some(Proto::FILE_TRANSFER) => SessionKind::Filetransfer,
        Some(Proto::PORT_FORWARD) => SessionKind::Portforward,
        Some(Proto::MENDER_CLIENT) => SessionKind::Menderclient,
        _ => SessionKind::Control,
    }
}

/// Takes the snapshot.
pub fn build(src: &Sources<'_>, now: Instant) -> Status {
    let age = |t: Instant| now.saturating_duration_since(t).as_secs();
    let mut sessions: Vec<Session> = src
        .shells
        .info()
        .into_iter()
        .map(|s| Session {
            started_at: unix_of(s.started, now),
            age_secs: age(s.started),
            idle_secs: age(s.active),
            id: s.id,
            user: s.user,
            kind: SessionKind::Shell,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            pid: Some(s.pid),
        })
        .collect();
    let shells = u32::try_from(sessions.len()).unwrap_or(u32::MAX);
    let shell_ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    // A shell's sid may also carry control messages (pings); that is the same session.
    let controls = src.router.sessions_info().into_iter().filter(|s| s.proto.is_some() || !shell_ids.contains(&s.id));
    sessions.extend(controls.map(|s| Session {
        started_at: unix_of(s.started, now),
        age_secs: age(s.started),
        idle_secs: age(s.last_rx),
        id: s.id,
        user: s.user,
        kind: kind_of(s.proto),
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        pid: None,
    }));
    let mut port_forwards: Vec<PortForward> = Vec::new();
    let mut transfers: Vec<Transfer> = Vec::new();
    for a in src.router.activity() {
        match a {
            Activity::Transfer(t) => transfers.push(t),
            Activity::Forward(f) => port_forwards.push(f),
        }
    }
    port_forwards.sort_by(|a, b| (&a.session_id, &a.connection_id).cmp(&(&b.session_id, &b.connection_id)));
    transfers.sort_by(|a, b| a.session_id.cmp(&b.session_id));
    // The answer must fit in a response however many sessions the server opened.
    let listed = sessions.len() + port_forwards.len() + transfers.len();
    sessions.truncate(MAX_LISTED);
    port_forwards.truncate(MAX_LISTED);
    transfers.truncate(MAX_LISTED);
    let omitted = listed - sessions.len() - port_forwards.len() - transfers.len();
    let file_transfer = src.features.file_transfer.as_ref().map(|ft| {
        let (tx_bytes, rx_bytes, tx_avg_1m, rx_avg_1m) = ft.rates.snapshot();
        let limit = |v: Option<u64>| v.filter(|n| *n > 0);
        RateCounters {
            tx_bytes,
            rx_bytes,
            tx_avg_1m,
            rx_avg_1m,
            max_tx_per_minute: limit(ft.limits.counters.max_bytes_tx_per_minute),
            max_rx_per_minute: limit(ft.limits.counters.max_bytes_rx_per_minute),
        }
    });
    Status {
        daemon_version: crate::cli::VERSION.to_owned(),
        pid: std::process::id(),
        started_at: unix_of(src.started, now),
        uptime_secs: age(src.started),
        connection: src.link.connection(src.server_url, now),
        sessions,
        port_forwards,
        transfers,
        omitted: u32::try_from(omitted).unwrap_or(u32::MAX),
        limits: Limits {
            enabled: src.features.file_transfer.as_ref().is_some_and(|ft| ft.enforce),
            shells,
            max_shells: MAX_SHELLS as u32,
            max_shells_per_user: u32::try_from(src.max_per_user).unwrap_or(u32::MAX),
            file_transfer,
        },
    }
}

/// Go's `Mon Jan 2 15:04:05 -0700 MST 2006` (the reference's session time format), in UTC.
pub fn go_time(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss, wd) = civil(unix_secs);
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.get(m.wrapping_sub(1) as usize).copied().unwrap_or("???");
    format!("{} {month} {d} {hh:02}:{mm:02}:{ss:02} +0000 UTC {y}", DAYS[wd as usize % 7])
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn iso_time(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(unix_secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// (year, month 1-12, day, hour, minute, second, weekday 0=Sunday) of Unix seconds, UTC
/// (Howard Hinnant's days-to-civil algorithm; no time-zone database on small devices).
fn civil(t: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let weekday = ((days % 7) + 4) % 7; // 1970-01-01 was a Thursday
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60, weekday as u64)
}

/// The SIGUSR1 dump: the reference's lines (`app/daemon.go` `outputStatus`) first, then ours.
pub fn log_dump(status: &Status, expiry: Expiry, shell_command: &str) {
    log::info!("mender-connect daemon v{}", status.daemon_version);
    log::info!(" status: ");
    log::info!("  shells: {}/{}", status.limits.shells, status.limits.max_shells);
    log::info!("  sessions: {}", status.limits.shells);
    for s in status.sessions.iter().filter(|s| s.kind == SessionKind::Shell) {
        let active_at = (status_now(status)).saturating_sub(s.idle_secs);
        let expires = match expiry {
            Expiry::Never => "never".to_owned(),
            Expiry::Idle(d) => go_time(active_at.saturating_add(d.as_secs())),
            Expiry::After(d) => go_time(s.started_at.saturating_add(d.as_secs())),
        };
        // The reference's status 0 is an active session; shells here are active until removed.
        log::info!("   id:{} status:0 started:{}", s.id, go_time(s.started_at));
        log::info!("   expires:{expires} active:{}", go_time(active_at));
        log::info!("   shell:{shell_command}");
    }
    log::info!("  file-transfer:");
    let (tx, rx, tx1, rx1) = status
        .limits
        .file_transfer
        .as_ref()
        .map_or((0, 0, 0.0, 0.0), |c| (c.tx_bytes, c.rx_bytes, c.tx_avg_1m, c.rx_avg_1m));
    log::info!("   total: tx/rx {tx}/{rx}");
    log::info!("   1m: tx rx {} {} (w)", Hundredths(tx1), Hundredths(rx1));
    let c = &status.connection;
    log::info!(
        "  connection: {} since {} server:{} reconnect attempts:{} last error:{}",
        link_name(c.state),
        go_time(c.since),
        if c.server_url.is_empty() { "-" } else { &c.server_url },
        c.reconnect_attempts,
        c.last_error.as_ref().map_or("-", |e| e.message.as_str())
    );
    let others: Vec<&Session> = status.sessions.iter().filter(|s| s.kind != SessionKind::Shell).collect();
    log::info!("  control sessions: {}", others.len());
    for s in others {
        log::info!(
            "   id:{} kind:{} user:{} age:{}s idle:{}s in/out:{}/{}",
            s.id,
            s.kind.name(),
            s.user,
            s.age_secs,
            s.idle_secs,
            s.bytes_in,
            s.bytes_out
        );
    }
    for f in &status.port_forwards {
        log::info!("   port-forward {}/{}: {} {}:{}", f.session_id, f.connection_id, f.protocol, f.remote_host, f.remote_port);
    }
    for t in &status.transfers {
        let dir = match t.direction {
            Direction::Download => "download",
            Direction::Upload => "upload",
        };
        log::info!("   transfer {}: {dir} {:?} {} bytes", t.session_id, t.path, t.bytes);
    }
}

/// The snapshot's "now" in Unix seconds.
fn status_now(status: &Status) -> u64 {
    status.started_at.saturating_add(status.uptime_secs)
}

/// The state's name in the text output and logs.
pub const fn link_name(state: LinkState) -> &'static str {
    match state {
        LinkState::NoCredentials => "no credentials",
        LinkState::Connecting => "connecting",
        LinkState::Connected => "connected",
        LinkState::WaitingToReconnect => "waiting to reconnect",
    }
}

/// A non-negative rate with two decimals, like Go's `%.2f` (halves round up here, to even
/// there). Integer arithmetic: formatting an `f64` links core's float printer (~6 KB) for these
/// two numbers alone (docs/binary-size.md).
pub struct Hundredths(pub f64);

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `as` saturates (NaN and negatives to 0); the averages are byte rates, far below 2^64/100.
        let h = (self.0 * 100.0 + 0.5) as u64;
        write!(f, "{}.{:02}", h / 100, h % 100)
    }
}

/// Seconds as `1d02h`, `3h04m`, `5m06s` or `7s`.
pub fn human_duration(secs: u64) -> String {
    let d = Duration::from_secs(secs).as_secs();
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m{:02}s", d / 60, d % 60),
        3600..86_400 => format!("{}h{:02}m", d / 3600, d / 60 % 60),
        _ => format!("{}d{:02}h", d / 86_400, d / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        // 2026-11-23 00:52:37 UTC, a Monday.
        let t = 1_795_395_157;
        assert_eq!(iso_time(t), "2026-11-23 00:52:37 UTC");
        assert_eq!(go_time(t), "Mon Nov 23 00:52:37 +0000 UTC 2026");
        assert_eq!(iso_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(go_time(951_782_400), "Tue Feb 29 00:00:00 +0000 UTC 2000");
    }

    #[test]
    fn many_sessions_are_capped() {
        use mender_connect_core::control;
        let now = Instant::now();
        let (data, _data_rx) = async_channel::bounded(1);
        let (exited, _exited_rx) = async_channel::bounded(1);
        let settings = crate::shell::ShellSettings {
            command: "/bin/sh".into(),
            args: Vec::new(),
            user: String::new(),
            size: mender_connect_core::shell::TermSize { width: 80, height: 24 },
            max_per_user: 1,
            expiry: Expiry::Never,
            health_interval: crate::shell::HEALTH_INTERVAL,
        };
        let mut shells = Shells::new(settings, data, exited);
        let mut router = Router::new(true);
        for i in 0..100 {
            let sid = format!("sid-{i:03}");
            let mut buf = [0u8; 256];
            let n = control::bare(control::PING, &sid).encode(&mut buf).unwrap();
            let replies = router.route(&buf[..n], &mut shells, now);
            assert_eq!(replies.len(), 1, "pong for {sid}");
        }
        let link = LinkStats::new(now);
        let features = Features::disabled();
        let src = Sources {
            started: now,
            link: &link,
            server_url: "",
            shells: &shells,
            router: &router,
            features: &features,
            max_per_user: 1,
        };
        let st = build(&src, now);
        assert_eq!(st.sessions.len(), MAX_LISTED);
        assert_eq!(st.omitted as usize, 100 - MAX_LISTED);
        assert!(st.sessions.iter().all(|s| s.kind == SessionKind::Control && s.bytes_out > 0));
        assert!(st.limits.file_transfer.is_none());
        let frame = super::super::protocol::encode_frame(&super::super::protocol::Response::Status(Box::new(st)));
        assert!(frame.unwrap().len() < super::super::protocol::MAX_RESPONSE);
    }

    #[test]
    fn rates_read_as_hundredths() {
        assert_eq!(Hundredths(0.0).to_string(), "0.00");
        assert_eq!(Hundredths(1234.5678).to_string(), "1234.57");
        assert_eq!(Hundredths(0.004).to_string(), "0.00");
        assert_eq!(Hundredths(0.005).to_string(), "0.01");
        assert_eq!(Hundredths(99.999).to_string(), "100.00");
        assert_eq!(Hundredths(f64::NAN).to_string(), "0.00");
        assert_eq!(Hundredths(-3.0).to_string(), "0.00");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(7), "7s");
        assert_eq!(human_duration(306), "5m06s");
        assert_eq!(human_duration(3 * 3600 + 240), "3h04m");
        assert_eq!(human_duration(86_400 + 7200), "1d02h");
    }

    #[test]
    fn link_state_since_moves_only_on_change() {
        let t0 = Instant::now();
        let mut l = LinkStats::new(t0);
        l.observe(LinkState::NoCredentials, t0 + Duration::from_secs(5));
        assert_eq!(l.since, t0);
        l.observe(LinkState::Connecting, t0 + Duration::from_secs(6));
        l.observe(LinkState::WaitingToReconnect, t0 + Duration::from_secs(7));
        l.observe(LinkState::Connecting, t0 + Duration::from_secs(8));
        l.dial_failed("refused".into());
        l.dial_failed("refused".into());
        assert_eq!((l.attempts, l.since), (2, t0 + Duration::from_secs(6)));
        l.connected();
        assert_eq!((l.attempts, l.connects), (0, 1));
        assert_eq!(l.last_error.as_ref().map(|e| e.message.as_str()), Some("refused"));
    }
}
