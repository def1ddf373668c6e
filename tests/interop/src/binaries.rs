//! Finding the programs the tests run.
//!
//! Peers (Debian packages) are looked up in `/usr/bin`, `/usr/sbin`, then `PATH`; a missing one is an error that names the package,
//! never a skip, because the test command installs them.
//!
//! Workspace binaries (the mock server, our agent) belong to other packages, so cargo does not give
//! this package their paths. The harness builds each one once per test process with
//! `cargo build -p <package> --bin <name> --message-format=json` against the workspace manifest, and
//! takes the executable path from cargo's `compiler-artifact` message. Cargo's own file lock makes
//! concurrent builds from parallel test binaries safe, and after `cargo test --workspace` built
//! them the call is a quick no-op check. `MENDER_INTEROP_<NAME>_BIN` (e.g.
//! `MENDER_INTEROP_MENDER_CONNECT_BIN`) overrides the build with a prebuilt binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// A program from a Debian package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// `mender` from `mender-client` (3.4.0 in Debian 12).
    MenderClient,
    /// `mender-connect` from `mender-connect` (the Go agent, 2.1.0 in Debian 12).
    GoMenderConnect,
    /// `mender-cli` from `mender-cli` (1.9.0 in Debian 12).
    MenderCli,
    /// `dbus-daemon` from `dbus-daemon`.
    DBusDaemon,
    /// `dbus-send` from `dbus-bin`.
    DBusSend,
    /// `openssl` from `openssl`.
    OpenSsl,
    /// `curl` from `curl`.
    Curl,
}

impl Peer {
    /// The program name and the Debian package that ships it.
    pub fn program_and_package(self) -> (&'static str, &'static str) {
        match self {
            Peer::MenderClient => ("mender", "mender-client"),
            Peer::GoMenderConnect => ("mender-connect", "mender-connect"),
            Peer::MenderCli => ("mender-cli", "mender-cli"),
            Peer::DBusDaemon => ("dbus-daemon", "dbus-daemon"),
            Peer::DBusSend => ("dbus-send", "dbus-bin"),
            Peer::OpenSsl => ("openssl", "openssl"),
            Peer::Curl => ("curl", "curl"),
        }
    }

    /// The program's path, or [`Error::PeerMissing`].
    pub fn path(self) -> Result<PathBuf, Error> {
        let (program, package) = self.program_and_package();
        // Debian's own directories first: our agent is also called `mender-connect`, and a PATH
        // holding the workspace's target dir must not turn the reference into the subject.
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        [PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")]
            .into_iter()
            .chain(std::env::split_paths(&path_var))
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| Error::PeerMissing { program: program.to_owned(), package: package.to_owned() })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A binary built from this workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkspaceBin {
    /// `mender-mock-server` (package `mender-mock-server`).
    MockServer,
    /// Our Rust `mender-connect` (package `mender-connect`).
    RustMenderConnect,
}

impl WorkspaceBin {
    /// (package, binary)
    pub fn package_and_name(self) -> (&'static str, &'static str) {
        match self {
            WorkspaceBin::MockServer => ("mender-mock-server", "mender-mock-server"),
            WorkspaceBin::RustMenderConnect => ("mender-connect", "mender-connect"),
        }
    }

    fn override_var(self) -> String {
        let (_, name) = self.package_and_name();
        format!("MENDER_INTEROP_{}_BIN", name.to_ascii_uppercase().replace('-', "_"))
    }

    /// The binary's path, building it on first use in this process.
    pub fn path(self) -> Result<PathBuf, Error> {
        static BUILT: OnceLock<Mutex<HashMap<WorkspaceBin, Result<PathBuf, String>>>> = OnceLock::new();
        if let Some(path) = std::env::var_os(self.override_var()) {
            return Ok(PathBuf::from(path));
        }
        let (_, name) = self.package_and_name();
        let cache = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
        // Holding the lock across the build makes threads of this process wait for one build
        // instead of racing cargo against itself.
        let mut built = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = built.entry(self).or_insert_with(|| build(self));
        result.clone().map_err(|detail| Error::Build { binary: name.to_owned(), detail })
    }
}

fn build(bin: WorkspaceBin) -> Result<PathBuf, String> {
    let (package, name) = bin.package_and_name();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(&cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", package, "--bin", name, "--message-format=json-render-diagnostics"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "cargo exited with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == name)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo reported no executable for {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_peer_error_names_the_package() {
        let err = Error::PeerMissing { program: "mender".to_owned(), package: "mender-client".to_owned() };
        let text = err.to_string();
        assert!(text.contains("`mender`"), "{text}");
        assert!(text.contains("apt-get install mender-client"), "{text}");
    }

    #[test]
    fn every_peer_maps_to_a_debian_package() {
        for peer in [
            Peer::MenderClient,
            Peer::GoMenderConnect,
            Peer::MenderCli,
            Peer::DBusDaemon,
            Peer::DBusSend,
            Peer::OpenSsl,
            Peer::Curl,
        ] {
            let (program, package) = peer.program_and_package();
            assert!(!program.is_empty() && !package.is_empty());
        }
        assert_eq!(Peer::MenderClient.program_and_package(), ("mender", "mender-client"));
    }

    #[test]
    fn override_variables_follow_the_binary_names() {
        assert_eq!(WorkspaceBin::RustMenderConnect.override_var(), "MENDER_INTEROP_MENDER_CONNECT_BIN");
        assert_eq!(WorkspaceBin::MockServer.override_var(), "MENDER_INTEROP_MENDER_MOCK_SERVER_BIN");
    }
}
