//! The file-transfer (`proto` 2) request state of every session as a sans-IO state machine
//! (quinn-proto's shape).
//!
//! [`TransferTable`] owns every protocol decision about `stat`, `get_file` and `put_file`: which
//! request a session may start (one transfer at a time per session, "another file transfer is in
//! progress"), an upload's chunk sequence (offsets, the end-of-file chunk, acks every
//! [`crate::transfer::UPLOAD_ACK_EVERY`] chunks with the header of the last chunk of the batch, the size and rate
//! limits), a download's ack window (never more than the window beyond the last ack, the empty
//! end-of-file chunk, the final ack), which frame answers what, with the reference's texts, and
//! cancellation when a session ends or the link drops. It opens, reads and writes no file: the
//! caller (the agent's `proto/filetransfer.rs`, or a device with its own storage) executes what
//! it asks for and reports back.
//!
//! ```text
//!  handle_frame(frame, now, reply)                            (server frames, proto 2)
//!    -> Delivered::Stat / OpenUpload / OpenDownload / Write   (borrowed: act at once)
//!  handle_upload_opened / handle_download_opened              (executor: open done)
//!  handle_written / handle_committed / handle_read            (executor: I/O done)
//!  handle_failed(sid, text, code, buf)                        (executor: any step failed)
//!  handle_session_ended / handle_link_down / handle_stop_all  (sessions, link)
//!  handle_timeout(now) at poll_timeout()                      (clock: open/read deadlines)
//!        |
//!        v
//!  poll_action(buf) -> Read, Commit, Abort, TimedOut, Send (a frame encoded into buf)
//! ```
//!
//! Frames about the message being handled are encoded into the `reply` buffer of
//! [`TransferTable::handle_frame`]; a download chunk into the buffer of
//! [`TransferTable::handle_read`]; an executor's error (whose text it composes: paths, errnos)
//! into the buffer of [`TransferTable::handle_failed`]. Everything else comes out of
//! [`TransferTable::poll_action`]; drain it until `None` after every `handle_*`.
//!
//! Reference (mender-connect 2.1.0 `session/filetransfer.go`, `limits/filetransfer/limits.go`);
//! the flow arithmetic is [`crate::transfer`]'s:
//! - a malformed message "malformed request parameters: {e}", a blank path "invalid request
//!   parameters: path: cannot be blank.", an unknown type "session: filetransfer message type
//!   '{typ}' not supported", a chunk or ack outside a transfer "no file transfer in progress",
//!   each answered with the message's header (`typ` `error`, `msgtype` the message's);
//! - errors of a running transfer answer the request's header (an upload), or the latest ack's
//!   (a download: the request's until the first ack);
//! - a peer `error` ends the transfer silently; an `ack` during an upload ends it with
//!   "received unexpected message type 'ack' during file upload", anything but an `ack` during
//!   a download with "received unexpected message type '{typ}'; expected 'ack'";
//! - `Limits.FileTransfer.Counters` (device-wide per-minute byte averages, [`crate::rate`]) and
//!   `MaxFileSize` apply only with `Limits.Enabled` ([`TransferConfig::enforce`]).
//!
//! Ours: stored headers are bounded ([`HEADER_CAP`]): a request whose header does not fit is
//! answered with its `sid` and `typ` but without its props; a fixed store ([`FixedTransfers`])
//! holds at most `N` transfers ([`TABLE_FULL`] beyond), a growable one as many as there are
//! sessions. A download's open and each read may have a deadline
//! ([`TransferConfig::open_timeout_ms`], [`TransferConfig::read_timeout_ms`]; the reference has
//! none and blocks on a FIFO forever): when one passes, [`Action::TimedOut`] asks the executor to
//! interrupt what blocks and answer with its text (which names the path).

use core::fmt;

use heapless::{Deque, Vec};

use crate::control_sessions::Id;
use crate::error::EncodeError;
use crate::filetransfer::{self as ft, FileTransferMessage, GetFile, StatFile, UploadRequest};
use crate::frame::{Frame, FrameOut, Prop, Props};
use crate::rate::RateCounters;
use crate::time::Instant;
use crate::transfer::{
    CHUNK_SIZE, ChunkOutcome, DOWNLOAD_WINDOW_CHUNKS, DownloadWindow, TransferError, UploadState,
};

/// A transfer's request (or last ack) is refused while another runs in the session.
pub const ERR_IN_PROGRESS: &str = "another file transfer is in progress";
/// A chunk or ack outside a transfer.
pub const ERR_NOT_IN_PROGRESS: &str = "no file transfer in progress";
/// `stat`, `get_file` or `put_file` without a path.
pub const ERR_BLANK_PATH: &str = "invalid request parameters: path: cannot be blank.";
/// A rate limit reached (the reference says "transmitted" for both directions).
pub const ERR_TX_LIMIT: &str = "transmitted bytes limit exhausted";
/// A request while the table holds `N` transfers.
pub const TABLE_FULL: &str = "too many file transfers in progress on this device";

/// Largest stored header (request, last ack, an upload's ack-to-be): sid, `typ` and props.
pub const HEADER_CAP: usize = 384;

/// Buffer size [`TransferTable::poll_action`] needs: an error answering a stored header with
/// the longest of the table's own texts, or an ack copying one.
pub const POLL_BUF_LEN: usize = HEADER_CAP + 192;

/// Action-queue length a table of `n` transfers needs: the worst single call cancels every
/// transfer, or queues an abort and a read.
pub const fn queue_len(n: usize) -> usize {
    n + 2
}

/// The reference's limits are off and its window and chunk size apply by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferConfig {
    /// `Limits.Enabled`: the size and rate limits below apply only then.
    pub enforce: bool,
    /// `Limits.FileTransfer.MaxFileSize`: an upload fails once its offset reaches it.
    pub max_file_size: Option<u64>,
    /// `Counters.MaxBytesTxPerMinute` (0 = unlimited).
    pub tx_limit: u64,
    /// `Counters.MaxBytesRxPerMinute` (0 = unlimited).
    pub rx_limit: u64,
    /// Largest download chunk the executor is asked to read.
    pub chunk_len: usize,
    /// Download bytes in flight beyond the last ack.
    pub window_bytes: i64,
    /// How long the executor may take to open and check a download (`None`: as long as it
    /// likes, as the reference, which blocks on a FIFO forever).
    pub open_timeout_ms: Option<u64>,
    /// How long a download's read may take.
    pub read_timeout_ms: Option<u64>,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            enforce: false,
            max_file_size: None,
            tx_limit: 0,
            rx_limit: 0,
            chunk_len: CHUNK_SIZE,
            window_bytes: DOWNLOAD_WINDOW_CHUNKS as i64 * CHUNK_SIZE as i64,
            open_timeout_ms: None,
            read_timeout_ms: None,
        }
    }
}

/// A failure the table decides itself after the message that caused it was handled. `Display`
/// is the reference's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The Tx limit is reached (before or during a download).
    TxLimit,
    /// The Rx limit is reached before an upload starts.
    RxLimit,
    /// The Rx limit or `MaxFileSize` is reached during an upload.
    WriteLimit,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TxLimit | Self::RxLimit => f.write_str(ERR_TX_LIMIT),
            Self::WriteLimit => write!(f, "failed to write file chunk: {ERR_TX_LIMIT}"),
        }
    }
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Read at most `max` bytes of session `sid`'s download; answer with
    /// [`TransferTable::handle_read`] (empty: end of file) or [`TransferTable::handle_failed`].
    Read {
        /// Session id.
        sid: Id,
        /// Largest read.
        max: usize,
    },
    /// Every chunk of `sid`'s upload is written: give the file its owner and mode and put it in
    /// place; answer with [`TransferTable::handle_committed`] or [`TransferTable::handle_failed`].
    Commit {
        /// Session id.
        sid: Id,
    },
    /// Session `sid`'s transfer is over without success: close its file, remove an upload's
    /// temporary file. No answer.
    Abort {
        /// Session id.
        sid: Id,
    },
    /// Session `sid`'s download did not finish `step` in time
    /// ([`TransferConfig::open_timeout_ms`], [`TransferConfig::read_timeout_ms`]): stop it
    /// (interrupt what blocks) and answer with [`TransferTable::handle_failed`] (the text names
    /// the path: the executor's).
    TimedOut {
        /// Session id.
        sid: Id,
        /// What took too long.
        step: Step,
    },
    /// Send the first `len` bytes of the buffer given to [`TransferTable::poll_action`].
    Send {
        /// Frame length.
        len: usize,
    },
}

/// What a message asks of the executor. Data is borrowed from the message: act on it before the
/// next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivered<'a> {
    /// Handled here; if `reply` is `Some(n)`, send the first `n` bytes of the reply buffer.
    Handled {
        /// Reply length.
        reply: Option<usize>,
    },
    /// A `stat` of `path`: answer `request` with `file_info` ([`ft::encode_file_info`]) or an
    /// error ([`ft::encode_error_reply`]). Runs beside a transfer.
    Stat {
        /// The request (its header for an error answer).
        request: Frame<'a>,
        /// The path, not blank.
        path: &'a str,
    },
    /// A `put_file`: check `path` against the policy (the Rx limit among the checks:
    /// [`TransferTable::rx_limited`]) and open a temporary file for it, then
    /// [`TransferTable::handle_upload_opened`] or [`TransferTable::handle_failed`].
    OpenUpload {
        /// Session id.
        sid: &'a str,
        /// The request.
        request: UploadRequest<'a>,
        /// Its path, not blank.
        path: &'a str,
    },
    /// A `put_file` in a session whose transfer runs: check `path` against the policy as for
    /// [`Delivered::OpenUpload`] but open nothing, and answer `request` with the failure or,
    /// when the checks pass, with [`ERR_IN_PROGRESS`] ([`ft::encode_error_reply`]). Nothing
    /// changes here.
    CheckUpload {
        /// The request (its header for the answer).
        request: Frame<'a>,
        /// Its body.
        upload: UploadRequest<'a>,
        /// Its path, not blank.
        path: &'a str,
    },
    /// A `get_file`: check and open `path`, then [`TransferTable::handle_download_opened`] or
    /// [`TransferTable::handle_failed`].
    OpenDownload {
        /// Session id.
        sid: &'a str,
        /// The path, not blank.
        path: &'a str,
    },
    /// Write `bytes` at `offset` of the upload's file (in order), then
    /// [`TransferTable::handle_written`] or [`TransferTable::handle_failed`].
    Write {
        /// Session id.
        sid: &'a str,
        /// Where the bytes go.
        offset: i64,
        /// The chunk's body.
        bytes: &'a [u8],
    },
    /// The peer sent an `error` (its text, if it decoded): its transfer, if any, ended without
    /// an answer. For the device's log.
    PeerError {
        /// Session id.
        sid: &'a str,
        /// The peer's text.
        err: Option<&'a str>,
    },
}

/// A frame's header stored for a later answer: an encoded frame with an empty body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stored(Vec<u8, HEADER_CAP>);

impl Stored {
    fn of(frame: &Frame<'_>) -> Self {
        let h = &frame.header;
        let mut buf = [0u8; HEADER_CAP];
        let out = FrameOut { proto: h.proto, typ: h.typ, sid: h.sid, base_props: h.props, ..FrameOut::EMPTY };
        let n = out.encode(&mut buf).or_else(|_| {
            // Props too large to keep: answered without them but the `offset` an ack must carry.
            let offset = h.props.get_int(ft::PROP_OFFSET).and_then(crate::msgpack::Int::as_go_int64);
            let kept = offset.map(|o| [Prop::int64(ft::PROP_OFFSET, o)]);
            let props: &[Prop<'_>] = kept.as_ref().map_or(&[], |p| &p[..]);
            FrameOut { base_props: Props::EMPTY, props, ..out }.encode(&mut buf)
        });
        let mut v = Vec::new();
        if let Ok(n) = n {
            let _ = v.extend_from_slice(&buf[..n]);
        }
        Self(v)
    }

    fn frame(&self) -> Option<Frame<'_>> {
        Frame::decode(&self.0).ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Upload {
    /// The executor is opening the temporary file.
    Opening,
    /// Receiving chunks.
    Receiving {
        state: UploadState,
        /// Chunks handed out for writing and not yet reported written.
        writing: u32,
        /// The header of the chunk whose ack is due once every write before it is done (the
        /// newest: its ack covers the older).
        ack: Option<Stored>,
    },
    /// The executor is committing the file; the ack copies the end-of-file chunk.
    Committing { ack: Stored },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Download {
    /// The executor is opening and checking the file.
    Opening,
    /// Sending chunks.
    Sending {
        window: DownloadWindow,
        /// A read is out.
        reading: bool,
    },
}

// A fixed table holds the largest variant in every slot anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Upload(Upload),
    Download(Download),
}

/// A download step with a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Opening and checking the file.
    Open,
    /// One read.
    Read,
}

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// `put_file`: the device receives.
    Upload,
    /// `get_file`: the device sends.
    Download,
}

/// One transfer's state (opaque: kept by a [`TransferStore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    sid: Id,
    state: State,
    /// What errors answer: the request, then (a download) the latest ack.
    answer: Stored,
    /// When the executor's open or read is overdue.
    deadline: Option<(Instant, Step)>,
}

impl Slot {
    fn direction(&self) -> Direction {
        match self.state {
            State::Upload(_) => Direction::Upload,
            State::Download(_) => Direction::Download,
        }
    }

    /// File bytes moved so far.
    fn bytes(&self) -> u64 {
        let n = match &self.state {
            State::Upload(Upload::Receiving { state, .. }) => state.offset(),
            State::Download(Download::Sending { window, .. }) => window.offset(),
            _ => 0,
        };
        u64::try_from(n).unwrap_or(0)
    }
}

/// A running transfer, as the device's status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferInfo<'a> {
    /// Session id.
    pub sid: &'a str,
    /// Which way.
    pub direction: Direction,
    /// File bytes moved so far.
    pub bytes: u64,
}

// Headers travel in the queue because their transfer may be over by the time they are
// encoded (an ack after the commit, an error after the abort); boxing needs an allocator.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pending {
    Read(Id),
    TimedOut(Id, Step),
    Commit(Id),
    Abort(Id),
    /// Encode the initial ack (`offset` 0) of `sid`'s upload.
    Ack0(Id),
    /// Encode an ack copying this chunk header.
    AckOf(Stored),
    /// Encode an error answering this header.
    Error(Stored, Failure),
}

/// A queued action (opaque: kept by a [`TransferStore`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued(Pending);

/// Where a [`TransferTable`] keeps its transfers and queued actions: fixed capacities
/// ([`FixedTransfers`]) on a microcontroller, or storage that grows on demand (a slot holds two
/// stored headers, about 1.8 KB: a fixed table sized for a Linux device's sessions would hold
/// it all from the start, and move it wherever the device moves).
pub trait TransferStore {
    /// The transfers.
    fn slots(&self) -> &[Slot];
    /// The transfers, mutable.
    fn slots_mut(&mut self) -> &mut [Slot];
    /// Adds one; false if full.
    fn push_slot(&mut self, s: Slot) -> bool;
    /// Removes the `i`th; the last takes its place.
    fn swap_remove_slot(&mut self, i: usize) -> Slot;
    /// Queues an action; false if full (never, with room for [`queue_len`] of the slots).
    fn push_queued(&mut self, q: Queued) -> bool;
    /// The oldest queued action.
    fn pop_queued(&mut self) -> Option<Queued>;
}

/// Inline storage for up to `N` transfers and `Q` (≥ [`queue_len`]`(N)`) queued actions.
#[derive(Clone, Debug, Default)]
pub struct FixedTransfers<const N: usize, const Q: usize> {
    slots: Vec<Slot, N>,
    queue: Deque<Queued, Q>,
}

impl<const N: usize, const Q: usize> FixedTransfers<N, Q> {
    /// Empty.
    pub const fn new() -> Self {
        const { assert!(Q >= queue_len(N), "the action queue must hold N + 2 actions") };
        Self { slots: Vec::new(), queue: Deque::new() }
    }
}

impl<const N: usize, const Q: usize> TransferStore for FixedTransfers<N, Q> {
    fn slots(&self) -> &[Slot] {
        &self.slots
    }
    fn slots_mut(&mut self) -> &mut [Slot] {
        &mut self.slots
    }
    fn push_slot(&mut self, s: Slot) -> bool {
        self.slots.push(s).is_ok()
    }
    fn swap_remove_slot(&mut self, i: usize) -> Slot {
        self.slots.swap_remove(i)
    }
    fn push_queued(&mut self, q: Queued) -> bool {
        self.queue.push_back(q).is_ok()
    }
    fn pop_queued(&mut self) -> Option<Queued> {
        self.queue.pop_front()
    }
}

/// The file-transfer state of every session, kept in `St`.
#[derive(Clone, Debug)]
pub struct TransferTable<St> {
    cfg: TransferConfig,
    st: St,
    rates: RateCounters,
}

/// A table of at most `N` transfers (`Q` ≥ [`queue_len`]`(N)` queued actions), inline.
pub type FixedTransferTable<const N: usize, const Q: usize> = TransferTable<FixedTransfers<N, Q>>;

/// A table for two transfers at once, what a small device serves.
pub type DefaultTransferTable = FixedTransferTable<2, { queue_len(2) }>;

fn id(sid: &str) -> Id {
    let mut id = Id::new();
    // Session ids were bounded by the control sessions (`MAX_ID_LEN`) before they get here.
    let _ = id.push_str(sid);
    id
}

fn reply(buf: &mut [u8], f: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>) -> Option<usize> {
    f(buf).ok()
}

/// An error answering `request`, its text written by `text`.
fn error_reply(buf: &mut [u8], request: &Frame<'_>, text: fmt::Arguments<'_>) -> Option<usize> {
    crate::control_sessions::encode_with_text(buf, text, |b, t| ft::encode_error_reply(b, request, t)).ok()
}

impl<const N: usize, const Q: usize> FixedTransferTable<N, Q> {
    /// An empty table; the rate counters start at `now`.
    pub const fn new(cfg: TransferConfig, now: Instant) -> Self {
        Self::with_store(cfg, FixedTransfers::new(), now)
    }
}

impl<St: TransferStore> TransferTable<St> {
    /// An empty table keeping its state in `st` (empty); the rate counters start at `now`.
    pub const fn with_store(cfg: TransferConfig, st: St, now: Instant) -> Self {
        Self { cfg, st, rates: RateCounters::new(now) }
    }

    /// The settings.
    pub const fn config(&self) -> &TransferConfig {
        &self.cfg
    }

    /// Device-wide byte counters, as of the last call that had the time.
    pub const fn rates(&self) -> &RateCounters {
        &self.rates
    }

    /// Brings the rate counters up to `now`.
    pub fn poll_rates(&mut self, now: Instant) {
        self.rates.poll(now);
    }

    /// The rate counters as they stand at `now` (for a status report, which has the device
    /// only to read).
    pub fn rates_at(&self, now: Instant) -> RateCounters {
        let mut r = self.rates.clone();
        r.poll(now);
        r
    }

    /// Running transfers.
    pub fn iter(&self) -> impl Iterator<Item = TransferInfo<'_>> {
        self.st.slots().iter().map(|s| TransferInfo {
            sid: &s.sid,
            direction: s.direction(),
            bytes: s.bytes(),
        })
    }

    /// Whether the Rx limit refuses uploads at `now` (for an executor that checks it among its
    /// own checks, in the reference's order).
    pub fn rx_limited(&self, now: Instant) -> bool {
        self.cfg.enforce && !self.rates_at(now).rx.below(self.cfg.rx_limit)
    }

    /// Whether session `sid` has a transfer running (its requests are refused).
    pub fn is_busy(&self, sid: &str) -> bool {
        self.slot(sid).is_some()
    }

    fn slot(&self, sid: &str) -> Option<usize> {
        self.st.slots().iter().position(|s| s.sid == sid)
    }

    fn push(&mut self, q: Pending) {
        // Sized for the worst single call (`queue_len`); the caller drains after each.
        let _ = self.st.push_queued(Queued(q));
    }

    fn remove(&mut self, i: usize) -> Slot {
        self.st.swap_remove_slot(i)
    }

    /// Ends the transfer at `i` with `failure` answered to its stored header; the executor
    /// aborts it.
    fn fail(&mut self, i: usize, failure: Failure) {
        let slot = self.remove(i);
        self.push(Pending::Abort(slot.sid));
        self.push(Pending::Error(slot.answer, failure));
    }

    /// Counts `n` bytes moved `way` (a download's are sent, an upload's received); false once
    /// that direction's limit is reached (never with limits off).
    fn within_rate(&mut self, way: Direction, n: u64, now: Instant) -> bool {
        if !self.cfg.enforce {
            return true;
        }
        self.rates.poll(now);
        let (counter, limit) = match way {
            Direction::Download => (&mut self.rates.tx, self.cfg.tx_limit),
            Direction::Upload => (&mut self.rates.rx, self.cfg.rx_limit),
        };
        counter.add(n);
        counter.below(limit)
    }

    /// `BelowMaxAllowedFileSize`: the reference fails once the offset reaches the limit.
    fn below_max_size(&self, offset: i64) -> bool {
        match (self.cfg.enforce, self.cfg.max_file_size, u64::try_from(offset)) {
            (true, Some(max), Ok(off)) => off < max,
            _ => true,
        }
    }

    /// One file-transfer message inside an open session; a reply, if any, goes into `reply`
    /// (room for the message's header and a text: [`POLL_BUF_LEN`] plus the header's size).
    pub fn handle_frame<'a>(&mut self, frame: &Frame<'a>, now: Instant, reply: &mut [u8]) -> Delivered<'a> {
        let sid = frame.header.sid;
        self.rates.poll(now);
        let handled = |n| Delivered::Handled { reply: n };
        let msg = match FileTransferMessage::from_frame(frame) {
            Ok(m) => m,
            Err(e) => {
                return handled(error_reply(reply, frame, format_args!("malformed request parameters: {e}")));
            }
        };
        let text = |reply: &mut [u8], t: &str| error_reply(reply, frame, format_args!("{t}"));
        match msg {
            FileTransferMessage::Stat(_) => match StatFile::decode(frame.body) {
                Ok(StatFile { path: Some(path) }) if !path.is_empty() => {
                    Delivered::Stat { request: *frame, path }
                }
                _ => handled(text(reply, ERR_BLANK_PATH)),
            },
            FileTransferMessage::GetFile(GetFile { path }) => {
                let Some(path) = path.filter(|p| !p.is_empty()) else {
                    return handled(text(reply, ERR_BLANK_PATH));
                };
                match self.admit(sid, frame, State::Download(Download::Opening), now) {
                    Ok(()) => Delivered::OpenDownload { sid, path },
                    Err(t) => handled(text(reply, t)),
                }
            }
            FileTransferMessage::PutFile(request) => {
                let Some(path) = request.path.filter(|p| !p.is_empty()) else {
                    return handled(text(reply, ERR_BLANK_PATH));
                };
                if self.is_busy(sid) {
                    // The reference checks the target before it looks for a running transfer.
                    return Delivered::CheckUpload { request: *frame, upload: request, path };
                }
                match self.admit(sid, frame, State::Upload(Upload::Opening), now) {
                    Ok(()) => Delivered::OpenUpload { sid, request, path },
                    Err(t) => handled(text(reply, t)),
                }
            }
            FileTransferMessage::Chunk { offset, data } => self.chunk(frame, offset, data, reply),
            FileTransferMessage::Ack { offset } => self.ack(frame, offset, now, reply),
            FileTransferMessage::Error(e) => {
                if let Some(i) = self.slot(sid) {
                    let slot = self.remove(i);
                    self.push(Pending::Abort(slot.sid));
                }
                Delivered::PeerError { sid, err: e.err }
            }
            FileTransferMessage::FileInfo(_) | FileTransferMessage::Unknown(_) => handled(error_reply(
                reply,
                frame,
                format_args!("session: filetransfer message type '{}' not supported", frame.header.typ),
            )),
        }
    }

    /// One transfer at a time per session, as many in all as the store holds.
    fn admit(
        &mut self,
        sid: &str,
        frame: &Frame<'_>,
        state: State,
        now: Instant,
    ) -> Result<(), &'static str> {
        if self.is_busy(sid) {
            return Err(ERR_IN_PROGRESS);
        }
        let deadline = match state {
            State::Download(_) => self.cfg.open_timeout_ms.map(|ms| (now.add_millis(ms), Step::Open)),
            State::Upload(_) => None,
        };
        let slot = Slot { sid: id(sid), state, answer: Stored::of(frame), deadline };
        if self.st.push_slot(slot) { Ok(()) } else { Err(TABLE_FULL) }
    }

    /// Asks for the next read of the download at `i` (marked as out by the caller).
    fn queue_read(&mut self, i: usize, now: Instant) {
        let deadline = self.cfg.read_timeout_ms.map(|ms| (now.add_millis(ms), Step::Read));
        let slot = &mut self.st.slots_mut()[i];
        slot.deadline = deadline;
        let sid = slot.sid.clone();
        self.push(Pending::Read(sid));
    }

    fn chunk<'a>(
        &mut self,
        frame: &Frame<'a>,
        offset: Option<crate::msgpack::Int>,
        data: &'a [u8],
        reply: &mut [u8],
    ) -> Delivered<'a> {
        let sid = frame.header.sid;
        let Some(i) = self.slot(sid) else {
            return Delivered::Handled {
                reply: error_reply(reply, frame, format_args!("{ERR_NOT_IN_PROGRESS}")),
            };
        };
        let slot = &mut self.st.slots_mut()[i];
        let outcome: Result<(), TransferError> = match &mut slot.state {
            State::Upload(Upload::Receiving { state, writing, ack }) => {
                let at = state.offset();
                match state.on_chunk(offset, data.len()) {
                    Ok(ChunkOutcome::Data { .. }) => {
                        *writing = writing.saturating_add(1);
                        // Acked every `UPLOAD_ACK_EVERY` chunks and at the end, not per chunk:
                        // each ack costs the agent, the client's proxy and the server a message,
                        // and the server waits for one only 20 chunks past the last.
                        if state.should_ack(true) {
                            *ack = Some(Stored::of(frame));
                        }
                        return Delivered::Write { sid, offset: at, bytes: data };
                    }
                    Ok(_) => {
                        let _ = state.should_ack(true);
                        let eof = Stored::of(frame);
                        if *writing == 0 {
                            slot.state = State::Upload(Upload::Committing { ack: eof });
                            self.push(Pending::Commit(id(sid)));
                        } else {
                            *ack = Some(eof);
                        }
                        return Delivered::Handled { reply: None };
                    }
                    Err(e) => Err(e),
                }
            }
            // The peer sends chunks only after the initial ack or during a download: both
            // break the sequence.
            State::Upload(_) => Err(TransferError::UnexpectedChunkOffset),
            State::Download(_) => {
                let slot = self.remove(i);
                self.push(Pending::Abort(slot.sid));
                return Delivered::Handled {
                    reply: error_reply(
                        reply,
                        frame,
                        format_args!(
                            "received unexpected message type '{}'; expected 'ack'",
                            frame.header.typ
                        ),
                    ),
                };
            }
        };
        let Err(e) = outcome else { return Delivered::Handled { reply: None } };
        let slot = self.remove(i);
        self.push(Pending::Abort(slot.sid));
        let n = slot.answer.frame().and_then(|req| error_reply(reply, &req, format_args!("{e}")));
        Delivered::Handled { reply: n }
    }

    fn ack<'a>(
        &mut self,
        frame: &Frame<'a>,
        offset: Option<crate::msgpack::Int>,
        now: Instant,
        reply: &mut [u8],
    ) -> Delivered<'a> {
        let sid = frame.header.sid;
        let Some(i) = self.slot(sid) else {
            return Delivered::Handled {
                reply: error_reply(reply, frame, format_args!("{ERR_NOT_IN_PROGRESS}")),
            };
        };
        let (complete, read) = match &mut self.st.slots_mut()[i].state {
            State::Upload(_) => {
                let slot = self.remove(i);
                self.push(Pending::Abort(slot.sid));
                let n = slot.answer.frame().and_then(|req| {
                    error_reply(
                        reply,
                        &req,
                        format_args!(
                            "received unexpected message type '{}' during file upload",
                            frame.header.typ
                        ),
                    )
                });
                return Delivered::Handled { reply: n };
            }
            // Nothing sent yet: the ack moves nothing, it is what errors answer from now on.
            State::Download(Download::Opening) => (false, false),
            State::Download(Download::Sending { window, reading }) => {
                if let Err(e) = window.on_ack(offset) {
                    let slot = self.remove(i);
                    self.push(Pending::Abort(slot.sid));
                    return Delivered::Handled { reply: error_reply(reply, frame, format_args!("{e}")) };
                }
                let read = !*reading && !window.eof_sent() && window.room() > 0;
                *reading |= read;
                (window.is_complete(), read)
            }
        };
        if complete {
            self.remove(i);
        } else {
            self.st.slots_mut()[i].answer = Stored::of(frame);
            if read {
                self.queue_read(i, now);
            }
        }
        Delivered::Handled { reply: None }
    }

    /// The executor opened `sid`'s upload: the initial ack goes out (unless the Rx limit is
    /// reached).
    pub fn handle_upload_opened(&mut self, sid: &str, now: Instant) {
        let Some(i) = self.slot(sid) else { return };
        if !matches!(self.st.slots_mut()[i].state, State::Upload(Upload::Opening)) {
            return;
        }
        if !self.within_rate(Direction::Upload, 0, now) {
            return self.fail(i, Failure::RxLimit);
        }
        self.st.slots_mut()[i].state =
            State::Upload(Upload::Receiving { state: UploadState::new(), writing: 0, ack: None });
        self.push(Pending::Ack0(id(sid)));
    }

    /// The executor wrote `n` bytes of `sid`'s upload (one [`Delivered::Write`], in order).
    pub fn handle_written(&mut self, sid: &str, n: usize, now: Instant) {
        let Some(i) = self.slot(sid) else { return };
        let State::Upload(Upload::Receiving { state, .. }) = &self.st.slots()[i].state else { return };
        let end = state.offset();
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        if !(self.within_rate(Direction::Upload, n, now) && self.below_max_size(end)) {
            return self.fail(i, Failure::WriteLimit);
        }
        let slot = &mut self.st.slots_mut()[i];
        let State::Upload(Upload::Receiving { state, writing, ack }) = &mut slot.state else { return };
        *writing = writing.saturating_sub(1);
        if *writing > 0 {
            return;
        }
        match ack.take() {
            Some(ack) if state.is_done() => {
                slot.state = State::Upload(Upload::Committing { ack });
                self.push(Pending::Commit(id(sid)));
            }
            Some(ack) => self.push(Pending::AckOf(ack)),
            None => {}
        }
    }

    /// The executor committed `sid`'s upload: it is acked and over.
    pub fn handle_committed(&mut self, sid: &str) {
        let Some(i) = self.slot(sid) else { return };
        if let State::Upload(Upload::Committing { .. }) = self.st.slots_mut()[i].state {
            let slot = self.remove(i);
            if let State::Upload(Upload::Committing { ack }) = slot.state {
                self.push(Pending::AckOf(ack));
            }
        }
    }

    /// The executor opened and checked `sid`'s download: reading starts (unless the Tx limit is
    /// reached).
    pub fn handle_download_opened(&mut self, sid: &str, now: Instant) {
        let Some(i) = self.slot(sid) else { return };
        if !matches!(self.st.slots_mut()[i].state, State::Download(Download::Opening)) {
            return;
        }
        self.st.slots_mut()[i].deadline = None;
        if !self.within_rate(Direction::Download, 0, now) {
            return self.fail(i, Failure::TxLimit);
        }
        let window = DownloadWindow::with_window(self.cfg.window_bytes);
        self.st.slots_mut()[i].state = State::Download(Download::Sending { window, reading: true });
        self.queue_read(i, now);
    }

    /// The executor read `data` of `sid`'s download (empty: the end of the file). The chunk
    /// goes into `buf` (room for the data and [`POLL_BUF_LEN`]); send the first `n` bytes.
    pub fn handle_read(&mut self, sid: &str, data: &[u8], now: Instant, buf: &mut [u8]) -> Option<usize> {
        let i = self.slot(sid)?;
        let State::Download(Download::Sending { reading, .. }) = &mut self.st.slots_mut()[i].state else {
            return None;
        };
        if !*reading {
            return None;
        }
        *reading = false;
        self.st.slots_mut()[i].deadline = None;
        let State::Download(Download::Sending { window, .. }) = &mut self.st.slots_mut()[i].state else {
            return None;
        };
        if data.is_empty() {
            let total = window.on_eof();
            let complete = window.is_complete();
            let n = ft::encode_chunk(buf, sid, total, &[]).ok();
            if complete || n.is_none() {
                self.remove(i);
            }
            return n;
        }
        let offset = window.on_sent(data.len());
        let more = window.room() > 0;
        let Ok(n) = ft::encode_chunk(buf, sid, offset, data) else {
            let slot = self.remove(i);
            self.push(Pending::Abort(slot.sid));
            return None;
        };
        if !self.within_rate(Direction::Download, u64::try_from(data.len()).unwrap_or(u64::MAX), now) {
            self.fail(i, Failure::TxLimit);
        } else if more {
            if let State::Download(Download::Sending { reading, .. }) = &mut self.st.slots_mut()[i].state {
                *reading = true;
            }
            self.queue_read(i, now);
        }
        Some(n)
    }

    /// A step of `sid`'s transfer failed in the executor (its file is closed, an upload's
    /// temporary file removed): `text` answers the request (or the latest ack), with `code` the
    /// HTTP status the server should answer the user with (0: its default). The answer goes
    /// into `buf`; send the first `n` bytes.
    pub fn handle_failed(&mut self, sid: &str, text: &str, code: u16, buf: &mut [u8]) -> Option<usize> {
        let i = self.slot(sid)?;
        let slot = self.remove(i);
        let req = slot.answer.frame()?;
        reply(buf, |b| ft::encode_coded_error_reply(b, &req, text, i64::from(code)))
    }

    /// When [`TransferTable::handle_timeout`] must be called next: the earliest open or read
    /// deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.st.slots().iter().filter_map(|s| s.deadline.map(|(at, _)| at)).min()
    }

    /// Reports the opens and reads overdue at `now` ([`Action::TimedOut`]); each transfer
    /// stays until the executor answers it with [`TransferTable::handle_failed`].
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.st.slots().len() {
            let slot = &mut self.st.slots_mut()[i];
            if let Some((_, step)) = slot.deadline.filter(|(at, _)| *at <= now) {
                slot.deadline = None;
                let sid = slot.sid.clone();
                self.push(Pending::TimedOut(sid, step));
            }
        }
    }

    /// Session `sid` ended: its transfer is aborted.
    pub fn handle_session_ended(&mut self, sid: &str) -> bool {
        let Some(i) = self.slot(sid) else { return false };
        let slot = self.remove(i);
        self.push(Pending::Abort(slot.sid));
        true
    }

    /// The link dropped: no session survives it, every transfer is aborted.
    pub fn handle_link_down(&mut self) -> usize {
        self.handle_stop_all()
    }

    /// Aborts every transfer.
    pub fn handle_stop_all(&mut self) -> usize {
        let n = self.st.slots().len();
        while let Some(last) = self.st.slots().len().checked_sub(1) {
            let slot = self.st.swap_remove_slot(last);
            self.push(Pending::Abort(slot.sid));
        }
        n
    }

    /// The next action; frames are encoded into `buf` (at least [`POLL_BUF_LEN`] bytes). A
    /// frame that does not fit is dropped.
    pub fn poll_action(&mut self, buf: &mut [u8]) -> Option<Action> {
        loop {
            let n = match self.st.pop_queued()?.0 {
                Pending::Read(sid) => {
                    let Some(i) = self.slot(&sid) else { continue };
                    let State::Download(Download::Sending { window, .. }) = &self.st.slots()[i].state else {
                        continue;
                    };
                    let max = window.room().min(self.cfg.chunk_len);
                    if max == 0 {
                        // A stale ack shrank the window meanwhile: the next ack asks again.
                        let slot = &mut self.st.slots_mut()[i];
                        if let State::Download(Download::Sending { reading, .. }) = &mut slot.state {
                            *reading = false;
                        }
                        slot.deadline = None;
                        continue;
                    }
                    return Some(Action::Read { sid, max });
                }
                Pending::Commit(sid) => return Some(Action::Commit { sid }),
                Pending::Abort(sid) => return Some(Action::Abort { sid }),
                Pending::TimedOut(sid, step) => return Some(Action::TimedOut { sid, step }),
                Pending::Ack0(sid) => reply(buf, |b| ft::encode_ack(b, &sid, 0)),
                Pending::AckOf(h) => h.frame().and_then(|f| reply(buf, |b| ft::encode_ack_of(b, &f))),
                Pending::Error(h, failure) => {
                    h.frame().and_then(|f| error_reply(buf, &f, format_args!("{failure}")))
                }
            };
            if let Some(len) = n {
                return Some(Action::Send { len });
            }
        }
    }
}

/// Tests that need no std: run on the host and on the bare-metal runner.
#[cfg(any(test, feature = "selftest"))]
#[doc(hidden)]
pub mod selftests;
