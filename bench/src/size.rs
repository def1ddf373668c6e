//! On-device size: what a device must store to run the agent.
//!
//! For a static binary that is the file. For the dynamically linked Go agent it is the binary plus
//! every shared library it loads that is not part of the C library (glibc's libc, libm, libpthread,
//! libdl, librt, the dynamic loader): those are on any glibc device anyway, the others (GLib,
//! libmount, PCRE2, ...) ship because of the agent.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BenchError;

/// Libraries every glibc system has, not counted against the agent.
const LIBC_FAMILY: &[&str] =
    &["libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so", "ld-linux", "linux-vdso", "linux-gate"];

/// A binary and the shared libraries counted with it.
#[derive(Debug, Clone)]
pub struct Footprint {
    /// Bytes of the binary.
    pub binary: u64,
    /// (library, bytes) of each non-libc shared library.
    pub libraries: Vec<(String, u64)>,
}

impl Footprint {
    /// Binary plus libraries.
    pub fn total(&self) -> u64 {
        self.binary + self.libraries.iter().map(|(_, n)| n).sum::<u64>()
    }
}

fn file_size(path: &Path) -> Result<u64, BenchError> {
    // metadata() follows symlinks: the size of the library file itself.
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| BenchError::io(&format!("stat {}", path.display()), e))
}

fn is_libc_family(name: &str) -> bool {
    LIBC_FAMILY.iter().any(|l| name.starts_with(l))
}

/// The footprint of a binary of this machine's architecture, its libraries found with `ldd`.
pub fn native(binary: &Path) -> Result<Footprint, BenchError> {
    let out = Command::new("ldd").arg(binary).output().map_err(|e| BenchError::io("running ldd", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libraries = Vec::new();
    for (name, path) in parse_ldd(&text) {
        if is_libc_family(&name) {
            continue;
        }
        libraries.push((name, file_size(&path)?));
    }
    Ok(Footprint { binary: file_size(binary)?, libraries })
}

/// The footprint of a foreign-architecture binary whose libraries were unpacked under
/// `sysroot` (by bench/run.sh from the Debian packages of that architecture): every regular file
/// in `sysroot` whose name starts with one of `needed` counts.
pub fn unpacked(binary: &Path, sysroot: &Path, needed: &[String]) -> Result<Footprint, BenchError> {
    let mut libraries = Vec::new();
    for name in needed.iter().filter(|n| !is_libc_family(n)) {
        match find_file(sysroot, name, 6)? {
            Some(path) => libraries.push((name.clone(), file_size(&path)?)),
            None => {
                return Err(BenchError::Check(format!("{name} not found under {}", sysroot.display())));
            }
        }
    }
    Ok(Footprint { binary: file_size(binary)?, libraries })
}

fn find_file(dir: &Path, name: &str, depth: u8) -> Result<Option<PathBuf>, BenchError> {
    let entries = std::fs::read_dir(dir).map_err(|e| BenchError::io(&dir.display().to_string(), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy() == name {
            return Ok(Some(path));
        }
        if depth > 0 && entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(found) = find_file(&path, name, depth - 1)? {
                return Ok(Some(found));
            }
        }
    }
    Ok(None)
}

/// `(soname, resolved path)` of each `name => path (addr)` line of `ldd` output.
fn parse_ldd(text: &str) -> Vec<(String, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            path.starts_with('/').then(|| (name.to_owned(), PathBuf::from(path)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_names_and_paths_and_libc_is_recognised() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x7f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        let libs = parse_ldd(text);
        assert_eq!(libs.len(), 2);
        assert_eq!(libs[0].0, "libglib-2.0.so.0");
        assert!(!is_libc_family(&libs[0].0));
        assert!(is_libc_family(&libs[1].0));
    }
}
