//! `mender-connect-bench`: runs the same scenarios against Debian's Go mender-connect 2.1.0 and
//! our Rust mender-connect, each on a device of its own (mock server, private D-Bus, the real
//! Mender client) on loopback, and prints one Markdown table of both and their ratio.
//!
//! Usually started by `bench/run.sh`, which builds the static binaries first. See bench/README.md.

mod device;
mod flood;
mod procfs;
mod ptyfloor;
mod scenarios;
mod size;
mod table;
mod user;
mod wire;

use std::path::PathBuf;

use mender_connect_interop::TestEnv;
use mender_connect_interop::device_files;

use scenarios::{Plan, Results};

/// A failure of one benchmark step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The interop harness (processes, mock server, bus, client) failed.
    #[error(transparent)]
    Harness(#[from] mender_connect_interop::Error),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The user's websocket failed.
    #[error("websocket: {0}")]
    Ws(String),
    /// A step did not finish within its bound.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A step finished with a wrong result.
    #[error("{0}")]
    Check(String),
    /// Bad command line.
    #[error("usage: {0}")]
    Usage(String),
}

impl BenchError {
    fn io(context: &str, source: std::io::Error) -> Self {
        BenchError::Io { context: context.to_owned(), source }
    }
}

const USAGE: &str = "mender-connect-bench --rust BIN [--go BIN] [--rust-aarch64 BIN]
    [--go-aarch64 BIN --go-aarch64-sysroot DIR --go-aarch64-needed LIB,LIB,...]
    [--only go|rust] [--quick] [--idle-secs N] [--burst-mib N] [--slow-secs N]
    [--keystrokes N] [--file-mib N] [--forward-mib N] [--shells N]
mender-connect-bench --floods --rust BIN [--test-auth BIN]   (hostile-server floods, ours only)";

struct Args {
    rust: Option<PathBuf>,
    go: PathBuf,
    rust_arm: Option<PathBuf>,
    go_arm: Option<PathBuf>,
    go_arm_sysroot: Option<PathBuf>,
    go_arm_needed: Vec<String>,
    only: Option<String>,
    plan: Plan,
    floods: bool,
    test_auth: Option<PathBuf>,
}

fn parse_args() -> Result<Args, BenchError> {
    let mut args = Args {
        rust: None,
        go: PathBuf::from("/usr/bin/mender-connect"),
        rust_arm: None,
        go_arm: None,
        go_arm_sysroot: None,
        go_arm_needed: Vec::new(),
        only: None,
        floods: false,
        test_auth: None,
        plan: Plan {
            // One keep-alive period of ours towards the client's proxy (270 s): the window holds
            // exactly one ping and pong, so the per-minute figure is neither 0 nor doubled.
            idle_secs: 270,
            burst_mib: 50,
            slow_secs: 10,
            keystrokes: 200,
            file_mib: 100,
            forward_mib: 100,
            shells: 10,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            args.plan = Plan {
                idle_secs: 10,
                burst_mib: 10,
                slow_secs: 3,
                keystrokes: 50,
                file_mib: 10,
                forward_mib: 10,
                shells: 3,
            };
            continue;
        }
        if flag == "--floods" {
            args.floods = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(BenchError::Usage(USAGE.to_owned()));
        }
        let value = it.next().ok_or_else(|| BenchError::Usage(format!("{flag} needs a value\n{USAGE}")))?;
        let number = || -> Result<u64, BenchError> {
            value.parse().map_err(|_| BenchError::Usage(format!("{flag}: not a number: {value}")))
        };
        match flag.as_str() {
            "--rust" => args.rust = Some(value.into()),
            "--go" => args.go = value.into(),
            "--rust-aarch64" => args.rust_arm = Some(value.into()),
            "--go-aarch64" => args.go_arm = Some(value.into()),
            "--go-aarch64-sysroot" => args.go_arm_sysroot = Some(value.into()),
            "--go-aarch64-needed" => {
                args.go_arm_needed = value.split(',').map(str::to_owned).collect();
            }
            "--only" => args.only = Some(value),
            "--test-auth" => args.test_auth = Some(value.into()),
            "--idle-secs" => args.plan.idle_secs = number()?.max(1),
            "--burst-mib" => args.plan.burst_mib = number()?.max(1),
            "--slow-secs" => args.plan.slow_secs = number()?,
            "--keystrokes" => args.plan.keystrokes = usize::try_from(number()?).unwrap_or(200),
            "--file-mib" => args.plan.file_mib = number()?.max(1),
            "--forward-mib" => args.plan.forward_mib = number()?.max(1),
            "--shells" => args.plan.shells = usize::try_from(number()?).unwrap_or(10),
            _ => return Err(BenchError::Usage(format!("unknown flag {flag}\n{USAGE}"))),
        }
    }
    Ok(args)
}

fn run_agent(name: &str, program: &std::path::Path, plan: &Plan) -> Result<Results, BenchError> {
    eprintln!("[bench] {name}: starting ({})", program.display());
    let env = TestEnv::new(&format!("bench-{name}"))?;
    let mut device = device::Device::start(&env, name, program)?;
    let results = scenarios::run_all(&env, &mut device, plan);
    for e in &results.errors {
        eprintln!("[bench] {name}: step failed: {e}");
    }
    if results.errors.is_empty() {
        env.pass();
    }
    drop(device);
    eprintln!("[bench] {name}: done");
    Ok(results)
}

fn machine_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    format!(
        "machine: {cpus} CPUs ({model}); load average at the end: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mender-connect-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), BenchError> {
    let args = parse_args()?;
    let rust =
        args.rust.clone().ok_or_else(|| BenchError::Usage(format!("--rust BIN is required\n{USAGE}")))?;
    if args.floods {
        // `cargo build -p mender-test-auth` puts it next to this driver.
        let test_auth = match args.test_auth.clone() {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| BenchError::io("current_exe", e))?
                .with_file_name("mender-test-auth"),
        };
        let results = flood::run(&rust, &test_auth)?;
        print!("{}", flood::markdown(&results));
        println!("agent: {}", rust.display());
        println!("{}", machine_line());
        return Ok(());
    }
    device_files::ensure_installed()?;

    let footprint = |r: Result<size::Footprint, BenchError>, what: &str| match r {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("[bench] size of {what}: {e}");
            None
        }
    };
    let go_size = footprint(size::native(&args.go), "Go x86_64");
    let rust_size = footprint(size::native(&rust), "Rust x86_64");
    let rust_size_arm = args
        .rust_arm
        .as_ref()
        .and_then(|p| footprint(size::unpacked(p, p.parent().unwrap_or(p), &[]), "Rust aarch64"));
    let go_size_arm = match (&args.go_arm, &args.go_arm_sysroot) {
        (Some(bin), Some(root)) => footprint(size::unpacked(bin, root, &args.go_arm_needed), "Go aarch64"),
        _ => None,
    };
    for (what, f) in [("Go x86_64", &go_size), ("Go aarch64", &go_size_arm)] {
        if let Some(f) = f {
            let libs: Vec<String> =
                f.libraries.iter().map(|(n, b)| format!("{n} {:.0} KiB", *b as f64 / 1024.0)).collect();
            eprintln!("[bench] {what}: binary {:.0} KiB + {}", f.binary as f64 / 1024.0, libs.join(", "));
        }
    }

    let want = |k: &str| args.only.as_deref().is_none_or(|o| o == k);
    let go = if want("go") { Some(run_agent("go-mender-connect", &args.go, &args.plan)?) } else { None };
    let rs = if want("rust") { Some(run_agent("rust-mender-connect", &rust, &args.plan)?) } else { None };

    let report = table::Report {
        go_size: go_size.as_ref(),
        rust_size: rust_size.as_ref(),
        go_size_arm: go_size_arm.as_ref(),
        rust_size_arm: rust_size_arm.as_ref(),
        go: go.as_ref(),
        rust: rs.as_ref(),
        plan: &args.plan,
    };
    println!("{}", report.markdown());
    let p = &args.plan;
    println!(
        "plan: idle {} s, burst {} MiB, slow reader {} s, {} keystrokes, files {} MiB, forward {} MiB, {} shells",
        p.idle_secs, p.burst_mib, p.slow_secs, p.keystrokes, p.file_mib, p.forward_mib, p.shells
    );
    println!("{}", machine_line());
    print!("{}", table::cpu_breakdown(&[("Go", go.as_ref()), ("Rust", rs.as_ref())]));
    for (name, r) in [("Go", &go), ("Rust", &rs)] {
        if let Some(r) = r {
            for e in &r.errors {
                println!("failed step ({name}): {e}");
            }
        }
    }
    Ok(())
}
