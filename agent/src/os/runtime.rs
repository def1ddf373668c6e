//! Where the daemon's tasks run: one executor, driven by the main thread.
//!
//! smol's global executor runs tasks on a thread of its own while the event loop runs on the
//! main thread, so every terminal frame crossed threads twice and the idle daemon woke three
//! threads per keep-alive. Here every task runs on the thread that calls [`block_on`]; the only
//! other thread is async-io's reactor thread, which sleeps in `epoll_wait` until something
//! happens. `futures_lite`'s `block_on` is used on purpose instead of `async_io::block_on`: the
//! latter makes the main thread and async-io's thread hand the reactor back and forth, and the
//! reactor thread then naps and retries (about ten timed sleeps per hand-over), which was most
//! of the idle wake-ups.
//!
//! Code that runs outside the daemon (unit tests, tools driving a router with `smol::block_on`)
//! gets a fallback executor from [`spawn`], run by a thread of its own like smol's global one,
//! so nothing waits for an executor nobody runs. It is not smol's global executor because that
//! one also starts async-process's child reaper, which links ~12 KB into the daemon for code
//! the daemon never runs (docs/binary-size.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use smol::{Executor, Task};

static EXECUTOR: Executor<'static> = Executor::new();
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Spawns `future` on the daemon's executor (or, when no [`block_on`] runs, on the fallback).
///
/// The future is boxed first so that the executor's task machinery (its raw task's waker,
/// schedule and drop functions, the spawn path of both executors) is instantiated once per
/// output type rather than once per future type (docs/binary-size.md).
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    spawn_boxed(Box::pin(future))
}

fn spawn_boxed<T: Send + 'static>(future: Pin<Box<dyn Future<Output = T> + Send + 'static>>) -> Task<T> {
    if RUNNING.load(Ordering::Acquire) { EXECUTOR.spawn(future) } else { fallback().spawn(future) }
}

/// The executor for code that runs outside [`block_on`]; its thread is started on first use
/// and runs for the rest of the process.
fn fallback() -> &'static Executor<'static> {
    static FALLBACK: Executor<'static> = Executor::new();
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::Builder::new()
            .name("executor".into())
            .spawn(|| futures_lite::future::block_on(FALLBACK.run(std::future::pending::<()>())))
            .expect("cannot start the executor thread");
    });
    &FALLBACK
}

/// Sends every later [`spawn`] to the daemon's executor, before [`block_on`] starts driving
/// it (the auth service starts its tasks first); they run once [`block_on`] does.
pub fn claim() {
    RUNNING.store(true, Ordering::Release);
}

/// Runs `future` and every task spawned meanwhile on the calling thread until `future` ends.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            RUNNING.store(false, Ordering::Release);
        }
    }
    RUNNING.store(true, Ordering::Release);
    let _running = Running;
    futures_lite::future::block_on(EXECUTOR.run(future))
}

/// The soft `RLIMIT_NOFILE` the daemon was started with, if [`raise_nofile_limit`] changed it
/// (`u64::MAX`: unchanged), and the hard limit, for [`restore_nofile_limit`].
static ORIGINAL_NOFILE: AtomicU64 = AtomicU64::new(u64::MAX);
static HARD_NOFILE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raises the soft limit on open files to the hard limit, as Go's runtime does at start (the
/// reference gets it for free): the daemon's sockets, ptys and files are bounded by its own
/// limits, not by the 1024 a service manager may hand out. Returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (lim.current, lim.maximum) else { return lim.current };
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
        Ok(()) => {
            HARD_NOFILE.store(hard, Ordering::Relaxed);
            ORIGINAL_NOFILE.store(soft, Ordering::Relaxed);
            log::debug!("open files limit raised from {soft} to {hard}");
            Some(hard)
        }
        Err(e) => {
            log::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            Some(soft)
        }
    }
}

/// In a forked child before exec: gives programs the soft limit the daemon was started with
/// (as Go's `os/exec` does), since those using `select()` fail on descriptors past 1024.
/// Async-signal-safe: two atomic loads and one system call.
pub fn restore_nofile_limit() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let soft = ORIGINAL_NOFILE.load(Ordering::Relaxed);
    if soft != u64::MAX {
        let hard = HARD_NOFILE.load(Ordering::Relaxed);
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(soft), maximum: Some(hard) });
    }
}
