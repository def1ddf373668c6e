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
//! gets smol's global executor from [`spawn`], so nothing waits for an executor nobody runs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use smol::{Executor, Task};

static EXECUTOR: Executor<'static> = Executor::new();
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Spawns `future` on the daemon's executor (or, when no [`block_on`] runs, on smol's).
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    if RUNNING.load(Ordering::Acquire) {
        EXECUTOR.spawn(future)
    } else {
        smol::spawn(future)
    }
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
