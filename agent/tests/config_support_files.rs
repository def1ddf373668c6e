//! The shipped example configuration and systemd unit (agent/support/).

use std::path::{Path, PathBuf};
use std::process::Command;

fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support").join(name)
}

/// The example's file-transfer `Chroot`, which check-config requires to exist.
const EXAMPLE_CHROOT: &str = "/var/lib/mender-connect";

#[test]
fn example_configuration_is_valid_without_warnings() {
    // As on a device that has the example's Chroot: a private mount namespace with an empty
    // /var/lib holding it, so the test machine's own /var/lib is neither needed nor touched.
    let script = format!(
        "mount -t tmpfs tmpfs /var/lib && mkdir -p {EXAMPLE_CHROOT} && exec \"$0\" check-config \"$1\""
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_mender-connect"))
        .arg(support("mender-connect.conf"))
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("warning:"), "{stdout}");
}

#[test]
fn systemd_unit_verifies_and_starts_the_daemon() {
    let unit = std::fs::read_to_string(support("mender-connect.service")).unwrap();
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/bin/mender-connect daemon"), "{unit}");
    // mender-connect 2.3.0's unit: Restart=always; since 2.2.0 (MEN-6858) Wants= and After= both
    // the 3.x client's and the 4.x+ mender-authd's unit, and no Requires= (4.x has no
    // mender-client.service, so Requires= would keep the agent from starting).
    assert!(unit.lines().any(|l| l == "Restart=always"), "{unit}");
    for key in ["Wants=", "After="] {
        let line = unit.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}: {unit}"));
        let units: Vec<&str> = line[key.len()..].split_whitespace().collect();
        for want in ["mender-client.service", "mender-authd.service"] {
            assert!(units.contains(&want), "{key} lacks {want}: {line}");
        }
    }
    assert!(!unit.lines().any(|l| l.starts_with("Requires=")), "{unit}");
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!(
            "\n*** SKIPPED systemd-analyze verify: systemd-analyze not installed (apt-get install systemd) ***\n"
        );
        return;
    }
    // Verify a copy that points at the binary under test (verify checks that ExecStart exists).
    let dir = std::env::temp_dir().join(format!("mcrs-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("mender-connect.service");
    std::fs::write(&copy, unit.replace("/usr/bin/mender-connect", env!("CARGO_BIN_EXE_mender-connect")))
        .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown directives are only warnings for systemd; they must not be there either.
    assert!(!stderr.contains("Unknown key"), "{stderr}");
}
