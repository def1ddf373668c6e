//! The whole server state, in memory behind one mutex (never held across an await).

use crate::config::Config;
use crate::jwt::{self, Signer, TokenError};
use crate::timefmt::{rfc3339, unix_now};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Accepted,
    Rejected,
    Preauthorized,
    Noauth,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Preauthorized => "preauthorized",
            Status::Noauth => "noauth",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "accepted" => Status::Accepted,
            "rejected" => Status::Rejected,
            "preauthorized" => Status::Preauthorized,
            "noauth" => Status::Noauth,
            _ => return None,
        })
    }

    /// deviceauth: the device shows its highest-weight auth-set status.
    fn weight(self) -> u8 {
        match self {
            Status::Accepted => 4,
            Status::Preauthorized => 3,
            Status::Pending => 2,
            Status::Rejected => 1,
            Status::Noauth => 0,
        }
    }
}

pub struct User {
    pub id: String,
    pub password: String,
}

pub struct Device {
    pub id: String,
    /// Canonical identity JSON (Go encoding/json form).
    pub identity: String,
    pub status: Status,
    pub decommissioning: bool,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub check_in: Option<SystemTime>,
    /// Auth-set ids in creation order.
    pub auth_sets: Vec<String>,
}

pub struct AuthSet {
    pub id: String,
    pub device_id: String,
    pub identity: String,
    pub pubkey: String,
    pub status: Status,
    pub ts: SystemTime,
}

/// deviceconnect's own device record.
pub struct DcDevice {
    pub connected: bool,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub version: u64,
}

/// What the device socket's task is asked to write.
#[derive(Debug)]
pub enum DeviceOut {
    Frame(Vec<u8>),
    Close(u16, String),
}

pub struct LiveConn {
    pub conn_id: u64,
    pub tx: async_channel::Sender<DeviceOut>,
}

/// Frames for a session: raw device frames, or a close request.
#[derive(Debug)]
pub enum SessionIn {
    Frame(Vec<u8>),
}

pub struct Session {
    pub device_id: String,
    pub tx: async_channel::Sender<SessionIn>,
    /// The device answered a shell `new` for this session (R's device-disconnect notice).
    pub shell_answered: bool,
}

#[derive(Default)]
pub struct Inner {
    pub users: HashMap<String, User>,
    pub devices: HashMap<String, Device>,
    pub auth_sets: HashMap<String, AuthSet>,
    /// Device tokens: jti (= auth-set id) → device id.
    pub tokens: HashMap<String, String>,
    pub dc: HashMap<String, DcDevice>,
    pub live: HashMap<String, LiveConn>,
    pub sessions: HashMap<String, Session>,
    /// Shell output recorded per session id, for playback.
    pub recordings: HashMap<String, Recording>,
}

/// Recorded shell output of one user session and the delay markers in it.
#[derive(Default)]
pub struct Recording {
    pub output: Vec<u8>,
    /// (byte offset into `output`, delay in ms)
    pub delays: Vec<(usize, u16)>,
    pub last_output: Option<std::time::Instant>,
}

pub struct State {
    pub cfg: Config,
    pub signer: Signer,
    inner: Mutex<Inner>,
    seq: AtomicU64,
}

#[derive(Debug, Clone)]
pub enum Identity {
    Device { device_id: String },
    User { user_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFail {
    /// Missing, malformed, unknown or revoked token.
    Unauthorized,
    Expired,
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl State {
    pub fn new(cfg: Config) -> Result<State, String> {
        let snapshot = match &cfg.state_file {
            Some(p) => crate::persist::load(p)?,
            None => None,
        };
        let signer = match snapshot.as_ref().and_then(crate::persist::key_from) {
            Some(k) => Signer::from_key(k),
            None => Signer::random(),
        };
        let mut inner = Inner::default();
        for (email, password) in &cfg.users {
            inner.users.insert(email.to_lowercase(), User { id: new_id(), password: password.clone() });
        }
        if let Some(snap) = snapshot {
            crate::persist::restore(&mut inner, snap);
        }
        Ok(State { cfg, signer, inner: Mutex::new(inner), seq: AtomicU64::new(1) })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps; continuing is better than dying.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Verifies one of our tokens: signature, expiry, and that it is still live.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthFail> {
        let token = token.ok_or(AuthFail::Unauthorized)?;
        let claims = match self.signer.verify(token, unix_now()) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(AuthFail::Expired),
            Err(_) => return Err(AuthFail::Unauthorized),
        };
        let sub = claims.get("sub").and_then(Value::as_str).ok_or(AuthFail::Unauthorized)?;
        let inner = self.lock();
        if claims.get("mender.device").and_then(Value::as_bool) == Some(true) {
            let jti = claims.get("jti").and_then(Value::as_str).ok_or(AuthFail::Unauthorized)?;
            let live = inner.tokens.get(jti).is_some_and(|d| d == sub)
                && inner.auth_sets.get(jti).is_some_and(|a| a.status == Status::Accepted)
                && inner.devices.get(sub).is_some_and(|d| !d.decommissioning);
            if !live {
                return Err(AuthFail::Unauthorized);
            }
            return Ok(Identity::Device { device_id: sub.to_owned() });
        }
        if claims.get("mender.user").and_then(Value::as_bool) == Some(true)
            && inner.users.values().any(|u| u.id == sub)
        {
            return Ok(Identity::User { user_id: sub.to_owned() });
        }
        Err(AuthFail::Unauthorized)
    }

    pub fn issue_device_token(&self, inner: &mut Inner, auth_set_id: &str, device_id: &str) -> String {
        inner.tokens.insert(auth_set_id.to_owned(), device_id.to_owned());
        self.signer.sign(&jwt::device_claims(auth_set_id, device_id, unix_now(), self.cfg.device_token_ttl))
    }
}

/// Outcome of a device authentication request.
pub enum AuthOutcome {
    Accepted { auth_set_id: String, device_id: String },
    Unauthorized,
}

/// Errors of management-side state changes.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DevauthError {
    NotFound,
    Mismatch,
    BadTransition,
}

impl Inner {
    pub fn recompute(&mut self, device_id: &str) {
        let best = self.devices.get(device_id).map(|d| {
            d.auth_sets
                .iter()
                .filter_map(|a| self.auth_sets.get(a))
                .map(|a| a.status)
                .max_by_key(|s| s.weight())
                .unwrap_or(Status::Noauth)
        });
        if let (Some(best), Some(dev)) = (best, self.devices.get_mut(device_id)) {
            if dev.status != best {
                dev.status = best;
                dev.updated = SystemTime::now();
            }
        }
        if best == Some(Status::Accepted) {
            // deviceauth's provision_device workflow creates the deviceconnect record.
            self.dc.entry(device_id.to_owned()).or_insert_with(|| DcDevice {
                connected: false,
                created: SystemTime::now(),
                updated: SystemTime::now(),
                version: 0,
            });
        }
    }

    pub fn revoke_device_tokens(&mut self, device_id: &str) {
        self.tokens.retain(|_, d| d != device_id);
    }

    /// Accepts one auth set: the device's other accepted sets become rejected.
    fn accept_set(&mut self, aid: &str) {
        let Some(dev_id) = self.auth_sets.get(aid).map(|a| a.device_id.clone()) else {
            return;
        };
        let others: Vec<String> = self.devices.get(&dev_id).map(|d| d.auth_sets.clone()).unwrap_or_default();
        let mut revoked = false;
        for other in others.iter().filter(|o| *o != aid) {
            if let Some(a) = self.auth_sets.get_mut(other) {
                if a.status == Status::Accepted {
                    a.status = Status::Rejected;
                    revoked = true;
                }
            }
        }
        if revoked {
            self.revoke_device_tokens(&dev_id);
        }
        if let Some(a) = self.auth_sets.get_mut(aid) {
            a.status = Status::Accepted;
        }
        self.recompute(&dev_id);
    }

    pub fn find_device_by_identity(&self, identity: &str) -> Option<String> {
        self.devices.values().find(|d| d.identity == identity).map(|d| d.id.clone())
    }

    fn find_auth_set(&self, device_id: &str, pubkey: &str) -> Option<String> {
        self.devices.get(device_id).and_then(|d| {
            d.auth_sets.iter().find(|a| self.auth_sets.get(*a).is_some_and(|s| s.pubkey == pubkey)).cloned()
        })
    }

    fn add_auth_set(&mut self, device_id: &str, identity: &str, pubkey: &str, status: Status) -> String {
        let id = new_id();
        self.auth_sets.insert(
            id.clone(),
            AuthSet {
                id: id.clone(),
                device_id: device_id.to_owned(),
                identity: identity.to_owned(),
                pubkey: pubkey.to_owned(),
                status,
                ts: SystemTime::now(),
            },
        );
        if let Some(d) = self.devices.get_mut(device_id) {
            d.auth_sets.push(id.clone());
        }
        id
    }

    fn add_device(&mut self, identity: &str) -> String {
        let id = new_id();
        let now = SystemTime::now();
        self.devices.insert(
            id.clone(),
            Device {
                id: id.clone(),
                identity: identity.to_owned(),
                status: Status::Noauth,
                decommissioning: false,
                created: now,
                updated: now,
                check_in: None,
                auth_sets: Vec::new(),
            },
        );
        id
    }

    /// deviceauth `SubmitAuthRequest` after signature verification.
    pub fn auth_request(&mut self, identity: &str, pubkey: &str, auto_accept: bool) -> AuthOutcome {
        let device_id = match self.find_device_by_identity(identity) {
            Some(d) => d,
            None => self.add_device(identity),
        };
        let (aid, created) = match self.find_auth_set(&device_id, pubkey) {
            Some(a) => (a, false),
            None => (self.add_auth_set(&device_id, identity, pubkey, Status::Pending), true),
        };
        let status = self.auth_sets.get(&aid).map(|a| a.status);
        if status == Some(Status::Preauthorized) || (created && auto_accept) {
            self.accept_set(&aid);
        }
        self.recompute(&device_id);
        let Some(dev) = self.devices.get_mut(&device_id) else {
            return AuthOutcome::Unauthorized;
        };
        dev.check_in = Some(SystemTime::now());
        if dev.decommissioning {
            return AuthOutcome::Unauthorized;
        }
        match self.auth_sets.get(&aid) {
            Some(a) if a.status == Status::Accepted => AuthOutcome::Accepted { auth_set_id: aid, device_id },
            _ => AuthOutcome::Unauthorized,
        }
    }

    /// Test control: an accepted device without a key (agents given a token directly).
    pub fn accepted_device(&mut self, identity: &str) -> (String, String) {
        let device_id = match self.find_device_by_identity(identity) {
            Some(d) => d,
            None => self.add_device(identity),
        };
        let aid = match self.find_auth_set(&device_id, "") {
            Some(a) => a,
            None => self.add_auth_set(&device_id, identity, "", Status::Pending),
        };
        if let Some(d) = self.devices.get_mut(&device_id) {
            d.decommissioning = false;
        }
        self.accept_set(&aid);
        (device_id, aid)
    }

    /// `POST /api/management/v2/devauth/devices`. Returns the new (or, for `force`, a fresh
    /// unused) device id; `Err(existing device id)` on conflict.
    pub fn preauthorize(&mut self, identity: &str, pubkey: &str, force: bool) -> Result<String, String> {
        if let Some(existing) = self.find_device_by_identity(identity) {
            if !force {
                return Err(existing);
            }
            match self.find_auth_set(&existing, pubkey) {
                Some(aid) => {
                    if let Some(a) = self.auth_sets.get_mut(&aid) {
                        a.status = Status::Preauthorized;
                    }
                }
                None => {
                    self.add_auth_set(&existing, identity, pubkey, Status::Preauthorized);
                }
            }
            self.recompute(&existing);
            // deviceauth answers with a Location naming a fresh id here; kept for fidelity.
            return Ok(new_id());
        }
        let dev = self.add_device(identity);
        self.add_auth_set(&dev, identity, pubkey, Status::Preauthorized);
        self.recompute(&dev);
        Ok(dev)
    }

    pub fn set_auth_status(&mut self, device_id: &str, aid: &str, to: Status) -> Result<(), DevauthError> {
        let from = {
            let a = self.auth_sets.get(aid).ok_or(DevauthError::NotFound)?;
            if a.device_id != device_id {
                return Err(DevauthError::Mismatch);
            }
            a.status
        };
        if !self.devices.contains_key(device_id) {
            return Err(DevauthError::NotFound);
        }
        if from == to {
            return Ok(());
        }
        let allowed = match to {
            Status::Accepted => matches!(from, Status::Pending | Status::Rejected),
            Status::Rejected => matches!(from, Status::Pending | Status::Accepted),
            Status::Pending => from != Status::Preauthorized,
            _ => false,
        };
        if !allowed {
            return Err(DevauthError::BadTransition);
        }
        if from == Status::Accepted {
            self.revoke_device_tokens(device_id);
        }
        if to == Status::Accepted {
            self.accept_set(aid);
        } else if let Some(a) = self.auth_sets.get_mut(aid) {
            a.status = to;
        }
        self.recompute(device_id);
        Ok(())
    }

    pub fn delete_auth_set(&mut self, device_id: &str, aid: &str) -> Result<(), DevauthError> {
        let a = self.auth_sets.get(aid).ok_or(DevauthError::NotFound)?;
        if a.device_id != device_id {
            return Err(DevauthError::NotFound);
        }
        let was = a.status;
        self.auth_sets.remove(aid);
        if was == Status::Accepted {
            self.revoke_device_tokens(device_id);
        }
        let remaining = match self.devices.get_mut(device_id) {
            Some(d) => {
                d.auth_sets.retain(|x| x != aid);
                d.auth_sets.len()
            }
            None => return Ok(()),
        };
        if was == Status::Preauthorized && remaining == 0 {
            self.remove_device(device_id);
        } else {
            self.recompute(device_id);
        }
        Ok(())
    }

    pub fn remove_device(&mut self, device_id: &str) -> bool {
        let Some(dev) = self.devices.remove(device_id) else {
            return false;
        };
        for a in dev.auth_sets {
            self.auth_sets.remove(&a);
        }
        self.revoke_device_tokens(device_id);
        self.dc.remove(device_id);
        true
    }

    pub fn device_json(&self, d: &Device) -> Value {
        let sets: Vec<Value> = d
            .auth_sets
            .iter()
            .filter_map(|a| self.auth_sets.get(a))
            .map(|a| {
                json!({
                    "id": a.id,
                    "identity_data": identity_value(&a.identity),
                    "pubkey": a.pubkey,
                    "ts": rfc3339(a.ts),
                    "status": a.status.as_str(),
                })
            })
            .collect();
        let mut v = json!({
            "id": d.id,
            "identity_data": identity_value(&d.identity),
            "status": d.status.as_str(),
            "decommissioning": d.decommissioning,
            "created_ts": rfc3339(d.created),
            "updated_ts": rfc3339(d.updated),
            "auth_sets": if sets.is_empty() { Value::Null } else { Value::Array(sets) },
        });
        if let (Some(t), Some(obj)) = (d.check_in, v.as_object_mut()) {
            obj.insert("check_in_time".into(), Value::String(rfc3339(t)));
        }
        v
    }
}

fn identity_value(canonical: &str) -> Value {
    serde_json::from_str(canonical).unwrap_or(Value::Null)
}
