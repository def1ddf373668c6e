//! What the kernel reports about the agent process: memory, CPU time, context switches.

use std::path::PathBuf;

use crate::BenchError;

/// The agent process being measured.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    pid: u32,
}

/// Fields of `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS`
    pub rss_kib: u64,
    /// `VmHWM` (peak RSS since start or the last [`Proc::reset_peak`]).
    pub hwm_kib: u64,
    /// `RssAnon`: heap, stacks, written data; the rest of `VmRSS` is mapped file pages.
    pub anon_kib: u64,
}

impl Proc {
    /// The process `pid`.
    pub fn new(pid: u32) -> Self {
        Proc { pid }
    }

    fn path(&self, rest: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{rest}", self.pid))
    }

    fn read(&self, rest: &str) -> Result<String, BenchError> {
        let path = self.path(rest);
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path.display().to_string(), e))
    }

    /// Current and peak resident set size.
    pub fn memory(&self) -> Result<Memory, BenchError> {
        let status = self.read("status")?;
        Ok(Memory {
            rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
            hwm_kib: status_field(&status, "VmHWM:").unwrap_or(0),
            anon_kib: status_field(&status, "RssAnon:").unwrap_or(0),
        })
    }

    /// `RssAnon`, `RssFile` and `RssShmem` lines, for diagnosis.
    pub fn rss_parts(&self) -> String {
        let status = self.read("status").unwrap_or_default();
        ["RssAnon:", "RssFile:", "RssShmem:"]
            .iter()
            .map(|k| format!("{k} {} KiB", status_field(&status, k).unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resets `VmHWM` to the current RSS (`clear_refs` value 5, Linux ≥ 4.0).
    pub fn reset_peak(&self) -> Result<(), BenchError> {
        let path = self.path("clear_refs");
        std::fs::write(&path, "5").map_err(|e| BenchError::io(&path.display().to_string(), e))
    }

    /// User plus system CPU time of the whole process (all threads, including exited ones), in
    /// clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64, BenchError> {
        let stat = self.read("stat")?;
        parse_cpu_ticks(&stat)
            .ok_or_else(|| BenchError::Check(format!("cannot parse /proc/{}/stat", self.pid)))
    }

    /// User plus system CPU time of the process and of the children it has waited for
    /// (`cutime + cstime`): a shell and the commands it ran and reaped.
    pub fn cpu_ticks_with_reaped_children(&self) -> Result<u64, BenchError> {
        let stat = self.read("stat")?;
        parse_cpu_ticks(&stat)
            .zip(sum_of_two_fields(&stat, 16))
            .map(|(own, children)| own + children)
            .ok_or_else(|| BenchError::Check(format!("cannot parse /proc/{}/stat", self.pid)))
    }

    /// The live children of the process, from every thread's `children` list.
    pub fn children(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.path("task")) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = entries
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("children")).ok())
            .flat_map(|text| text.split_whitespace().filter_map(|n| n.parse().ok()).collect::<Vec<_>>())
            .collect();
        out.sort_unstable();
        out
    }

    /// Voluntary context switches summed over the process's current threads: each is a wake-up
    /// after a sleep.
    pub fn voluntary_switches(&self) -> Result<u64, BenchError> {
        let dir = self.path("task");
        let entries = std::fs::read_dir(&dir).map_err(|e| BenchError::io(&dir.display().to_string(), e))?;
        let mut total = 0;
        for entry in entries.flatten() {
            // A thread may exit between the listing and the read.
            if let Ok(status) = std::fs::read_to_string(entry.path().join("status")) {
                total += status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// `(thread name, voluntary context switches)` of each current thread, for diagnosis.
    pub fn switches_by_thread(&self) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(self.path("task")) else {
            return Vec::new();
        };
        let mut out: Vec<(String, u64)> = entries
            .flatten()
            .filter_map(|entry| {
                let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
                let name = status.lines().next()?.trim_start_matches("Name:").trim().to_owned();
                let tid = entry.file_name().to_string_lossy().into_owned();
                Some((
                    format!("{tid}/{name}"),
                    status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0),
                ))
            })
            .collect();
        out.sort();
        out
    }

    /// Number of threads.
    pub fn threads(&self) -> Result<u64, BenchError> {
        Ok(status_field(&self.read("status")?, "Threads:").unwrap_or(0))
    }
}

/// Milliseconds per clock tick of `/proc/<pid>/stat`.
pub fn ms_per_tick() -> f64 {
    1000.0 / rustix::param::clock_ticks_per_second() as f64
}

/// The first number after `key` in a `/proc/<pid>/status` text.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    sum_of_two_fields(stat, 14)
}

/// Fields `first` and `first + 1` (1-based, as proc(5) numbers them) of a `/proc/<pid>/stat`
/// line, added. The command name (field 2) may contain spaces and parentheses, so fields are
/// counted after its last `)`.
fn sum_of_two_fields(stat: &str, first: usize) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` starts at field 3 (state).
    let mut fields = after.split_whitespace().skip(first.checked_sub(3)?);
    let a: u64 = fields.next()?.parse().ok()?;
    let b: u64 = fields.next()?.parse().ok()?;
    Some(a + b)
}

/// User plus system CPU ticks of the calling thread.
pub fn thread_cpu_ticks() -> Result<u64, BenchError> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")
        .map_err(|e| BenchError::io("/proc/thread-self/stat", e))?;
    parse_cpu_ticks(&stat).ok_or_else(|| BenchError::Check("cannot parse /proc/thread-self/stat".into()))
}

/// User plus system CPU ticks of the children this process has waited for (`cutime + cstime`,
/// fields 16 and 17 of `/proc/self/stat`): how `curl`, run to completion, is measured.
pub fn reaped_children_ticks() -> Result<u64, BenchError> {
    let stat =
        std::fs::read_to_string("/proc/self/stat").map_err(|e| BenchError::io("/proc/self/stat", e))?;
    sum_of_two_fields(&stat, 16).ok_or_else(|| BenchError::Check("cannot parse /proc/self/stat".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (a b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(parse_cpu_ticks(stat), Some(333));
        assert_eq!(sum_of_two_fields(stat, 16), Some(27));
        assert_eq!(sum_of_two_fields(stat, 2), None);
    }

    #[test]
    fn status_fields_are_read_by_key() {
        let status = "Name:\tx\nVmHWM:\t  1234 kB\nVmRSS:\t  1000 kB\nvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(1000));
        assert_eq!(status_field(status, "VmHWM:"), Some(1234));
        assert_eq!(status_field(status, "voluntary_ctxt_switches:"), Some(7));
        assert_eq!(status_field(status, "Threads:"), None);
    }
}
