//! Real ptys and real shells.

use super::*;
use crate::os::users::{current_user, lookup_group};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// Failure bound only; the machine may be loaded.
const LIMIT: Duration = Duration::from_secs(30);

fn spec(args: &[&str]) -> ShellSpec {
    ShellSpec {
        command: PathBuf::from("/bin/sh"),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        user: current_user(),
        rows: 40,
        cols: 80,
        env: Vec::new(),
        account: None,
    }
}

fn write_all(shell: &Shell, mut data: &[u8]) {
    let deadline = Instant::now() + LIMIT;
    while !data.is_empty() {
        match rustix::io::write(&shell.master, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::AGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("write to pty: {e}"),
        }
    }
}

/// Reads the master until `needle` appears (returns everything read) or the shell side closes.
fn read_until(shell: &Shell, needle: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(&out).contains(needle) {
            return String::from_utf8_lossy(&out).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?}; got {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut fds = [rustix::event::PollFd::new(&shell.master, rustix::event::PollFlags::IN)];
        let t = rustix::event::Timespec { tv_sec: 0, tv_nsec: 200_000_000 };
        let _ = rustix::event::poll(&mut fds, Some(&t));
        match rustix::io::read(&shell.master, &mut buf) {
            Ok(0) | Err(rustix::io::Errno::IO) => {
                return String::from_utf8_lossy(&out).into_owned();
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(e) => panic!("read from pty: {e}"),
        }
    }
}

fn wait_bounded(shell: &mut Shell) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(s) = shell.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "shell did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn command_output_is_read_back() {
    let shell = spawn_shell(&spec(&[])).unwrap();
    // The arithmetic makes sure the output is the shell's, not the echo of our input.
    write_all(&shell, b"echo marker-$((6*7))\n");
    let out = read_until(&shell, "marker-42");
    assert!(out.contains("marker-42"), "{out:?}");
}

#[test]
fn environment_session_and_controlling_terminal() {
    let shell = spawn_shell(&spec(&[])).unwrap();
    let user = current_user();
    write_all(
        &shell,
        b"echo \"T=$TERM U=$USER L=$LOGNAME S=$SHELL\"; \
          [ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && echo SID-\"OK\"; \
          : </dev/tty && echo CTTY-\"OK\"; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo STDIO-\"OK\"; echo E\"ND\"\n",
    );
    let out = read_until(&shell, "END");
    assert!(out.contains(&format!("T=xterm-256color U={user} L={user} S=/bin/sh")), "{out:?}");
    assert!(out.contains("SID-OK"), "shell is not a session leader: {out:?}");
    assert!(out.contains("CTTY-OK"), "no controlling terminal: {out:?}");
    assert!(out.contains("STDIO-OK"), "stdio is not the pty: {out:?}");
}

#[test]
fn initial_size_and_resize_are_visible_to_stty() {
    let mut s = spec(&[]);
    s.rows = 33;
    s.cols = 91;
    let shell = spawn_shell(&s).unwrap();
    write_all(&shell, b"stty size; echo D\"ONE1\"\n");
    let out = read_until(&shell, "DONE1");
    assert!(out.contains("33 91"), "{out:?}");
    shell.resize(12, 140).unwrap();
    write_all(&shell, b"stty size; echo D\"ONE2\"\n");
    let out = read_until(&shell, "DONE2");
    assert!(out.contains("12 140"), "{out:?}");
}

#[test]
fn hangup_ends_the_shell() {
    let mut shell = spawn_shell(&spec(&[])).unwrap();
    write_all(&shell, b"echo R\"EADY\"\n");
    read_until(&shell, "READY");
    shell.hangup().unwrap();
    let status = wait_bounded(&mut shell);
    assert!(status.signal() == Some(libc::SIGHUP) || status.code().is_some(), "{status:?}");
    // After reaping, signals are no-ops rather than hitting a recycled pid.
    shell.hangup().unwrap();
    shell.kill().unwrap();
}

/// `SigIgn` of `/proc/self/status`: the bit of signal n is 1 << (n - 1).
fn ignored_signals(status: &str) -> u64 {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("SigIgn line");
    u64::from_str_radix(hex.trim(), 16).expect("hex mask")
}

#[test]
fn signals_the_agent_was_started_ignoring_are_not_ignored_in_the_shell() {
    // As under `nohup mender-connect daemon` (SIGHUP) or `mender-connect daemon &` in a script
    // (SIGINT, SIGQUIT). SIGQUIT stands for both: ignoring SIGINT would make this test binary
    // deaf to Ctrl-C. SIGHUP is left ignored afterwards, which a test binary does not miss.
    // SAFETY: setting a disposition to SIG_IGN installs no handler.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let ours = ignored_signals(&std::fs::read_to_string("/proc/self/status").unwrap());
    let bits = (1u64 << (libc::SIGHUP - 1)) | (1 << (libc::SIGQUIT - 1));
    assert_eq!(ours & bits, bits, "the test did not set up the ignored signals");
    let shell = spawn_shell(&spec(&["-c", "exec grep SigIgn /proc/self/status"])).unwrap();
    let out = read_until(&shell, "\u{0}never");
    let theirs = ignored_signals(&out);
    assert_eq!(theirs & bits, 0, "ignored in the shell's command: {theirs:#x} ({out:?})");
}

#[test]
fn kill_ends_a_shell_that_ignores_hangup() {
    let mut shell =
        spawn_shell(&spec(&["-c", "trap '' HUP; echo TRAPPED; while :; do sleep 1; done"])).unwrap();
    read_until(&shell, "TRAPPED");
    shell.kill().unwrap();
    assert_eq!(wait_bounded(&mut shell).signal(), Some(libc::SIGKILL));
}

#[test]
fn exit_is_seen_as_eof_and_status() {
    let mut shell = spawn_shell(&spec(&["-c", "echo bye; exit 7"])).unwrap();
    let out = read_until(&shell, "\u{0}never");
    assert!(out.contains("bye"), "{out:?}");
    assert_eq!(shell.wait().unwrap().code(), Some(7));
}

#[test]
fn arguments_are_passed() {
    let shell = spawn_shell(&spec(&["-c", "echo \"args:$0:$1\"", "zero", "one"])).unwrap();
    let out = read_until(&shell, "args:zero:one");
    assert!(out.contains("args:zero:one"), "{out:?}");
}

#[test]
fn inherited_descriptors_do_not_reach_the_shell() {
    let (r, _w) = rustix::pipe::pipe().unwrap();
    // Simulate a descriptor opened without close-on-exec somewhere in the process.
    rustix::io::fcntl_setfd(&r, rustix::io::FdFlags::empty()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
    let shell = spawn_shell(&spec(&[
        "-c",
        &format!("if [ -e /proc/$$/fd/{fd} ]; then echo LEAKED; else echo CLEAN; fi"),
    ]))
    .unwrap();
    let out = read_until(&shell, "\u{0}never");
    assert!(out.contains("CLEAN"), "{out:?}");
}

#[test]
fn unknown_user_is_an_error() {
    let mut s = spec(&[]);
    s.user = "no-such-user-mcrs".into();
    let e = spawn_shell(&s).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("no-such-user-mcrs"), "{e}");
}

#[test]
fn missing_shell_is_an_error() {
    let mut s = spec(&[]);
    s.command = PathBuf::from("/nonexistent/shell");
    let e = spawn_shell(&s).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/shell"), "{e}");
}

/// Creates (once) the user `mcrs-test` with the supplementary group `mcrs-test-grp`.
fn ensure_test_user() -> UserEntry {
    let run = |args: &[&str]| {
        let st = std::process::Command::new(args[0]).args(&args[1..]).status();
        assert!(st.is_ok(), "{args:?}: {st:?}");
    };
    if lookup_group("mcrs-test-grp").unwrap().is_none() {
        run(&["groupadd", "-f", "mcrs-test-grp"]);
    }
    if lookup_user("mcrs-test").unwrap().is_none() {
        // Races with a parallel test run are fine: useradd fails if it exists and we look up again.
        let _ = std::process::Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-G", "mcrs-test-grp", "mcrs-test"])
            .status();
    }
    lookup_user("mcrs-test").unwrap().expect("useradd mcrs-test")
}

#[test]
fn root_runs_the_shell_as_the_configured_user_with_groups() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("\n*** SKIPPED root_runs_the_shell_as_the_configured_user_with_groups: needs root ***\n");
        return;
    }
    let user = ensure_test_user();
    let gid = lookup_group("mcrs-test-grp").unwrap().expect("group");
    let mut s = spec(&["-c", "echo \"ids:$(id -u):$(id -g):$(id -G | tr ' ' ,):$HOME:$(pwd)\""]);
    s.user = "mcrs-test".into();
    let shell = spawn_shell(&s).unwrap();
    let out = read_until(&shell, "\u{0}never");
    let line = out.lines().find(|l| l.starts_with("ids:")).unwrap_or_else(|| panic!("{out:?}"));
    let f: Vec<&str> = line.trim_end().split(':').collect();
    assert_eq!(f[1], user.uid.to_string(), "{line}");
    assert_eq!(f[2], user.gid.to_string(), "{line}");
    let groups: Vec<&str> = f[3].split(',').collect();
    assert!(groups.contains(&gid.to_string().as_str()), "supplementary group missing: {line}");
    assert!(!groups.contains(&"0"), "root group kept: {line}");
    assert_eq!(f[4], user.home.display().to_string());
    assert_eq!(f[5], user.home.display().to_string());
}

#[test]
fn non_root_refuses_another_user() {
    if rustix::process::geteuid().is_root() {
        // Run this very test again as `nobody` (the test binary is world-readable in the target dir).
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&exe)
            .args([
                "os::pty::tests::non_root_refuses_another_user",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() && text.contains("Permission denied") {
            eprintln!(
                "\n*** SKIPPED non_root_refuses_another_user: nobody cannot run {} ***\n",
                exe.display()
            );
            return;
        }
        assert!(out.status.success(), "{text}");
        assert!(text.contains("REFUSED-OK"), "{text}");
        return;
    }
    let mut s = spec(&[]);
    s.user = "root".into();
    let e = spawn_shell(&s).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("not root"), "{e}");
    eprintln!("REFUSED-OK");
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn hangup_reaches_background_jobs_in_their_own_process_groups() {
    let mut shell = spawn_shell(&spec(&[])).unwrap();
    // An interactive shell with job control runs `&` jobs in a process group of their own.
    write_all(&shell, b"sleep 1000 & echo \"BG=$! PG=$(cut -d' ' -f5 /proc/$!/stat) E$((1+1))ND\"\n");
    let out = read_until(&shell, "E2ND");
    let line = out.lines().find(|l| l.contains("E2ND")).unwrap_or_else(|| panic!("{out:?}"));
    let field = |name: &str| -> u32 {
        let rest = &line[line.find(name).unwrap_or_else(|| panic!("{line:?}")) + name.len()..];
        rest.split(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
    };
    let (bg, pgid) = (field("BG="), field("PG="));
    assert_ne!(pgid, shell.pid, "the job shares the shell's process group: the test would prove nothing");
    assert!(process_alive(bg));
    shell.hangup().unwrap();
    wait_bounded(&mut shell);
    let deadline = Instant::now() + LIMIT;
    while process_alive(bg) {
        assert!(Instant::now() < deadline, "background job {bg} survived the hangup");
        std::thread::sleep(Duration::from_millis(20));
    }
}
