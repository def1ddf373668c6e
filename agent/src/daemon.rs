//! The `daemon` command: one websocket to the server, the router and the shell sessions,
//! driven by a single event loop.
//!
//! ```text
//!  auth thread ──credentials──┐        signals (TERM/INT/USR1)──┐
//!                             v                                  v
//!   dial task ──socket──> [ event loop: link state, Router, Shells, 1 s tick ] ──replies (≤64)──┐
//!   websocket reader ──frames──^        ^ exited                                              v
//!   shell reader tasks ──pty output──────────────────────────────data (≤16 frames)──> writer task ──> websocket
//!   shell writer tasks <──keystrokes (≤16 per session)── event loop
//! ```
//!
//! The writer task drains replies before data, so answers are not stuck behind bulk output;
//! the bounded data queue makes shell readers stop reading their pty while the websocket is
//! slow or down.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use futures_lite::{FutureExt, StreamExt};
use smol::{Task, Timer};

use mender_connect_core::shell::TermSize;

use crate::config::Config;
use crate::link::connection::{self, ConnectError, Ended, Reader, Socket};
use crate::link::credentials::{Auth, Credentials, Update};
use crate::ops::status::protocol::{ErrorKind, LinkState, Response, SessionKind};
use crate::ops::status::server::Query;
use crate::os::clock;
use crate::proto::router::{Output, Router};
use crate::proto::shell::{Action, Expiry, ShellSettings, Shells};
use mender_connect_core::link::{CredentialsUpdate, LinkAction, LinkConfig, LinkState as EngineLink};
use snapshot::LinkStats;

pub mod resident;
pub mod snapshot;

/// Outbound shell-output frames buffered at most (each ≤ 8 KiB).
const DATA_QUEUE: usize = 16;
/// Outbound reply frames buffered at most.
const REPLY_QUEUE: usize = 64;
/// How long shutdown waits for shells to die (SIGKILL comes after [`crate::proto::shell::KILL_GRACE`]).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Connected with nothing open for this long, the daemon releases the code pages that start-up,
/// dialing and the last sessions mapped (see [`resident`]); late enough that the tasks they left
/// (writer, reaping, closing) have run, so that only what an idle turn of the loop runs maps
/// back in.
const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// Environment override of the disconnect grace, in seconds (tests shorten it).
pub const DISCONNECT_GRACE_ENV: &str = "MENDER_CONNECT_DISCONNECT_GRACE_SECS";
/// Environment override of the shell health-check ping period, in seconds (tests shorten it;
/// the check then fails 5 s after a missed pong, as with the default 60 s).
pub const HEALTHCHECK_INTERVAL_ENV: &str = "MENDER_CONNECT_HEALTHCHECK_INTERVAL_SECS";

/// Everything the daemon takes from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Shell sessions.
    pub shell: ShellSettings,
    /// `Terminal.Disable` off.
    pub terminal: bool,
    /// First reconnect delay bound (`ReconnectIntervalSeconds`).
    pub reconnect_base: Duration,
    /// Longest reconnect delay (`ReconnectMaxIntervalSeconds`).
    pub reconnect_max: Duration,
    /// File transfer, port forward and mender-client handlers, as configured.
    pub features: crate::proto::features::Features,
    /// Where the status/control socket listens (`None`: no socket).
    pub control_socket: Option<std::path::PathBuf>,
    /// Which server certificates the websocket trusts.
    pub tls: connection::TlsOptions,
}

impl Settings {
    /// From the loaded configuration.
    pub fn from_config(config: &Config) -> Self {
        let s = &config.sessions;
        // The configuration holds what the files said (uint32 seconds, 3.0's defaults applied);
        // which rule follows from it is core's one statement of the reference's.
        let secs = |d: Option<Duration>| d.map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let expiry = Expiry::from_reference(s.stop_expired, secs(s.expire_after), secs(s.expire_after_idle));
        Self {
            shell: ShellSettings {
                command: config.shell_command.to_string_lossy().into_owned(),
                args: config.shell_arguments.clone(),
                user: config.user.clone(),
                size: TermSize { width: config.terminal.width, height: config.terminal.height },
                max_per_user: usize::try_from(config.sessions.max_per_user).unwrap_or(usize::MAX).max(1),
                expiry,
                health_interval: Self::health_interval_from_env(),
                disconnect_grace: Self::disconnect_grace_from_env(),
            },
            terminal: !config.terminal.disable,
            reconnect_base: config.reconnect_interval,
            reconnect_max: config.reconnect_max_interval,
            features: crate::proto::features::Features::from_config(config),
            control_socket: Some(config.control_socket.clone()),
            tls: crate::link::tls_options(config),
        }
    }

    /// The health-check period, from [`HEALTHCHECK_INTERVAL_ENV`] if set (at least 1 s).
    pub fn health_interval_from_env() -> Duration {
        std::env::var(HEALTHCHECK_INTERVAL_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(crate::proto::shell::HEALTH_INTERVAL, |s| Duration::from_secs(s.max(1)))
    }

    /// The link supervisor's configuration (`reread`: the credentials source can confirm its
    /// token, see [`Auth::reread`]).
    pub fn link_config(&self, reread: bool) -> LinkConfig {
        let ms = crate::os::clock::millis;
        LinkConfig::new(
            ms(self.reconnect_base),
            ms(self.reconnect_max),
            ms(self.shell.disconnect_grace),
            reread,
        )
    }

    /// The disconnect grace, from [`DISCONNECT_GRACE_ENV`] if set.
    pub fn disconnect_grace_from_env() -> Duration {
        std::env::var(DISCONNECT_GRACE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(crate::proto::shell::DEFAULT_DISCONNECT_GRACE, Duration::from_secs)
    }
}

/// The link's I/O; where it stands (waiting, held, backing off) is the engine's
/// ([`mender_connect_core::link`]).
enum Link {
    /// No socket and no dial.
    Idle,
    Dialing(Task<Result<Box<Socket>, ConnectError>>),
    Up {
        reader: Reader,
        writer: Task<Result<(), Ended>>,
        stop_writer: async_channel::Sender<()>,
    },
}

enum Event {
    Signal(Option<Signal>),
    Credentials(Option<Update>),
    /// An executor's task reported: a shell ended, a connection or a download moved on.
    Report(crate::proto::router::Report),
    /// The device's timer: a redial, the end of the disconnect grace, control-session pings,
    /// shell expiry and health checks.
    Timer,
    /// Connected and nothing open for [`RELEASE_AFTER`].
    Release,
    Dialed(Result<Box<Socket>, ConnectError>),
    Received(Result<async_tungstenite::tungstenite::Bytes, Ended>),
    WriterEnded(Result<(), Ended>),
    /// A request from the control socket (`mender-connect status`, `sessions kill`).
    Control(crate::ops::status::server::Ask),
}

struct Queues {
    data_tx: async_channel::Sender<Vec<u8>>,
    data_rx: async_channel::Receiver<Vec<u8>>,
    reply_tx: async_channel::Sender<Vec<u8>>,
    reply_rx: async_channel::Receiver<Vec<u8>>,
}

async fn writer_task(
    mut w: connection::Writer,
    replies: async_channel::Receiver<Vec<u8>>,
    data: async_channel::Receiver<Vec<u8>>,
    stop: async_channel::Receiver<()>,
) -> Result<(), Ended> {
    let r = w.pump(&replies, &data).or(async {
        let _ = stop.recv().await;
        Ok(())
    });
    let r = r.await;
    w.close().await;
    r
}

/// The `daemon` command: connects to the auth service on `bus` (`None`: the system bus, or
/// `DBUS_SYSTEM_BUS_ADDRESS`) and serves until SIGTERM/SIGINT. Returns the exit code.
pub fn run(config: &Config, bus: Option<String>) -> i32 {
    let settings = Settings::from_config(config);
    crate::os::runtime::claim();
    let auth = match crate::link::select(config, bus) {
        Ok(a) => a,
        Err(e) => {
            log::error!("{e}");
            if matches!(e, crate::link::auth::AuthError::Bus(_)) && cfg!(feature = "standalone") {
                // The usual cause is a host without a system bus: say how to run without one.
                log::error!(
                    "without the Mender client on D-Bus, a Standalone block in the configuration lets \
                     the agent authenticate itself and run without D-Bus (docs/standalone.md)"
                );
            }
            return 1;
        }
    };
    serve(settings, auth)
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn serve(settings: Settings, auth: Auth) -> i32 {
    let signals = match Signals::new([Signal::Term, Signal::Int, Signal::Usr1]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    // On the heap: the loop's state (the router with core's device) is several KiB, and every
    // move of a future copies all of it; the executor's wrappers would move it through the
    // stack, whose pages an idle daemon keeps.
    crate::os::runtime::block_on(Box::pin(event_loop(settings, auth, signals)))
}

async fn event_loop(settings: Settings, auth: Auth, mut signals: Signals) -> i32 {
    let tls = match connection::client_config(&settings.tls) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let (data_tx, data_rx) = async_channel::bounded(DATA_QUEUE);
    let (reply_tx, reply_rx) = async_channel::bounded(REPLY_QUEUE);
    let q = Queues { data_tx, data_rx, reply_tx, reply_rx };
    // The executors' reports, on one channel: shells that ended (one per shell), port-forward
    // connections (bounded by the device's flow control: a dial, one read, at most
    // `forwards::INBOUND_QUEUE` writes and an end per connection) and downloads (bounded by
    // core's window: an open, one read and an end per download).
    let (report_tx, report_rx) = async_channel::unbounded();
    let mut shells = Shells::new(settings.shell.clone(), q.data_tx.clone(), report_tx.clone());
    let reread = auth.reread.is_some();
    let mut router = Router::with_link(
        settings.terminal,
        settings.link_config(reread),
        settings.shell.table_config(),
        crate::os::clock::seed(),
    );
    crate::proto::features::register(&mut router, &settings.features, &q.data_tx, &report_tx);
    drop(report_tx);
    let mut creds = Credentials { token: String::new(), server_url: String::new() };
    let mut auth_open = true;
    let mut link = Link::Idle;
    let started = Instant::now();
    let mut link_stats = LinkStats::new(started);
    let (_control, control_rx) = start_control(settings.control_socket.as_deref());
    // When the code pages are released (see `resident`); `None` once done, until the next
    // session or link.
    let mut release_at: Option<Instant> = None;

    let protocols: Vec<&str> = router
        .protocols()
        .iter()
        .map(|p| match *p {
            1 => "shell",
            2 => "file transfer",
            3 => "port forward",
            4 => "mender client",
            _ => "other",
        })
        .collect();
    log::info!("mender-connect daemon starting; protocols: {}", protocols.join(", "));
    // What the previous turn computed, kept over a turn that changed nothing: the one right
    // after the code pages were released, which would otherwise fault the engine's code back
    // in (a 64 KiB block per function it visits) only to find the same answer.
    let mut unchanged: Option<(bool, Option<Instant>)> = None;
    loop {
        let turn = Instant::now();
        let (busy, timer_at) = match unchanged.take() {
            Some(kept) => kept,
            None => {
                link_stats.observe(link_state(router.engine().link_state()), turn);
                // Shell expiry and health checks, control sessions, redials and the disconnect
                // grace all run on the device's one timer.
                let busy = !router.device().shells().is_empty() || router.has_sessions();
                (busy, router.device().poll_timeout().map(crate::os::clock::to_std))
            }
        };
        if busy {
            release_at = Some(turn + RELEASE_AFTER);
        }
        let release_due = release_at.filter(|_| !busy && matches!(link, Link::Up { .. }));
        let ev = {
            let sig = async { Event::Signal(signals.next().await.and_then(Result::ok)) };
            let cred = async {
                if auth_open {
                    Event::Credentials(auth.credentials.recv().await.ok())
                } else {
                    std::future::pending().await
                }
            };
            let report = async {
                match report_rx.recv().await {
                    Ok(r) => Event::Report(r),
                    Err(_) => std::future::pending().await,
                }
            };
            let release = async {
                match release_due {
                    Some(at) => {
                        Timer::at(at).await;
                        Event::Release
                    }
                    None => std::future::pending().await,
                }
            };
            let timer = async {
                match timer_at {
                    Some(at) => {
                        Timer::at(at).await;
                        Event::Timer
                    }
                    None => std::future::pending().await,
                }
            };
            let link_ev = async {
                match &mut link {
                    Link::Idle => std::future::pending().await,
                    Link::Dialing(task) => Event::Dialed(task.await),
                    Link::Up { reader, writer, .. } => {
                        async { Event::Received(reader.next().await) }
                            .or(async { Event::WriterEnded(writer.await) })
                            .await
                    }
                }
            };
            let control = async {
                match control_rx.as_ref().map(|rx| rx.recv()) {
                    Some(recv) => match recv.await {
                        Ok(ask) => Event::Control(ask),
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            };
            // First ready wins, in this order. Polled through `dyn Future`: a chain of `or`
            // combinators compiles into one nested poll function per turn shape, 50 KB of the
            // binary; this is one small loop and a poll function per source.
            let mut sources: [Pin<&mut dyn Future<Output = Event>>; 7] = [
                pin!(sig),
                pin!(cred),
                pin!(report),
                pin!(link_ev),
                pin!(control),
                pin!(timer),
                pin!(release),
            ];
            std::future::poll_fn(|cx| {
                for source in sources.iter_mut() {
                    if let Poll::Ready(ev) = source.as_mut().poll(cx) {
                        return Poll::Ready(ev);
                    }
                }
                Poll::Pending
            })
            .await
        };
        let now = Instant::now();
        match ev {
            Event::Signal(Some(Signal::Usr1)) => {
                let status = status(&settings, started, &link_stats, &creds, &shells, &router, now);
                snapshot::log_dump(&status, settings.shell.expiry, shells.command());
            }
            Event::Control(ask) => {
                let response = match ask.query {
                    Query::Status => Response::Status(Box::new(status(
                        &settings,
                        started,
                        &link_stats,
                        &creds,
                        &shells,
                        &router,
                        now,
                    ))),
                    Query::Kill(id) => {
                        let (response, frame) = kill_session(&id, &mut shells, &mut router);
                        if let (Some(f), Link::Up { .. }) = (frame, &link) {
                            let _ = q.reply_tx.send(f).await;
                        }
                        response
                    }
                };
                // The client may have hung up; nothing to do then.
                let _ = ask.reply.try_send(response);
            }
            Event::Signal(sig) => {
                match sig {
                    Some(Signal::Term) => log::info!("received SIGTERM, stopping"),
                    Some(Signal::Int) => log::info!("received SIGINT, stopping"),
                    _ => log::info!("the signal handler closed, stopping"),
                }
                break;
            }
            Event::Credentials(None) => {
                log::error!("the auth service channel closed; keeping the last credentials");
                auth_open = false;
            }
            Event::Credentials(Some(Update::Revoked)) => {
                log::warn!(
                    "the auth service left the bus: dropping its token and closing the connection until it hands out a new one"
                );
                creds = Credentials { token: String::new(), server_url: String::new() };
                router.device_mut().handle_revoked(clock::to_core(now));
            }
            Event::Credentials(Some(Update::Credentials(c))) => {
                let update = if !c.is_authorized() {
                    log::info!("not authorized; disconnecting and stopping all sessions");
                    CredentialsUpdate::Unauthorized
                } else if c != creds {
                    CredentialsUpdate::Changed
                } else {
                    CredentialsUpdate::Unchanged
                };
                let idle =
                    matches!(router.engine().link_state(), EngineLink::NoCredentials | EngineLink::Held);
                if update == CredentialsUpdate::Changed || (update == CredentialsUpdate::Unchanged && idle) {
                    log::info!("new token or server URL ({}); connecting", c.server_url);
                }
                creds = c;
                router.device_mut().handle_credentials(update, clock::to_core(now));
            }
            Event::Report(r) => router.report(r, now),
            Event::Timer => router.device_mut().handle_timeout(clock::to_core(now)),
            Event::Release => {
                release_at = None;
                let bytes = resident::release_code();
                log::debug!("idle: released {} KiB of code mappings", bytes / 1024);
                unchanged = Some((busy, timer_at));
            }
            Event::Dialed(Ok(socket)) => {
                link_stats.connected();
                log::info!("connection established with {}", creds.server_url);
                let (reader, writer) =
                    connection::split(*socket, connection::Keepalive::for_url(&creds.server_url));
                let (stop_writer, stop_rx) = async_channel::bounded(1);
                let writer = crate::os::runtime::spawn(writer_task(
                    writer,
                    q.reply_rx.clone(),
                    q.data_rx.clone(),
                    stop_rx,
                ));
                link = Link::Up { reader, writer, stop_writer };
                release_at = Some(now + RELEASE_AFTER);
                router.device_mut().handle_connected(clock::to_core(now));
            }
            Event::Dialed(Err(e)) => {
                link = Link::Idle;
                let unauthorized = matches!(e, ConnectError::Unauthorized);
                let delay = router
                    .device_mut()
                    .handle_dial_failed(unauthorized, clock::to_core(now))
                    .unwrap_or_default();
                link_stats.dial_failed(format!("failed to connect to {}: {e}", creds.server_url));
                log::error!(
                    "failed to connect to {}: {e}; reconnecting in {}",
                    creds.server_url,
                    crate::ops::logging::Secs(delay)
                );
            }
            Event::Received(Ok(bytes)) => {
                for action in router.route(&bytes, &mut shells, now) {
                    match action {
                        Action::Reply(f) => {
                            let _ = q.reply_tx.send(f).await;
                        }
                    }
                }
            }
            Event::Received(Err(e)) | Event::WriterEnded(Err(e)) => {
                log::error!("websocket ended: {e}; reconnecting");
                link_stats.error(format!("websocket ended: {e}"));
                router.device_mut().handle_link_closed(clock::to_core(now));
            }
            Event::WriterEnded(Ok(())) => {
                router.device_mut().handle_link_closed(clock::to_core(now));
            }
        }
        execute(&mut router, &mut link, &mut shells, &auth, &creds, &tls, &q).await;
    }

    let now = Instant::now();
    router.device_mut().handle_shutdown(clock::to_core(now));
    execute(&mut router, &mut link, &mut shells, &auth, &creds, &tls, &q).await;
    // The device stopped every shell with the link (`handle_shutdown`).
    let n = shells.take_stopped_all();
    log::info!("stopping {n} shells");
    let done = async {
        shells.reaped().await;
        true
    }
    .or(async {
        Timer::after(SHUTDOWN_WAIT).await;
        false
    })
    .await;
    if !done {
        log::error!("some shells did not exit in time");
    }
    0
}

/// One snapshot for SIGUSR1 and the status socket.
fn status(
    settings: &Settings,
    started: Instant,
    link: &LinkStats,
    creds: &Credentials,
    shells: &Shells,
    router: &Router,
    now: Instant,
) -> crate::ops::status::protocol::Status {
    let sources = snapshot::Sources {
        started,
        link,
        server_url: &creds.server_url,
        shells,
        router,
        features: &settings.features,
        max_per_user: settings.shell.max_per_user,
    };
    snapshot::build(&sources, now)
}

/// Carries out what the engine asks for, until it asks for nothing.
#[allow(clippy::too_many_arguments)]
async fn execute(
    router: &mut Router,
    link: &mut Link,
    shells: &mut Shells,
    auth: &Auth,
    creds: &Credentials,
    tls: &std::sync::Arc<rustls::ClientConfig>,
    q: &Queues,
) {
    while let Some(out) = router.poll(shells) {
        match out {
            Output::Link(LinkAction::Dial) => *link = dial(creds, tls),
            Output::Link(LinkAction::CancelDial) => *link = Link::Idle,
            Output::Link(LinkAction::CloseLink) => close_link(link).await,
            Output::Link(LinkAction::RequestReread) => {
                if let Some(reread) = &auth.reread {
                    reread();
                }
            }
            Output::Link(LinkAction::RefreshToken) => (auth.refresh)(),
            // The device stopped the shells before it said so.
            Output::Link(LinkAction::StopAllSessions) => {
                let n = shells.take_stopped_all();
                if n > 0 {
                    log::info!("stopped {n} shells");
                }
            }
            Output::Link(LinkAction::AwaitReread) => {
                log::debug!("waiting for the auth service to confirm the token before redialling");
            }
            Output::Link(_) => {}
            // Periodic pings are worth nothing late; drop them when the queue is full.
            Output::Send(f) => {
                if matches!(link, Link::Up { .. }) {
                    let _ = q.reply_tx.try_send(f);
                }
            }
            // A session the agent ended: the user's terminal must learn it. Not awaited: a full
            // reply queue (64) means a stalled link, which its write deadline ends.
            Output::Shell(f) => {
                if matches!(link, Link::Up { .. }) && q.reply_tx.try_send(f).is_err() {
                    log::warn!("reply queue full: the server is not told about an ended shell");
                }
            }
            // A connection's `new`, `ack` or `stop`, an upload's ack or a transfer's error: the
            // user side waits for it, so it is queued as replies to messages are.
            Output::Forward(f) | Output::Transfer(f) => {
                if matches!(link, Link::Up { .. }) {
                    let _ = q.reply_tx.send(f).await;
                }
            }
        }
    }
}

/// The link's state as the status CLI names it.
fn link_state(state: EngineLink) -> LinkState {
    match state {
        EngineLink::NoCredentials | EngineLink::Held => LinkState::NoCredentials,
        EngineLink::Waiting { .. } => LinkState::WaitingToReconnect,
        EngineLink::Dialing => LinkState::Connecting,
        EngineLink::Up { .. } => LinkState::Connected,
    }
}

/// Opens the control socket; the daemon runs on without it if that fails.
fn start_control(
    path: Option<&std::path::Path>,
) -> (
    Option<crate::ops::status::server::Server>,
    Option<async_channel::Receiver<crate::ops::status::server::Ask>>,
) {
    match path.map(crate::ops::status::server::Server::start) {
        Some(Ok((server, rx))) => (Some(server), Some(rx)),
        Some(Err(e)) => {
            log::error!("{e}; `mender-connect status` will not work");
            (None, None)
        }
        None => (None, None),
    }
}

/// `mender-connect sessions kill <id>`: a shell gets what a server `stop` does (SIGHUP, then
/// SIGKILL) and the server a `stop`; a control session is closed with a `close`.
fn kill_session(id: &str, shells: &mut Shells, router: &mut Router) -> (Response, Option<Vec<u8>>) {
    if let Some(frame) = router.kill_shell(id, shells) {
        log::info!("session {id}: ended on local request");
        // Control messages on the shell's sid (pings) belong to the same session; a `stop` is
        // what the server expects for a shell, so no `close` is added.
        let _ = router.kill(id);
        return (Response::Killed { id: id.to_owned(), kind: SessionKind::Shell }, frame);
    }
    match router.kill(id) {
        Some((frame, proto)) => {
            let kind = match proto {
                Some(mender_connect_core::Proto::FILE_TRANSFER) => SessionKind::Filetransfer,
                Some(mender_connect_core::Proto::PORT_FORWARD) => SessionKind::Portforward,
                Some(mender_connect_core::Proto::MENDER_CLIENT) => SessionKind::Menderclient,
                _ => SessionKind::Control,
            };
            (Response::Killed { id: id.to_owned(), kind }, frame)
        }
        None => (
            Response::Error { kind: ErrorKind::NoSuchSession, message: format!("no session with id {id:?}") },
            None,
        ),
    }
}

fn dial(creds: &Credentials, tls: &std::sync::Arc<rustls::ClientConfig>) -> Link {
    let (url, token, tls) = (creds.server_url.clone(), creds.token.clone(), std::sync::Arc::clone(tls));
    Link::Dialing(crate::os::runtime::spawn(async move {
        connection::dial(&url, &token, &tls).await.map(Box::new)
    }))
}

/// Ends the current connection (close frame if up); the engine has already dropped the control
/// sessions and their handlers, and keeps the shells as orphans for the grace.
async fn close_link(link: &mut Link) {
    if let Link::Up { writer, stop_writer, reader, .. } = std::mem::replace(link, Link::Idle) {
        let _ = stop_writer.try_send(());
        // The event loop may already have taken the writer's result (`WriterEnded`): a task
        // polled again after that panics. Otherwise bounded by the writer's own write deadline.
        if !writer.is_finished() {
            let _ = writer
                .or(async {
                    Timer::after(connection::WRITE_WAIT).await;
                    Ok(())
                })
                .await;
        }
        drop(reader);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry(json: &str) -> Option<Expiry> {
        let loaded = Config::from_json_str(json).expect("valid configuration");
        Settings::from_config(&loaded.config).shell.expiry
    }

    /// The configuration's `Sessions` as the reference reads it: mender-connect 2.1.0 and 3.0.0
    /// `app/daemon.go` `timeToSweepSessions` returns false when both timeouts are 0 (no sweep,
    /// so the 1024 s `defaultSessionExpiredTimeout` never applies); idle wins over absolute;
    /// 3.0's configuration defaults turn "nothing set" into 600 s idle.
    #[test]
    fn expiry_follows_the_reference() {
        assert_eq!(expiry("{}"), Some(Expiry::AfterIdle(600_000)));
        assert_eq!(expiry(r#"{"Sessions":{"StopExpired":false}}"#), None);
        assert_eq!(expiry(r#"{"Sessions":{"StopExpired":false,"ExpireAfterIdle":5}}"#), None);
        assert_eq!(expiry(r#"{"Sessions":{"ExpireAfter":30}}"#), Some(Expiry::AfterCreation(30_000)));
        assert_eq!(
            expiry(r#"{"Sessions":{"StopExpired":true,"ExpireAfterIdle":7}}"#),
            Some(Expiry::AfterIdle(7_000))
        );
        // What reaches the rule when both are 0 (no longer produced by the configuration):
        // never, not 1024 s.
        let mut config = Config::from_json_str("{}").unwrap().config;
        config.sessions.expire_after_idle = None;
        config.sessions.expire_after = None;
        assert!(config.sessions.stop_expired);
        assert_eq!(Settings::from_config(&config).shell.expiry, None);
    }

    /// mender-connect 2.1.2/2.2.1+ `session/shell.go`: `healthcheckInterval` 60 s,
    /// `healthcheckTimeout` 5 s; pings carry `timeout` 65 and the check fails 65 s after the
    /// last pong (the daemon tests run it with a 1 s period).
    #[test]
    fn health_check_timings_are_the_reference_s() {
        if std::env::var_os(HEALTHCHECK_INTERVAL_ENV).is_some() {
            return;
        }
        let shell = Settings::from_config(&Config::from_json_str("{}").unwrap().config).shell;
        assert_eq!(shell.health_interval, Duration::from_secs(60));
        assert_eq!(shell.health_timeout(), Duration::from_secs(65));
    }
}
