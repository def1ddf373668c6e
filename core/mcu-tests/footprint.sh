#!/usr/bin/env bash
# Flash and RAM of a minimal device build of the protocol core on a Cortex-M4 (thumbv7em-none-eabihf,
# opt-level "z", LTO, panic=abort): src/bin/footprint.rs (every protocol, default capacities, one
# scripted session) against src/bin/baseline.rs (the runtime alone). Both run under QEMU mps2-an386;
# the stack high-water mark comes from the painted stack. Sizes are read from the ELF section headers
# (no binutils needed). README.md "Core on a microcontroller" quotes this output.
#   bash core/mcu-tests/footprint.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}/mcu"
cargo build --locked --manifest-path "$here/Cargo.toml" --target thumbv7em-none-eabihf \
    --target-dir "$target_dir" --release --bin footprint --bin baseline
out="$target_dir/thumbv7em-none-eabihf/release"

run() {
    timeout --kill-after=5 60 qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
        -semihosting-config enable=on,target=native -kernel "$1"
}
fp_line="$(run "$out/footprint")"
base_line="$(run "$out/baseline")"

python3 - "$out/footprint" "$out/baseline" "$fp_line" "$base_line" <<'PY'
import re, struct, sys

def sections(path):
    """(name, addr, size, nobits) of every allocated section of a 32-bit little-endian ELF."""
    d = open(path, "rb").read()
    assert d[:4] == b"\x7fELF" and d[4] == 1 and d[5] == 1, "not an ELF32 LE file"
    shoff, = struct.unpack_from("<I", d, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x2E)
    hdrs = [struct.unpack_from("<IIIIII", d, shoff + i * shentsize) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    name = lambda o: d[stroff + o:d.index(b"\0", stroff + o)].decode()
    SHF_ALLOC, SHT_NOBITS = 2, 8
    return [(name(n), addr, size, typ == SHT_NOBITS) for n, typ, flags, addr, off, size in hdrs if flags & SHF_ALLOC]

RAM = 0x2000_0000
def figures(path):
    secs = sections(path)
    flash = sum(s for n, a, s, nobits in secs if not nobits)          # code, constants, .data's initial values
    static_ram = sum(s for n, a, s, nobits in secs if a >= RAM)       # .data + .bss
    by = {n: s for n, a, s, nobits in secs}
    return flash, static_ram, by

fp, base = figures(sys.argv[1]), figures(sys.argv[2])
stack = lambda line: int(re.search(r"stack high-water (\d+)", line).group(1))
fp_stack, base_stack = stack(sys.argv[3]), stack(sys.argv[4])
state = int(re.search(r"device state (\d+)", sys.argv[3]).group(1))
bufs = int(re.search(r"rx\+tx buffers (\d+)", sys.argv[3]).group(1))
print(sys.argv[3].strip())
print(f"{'':34} {'footprint':>10} {'baseline':>10} {'core+device':>12}")
for n in (".vector_table", ".text", ".rodata", ".ARM.exidx", ".data", ".bss"):
    a, b = fp[2].get(n, 0), base[2].get(n, 0)
    print(f"  {n:32} {a:>10} {b:>10} {a - b:>12}")
print(f"flash (.text+.rodata+.data init) {fp[0]:>10} {base[0]:>10} {fp[0] - base[0]:>12}")
print(f"RAM static (.data+.bss)          {fp[1]:>10} {base[1]:>10} {fp[1] - base[1]:>12}")
print(f"RAM stack high-water             {fp_stack:>10} {base_stack:>10} {fp_stack - base_stack:>12}")
print(f"RAM total                        {fp[1] + fp_stack:>10} {base[1] + base_stack:>10} {fp[1] + fp_stack - base[1] - base_stack:>12}")
print(f"of the stack: device state {state} B (rx+tx frame buffers {bufs} B, protocol state {state - bufs} B)")
PY
