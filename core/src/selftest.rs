//! Tests that need no `std`, written once and run in two places: as ordinary `#[test]`s on the
//! host, and by the bare-metal runner on a Cortex-M4 under QEMU (feature `selftest`).
//!
//! A module lists its no-std test functions with [`selftests!`](crate::selftests); each must use
//! only `core` and `heapless` (no `Vec`, `String`, `format!`), and fail by panicking (`assert!`).

/// One no-std test: its name and the function to run.
pub type SelfTest = (&'static str, fn());

/// Declares no-std tests: `selftests!(name_a, name_b);` after the functions `fn name_a()`, ….
///
/// In `cargo test` each becomes a `#[test]`; with the `selftest` feature the module gains
/// `pub const SELFTESTS: &[SelfTest]` for the bare-metal runner.
#[macro_export]
macro_rules! selftests {
    ($($name:ident),* $(,)?) => {
        #[cfg(test)]
        mod host_selftests {
            $( #[test] fn $name() { super::$name() } )*
        }
        /// This module's no-std tests, for the bare-metal runner.
        #[cfg(feature = "selftest")]
        pub const SELFTESTS: &[$crate::selftest::SelfTest] = &[ $( (concat!(module_path!(), "::", stringify!($name)), $name as fn()) ),* ];
    };
}

/// The virtual clock's instant `ms` milliseconds after its origin: every simulation's time.
pub fn t(ms: u64) -> crate::time::Instant {
    crate::time::Instant::from_millis(ms)
}

/// Hex to bytes, as the host tests' `hex` (whitespace and `|` separators ignored), into a
/// fixed-capacity buffer; panics on odd length, a non-hex digit, or more than 256 bytes.
pub fn hex(s: &str) -> heapless::Vec<u8, 256> {
    hex_n(s)
}

/// [`hex`] with the capacity chosen by the caller.
pub fn hex_n<const N: usize>(s: &str) -> heapless::Vec<u8, N> {
    let mut out = heapless::Vec::new();
    let mut high: Option<u8> = None;
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '|') {
        let d = c.to_digit(16).expect("hex digit") as u8;
        match high.take() {
            None => high = Some(d),
            Some(h) => out.push(h << 4 | d).expect("hex fits the buffer"),
        }
    }
    assert!(high.is_none(), "odd hex length");
    out
}

/// A value's `Display` text, for asserting error messages without `format!`.
pub fn display(v: &impl core::fmt::Display) -> heapless::String<256> {
    let mut s = heapless::String::new();
    core::fmt::Write::write_fmt(&mut s, format_args!("{v}")).expect("display text fits 256 bytes");
    s
}

/// Every module's no-std tests, in the order the runner reports them (one line per module).
#[cfg(feature = "selftest")]
pub const ALL: &[&[SelfTest]] = &[
    crate::backoff::selftests::SELFTESTS,
    crate::time::selftests::SELFTESTS,
    crate::msgpack::selftests::SELFTESTS,
    crate::frame::selftests::SELFTESTS,
    crate::control::selftests::SELFTESTS,
    crate::shell::selftests::SELFTESTS,
    crate::filetransfer::selftests::SELFTESTS,
    crate::portforward::selftests::SELFTESTS,
    crate::menderclient::selftests::SELFTESTS,
    crate::sessions::selftests::SELFTESTS,
    crate::shells::selftests::SELFTESTS,
    crate::forwards::selftests::SELFTESTS,
    crate::transfer::selftests::SELFTESTS,
    crate::transfers::selftests::SELFTESTS,
    crate::rate::selftests::SELFTESTS,
    crate::keepalive::selftests::SELFTESTS,
    crate::link::selftests::SELFTESTS,
    crate::engine::selftests::SELFTESTS,
    crate::device::selftests::SELFTESTS,
    crate::device::forward_selftests::SELFTESTS,
];
