//! The router with file transfer on, driven as the daemon's event loop drives it, for the fuzz
//! target `agent/fuzz/fuzz_targets/filetransfer_handler.rs`: core's device keeps the transfers
//! and the real executor does the file work, so the target reaches both. No terminal and no port
//! forward; no shell is ever started.
//!
//! Not for anything else: the daemon builds and drives its own router.

use std::sync::Arc;
use std::time::Instant;

use crate::proto::filetransfer::Settings;
use crate::proto::router::{Output, Report, Router};
use crate::proto::shell::{self, ShellSettings, Shells};

/// A router serving file transfer (protocol 2) only.
pub struct FileTransferHarness {
    router: Router,
    shells: Shells,
    data: async_channel::Receiver<Vec<u8>>,
    reports: async_channel::Receiver<Report>,
}

impl FileTransferHarness {
    /// A connected router whose file transfer runs under `settings`.
    pub fn new(settings: &Arc<Settings>) -> Self {
        // The daemon's data queue is bounded; a download task waits on it, as in the daemon.
        let (data_tx, data) = async_channel::bounded(64);
        let (reports_tx, reports) = async_channel::unbounded();
        let mut router = Router::new(false);
        router.enable_file_transfer(settings, data_tx.clone(), reports_tx.clone());
        let shells = Shells::new(ShellSettings::none_started(), data_tx, reports_tx);
        Self { router, shells, data, reports }
    }

    /// One websocket message from the server: the frames sent for it, in order.
    pub fn message(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self
            .router
            .route(bytes, &mut self.shells, Instant::now())
            .into_iter()
            .map(|shell::Action::Reply(f)| f)
            .collect();
        self.drain(&mut out);
        out
    }

    /// Feeds the download tasks' reports to the router: the frames that came of them and those
    /// the tasks queued.
    pub fn pump(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(r) = self.reports.try_recv() {
            self.router.report(r, Instant::now());
            self.drain(&mut out);
        }
        while let Ok(f) = self.data.try_recv() {
            out.push(f);
        }
        out
    }

    /// Ends session `sid` (as the server's `close`): its transfer is aborted.
    pub fn end_session(&mut self, sid: &str) -> Vec<Vec<u8>> {
        let _ = self.router.kill(sid);
        let mut out = Vec::new();
        self.drain(&mut out);
        out
    }

    fn drain(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(o) = self.router.poll(&mut self.shells) {
            match o {
                Output::Send(f) | Output::Shell(f) | Output::Forward(f) | Output::Transfer(f) => out.push(f),
                Output::Link(_) => {}
            }
        }
    }
}
