//! File-transfer flow bookkeeping: the download send window and upload chunk/ack handling.
//!
//! Reference (mender-connect 2.1.0 `session/filetransfer.go`):
//! - **Download** (`get_file`, device sends): chunks of at most 4096 bytes
//!   (`FileTransferBufSize`), each with `offset` = bytes sent before it. The device may run
//!   `20 * 4096` bytes (`ACKSlidingWindowRecv`) ahead of the last acked offset, then waits for
//!   an `ack`. At end of file it sends an empty chunk with `offset` = total and waits until
//!   an ack reaches the total. Acks must carry `offset` as int64
//!   ("invalid offset data type: require int64"; missing: "ack message: offset property cannot
//!   be blank").
//! - **Upload** (`put_file`, device receives): answer `ack` `offset` 0, then each chunk's
//!   `offset` must be int64 ("invalid file chunk message: missing offset property") and equal
//!   the bytes written so far ("received unexpected chunk offset"). An empty chunk is EOF.
//!   After a batch of up to 10 chunks (`ACKSlidingWindowSend`) — or fewer if no more are
//!   queued — the device acks with the header of the last chunk of the batch.

use core::fmt;

use crate::msgpack::Int;

/// Largest chunk body (`FileTransferBufSize`).
pub const CHUNK_SIZE: usize = 4096;
/// Chunks the device may send beyond the last ack when downloading (`ACKSlidingWindowRecv`).
pub const DOWNLOAD_WINDOW_CHUNKS: u32 = 20;
/// Chunks the device processes before acking an upload (`ACKSlidingWindowSend`).
pub const UPLOAD_ACK_EVERY: u32 = 10;

/// A protocol violation by the peer during a transfer. `Display` gives the reference's texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// An ack without `offset`.
    AckOffsetMissing,
    /// An ack whose `offset` is not a Go int64 (`0xd3`).
    AckOffsetType,
    /// A chunk without an int64 `offset`.
    ChunkOffsetMissing,
    /// A chunk at an offset other than the bytes received so far.
    UnexpectedChunkOffset,
    /// A chunk after the end of the file.
    AfterEof,
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AckOffsetMissing => "ack message: offset property cannot be blank",
            Self::AckOffsetType => "invalid offset data type: require int64",
            Self::ChunkOffsetMissing => "invalid file chunk message: missing offset property",
            Self::UnexpectedChunkOffset => "received unexpected chunk offset",
            Self::AfterEof => "received file chunk after end of file",
        })
    }
}

impl core::error::Error for TransferError {}

/// Sender side of a download: how much may be sent now, and when it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadWindow {
    sent: i64,
    acked: i64,
    window: i64,
    eof_sent: bool,
}

impl Default for DownloadWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl DownloadWindow {
    /// The reference's window: 20 chunks of 4096 bytes.
    pub const fn new() -> Self {
        Self::with_window(DOWNLOAD_WINDOW_CHUNKS as i64 * CHUNK_SIZE as i64)
    }

    /// A window of `bytes` beyond the last ack.
    pub const fn with_window(bytes: i64) -> Self {
        Self { sent: 0, acked: 0, window: bytes, eof_sent: false }
    }

    /// Bytes sent so far (the `offset` of the next chunk).
    pub const fn offset(&self) -> i64 {
        self.sent
    }

    /// Last acked offset.
    pub const fn acked(&self) -> i64 {
        self.acked
    }

    /// How many bytes the next chunk may hold (0 = wait for an ack, or done).
    pub fn next_chunk_len(&self) -> usize {
        self.room().min(CHUNK_SIZE)
    }

    /// Bytes that may be sent before the next ack, in chunks of any size (0 = wait for an ack,
    /// or done).
    pub fn room(&self) -> usize {
        if self.eof_sent {
            return 0;
        }
        let room = self.acked.saturating_add(self.window).saturating_sub(self.sent);
        usize::try_from(room.max(0)).unwrap_or(usize::MAX)
    }

    /// Records a sent chunk of `len` bytes; returns the `offset` to put in its header.
    pub fn on_sent(&mut self, len: usize) -> i64 {
        let off = self.sent;
        self.sent = self.sent.saturating_add(i64::try_from(len).unwrap_or(i64::MAX));
        off
    }

    /// End of file reached: returns the `offset` (= total) for the empty EOF chunk.
    pub fn on_eof(&mut self) -> i64 {
        self.eof_sent = true;
        self.sent
    }

    /// True once the EOF chunk was sent.
    pub const fn eof_sent(&self) -> bool {
        self.eof_sent
    }

    /// Processes an `ack`'s `offset` prop as the reference does (must be int64; any value is
    /// taken as the new acked offset).
    pub fn on_ack(&mut self, offset: Option<Int>) -> Result<(), TransferError> {
        let off = offset.ok_or(TransferError::AckOffsetMissing)?;
        self.acked = off.as_go_int64().ok_or(TransferError::AckOffsetType)?;
        Ok(())
    }

    /// The transfer is complete: EOF sent and acked.
    pub const fn is_complete(&self) -> bool {
        self.eof_sent && self.acked >= self.sent
    }
}

/// What a valid upload chunk means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkOutcome {
    /// Write the body; the new total is `end`.
    Data {
        /// Offset after this chunk.
        end: i64,
    },
    /// End of file: finish after acking.
    Eof,
}

/// Receiver side of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UploadState {
    offset: i64,
    since_ack: u32,
    done: bool,
}

impl UploadState {
    /// Fresh state (the caller first sends `ack` with offset 0).
    pub const fn new() -> Self {
        Self { offset: 0, since_ack: 0, done: false }
    }

    /// Bytes accepted so far.
    pub const fn offset(&self) -> i64 {
        self.offset
    }

    /// True after the EOF chunk.
    pub const fn is_done(&self) -> bool {
        self.done
    }

    /// Validates a chunk's `offset` prop and body length.
    pub fn on_chunk(&mut self, offset: Option<Int>, len: usize) -> Result<ChunkOutcome, TransferError> {
        if self.done {
            return Err(TransferError::AfterEof);
        }
        let off = offset.and_then(Int::as_go_int64).ok_or(TransferError::ChunkOffsetMissing)?;
        if off != self.offset {
            return Err(TransferError::UnexpectedChunkOffset);
        }
        self.since_ack = self.since_ack.saturating_add(1);
        if len == 0 {
            self.done = true;
            return Ok(ChunkOutcome::Eof);
        }
        self.offset = self.offset.saturating_add(i64::try_from(len).unwrap_or(i64::MAX));
        Ok(ChunkOutcome::Data { end: self.offset })
    }

    /// Whether to ack now, after a processed chunk: at the end of a batch of
    /// [`UPLOAD_ACK_EVERY`] chunks, when no further chunk is already queued, or at EOF. The ack
    /// copies the header of the chunk just processed (see
    /// [`crate::filetransfer::encode_ack_of`]).
    pub fn should_ack(&mut self, more_queued: bool) -> bool {
        if self.since_ack == 0 {
            return false;
        }
        if self.done || !more_queued || self.since_ack >= UPLOAD_ACK_EVERY {
            self.since_ack = 0;
            return true;
        }
        false
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests {
    use super::*;

    pub(super) fn go(v: i64) -> Option<Int> {
        Some(Int::int64(v))
    }

    fn download_window_of_20_chunks() {
        let mut w = DownloadWindow::new();
        let mut chunks = 0;
        while w.next_chunk_len() > 0 {
            assert_eq!(w.on_sent(w.next_chunk_len()), chunks * 4096);
            chunks += 1;
        }
        assert_eq!(chunks, 20);
        assert_eq!(w.offset(), 81_920);
        // Server acks after 10 chunks (server.md §3.4): room for 10 more.
        w.on_ack(go(40_960)).unwrap();
        assert_eq!(w.next_chunk_len(), 4096);
        w.on_sent(1000);
        assert_eq!(w.on_eof(), 82_920);
        assert_eq!(w.next_chunk_len(), 0);
        assert!(!w.is_complete());
        w.on_ack(go(82_920)).unwrap();
        assert!(w.is_complete());
    }

    fn ack_offsets_must_be_go_int64() {
        let mut w = DownloadWindow::new();
        assert_eq!(w.on_ack(None), Err(TransferError::AckOffsetMissing));
        let mut buf = [0u8; 8];
        let mut wr = crate::msgpack::Writer::new(&mut buf);
        wr.uint16(10).unwrap();
        let n = wr.len();
        let Some(crate::msgpack::Value::Int(compact)) = crate::msgpack::Reader::new(&buf[..n]).value(0).ok()
        else {
            panic!("no int")
        };
        assert_eq!(w.on_ack(Some(compact)), Err(TransferError::AckOffsetType));
        assert_eq!(
            crate::selftest::display(&TransferError::AckOffsetType),
            "invalid offset data type: require int64"
        );
    }

    fn small_window_and_odd_chunks() {
        let mut w = DownloadWindow::with_window(5000);
        assert_eq!(w.next_chunk_len(), 4096);
        w.on_sent(4096);
        assert_eq!(w.next_chunk_len(), 904);
        w.on_sent(904);
        assert_eq!(w.next_chunk_len(), 0);
        // A stale ack (lower offset) is accepted as the reference does, and cannot grow room
        // beyond the window.
        w.on_ack(go(0)).unwrap();
        assert_eq!(w.next_chunk_len(), 0);
        w.on_ack(go(i64::MAX)).unwrap();
        assert_eq!(w.next_chunk_len(), 4096);
    }

    fn upload_sequence() {
        let mut u = UploadState::new();
        assert!(!u.should_ack(false));
        assert_eq!(u.on_chunk(go(0), 4096), Ok(ChunkOutcome::Data { end: 4096 }));
        assert!(!u.should_ack(true));
        assert_eq!(u.on_chunk(go(0), 10), Err(TransferError::UnexpectedChunkOffset));
        assert_eq!(u.on_chunk(None, 10), Err(TransferError::ChunkOffsetMissing));
        assert_eq!(u.on_chunk(go(4096), 4), Ok(ChunkOutcome::Data { end: 4100 }));
        assert!(u.should_ack(false));
        assert_eq!(u.on_chunk(go(4100), 0), Ok(ChunkOutcome::Eof));
        assert!(u.is_done());
        assert!(u.should_ack(true));
        assert_eq!(u.on_chunk(go(4100), 0), Err(TransferError::AfterEof));
    }

    fn upload_acks_every_ten_when_backlogged() {
        let mut u = UploadState::new();
        let mut acks = 0;
        for i in 0..25 {
            u.on_chunk(go(i * 10), 10).unwrap();
            if u.should_ack(true) {
                acks += 1;
            }
        }
        assert_eq!(acks, 2);
    }

    crate::selftests!(
        download_window_of_20_chunks,
        ack_offsets_must_be_go_int64,
        small_window_and_odd_chunks,
        upload_sequence,
        upload_acks_every_ten_when_backlogged,
    );
}

#[cfg(test)]
mod tests {
    use super::selftests::go;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn download_never_exceeds_window(acks in proptest::collection::vec(0i64..200_000, 0..40), reads in proptest::collection::vec(0usize..5000, 1..100)) {
            let mut w = DownloadWindow::new();
            let mut ack_iter = acks.into_iter();
            for r in reads {
                let n = w.next_chunk_len().min(r);
                prop_assert!(n <= CHUNK_SIZE);
                w.on_sent(n);
                // Whatever was sent fits in the window of the ack current at the time.
                prop_assert!(n == 0 || w.offset() <= w.acked() + 81_920);
                if w.next_chunk_len() == 0 {
                    if let Some(a) = ack_iter.next() {
                        // Acks in the protocol never exceed what was sent.
                        w.on_ack(go(a.min(w.offset()))).unwrap();
                    }
                }
            }
        }
    }
}
