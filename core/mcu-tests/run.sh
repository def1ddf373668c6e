#!/usr/bin/env bash
# Runs core's no-std tests (mender_connect_core::selftest::ALL) on an emulated Cortex-M4: QEMU's
# mps2-an386 board, output and exit code through semihosting. Exits non-zero on the first failing
# test (its panic message and location printed), and if the run exceeds MCU_TEST_TIMEOUT seconds.
# Then checks the runner itself: a deliberately failing test must exit 1 with its message, and a
# deliberately hanging one must be ended by the timeout.
#   bash core/mcu-tests/run.sh            # debug build (overflow checks, debug assertions)
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
qemu() {
    local secs="$1"; shift
    timeout --kill-after=5 "$secs" qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
        -semihosting-config enable=on,target=native -kernel "$elf" "$@"
}

rc=0
qemu "$timeout_s" || rc=$?
case "$rc" in
    0) ;;
    124|137) echo "run.sh: the selftests did not finish within ${timeout_s}s (a test hangs?)" >&2; exit "$rc" ;;
    *) echo "run.sh: the selftests failed on thumbv7em-none-eabihf (qemu exit $rc)" >&2; exit "$rc" ;;
esac

fail() { printf 'run.sh: runner check: %s\n' "$*" >&2; exit 1; }
rc=0
out="$(qemu 30 -append check-failure 2>&1)" || rc=$?
[ "$rc" = 1 ] || fail "a failing test gave exit $rc, not 1: $out"
grep -q "panicked at .*selftest.rs" <<<"$out" && grep -q "deliberate failure" <<<"$out" ||
    fail "a failing test did not print its message and location: $out"
rc=0
qemu 2 -append check-hang >/dev/null 2>&1 || rc=$?
[ "$rc" = 124 ] || fail "a hanging test gave exit $rc, not the timeout's 124"
echo "run.sh: runner checks passed (a failing test exits 1 with its message, a hanging one is timed out)"
