//! `mender-connect check-config` and `daemon` on real configuration files: exit codes, errors
//! naming the key (or line/column), warnings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let p = std::env::temp_dir().join(format!(
            "mcrs-config-check-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn absent(&self) -> PathBuf {
        self.0.join("absent.conf")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mender-connect")).args(args).output().unwrap()
}

fn check(primary: &Path, fallback: &Path) -> (i32, String, String) {
    let out = run(&[
        "--config",
        primary.to_str().unwrap(),
        "--fallback-config",
        fallback.to_str().unwrap(),
        "check-config",
    ]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_one(file: &Path) -> (i32, String, String) {
    let out = run(&["check-config", file.to_str().unwrap()]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn valid_configuration_passes_with_its_warnings() {
    let d = Dir::new();
    let f = d.file(
        "c.conf",
        r#"{"ShellCommand":"/bin/sh","User":"root","ServerURL":"https://old.example","Colour":"blue"}"#,
    );
    let (code, stdout, stderr) = check(&f, &d.absent());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("warning: ") && stdout.contains("ServerURL field is deprecated, ignoring."),
        "{stdout}"
    );
    assert!(stdout.contains("unknown key \"Colour\" (ignored)"), "{stdout}");
    assert!(stdout.contains(&format!("configuration OK ({})", f.display())), "{stdout}");
}

#[test]
fn the_debian_example_configuration_is_valid() {
    // /etc/mender/mender-connect.conf as shipped by Debian's mender-connect 2.1.0 and the upstream example.
    let d = Dir::new();
    let f = d.file("c.conf", "{\n  \"ShellCommand\": \"/bin/bash\",\n  \"User\": \"nobody\"\n}\n");
    let (code, stdout, stderr) = check_one(&f);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("warning:"), "{stdout}");
}

#[test]
fn json_syntax_error_reports_file_line_and_column() {
    let d = Dir::new();
    let f = d.file("c.conf", "{\n  \"ShellCommand\": \"/bin/sh\",\n  \"User\": \"root\",\n}\n");
    let (code, _stdout, stderr) = check(&f, &d.absent());
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("{}:4:1: invalid JSON", f.display())), "{stderr}");
}

#[test]
fn wrong_type_names_the_key() {
    let d = Dir::new();
    let f = d.file("c.conf", r#"{"ShellCommand":"/bin/sh","User":"root","Terminal":{"Width":-1}}"#);
    let (code, _, stderr) = check(&f, &d.absent());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Terminal.Width: must be a whole number from 0 to 65535 (uint16), not -1"),
        "{stderr}"
    );
}

#[test]
fn invalid_combination_is_an_error() {
    let d = Dir::new();
    let f = d.file(
        "c.conf",
        r#"{"ShellCommand":"/bin/sh","User":"root","Sessions":{"StopExpired":true,"ExpireAfter":60,"ExpireAfterIdle":30}}"#,
    );
    let (code, _, stderr) = check(&f, &d.absent());
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Sessions.ExpireAfter: cannot be combined with Sessions.ExpireAfterIdle"),
        "{stderr}"
    );
}

#[test]
fn system_checks_match_the_reference() {
    let d = Dir::new();
    let plain = d.file("not-a-shell", "#!/bin/sh\n");
    let not_exec = format!(r#"{{"ShellCommand":"{}","User":"root"}}"#, plain.display());
    let not_exec_msg = format!("ShellCommand: given shell ({}) is not executable", plain.display());
    let cases = [
        (r#"{"ShellCommand":"sh","User":"root"}"#, "ShellCommand: given shell (sh) is not an absolute path"),
        (not_exec.as_str(), not_exec_msg.as_str()),
        (r#"{"ShellCommand":"/bin/sh"}"#, "User: please provide a user to run the shell as"),
        (r#"{"ShellCommand":"/bin/sh","User":"no-such-user-mcrs"}"#, "User: unknown user no-such-user-mcrs"),
        (
            r#"{"ShellCommand":"/usr/bin/env","User":"root"}"#,
            "ShellCommand: /usr/bin/env is not present in /etc/shells",
        ),
    ];
    for (json, want) in cases {
        let f = d.file("c.conf", json);
        let (code, stdout, stderr) = check(&f, &d.absent());
        assert_eq!(code, 1, "{json}: {stdout}{stderr}");
        assert!(stderr.contains(want), "{json}: {stderr}");
    }
}

#[test]
fn fallback_is_read_first_and_overridden_by_the_primary() {
    let d = Dir::new();
    let fallback = d.file("fallback.conf", r#"{"User":"root","ShellCommand":"/no/such/shell"}"#);
    let primary = d.file("primary.conf", r#"{"ShellCommand":"/bin/sh"}"#);
    let (code, stdout, stderr) = check(&primary, &fallback);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("configuration OK ({}, {})", fallback.display(), primary.display())),
        "{stdout}"
    );
    // The fallback alone is invalid: its shell does not exist.
    let (code, _, stderr) = check(&d.absent(), &fallback);
    assert_eq!(code, 1);
    assert!(stderr.contains("/no/such/shell) is not executable"), "{stderr}");
}

#[test]
fn check_config_file_must_exist() {
    let d = Dir::new();
    let (code, _, stderr) = check_one(&d.absent());
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read configuration file") && stderr.contains("absent.conf"), "{stderr}");
}

#[test]
fn daemon_refuses_an_invalid_configuration_with_a_log_line() {
    let d = Dir::new();
    let f = d.file("c.conf", r#"{"ShellCommand":"/bin/sh","User":"no-such-user-mcrs"}"#);
    let out =
        run(&["--config", f.to_str().unwrap(), "--fallback-config", d.absent().to_str().unwrap(), "daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("time=\"")
            && l.contains(" level=error msg=\"User: unknown user no-such-user-mcrs\"")),
        "{stderr}"
    );
}

#[test]
fn every_error_and_warning_is_reported_with_its_file() {
    let d = Dir::new();
    // Both files have a typo and errors; the fallback also has an error raised only after the
    // merge (ExpireAfter with ExpireAfterIdle) and the primary a shell that does not exist.
    let fallback = d.file(
        "fallback.conf",
        r#"{"Userr":"root","Terminal":{"Width":"wide"},
            "Sessions":{"StopExpired":true,"ExpireAfter":60,"ExpireAfterIdle":30}}"#,
    );
    let primary = d.file(
        "primary.conf",
        r#"{"ShellComand":"/bin/sh","ShellCommand":"/no/such/shell","User":"root",
            "Sessions":{"MaxPerUser":-1},"ReconnectIntervalSeconds":-3}"#,
    );
    let (code, stdout, stderr) = check(&primary, &fallback);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let (f, p) = (fallback.display(), primary.display());
    for want in [
        format!("error: {f}: Terminal.Width: must be a whole number"),
        format!("error: {p}: Sessions.MaxPerUser: must be a whole number"),
        format!("error: {f}: Sessions.ExpireAfter: cannot be combined with Sessions.ExpireAfterIdle"),
        format!("error: {p}: ShellCommand: given shell (/no/such/shell) is not executable"),
        "configuration invalid (4 errors)".to_owned(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in\n{stderr}");
    }
    for want in [
        format!("warning: {f}: unknown key \"Userr\" (ignored; did you mean \"User\"?)"),
        format!("warning: {p}: unknown key \"ShellComand\" (ignored; did you mean \"ShellCommand\"?)"),
        format!("warning: {p}: ReconnectIntervalSeconds: -3 is negative"),
    ] {
        assert!(stdout.contains(&want), "missing {want:?} in\n{stdout}");
    }
    assert!(!stdout.contains("configuration OK"), "{stdout}");

    // A file that is not JSON is reported, and the other file is still checked.
    let broken = d.file("broken.conf", "{\"User\": ");
    let (code, stdout, stderr) = check(&broken, &fallback);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains(&format!("error: {}:1:", broken.display())), "{stderr}");
    assert!(stderr.contains(&format!("error: {f}: Terminal.Width")), "{stderr}");
    assert!(stdout.contains(&format!("warning: {f}: unknown key \"Userr\"")), "{stdout}");
}

#[test]
fn an_omitted_shell_command_is_not_a_warning() {
    let d = Dir::new();
    let f = d.file("c.conf", r#"{"User":"root"}"#);
    let (code, stdout, stderr) = check_one(&f);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains("warning:"), "{stdout}");
    // An explicit empty one still is.
    let f = d.file("e.conf", r#"{"User":"root","ShellCommand":""}"#);
    let (code, stdout, stderr) = check_one(&f);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("warning: {}: ShellCommand is empty, defaulting to /bin/sh", f.display())),
        "{stdout}"
    );
}

#[test]
fn a_chroot_that_does_not_exist_fails_check_config() {
    let d = Dir::new();
    let missing = d.0.join("no-such-dir");
    let conf = |chroot: &Path| {
        format!(
            r#"{{"User":"root","Limits":{{"Enabled":true,"FileTransfer":{{"Chroot":"{}"}}}}}}"#,
            chroot.display()
        )
    };
    let f = d.file("c.conf", &conf(&missing));
    let (code, stdout, stderr) = check_one(&f);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {}: Limits.FileTransfer.Chroot: {} does not exist",
            f.display(),
            missing.display()
        )),
        "{stderr}"
    );
    let file = d.file("plain", "");
    let f = d.file("c.conf", &conf(&file));
    let (code, _, stderr) = check_one(&f);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not a directory"), "{stderr}");
    let f = d.file("c.conf", &conf(&d.0));
    let (code, stdout, stderr) = check_one(&f);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
