//! The daemon's own resource limits (issue 16, finding 6): it raises its soft `RLIMIT_NOFILE`
//! to the hard limit at start, as Go's runtime does for the reference, and its shells get the
//! limit it was started with back (as Go's `os/exec` does). One test: it lowers this process's
//! soft limit, which the daemon inherits.

mod common;

use common::{Fixture, SOON, number_after};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

fn soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[test]
fn daemon_raises_its_open_files_limit_and_shells_get_the_original() {
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.expect("an unlimited hard RLIMIT_NOFILE is not possible on Linux");
    const LOW: u64 = 512;
    if hard <= LOW {
        eprintln!("hard open files limit {hard} is not above {LOW}: nothing to raise; skipped");
        return;
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(LOW), maximum: Some(hard) }).unwrap();
    smol::block_on(async {
        let fx = Fixture::start("nofile", "", &[]).await;
        let mut conn = fx.server.accept(SOON).await;
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", fx.agent.pid())).unwrap();
        assert_eq!(soft_limit(&limits), Some(hard), "{limits}");

        conn.new_shell("s1", "u", None).await;
        let m = conn.recv_until("new reply", |m| m.typ == "new" && m.sid == "s1").await;
        assert_eq!(m.status, Some(1), "{}", m.body_str());
        conn.shell_input("s1", "u", b"echo NOFILE=$(ulimit -n)\n").await;
        let out = conn.output_until_match("s1", |o| number_after(o, "NOFILE=").is_some()).await;
        assert_eq!(number_after(&out, "NOFILE="), Some(LOW as u32), "{out}");
    });
}
