//! The real `mender-cli` (Debian 1.9.0) as a user drives it.
//!
//! Each test gets its own `$HOME` (and working directory, where mender-cli also looks for
//! `.mender-clirc`): 1.9.0 keeps the login token in `$HOME/.cache/mender/authtoken` and reads it
//! from there for every other command (it ignores `--token` for reading).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::binaries::Peer;
use crate::process::ManagedChild;
use crate::pty::PtySession;
use crate::{Error, TestEnv};

/// Bound for one-shot commands (login, cp). A 4 MiB transfer through the loaded machine fits.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// The result of a finished command.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Its combined stdout and stderr.
    pub output: String,
}

impl Finished {
    /// The output without the harness's own lines (the command line it ran).
    pub fn output_without_harness(&self) -> String {
        self.output.lines().filter(|l| !l.starts_with("[harness]")).collect::<Vec<_>>().join("\n")
    }
}

/// mender-cli configured for one server and one user home.
pub struct MenderCli {
    program: PathBuf,
    server: String,
    home: PathBuf,
}

impl MenderCli {
    /// Prepares a private home for the cli, talking to `server`.
    pub fn new(env: &TestEnv, server: &str) -> Result<Self, Error> {
        Ok(MenderCli {
            program: Peer::MenderCli.path()?,
            server: server.to_owned(),
            home: env.subdir("mender-cli-home")?,
        })
    }

    /// The cli's home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where 1.9.0 stores the login token.
    pub fn token_path(&self) -> PathBuf {
        self.home.join(".cache/mender/authtoken")
    }

    /// `mender-cli <subcommand> --server URL <args...>` with the private home.
    pub fn command(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg(subcommand)
            .args(["--server", &self.server])
            .args(args)
            .env("HOME", &self.home)
            .env_remove("XDG_CACHE_HOME")
            .current_dir(&self.home);
        cmd
    }

    /// Runs a command to completion (bounded by [`COMMAND_TIMEOUT`]).
    pub fn run(&self, env: &TestEnv, name: &str, subcommand: &str, args: &[&str]) -> Result<Finished, Error> {
        let mut child = ManagedChild::spawn(env, name, self.command(subcommand, args))?;
        let status = child.wait_exit(COMMAND_TIMEOUT)?;
        Ok(Finished { status, output: child.log_text() })
    }

    /// `login --username U --password P`; fails unless it exits 0.
    pub fn login(&self, env: &TestEnv, user: &str, password: &str) -> Result<Finished, Error> {
        let done =
            self.run(env, "mender-cli-login", "login", &["--username", user, "--password", password])?;
        if !done.status.success() {
            return Err(Error::protocol(
                "mender-cli login",
                format!("exited with {}: {}", done.status, done.output),
            ));
        }
        Ok(done)
    }

    /// `cp SRC DST` (`DEVICE_ID:/path` on either side).
    pub fn cp(&self, env: &TestEnv, src: &str, dst: &str) -> Result<Finished, Error> {
        self.run(env, "mender-cli-cp", "cp", &[src, dst])
    }

    /// `terminal DEVICE_ID` on a pty.
    pub fn terminal(&self, env: &TestEnv, device_id: &str) -> Result<PtySession, Error> {
        PtySession::spawn(env, "mender-cli-terminal", self.command("terminal", &[device_id]))
    }

    /// `port-forward DEVICE_ID <spec>` with a raw mapping spec (e.g. `udp/L:127.0.0.1:R`), bound to
    /// 127.0.0.1, left running.
    pub fn port_forward_spec(
        &self,
        env: &TestEnv,
        device_id: &str,
        spec: &str,
    ) -> Result<ManagedChild, Error> {
        ManagedChild::spawn(
            env,
            "mender-cli-port-forward",
            self.command("port-forward", &[device_id, spec, "--bind", "127.0.0.1"]),
        )
    }

    /// `port-forward DEVICE_ID LOCAL:HOST:REMOTE` (TCP, bound to 127.0.0.1), left running.
    pub fn port_forward_to(
        &self,
        env: &TestEnv,
        device_id: &str,
        local_port: u16,
        remote_host: &str,
        remote_port: u16,
    ) -> Result<ManagedChild, Error> {
        let mapping = format!("{local_port}:{remote_host}:{remote_port}");
        ManagedChild::spawn(
            env,
            "mender-cli-port-forward",
            self.command("port-forward", &[device_id, &mapping, "--bind", "127.0.0.1"]),
        )
    }
}
