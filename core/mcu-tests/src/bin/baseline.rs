//! The runtime alone (vector table, reset, semihosting, exit): what footprint.sh subtracts to
//! give the protocol core's own share.
#![no_std]
#![no_main]

#[unsafe(no_mangle)]
extern "C" fn mcu_main() -> ! {
    mender_connect_mcu_tests::write_str("baseline: stack high-water ");
    mender_connect_mcu_tests::write_usize(mender_connect_mcu_tests::stack_used());
    mender_connect_mcu_tests::write_str(" bytes\n");
    mender_connect_mcu_tests::exit(true)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    mender_connect_mcu_tests::exit(false)
}
