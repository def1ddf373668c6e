//! The report: one Markdown table, Go and Rust side by side, with the ratio and the target.

use crate::scenarios::{Plan, Results, Throughput};
use crate::size::Footprint;

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

/// What our agent must reach on a row.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// At most (lower is better) or at least (higher is better) this absolute value.
    Absolute(f64),
    /// At least this many times Go's figure (higher is better) / at most (lower is better).
    TimesGo(f64),
    /// None set.
    None,
}

struct Row {
    name: String,
    unit: &'static str,
    go: Option<f64>,
    rust: Option<f64>,
    better: Better,
    target: Target,
    digits: usize,
}

impl Row {
    fn met(&self) -> Option<bool> {
        let rust = self.rust?;
        let bound = match self.target {
            Target::Absolute(v) => v,
            Target::TimesGo(k) => self.go? * k,
            Target::None => return None,
        };
        Some(match self.better {
            Better::Lower => rust <= bound,
            Better::Higher => rust >= bound,
        })
    }

    fn target_text(&self) -> String {
        let op = match self.better {
            Better::Lower => "≤",
            Better::Higher => "≥",
        };
        match self.target {
            Target::Absolute(v) => format!("{op} {}", trim(v, self.digits)),
            Target::TimesGo(1.0) => format!("{op} Go"),
            Target::TimesGo(k) => format!("{op} {k}× Go"),
            Target::None => String::new(),
        }
    }
}

fn trim(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| trim(v, digits))
}

/// Inputs of the table.
pub struct Report<'a> {
    /// Go x86_64 binary and libraries.
    pub go_size: Option<&'a Footprint>,
    /// Our static x86_64 binary.
    pub rust_size: Option<&'a Footprint>,
    /// Go aarch64 binary and libraries.
    pub go_size_arm: Option<&'a Footprint>,
    /// Our static aarch64 binary.
    pub rust_size_arm: Option<&'a Footprint>,
    /// Go runtime results.
    pub go: Option<&'a Results>,
    /// Rust runtime results.
    pub rust: Option<&'a Results>,
    /// What was run.
    pub plan: &'a Plan,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report<'_> {
    fn rows(&self) -> Vec<Row> {
        let size = |f: Option<&Footprint>| f.map(|f| mib(f.total()));
        // The issue states the size target in MB; both readings are shown, neither hidden.
        let size_mb = |f: Option<&Footprint>| f.map(|f| f.total() as f64 / 1e6);
        let field = |r: Option<&Results>, get: &dyn Fn(&Results) -> Option<f64>| r.and_then(get);
        let (go, rust, p) = (self.go, self.rust, self.plan);
        let row = |name: &str, unit, get: &dyn Fn(&Results) -> Option<f64>, better, target, digits| Row {
            name: name.to_owned(),
            unit,
            go: field(go, get),
            rust: field(rust, get),
            better,
            target,
            digits,
        };
        let tp = |t: Option<Throughput>| t.map(|t| t.mib_per_s);
        let cpu = |t: Option<Throughput>| t.map(|t| t.cpu_ms_per_mib);
        vec![
            Row {
                name: "on-device size x86_64 (binary + non-libc libs)".into(),
                unit: "MiB",
                go: size(self.go_size),
                rust: size(self.rust_size),
                better: Better::Lower,
                target: Target::Absolute(1.5),
                digits: 2,
            },
            Row {
                name: "on-device size x86_64, decimal megabytes".into(),
                unit: "MB",
                go: size_mb(self.go_size),
                rust: size_mb(self.rust_size),
                better: Better::Lower,
                target: Target::Absolute(1.5),
                digits: 2,
            },
            Row {
                name: "on-device size aarch64 (binary + non-libc libs)".into(),
                unit: "MiB",
                go: size(self.go_size_arm),
                rust: size(self.rust_size_arm),
                better: Better::Lower,
                target: Target::Absolute(1.5),
                digits: 2,
            },
            row(
                "RSS idle, connected",
                "MiB",
                &|r| r.rss_idle_kib.map(kib_to_mib),
                Better::Lower,
                Target::Absolute(1.5),
                2,
            ),
            row(
                "RSS idle, anonymous (RssAnon)",
                "MiB",
                &|r| r.rss_idle_anon_kib.map(kib_to_mib),
                Better::Lower,
                Target::None,
                2,
            ),
            row(
                &format!("RSS idle, after {} s idle (keep-alives)", p.idle_secs),
                "MiB",
                &|r| r.rss_idle_end_kib.map(kib_to_mib),
                Better::Lower,
                Target::Absolute(1.5),
                2,
            ),
            row("threads idle", "", &|r| r.threads_idle.map(|t| t as f64), Better::Lower, Target::None, 0),
            row(
                &format!("RSS with {} open shells", p.shells),
                "MiB",
                &|r| r.rss_shells_kib.map(kib_to_mib),
                Better::Lower,
                Target::None,
                2,
            ),
            row(
                &format!("RSS peak during {} MiB terminal burst", p.burst_mib),
                "MiB",
                &|r| r.peak_burst_kib.map(kib_to_mib),
                Better::Lower,
                Target::Absolute(2.0),
                2,
            ),
            row(
                &format!("RSS after {} MiB terminal burst", p.burst_mib),
                "MiB",
                &|r| r.rss_after_burst_kib.map(kib_to_mib),
                Better::Lower,
                Target::Absolute(2.0),
                2,
            ),
            row(
                &format!("RSS peak, slow reader ({} s)", p.slow_secs),
                "MiB",
                &|r| r.peak_slow_reader_kib.map(kib_to_mib),
                Better::Lower,
                Target::Absolute(2.0),
                2,
            ),
            row(
                "pty alone: the burst's `cat` read by a blocking reader, no agent",
                "MiB/s",
                &|r| tp(r.pty_floor),
                Better::Higher,
                Target::None,
                1,
            ),
            row(
                "pty alone: that reader's CPU",
                "ms/MiB",
                &|r| cpu(r.pty_floor),
                Better::Lower,
                Target::None,
                2,
            ),
            row(
                "terminal output throughput",
                "MiB/s",
                &|r| tp(r.terminal),
                Better::Higher,
                Target::Absolute(80.0),
                1,
            ),
            row(
                "terminal output agent CPU",
                "ms/MiB",
                &|r| cpu(r.terminal),
                Better::Lower,
                Target::Absolute(4.0),
                2,
            ),
            row(
                &format!("keystroke echo RTT median ({} keys)", p.keystrokes),
                "ms",
                &|r| r.echo_ms.map(|e| e.0),
                Better::Lower,
                Target::TimesGo(1.0),
                2,
            ),
            row("keystroke echo RTT p99", "ms", &|r| r.echo_ms.map(|e| e.1), Better::Lower, Target::None, 2),
            row(
                &format!("file download {} MiB", p.file_mib),
                "MiB/s",
                &|r| tp(r.download),
                Better::Higher,
                Target::TimesGo(2.0),
                1,
            ),
            row("file download agent CPU", "ms/MiB", &|r| cpu(r.download), Better::Lower, Target::None, 2),
            row(
                &format!("file upload {} MiB", p.file_mib),
                "MiB/s",
                &|r| tp(r.upload),
                Better::Higher,
                Target::TimesGo(2.0),
                1,
            ),
            row("file upload agent CPU", "ms/MiB", &|r| cpu(r.upload), Better::Lower, Target::None, 2),
            row(
                &format!("TCP port forward device→user, {} MiB", p.forward_mib),
                "MiB/s",
                &|r| tp(r.forward_down),
                Better::Higher,
                Target::TimesGo(2.0),
                1,
            ),
            row(
                &format!("TCP port forward user→device, {} MiB", p.forward_mib),
                "MiB/s",
                &|r| tp(r.forward_up),
                Better::Higher,
                Target::TimesGo(2.0),
                1,
            ),
            row(
                "port forward agent CPU (device→user)",
                "ms/MiB",
                &|r| cpu(r.forward_down),
                Better::Lower,
                Target::None,
                2,
            ),
            row(
                &format!("idle wake-ups, all threads ({} s sampled)", p.idle_secs),
                "/min",
                &|r| r.wakeups_per_min,
                Better::Lower,
                Target::Absolute(2.0),
                1,
            ),
        ]
    }

    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| scenario | unit | Go 2.1.0 | Rust | Rust/Go | target (Rust) | met |\n\
             |---|---|---:|---:|---:|---|---|\n",
        );
        for row in self.rows() {
            let ratio = match (row.go, row.rust) {
                (Some(g), Some(r)) if g != 0.0 => format!("{:.2}", r / g),
                _ => "—".to_owned(),
            };
            let met = match row.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                row.name,
                row.unit,
                cell(row.go, row.digits),
                cell(row.rust, row.digits),
                ratio,
                row.target_text(),
                met
            ));
        }
        out
    }
}

/// Per-process CPU of each transfer, both agents: which process a throughput figure is limited
/// by. "cores busy" is the total CPU time over the wall-clock time: near 2 on this 2-core machine
/// means the whole path is CPU-bound and a process's share decides who can go faster.
pub fn cpu_breakdown(agents: &[(&str, Option<&Results>)]) -> String {
    let mut out = String::from(
        "\nCPU per process, ms per MiB moved (user + system):\n\n\
         | agent | transfer | MiB/s | agent | mock server | Mender client (proxy) | curl / mender-cli / shell | bench driver | total | cores busy |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, r) in agents {
        let Some(r) = r else { continue };
        let transfers = [
            ("terminal output", r.terminal),
            ("file download", r.download),
            ("file upload", r.upload),
            ("port forward device→user", r.forward_down),
            ("port forward user→device", r.forward_up),
        ];
        for (what, t) in transfers {
            let Some(Throughput { mib_per_s, parts: Some(p), .. }) = t else { continue };
            out.push_str(&format!(
                "| {name} | {what} | {mib_per_s:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                p.agent,
                p.server,
                p.client,
                p.user_tool,
                p.driver,
                p.total(),
                p.total() * mib_per_s / 1000.0,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::CpuParts;

    #[test]
    fn breakdown_lists_each_measured_transfer_with_its_total() {
        let parts = CpuParts { agent: 1.0, server: 2.0, client: 3.0, user_tool: 4.0, driver: 0.5 };
        let r = Results {
            download: Some(Throughput { mib_per_s: 100.0, cpu_ms_per_mib: 1.0, parts: Some(parts) }),
            ..Results::default()
        };
        let text = cpu_breakdown(&[("Rust", Some(&r)), ("Go", None)]);
        assert!(
            text.contains(
                "| Rust | file download | 100.0 | 1.00 | 2.00 | 3.00 | 4.00 | 0.50 | 10.50 | 1.05 |"
            ),
            "{text}"
        );
        assert!(!text.contains("upload"), "{text}");
        assert!(!text.contains("| Go |"), "{text}");
    }

    #[test]
    fn targets_relative_to_go_follow_the_direction() {
        let row = Row {
            name: "x".into(),
            unit: "",
            go: Some(10.0),
            rust: Some(25.0),
            better: Better::Higher,
            target: Target::TimesGo(2.0),
            digits: 1,
        };
        assert_eq!(row.met(), Some(true));
        let slower = Row { rust: Some(15.0), name: "y".into(), ..row };
        assert_eq!(slower.met(), Some(false));
        let unmeasured = Row { go: None, name: "z".into(), ..slower };
        assert_eq!(unmeasured.met(), None);
    }
}
