#!/usr/bin/env bash
# The one test command (README, .ci/run): installs what it needs, then runs every check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tests/setup.sh

export CARGO_TERM_COLOR=never
step() { printf '\n=== %s\n' "$*" >&2; }

step "core builds for a bare-metal target (thumbv7em-none-eabihf, no allocator)"
cargo build --locked -p mender-connect-core --target thumbv7em-none-eabihf --release

step "clippy, warnings are errors"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "tests"
cargo test --locked --workspace
