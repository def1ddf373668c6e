//! A minimal Cortex-M4 runtime for QEMU's mps2-an386: vector table, reset (FPU on, .data copied,
//! .bss zeroed, stack painted), ARM semihosting for output and the exit code, and the stack
//! high-water mark. Small enough to read; it replaces cortex-m-rt and cortex-m-semihosting here.
#![no_std]

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The word the reset handler writes over the whole stack area before `mcu_main` runs.
pub const STACK_PAINT: u32 = 0x5afe_57ac;

core::arch::global_asm!(
    r#"
    .section .text.mcu_reset,"ax",%progbits
    .global mcu_reset
    .type mcu_reset,%function
    .thumb_func
mcu_reset:
    @ The FPU (CP10, CP11) must be on before any floating-point instruction: full access.
    ldr r0, =0xE000ED88
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb
    ldr r0, =__sdata
    ldr r1, =__edata
    ldr r2, =__sidata
1:  cmp r0, r1
    bhs 2f
    ldr r3, [r2], #4
    str r3, [r0], #4
    b 1b
2:  ldr r0, =__sbss
    ldr r1, =__ebss
    movs r2, #0
3:  cmp r0, r1
    bhs 4f
    str r2, [r0], #4
    b 3b
    @ Paint the stack area (r0 = __ebss) up to the current stack pointer, for stack_used().
4:  mov r1, sp
    ldr r2, ={paint}
5:  cmp r0, r1
    bhs 6f
    str r2, [r0], #4
    b 5b
6:  bl mcu_main
    udf #0
    .size mcu_reset, . - mcu_reset
    "#,
    paint = const STACK_PAINT,
);

unsafe extern "C" {
    fn mcu_reset() -> !;
    static __stack_limit: u32;
    static __stack_top: u32;
}

/// Any exception (HardFault, UsageFault, …) ends the run with a failure instead of a hang.
unsafe extern "C" fn fault() -> ! {
    write_str("\nCPU exception (fault): failing\n");
    exit(false)
}

type Vector = unsafe extern "C" fn() -> !;

/// Reset and the 14 system exceptions after the initial stack pointer (link.x writes that).
#[unsafe(link_section = ".vector_table")]
#[unsafe(no_mangle)]
#[used]
pub static VECTORS: [Option<Vector>; 15] = [
    Some(mcu_reset),
    Some(fault), // NMI
    Some(fault), // HardFault
    Some(fault), // MemManage
    Some(fault), // BusFault
    Some(fault), // UsageFault
    None,
    None,
    None,
    None,
    Some(fault), // SVCall
    Some(fault), // DebugMonitor
    None,
    Some(fault), // PendSV
    Some(fault), // SysTick
];

const SYS_OPEN: usize = 0x01;
const SYS_WRITE: usize = 0x05;
const SYS_GET_CMDLINE: usize = 0x15;
const SYS_EXIT: usize = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x20026;
const ADP_STOPPED_RUN_TIME_ERROR: usize = 0x20023;

/// One semihosting call: `bkpt 0xab` with the operation in r0 and its argument block in r1.
///
/// # Safety
/// `arg` must be what the operation expects (a pointer to a valid argument block, or a value).
unsafe fn semihost(op: usize, arg: usize) -> usize {
    let ret;
    // SAFETY: the debugger (QEMU) handles the breakpoint; it reads only the block `arg` names.
    unsafe { core::arch::asm!("bkpt #0xab", inout("r0") op => ret, in("r1") arg, options(nostack)) };
    ret
}

static STDOUT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn stdout() -> usize {
    let h = STDOUT.load(Ordering::Relaxed);
    if h != usize::MAX {
        return h;
    }
    // ":tt" opened for writing (mode 4, "w") is the host's standard output.
    let name = b":tt\0";
    let args = [name.as_ptr() as usize, 4, 3];
    // SAFETY: SYS_OPEN reads three words: a NUL-terminated name, the mode and the name's length.
    let h = unsafe { semihost(SYS_OPEN, args.as_ptr() as usize) };
    STDOUT.store(h, Ordering::Relaxed);
    h
}

/// Writes to the host's standard output.
pub fn write_str(s: &str) {
    let args = [stdout(), s.as_ptr() as usize, s.len()];
    // SAFETY: SYS_WRITE reads three words: a handle, a buffer and its length, all valid here.
    unsafe { semihost(SYS_WRITE, args.as_ptr() as usize) };
}

/// `core::fmt` onto the host's standard output.
pub struct Out;

impl fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_str(s);
        Ok(())
    }
}

/// The command line QEMU was given (`-append`, after the image's name), cut to `buf`'s size.
pub fn cmdline(buf: &mut [u8]) -> &str {
    let mut args = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: SYS_GET_CMDLINE writes at most args[1] bytes to args[0] and the length back to args[1].
    let failed = unsafe { semihost(SYS_GET_CMDLINE, args.as_mut_ptr() as usize) } != 0;
    let len = if failed { 0 } else { args[1].min(buf.len()) };
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Ends the emulation: QEMU exits 0 when `ok`, 1 otherwise.
pub fn exit(ok: bool) -> ! {
    let reason = if ok { ADP_STOPPED_APPLICATION_EXIT } else { ADP_STOPPED_RUN_TIME_ERROR };
    // SAFETY: on 32-bit ARM, SYS_EXIT takes the reason code itself as its argument.
    unsafe { semihost(SYS_EXIT, reason) };
    loop {
        core::hint::spin_loop();
    }
}

/// Bytes of stack ever used since reset: from the top down to the deepest word that no longer
/// holds [`STACK_PAINT`] (a frame that happened to store the paint value itself is undercounted
/// by at most that frame).
pub fn stack_used() -> usize {
    let limit = core::ptr::addr_of!(__stack_limit) as usize;
    let top = core::ptr::addr_of!(__stack_top) as usize;
    let mut p = limit;
    while p < top {
        // SAFETY: [limit, top) is the stack area in RAM, word-aligned (link.x); reading is harmless.
        if unsafe { core::ptr::read_volatile(p as *const u32) } != STACK_PAINT {
            break;
        }
        p += 4;
    }
    top - p
}

/// Bytes between the end of .bss and the top of RAM, all of it available to the stack.
pub fn stack_size() -> usize {
    core::ptr::addr_of!(__stack_top) as usize - core::ptr::addr_of!(__stack_limit) as usize
}

/// rmp declares `extern crate alloc` (unconditionally), so every binary linking core must name a
/// global allocator, though core never allocates. This one refuses every request: an allocation
/// anywhere would fail the run (the default handler panics) instead of passing unnoticed.
struct NoAlloc;

// SAFETY: returning null is how an allocator reports failure; nothing is ever handed out.
unsafe impl core::alloc::GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: core::alloc::Layout) {}
}

#[global_allocator]
static NO_ALLOC: NoAlloc = NoAlloc;

/// Writes `n` in decimal (without `core::fmt`, so the footprint binary does not link it).
pub fn write_usize(mut n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    write_str(core::str::from_utf8(&buf[i..]).unwrap_or("?"));
}
