#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what it needs, then runs every check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tests/setup.sh

export CARGO_TERM_COLOR=never
# Every build here starts from a clean clone and is thrown away: incremental caches and full
# debuginfo only fill the disk (a CI run died of ENOSPC at 393 s with a 9 GiB target dir).
# Line tables keep file:line in panics and backtraces.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
step() { printf '\n=== %s\n' "$*" >&2; }

step "core on a bare-metal target (thumbv7em-none-eabihf): builds with no allocator; its no-std tests and the footprint build run on a Cortex-M4 (QEMU mps2-an386)"
cargo build --locked -p mender-connect-core --target thumbv7em-none-eabihf --release
bash core/mcu-tests/run.sh
bash core/mcu-tests/footprint.sh

step "formatting: rustfmt.toml's one style, the workspace and the crates outside it"
cargo fmt --all --check
for m in core/fuzz agent/fuzz core/mcu-tests; do cargo fmt --all --check --manifest-path "$m/Cargo.toml"; done

step "clippy, warnings are errors (default features, the bare-metal runner, and the agent with each auth source alone)"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked --manifest-path core/mcu-tests/Cargo.toml --target thumbv7em-none-eabihf --target-dir target/mcu --bins -- -D warnings
cargo clippy --locked -p mender-connect --no-default-features -- -D warnings
cargo clippy --locked -p mender-connect --no-default-features --features standalone -- -D warnings
cargo clippy --locked -p mender-connect --no-default-features --features dbus-auth -- -D warnings

step "API docs of core and agent build without warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --locked -p mender-connect-core -p mender-connect --no-deps

step "tests: unit, daemon, mock server, interop with the real Debian peers, QEMU end to end"
cargo test --locked --workspace

# The real bitbake needs ../shared/yocto (oe-core + bitbake tarballs): required here, not skipped.
step "Yocto layer (crates.inc = Cargo.lock, layer checks, oelint-adv, injection flow, bitbake parse/-n/unpack, aarch64 cross build)"
MCR_REQUIRE_BITBAKE=1 bash meta-mender-connect-rs/scripts/check.sh
