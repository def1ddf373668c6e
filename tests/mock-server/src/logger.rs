//! One-line stderr logger: `<RFC 3339 time> <LEVEL> <message>`.

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write as _;

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target().starts_with("mender_mock_server")
    }
    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            let now = crate::timefmt::rfc3339(std::time::SystemTime::now());
            let _ = writeln!(std::io::stderr().lock(), "{now} {:<5} {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

pub fn init(verbose: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if verbose { LevelFilter::Debug } else { LevelFilter::Info });
}
