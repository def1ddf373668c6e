//! Giving back the code pages the daemon no longer runs.
//!
//! The kernel maps a file-backed page into the process together with up to 15 neighbours that
//! are already cached ("fault-around", 64 KiB), and keeps them mapped until the process exits.
//! Start-up (configuration, D-Bus, dialing, the handshake) and every session path touch some
//! of each 64 KiB block of the static binary, so after connecting nearly all of its code and
//! read-only data counted in RSS (1.36 MiB of 1.70 in the bench), although an idle daemon runs
//! almost none of it. [`release_code`] unmaps the binary's read-only pages when the daemon
//! goes quiet; they stay in the page cache, and what runs next maps its pages back with a minor
//! fault per block, without I/O.
//!
//! `MADV_DONTNEED` on a private file mapping drops its pages: a page that was never written
//! comes back with the file's contents, one that was written (copy-on-write) would lose the
//! write. So only pages no one writes are released: the executable mapping and the read-only
//! mappings laid out before it in the file (ELF headers, `.rodata`, `.eh_frame`). The read-only
//! mapping after the code (`PT_GNU_RELRO`: the relocated `.data.rel.ro` and GOT of a dynamic
//! build) and anything writable are left alone.

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    offset: u64,
    /// `dev inode`, which identifies the file.
    file: (&'a str, u64),
}

fn parse(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let dev = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        file: (dev, inode),
    })
}

/// Most mappings [`unwritten_image`] reports: a static binary has two (read-only data, code),
/// a PIE one a few more before its code.
const MAX_RANGES: usize = 8;

/// Address ranges, `(start, len)`, in a fixed array: what [`release_code`] holds across the
/// `madvise` calls must not need the heap afterwards (see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Ranges {
    items: [(usize, usize); MAX_RANGES],
    len: usize,
}

impl Ranges {
    fn as_slice(&self) -> &[(usize, usize)] {
        &self.items[..self.len]
    }
}

/// The mappings of the file whose executable mapping holds `code`, that nobody writes: that
/// executable mapping and the read-only ones before it in the file (at most [`MAX_RANGES`]).
fn unwritten_image(maps: &str, code: usize) -> Ranges {
    let mut out = Ranges::default();
    let mappings: Vec<Mapping<'_>> = maps.lines().filter_map(parse).collect();
    let Some(text) = mappings.iter().find(|m| m.start <= code && code < m.end && m.perms == "r-xp") else {
        return out;
    };
    if text.file.1 == 0 {
        return out;
    }
    let unwritten = mappings
        .iter()
        .filter(|m| m.file == text.file)
        .filter(|m| m.perms == "r-xp" || (m.perms == "r--p" && m.offset < text.offset));
    for (slot, m) in out.items.iter_mut().zip(unwritten) {
        *slot = (m.start, m.end - m.start);
        out.len += 1;
    }
    out
}

/// Unmaps the binary's unwritten pages (see the module documentation); returns the bytes of
/// address space released. Best effort: nothing happens when `/proc` is not mounted.
///
/// Everything this call allocates is freed before the first `madvise`: a `free` after it
/// would fault the allocator's code and data back in (a 64 KiB block each), only to drop a
/// string.
pub fn release_code() -> usize {
    let ranges = match std::fs::read_to_string("/proc/self/maps") {
        Ok(maps) => unwritten_image(&maps, release_code as fn() -> usize as usize),
        Err(_) => return 0,
    };
    let mut released = 0;
    for &(start, len) in ranges.as_slice() {
        // SAFETY: the range is a whole mapping of our own binary that is never written (see
        // `unwritten_image`): dropping its pages only makes the next access fault them in
        // again from the same file; no Rust object lives in it.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += len;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts of lld (static musl, as shipped) and of GNU ld (a PIE test build, whose
    /// RELRO segment is read-only after start-up and holds relocated pointers).
    const LLD_STATIC: &str = "\
00200000-00256000 r--p 00000000 fd:01 4242  /usr/bin/mender-connect
00256000-0038a000 r-xp 00055000 fd:01 4242  /usr/bin/mender-connect
0038a000-0038c000 rw-p 00188000 fd:01 4242  /usr/bin/mender-connect
0038c000-0038d000 rw-p 0018a000 fd:01 4242  /usr/bin/mender-connect
227e3000-227e5000 rw-p 00000000 00:00 0     [heap]
7fab37cda000-7fab37d16000 rw-p 00000000 00:00 0
7fab3812a000-7fab3812c000 r-xp 00000000 00:00 0     [vdso]
";
    const GNU_PIE: &str = "\
55d000000000-55d000010000 r--p 00000000 08:02 77 /t/agent-test
55d000010000-55d000200000 r-xp 00010000 08:02 77 /t/agent-test
55d000200000-55d000240000 r--p 00200000 08:02 77 /t/agent-test
55d000240000-55d000250000 r--p 00240000 08:02 77 /t/agent-test
55d000250000-55d000251000 rw-p 00250000 08:02 77 /t/agent-test
7f0000000000-7f0000020000 r--p 00000000 08:02 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000020000-7f0000100000 r-xp 00020000 08:02 99 /usr/lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn only_the_code_and_the_read_only_data_before_it_are_released() {
        assert_eq!(
            unwritten_image(LLD_STATIC, 0x0030_0000).as_slice(),
            [(0x0020_0000, 0x56000), (0x0025_6000, 0x134000)]
        );
        // Neither the RELRO segments after the code nor another file's mappings.
        assert_eq!(
            unwritten_image(GNU_PIE, 0x55d0_0001_2345).as_slice(),
            [(0x55d0_0000_0000, 0x10000), (0x55d0_0001_0000, 0x1f0000)]
        );
    }

    #[test]
    fn code_outside_a_file_mapping_releases_nothing() {
        // The vDSO (inode 0), writable memory, an address nothing maps.
        for code in [0x7fab_3812_a100, 0x227e_3100, 0x10] {
            assert!(unwritten_image(LLD_STATIC, code).as_slice().is_empty(), "{code:#x}");
        }
        assert!(unwritten_image("garbage\n\n1-2\n", 1).as_slice().is_empty());
    }

    #[test]
    fn releasing_keeps_the_code_running() {
        // Twice, with the code that runs in between faulted back in.
        for _ in 0..2 {
            let released = release_code();
            assert!(released > 0, "nothing released");
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            assert!(maps.lines().count() > 1);
        }
    }
}
