//! Optional state file (`--state FILE`): the signing key, users, devices, auth sets and device
//! tokens survive a restart, so an agent keeps a valid token across a server restart. Written
//! after every state-changing request (write to a temporary file, then rename).

use crate::state::{AuthSet, Device, Inner, State, Status, User};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub signing_key: String,
    pub users: Vec<SUser>,
    pub devices: Vec<SDevice>,
    pub auth_sets: Vec<SAuthSet>,
    pub tokens: HashMap<String, String>,
    /// Device ids that have a deviceconnect record (they come back `disconnected`).
    pub dc_devices: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct SUser {
    pub email: String,
    pub id: String,
    pub password: String,
}

#[derive(Serialize, Deserialize)]
pub struct SDevice {
    pub id: String,
    pub identity: String,
    pub decommissioning: bool,
    pub created_ns: u128,
    pub updated_ns: u128,
    pub auth_sets: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct SAuthSet {
    pub id: String,
    pub device_id: String,
    pub identity: String,
    pub pubkey: String,
    pub status: String,
    pub ts_ns: u128,
}

fn ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn from_ns(n: u128) -> SystemTime {
    let secs = u64::try_from(n / 1_000_000_000).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, (n % 1_000_000_000) as u32)
}

pub fn load(path: &Path) -> Result<Option<Snapshot>, String> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn key_from(snap: &Snapshot) -> Option<[u8; 32]> {
    STANDARD.decode(&snap.signing_key).ok()?.try_into().ok()
}

/// Fills `inner` from a snapshot; configured users keep their stored ids.
pub fn restore(inner: &mut Inner, snap: Snapshot) {
    for u in snap.users {
        let entry = inner.users.entry(u.email).or_insert(User { id: u.id.clone(), password: u.password });
        entry.id = u.id;
    }
    for a in snap.auth_sets {
        let status = Status::parse(&a.status).unwrap_or(Status::Pending);
        inner.auth_sets.insert(
            a.id.clone(),
            AuthSet {
                id: a.id,
                device_id: a.device_id,
                identity: a.identity,
                pubkey: a.pubkey,
                status,
                ts: from_ns(a.ts_ns),
            },
        );
    }
    for d in snap.devices {
        inner.devices.insert(
            d.id.clone(),
            Device {
                id: d.id.clone(),
                identity: d.identity,
                status: Status::Noauth,
                decommissioning: d.decommissioning,
                created: from_ns(d.created_ns),
                updated: from_ns(d.updated_ns),
                check_in: None,
                auth_sets: d.auth_sets,
            },
        );
        inner.recompute(&d.id);
    }
    inner.tokens = snap.tokens;
    for id in snap.dc_devices {
        let now = SystemTime::now();
        inner.dc.entry(id).or_insert(crate::state::DcDevice {
            connected: false,
            created: now,
            updated: now,
            version: 0,
        });
    }
}

pub fn save(st: &State) {
    let Some(path) = st.cfg.state_file.as_ref() else {
        return;
    };
    let snap = {
        let inner = st.lock();
        Snapshot {
            signing_key: STANDARD.encode(st.signer.key()),
            users: inner
                .users
                .iter()
                .map(|(email, u)| SUser {
                    email: email.clone(),
                    id: u.id.clone(),
                    password: u.password.clone(),
                })
                .collect(),
            devices: inner
                .devices
                .values()
                .map(|d| SDevice {
                    id: d.id.clone(),
                    identity: d.identity.clone(),
                    decommissioning: d.decommissioning,
                    created_ns: ns(d.created),
                    updated_ns: ns(d.updated),
                    auth_sets: d.auth_sets.clone(),
                })
                .collect(),
            auth_sets: inner
                .auth_sets
                .values()
                .map(|a| SAuthSet {
                    id: a.id.clone(),
                    device_id: a.device_id.clone(),
                    identity: a.identity.clone(),
                    pubkey: a.pubkey.clone(),
                    status: a.status.as_str().to_owned(),
                    ts_ns: ns(a.ts),
                })
                .collect(),
            tokens: inner.tokens.clone(),
            dc_devices: inner.dc.keys().cloned().collect(),
        }
    };
    let tmp = path.with_extension("tmp");
    let result = serde_json::to_vec_pretty(&snap)
        .map_err(|e| e.to_string())
        .and_then(|data| std::fs::write(&tmp, data).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if let Err(e) = result {
        log::warn!("cannot save state to {}: {e}", path.display());
    }
}
