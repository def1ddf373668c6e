//! Build metadata for `mender-connect version`: a version a user can match to a release and the
//! toolchain, in the reference's `<version>\truntime: <toolchain>` (Go prints `go1.19.8` there).
//!
//! - `MENDER_CONNECT_VERSION` at build time (e.g. from a Yocto recipe's PV) wins;
//! - else the crate version, plus `+<git describe>` when the source is a git checkout with git
//!   installed (`0.1.0+36bdec8`, semver build metadata);
//! - the toolchain is `rust<rustc version>` (`rust1.85.0`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MENDER_CONNECT_VERSION");
    let pkg = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let version = match std::env::var("MENDER_CONNECT_VERSION") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => match git_describe() {
            Some(d) => format!("{pkg}+{d}"),
            None => pkg,
        },
    };
    println!("cargo:rustc-env=MENDER_CONNECT_FULL_VERSION={version}");
    println!("cargo:rustc-env=MENDER_CONNECT_TOOLCHAIN={}", toolchain());
}

fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// `git describe --tags --always`, kept to the characters semver build metadata allows, and a
/// rerun of this script whenever HEAD moves.
fn git_describe() -> Option<String> {
    let describe = git(&["describe", "--tags", "--always"])?;
    let dirs =
        git(&["rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir"]).unwrap_or_default();
    let mut dirs = dirs.lines().map(PathBuf::from);
    let (Some(git_dir), Some(common)) = (dirs.next(), dirs.next()) else {
        return Some(clean(&describe));
    };
    // Only paths that exist: cargo treats a missing one as always changed.
    let mut watch = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(common.join(r));
    }
    for p in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    Some(clean(&describe))
}

fn clean(describe: &str) -> String {
    describe
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect()
}

/// `rust1.95.0` from `rustc 1.95.0 (59807616e 2026-04-14)`.
fn toolchain() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(|v| format!("rust{v}")))
        .unwrap_or_else(|| "rust".into())
}
