//! The device agent under test: the Go `mender-connect` 2.1.0 from Debian 12, the Go
//! `mender-connect` 2.3.0 from sid (in the trixie root of [`crate::trixie`]), or our Rust
//! `mender-connect` from this workspace. All are started the same way, as a drop-in replacement
//! must be: `mender-connect --config F --fallback-config G daemon` with the same JSON
//! configuration, and all get token and server URL from the Mender client over the private bus.
//! An agent can also run inside the trixie root ([`Agent::start_in`]), where `/usr/bin/mender-update`
//! is the C++ client's.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::binaries::{Peer, WorkspaceBin};
use crate::bus::PrivateBus;
use crate::error::IoContext;
use crate::process::ManagedChild;
use crate::trixie::Chroot;
use crate::{Error, TestEnv};

/// Which implementation of mender-connect runs on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentKind {
    /// Debian 12's Go mender-connect (2.1.0).
    Go,
    /// sid's Go mender-connect (2.3.0), run in the trixie root.
    Go23,
    /// This workspace's Rust mender-connect.
    Rust,
}

impl AgentKind {
    /// A short name for logs and test names.
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Go => "go-mender-connect",
            AgentKind::Go23 => "go23-mender-connect",
            AgentKind::Rust => "rust-mender-connect",
        }
    }

    /// The agent binary (building ours on first use). For [`AgentKind::Go23`] the path on the
    /// host of the root's `/usr/bin/mender-connect`.
    pub fn program(self) -> Result<PathBuf, Error> {
        match self {
            AgentKind::Go => Peer::GoMenderConnect.path(),
            AgentKind::Go23 => crate::trixie::host_path("/usr/bin/mender-connect"),
            AgentKind::Rust => WorkspaceBin::RustMenderConnect.path(),
        }
    }
}

/// The user the agent's shells run as: the test's own user, so that the tests do not depend on
/// other accounts (mender-connect switches user only when running as root).
pub fn current_user() -> Result<String, Error> {
    let out = Command::new("id").arg("-un").output().context(|| "running `id -un`".to_owned())?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || name.is_empty() {
        return Err(Error::protocol("id -un", format!("no user name ({})", out.status)));
    }
    Ok(name)
}

/// A running agent.
pub struct Agent {
    kind: AgentKind,
    child: ManagedChild,
    config: PathBuf,
}

impl Agent {
    /// Writes the agent configuration and starts `kind`.
    pub fn start(env: &TestEnv, bus: &PrivateBus, kind: AgentKind) -> Result<Self, Error> {
        Self::start_with_config(env, bus, kind, &serde_json::Value::Null)
    }

    /// Like [`Agent::start`], with the top-level keys of `overrides` (a JSON object, e.g.
    /// `{"Limits": {...}, "MenderClient": {"Disable": false}}`) replacing those of the default
    /// configuration, as the integration suite edits `/etc/mender/mender-connect.conf` and
    /// restarts the agent. `Null` keeps the defaults.
    pub fn start_with_config(
        env: &TestEnv,
        bus: &PrivateBus,
        kind: AgentKind,
        overrides: &serde_json::Value,
    ) -> Result<Self, Error> {
        Self::start_with_config_env(env, bus, kind, overrides, &[])
    }

    /// Like [`Agent::start_with_config`], with extra environment variables for the agent (and
    /// so for the programs it runs, e.g. `mender check-update`).
    pub fn start_with_config_env(
        env: &TestEnv,
        bus: &PrivateBus,
        kind: AgentKind,
        overrides: &serde_json::Value,
        extra_env: &[(String, String)],
    ) -> Result<Self, Error> {
        let chroot = match kind {
            AgentKind::Go23 => Some(Chroot::bare()?),
            _ => None,
        };
        Self::start_in(env, bus, kind, overrides, extra_env, chroot.as_ref())
    }

    /// Like [`Agent::start_with_config_env`], run in the trixie root through `chroot` when it is
    /// given ([`AgentKind::Go23`] always runs there). Our agent's binary is copied into the test's
    /// directory, which has the same path in the root; it needs only libraries the root has (libc,
    /// libdbus).
    pub fn start_in(
        env: &TestEnv,
        bus: &PrivateBus,
        kind: AgentKind,
        overrides: &serde_json::Value,
        extra_env: &[(String, String)],
        chroot: Option<&Chroot>,
    ) -> Result<Self, Error> {
        let program = kind.program()?;
        let dir = env.subdir(kind.name())?;
        let config = dir.join("mender-connect.conf");
        // The keys of /etc/mender/mender-connect.conf as mender-connect 2.1.0 reads them.
        let mut document = json!({
            "ShellCommand": "/bin/bash",
            "User": current_user()?,
            "Terminal": { "Width": 80, "Height": 24 },
            "ReconnectIntervalSeconds": 2,
            "FileTransfer": { "Disable": false },
            "PortForward": { "Disable": false },
            "MenderClient": { "Disable": true },
            // Our extension (Go 2.1.0 ignores unknown keys): a control socket per test, so that
            // agents of tests running in parallel do not probe each other's at the default path.
            "ControlSocket": dir.join("control.sock"),
        });
        if let (Some(doc), Some(extra)) = (document.as_object_mut(), overrides.as_object()) {
            for (key, value) in extra {
                doc.insert(key.clone(), value.clone());
            }
        } else if !overrides.is_null() {
            return Err(Error::protocol(
                "agent configuration",
                format!("overrides must be a JSON object, got {overrides}"),
            ));
        }
        std::fs::write(&config, format!("{document:#}\n"))
            .context(|| format!("writing {}", config.display()))?;
        let fallback = dir.join("no-fallback.conf");
        let args = [
            "--config".to_owned(),
            config.display().to_string(),
            "--fallback-config".to_owned(),
            fallback.display().to_string(),
            "--debug".to_owned(),
            "daemon".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = match (chroot, kind) {
            (Some(chroot), AgentKind::Go23) => chroot.command("/usr/bin/mender-connect", &args),
            (Some(chroot), _) => {
                let copy = dir.join("mender-connect.bin");
                // Copied by `cp`, not in this process: a write descriptor held here can be
                // inherited by another test thread's fork, and exec'ing the copy then fails with
                // ETXTBSY ("Text file busy").
                let st = Command::new("cp")
                    .arg(&program)
                    .arg(&copy)
                    .status()
                    .context(|| format!("copying {} into the test directory", program.display()))?;
                if !st.success() {
                    return Err(std::io::Error::other(format!("cp {} failed: {st}", program.display())))
                        .context(|| format!("copying {} into the test directory", program.display()));
                }
                chroot.command(&copy.display().to_string(), &args)
            }
            (None, _) => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
        };
        cmd.current_dir(&dir);
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        bus.apply(&mut cmd);
        let child = ManagedChild::spawn(env, kind.name(), cmd)?;
        Ok(Agent { kind, child, config })
    }

    /// Which agent this is.
    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Fails if the agent has exited.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        self.child.ensure_running()
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        self.child.log_text()
    }
}
