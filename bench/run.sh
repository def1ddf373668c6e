#!/usr/bin/env bash
# Runs the side-by-side benchmark: our mender-connect (static musl release build, and the aarch64
# build for the size row) against Debian's Go mender-connect 2.1.0, on loopback, and prints one
# Markdown table (also written to bench/results/latest.md).
#
# Usage: bash bench/run.sh [mender-connect-bench flags, e.g. --quick or --only rust]
# Needs root (the Mender client's device files live in system paths) and Debian 12.
# Environment:
#   BENCH_TARGET_DIR   cargo target dir (default: $CARGO_TARGET_DIR, else target/bench)
#   BENCH_SKIP_ARM=1   skip the aarch64 builds and downloads (size row for aarch64 left empty)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-$repo/target/bench}}"
cache="$here/cache"
mkdir -p "$cache" "$here/results"
log() { echo "[run.sh] $*" >&2; }

# 1. Peers and tools (installed only when missing).
need=()
for pair in mender-connect:mender-connect mender:mender-client mender-cli:mender-cli \
    curl:curl dbus-daemon:dbus-daemon musl-gcc:musl-tools; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ "${BENCH_SKIP_ARM-}" != 1 ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
    # musl's arm64 headers and libc.a for the aarch64 musl build (needs the arm64 dpkg architecture).
    if dpkg --print-foreign-architectures | grep -qx arm64 && [ ! -f /usr/lib/aarch64-linux-musl/musl-gcc.specs ]; then
        need+=(musl-dev:arm64)
    fi
fi
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    apt-get install -y -q "${need[@]}" >&2
fi
go_version="$(dpkg-query -W -f='${Version}' mender-connect)"

# 2. Our agent, as shipped: release profile, static musl, libdbus built in, std rebuilt for size
# (scripts/build-static.sh; STATIC_BUILD_PLAIN=1 for the stable-std build).
log "building mender-connect (release, x86_64-unknown-linux-musl, vendored)"
rust_bin="$(bash "$repo/scripts/build-static.sh" x86_64-unknown-linux-musl mender-connect vendored)"
args=(--rust "$rust_bin")

# 3. aarch64: our static binary (musl, as qemu/build-image.sh builds it; static glibc when
# musl-dev:arm64 is missing) and the Go agent from Debian's arm64 packages with its libraries.
if [ "${BENCH_SKIP_ARM-}" != 1 ]; then
    arm_target=aarch64-unknown-linux-musl
    [ -f /usr/lib/aarch64-linux-musl/musl-gcc.specs ] || arm_target=aarch64-unknown-linux-gnu
    rustup target list --installed | grep -qx "$arm_target" || rustup target add "$arm_target" >&2 || true
    if rustup target list --installed | grep -qx "$arm_target"; then
        log "building mender-connect (release, $arm_target static, vendored)"
        rust_arm="$(bash "$repo/scripts/build-static.sh" "$arm_target" mender-connect vendored)"
        args+=(--rust-aarch64 "$rust_arm")
    else
        log "rust target $arm_target missing; no aarch64 build"
    fi
    if dpkg --print-foreign-architectures | grep -qx arm64; then
        # The Go agent's non-libc libraries on amd64, mapped to their packages, fetched for arm64.
        sysroot="$cache/arm64-root"
        mkdir -p "$cache/debs-arm64" "$sysroot"
        mapfile -t libs < <(ldd /usr/bin/mender-connect | awk '$2 == "=>" { print $1 " " $3 }' |
            grep -Ev '^(libc|libm|libpthread|libdl|librt)\.so')
        pkgs=("mender-connect:arm64")
        needed=()
        for l in "${libs[@]}"; do
            needed+=("${l%% *}")
            # dpkg knows a library by the path its package ships (merged /usr or not).
            pkg="$(dpkg -S "${l#* }" "$(readlink -f "${l#* }")" "*/${l%% *}" 2>/dev/null |
                grep -v '^diversion' | head -1 | cut -d: -f1 || true)"
            [ -n "$pkg" ] && pkgs+=("$pkg:arm64")
        done
        mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
        rm -f "$cache"/debs-arm64/*.deb
        if (cd "$cache/debs-arm64" && apt-get download -q "${pkgs[@]}" >&2); then
            for deb in "$cache"/debs-arm64/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
            args+=(--go-aarch64 "$sysroot/usr/bin/mender-connect" --go-aarch64-sysroot "$sysroot"
                --go-aarch64-needed "$(IFS=,; echo "${needed[*]}")")
        else
            log "apt-get download of the arm64 packages failed (apt-get update?); no Go aarch64 size"
        fi
    else
        log "dpkg has no arm64 architecture (dpkg --add-architecture arm64 && apt-get update); no Go aarch64 size"
    fi
fi

# 4. The stand-ins, built for speed so that they are not what is measured.
log "building mender-mock-server and mender-connect-bench (profile bench-harness)"
(cd "$repo" && cargo build -q --profile bench-harness -p mender-mock-server -p mender-connect-bench)
export MENDER_INTEROP_MENDER_MOCK_SERVER_BIN="$CARGO_TARGET_DIR/bench-harness/mender-mock-server"

# 5. Run.
load_before="$(uptime)"
log "machine before the run: $load_before"
out="$here/results/latest.md"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); Go mender-connect $go_version (Debian); ours $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') + working tree"
    echo "machine: $(uname -srm); before the run: $load_before"
    echo
    "$CARGO_TARGET_DIR/bench-harness/mender-connect-bench" "${args[@]}" "$@"
    echo "after the run: $(uptime)"
} | tee "$out"
log "table written to $out"
