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
        pub const SELFTESTS: &[$crate::selftest::SelfTest] = &[ $( (stringify!($name), $name as fn()) ),* ];
    };
}

/// Every module's no-std tests, in the order the runner reports them.
#[cfg(feature = "selftest")]
pub const ALL: &[&[SelfTest]] = &[
    crate::backoff::selftests::SELFTESTS,
    crate::keepalive::selftests::SELFTESTS,
    crate::link::selftests::SELFTESTS,
    crate::engine::selftests::SELFTESTS,
];
