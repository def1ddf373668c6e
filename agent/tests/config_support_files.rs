//! The shipped example configuration and systemd unit (agent/support/).

use std::path::{Path, PathBuf};
use std::process::Command;

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("support")
        .join(name)
}

#[test]
fn example_configuration_is_valid_without_warnings() {
    let out = Command::new(env!("CARGO_BIN_EXE_mender-connect"))
        .arg("check-config")
        .arg(support("mender-connect.conf"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("warning:"), "{stdout}");
}

#[test]
fn systemd_unit_verifies_and_starts_the_daemon() {
    let unit = std::fs::read_to_string(support("mender-connect.service")).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/mender-connect daemon"),
        "{unit}"
    );
    assert!(unit.lines().any(|l| l == "Restart=always"), "{unit}");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "\n*** SKIPPED systemd-analyze verify: systemd-analyze not installed (apt-get install systemd) ***\n"
        );
        return;
    }
    // Verify a copy that points at the binary under test (verify checks that ExecStart exists).
    let dir = std::env::temp_dir().join(format!("mcrs-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("mender-connect.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/mender-connect",
            env!("CARGO_BIN_EXE_mender-connect"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown directives are only warnings for systemd; they must not be there either.
    assert!(!stderr.contains("Unknown key"), "{stderr}");
}
