//! A download's open and reads, off the event loop's thread.
//!
//! The event loop serves every session on one thread, so one read that never returns
//! (`/proc/kmsg`, a FIFO, a character device, a `/sys` attribute, a hung FUSE or NFS file)
//! froze the daemon: no session, no ping, not even SIGTERM. Here the open, the policy checks
//! and every read that might block run on a thread of the download's own; the session's task
//! waits for it with a deadline ([`OPEN_WAIT`], [`READ_WAIT`]) and, when it gives up or the
//! session ends, interrupts the thread with a signal whose handler does nothing and does not ask
//! for restarted system calls: the blocked `read` returns `EINTR` and the thread ends.
//!
//! Regular files on a disk file system are the exception: once opened and checked, they are read
//! on the session's task, as before, because their pages come from the page cache or read-ahead
//! in microseconds and a hand-over per chunk would cost two thread wake-ups.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_lite::FutureExt;

use super::{DOWNLOAD_CHUNK, DownloadError, Settings};

/// How long a download's open and checks may take.
pub(super) const OPEN_WAIT: Duration = Duration::from_secs(30);
/// How long a read may go without returning anything before the download fails.
pub(super) const READ_WAIT: Duration = Duration::from_secs(60);
/// Download threads alive at most (one per download of a non-disk file, plus opens); a thread
/// stuck in an uninterruptible wait stays counted, which is what it costs.
const MAX_THREADS: usize = 32;
/// Chunks a reader thread reads ahead of the session's task.
const READ_AHEAD: usize = 2;
/// How often, and how many times, a thread that has not ended is signalled again (the first
/// signal can arrive just before it enters `read`).
const KICK_EVERY: Duration = Duration::from_millis(100);
const KICKS: u32 = 50;

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Go's text for a deadline that passed (`os.ErrDeadlineExceeded`).
pub(super) const TIMEOUT_TEXT: &str = "i/o timeout";

/// Where a download's bytes come from.
pub(super) enum Source {
    /// A regular file on a disk file system, read in place.
    Local(std::fs::File),
    /// Everything else: read by the download's thread.
    Thread(Reader),
}

impl Source {
    pub(super) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Local(f) => io::Read::read(f, buf),
            Source::Thread(r) => r.read(buf).await,
        }
    }
}

/// The receiving end of a reader thread.
pub(super) struct Reader {
    // Declared before `thread`: the channel closes first, so a thread blocked in handing over a
    // chunk ends by itself.
    rx: async_channel::Receiver<io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    at: usize,
    _thread: Interrupter,
}

impl Reader {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.pending.len() {
            let next = async { Some(self.rx.recv().await) }
                .or(async {
                    smol::Timer::after(READ_WAIT).await;
                    None
                })
                .await;
            match next {
                None => return Err(io::Error::new(io::ErrorKind::TimedOut, TIMEOUT_TEXT)),
                // The thread ended after the end of the file or an error, both sent already.
                Some(Err(_)) => return Ok(0),
                Some(Ok(Err(e))) => return Err(e),
                Some(Ok(Ok(chunk))) => {
                    self.pending = chunk;
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Opens and checks `path` for a download (`super::open_checked`) on a thread; reads it there
/// too unless it is a regular file on a disk file system.
pub(super) async fn open(settings: Arc<Settings>, path: String) -> Result<(Source, i64), DownloadError> {
    if THREADS.fetch_add(1, Ordering::AcqRel) >= MAX_THREADS {
        THREADS.fetch_sub(1, Ordering::AcqRel);
        return Err(DownloadError::Busy);
    }
    install_handler();
    let (opened_tx, opened_rx) = async_channel::bounded(1);
    let (data_tx, data_rx) = async_channel::bounded(READ_AHEAD);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_path = path.clone();
    let thread_stop = Arc::clone(&stop);
    let spawned = std::thread::Builder::new().name("ft-read".into()).stack_size(64 * 1024).spawn(move || {
        struct Count;
        impl Drop for Count {
            fn drop(&mut self) {
                THREADS.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _count = Count;
        let file = match super::open_checked(&settings, &thread_path) {
            Ok((file, size)) if on_disk(&file) => {
                let _ = opened_tx.send_blocking(Ok((Some(file), size)));
                return;
            }
            Ok((file, size)) => {
                if opened_tx.send_blocking(Ok((None, size))).is_err() {
                    return;
                }
                file
            }
            Err(refusal) => {
                let _ = opened_tx.send_blocking(Err(refusal));
                return;
            }
        };
        pump(&file, &data_tx, &thread_stop);
    });
    let handle = match spawned {
        Ok(h) => h,
        Err(e) => {
            THREADS.fetch_sub(1, Ordering::AcqRel);
            return Err(DownloadError::Thread(e));
        }
    };
    let thread = Interrupter { stop, handle: Some(handle) };
    let opened = async { opened_rx.recv().await.ok() }
        .or(async {
            smol::Timer::after(OPEN_WAIT).await;
            None
        })
        .await;
    match opened {
        Some(Ok((Some(file), size))) => {
            thread.detach();
            Ok((Source::Local(file), size))
        }
        Some(Ok((None, size))) => {
            Ok((Source::Thread(Reader { rx: data_rx, pending: Vec::new(), at: 0, _thread: thread }), size))
        }
        Some(Err(refusal)) => {
            thread.detach();
            Err(refusal)
        }
        None => Err(DownloadError::OpenTimeout(path)),
    }
}

/// The reader thread's loop: chunks into `tx` until the end of the file, an error, or `stop`.
fn pump(file: &std::fs::File, tx: &async_channel::Sender<io::Result<Vec<u8>>>, stop: &AtomicBool) {
    loop {
        let mut buf = vec![0u8; DOWNLOAD_CHUNK];
        let n = loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            match rustix::io::read(file.as_fd(), &mut buf) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    let _ = tx.send_blocking(Err(io::Error::from_raw_os_error(e.raw_os_error())));
                    return;
                }
            }
        };
        buf.truncate(n);
        if tx.send_blocking(Ok(buf)).is_err() || n == 0 {
            return;
        }
    }
}

/// Whether `file` is a regular file on a file system whose reads only wait for the disk.
fn on_disk(file: &std::fs::File) -> bool {
    // statfs(2) magic numbers of local block-device and memory file systems; anything else
    // (proc, sysfs, debugfs, tracefs, configfs, FUSE, NFS, CIFS, ...) goes through the thread.
    const DISK: &[u64] = &[
        0x0000_EF53, // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0xF2F5_2010, // f2fs
        0x0102_1994, // tmpfs
        0x8584_58F6, // ramfs
        0x7371_7368, // squashfs
        0xE0F5_E1E2, // erofs
        0x2405_1905, // ubifs
        0x0000_72B6, // jffs2
        0x0000_4D44, // vfat, msdos
        0x2011_BAB0, // exfat
        0x794C_7630, // overlayfs (over the above on most devices)
    ];
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    regular
        && rustix::fs::fstatfs(file).is_ok_and(|st| {
            #[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // c_long or c_ulong by libc
            let magic = st.f_type as u64 & 0xFFFF_FFFF;
            DISK.contains(&magic)
        })
}

/// The signal that interrupts a reader thread: a real-time one nothing else in the process uses.
fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn on_interrupt(_: libc::c_int) {}

fn install_handler() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe (it does
        // nothing). No SA_RESTART: the interrupted read must return EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(interrupt_signal(), &sa, std::ptr::null_mut()) != 0 {
                log::error!("cannot install the file-read interrupt handler: {}", io::Error::last_os_error());
            }
        }
    });
}

/// Stops a reader thread when dropped: sets its flag and signals it until it ends.
struct Interrupter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Interrupter {
    /// For a thread that is ending by itself (it has handed over its last message).
    fn detach(mut self) {
        drop(self.handle.take());
    }
}

fn kick(handle: &JoinHandle<()>) {
    // SAFETY: the thread is neither joined nor detached while its handle lives, so its
    // pthread_t is valid even if it has ended.
    unsafe {
        // std's `RawPthread` is an integer; musl's `pthread_t` a pointer.
        #[allow(clippy::unnecessary_cast)]
        libc::pthread_kill(handle.as_pthread_t() as libc::pthread_t, interrupt_signal());
    }
}

impl Drop for Interrupter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let Some(handle) = self.handle.take() else { return };
        if handle.is_finished() {
            let _ = handle.join();
            return;
        }
        kick(&handle);
        crate::os::runtime::spawn(async move {
            for _ in 0..KICKS {
                smol::Timer::after(KICK_EVERY).await;
                if handle.is_finished() {
                    let _ = handle.join();
                    return;
                }
                kick(&handle);
            }
            // In an uninterruptible wait (a hard NFS mount): left to end when it can.
            log::warn!("a file read does not return; leaving its thread behind");
        })
        .detach();
    }
}
