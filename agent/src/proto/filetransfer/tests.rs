//! Unit tests of the file-transfer handler with real files in temporary directories: the
//! protocol flows, every limit key, the reference's error texts and the chroot-escape suite.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mender_connect_core::filetransfer::{self as ft, FileInfo, FtError, UploadRequest, go_file_mode};
use mender_connect_core::{Frame, FrameOut, MAX_FRAME_LEN, Prop, Proto};

use super::Settings;
use crate::config::FileTransferLimits;
use crate::proto::router::{Output, Router};

const SID: &str = "ft-session";
const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mc-ft-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A router serving file transfer as the daemon does: core's device keeps the transfers, the
/// executor runs them; download tasks queue chunks on `rx` and report on `events`, which the
/// harness feeds back as the daemon's loop does.
struct H {
    router: Router,
    shells: crate::proto::shell::Shells,
    rx: async_channel::Receiver<Vec<u8>>,
    events: async_channel::Receiver<crate::proto::router::Report>,
    /// Frames for the reply queue that came out of a task's report.
    replies: std::collections::VecDeque<Vec<u8>>,
    /// Added to the clock (the rate counters tick every 5 s).
    skew: Duration,
}

fn settings(enforce: bool, limits: FileTransferLimits) -> Settings {
    Settings::new(enforce, limits)
}

fn handler(s: Settings) -> H {
    let (tx, rx) = async_channel::bounded(16);
    let (events_tx, events) = async_channel::unbounded();
    let mut router = Router::new(false);
    router.enable_file_transfer(&Arc::new(s), tx, events_tx);
    H {
        router,
        shells: crate::proto::router::tests::shells(),
        rx,
        events,
        replies: Default::default(),
        skew: Duration::ZERO,
    }
}

fn open_handler() -> H {
    handler(settings(false, FileTransferLimits::default()))
}

fn frame(typ: &str, props: &[Prop<'_>], body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let n = FrameOut { proto: Proto::FILE_TRANSFER, typ, sid: SID, props, body, ..FrameOut::EMPTY }
        .encode(&mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

fn path_body(path: &str) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let n = ft::StatFile { path: Some(path) }.encode(&mut b).unwrap();
    b.truncate(n);
    b
}

fn put_body(req: &UploadRequest<'_>) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let n = req.encode(&mut b).unwrap();
    b.truncate(n);
    b
}

impl H {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now() + self.skew
    }
    /// Carries out what the device asks; reply-queue frames are kept for `recv`.
    fn drain(&mut self) {
        while let Some(o) = self.router.poll(&mut self.shells) {
            if let Output::Transfer(f) = o {
                self.replies.push_back(f);
            }
        }
    }
    fn serve(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let now = self.now();
        let out = self.router.route(bytes, &mut self.shells, now);
        self.drain();
        out.into_iter()
            .map(|a| match a {
                crate::proto::shell::Action::Reply(f) => f,
            })
            .collect()
    }
    fn one(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.serve(bytes);
        assert_eq!(out.len(), 1, "expected one reply");
        out.remove(0)
    }
    /// Feeds the download tasks' reports to the router, as the daemon's loop does, until a
    /// frame reaches the data queue (or the reply queue).
    fn recv(&mut self) -> Vec<u8> {
        let until = std::time::Instant::now() + WAIT;
        loop {
            if let Some(f) = self.replies.pop_front() {
                return f;
            }
            if let Ok(f) = self.rx.try_recv() {
                return f;
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no frame from the download task in time");
            let got = smol::block_on(async {
                let data = async { self.rx.recv().await.ok().map(Ok) };
                let ev = async { self.events.recv().await.ok().map(Err) };
                let timeout = async {
                    smol::Timer::after(left).await;
                    None
                };
                futures_lite::FutureExt::or(futures_lite::FutureExt::or(data, ev), timeout).await
            });
            match got {
                Some(Ok(f)) => return f,
                Some(Err(ev)) => {
                    let now = self.now();
                    self.router.report(ev, now);
                    self.drain();
                }
                None => {}
            }
        }
    }
    /// Feeds reports for `d` without taking frames off the data queue.
    fn settle(&mut self, d: Duration) {
        let until = std::time::Instant::now() + d;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            let ev =
                smol::block_on(futures_lite::FutureExt::or(async { self.events.recv().await.ok() }, async {
                    smol::Timer::after(left).await;
                    None
                }));
            if let Some(ev) = ev {
                let now = self.now();
                self.router.report(ev, now);
                self.drain();
            }
        }
    }
    /// The session ends (as when the server closes it).
    fn close(&mut self) {
        let _ = self.router.kill(SID);
        self.drain();
    }
    fn put(&mut self, req: &UploadRequest<'_>) -> Vec<u8> {
        self.one(&frame(ft::PUT_FILE, &[], &put_body(req)))
    }
    fn chunk(&mut self, offset: i64, data: &[u8]) -> Vec<Vec<u8>> {
        self.serve(&frame(ft::FILE_CHUNK, &[Prop::int64("offset", offset)], data))
    }
    /// Uploads `data` in 4096-byte chunks; returns the reply to the EOF chunk.
    fn upload(&mut self, path: &str, data: &[u8], mode: Option<u32>) -> Result<(), String> {
        let r = self.put(&UploadRequest { path: Some(path), mode, ..Default::default() });
        if typ(&r) == ft::ERROR {
            return Err(err_text(&r));
        }
        assert_eq!(typ(&r), ft::ACK);
        let mut off = 0i64;
        for c in data.chunks(4096) {
            // Most chunks get no reply (acks come every 10 chunks); errors come at once.
            if let Some(r) = self.chunk(off, c).last() {
                if typ(r) == ft::ERROR {
                    return Err(err_text(r));
                }
            }
            off += c.len() as i64;
        }
        let r = self.chunk(off, &[]);
        let r = r.last().expect("reply to EOF");
        if typ(r) == ft::ERROR { Err(err_text(r)) } else { Ok(()) }
    }
    /// Downloads with acks after every chunk; returns the data or the error text.
    fn download(&mut self, path: &str) -> Result<Vec<u8>, String> {
        let r = self.serve(&frame(ft::GET_FILE, &[], &path_body(path)));
        if let Some(e) = r.first() {
            return Err(err_text(e));
        }
        let mut data = Vec::new();
        loop {
            let f = self.recv();
            if typ(&f) == ft::ERROR {
                return Err(err_text(&f));
            }
            let fr = Frame::decode_any_size(&f).unwrap();
            assert_eq!(fr.header.typ, ft::FILE_CHUNK);
            let off = fr.header.props.get_int("offset").and_then(|i| i.as_go_int64()).expect("int64 offset");
            assert_eq!(off, data.len() as i64);
            data.extend_from_slice(fr.body);
            let eof = fr.body.is_empty();
            // Like the server: each ack carries the offset of the chunk it acknowledges.
            let r = self.serve(&frame(ft::ACK, &[Prop::int64("offset", off)], &[]));
            // An empty file is complete at its EOF chunk (the reference does not wait for the
            // ack of offset 0 either, and answers it "no file transfer in progress").
            assert!(r.is_empty() || (eof && off == 0), "unexpected reply to ack");
            if eof {
                return Ok(data);
            }
        }
    }
}

fn typ(bytes: &[u8]) -> String {
    Frame::decode_any_size(bytes).unwrap().header.typ.to_owned()
}

fn err_text(bytes: &[u8]) -> String {
    let f = Frame::decode_any_size(bytes).unwrap();
    assert_eq!(f.header.typ, ft::ERROR, "not an error frame");
    FtError::decode(f.body).unwrap().err.unwrap_or_default().to_owned()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn limits() -> FileTransferLimits {
    FileTransferLimits { follow_symlinks: true, allow_overwrite: true, ..FileTransferLimits::default() }
}

#[test]
fn stat_reports_go_file_info() {
    let d = TempDir::new("stat");
    std::fs::write(d.path("f"), b"hello").unwrap();
    std::fs::set_permissions(d.path("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut h = open_handler();
    let r = h.one(&frame(ft::STAT, &[], &path_body(&d.s("f"))));
    let f = Frame::decode_any_size(&r).unwrap();
    assert_eq!(f.header.typ, ft::FILE_INFO);
    assert_eq!(f.header.sid, SID);
    let info = FileInfo::decode(f.body).unwrap();
    assert_eq!(info.size, Some(5));
    assert_eq!(info.mode, Some(0o640));
    let md = std::fs::metadata(d.path("f")).unwrap();
    assert_eq!(info.uid, Some(md.uid()));
    assert_eq!(info.modtime.map(|t| t.secs), Some(md.mtime()));

    let r = h.one(&frame(ft::STAT, &[], &path_body(&d.s(""))));
    let info = FileInfo::decode(Frame::decode_any_size(&r).unwrap().body).unwrap();
    assert!(!go_file_mode::is_regular(info.mode.unwrap()));
    assert_ne!(info.mode.unwrap() & go_file_mode::DIR, 0);

    let missing = d.s("missing");
    let r = h.one(&frame(ft::STAT, &[], &path_body(&missing)));
    assert_eq!(
        err_text(&r),
        format!("failed to get file info from path '{missing}': stat {missing}: no such file or directory")
    );
    let r = h.one(&frame(ft::STAT, &[], &[0x80]));
    assert_eq!(err_text(&r), "invalid request parameters: path: cannot be blank.");
}

#[test]
fn download_round_trip_and_errors() {
    let d = TempDir::new("get");
    let data = pattern(3 * 4096 + 1808);
    std::fs::write(d.path("f"), &data).unwrap();
    let mut h = open_handler();
    assert_eq!(h.download(&d.s("f")).unwrap(), data);
    std::fs::write(d.path("empty"), b"").unwrap();
    assert_eq!(h.download(&d.s("empty")).unwrap(), Vec::<u8>::new());
    let missing = d.s("nope");
    assert_eq!(
        h.download(&missing).unwrap_err(),
        format!("failed to open file for reading: open {missing}: no such file or directory")
    );
    let dir = d.s("");
    assert_eq!(
        h.download(&dir).unwrap_err(),
        format!("failed to copy file chunk to session: read {dir}: is a directory")
    );
}

#[test]
fn download_keeps_to_the_ack_window() {
    let d = TempDir::new("window");
    const CHUNK: usize = super::DOWNLOAD_CHUNK;
    let data = pattern(30 * CHUNK);
    std::fs::write(d.path("f"), &data).unwrap();
    let mut h = open_handler();
    assert!(h.serve(&frame(ft::GET_FILE, &[], &path_body(&d.s("f")))).is_empty());
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend_from_slice(Frame::decode_any_size(&h.recv()).unwrap().body);
    }
    assert_eq!(got.len(), 20 * CHUNK);
    // Nothing beyond the window until an ack comes (the queue would hold more).
    h.settle(Duration::from_millis(200));
    assert!(h.rx.try_recv().is_err(), "sent beyond the 20-chunk window");
    let r = h.serve(&frame(ft::GET_FILE, &[], &path_body(&d.s("f"))));
    assert_eq!(err_text(&r[0]), "another file transfer is in progress");
    assert!(h.serve(&frame(ft::ACK, &[Prop::int64("offset", (20 * CHUNK) as i64)], &[])).is_empty());
    loop {
        let f = h.recv();
        let fr = Frame::decode_any_size(&f).unwrap();
        if fr.body.is_empty() {
            assert_eq!(fr.header.props.get_i64("offset"), Some((30 * CHUNK) as i64));
            break;
        }
        got.extend_from_slice(fr.body);
    }
    assert_eq!(got, data);
    // An ack whose offset is not int64 on the wire is the reference's error.
    assert!(h.serve(&frame(ft::ACK, &[Prop::go_int("offset", 5)], &[])).is_empty());
    assert_eq!(err_text(&h.recv()), "invalid offset data type: require int64");
}

#[test]
fn stray_and_unknown_messages_get_reference_errors() {
    let mut h = open_handler();
    let r = h.one(&frame(ft::ACK, &[Prop::int64("offset", 0)], &[]));
    assert_eq!(err_text(&r), "no file transfer in progress");
    let r = h.one(&frame(ft::FILE_CHUNK, &[Prop::int64("offset", 0)], b"x"));
    assert_eq!(err_text(&r), "no file transfer in progress");
    let r = h.one(&frame("frobnicate", &[], &[]));
    assert_eq!(err_text(&r), "session: filetransfer message type 'frobnicate' not supported");
    assert_eq!(Frame::decode_any_size(&r).unwrap().header.sid, SID);
}

#[test]
fn upload_round_trip_is_atomic() {
    let d = TempDir::new("put");
    let data = pattern(11 * 4096 + 17);
    let target = d.s("up.bin");
    let mut h = open_handler();
    let r = h.put(&UploadRequest { path: Some(&target), mode: Some(0o600), ..Default::default() });
    let f = Frame::decode_any_size(&r).unwrap();
    assert_eq!((f.header.typ, f.header.props.get_i64("offset")), (ft::ACK, Some(0)));
    let mut off = 0;
    for (i, c) in data.chunks(4096).enumerate() {
        let acks = h.chunk(off, c);
        // Every 10th chunk is acked, with that chunk's offset (the server's window is 20).
        if (i + 1) % 10 == 0 {
            assert_eq!(acks.len(), 1);
            let a = Frame::decode_any_size(&acks[0]).unwrap();
            assert_eq!((a.header.typ, a.header.props.get_i64("offset")), (ft::ACK, Some(off)));
        } else {
            assert!(acks.is_empty(), "chunk {i} acked");
        }
        off += c.len() as i64;
        // No partial file at the target and no visible temporary file while receiving.
        assert!(entries(&d.0).is_empty(), "visible during upload: {:?}", entries(&d.0));
    }
    let a = h.chunk(off, &[]);
    assert_eq!(typ(&a[0]), ft::ACK);
    assert_eq!(std::fs::read(&target).unwrap(), data);
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(entries(&d.0), vec!["up.bin".to_owned()]);
    // Overwrite is allowed without limits.
    h.upload(&target, b"second", None).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"second");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn transfers_are_bounded_by_the_sessions_only() {
    // One transfer per session, and nothing else: core's fixed tables refuse past their
    // capacity ("too many file transfers in progress on this device"), the daemon's grows.
    let d = TempDir::new("many");
    let mut h = open_handler();
    let n = 12;
    for i in 0..n {
        let (sid, target) = (format!("session-{i}"), d.s(&format!("f{i}")));
        let body = put_body(&UploadRequest { path: Some(&target), ..Default::default() });
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let len = FrameOut {
            proto: Proto::FILE_TRANSFER,
            typ: ft::PUT_FILE,
            sid: &sid,
            body: &body,
            ..FrameOut::EMPTY
        }
        .encode(&mut buf)
        .unwrap();
        let r = h.one(&buf[..len]);
        assert_eq!(typ(&r), ft::ACK, "upload {i} refused: {}", err_text(&r));
    }
    assert_eq!(h.router.device().transfers().iter().count(), n);
}

#[test]
fn aborted_upload_leaves_nothing() {
    let d = TempDir::new("abort");
    std::fs::write(d.path("keep"), b"old content").unwrap();
    for how in ["close", "error", "bad-offset"] {
        let mut h = open_handler();
        assert_eq!(typ(&h.put(&UploadRequest { path: Some(&d.s("new")), ..Default::default() })), ft::ACK);
        h.chunk(0, &pattern(4096));
        let mut h2 = open_handler();
        assert_eq!(typ(&h2.put(&UploadRequest { path: Some(&d.s("keep")), ..Default::default() })), ft::ACK);
        h2.chunk(0, b"partial");
        match how {
            "close" => {
                h.close();
                h2.close();
            }
            "error" => {
                let mut b = vec![0u8; 256];
                let n = FtError { err: Some("user abort"), ..Default::default() }.encode(&mut b).unwrap();
                assert!(h.serve(&frame(ft::ERROR, &[], &b[..n])).is_empty());
                assert!(h2.serve(&frame(ft::ERROR, &[], &b[..n])).is_empty());
            }
            _ => {
                assert_eq!(err_text(&h.chunk(99, b"x")[0]), "received unexpected chunk offset");
                assert_eq!(err_text(&h2.chunk(99, b"x")[0]), "received unexpected chunk offset");
            }
        }
        assert_eq!(entries(&d.0), vec!["keep".to_owned()], "after {how}");
        assert_eq!(std::fs::read(d.path("keep")).unwrap(), b"old content");
    }
}

#[test]
fn upload_target_errors_and_directories() {
    let d = TempDir::new("puterr");
    let mut h = open_handler();
    let missing = d.s("no/such/dir/f");
    let e = h.upload(&missing, b"x", None).unwrap_err();
    assert!(e.starts_with("failed to create target file: "), "{e}");
    assert!(e.ends_with("no such file or directory"), "{e}");
    std::fs::create_dir(d.path("sub")).unwrap();
    assert_eq!(
        h.upload(&d.s("sub"), b"x", None).unwrap_err(),
        "conflicting file path: cannot overwrite directory"
    );
    let r = h.put(&UploadRequest {
        path: Some(&d.s("sub")),
        src_path: Some("/home/me/source.txt"),
        ..Default::default()
    });
    assert_eq!(typ(&r), ft::ACK);
    h.chunk(0, b"abc");
    h.chunk(3, &[]);
    assert_eq!(std::fs::read(d.path("sub/source.txt")).unwrap(), b"abc");
    std::os::unix::fs::symlink("/etc/passwd", d.path("link")).unwrap();
    assert_eq!(
        h.upload(&d.s("link"), b"x", None).unwrap_err(),
        "conflicting file path: cannot overwrite irregular file"
    );
    let r = h.one(&frame(ft::PUT_FILE, &[], &put_body(&UploadRequest::default())));
    assert_eq!(err_text(&r), "invalid request parameters: path: cannot be blank.");
    // A chunk without an int64 offset.
    assert_eq!(typ(&h.put(&UploadRequest { path: Some(&d.s("o")), ..Default::default() })), ft::ACK);
    let r = h.serve(&frame(ft::FILE_CHUNK, &[], b"x"));
    assert_eq!(err_text(&r[0]), "invalid file chunk message: missing offset property");
    // The error answers the put_file request.
    assert_eq!(
        FtError::decode(Frame::decode_any_size(&r[0]).unwrap().body).unwrap().msgtype,
        Some(ft::PUT_FILE)
    );
}

fn chroot_setup(tag: &str) -> (TempDir, FileTransferLimits) {
    let d = TempDir::new(tag);
    std::fs::create_dir_all(d.path("root/sub")).unwrap();
    std::fs::write(d.path("secret"), b"outside").unwrap();
    std::fs::write(d.path("root/inside"), b"inside").unwrap();
    let l = FileTransferLimits { chroot: Some(d.path("root")), ..limits() };
    (d, l)
}

const OUTSIDE: &str = "access denied: the target file path is outside chroot";

#[test]
fn chroot_refuses_dotdot_and_prefix_tricks() {
    let (d, l) = chroot_setup("dotdot");
    let mut h = handler(settings(true, l));
    assert_eq!(h.download(&d.s("root/inside")).unwrap(), b"inside");
    assert_eq!(h.download(&d.s("root/../secret")).unwrap_err(), OUTSIDE);
    assert_eq!(h.download(&d.s("root/sub/../../secret")).unwrap_err(), OUTSIDE);
    assert_eq!(h.download(&d.s("secret")).unwrap_err(), OUTSIDE);
    std::fs::create_dir(d.path("rootx")).unwrap();
    std::fs::write(d.path("rootx/f"), b"x").unwrap();
    assert_eq!(h.download(&d.s("rootx/f")).unwrap_err(), OUTSIDE);
    assert_eq!(h.upload(&d.s("root/../escaped"), b"x", None).unwrap_err(), OUTSIDE);
    let r = h.one(&frame(ft::STAT, &[], &path_body(&d.s("root/../secret"))));
    assert_eq!(err_text(&r), OUTSIDE);
    assert!(!d.path("escaped").exists());
    // The chroot itself as target directory, with a source name.
    let r = h.put(&UploadRequest {
        path: Some(&d.s("root")),
        src_path: Some("local/name.txt"),
        ..Default::default()
    });
    assert_eq!(typ(&r), ft::ACK);
    h.chunk(0, b"n");
    assert_eq!(typ(&h.chunk(1, &[])[0]), ft::ACK);
    assert_eq!(std::fs::read(d.path("root/name.txt")).unwrap(), b"n");
    // A source name cannot smuggle a path: only its last component is used.
    let r = h.put(&UploadRequest {
        path: Some(&d.s("root/sub")),
        src_path: Some("../../x/../evil"),
        ..Default::default()
    });
    assert_eq!(typ(&r), ft::ACK);
    h.chunk(0, &[]);
    assert!(d.path("root/sub/evil").exists());
}

#[test]
fn chroot_refuses_symlinks_out() {
    let (d, l) = chroot_setup("symlinks");
    std::os::unix::fs::symlink(d.path("secret"), d.path("root/abs")).unwrap();
    std::os::unix::fs::symlink("../secret", d.path("root/rel")).unwrap();
    std::os::unix::fs::symlink("/", d.path("root/sub/top")).unwrap();
    std::os::unix::fs::symlink(d.path(""), d.path("root/outdir")).unwrap();
    std::os::unix::fs::symlink("inside", d.path("root/ok")).unwrap();
    let mut h = handler(settings(true, l.clone()));
    assert_eq!(h.download(&d.s("root/abs")).unwrap_err(), OUTSIDE);
    assert_eq!(h.download(&d.s("root/rel")).unwrap_err(), OUTSIDE);
    assert_eq!(h.download(&format!("{}/etc/passwd", d.s("root/sub/top"))).unwrap_err(), OUTSIDE);
    assert_eq!(h.upload(&d.s("root/outdir/planted"), b"x", None).unwrap_err(), OUTSIDE);
    assert!(!d.path("planted").exists());
    // A symlink that stays inside is fine when following is allowed ...
    assert_eq!(h.download(&d.s("root/ok")).unwrap(), b"inside");
    // ... and refused when it is not.
    let mut h = handler(settings(true, FileTransferLimits { follow_symlinks: false, ..l }));
    assert_eq!(h.download(&d.s("root/ok")).unwrap_err(), "access denied: forbidden to follow the link");
    assert_eq!(h.download(&d.s("root/inside")).unwrap(), b"inside");
}

#[test]
fn symlink_swapped_in_during_upload_cannot_redirect_it() {
    let (d, l) = chroot_setup("swap");
    std::fs::create_dir(d.path("elsewhere")).unwrap();
    let mut h = handler(settings(true, l));
    assert_eq!(typ(&h.put(&UploadRequest { path: Some(&d.s("root/sub/f")), ..Default::default() })), ft::ACK);
    h.chunk(0, b"hello ");
    // The directory is moved away and replaced with a symlink out of the chroot.
    std::fs::rename(d.path("root/sub"), d.path("root/moved")).unwrap();
    std::os::unix::fs::symlink(d.path("elsewhere"), d.path("root/sub")).unwrap();
    h.chunk(6, b"world");
    assert_eq!(typ(&h.chunk(11, &[])[0]), ft::ACK);
    assert!(entries(&d.path("elsewhere")).is_empty());
    assert_eq!(std::fs::read(d.path("root/moved/f")).unwrap(), b"hello world");
    // A new transfer through the swapped-in link is refused.
    assert_eq!(h.download(&d.s("root/sub/f")).unwrap_err(), OUTSIDE);
}

#[test]
fn special_files_are_not_read() {
    let (d, l) = chroot_setup("special");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        d.path("root/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let dev = rustix::fs::mknodat(
        rustix::fs::CWD,
        d.path("root/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(1, 3),
    );
    let mut h = handler(settings(true, l));
    assert_eq!(h.download(&d.s("root/fifo")).unwrap_err(), "access denied: only regular files are allowed");
    if dev.is_ok() {
        assert_eq!(
            h.download(&d.s("root/null")).unwrap_err(),
            "access denied: only regular files are allowed"
        );
    }
    // Even without limits a FIFO is not opened for a blocking read.
    let mut h = open_handler();
    assert_eq!(h.download(&d.s("root/fifo")).unwrap_err(), "access denied: only regular files are allowed");
}

#[test]
fn limit_keys() {
    let d = TempDir::new("limits");
    std::fs::write(d.path("f"), pattern(10_000)).unwrap();
    std::fs::create_dir(d.path("dir")).unwrap();
    let lim = |f: &dyn Fn(&mut FileTransferLimits)| {
        let mut l = limits();
        f(&mut l);
        handler(settings(true, l))
    };
    // MaxFileSize
    let mut h = lim(&|l| l.max_file_size = Some(9_999));
    assert_eq!(h.download(&d.s("f")).unwrap_err(), "access denied: the file size is over the limit");
    assert_eq!(
        h.upload(&d.s("big"), &pattern(10_000), None).unwrap_err(),
        "failed to write file chunk: transmitted bytes limit exhausted"
    );
    assert!(!d.path("big").exists());
    let r = h.put(&UploadRequest { path: Some(&d.s("big")), size: Some(10_000), ..Default::default() });
    assert_eq!(err_text(&r), "access denied: the file size is over the limit");
    // AllowOverwrite
    let mut h = lim(&|l| l.allow_overwrite = false);
    assert_eq!(
        h.upload(&d.s("f"), b"x", None).unwrap_err(),
        "access denied: forbidden to overwrite the file"
    );
    h.upload(&d.s("fresh"), b"x", None).unwrap();
    // RegularFilesOnly
    let mut h = lim(&|l| l.regular_files_only = true);
    assert_eq!(h.download(&d.s("dir")).unwrap_err(), "access denied: only regular files are allowed");
    // OwnerGet / GroupGet (the files belong to the test user, never to `nobody`/`nogroup`).
    let mut h = lim(&|l| l.owner_get = vec!["nobody".into()]);
    assert_eq!(h.download(&d.s("f")).unwrap_err(), "access denied: the file owner does not match");
    let me = crate::os::users::lookup_user(&whoami()).unwrap().unwrap();
    let mut h = lim(&|l| l.owner_get = vec!["nobody".into(), whoami()]);
    assert_eq!(h.download(&d.s("f")).unwrap().len(), 10_000);
    let mut h = lim(&|l| l.group_get = vec!["nogroup".into()]);
    assert_eq!(h.download(&d.s("f")).unwrap_err(), "access denied: the file group does not match");
    // Suid
    let mut h = lim(&|_| {});
    assert_eq!(
        h.upload(&d.s("s"), b"x", Some(go_file_mode::SETUID | 0o755)).unwrap_err(),
        "access denied: the set uid mode is forbidden"
    );
    assert_eq!(
        h.upload(&d.s("s"), b"x", Some(0o4755)).unwrap_err(),
        "access denied: the set uid mode is forbidden"
    );
    assert!(!d.path("s").exists());
    // Umask: the reference sets 0777 &^ umask whatever was requested.
    let mut h = lim(&|l| l.umask = Some(0o027));
    h.upload(&d.s("u"), b"x", Some(0o600)).unwrap();
    assert_eq!(std::fs::metadata(d.path("u")).unwrap().permissions().mode() & 0o7777, 0o750);
    // OwnerPut / GroupPut / OwnerPut check on overwrite
    if rustix::process::geteuid().is_root() {
        let nobody = crate::os::users::lookup_user("nobody").unwrap().unwrap();
        let mut h = lim(&|l| l.owner_put = Some("nobody".into()));
        assert_eq!(
            h.upload(&d.s("f"), b"x", None).unwrap_err(),
            "access denied: the file owner does not match"
        );
        h.upload(&d.s("owned"), b"x", None).unwrap();
        assert_eq!(std::fs::metadata(d.path("owned")).unwrap().uid(), nobody.uid);
        h.upload(&d.s("owned"), b"y", None).unwrap();
        assert_eq!(std::fs::read(d.path("owned")).unwrap(), b"y");
        let mut h = lim(&|l| l.group_put = Some("nogroup".into()));
        assert_eq!(
            h.upload(&d.s("f"), b"x", None).unwrap_err(),
            "access denied: the file group does not match"
        );
        // AllowSuid keeps the bit (after chown, which clears it).
        let mut h = lim(&|l| l.allow_suid = true);
        h.upload(&d.s("suid"), b"x", Some(go_file_mode::SETUID | 0o755)).unwrap();
        assert_eq!(std::fs::metadata(d.path("suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    }
    let _ = me;
}

fn whoami() -> String {
    let uid = rustix::process::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_owned())
        })
        .unwrap()
}

#[test]
fn rate_counters_stop_transfers() {
    let d = TempDir::new("rates");
    std::fs::write(d.path("f"), pattern(100)).unwrap();
    let mut l = limits();
    l.counters.max_bytes_tx_per_minute = Some(1024);
    l.counters.max_bytes_rx_per_minute = Some(1024);
    // A MiB each way fills the counters; their per-minute averages move on the 5 s tick.
    std::fs::write(d.path("big"), pattern(1 << 20)).unwrap();
    let mut h = handler(settings(true, l));
    assert_eq!(h.download(&d.s("big")).unwrap().len(), 1 << 20);
    h.upload(&d.s("up"), &pattern(1 << 20), None).unwrap();
    h.skew += Duration::from_secs(5);
    assert_eq!(h.download(&d.s("f")).unwrap_err(), "transmitted bytes limit exhausted");
    let r = h.put(&UploadRequest { path: Some(&d.s("g")), ..Default::default() });
    assert_eq!(err_text(&r), "transmitted bytes limit exhausted");
    // Without Limits.Enabled the counters do not apply.
    let mut l = limits();
    l.counters.max_bytes_tx_per_minute = Some(1);
    let mut h = handler(settings(false, l));
    assert_eq!(h.download(&d.s("big")).unwrap().len(), 1 << 20);
    h.skew += Duration::from_secs(5);
    assert_eq!(h.download(&d.s("f")).unwrap().len(), 100);
}

/// The `code` of an error body (go-lib-micro `ws.Error.Code`), if present.
fn err_code(bytes: &[u8]) -> Option<u16> {
    let f = Frame::decode_any_size(bytes).unwrap();
    assert_eq!(f.header.typ, ft::ERROR, "not an error frame");
    let code = FtError::decode(f.body).unwrap().code;
    (code != 0).then(|| u16::try_from(code).unwrap())
}

#[test]
fn policy_refusals_carry_the_status_the_server_should_answer() {
    let (d, l) = chroot_setup("codes");
    let mut h = handler(settings(true, FileTransferLimits { owner_get: vec!["nobody".into()], ..l }));
    // stat outside the chroot: refused with 500, so the server hides it as for the reference.
    let r = h.one(&frame(ft::STAT, &[], &path_body(&d.s("secret"))));
    assert_eq!(err_text(&r), OUTSIDE);
    assert_eq!(err_code(&r), Some(500));
    // get_file refused by a limit: 403 with the text (from the download's task).
    assert!(h.serve(&frame(ft::GET_FILE, &[], &path_body(&d.s("root/inside")))).is_empty());
    let r = h.recv();
    assert_eq!(err_text(&r), "access denied: the file owner does not match");
    assert_eq!(err_code(&r), Some(403));
    // OS errors keep the reference's code-less reply (the server's default status).
    let r = h.one(&frame(ft::STAT, &[], &path_body(&d.s("root/missing"))));
    assert!(err_text(&r).ends_with("no such file or directory"), "{}", err_text(&r));
    assert_eq!(err_code(&r), None);
    assert!(h.serve(&frame(ft::GET_FILE, &[], &path_body(&d.s("root/missing")))).is_empty());
    assert_eq!(err_code(&h.recv()), None);
}

/// Issue 16, finding 7: with `RegularFilesOnly` the type was checked after the open, and
/// opening a FIFO released a writer blocked in its own open (opening `/dev/watchdog` would arm
/// it). The writer here must stay blocked through a refused download and a refused upload.
#[test]
fn policy_is_decided_before_anything_is_opened() {
    use std::os::unix::fs::OpenOptionsExt;
    let d = TempDir::new("fifo-writer");
    let fifo = d.path("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo).is_ok())
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut h = handler(settings(true, FileTransferLimits { regular_files_only: true, ..limits() }));
    assert_eq!(h.download(&d.s("fifo")).unwrap_err(), "access denied: only regular files are allowed");
    assert_eq!(
        h.upload(&d.s("fifo"), b"x", None).unwrap_err(),
        "conflicting file path: cannot overwrite irregular file"
    );
    std::thread::sleep(Duration::from_millis(300));
    let released = writer.is_finished();
    // Let the writer go in any case, then judge.
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    assert!(writer.join().unwrap());
    assert!(!released, "checking the FIFO opened it: its blocked writer was released");
}

/// Issue 16, finding 9: the temporary name `.{name}.{8 hex}.mender-connect` was longer than
/// NAME_MAX (255) for long names, so a 240-character file name could not be uploaded (the
/// named fallback `{name}.{10 hex}` too).
#[test]
fn long_names_upload() {
    let d = TempDir::new("long-name");
    let name = "n".repeat(240);
    let mut h = open_handler();
    h.upload(&d.s(&name), b"long", None).unwrap();
    assert_eq!(std::fs::read(d.path(&name)).unwrap(), b"long");
    let mut h = handler(settings(true, limits()));
    h.upload(&d.s(&name), b"again", None).unwrap();
    assert_eq!(std::fs::read(d.path(&name)).unwrap(), b"again");
    assert_eq!(entries(&d.0), vec![name.clone()]);
}

/// The temporary file of file systems without `O_TMPFILE`: a short name that cannot be guessed.
#[test]
fn named_temporary_files_are_short_and_random() {
    let d = TempDir::new("named-temp");
    let name = "n".repeat(240);
    let dir = rustix::fs::open(
        &d.0,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let jail = crate::os::chroot::Jail::default();
    let (fd, temp) = super::create_named_temp(&jail, &dir, &d.s(&name)).unwrap();
    let temp = temp.unwrap();
    assert!(temp.len() <= 32, "{temp}");
    drop(fd);
    let other = super::create_named_temp(&jail, &dir, &d.s(&name)).unwrap().1.unwrap();
    assert_ne!(temp, other, "temporary names must not be predictable");
}

/// The upload errors no other test reaches (they need a failing chmod, chown or rename) keep the
/// reference's texts, as they were written before the error was typed.
#[test]
fn upload_error_texts_are_the_references() {
    use super::{OwnerProblem, PathError, TempError, UploadError};
    use rustix::io::Errno;
    let p = |op| PathError::new(op, "/data/f", Errno::ACCESS);
    let cases: Vec<(UploadError, &str)> = vec![
        (UploadError::Chmod(p("chmod")), "failed to set file permissions: chmod /data/f: permission denied"),
        (UploadError::Chown(p("chown")), "failed to set file owner: chown /data/f: permission denied"),
        (
            UploadError::PreserveOwner { uid: 7, gid: 8, why: OwnerProblem::UnknownUser("bob".into()) },
            "failed to preserve file owner/group 7/8: user: unknown user bob",
        ),
        (
            UploadError::PreserveOwner { uid: 7, gid: 8, why: OwnerProblem::UnknownGroup("staff".into()) },
            "failed to preserve file owner/group 7/8: group: unknown group staff",
        ),
        (
            UploadError::PreserveOwner { uid: 7, gid: 8, why: OwnerProblem::Chown(p("chown")) },
            "failed to preserve file owner/group 7/8: chown /data/f: permission denied",
        ),
        (
            UploadError::PreserveMode { mode: 0o4755, why: p("chmod") },
            "failed to preserve file mode (4755): chmod /data/f: permission denied",
        ),
        (
            UploadError::Commit(p("rename")),
            "failed to commit uploaded file: rename /data/f: permission denied",
        ),
        (UploadError::Locate(p("lstat")), "error checking file location: lstat /data/f: permission denied"),
        (
            UploadError::Create(TempError::Os(p("open"))),
            "failed to create target file: failed to create file: open /data/f: permission denied",
        ),
        (UploadError::Write(p("write")), "failed to write file chunk: write /data/f: permission denied"),
        (UploadError::RxLimit, "transmitted bytes limit exhausted"),
        (UploadError::InProgress, "another file transfer is in progress"),
    ];
    for (e, text) in cases {
        assert_eq!(e.to_string(), text);
    }
    // The limits reached amid an upload are core's to answer.
    use mender_connect_core::transfers::Failure;
    assert_eq!(
        Failure::WriteLimit.to_string(),
        "failed to write file chunk: transmitted bytes limit exhausted"
    );
}

/// As above for downloads: the texts written before the error was typed, and which of them a
/// limit gives (answered with code 403) rather than the OS.
#[test]
fn download_error_texts_are_the_references() {
    use super::{DownloadError, PathError};
    use crate::os::chroot::JailError;
    use rustix::io::Errno;
    let cases: Vec<(DownloadError, &str, bool)> = vec![
        (
            DownloadError::Jail(JailError::OutsideChroot),
            "access denied: the target file path is outside chroot",
            true,
        ),
        (
            DownloadError::Policy("the file owner does not match"),
            "access denied: the file owner does not match",
            true,
        ),
        (
            DownloadError::Open(PathError::new("stat", "/data/f", Errno::ACCESS)),
            "failed to open file for reading: stat /data/f: permission denied",
            false,
        ),
        (DownloadError::Busy, "failed to open file for reading: too many file reads in progress", false),
        (
            DownloadError::Thread(std::io::Error::other("no threads")),
            "failed to open file for reading: no threads",
            false,
        ),
        (
            DownloadError::OpenTimeout("/data/f".into()),
            "failed to open file for reading: open /data/f: i/o timeout",
            false,
        ),
        (
            DownloadError::Read {
                path: "/data/f".into(),
                error: std::io::Error::from_raw_os_error(libc::EIO),
            },
            "failed to copy file chunk to session: read /data/f: input/output error",
            false,
        ),
        (
            DownloadError::Read {
                path: "/data/f".into(),
                error: std::io::Error::new(std::io::ErrorKind::TimedOut, "i/o timeout"),
            },
            "failed to copy file chunk to session: read /data/f: i/o timeout",
            false,
        ),
    ];
    for (e, text, by_policy) in cases {
        assert_eq!((e.to_string().as_str(), e.by_policy()), (text, by_policy));
    }
    // The Tx limit and a message other than an ack during a download are core's to answer.
    use mender_connect_core::transfers::Failure;
    assert_eq!(Failure::TxLimit.to_string(), "transmitted bytes limit exhausted");
}
