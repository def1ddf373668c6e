#![no_std]
#![no_main]

#[unsafe(no_mangle)]
extern "C" fn mcu_main() -> ! {
    mender_connect_mcu_tests::exit(true)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    mender_connect_mcu_tests::exit(false)
}
