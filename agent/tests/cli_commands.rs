//! The command line of the built binary, compared with mender-connect 2.1.0 (urfave/cli):
//! help, version, unknown commands and flags, exit codes.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mender-connect")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn no_arguments_prints_help_and_succeeds() {
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for want in [
        "mender-connect - manage and start the Mender Connect service.",
        "daemon",
        "version",
        "check-config",
        "--config FILE, -c FILE",
        "(default: \"/etc/mender/mender-connect.conf\")",
        "--fallback-config FILE, -b FILE",
        "(default: \"/var/lib/mender/mender-connect.conf\")",
        "--debug, -d",
        "--trace, --dd",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    assert_eq!(text(&run(&["--help"]).stdout), stdout);
    assert_eq!(text(&run(&["help"]).stdout), stdout);
}

#[test]
fn version_command_and_flag() {
    let out = run(&["version"]);
    assert_eq!(out.status.code(), Some(0));
    let line = text(&out.stdout);
    // The reference's `<version>\truntime: <toolchain>` (Go: `2.3.0\truntime: go1.21.5`).
    let (version, runtime) = line.trim_end().split_once('\t').unwrap_or_else(|| panic!("{line:?}"));
    assert!(line.ends_with('\n') && !runtime.contains('\t'), "{line:?}");
    // A version that names the release and, from a git checkout, the commit.
    let pkg = env!("CARGO_PKG_VERSION");
    assert!(version == pkg || version.starts_with(&format!("{pkg}+")), "{version:?}");
    let in_git = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned());
    if let Some(head) = in_git {
        assert!(version.contains(&head), "{version:?} does not name commit {head}");
    }
    // The toolchain that built it, as `rust<rustc version>`.
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    let rustc_version = rustc.split_whitespace().nth(1).unwrap_or("?");
    assert_eq!(runtime, format!("runtime: rust{rustc_version}"), "{line:?}");
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), format!("mender-connect version {line}"));
    assert_eq!(text(&run(&["-v"]).stdout), text(&out.stdout));
}

#[test]
fn unknown_command_exits_3_like_urfave() {
    let out = run(&["foo"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stderr), "No help topic for 'foo'\n");
}

#[test]
fn unknown_flag_exits_1_with_help() {
    let out = run(&["--bogus", "daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("flag provided but not defined: -bogus\n"), "{stderr}");
    assert!(stderr.contains("GLOBAL OPTIONS:"), "{stderr}");
}

#[test]
fn command_help() {
    let out = run(&["daemon", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("mender-connect daemon - Start the client as a background service."));
    let out = run(&["help", "check-config"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("mender-connect check-config [command options] [FILE]"));
}

#[test]
fn global_flags_work_in_every_spelling() {
    // A missing configuration makes `check-config` fail on the missing User: proof that the
    // flag's path was used (the error would otherwise concern /etc/mender/mender-connect.conf).
    let dir = std::env::temp_dir().join(format!("mcrs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.conf");
    std::fs::write(&conf, r#"{"ShellCommand":"/bin/sh","User":"root"}"#).unwrap();
    let c = conf.to_str().unwrap();
    let none = dir.join("none.conf");
    let n = none.to_str().unwrap();
    let cases: [Vec<String>; 5] = [
        vec!["--config".into(), c.into(), "--fallback-config".into(), n.into(), "check-config".into()],
        vec!["-c".into(), c.into(), "-b".into(), n.into(), "check-config".into()],
        vec!["-config".into(), c.into(), "-fallback-config".into(), n.into(), "check-config".into()],
        vec![format!("--config={c}"), format!("-b={n}"), "check-config".into()],
        vec!["check-config".into(), "--config".into(), c.into(), "-b".into(), n.into(), "--debug".into()],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("configuration OK ({c})")), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "dbus-auth")]
#[test]
fn daemon_without_a_system_bus_points_to_standalone_mode() {
    let dir = std::env::temp_dir().join(format!("mcrs-cli-nobus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.conf");
    let user = text(&Command::new("id").arg("-un").output().unwrap().stdout).trim().to_owned();
    std::fs::write(&conf, format!(r#"{{"ShellCommand":"/bin/sh","User":"{user}"}}"#)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mender-connect"))
        .arg("-c")
        .arg(&conf)
        .arg("-b")
        .arg(dir.join("none.conf"))
        .arg("daemon")
        .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", dir.join("no-bus").display()))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let log = text(&out.stderr) + &text(&out.stdout);
    assert!(log.contains("dbus failed to connect"), "{log}");
    if cfg!(feature = "standalone") {
        assert!(log.contains("a Standalone block") && log.contains("without D-Bus"), "{log}");
    }
}
