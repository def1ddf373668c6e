//! Building a [`Status`] from the daemon's state (only when a client or SIGUSR1 asks), the
//! connection bookkeeping the event loop keeps for it, and the SIGUSR1 log dump.

use std::time::{Instant, SystemTime};

use mender_connect_core::Proto;

use crate::ops::status::protocol::{
    Connection, Direction, LastError, Limits, LinkState, PortForward, RateCounters, Session, SessionKind,
    Status, Transfer,
};
use crate::ops::status::text::{Hundredths, go_time, link_name};
use crate::proto::features::Features;
use crate::proto::router::{Activity, Router};
use crate::proto::shell::{Expiry, MAX_SHELLS, Shells};

/// Entries per list at most (shells come first, so all 16 are always listed); with session
/// ids of at most a frame's size this keeps a status below [`crate::ops::status::protocol::MAX_RESPONSE`]
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
        .info(src.router.device().shells())
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
    let controls =
        src.router.sessions_info().into_iter().filter(|s| s.proto.is_some() || !shell_ids.contains(&s.id));
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
        let c = src.router.device().transfers().rates_at(crate::os::clock::to_core(now));
        let (tx_bytes, rx_bytes, tx_avg_1m, rx_avg_1m) =
            (c.tx.total(), c.rx.total(), c.tx.average(), c.rx.average());
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
        daemon_version: crate::ops::VERSION.to_owned(),
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

/// The SIGUSR1 dump: the reference's lines (`app/daemon.go` `outputStatus`) first, then ours.
pub fn log_dump(status: &Status, expiry: Option<Expiry>, shell_command: &str) {
    log::info!("mender-connect daemon v{}", status.daemon_version);
    log::info!(" status: ");
    log::info!("  shells: {}/{}", status.limits.shells, status.limits.max_shells);
    log::info!("  sessions: {}", status.limits.shells);
    for s in status.sessions.iter().filter(|s| s.kind == SessionKind::Shell) {
        let active_at = (status_now(status)).saturating_sub(s.idle_secs);
        let expires = match expiry {
            Some(Expiry::AfterIdle(ms)) => go_time(active_at.saturating_add(ms / 1000)),
            Some(Expiry::AfterCreation(ms)) => go_time(s.started_at.saturating_add(ms / 1000)),
            _ => "never".to_owned(),
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
        log::info!(
            "   port-forward {}/{}: {} {}:{}",
            f.session_id,
            f.connection_id,
            f.protocol,
            f.remote_host,
            f.remote_port
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn many_sessions_are_capped() {
        use mender_connect_core::control;
        let now = Instant::now();
        let (data, _data_rx) = async_channel::bounded(1);
        let (exited, _exited_rx) = async_channel::bounded(1);
        let mut shells = Shells::new(crate::proto::shell::ShellSettings::none_started(), data, exited);
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
        let frame = crate::ops::status::protocol::encode_frame(
            &crate::ops::status::protocol::Response::Status(Box::new(st)),
        );
        assert!(frame.unwrap().len() < crate::ops::status::protocol::MAX_RESPONSE);
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
