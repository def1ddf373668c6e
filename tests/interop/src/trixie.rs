//! The current Mender peers in a Debian trixie root (built and cached by `tests/trixie-root.sh`):
//! the C++ Mender client 5.0.0 (`mender-auth`, `mender-update`, `mender-updated`) from
//! experimental, and the Go mender-connect 2.3.0 from sid.
//!
//! Programs of the root run with `chroot`, so in the host's network namespace (loopback is shared
//! with the mock server and the agent), each in a private mount namespace (`unshare --mount`) that
//! bind-mounts `/proc`, `/sys` and `/dev` (the identity script reads `/sys/class/net`), the
//! system's temporary directory at the same path (so the test's directory, and a private bus
//! socket in it, have the same path inside and outside), and for a [`RootDevice`] the test's own
//! `/etc/mender`, `/data/mender` (= `/var/lib/mender`), identity script directory and `/run/dbus`.
//! The binds vanish with the namespace when the program exits, and parallel tests share the cached
//! root read-only, each with its own device state.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::IoContext;
use crate::{Error, TestEnv};

/// The cached root, built (or found) once per test process by `tests/trixie-root.sh`.
pub fn root() -> Result<&'static Path, Error> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(build_root)
        .as_deref()
        .map_err(|detail| Error::protocol("tests/trixie-root.sh", detail.clone()))
}

fn build_root() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../trixie-root.sh");
    let out = Command::new("/bin/bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("exited with {}:\n{stderr}", out.status));
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(printed.lines().last().unwrap_or("").trim());
    if !path.join("usr/bin/mender-auth").exists() {
        return Err(format!("printed {printed:?}, which holds no usr/bin/mender-auth\n{stderr}"));
    }
    Ok(path)
}

/// A program of the root, as a path on the host (to check it exists or read its package version).
pub fn host_path(inside: &str) -> Result<PathBuf, Error> {
    Ok(root()?.join(inside.trim_start_matches('/')))
}

/// The `PATH` programs in the root get (Debian's default for root).
pub const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to run programs in the root: which host directories are bound where.
#[derive(Debug, Clone)]
pub struct Chroot {
    root: PathBuf,
    /// (host directory, path inside the root)
    binds: Vec<(PathBuf, String)>,
}

const MOUNT_SCRIPT: &str = r#"
r=$1; shift
mount --bind /proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
while [ "$1" != "--" ]; do
    mkdir -p "$r$2"
    mount --bind "$1" "$r$2"
    shift 2
done
shift
exec chroot "$r" "$@"
"#;

impl Chroot {
    /// The root with only the system binds and the temporary directory.
    pub fn bare() -> Result<Self, Error> {
        let tmp = std::env::temp_dir();
        let tmp = tmp.canonicalize().unwrap_or(tmp);
        Ok(Chroot { root: root()?.to_owned(), binds: vec![(tmp.clone(), tmp.display().to_string())] })
    }

    /// Adds a bind of host directory `host` at `inside` (an absolute path in the root).
    pub fn bind(mut self, host: &Path, inside: &str) -> Self {
        self.binds.push((host.to_owned(), inside.to_owned()));
        self
    }

    /// The root directory on the host.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A command running `program` (a path inside the root) with `args` in the root. Its process
    /// is the program itself (unshare, sh and chroot each exec the next), so its pid and signals
    /// are the program's. The environment is the caller's with [`ROOT_PATH`] as `PATH`.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-euc"])
            .arg(MOUNT_SCRIPT)
            .arg("sh")
            .arg(&self.root);
        for (host, inside) in &self.binds {
            cmd.arg(host).arg(inside);
        }
        cmd.arg("--").arg(program).args(args).env("PATH", ROOT_PATH);
        cmd
    }
}

/// The identity script path compiled into the Mender client.
pub const IDENTITY_DIR: &str = "/usr/share/mender/identity";

/// One test's device in the root: its own `/etc/mender` (configuration, `artifact_info`),
/// `/data/mender` (device key, `device_type`, the client's store), identity script and `/run/dbus`
/// (the private system bus socket, at the default path for programs in the root).
#[derive(Debug, Clone)]
pub struct RootDevice {
    chroot: Chroot,
    etc: PathBuf,
    data: PathBuf,
    run_dbus: PathBuf,
}

impl RootDevice {
    /// Writes the device's files: `mender.conf` with `server_url`, the identity script printing
    /// `identity`, `artifact_info`, `device_type`, and `device_key` (PEM) as the device key if
    /// given (a preauthorized device's key, installed by the manufacturer).
    pub fn new(
        env: &TestEnv,
        identity: &crate::device_files::Identity,
        server_url: &str,
        device_key: Option<&Path>,
    ) -> Result<Self, Error> {
        use std::os::unix::fs::PermissionsExt;
        let etc = env.subdir("device5/etc-mender")?;
        let data = env.subdir("device5/data-mender")?;
        let ident = env.subdir("device5/identity")?;
        let run_dbus = env.subdir("device5/run-dbus")?;
        let config = serde_json::json!({
            "ServerURL": server_url,
            "RetryPollIntervalSeconds": 1,
            "UpdatePollIntervalSeconds": 3600,
            "InventoryPollIntervalSeconds": 3600,
        });
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).context(|| format!("writing {}", path.display()))
        };
        write(etc.join("mender.conf"), format!("{config:#}\n"))?;
        write(etc.join("artifact_info"), "artifact_name=mender-connect-interop\n".to_owned())?;
        write(data.join("device_type"), "device_type=interop-test\n".to_owned())?;
        let script = ident.join("mender-device-identity");
        write(
            script.clone(),
            format!(
                "#!/bin/sh\n# The interop test's device identity.\ncat <<'EOF'\n{}\nEOF\n",
                identity.script_output()
            ),
        )?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .context(|| format!("chmod {}", script.display()))?;
        if let Some(key) = device_key {
            let target = data.join("mender-agent.pem");
            std::fs::copy(key, &target).context(|| format!("installing the device key {}", key.display()))?;
        }
        let chroot = Chroot::bare()?
            .bind(&etc, "/etc/mender")
            .bind(&data, "/data/mender")
            .bind(&ident, IDENTITY_DIR)
            .bind(&run_dbus, "/run/dbus");
        Ok(RootDevice { chroot, etc, data, run_dbus })
    }

    /// How to run programs on this device.
    pub fn chroot(&self) -> &Chroot {
        &self.chroot
    }

    /// The device's `/etc/mender` on the host.
    pub fn etc_dir(&self) -> &Path {
        &self.etc
    }

    /// The device's `/data/mender` on the host.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The device's `/run/dbus` on the host: where its system bus socket goes.
    pub fn run_dbus_dir(&self) -> &Path {
        &self.run_dbus
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_binds_then_runs_the_program_itself() {
        let chroot =
            Chroot { root: PathBuf::from("/r"), binds: vec![(PathBuf::from("/tmp"), "/tmp".to_owned())] }
                .bind(Path::new("/t/etc"), "/etc/mender");
        let cmd = chroot.command("/usr/bin/mender-auth", &["daemon"]);
        assert_eq!(cmd.get_program(), "unshare");
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        // unshare's options, sh -euc SCRIPT, $0, the root, bind pairs, "--", the program.
        assert_eq!(&args[..6], ["--mount", "--propagation", "private", "--", "/bin/sh", "-euc"]);
        assert_eq!(
            &args[7..],
            ["sh", "/r", "/tmp", "/tmp", "/t/etc", "/etc/mender", "--", "/usr/bin/mender-auth", "daemon"]
        );
        // Every step execs the next, so the pid the test holds is the program's.
        assert!(args[6].contains("exec chroot \"$r\" \"$@\""));
        let path = cmd.get_envs().find(|(k, _)| *k == "PATH").and_then(|(_, v)| v);
        assert_eq!(path, Some(std::ffi::OsStr::new(ROOT_PATH)));
    }
}
