//! mender-connect-core: the sans-IO, `no_std`, allocation-free protocol core of
//! mender-connect-rs.
//!
//! ```text
//! +--------------------------------------------------------------------------+
//! | agent (std, smol/async-io): websocket + TLS, D-Bus auth, ptys, files,    |
//! |   sockets, mender CLI, clocks, randomness, config, logging               |
//! |                                                                          |
//! |   frames in/out        now: Instant         random u64                   |
//! +--------------------------------------------------------------------------+
//!         |  ^                  |                    |
//!         v  |                  v                    v
//! +--------------------------------------------------------------------------+
//! | core (this crate): no_std, no alloc, no unsafe, no I/O                   |
//! |                                                                          |
//! | device     engine + shell, port-forward and file-transfer tables as one  |
//! |            object: the device side of the protocol, bytes and now in     |
//! | engine     link + control sessions; other protocols at its seam          |
//! | link       link supervision: dial, backoff, token re-read, grace         |
//! | control_sessions  session table, handshake, idle ping/timeout, caps      |
//! | frame      ProtoMsg decode (borrowed views) / encode (caller buffers)    |
//! | msgpack    bounded zero-copy reader, Go-width writer (on rmp)            |
//! | control, shell, filetransfer, portforward, menderclient: typed messages  |
//! | sessions   session ids, expiry rule (the reference's, settled once)      |
//! | shells     shell session table: limits, expiry, health check             |
//! | transfer   file-transfer chunk/ack window bookkeeping                    |
//! | transfers  file-transfer request state per session: uploads, downloads   |
//! | forwards   port-forward connection table: limits, acks, timeouts         |
//! | rate       per-minute Tx/Rx byte counters (moving average)               |
//! | backoff    reconnect delay, full jitter, reset after stable period       |
//! | keepalive  websocket ping period / read deadline                         |
//! | time       Instant (monotonic ms), supplied by the caller                |
//! +--------------------------------------------------------------------------+
//! ```
//!
//! The core never touches sockets, files, clocks or randomness: callers hand it bytes, the
//! current [`time::Instant`] and random numbers, and act on what it returns. Everything is
//! fixed-capacity (const generics / `heapless`), and no peer input can make it panic.
//!
//! Start with [`frame`] (decoding a websocket message, encoding a reply), then the protocol
//! modules for typed messages.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod control;
pub mod control_sessions;
pub mod device;
pub mod engine;
pub mod error;
pub mod filetransfer;
pub mod forwards;
pub mod frame;
pub mod keepalive;
pub mod link;
pub mod menderclient;
pub mod msgpack;
pub mod portforward;
pub mod rate;
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftest;
pub mod sessions;
pub mod shell;
pub mod shells;
pub mod time;
pub mod transfer;
pub mod transfers;

pub use error::{DecodeError, EncodeError};
pub use frame::{Frame, FrameOut, Header, MAX_FRAME_LEN, Prop, PropValue, Props, Proto};

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod seed_corpus_tests;

#[cfg(test)]
pub(crate) mod test_util {
    use std::vec::Vec;

    /// Hex to bytes; whitespace and `|` separators are ignored so vectors can be laid out by field.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        assert!(digits.len() % 2 == 0, "odd hex length");
        digits
            .chunks(2)
            .map(|p| {
                let v = |c: u8| (c as char).to_digit(16).map(|d| d as u8).unwrap_or(0);
                v(p[0]) << 4 | v(p[1])
            })
            .collect()
    }
}
