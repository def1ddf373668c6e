//! Device token and server URL from `io.mender.AuthenticationManager` on the system D-Bus.
//!
//! libdbus is blocking, so it lives on a thread of its own; the async side gets a channel of
//! [`Update`]s (the current credentials first, then one item per `JwtTokenStateChange` signal, per
//! re-read, and a revocation when the service leaves) and can ask for a new token with
//! [`AuthHandle::fetch`] or for the current one with [`AuthHandle::reread`].
//!
//! Trust: on a system bus any local user may send a signal, to everyone or straight to this
//! connection, and match rules only filter broadcasts. So the thread tracks which unique name owns
//! the service name (`GetNameOwner`, then `NameOwnerChanged`, believed only from the bus itself),
//! believes `JwtTokenStateChange` only from that owner at its object path, and calls methods on
//! that unique name so that answers can only come from it. When the owner leaves, everything it
//! handed out is revoked: its local proxy port is free for any local user to bind.
//!
//! Behaviour the peers need (Mender client 3.x `mender daemon`, 4.x/5.x `mender-auth daemon`):
//! - the signal match is added before `GetJwtToken` is called, so a change between the two is not
//!   lost;
//! - an empty token triggers `FetchJwtToken`; the answer comes later as a signal (the 3.x client
//!   emits it after its next authorization attempt, 4.x after the fetch finishes, possibly with
//!   empty strings on failure);
//! - when the service (re)appears on the bus (`NameOwnerChanged`), the token is read again, because
//!   the 3.x/4.x services hand out a new local proxy URL (`http://127.0.0.1:<port>`) per start;
//! - if the bus connection drops, the thread reconnects with a backoff and starts over.

// Without D-Bus support only the types remain, for the daemon to compile against.
#![cfg_attr(not(feature = "dbus-auth"), allow(dead_code, unused_imports))]

use super::credentials::{Credentials, Update};

/// Why the auth client could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The bus could not be reached or refused the connection.
    #[error("mender-connect dbus failed to connect, error: {0}")]
    Bus(String),
    /// The thread could not be started.
    #[error("cannot start the D-Bus thread: {0}")]
    Thread(std::io::Error),
    /// Built without the `dbus-auth` feature.
    #[cfg_attr(feature = "dbus-auth", allow(dead_code))]
    #[error("built without D-Bus support (feature dbus-auth)")]
    Unsupported,
    /// Standalone mode (`Standalone` block) cannot start: key, identity or certificates.
    #[error("standalone mode: {0}")]
    Standalone(String),
}

/// D-Bus names of the Mender authentication service.
pub const SERVICE_NAME: &str = "io.mender.AuthenticationManager";
pub const OBJECT_PATH: &str = "/io/mender/AuthenticationManager";
pub const INTERFACE: &str = "io.mender.Authentication1";
pub const SIGNAL_TOKEN_CHANGED: &str = "JwtTokenStateChange";

#[cfg(feature = "dbus-auth")]
pub use imp::spawn;

#[cfg(not(feature = "dbus-auth"))]
pub use disabled::spawn;

#[cfg(not(feature = "dbus-auth"))]
mod disabled {
    use super::AuthError;

    /// Placeholder: the build has no D-Bus client.
    #[derive(Debug)]
    pub struct AuthHandle(());

    impl AuthHandle {
        pub fn credentials(&self) -> async_channel::Receiver<super::Update> {
            async_channel::unbounded().1
        }
        pub fn fetch(&self) {}
        pub fn reread(&self) {}
    }

    pub fn spawn(_bus: Option<String>) -> Result<AuthHandle, AuthError> {
        Err(AuthError::Unsupported)
    }
}

#[cfg(feature = "dbus-auth")]
mod imp {
    use super::{AuthError, Credentials, INTERFACE, OBJECT_PATH, SERVICE_NAME, SIGNAL_TOKEN_CHANGED, Update};
    use dbus::blocking::Connection;
    use dbus::channel::Channel;
    use dbus::message::{MatchRule, MessageType};
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// The bus itself: the only sender whose `NameOwnerChanged` is believed.
    const BUS_NAME: &str = "org.freedesktop.DBus";
    const BUS_PATH: &str = "/org/freedesktop/DBus";
    const BUS_INTERFACE: &str = "org.freedesktop.DBus";

    /// Timeout of one method call (the 3.x client answers within 5 s or gives up itself).
    const CALL_TIMEOUT: Duration = Duration::from_secs(10);
    /// Retry of `GetJwtToken`/`FetchJwtToken` while the service is missing or failing.
    const RETRY: Duration = Duration::from_secs(5);
    /// Backoff bounds for reconnecting to the bus itself.
    const RECONNECT_MIN: Duration = Duration::from_secs(1);
    const RECONNECT_MAX: Duration = Duration::from_secs(30);
    /// While there is no token, ask again after this long, doubling up to `REFETCH_MAX`: a 4.x
    /// `mender-auth` does not retry a failed fetch on its own (only `mender-update` asks it), and
    /// 3.x retries by itself anyway, so a slow extra request costs little.
    const REFETCH_MIN: Duration = if cfg!(test) { Duration::from_secs(2) } else { Duration::from_secs(60) };
    const REFETCH_MAX: Duration = Duration::from_secs(600);

    /// What the daemon asks of the D-Bus thread; set, then the thread is woken through the pipe.
    /// Flags rather than a queue: a second request before the first was seen asks for nothing more.
    #[derive(Default)]
    struct Commands {
        fetch: AtomicBool,
        reread: AtomicBool,
        stop: AtomicBool,
    }

    /// The running auth client; dropping it stops the D-Bus thread.
    pub struct AuthHandle {
        credentials: async_channel::Receiver<Update>,
        commands: Arc<Commands>,
        wake: OwnedFd,
        thread: Option<JoinHandle<()>>,
    }

    impl std::fmt::Debug for AuthHandle {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AuthHandle").finish_non_exhaustive()
        }
    }

    impl AuthHandle {
        /// The update stream: current credentials first, then one item per change signal of the
        /// name's owner, per answer to [`AuthHandle::reread`], and [`Update::Revoked`] when the
        /// owner leaves. Every signal is delivered, even with an unchanged token, so a `fetch()`
        /// always gets an answer when the service sends one.
        pub fn credentials(&self) -> async_channel::Receiver<Update> {
            self.credentials.clone()
        }

        /// Asks the auth service for a new token (e.g. after the server answered 401); the result
        /// arrives on the credentials stream.
        pub fn fetch(&self) {
            self.commands.fetch.store(true, Ordering::Release);
            self.wake();
        }

        /// Reads the current token and URL again (`GetJwtToken`); the answer arrives on the
        /// credentials stream even when nothing changed. The daemon asks before it redials, so that
        /// it never dials a local proxy port its owner gave up.
        pub fn reread(&self) {
            self.commands.reread.store(true, Ordering::Release);
            self.wake();
        }

        fn wake(&self) {
            let _ = rustix::io::write(&self.wake, &[1]);
        }
    }

    impl Drop for AuthHandle {
        fn drop(&mut self) {
            self.commands.stop.store(true, Ordering::Release);
            self.wake();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Connects to the bus (`bus` address, else `DBUS_SYSTEM_BUS_ADDRESS`, else the system bus)
    /// and starts the D-Bus thread. Fails if the bus cannot be reached now; later losses of the bus
    /// or of the auth service are handled inside.
    pub fn spawn(bus: Option<String>) -> Result<AuthHandle, AuthError> {
        let conn = connect(bus.as_deref())?;
        let (tx, rx) = async_channel::unbounded();
        let commands = Arc::new(Commands::default());
        let (wake_rx, wake_tx) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)
                .map_err(|e| AuthError::Thread(e.into()))?;
        let mut worker = Worker {
            bus,
            conn: Some(conn),
            out: tx,
            commands: Arc::clone(&commands),
            wake: wake_rx,
            owner: None,
            need_owner: true,
            need_get: true,
            need_fetch: false,
            delivered: false,
            retry_at: None,
            reconnect_delay: RECONNECT_MIN,
            refetch_at: None,
            refetch_delay: REFETCH_MIN,
        };
        let thread = std::thread::Builder::new()
            .name("dbus-auth".into())
            .spawn(move || worker.run())
            .map_err(AuthError::Thread)?;
        Ok(AuthHandle { credentials: rx, commands, wake: wake_tx, thread: Some(thread) })
    }

    fn connect(bus: Option<&str>) -> Result<Connection, AuthError> {
        let err = |e: dbus::Error| AuthError::Bus(e.message().unwrap_or("unknown error").to_owned());
        let mut channel = match bus {
            Some(addr) => {
                let mut c = Channel::open_private(addr).map_err(err)?;
                c.register().map_err(err)?;
                c
            }
            // libdbus honours DBUS_SYSTEM_BUS_ADDRESS here.
            None => Channel::get_private(dbus::channel::BusType::System).map_err(err)?,
        };
        channel.set_watch_enabled(true);
        let conn = Connection::from(channel);
        // Subscribe before any call so that no change can slip between the first answer and the
        // subscription. Match rules only select broadcasts: any local user may also send a signal
        // straight to this connection (Debian's system policy allows signals from everyone), so
        // every signal's sender is checked again in `drain_messages`.
        let token_rule = MatchRule::new_signal(INTERFACE, SIGNAL_TOKEN_CHANGED)
            .with_path(OBJECT_PATH)
            .with_sender(SERVICE_NAME);
        conn.add_match_no_cb(&token_rule.match_str()).map_err(err)?;
        let owner_rule = MatchRule::new_signal(BUS_INTERFACE, "NameOwnerChanged")
            .with_sender(BUS_NAME)
            .with_path(BUS_PATH);
        let owner_rule = format!("{},arg0='{SERVICE_NAME}'", owner_rule.match_str());
        conn.add_match_no_cb(&owner_rule).map_err(err)?;
        Ok(conn)
    }

    struct Worker {
        bus: Option<String>,
        conn: Option<Connection>,
        out: async_channel::Sender<Update>,
        commands: Arc<Commands>,
        wake: OwnedFd,
        /// The unique name (`:1.42`) that owns [`SERVICE_NAME`] now: the only sender whose signals
        /// and replies count. `None`: nobody owns it (or not known yet).
        owner: Option<String>,
        /// Ask the bus who owns the name (after every (re)connect).
        need_owner: bool,
        /// Read the current token (at start, after a service or bus restart, when asked).
        need_get: bool,
        /// Ask for a new token (empty token, or requested by the daemon).
        need_fetch: bool,
        /// Credentials went out since the last [`Update::Revoked`].
        delivered: bool,
        /// When to retry a failed call or reconnect.
        retry_at: Option<Instant>,
        reconnect_delay: Duration,
        /// When to ask for a token again while unauthorized.
        refetch_at: Option<Instant>,
        refetch_delay: Duration,
    }

    impl Worker {
        fn run(&mut self) {
            loop {
                if !self.handle_commands() {
                    return;
                }
                let connected = self.conn.as_ref().is_some_and(|c| c.channel().is_connected());
                if !connected && !self.reconnect() {
                    if !self.sleep_until_retry(None) {
                        return;
                    }
                    continue;
                }
                self.drain_messages();
                if self.out.is_closed() {
                    return;
                }
                if self.refetch_at.is_some_and(|t| Instant::now() >= t) {
                    log::debug!("still no token; asking for one again");
                    self.refetch_at = None;
                    self.need_fetch = true;
                }
                let due = self.retry_at.is_none_or(|t| Instant::now() >= t);
                let work = self.need_owner || (self.owner.is_some() && (self.need_get || self.need_fetch));
                if due && work {
                    self.retry_at = None;
                    self.do_calls();
                    // Calls may have queued signals that arrived meanwhile.
                    continue;
                }
                let fd = self.conn.as_ref().map(|c| c.channel().watch().fd);
                if !self.sleep_until_retry(fd) {
                    return;
                }
                if let Some(c) = &self.conn {
                    // Moves what arrived into libdbus' queue; errors show up as a disconnect.
                    let _ = c.channel().read_write(Some(Duration::ZERO));
                }
            }
        }

        /// Returns false when asked to stop.
        fn handle_commands(&mut self) -> bool {
            let mut drain = [0u8; 64];
            while matches!(rustix::io::read(&self.wake, &mut drain), Ok(n) if n > 0) {}
            if self.commands.stop.load(Ordering::Acquire) {
                return false;
            }
            if self.commands.fetch.swap(false, Ordering::AcqRel) {
                self.need_fetch = true;
                self.retry_at = None;
            }
            if self.commands.reread.swap(false, Ordering::AcqRel) {
                self.need_get = true;
                self.retry_at = None;
            }
            true
        }

        /// Waits for bus traffic, a command or the retry deadline. Returns false when asked to stop.
        fn sleep_until_retry(&mut self, bus_fd: Option<std::os::fd::RawFd>) -> bool {
            use rustix::event::{PollFd, PollFlags, Timespec};
            let wake_at = match (self.retry_at, self.refetch_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake_at.map(|t| {
                let d = t.saturating_duration_since(Instant::now());
                Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos().into() }
            });
            // SAFETY: the descriptor belongs to the live connection in `self.conn`, which is not
            // touched while this borrow exists.
            let bus = bus_fd.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
            let mut fds = vec![PollFd::new(&self.wake, PollFlags::IN)];
            if let Some(b) = &bus {
                fds.push(PollFd::from_borrowed_fd(b.as_fd(), PollFlags::IN));
            }
            let _ = rustix::event::poll(&mut fds, timeout.as_ref());
            drop(fds);
            self.handle_commands()
        }

        fn reconnect(&mut self) -> bool {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return false;
            }
            if self.conn.take().is_some() {
                log::warn!("lost the D-Bus connection; reconnecting");
                // Who owns the name now is unknown until the bus answers again.
                self.set_owner(None);
            }
            match connect(self.bus.as_deref()) {
                Ok(c) => {
                    log::info!("reconnected to D-Bus");
                    self.conn = Some(c);
                    self.need_owner = true;
                    self.need_get = true;
                    self.retry_at = None;
                    self.reconnect_delay = RECONNECT_MIN;
                    true
                }
                Err(e) => {
                    log::debug!("{e}; retrying in {:?}", self.reconnect_delay);
                    self.retry_at = Some(Instant::now() + self.reconnect_delay);
                    self.reconnect_delay = (self.reconnect_delay * 2).min(RECONNECT_MAX);
                    false
                }
            }
        }

        /// Takes the owner of [`SERVICE_NAME`] as the bus reports it. Anything the previous owner
        /// handed out is revoked: its proxy port is gone, and whoever binds it next would get the
        /// device token and a root shell.
        fn set_owner(&mut self, new: Option<String>) {
            if self.owner == new {
                return;
            }
            match &new {
                Some(n) => log::info!("{SERVICE_NAME} is owned by {n}; reading the token"),
                None => log::info!("{SERVICE_NAME} left the bus"),
            }
            if self.owner.is_some() && self.delivered {
                self.delivered = false;
                let _ = self.out.try_send(Update::Revoked);
            }
            self.owner = new;
            // The new owner's token is read first; a fetch is asked for only if it has none.
            self.need_fetch = false;
            self.refetch_at = None;
            self.refetch_delay = REFETCH_MIN;
            if self.owner.is_some() {
                self.need_get = true;
                self.retry_at = None;
            }
        }

        fn drain_messages(&mut self) {
            let msgs: Vec<dbus::Message> = match &self.conn {
                Some(conn) => std::iter::from_fn(|| conn.channel().pop_message()).collect(),
                None => return,
            };
            for msg in msgs {
                if msg.msg_type() != MessageType::Signal {
                    continue;
                }
                let (Some(iface), Some(member)) = (msg.interface(), msg.member()) else {
                    continue;
                };
                let sender = msg.sender().map(|s| s.to_string());
                let path_is = |p: &str| msg.path().is_some_and(|x| &*x == p);
                if &*iface == INTERFACE && &*member == SIGNAL_TOKEN_CHANGED {
                    // Only the current owner's signal, from its object: anyone may send this
                    // signal to us directly, with a server URL of their choosing.
                    if sender.is_none() || sender != self.owner || !path_is(OBJECT_PATH) {
                        log::warn!(
                            "ignoring JwtTokenStateChange from {} at {:?}: not the owner of {SERVICE_NAME}",
                            sender.as_deref().unwrap_or("?"),
                            msg.path().map(|p| p.to_string()).unwrap_or_default()
                        );
                        continue;
                    }
                    match msg.read2::<String, String>() {
                        Ok((token, server_url)) => {
                            log::debug!(
                                "JwtTokenStateChange: token {} bytes, server URL {server_url:?}",
                                token.len()
                            );
                            self.deliver(Credentials { token, server_url });
                        }
                        Err(e) => log::warn!("malformed JwtTokenStateChange signal: {e}"),
                    }
                } else if &*iface == BUS_INTERFACE && &*member == "NameOwnerChanged" {
                    if sender.as_deref() != Some(BUS_NAME) || !path_is(BUS_PATH) {
                        continue;
                    }
                    if let Ok((name, _old, new)) = msg.read3::<String, String, String>() {
                        if name == SERVICE_NAME {
                            self.set_owner((!new.is_empty()).then_some(new));
                        }
                    }
                }
            }
        }

        fn deliver(&mut self, creds: Credentials) {
            // An empty token (from a signal: a failed authorization) is not answered with an
            // immediate FetchJwtToken, which would loop against a server that rejects the device;
            // a slow re-fetch is scheduled instead.
            if creds.token.is_empty() {
                if self.refetch_at.is_none() {
                    self.refetch_at = Some(Instant::now() + self.refetch_delay);
                    self.refetch_delay = (self.refetch_delay * 2).min(REFETCH_MAX);
                }
            } else {
                self.refetch_at = None;
                self.refetch_delay = REFETCH_MIN;
            }
            self.delivered = true;
            let _ = self.out.try_send(Update::Credentials(creds));
        }

        fn do_calls(&mut self) {
            if self.need_owner {
                match self.name_owner() {
                    Ok(owner) => {
                        self.need_owner = false;
                        self.set_owner(owner);
                    }
                    Err(e) => {
                        log::warn!("GetNameOwner failed: {}; retrying in {RETRY:?}", describe(&e));
                        self.retry_at = Some(Instant::now() + RETRY);
                        return;
                    }
                }
            }
            if self.owner.is_none() {
                // Nothing to ask until someone owns the name (NameOwnerChanged).
                return;
            }
            if self.need_get {
                match self.call("GetJwtToken").and_then(|r| r.read2::<String, String>().map_err(Into::into)) {
                    Ok((token, server_url)) => {
                        self.need_get = false;
                        log::debug!("GetJwtToken: token {} bytes, server URL {server_url:?}", token.len());
                        if token.is_empty() {
                            self.need_fetch = true;
                        }
                        self.deliver(Credentials { token, server_url });
                    }
                    Err(e) => {
                        log::warn!("GetJwtToken failed: {}; retrying in {RETRY:?}", describe(&e));
                        self.retry_at = Some(Instant::now() + RETRY);
                        return;
                    }
                }
            }
            if self.need_fetch {
                match self.call("FetchJwtToken").and_then(|r| r.read1::<bool>().map_err(Into::into)) {
                    Ok(true) => {
                        log::debug!("FetchJwtToken accepted; the token follows as a signal");
                        self.need_fetch = false;
                    }
                    Ok(false) => {
                        log::warn!("FetchJwtToken refused; retrying in {RETRY:?}");
                        self.retry_at = Some(Instant::now() + RETRY);
                    }
                    Err(e) => {
                        log::warn!("FetchJwtToken failed: {}; retrying in {RETRY:?}", describe(&e));
                        self.retry_at = Some(Instant::now() + RETRY);
                    }
                }
            }
        }

        /// The unique name owning [`SERVICE_NAME`], `None` if nobody does.
        fn name_owner(&self) -> Result<Option<String>, dbus::Error> {
            let Some(conn) = &self.conn else {
                return Err(dbus::Error::new_failed("not connected to D-Bus"));
            };
            let r: Result<(String,), dbus::Error> = conn
                .with_proxy(BUS_NAME, BUS_PATH, CALL_TIMEOUT)
                .method_call(BUS_INTERFACE, "GetNameOwner", (SERVICE_NAME,));
            match r {
                Ok((owner,)) => Ok(Some(owner)),
                Err(e) if e.name() == Some("org.freedesktop.DBus.Error.NameHasNoOwner") => Ok(None),
                Err(e) => Err(e),
            }
        }

        /// Calls a method without arguments on the current owner, addressed by its unique name so
        /// that the answer can only come from it (a restarted service is a new owner, announced by
        /// `NameOwnerChanged`, and is asked again).
        fn call(&self, method: &str) -> Result<dbus::Message, dbus::Error> {
            let (Some(conn), Some(owner)) = (&self.conn, &self.owner) else {
                return Err(dbus::Error::new_failed("no owner of the auth service name"));
            };
            let msg = dbus::Message::new_method_call(owner.as_str(), OBJECT_PATH, INTERFACE, method)
                .map_err(|e| dbus::Error::new_failed(&e))?;
            let reply = conn.channel().send_with_reply_and_block(msg, CALL_TIMEOUT)?;
            if reply.sender().as_deref() != Some(owner.as_str()) {
                return Err(dbus::Error::new_failed("answer from another connection than the owner"));
            }
            Ok(reply)
        }
    }

    fn describe(e: &dbus::Error) -> String {
        format!("{} ({})", e.message().unwrap_or(""), e.name().unwrap_or("?"))
    }
}

#[cfg(all(test, feature = "dbus-auth"))]
mod tests;
