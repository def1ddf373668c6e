//! Path confinement for file transfer (`Limits.FileTransfer.Chroot`, `FollowSymLinks`).
//!
//! The reference (mender-connect 2.1.0 `utils.IsInChroot`) only compares string prefixes, so
//! `/chroot/../etc/passwd` or a symlink inside the chroot pointing out of it escapes. Here the
//! prefix check is done on the lexically normalised path (for the reference's error text), and
//! the file is then opened with `openat2(2)` relative to the chroot directory with
//! `RESOLVE_BENEATH`: the kernel refuses every resolution step that leaves the directory
//! (`..`, absolute or relative symlinks, a symlink swapped in mid-transfer), atomically. With
//! `FollowSymLinks` off, `RESOLVE_NO_SYMLINKS` refuses any symlink on the way. Without
//! `openat2` (Linux < 5.6) a confined open fails; it is never done unconfined.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a path cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JailError {
    /// The path (lexically or through links) leaves the chroot.
    #[error("the target file path is outside chroot")]
    OutsideChroot,
    /// A symlink on the way while `FollowSymLinks` is off.
    #[error("forbidden to follow the link")]
    SymlinkForbidden,
    /// The kernel has no `openat2`; confined opens are refused rather than done unconfined.
    #[error("confined file access needs openat2 (Linux 5.6 or later)")]
    Unsupported,
    /// Any other failure of the open.
    #[error("{0}")]
    Os(Errno),
}

/// Go's text for an errno (`syscall.Errno.Error()`): the C library's message, lower-cased first
/// letter, as Go's table has them (`no such file or directory`).
pub fn errno_text(e: Errno) -> String {
    let s = std::io::Error::from_raw_os_error(e.raw_os_error()).to_string();
    let s = s.split(" (os error").next().unwrap_or(&s).to_owned();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

/// Where file transfer may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jail {
    /// `Chroot` (absolute), if any.
    pub chroot: Option<PathBuf>,
    /// `FollowSymLinks`.
    pub follow_symlinks: bool,
    /// Whether limits apply at all (`Limits.Enabled`); without them opens are plain, as the
    /// reference's.
    pub enforce: bool,
}

/// A path split into its confined parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The lexically normalised path relative to the chroot (or to `/`, or to the working
    /// directory for a relative path without chroot); `"."` for the root itself.
    pub relative: String,
    /// The path was absolute.
    pub absolute: bool,
}

impl Located {
    /// The last component and the path of its parent (`"."` if none); `None` for the root.
    pub fn split_last(&self) -> Option<(String, &str)> {
        if self.relative == "." {
            return None;
        }
        match self.relative.rsplit_once('/') {
            Some((parent, name)) => Some((parent.to_owned(), name)),
            None => Some((".".to_owned(), self.relative.as_str())),
        }
    }
}

/// Lexical normalisation: drops empty and `.` components and applies `..` (never above the
/// start). Returns the components.
fn normalise(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn join(parts: &[&str]) -> String {
    if parts.is_empty() { ".".to_owned() } else { parts.join("/") }
}

impl Jail {
    fn chroot(&self) -> Option<&Path> {
        if self.enforce { self.chroot.as_deref() } else { None }
    }

    /// Checks `path` lexically against the chroot and normalises it.
    pub fn locate(&self, path: &str) -> Result<Located, JailError> {
        let absolute = path.starts_with('/');
        let parts = normalise(path);
        let Some(root) = self.chroot() else {
            return Ok(Located { relative: join(&parts), absolute });
        };
        if !absolute {
            return Err(JailError::OutsideChroot);
        }
        let root_s = root.to_string_lossy();
        let root_parts = normalise(&root_s);
        if parts.len() < root_parts.len() || parts[..root_parts.len()] != root_parts[..] {
            return Err(JailError::OutsideChroot);
        }
        Ok(Located { relative: join(&parts[root_parts.len()..]), absolute: true })
    }

    /// The directory that confined paths are relative to.
    fn base(&self, loc: &Located) -> Result<OwnedFd, JailError> {
        let dir = match self.chroot() {
            Some(root) => root.to_path_buf(),
            None if loc.absolute => PathBuf::from("/"),
            None => PathBuf::from("."),
        };
        rustix::fs::open(&dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(JailError::Os)
    }

    /// Opens `relative` (from [`Jail::locate`], possibly a sub-path of it) under the jail.
    pub fn open_located(
        &self,
        loc: &Located,
        relative: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, JailError> {
        let base = self.base(loc)?;
        self.open_at(base.as_fd(), relative, flags, mode)
    }

    /// Opens `relative` under `dir`, which must itself be inside the jail.
    pub fn open_at(
        &self,
        dir: impl AsFd,
        relative: &str,
        flags: OFlags,
        mode: Mode,
    ) -> Result<OwnedFd, JailError> {
        let flags = flags | OFlags::CLOEXEC;
        if !self.enforce {
            return rustix::fs::openat(dir, relative, flags, mode).map_err(JailError::Os);
        }
        let mut resolve = ResolveFlags::NO_MAGICLINKS;
        if self.chroot().is_some() {
            resolve |= ResolveFlags::BENEATH;
        }
        if !self.follow_symlinks {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        // EAGAIN: a concurrent rename raced a `..` lookup; the kernel asks for a retry.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(dir.as_fd(), relative, flags, mode, resolve) {
                Ok(fd) => return Ok(fd),
                Err(Errno::AGAIN) if tries < 8 => tries += 1,
                Err(Errno::XDEV) if resolve.contains(ResolveFlags::BENEATH) => {
                    return Err(JailError::OutsideChroot);
                }
                Err(Errno::LOOP) if resolve.contains(ResolveFlags::NO_SYMLINKS) => {
                    return Err(JailError::SymlinkForbidden);
                }
                Err(Errno::NOSYS) | Err(Errno::PERM) if tries == 0 && !openat2_available() => {
                    // Nothing to confine and every link may be followed: a plain open is exact.
                    if self.chroot().is_none() && self.follow_symlinks {
                        return rustix::fs::openat(dir, relative, flags, mode).map_err(JailError::Os);
                    }
                    return Err(JailError::Unsupported);
                }
                Err(e) => return Err(JailError::Os(e)),
            }
        }
    }

    /// Opens `path` under the jail.
    pub fn open(&self, path: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, JailError> {
        let loc = self.locate(path)?;
        self.open_located(&loc, &loc.relative, flags, mode)
    }
}

/// Whether the kernel implements `openat2` (seccomp filters may also answer EPERM/ENOSYS).
fn openat2_available() -> bool {
    match rustix::fs::openat2(
        rustix::fs::CWD,
        "/",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::empty(),
    ) {
        Ok(_) => true,
        Err(e) => e != Errno::NOSYS && e != Errno::PERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jail(root: &str) -> Jail {
        Jail { chroot: Some(PathBuf::from(root)), follow_symlinks: true, enforce: true }
    }

    #[test]
    fn lexical_check_uses_whole_components() {
        let j = jail("/data/ft");
        assert_eq!(j.locate("/data/ft/a/b").map(|l| l.relative), Ok("a/b".to_owned()));
        assert_eq!(j.locate("/data/ft").map(|l| l.relative), Ok(".".to_owned()));
        assert_eq!(j.locate("/data/ft/./x/../y").map(|l| l.relative), Ok("y".to_owned()));
        // The reference's string prefix would accept these two.
        assert_eq!(j.locate("/data/ftx/a"), Err(JailError::OutsideChroot));
        assert_eq!(j.locate("/data/ft/../../etc/passwd"), Err(JailError::OutsideChroot));
        assert_eq!(j.locate("data/ft/a"), Err(JailError::OutsideChroot));
        assert_eq!(j.locate("/../../data/ft/z").map(|l| l.relative), Ok("z".to_owned()));
    }

    #[test]
    fn without_enforcement_nothing_is_checked() {
        let j = Jail { chroot: Some(PathBuf::from("/data")), follow_symlinks: false, enforce: false };
        assert_eq!(j.locate("/etc/passwd").map(|l| l.relative), Ok("etc/passwd".to_owned()));
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        let l = Located { relative: "a/b/c".into(), absolute: true };
        assert_eq!(l.split_last(), Some(("a/b".to_owned(), "c")));
        let l = Located { relative: "c".into(), absolute: true };
        assert_eq!(l.split_last(), Some((".".to_owned(), "c")));
        assert_eq!(Located { relative: ".".into(), absolute: true }.split_last(), None);
    }

    #[test]
    fn errno_texts_are_go_style() {
        assert_eq!(errno_text(Errno::NOENT), "no such file or directory");
        assert_eq!(errno_text(Errno::ACCESS), "permission denied");
    }
}
