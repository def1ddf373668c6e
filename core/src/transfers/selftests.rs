//! File-transfer request-state tests that need no std (see [`crate::selftest`]), on a virtual
//! clock: run on the host and on the bare-metal runner.

use super::*;
use crate::filetransfer::FtError;
use crate::frame::{Prop, Proto};

type Table = FixedTransferTable<2, { queue_len(2) }>;
type Msg = Vec<u8, 512>;

use crate::selftest::t;

fn msg(typ: &str, sid: &str, props: &[Prop<'_>], body: &[u8]) -> Msg {
    let mut buf = [0u8; 512];
    let n = FrameOut { proto: Proto::FILE_TRANSFER, typ, sid, props, body, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    Vec::from_slice(&buf[..n]).unwrap()
}

fn path_msg(typ: &str, sid: &str, path: &str) -> Msg {
    let mut body = [0u8; 128];
    let n = StatFile { path: Some(path) }.encode(&mut body).unwrap();
    msg(typ, sid, &[Prop::str("user_id", "u1")], &body[..n])
}

fn put(sid: &str, path: &str) -> Msg {
    let mut body = [0u8; 128];
    let n = UploadRequest { path: Some(path), ..Default::default() }.encode(&mut body).unwrap();
    msg(ft::PUT_FILE, sid, &[Prop::str("user_id", "u1")], &body[..n])
}

fn chunk(sid: &str, offset: i64, data: &[u8]) -> Msg {
    msg(ft::FILE_CHUNK, sid, &[Prop::int64(ft::PROP_OFFSET, offset), Prop::str("x", "y")], data)
}

fn ack(sid: &str, offset: i64) -> Msg {
    msg(ft::ACK, sid, &[Prop::int64(ft::PROP_OFFSET, offset)], &[])
}

fn feed<'a>(table: &mut Table, bytes: &'a [u8], now: Instant, reply: &mut [u8]) -> Delivered<'a> {
    table.handle_frame(&Frame::decode(bytes).unwrap(), now, reply)
}

/// The reply of a handled message, decoded.
fn replied<'b>(d: Delivered<'_>, reply: &'b [u8]) -> Frame<'b> {
    let Delivered::Handled { reply: Some(n) } = d else { panic!("no reply: {d:?}") };
    Frame::decode(&reply[..n]).unwrap()
}

fn err_text<'b>(f: &Frame<'b>) -> &'b str {
    assert_eq!(f.header.typ, ft::ERROR);
    FtError::decode(f.body).unwrap().err.unwrap()
}

fn offset_of(f: &Frame<'_>) -> i64 {
    f.header.props.get_int(ft::PROP_OFFSET).and_then(crate::msgpack::Int::as_go_int64).unwrap()
}

/// Drains the table: (frames sent as (typ, offset or -1), other actions).
fn drain(table: &mut Table) -> (Vec<(heapless::String<16>, i64), 8>, Vec<Action, 8>) {
    let (mut frames, mut acts) = (Vec::new(), Vec::new());
    let mut buf = [0u8; POLL_BUF_LEN];
    while let Some(a) = table.poll_action(&mut buf) {
        match a {
            Action::Send { len } => {
                let f = Frame::decode(&buf[..len]).unwrap();
                let off = f.header.props.get_int(ft::PROP_OFFSET).and_then(|i| i.as_go_int64()).unwrap_or(-1);
                frames.push((heapless::String::try_from(f.header.typ).unwrap(), off)).unwrap();
            }
            a => acts.push(a).unwrap(),
        }
    }
    (frames, acts)
}

fn sid_of(a: &Action) -> &str {
    match a {
        Action::Read { sid, .. } | Action::Commit { sid } | Action::Abort { sid } => sid,
        _ => "",
    }
}

/// An upload in `sid` past its initial ack.
fn started_upload(table: &mut Table, sid: &str, now: Instant) {
    let mut reply = [0u8; 1024];
    let req = put(sid, "/tmp/f");
    assert!(matches!(feed(table, &req, now, &mut reply), Delivered::OpenUpload { path: "/tmp/f", .. }));
    assert!(table.is_busy(sid));
    table.handle_upload_opened(sid, now);
    let (frames, acts) = drain(table);
    assert_eq!((frames.len(), frames[0].0.as_str(), frames[0].1, acts.len()), (1, ft::ACK, 0, 0));
}

fn upload_offsets_and_ack_batching() {
    let mut table = Table::new(TransferConfig::default(), t(0));
    let mut reply = [0u8; 1024];
    started_upload(&mut table, "s", t(0));
    let mut acks = Vec::<i64, 4>::new();
    for i in 0..25i64 {
        let c = chunk("s", i * 10, b"0123456789");
        match feed(&mut table, &c, t(1), &mut reply) {
            Delivered::Write { sid: "s", offset, bytes } => {
                assert_eq!((offset, bytes.len()), (i * 10, 10));
            }
            d => panic!("{d:?}"),
        }
        table.handle_written("s", 10, t(1));
        let (frames, acts) = drain(&mut table);
        assert!(acts.is_empty());
        for (typ, off) in frames {
            assert_eq!(typ.as_str(), ft::ACK);
            acks.push(off).unwrap();
        }
    }
    // The ack copies the header of the last chunk of each batch of 10: its offset is that
    // chunk's.
    assert_eq!(&acks[..], &[90, 190]);
    assert_eq!(table.iter().next().map(|i| (i.direction, i.bytes)), Some((Direction::Upload, 250)));
    // End of file: commit, then the ack of the empty chunk, and the session is free.
    let eof = chunk("s", 250, b"");
    assert_eq!(feed(&mut table, &eof, t(2), &mut reply), Delivered::Handled { reply: None });
    let (frames, acts) = drain(&mut table);
    assert!(frames.is_empty());
    assert!(matches!(&acts[..], [Action::Commit { sid }] if sid == "s"));
    table.handle_committed("s");
    let (frames, _) = drain(&mut table);
    assert_eq!((frames[0].0.as_str(), frames[0].1), (ft::ACK, 250));
    assert!(!table.is_busy("s"));

    // Out of sequence: the request's header is answered, the upload aborted.
    started_upload(&mut table, "s", t(3));
    let c = chunk("s", 0, b"ab");
    assert!(matches!(feed(&mut table, &c, t(3), &mut reply), Delivered::Write { .. }));
    table.handle_written("s", 2, t(3));
    let c = chunk("s", 1, b"ab");
    let f = replied(feed(&mut table, &c, t(3), &mut reply), &reply);
    assert_eq!(err_text(&f), "received unexpected chunk offset");
    assert_eq!(FtError::decode(f.body).unwrap().msgtype, Some(ft::PUT_FILE));
    assert_eq!(f.header.props.get_str("user_id"), Some("u1"));
    let (_, acts) = drain(&mut table);
    assert!(matches!(&acts[..], [Action::Abort { sid }] if sid == "s"));
    assert!(!table.is_busy("s"));

    // A chunk whose props do not fit the stored header: its ack keeps the offset.
    started_upload(&mut table, "s", t(3));
    let c = chunk("s", 0, b"ab");
    assert!(matches!(feed(&mut table, &c, t(3), &mut reply), Delivered::Write { .. }));
    table.handle_written("s", 2, t(3));
    assert!(drain(&mut table).0.is_empty(), "acked every 10 chunks only");
    let big = [b'p'; 400];
    let big = core::str::from_utf8(&big).unwrap();
    let eof = msg(ft::FILE_CHUNK, "s", &[Prop::str("x", big), Prop::int64(ft::PROP_OFFSET, 2)], &[]);
    assert_eq!(feed(&mut table, &eof, t(3), &mut reply), Delivered::Handled { reply: None });
    let (_, acts) = drain(&mut table);
    assert!(matches!(&acts[..], [Action::Commit { .. }]));
    table.handle_committed("s");
    let (frames, _) = drain(&mut table);
    assert_eq!((frames[0].0.as_str(), frames[0].1), (ft::ACK, 2));

    // No offset (or not an int64): the reference's text.
    started_upload(&mut table, "s", t(4));
    let c = msg(ft::FILE_CHUNK, "s", &[Prop::uint16(ft::PROP_OFFSET, 0)], b"ab");
    let f = replied(feed(&mut table, &c, t(4), &mut reply), &reply);
    assert_eq!(err_text(&f), "invalid file chunk message: missing offset property");
}

fn download_keeps_to_the_window() {
    // A window that is no multiple of the chunk: the read before it is full is smaller.
    let cfg = TransferConfig { chunk_len: 100, window_bytes: 1050, ..TransferConfig::default() };
    let mut table = Table::new(cfg, t(0));
    let mut reply = [0u8; 1024];
    let mut buf = [0u8; 1024];
    let req = path_msg(ft::GET_FILE, "d", "/etc/f");
    assert_eq!(
        feed(&mut table, &req, t(0), &mut reply),
        Delivered::OpenDownload { sid: "d", path: "/etc/f" }
    );
    table.handle_download_opened("d", t(0));
    let data = [7u8; 100];
    let (mut sent, mut acked) = (0i64, 0i64);
    let mut reads = 0;
    // The file is 2500 bytes; the peer acks every 500 once the window is full.
    loop {
        let (frames, acts) = drain(&mut table);
        assert!(frames.is_empty());
        let Some(Action::Read { max, .. }) = acts.first() else {
            assert_eq!(sent - acked, 1050, "stalled");
            acked += 500;
            let a = ack("d", acked);
            assert_eq!(feed(&mut table, &a, t(1), &mut reply), Delivered::Handled { reply: None });
            continue;
        };
        assert_eq!(acts.len(), 1);
        let n = (*max).min(usize::try_from(2500 - sent).unwrap());
        if n == 0 {
            break;
        }
        let len = table.handle_read("d", &data[..n], t(1), &mut buf).unwrap();
        let f = Frame::decode(&buf[..len]).unwrap();
        assert_eq!((f.header.typ, offset_of(&f), f.body.len()), (ft::FILE_CHUNK, sent, n));
        sent += n as i64;
        reads += 1;
        // Never more than the window beyond the last ack.
        assert!(sent - acked <= 1050, "{sent} sent, {acked} acked");
    }
    assert_eq!((sent, acked, reads), (2500, 1500, 26));
    // The read that finds the end of the file.
    let len = table.handle_read("d", &[], t(2), &mut buf).unwrap();
    let f = Frame::decode(&buf[..len]).unwrap();
    assert_eq!((offset_of(&f), f.body.len()), (2500, 0));
    assert!(drain(&mut table).1.is_empty(), "no read after the end");
    // Busy until the final ack.
    let a = ack("d", 2400);
    feed(&mut table, &a, t(3), &mut reply);
    assert!(table.is_busy("d") && drain(&mut table).1.is_empty());
    let a = ack("d", 2500);
    assert_eq!(feed(&mut table, &a, t(3), &mut reply), Delivered::Handled { reply: None });
    assert!(!table.is_busy("d"));
    assert_eq!(drain(&mut table).1.len(), 0);

    // An empty file is over with its end-of-file chunk.
    feed(&mut table, &req, t(4), &mut reply);
    table.handle_download_opened("d", t(4));
    drain(&mut table);
    let len = table.handle_read("d", &[], t(4), &mut buf).unwrap();
    assert_eq!(offset_of(&Frame::decode(&buf[..len]).unwrap()), 0);
    assert!(!table.is_busy("d"));
}

fn malformed_acks_and_chunks_get_the_reference_texts() {
    let mut table = Table::new(TransferConfig::default(), t(0));
    let mut reply = [0u8; 1024];
    let mut buf = [0u8; 8192];
    let start = |table: &mut Table, reply: &mut [u8], buf: &mut [u8]| {
        let req = path_msg(ft::GET_FILE, "d", "/f");
        feed(table, &req, t(0), reply);
        table.handle_download_opened("d", t(0));
        drain(table);
        table.handle_read("d", b"abc", t(0), buf).unwrap();
        drain(table);
    };
    start(&mut table, &mut reply, &mut buf);
    let a = msg(ft::ACK, "d", &[Prop::str("user_id", "u2")], &[]);
    let f = replied(feed(&mut table, &a, t(1), &mut reply), &reply);
    assert_eq!(err_text(&f), "ack message: offset property cannot be blank");
    // The ack's header is answered.
    assert_eq!(
        (f.header.props.get_str("user_id"), FtError::decode(f.body).unwrap().msgtype),
        (Some("u2"), Some("ack"))
    );
    assert!(matches!(&drain(&mut table).1[..], [Action::Abort { .. }]));
    assert!(!table.is_busy("d"));

    start(&mut table, &mut reply, &mut buf);
    let a = msg(ft::ACK, "d", &[Prop::uint16(ft::PROP_OFFSET, 3)], &[]);
    let f = replied(feed(&mut table, &a, t(1), &mut reply), &reply);
    assert_eq!(err_text(&f), "invalid offset data type: require int64");
    assert!(matches!(&drain(&mut table).1[..], [Action::Abort { .. }]));

    start(&mut table, &mut reply, &mut buf);
    let c = chunk("d", 0, b"x");
    let f = replied(feed(&mut table, &c, t(1), &mut reply), &reply);
    assert_eq!(err_text(&f), "received unexpected message type 'file_chunk'; expected 'ack'");
    assert!(!table.is_busy("d"));
    assert!(matches!(&drain(&mut table).1[..], [Action::Abort { .. }]));

    started_upload(&mut table, "u", t(1));
    let a = ack("u", 0);
    let f = replied(feed(&mut table, &a, t(1), &mut reply), &reply);
    assert_eq!(err_text(&f), "received unexpected message type 'ack' during file upload");
    assert_eq!(FtError::decode(f.body).unwrap().msgtype, Some(ft::PUT_FILE));

    for m in [chunk("x", 0, b"a"), ack("x", 0)] {
        let f = replied(feed(&mut table, &m, t(1), &mut reply), &reply);
        assert_eq!(err_text(&f), "no file transfer in progress");
    }
    let m = msg("bogus", "x", &[], &[]);
    let f = replied(feed(&mut table, &m, t(1), &mut reply), &reply);
    assert_eq!(err_text(&f), "session: filetransfer message type 'bogus' not supported");
    for typ in [ft::STAT, ft::GET_FILE] {
        let m = path_msg(typ, "x", "");
        let f = replied(feed(&mut table, &m, t(1), &mut reply), &reply);
        assert_eq!(err_text(&f), "invalid request parameters: path: cannot be blank.");
    }
    let m = msg(ft::PUT_FILE, "x", &[], &[0xc1]);
    let f = replied(feed(&mut table, &m, t(1), &mut reply), &reply);
    assert!(err_text(&f).starts_with("malformed request parameters: "), "{}", err_text(&f));
    // A peer error ends a transfer without an answer.
    start(&mut table, &mut reply, &mut buf);
    let mut body = [0u8; 64];
    let n = FtError { err: Some("gone"), ..Default::default() }.encode(&mut body).unwrap();
    let m = msg(ft::ERROR, "d", &[], &body[..n]);
    assert_eq!(feed(&mut table, &m, t(1), &mut reply), Delivered::PeerError { sid: "d", err: Some("gone") });
    assert!(matches!(&drain(&mut table).1[..], [Action::Abort { .. }]));
    assert!(!table.is_busy("d"));
}

fn one_transfer_per_session() {
    let mut table = Table::new(TransferConfig::default(), t(0));
    let mut reply = [0u8; 1024];
    let get = path_msg(ft::GET_FILE, "a", "/f");
    assert!(matches!(feed(&mut table, &get, t(0), &mut reply), Delivered::OpenDownload { .. }));
    let f = replied(feed(&mut table, &get, t(0), &mut reply), &reply);
    assert_eq!(err_text(&f), "another file transfer is in progress");
    // A put_file is checked by the executor first (its policy refusals come before this one).
    let put_a = put("a", "/g");
    let d = feed(&mut table, &put_a, t(0), &mut reply);
    let Delivered::CheckUpload { request, path: "/g", .. } = d else { panic!("{d:?}") };
    assert_eq!((request.header.typ, request.header.sid), (ft::PUT_FILE, "a"));
    assert_eq!(table.iter().map(|i| i.direction).next(), Some(Direction::Download));
    // A stat runs beside it; another session has its own.
    let stat = path_msg(ft::STAT, "a", "/f");
    assert!(matches!(feed(&mut table, &stat, t(0), &mut reply), Delivered::Stat { path: "/f", .. }));
    let put_b = put("b", "/g");
    assert!(matches!(feed(&mut table, &put_b, t(0), &mut reply), Delivered::OpenUpload { sid: "b", .. }));
    // The table is full (2).
    let get_c = path_msg(ft::GET_FILE, "c", "/f");
    let f = replied(feed(&mut table, &get_c, t(0), &mut reply), &reply);
    assert_eq!(err_text(&f), TABLE_FULL);
    // A failed open frees the session, its request answered with the executor's text and code.
    let n = table.handle_failed("a", "access denied: nope", 403, &mut reply).unwrap();
    let f = Frame::decode(&reply[..n]).unwrap();
    let e = FtError::decode(f.body).unwrap();
    assert_eq!((e.err, e.msgtype, e.code), (Some("access denied: nope"), Some(ft::GET_FILE), 403));
    assert!(!table.is_busy("a"));
    assert!(matches!(feed(&mut table, &get, t(0), &mut reply), Delivered::OpenDownload { .. }));
}

fn cancelled_with_the_session_or_the_link() {
    let mut table = Table::new(TransferConfig::default(), t(0));
    let mut reply = [0u8; 1024];
    let mut buf = [0u8; 8192];
    let get = path_msg(ft::GET_FILE, "a", "/f");
    feed(&mut table, &get, t(0), &mut reply);
    table.handle_download_opened("a", t(0));
    drain(&mut table);
    started_upload(&mut table, "b", t(0));
    assert!(table.handle_session_ended("a"));
    assert!(!table.handle_session_ended("a"));
    let (_, acts) = drain(&mut table);
    assert!(matches!(&acts[..], [Action::Abort { sid }] if sid == "a"));
    // What the executor still reports for it is ignored.
    assert_eq!(table.handle_read("a", b"late", t(1), &mut buf), None);
    assert!(drain(&mut table).0.is_empty());
    feed(&mut table, &get, t(1), &mut reply);
    assert_eq!(table.handle_link_down(), 2);
    let (frames, acts) = drain(&mut table);
    assert!(frames.is_empty());
    assert_eq!(acts.len(), 2);
    assert!(acts.iter().any(|a| sid_of(a) == "a") && acts.iter().any(|a| sid_of(a) == "b"));
    assert!(acts.iter().all(|a| matches!(a, Action::Abort { .. })));
    assert_eq!(table.iter().count(), 0);
    table.handle_upload_opened("b", t(2));
    table.handle_written("b", 1, t(2));
    table.handle_committed("b");
    assert_eq!(drain(&mut table), (Vec::new(), Vec::new()));
}

fn limits_apply_when_enforced() {
    // Rx: a 100-byte average per tick is reached by 1600 bytes in a tick (8 % of it).
    let cfg = TransferConfig { enforce: true, rx_limit: 100, tx_limit: 100, ..TransferConfig::default() };
    let mut table = Table::new(cfg, t(0));
    let mut reply = [0u8; 1024];
    let mut buf = [0u8; 8192];
    started_upload(&mut table, "s", t(0));
    for i in 0..4 {
        let c = chunk("s", i * 400, &[1u8; 400]);
        feed(&mut table, &c, t(0), &mut reply);
        table.handle_written("s", 400, t(0));
    }
    drain(&mut table);
    assert!(table.is_busy("s"));
    let c = chunk("s", 1600, b"x");
    feed(&mut table, &c, t(5_000), &mut reply);
    table.handle_written("s", 1, t(5_000));
    let mut pb = [0u8; POLL_BUF_LEN];
    assert!(matches!(table.poll_action(&mut pb), Some(Action::Abort { .. })));
    let Some(Action::Send { len }) = table.poll_action(&mut pb) else { panic!() };
    let f = Frame::decode(&pb[..len]).unwrap();
    assert_eq!(err_text(&f), "failed to write file chunk: transmitted bytes limit exhausted");
    // The next upload is refused once open.
    let req = put("s", "/f");
    feed(&mut table, &req, t(5_001), &mut reply);
    table.handle_upload_opened("s", t(5_001));
    assert!(matches!(table.poll_action(&mut pb), Some(Action::Abort { .. })));
    let Some(Action::Send { len }) = table.poll_action(&mut pb) else { panic!() };
    assert_eq!(err_text(&Frame::decode(&pb[..len]).unwrap()), "transmitted bytes limit exhausted");

    // Tx: the chunk that reaches the limit goes out, then the error.
    let get = path_msg(ft::GET_FILE, "d", "/f");
    feed(&mut table, &get, t(5_002), &mut reply);
    table.handle_download_opened("d", t(5_002));
    drain(&mut table);
    assert!(table.handle_read("d", &[0u8; 4096], t(5_002), &mut buf).is_some());
    drain(&mut table);
    assert!(table.handle_read("d", &[0u8; 10], t(10_000), &mut buf).is_some());
    assert!(matches!(table.poll_action(&mut pb), Some(Action::Abort { .. })));
    let Some(Action::Send { len }) = table.poll_action(&mut pb) else { panic!() };
    assert_eq!(err_text(&Frame::decode(&pb[..len]).unwrap()), "transmitted bytes limit exhausted");
    // Device-wide totals, for the status.
    let r = table.rates_at(t(10_000));
    assert_eq!((r.tx.total(), r.rx.total()), (4106, 1601));
    assert!(!r.tx.below(100));

    // MaxFileSize: the upload fails once its offset reaches it.
    let cfg = TransferConfig { enforce: true, max_file_size: Some(10), ..TransferConfig::default() };
    let mut table = Table::new(cfg, t(0));
    started_upload(&mut table, "s", t(0));
    let c = chunk("s", 0, &[1u8; 9]);
    feed(&mut table, &c, t(0), &mut reply);
    table.handle_written("s", 9, t(0));
    assert!(drain(&mut table).1.is_empty());
    let c = chunk("s", 9, &[1u8; 1]);
    feed(&mut table, &c, t(0), &mut reply);
    table.handle_written("s", 1, t(0));
    assert!(!table.is_busy("s"));
}

/// Opens and reads that take too long, on a virtual clock: the executor is told once, the
/// transfer waits for its answer; a read in time clears the deadline.
fn slow_opens_and_reads_time_out() {
    let cfg = TransferConfig {
        open_timeout_ms: Some(30_000),
        read_timeout_ms: Some(60_000),
        ..TransferConfig::default()
    };
    let mut table = Table::new(cfg, t(0));
    let mut reply = [0u8; 1024];
    let mut buf = [0u8; 8192];
    assert_eq!(table.poll_timeout(), None);
    let get = path_msg(ft::GET_FILE, "d", "/dev/slow");
    feed(&mut table, &get, t(1_000), &mut reply);
    assert_eq!(table.poll_timeout(), Some(t(31_000)));
    table.handle_timeout(t(30_999));
    assert!(drain(&mut table).1.is_empty());
    table.handle_timeout(t(31_000));
    let (_, acts) = drain(&mut table);
    assert!(matches!(&acts[..], [Action::TimedOut { sid, step: Step::Open }] if sid == "d"), "{acts:?}");
    assert_eq!(table.poll_timeout(), None, "told once");
    let n = table.handle_failed(
        "d",
        "failed to open file for reading: open /dev/slow: i/o timeout",
        0,
        &mut reply,
    );
    assert_eq!(
        err_text(&Frame::decode(&reply[..n.unwrap()]).unwrap()),
        "failed to open file for reading: open /dev/slow: i/o timeout"
    );
    assert!(!table.is_busy("d"));

    // Opened in time: the read has its own deadline, renewed with each read asked.
    feed(&mut table, &get, t(40_000), &mut reply);
    table.handle_download_opened("d", t(45_000));
    drain(&mut table);
    assert_eq!(table.poll_timeout(), Some(t(105_000)));
    table.handle_read("d", b"abc", t(100_000), &mut buf).unwrap();
    drain(&mut table);
    assert_eq!(table.poll_timeout(), Some(t(160_000)));
    table.handle_timeout(t(160_000));
    let (_, acts) = drain(&mut table);
    assert!(matches!(&acts[..], [Action::TimedOut { step: Step::Read, .. }]), "{acts:?}");
    // A window that is full waits for the peer, not for the executor: no deadline.
    let cfg = TransferConfig { read_timeout_ms: Some(60_000), window_bytes: 3, ..TransferConfig::default() };
    let mut table = Table::new(cfg, t(0));
    feed(&mut table, &get, t(0), &mut reply);
    table.handle_download_opened("d", t(0));
    drain(&mut table);
    table.handle_read("d", b"abc", t(1), &mut buf).unwrap();
    assert!(drain(&mut table).1.is_empty());
    assert_eq!(table.poll_timeout(), None);
}

crate::selftests!(
    slow_opens_and_reads_time_out,
    upload_offsets_and_ack_batching,
    download_keeps_to_the_window,
    malformed_acks_and_chunks_get_the_reference_texts,
    one_transfer_per_session,
    cancelled_with_the_session_or_the_link,
    limits_apply_when_enforced,
);
