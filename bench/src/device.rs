//! One agent on a device of its own: mock server, private bus, the real Mender client, and the
//! agent under test started as a daemon, as `mender-connect-interop`'s testbed does, but without
//! `--debug` (debug logging of every message would be part of what is measured) and keeping the
//! agent's pid for `/proc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mender_connect_interop::TestEnv;
use mender_connect_interop::agent::current_user;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::mock::MockOptions;
use mender_connect_interop::process::ManagedChild;
use mender_connect_interop::testbed::{Admission, Testbed};
use serde_json::json;

use crate::BenchError;
use crate::procfs::Proc;

/// A connected device with the agent under test.
pub struct Device {
    /// The agent process.
    pub agent: ManagedChild,
    /// Mock server, client and bus (dropped after the agent).
    pub bed: Testbed,
}

/// Drops the agent's clean pages from the page cache, so every run maps its code from a cold
/// cache (as after a boot) with the kernel's readahead deciding the folio sizes. Otherwise the
/// idle file RSS depends on how the binary got into the cache: the same binary measured 1.16
/// MiB idle as a day-old copy and 1.35 MiB just after `cp` (large folios map up to 128 KiB per
/// fault). Best effort: pages of a running copy stay.
fn evict_from_page_cache(program: &Path) {
    if let Ok(f) = std::fs::File::open(program) {
        // Dirty pages (a binary copied just before) are not dropped: write them back first.
        let _ = f.sync_data();
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
}

impl Device {
    /// Starts everything and waits until the server reports the agent connected.
    pub fn start(env: &TestEnv, name: &str, program: &Path) -> Result<Self, BenchError> {
        let admission = Admission::AutoAccept;
        let options = MockOptions {
            // The benchmarks relay far more than the server's default 8 MiB per terminal
            // session; the limit is not what is measured.
            extra_args: vec!["--session-byte-limit".into(), (1u64 << 40).to_string()],
            ..MockOptions::default()
        };
        let mock = Testbed::start_mock_with(env, &admission, options)?;
        let bed = Testbed::start_device(env, mock, Identity::mac_for(name), &admission)?;
        let dir = env.subdir(name)?;
        let config = write_config(&dir)?;
        evict_from_page_cache(program);
        let mut cmd = Command::new(program);
        cmd.arg("--config")
            .arg(&config)
            .arg("--fallback-config")
            .arg(dir.join("no-fallback.conf"))
            .arg("daemon")
            .current_dir(&dir);
        bed.bus.apply(&mut cmd);
        let agent = ManagedChild::spawn(env, name, cmd)?;
        let mut device = Device { agent, bed };
        device.bed.api.wait_connected(&device.bed.device_id)?;
        device.agent.ensure_running()?;
        Ok(device)
    }

    /// The agent's process.
    pub fn proc(&self) -> Proc {
        Proc::new(self.agent.id())
    }

    /// Base URL of the mock server.
    pub fn server(&self) -> &str {
        self.bed.mock.url()
    }

    /// The management user's token.
    pub fn user_token(&self) -> &str {
        self.bed.api.token()
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.bed.device_id
    }

    /// Fails if the agent died.
    pub fn ensure_running(&mut self) -> Result<(), BenchError> {
        Ok(self.agent.ensure_running()?)
    }
}

/// The configuration both agents get: the keys of `/etc/mender/mender-connect.conf` as
/// mender-connect 2.1.0 reads them.
fn write_config(dir: &Path) -> Result<PathBuf, BenchError> {
    let config = dir.join("mender-connect.conf");
    let document = json!({
        "ShellCommand": "/bin/bash",
        "User": current_user()?,
        "Terminal": { "Width": 80, "Height": 24 },
        "ReconnectIntervalSeconds": 2,
        "FileTransfer": { "Disable": false },
        "PortForward": { "Disable": false },
        "MenderClient": { "Disable": true },
        // The reference allows one shell per user by default; the benchmarks open several.
        "Sessions": { "MaxPerUser": 16 },
        // Our extension (the Go agent ignores unknown keys): a socket of its own, so agents that
        // tests start meanwhile do not probe the measured one at the default path.
        "ControlSocket": dir.join("control.sock"),
    });
    std::fs::write(&config, format!("{document:#}\n"))
        .map_err(|e| BenchError::io(&format!("writing {}", config.display()), e))?;
    Ok(config)
}

/// Lets the agent settle after a step (sessions torn down, buffers returned).
pub fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}
