//! The two files of a Mender device that mender-client 3.4.0 reads from fixed paths (no flag or
//! config key moves them):
//!
//! - `/usr/share/mender/identity/mender-device-identity`, the identity script. Debian's package
//!   ships the directory empty. The harness installs a script that prints the identity a test
//!   passes in `MENDER_INTEROP_IDENTITY` (the client passes its environment to the script), so
//!   that parallel tests each have their own device identity.
//! - `/etc/mender/artifact_info`, the current artifact name. Without it the daemon fails every
//!   inventory and update check *before* authenticating, and so never authenticates on its own.
//!
//! Both are installed only when absent (or, for the script, when it is an older copy of ours), by
//! atomic rename, so parallel tests and a real device's files are safe. Needs root, like the peers.

use std::path::Path;

use crate::Error;
use crate::error::IoContext;

/// The identity script path compiled into mender-client 3.4.0.
pub const IDENTITY_SCRIPT: &str = "/usr/share/mender/identity/mender-device-identity";
/// The artifact info path compiled into mender-client 3.4.0.
pub const ARTIFACT_INFO: &str = "/etc/mender/artifact_info";
/// Environment variable the installed identity script prints (`key=value` lines).
pub const IDENTITY_ENV: &str = "MENDER_INTEROP_IDENTITY";

const MARKER: &str = "# mender-connect-interop identity script";

fn identity_script() -> String {
    format!(
        "#!/bin/sh\n{MARKER} v1\n\
         # Prints the device identity a test passes in {IDENTITY_ENV} (key=value lines).\n\
         if [ -n \"${IDENTITY_ENV}\" ]; then\n  printf '%s\\n' \"${IDENTITY_ENV}\"\n\
         else\n  echo 'mac=02:00:00:00:00:01'\nfi\n"
    )
}

/// Installs the identity script and artifact info if needed.
pub fn ensure_installed() -> Result<(), Error> {
    let script = identity_script();
    match std::fs::read_to_string(IDENTITY_SCRIPT) {
        Ok(existing) if existing == script => {}
        Ok(existing) if !existing.contains(MARKER) => {
            return Err(Error::protocol(
                "device setup",
                format!(
                    "{IDENTITY_SCRIPT} exists and is not the interop tests' script; refusing to \
                     replace a real device identity script"
                ),
            ));
        }
        _ => write_atomically(Path::new(IDENTITY_SCRIPT), &script, 0o755)?,
    }
    if !Path::new(ARTIFACT_INFO).exists() {
        write_atomically(Path::new(ARTIFACT_INFO), "artifact_name=mender-connect-interop\n", 0o644)?;
    }
    Ok(())
}

fn write_atomically(path: &Path, content: &str, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".interop-{}-{:?}.tmp", std::process::id(), std::thread::current().id()));
    std::fs::write(&tmp, content).context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .context(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(|| format!("installing {}", path.display()))
}

/// A device identity: `key=value` attributes, as the identity script prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The attributes in order.
    pub attributes: Vec<(String, String)>,
}

impl Identity {
    /// A single `mac` attribute derived from `seed` (unique per test and process).
    pub fn mac_for(seed: &str) -> Self {
        // FNV-1a: a stable, dependency-free hash is all that is needed to spread test names.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in seed.bytes().chain(std::process::id().to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let b = hash.to_be_bytes();
        // 02: a locally administered unicast address.
        let mac = format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4]);
        Identity { attributes: vec![("mac".to_owned(), mac)] }
    }

    /// The `mac` attribute's value (or "").
    pub fn mac(&self) -> &str {
        self.attributes.iter().find(|(k, _)| k == "mac").map(|(_, v)| v.as_str()).unwrap_or("")
    }

    /// What the identity script prints.
    pub fn script_output(&self) -> String {
        self.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
    }

    /// The identity as the JSON object the server stores (`{"mac":"..."}`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
        )
    }
}
