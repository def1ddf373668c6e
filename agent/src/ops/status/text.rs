//! How the status is written for people: times, durations, rates and link states, shared by
//! the `status` command's text output and the daemon's SIGUSR1 log dump.

use std::fmt;
use std::time::Duration;

use super::protocol::LinkState;

/// Go's `Mon Jan 2 15:04:05 -0700 MST 2006` (the reference's session time format), in UTC.
pub fn go_time(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss, wd) = civil(unix_secs);
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.get(m.wrapping_sub(1) as usize).copied().unwrap_or("???");
    format!("{} {month} {d} {hh:02}:{mm:02}:{ss:02} +0000 UTC {y}", DAYS[wd as usize % 7])
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn iso_time(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(unix_secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// (year, month 1-12, day, hour, minute, second, weekday 0=Sunday) of Unix seconds, UTC
/// (Howard Hinnant's days-to-civil algorithm; no time-zone database on small devices).
fn civil(t: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let weekday = ((days % 7) + 4) % 7; // 1970-01-01 was a Thursday
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60, weekday as u64)
}

/// The state's name in the text output and logs.
pub const fn link_name(state: LinkState) -> &'static str {
    match state {
        LinkState::NoCredentials => "no credentials",
        LinkState::Connecting => "connecting",
        LinkState::Connected => "connected",
        LinkState::WaitingToReconnect => "waiting to reconnect",
    }
}

/// A non-negative rate with two decimals, like Go's `%.2f` (halves round up here, to even
/// there). Integer arithmetic: formatting an `f64` links core's float printer (~6 KB) for these
/// two numbers alone (docs/binary-size.md).
pub struct Hundredths(pub f64);

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `as` saturates (NaN and negatives to 0); the averages are byte rates, far below 2^64/100.
        let h = (self.0 * 100.0 + 0.5) as u64;
        write!(f, "{}.{:02}", h / 100, h % 100)
    }
}

/// Seconds as `1d02h`, `3h04m`, `5m06s` or `7s`.
pub fn human_duration(secs: u64) -> String {
    let d = Duration::from_secs(secs).as_secs();
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m{:02}s", d / 60, d % 60),
        3600..86_400 => format!("{}h{:02}m", d / 3600, d / 60 % 60),
        _ => format!("{}d{:02}h", d / 86_400, d / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        // 2026-11-23 00:52:37 UTC, a Monday.
        let t = 1_795_395_157;
        assert_eq!(iso_time(t), "2026-11-23 00:52:37 UTC");
        assert_eq!(go_time(t), "Mon Nov 23 00:52:37 +0000 UTC 2026");
        assert_eq!(iso_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(go_time(951_782_400), "Tue Feb 29 00:00:00 +0000 UTC 2000");
    }

    #[test]
    fn rates_read_as_hundredths() {
        assert_eq!(Hundredths(0.0).to_string(), "0.00");
        assert_eq!(Hundredths(1234.5678).to_string(), "1234.57");
        assert_eq!(Hundredths(0.004).to_string(), "0.00");
        assert_eq!(Hundredths(0.005).to_string(), "0.01");
        assert_eq!(Hundredths(99.999).to_string(), "100.00");
        assert_eq!(Hundredths(f64::NAN).to_string(), "0.00");
        assert_eq!(Hundredths(-3.0).to_string(), "0.00");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(7), "7s");
        assert_eq!(human_duration(306), "5m06s");
        assert_eq!(human_duration(3 * 3600 + 240), "3h04m");
        assert_eq!(human_duration(86_400 + 7200), "1d02h");
    }
}
