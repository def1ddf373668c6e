//! The pty's own speed on this machine: the terminal burst's `cat`, read from the master by a
//! blocking reader that does nothing with the bytes. No agent is involved, so this is the floor
//! under the terminal rows: the kernel moves at most 4 KiB per master read (the line
//! discipline's buffer) and wakes its flush worker for each, whoever reads.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use rustix::io::Errno;
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};

use crate::BenchError;
use crate::procfs::{ms_per_tick, thread_cpu_ticks};
use crate::scenarios::Throughput;

const MIB: f64 = 1024.0 * 1024.0;

/// `cat file` on a fresh pty (default termios: `\n` goes out as `\r\n`, as in a shell), read
/// until the slave side is closed. Checks that every byte arrived.
pub fn measure(file: &Path) -> Result<Throughput, BenchError> {
    let errno = |what: &str| {
        let what = what.to_owned();
        move |e: Errno| BenchError::io(&what, e.into())
    };
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).map_err(errno("posix_openpt"))?;
    grantpt(&master).map_err(errno("grantpt"))?;
    unlockpt(&master).map_err(errno("unlockpt"))?;
    let name = ptsname(&master, Vec::new()).map_err(errno("ptsname"))?;
    let name = name.to_str().map_err(|_| BenchError::Check("pty name is not UTF-8".into()))?;
    let input = std::fs::read(file).map_err(|e| BenchError::io(&file.display().to_string(), e))?;
    let expected = input.len() + input.iter().filter(|&&b| b == b'\n').count();
    drop(input);

    let cpu0 = thread_cpu_ticks()?;
    let start = Instant::now();
    let mut child = {
        // Our copy of the slave must be closed once `cat` has it, or the reads never end.
        let slave = File::options()
            .read(true)
            .write(true)
            // The bench must not make the pty its controlling terminal.
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(name)
            .map_err(|e| BenchError::io(name, e))?;
        Command::new("cat")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::from(slave))
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::io("starting cat", e))?
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    loop {
        match rustix::io::read(&master, &mut buf) {
            Ok(0) | Err(Errno::IO) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::io("reading the pty", e.into()));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_ms = thread_cpu_ticks()?.saturating_sub(cpu0) as f64 * ms_per_tick();
    let status = child.wait().map_err(|e| BenchError::io("waiting for cat", e))?;
    if !status.success() || got != expected {
        return Err(BenchError::Check(format!("pty floor: cat {status}, {got} of {expected} bytes read")));
    }
    let mib = got as f64 / MIB;
    Ok(Throughput { mib_per_s: mib / secs, cpu_ms_per_mib: cpu_ms / mib, parts: None })
}
