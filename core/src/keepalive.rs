//! Websocket keep-alive: when to send a ping and when the peer counts as gone.
//!
//! Reference (mender-connect 2.1.0 `connection/connection.go`): read deadline = now + 60 s
//! (`DefaultPingWait`) at connect and whenever a pong *or ping* arrives; a ping (payload = the
//! wait in seconds, `"60"`) every `0.9 * 60 s` = 54 s; write deadline 4 s. Data messages do not
//! extend the read deadline in the reference; [`KeepaliveConfig::data_extends_deadline`] makes
//! that optional.

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
}

impl KeepaliveConfig {
    /// The reference's scheme for a given wait: ping every 9/10 of it.
    pub const fn reference(ping_wait_ms: u64) -> Self {
        Self { ping_wait_ms, ping_period_ms: ping_wait_ms / 10 * 9, data_extends_deadline: false }
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
        Self { cfg, next_ping: now.add_millis(cfg.ping_period_ms), read_deadline: now.add_millis(cfg.ping_wait_ms) }
    }

    /// A pong arrived.
    pub fn on_pong(&mut self, now: Instant) {
        self.read_deadline = now.add_millis(self.cfg.ping_wait_ms);
    }

    /// A ping arrived (answer it with a pong echoing its payload).
    pub fn on_ping(&mut self, now: Instant) {
        self.read_deadline = now.add_millis(self.cfg.ping_wait_ms);
    }

    /// A data message arrived.
    pub fn on_data(&mut self, now: Instant) {
        if self.cfg.data_extends_deadline {
            self.read_deadline = now.add_millis(self.cfg.ping_wait_ms);
        }
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
        let mut v = self.cfg.ping_wait_ms / 1000;
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

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

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
        let mut k = Keepalive::new(KeepaliveConfig { data_extends_deadline: true, ..KeepaliveConfig::default() }, t(0));
        k.on_data(t(50_000));
        assert_eq!(k.read_deadline(), t(110_000));
    }

    fn payload_is_wait_seconds() {
        let mut buf = [0u8; 20];
        assert_eq!(Keepalive::new(KeepaliveConfig::default(), t(0)).ping_payload(&mut buf), b"60");
        assert_eq!(Keepalive::new(KeepaliveConfig::reference(500), t(0)).ping_payload(&mut buf), b"0");
        let max = KeepaliveConfig { ping_wait_ms: u64::MAX, ping_period_ms: 1, data_extends_deadline: false };
        assert_eq!(Keepalive::new(max, t(0)).ping_payload(&mut buf), b"18446744073709551");
    }

    fn zero_period_does_not_spin_forever() {
        let mut k = Keepalive::new(KeepaliveConfig { ping_wait_ms: 10, ping_period_ms: 0, data_extends_deadline: false }, t(0));
        assert_eq!(k.poll(t(0)), KeepaliveAction::SendPing);
        assert_eq!(k.poll(t(0)), KeepaliveAction::Idle);
        assert_eq!(k.poll(t(1)), KeepaliveAction::SendPing);
    }

    crate::selftests!(
        reference_schedule,
        pong_and_ping_extend_deadline_data_does_not_by_default,
        payload_is_wait_seconds,
        zero_period_does_not_spin_forever,
    );
}
