//! Outgoing frames in buffers of their own size.
//!
//! Small frames (replies, acks, errors) are encoded into a scratch buffer on the stack and
//! copied into a `Vec` of their length. Encoding them straight into a zeroed `MAX_FRAME_LEN`
//! `Vec` and truncating it cost an 8 KiB allocation per frame, which musl's allocator (the
//! shipped static build) answered on the upload path, an ack every 10 chunks, with an `mmap`,
//! page faults and an `munmap` each time.

use std::fmt::Display;

use mender_connect_core::{EncodeError, MAX_FRAME_LEN};

/// A frame of at most [`MAX_FRAME_LEN`] bytes; `what` names the frame in the log line of one
/// that cannot be encoded (`None` then; `format_args!` keeps the name free until then).
pub fn encode(
    what: &dyn Display,
    f: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
) -> Option<Vec<u8>> {
    let mut scratch = [0u8; MAX_FRAME_LEN];
    let written = f(&mut scratch);
    finish(what, written.map(|n| scratch[..n].to_vec()))
}

/// A frame encoded into a buffer of `cap` bytes, for frames sized to their data (a download
/// chunk, forwarded bytes, shell output): no copy.
pub fn encode_within(
    what: &dyn Display,
    cap: usize,
    f: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; cap];
    let written = f(&mut buf);
    finish(
        what,
        written.map(|n| {
            buf.truncate(n);
            buf
        }),
    )
}

fn finish(what: &dyn Display, frame: Result<Vec<u8>, EncodeError>) -> Option<Vec<u8>> {
    frame.map_err(|e| log::warn!("{what}: cannot encode frame: {e}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_as_long_as_what_was_written_and_failures_are_none() {
        let small = encode(&"test", |b| {
            b[..3].copy_from_slice(b"abc");
            Ok(3)
        })
        .unwrap();
        assert_eq!((small.as_slice(), small.capacity()), (&b"abc"[..], 3));
        let bulk = encode_within(&"test", 10_000, |b| {
            assert_eq!(b.len(), 10_000);
            Ok(9_000)
        })
        .unwrap();
        assert_eq!(bulk.len(), 9_000);
        assert!(encode(&"test", |_| Err(EncodeError::BufferTooSmall)).is_none());
        assert!(encode_within(&"test", 1, |_| Err(EncodeError::BufferTooSmall)).is_none());
    }
}
