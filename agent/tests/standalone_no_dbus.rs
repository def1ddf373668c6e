//! A build with `--no-default-features --features standalone` (the Yocto `PACKAGECONFIG` without
//! `dbus-auth`) has no libdbus: not in its dependency graph, not in the binary's `NEEDED` entries.
//! The binary builds into its own target directory, so the default build the other tests run
//! is not replaced.

use std::path::PathBuf;
use std::process::Command;

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

const FEATURES: [&str; 5] = ["-p", "mender-connect", "--no-default-features", "--features", "standalone"];

#[test]
fn standalone_only_dependency_graph_has_no_dbus() {
    let out = cargo()
        .args(["tree", "-e", "normal,build", "--prefix", "none"])
        .args(FEATURES)
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("ring ")), "ring missing: {tree}");
    assert!(!tree.lines().any(|l| l.contains("dbus")), "dbus in the standalone build: {tree}");
}

#[test]
fn standalone_only_binary_does_not_link_libdbus() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("standalone-no-dbus");
    let out = cargo()
        .args(["build", "--bin", "mender-connect", "--message-format=short"])
        .args(FEATURES)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("cargo build runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bin = target.join("debug/mender-connect");
    let elf = Command::new("readelf").arg("-d").arg(&bin).output().expect("readelf (binutils) runs");
    assert!(elf.status.success(), "{}", String::from_utf8_lossy(&elf.stderr));
    let dynamic = String::from_utf8_lossy(&elf.stdout);
    let needed: Vec<&str> = dynamic.lines().filter(|l| l.contains("(NEEDED)")).collect();
    assert!(needed.iter().any(|l| l.contains("libc.so")), "not a dynamic binary? {dynamic}");
    assert!(!needed.iter().any(|l| l.contains("dbus")), "links libdbus: {needed:?}");
    // The default build of the same tree does link it, so the check can tell the difference.
    let default = cargo()
        .args(["tree", "-p", "mender-connect", "-e", "normal", "--prefix", "none"])
        .output()
        .expect("cargo tree");
    assert!(String::from_utf8_lossy(&default.stdout).contains("libdbus-sys"));
}
