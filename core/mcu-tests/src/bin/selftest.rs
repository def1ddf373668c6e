//! Runs every test in `mender_connect_core::selftest::ALL` on the Cortex-M4, printing each name
//! and `ok` through semihosting; the first panic prints its message and location and exits 1.
#![no_std]
#![no_main]

use core::fmt::Write;
use mender_connect_core::selftest::ALL;
use mender_connect_mcu_tests::{Out, cmdline, exit, stack_size, stack_used};

/// run.sh's check of the runner itself (`-append check-failure` / `check-hang`): a failing or
/// hanging test must fail the run.
fn runner_check(mode: &str) {
    match mode {
        "check-failure" => {
            let _ = write!(Out, "test runner::deliberate_failure ... ");
            let two = core::hint::black_box(2);
            assert_eq!(two + 2, 5, "deliberate failure");
        }
        "check-hang" => {
            let _ = write!(Out, "test runner::deliberate_hang ... ");
            loop {
                core::hint::black_box(());
            }
        }
        _ => {}
    }
}

#[unsafe(no_mangle)]
extern "C" fn mcu_main() -> ! {
    let mut out = Out;
    let mut buf = [0u8; 256];
    if let Some(mode) = cmdline(&mut buf).split_whitespace().last() {
        runner_check(mode);
    }
    let total: usize = ALL.iter().map(|m| m.len()).sum();
    let _ = writeln!(out, "running {total} core selftests on thumbv7em-none-eabihf");
    let mut passed = 0usize;
    for module in ALL {
        for (name, test) in module.iter() {
            let name = name.strip_prefix("mender_connect_core::").unwrap_or(name);
            let _ = write!(out, "test {name} ... ");
            test();
            let _ = writeln!(out, "ok");
            passed += 1;
        }
    }
    let _ = writeln!(out, "stack high-water mark: {} bytes (of {} available)", stack_used(), stack_size());
    let _ = writeln!(out, "mcu selftests: {passed} passed, 0 failed");
    exit(passed == total)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Out, "FAILED\n{info}");
    exit(false)
}
