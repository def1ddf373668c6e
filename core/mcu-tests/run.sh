#!/usr/bin/env bash
# Runs core's no-std tests (mender_connect_core::selftest::ALL) on an emulated Cortex-M4: QEMU's
# mps2-an386 board, output and exit code through semihosting. Exits non-zero on the first failing
# test (its panic message and location printed), and if the run exceeds MCU_TEST_TIMEOUT seconds.
#   bash core/mcu-tests/run.sh            # debug build (checks overflow, debug assertions)
#   MCU_PROFILE=release bash core/mcu-tests/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
profile="${MCU_PROFILE:-dev}"
timeout_s="${MCU_TEST_TIMEOUT:-120}"
target_dir="${CARGO_TARGET_DIR:-$root/target}/mcu"
command -v qemu-system-arm >/dev/null || { echo "run.sh: qemu-system-arm is missing (Debian: apt-get install qemu-system-arm)" >&2; exit 1; }

cargo build --locked --manifest-path "$here/Cargo.toml" --target thumbv7em-none-eabihf \
    --target-dir "$target_dir" --profile "$profile" --bin selftest
dir="$profile"; [ "$profile" = dev ] && dir=debug
elf="$target_dir/thumbv7em-none-eabihf/$dir/selftest"

# -monitor/-serial none: semihosting is the only channel; timeout ends a hung test (exit 124).
set +e
timeout --kill-after=5 "$timeout_s" qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel "$elf"
rc=$?
set -e
case "$rc" in
    0) ;;
    124|137) echo "run.sh: the selftests did not finish within ${timeout_s}s (a test hangs?)" >&2 ;;
    *) echo "run.sh: the selftests failed on thumbv7em-none-eabihf (qemu exit $rc)" >&2 ;;
esac
exit "$rc"
