//! Websocket keep-alive: when to send a ping and when the peer counts as gone.
//!
//! Reference (mender-connect 2.1.0 `connection/connection.go`): read deadline = now + 60 s
//! (`DefaultPingWait`) at connect and whenever a pong *or ping* arrives; a ping (payload = the
//! wait in seconds, `"60"`) every `0.9 * 60 s` = 54 s; write deadline 4 s. Data messages do not
//! extend the read deadline in the reference; [`KeepaliveConfig::data_extends_deadline`] makes
//! that optional.
//!
//! The agent's scheme ([`KeepaliveConfig::any_frame`]): every frame received extends the read
//! deadline and defers the next ping, so a busy or server-pinged link sends no pings of its own
//! (any frame proves the link as well as a pong). Its reader and writer run as separate tasks
//! sharing only the instant of the last frame received, so they use the pure
//! [`KeepaliveConfig::read_deadline`] and [`KeepaliveConfig::ping_due`] rather than one
//! [`Keepalive`].

use crate::time::Instant;

/// Keep-alive parameters, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Read deadline after connect / ping / pong (reference: 60 000).
    pub ping_wait_ms: u64,
    /// Interval between our pings (reference: 9/10 of `ping_wait_ms`).
    pub ping_period_ms: u64,
    /// Whether received data messages also extend the read deadline (reference: no).
    pub data_extends_deadline: bool,
    /// Whether a received frame defers the next ping by a period (reference: no, pings are
    /// periodic).
    pub received_defers_ping: bool,
}

impl KeepaliveConfig {
    /// The reference's scheme for a given wait: ping every 9/10 of it.
    pub const fn reference(ping_wait_ms: u64) -> Self {
        Self {
            ping_wait_ms,
            ping_period_ms: ping_wait_ms / 10 * 9,
            data_extends_deadline: false,
            received_defers_ping: false,
        }
    }

    /// The agent's scheme: any frame received extends the deadline and defers the next ping.
    pub const fn any_frame(ping_wait_ms: u64, ping_period_ms: u64) -> Self {
        Self { ping_wait_ms, ping_period_ms, data_extends_deadline: true, received_defers_ping: true }
    }

    /// The read deadline when the last frame that extends it arrived at `last_received`.
    pub const fn read_deadline(&self, last_received: Instant) -> Instant {
        last_received.add_millis(self.ping_wait_ms)
    }

    /// When the next ping is due, given the last frame received and the last ping sent.
    pub fn ping_due(&self, last_received: Instant, last_ping: Instant) -> Instant {
        let from = if self.received_defers_ping { last_received.max(last_ping) } else { last_ping };
        from.add_millis(self.ping_period_ms)
    }

    /// The ping payload the reference sends: the wait in whole seconds, in decimal.
    pub fn ping_payload<'b>(&self, buf: &'b mut [u8; 20]) -> &'b [u8] {
        let mut v = self.ping_wait_ms / 1000;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        &buf[i..]
    }
}

impl Default for KeepaliveConfig {
    /// The reference: 60 s wait, 54 s ping period.
    fn default() -> Self {
        Self::reference(60_000)
    }
}

/// What the caller must do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepaliveAction {
    /// Nothing until [`Keepalive::next_wakeup`].
    Idle,
    /// Send a websocket ping now (payload: [`Keepalive::ping_payload`]).
    SendPing,
    /// The read deadline passed: close the connection and reconnect.
    TimedOut,
}

/// Keep-alive state of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keepalive {
    cfg: KeepaliveConfig,
    next_ping: Instant,
    read_deadline: Instant,
}

impl Keepalive {
    /// State for a connection established at `now`.
    pub const fn new(cfg: KeepaliveConfig, now: Instant) -> Self {
        Self {
            cfg,
            next_ping: now.add_millis(cfg.ping_period_ms),
            read_deadline: now.add_millis(cfg.ping_wait_ms),
        }
    }

    fn received(&mut self, now: Instant) {
        if self.cfg.received_defers_ping {
            self.next_ping = self.next_ping.max(now.add_millis(self.cfg.ping_period_ms));
        }
    }

    /// A pong arrived.
    pub fn on_pong(&mut self, now: Instant) {
        self.read_deadline = self.cfg.read_deadline(now);
        self.received(now);
    }

    /// A ping arrived (answer it with a pong echoing its payload).
    pub fn on_ping(&mut self, now: Instant) {
        self.read_deadline = self.cfg.read_deadline(now);
        self.received(now);
    }

    /// A data message arrived.
    pub fn on_data(&mut self, now: Instant) {
        if self.cfg.data_extends_deadline {
            self.read_deadline = self.cfg.read_deadline(now);
        }
        self.received(now);
    }

    /// Checks the deadlines. A returned `SendPing` is considered done: the next ping is
    /// scheduled one period later.
    pub fn poll(&mut self, now: Instant) -> KeepaliveAction {
        if now >= self.read_deadline {
            return KeepaliveAction::TimedOut;
        }
        if now >= self.next_ping {
            self.next_ping = now.add_millis(self.cfg.ping_period_ms.max(1));
            return KeepaliveAction::SendPing;
        }
        KeepaliveAction::Idle
    }

    /// The earliest instant at which [`Keepalive::poll`] can return something new.
    pub fn next_wakeup(&self) -> Instant {
        self.next_ping.min(self.read_deadline)
    }

    /// The current read deadline.
    pub const fn read_deadline(&self) -> Instant {
        self.read_deadline
    }

    /// The ping payload the reference sends: the wait in whole seconds, in decimal.
    pub fn ping_payload<'b>(&self, buf: &'b mut [u8; 20]) -> &'b [u8] {
        self.cfg.ping_payload(buf)
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    use crate::selftest::t;

    fn reference_schedule() {
        let mut k = Keepalive::new(KeepaliveConfig::default(), t(0));
        assert_eq!(k.next_wakeup(), t(54_000));
        assert_eq!(k.poll(t(53_999)), KeepaliveAction::Idle);
        assert_eq!(k.poll(t(54_000)), KeepaliveAction::SendPing);
        assert_eq!(k.poll(t(54_001)), KeepaliveAction::Idle);
        assert_eq!(k.next_wakeup(), t(60_000));
        // No pong: deadline at 60 s.
        assert_eq!(k.poll(t(60_000)), KeepaliveAction::TimedOut);
    }

    fn pong_and_ping_extend_deadline_data_does_not_by_default() {
        let mut k = Keepalive::new(KeepaliveConfig::default(), t(0));
        k.on_data(t(50_000));
        assert_eq!(k.read_deadline(), t(60_000));
        k.on_pong(t(55_000));
        assert_eq!(k.read_deadline(), t(115_000));
        k.on_ping(t(100_000));
        assert_eq!(k.read_deadline(), t(160_000));
        let mut k = Keepalive::new(
            KeepaliveConfig { data_extends_deadline: true, ..KeepaliveConfig::default() },
            t(0),
        );
        k.on_data(t(50_000));
        assert_eq!(k.read_deadline(), t(110_000));
        // Pings stay periodic in the reference's scheme.
        assert_eq!(k.poll(t(54_000)), KeepaliveAction::SendPing);
    }

    /// The agent's scheme: any frame extends the deadline and defers the ping; an idle link
    /// pings once a period and a pong answers it.
    fn any_frame_defers_ping_and_extends_deadline() {
        let cfg = KeepaliveConfig::any_frame(60_000, 54_000);
        let mut k = Keepalive::new(cfg, t(0));
        k.on_data(t(30_000));
        assert_eq!(k.read_deadline(), t(90_000));
        assert_eq!(k.poll(t(54_000)), KeepaliveAction::Idle);
        assert_eq!(k.next_wakeup(), t(84_000));
        assert_eq!(k.poll(t(84_000)), KeepaliveAction::SendPing);
        k.on_pong(t(84_100));
        assert_eq!(k.read_deadline(), t(144_100));
        assert_eq!(k.next_wakeup(), t(138_100));
        // The pure forms the agent's reader and writer use.
        assert_eq!(cfg.read_deadline(t(30_000)), t(90_000));
        assert_eq!(cfg.ping_due(t(30_000), t(0)), t(84_000));
        assert_eq!(cfg.ping_due(t(30_000), t(84_000)), t(138_000));
        let reference = KeepaliveConfig::default();
        assert_eq!(reference.ping_due(t(30_000), t(0)), t(54_000));
    }

    fn payload_is_wait_seconds() {
        let mut buf = [0u8; 20];
        assert_eq!(Keepalive::new(KeepaliveConfig::default(), t(0)).ping_payload(&mut buf), b"60");
        assert_eq!(Keepalive::new(KeepaliveConfig::reference(500), t(0)).ping_payload(&mut buf), b"0");
        let max = KeepaliveConfig { ping_wait_ms: u64::MAX, ping_period_ms: 1, ..KeepaliveConfig::default() };
        assert_eq!(Keepalive::new(max, t(0)).ping_payload(&mut buf), b"18446744073709551");
    }

    fn zero_period_does_not_spin_forever() {
        let mut k = Keepalive::new(
            KeepaliveConfig { ping_wait_ms: 10, ping_period_ms: 0, ..KeepaliveConfig::default() },
            t(0),
        );
        assert_eq!(k.poll(t(0)), KeepaliveAction::SendPing);
        assert_eq!(k.poll(t(0)), KeepaliveAction::Idle);
        assert_eq!(k.poll(t(1)), KeepaliveAction::SendPing);
    }

    crate::selftests!(
        reference_schedule,
        pong_and_ping_extend_deadline_data_does_not_by_default,
        any_frame_defers_ping_and_extends_deadline,
        payload_is_wait_seconds,
        zero_period_does_not_spin_forever,
    );
}
