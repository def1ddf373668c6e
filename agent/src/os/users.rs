//! Users and groups by name, through the C library (so NSS sources work as for `login`).
//!
//! NSS may ask a network service (LDAP) and wait as long as it likes: these calls belong at
//! start-up, in `check-config`, or on a blocking thread, never on the event loop.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Login shell from passwd.
    pub shell: PathBuf,
}

/// Largest buffer offered to `get*nam_r`; an entry larger than 1 MiB is treated as an error.
const MAX_BUFFER: usize = 1 << 20;

/// Runs `lookup` (a `get*nam_r` call writing into the buffer it is given) with a buffer that
/// grows on `ERANGE`; `Ok(None)` when the name is unknown.
fn with_buffer<T>(mut lookup: impl FnMut(&mut [u8]) -> (libc::c_int, Option<T>)) -> io::Result<Option<T>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let (rc, found) = lookup(&mut buf);
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 && rc != libc::ENOENT && rc != libc::ESRCH {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok(found);
    }
}

/// Looks a user up by name.
pub fn lookup_user(name: &str) -> io::Result<Option<UserEntry>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    with_buffer(|buf| {
        // SAFETY: passwd is plain old data; getpwnam_r fills it with pointers into `buf`, which
        // outlives every use of them below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the given lengths.
        let rc = unsafe {
            libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result)
        };
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        // SAFETY: on success the string fields point to NUL-terminated strings inside `buf`.
        let field = |p: *const libc::c_char| -> PathBuf {
            if p.is_null() {
                PathBuf::new()
            } else {
                PathBuf::from(OsStr::from_bytes(unsafe { CStr::from_ptr(p) }.to_bytes()))
            }
        };
        let entry = UserEntry {
            name: name.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: field(pwd.pw_dir),
            shell: field(pwd.pw_shell),
        };
        (0, Some(entry))
    })
}

/// Looks a group up by name; returns its gid.
pub fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(None);
    };
    with_buffer(|buf| {
        // SAFETY: as in `lookup_user`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the given lengths.
        let rc = unsafe {
            libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result)
        };
        (rc, (rc == 0 && !result.is_null()).then_some(grp.gr_gid))
    })
}

/// The user's supplementary groups (what `initgroups` would set), computed before forking because
/// reading the group database is not safe between fork and exec.
pub fn supplementary_groups(user: &UserEntry) -> io::Result<Vec<u32>> {
    let cname = CString::new(user.name.as_str())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    let mut n: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), user.gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        // -1 means "too small"; `count` then holds the needed size (glibc), or not (musl: grow).
        n = if count > n { count } else { n.saturating_mul(2) };
        if n > 65536 {
            return Err(io::Error::other("too many supplementary groups"));
        }
    }
}

/// The name of the user the tests run as (they spawn real shells as that user).
#[cfg(test)]
pub(crate) fn current_user() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
        })
        .expect("current uid in /etc/passwd")
}
