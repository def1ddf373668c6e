//! Log lines on stderr in the reference's format (logrus `TextFormatter` without a terminal):
//! `time="2026-11-22T22:40:03Z" level=info msg="Loaded configuration file: /etc/mender/mender-connect.conf"`.
//! Existing log scrapers and journald filters keep working.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// The reference's levels: info by default, `--debug`, `--trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Info,
    Debug,
    Trace,
}

impl Verbosity {
    fn filter(self) -> LevelFilter {
        match self {
            Verbosity::Info => LevelFilter::Info,
            Verbosity::Debug => LevelFilter::Debug,
            Verbosity::Trace => LevelFilter::Trace,
        }
    }
}

struct Logger;

static LOGGER: Logger = Logger;
static INSTALLED: OnceLock<()> = OnceLock::new();

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(SystemTime::now(), record.level(), &record.args().to_string());
        // One write per line so that concurrent threads do not interleave within a line.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger (once; later calls only change the level).
/// A duration for people: `4.7 s`, `60 s` (`Duration`'s Debug prints `4.734123456s`).
pub struct Secs(pub std::time::Duration);

impl std::fmt::Display for Secs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms < 10_000 {
            write!(f, "{}.{} s", ms / 1000, ms % 1000 / 100)
        } else {
            write!(f, "{} s", self.0.as_secs())
        }
    }
}

pub fn init(verbosity: Verbosity) {
    INSTALLED.get_or_init(|| {
        let _ = log::set_logger(&LOGGER);
    });
    log::set_max_level(verbosity.filter());
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One complete line, newline included.
pub fn format_line(now: SystemTime, level: Level, msg: &str) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("time=\"{}\" level={} msg={}\n", rfc3339_utc(secs), level_name(level), quote(msg))
}

/// logrus quotes a value unless it consists only of `[A-Za-z0-9-._/@^+]`; quoting follows Go's
/// `%q`.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/' | b'@' | b'^' | b'+')
        });
    if plain {
        return s.to_owned();
    }
    format!("\"{}\"", escape_controls(s).replace('"', "\\\""))
}

/// `s` with backslashes and control characters (C0, DEL, C1) escaped the way Go's `%q` does, so
/// that text chosen by a peer (a server's session id, a user name) reaches a terminal or a log
/// as inert characters: no ESC sequence, OSC 52 clipboard write or carriage return gets through.
/// The one escaping routine for the log and every human-readable output.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c == '\\' || c.is_control();
    if !s.chars().any(needs) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn line_matches_logrus_text_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_387_203); // 2026-11-22T22:40:03Z
        assert_eq!(
            format_line(t, Level::Info, "Loaded configuration file: c.json"),
            "time=\"2026-11-22T22:40:03Z\" level=info msg=\"Loaded configuration file: c.json\"\n"
        );
        assert_eq!(format_line(t, Level::Warn, "x"), "time=\"2026-11-22T22:40:03Z\" level=warning msg=x\n");
    }

    #[test]
    fn durations_read_as_seconds() {
        use std::time::Duration;
        assert_eq!(super::Secs(Duration::from_millis(4_734)).to_string(), "4.7 s");
        assert_eq!(super::Secs(Duration::from_millis(250)).to_string(), "0.2 s");
        assert_eq!(super::Secs(Duration::from_secs(60)).to_string(), "60 s");
    }

    #[test]
    fn quoting_escapes_like_go() {
        assert_eq!(quote("plain-value_1.2/3@x^y+z"), "plain-value_1.2/3@x^y+z");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a \"b\"\n\\"), "\"a \\\"b\\\"\\n\\\\\"");
        assert_eq!(quote("bell\u{7}"), "\"bell\\x07\"");
        assert_eq!(quote("esc\u{1b}[2J csi\u{9b}"), "\"esc\\x1b[2J csi\\u009b\"");
    }

    #[test]
    fn escaping_leaves_no_control_bytes() {
        assert!(matches!(escape_controls("sess-1 ü"), std::borrow::Cow::Borrowed(_)));
        let hostile = "a\u{1b}]52;c;aGk=\u{7}\u{1b}[2J\r\n\u{7f}\u{9b}\\";
        let e = escape_controls(hostile);
        assert_eq!(e, "a\\x1b]52;c;aGk=\\x07\\x1b[2J\\r\\n\\x7f\\u009b\\\\");
        assert!(!e.chars().any(char::is_control));
    }

    #[test]
    fn dates_cross_leap_years_and_centuries() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
