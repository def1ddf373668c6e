#!/usr/bin/env bash
# Builds a package as shipped: release profile, statically linked, libdbus built in. Prints the
# binary's path as the only line on stdout; cargo's output goes to stderr.
#
# Usage: scripts/build-static.sh <target> <package> [cargo features]
#   <target>: x86_64-unknown-linux-musl (needs musl-gcc), aarch64-unknown-linux-musl (needs
#   gcc-aarch64-linux-gnu and musl-dev:arm64: the cross gcc compiles against musl's headers through
#   musl's gcc specs file) or aarch64-unknown-linux-gnu (static glibc; needs gcc-aarch64-linux-gnu).
#
# By default std is rebuilt for size (docs/binary-size.md): -Zbuild-std with the immediate-abort
# panic strategy and std's optimize_for_size, on the stable toolchain through RUSTC_BOOTSTRAP=1
# (needs the rust-src component; added here when rustup is present). STATIC_BUILD_PLAIN=1 builds
# with the prebuilt std instead: stable Rust only, about 0.8 MB larger, panics print a message.
# Honours CARGO_TARGET_DIR; BUILD_STATIC_QUIET=1 leaves out the command line it prints.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,14p' "${BASH_SOURCE[0]}" >&2; exit 2; }
target="$1" package="$2" features="${3-}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "build-static: $*" >&2; exit 1; }

rustflags=()
cfg_env=()
cflags=""
case "$target" in
    x86_64-unknown-linux-musl)
        command -v musl-gcc >/dev/null || die "musl-gcc missing (apt-get install musl-tools)"
        cfg_env+=(CC_x86_64_unknown_linux_musl=musl-gcc)
        cflags_var=CFLAGS_x86_64_unknown_linux_musl
        rustflags_var=CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS
        ;;
    aarch64-unknown-linux-musl)
        command -v aarch64-linux-gnu-gcc >/dev/null ||
            die "aarch64-linux-gnu-gcc missing (apt-get install gcc-aarch64-linux-gnu)"
        specs=/usr/lib/aarch64-linux-musl/musl-gcc.specs
        [ -f "$specs" ] || die "$specs missing (dpkg --add-architecture arm64; apt-get install musl-dev:arm64)"
        # Rust links musl's crt objects and libc.a from the target's self-contained rust-std; the C
        # (libdbus, ring) is compiled against musl's headers.
        # No outline atomics: their helpers live in libgcc, which a self-contained musl link lacks.
        cflags="-specs $specs -mno-outline-atomics"
        cfg_env+=(
            CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
            AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
        )
        cflags_var=CFLAGS_aarch64_unknown_linux_musl
        rustflags_var=CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS
        ;;
    aarch64-unknown-linux-gnu)
        command -v aarch64-linux-gnu-gcc >/dev/null ||
            die "aarch64-linux-gnu-gcc missing (apt-get install gcc-aarch64-linux-gnu)"
        cfg_env+=(
            CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
            AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
        )
        # glibc's static libc is fine for a daemon that never resolves host names through NSS.
        rustflags+=(-Ctarget-feature=+crt-static)
        cflags_var=CFLAGS_aarch64_unknown_linux_gnu
        rustflags_var=CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS
        ;;
    *) die "unsupported target $target" ;;
esac

cargo_args=(build --release --target "$target" -p "$package")
[ -n "$features" ] && cargo_args+=(--features "$features")

if [ "${STATIC_BUILD_PLAIN-}" != 1 ]; then
    sysroot="$(rustc --print sysroot)"
    if [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
        command -v rustup >/dev/null || die "the rust-src component is missing (or set STATIC_BUILD_PLAIN=1)"
        echo "build-static: rustup component add rust-src" >&2
        rustup component add rust-src >&2
    fi
    # Nothing unwinds under immediate-abort, so no unwind tables (Rust and the C of libdbus/ring);
    # a non-PIE static binary needs no run-time relocations; lld folds identical functions.
    # -Oz for the C (gcc >= 12): ring's bulk crypto is assembly; libdbus only carries the auth calls.
    rustflags+=(
        -Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no
        -Crelocation-model=static -Zlocation-detail=none
        -Clinker-features=+lld -Clink-self-contained=+linker "-Clink-arg=-Wl,--icf=all"
    )
    cflags+=" -Oz -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables -fno-unwind-tables"
    cfg_env+=(RUSTC_BOOTSTRAP=1)
    cargo_args+=("-Zbuild-std=std,panic_abort" -Zbuild-std-features=optimize_for_size)
fi
cfg_env+=("$rustflags_var=${rustflags[*]}")
[ -n "$cflags" ] && cfg_env+=("$cflags_var=${cflags# }")

# BUILD_STATIC_QUIET=1 (qemu/build-image.sh): no command line, which is long and the same every run.
[ "${BUILD_STATIC_QUIET-}" = 1 ] || echo "build-static: ${cfg_env[*]} cargo ${cargo_args[*]}" >&2
(cd "$repo" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS "${cfg_env[@]}" cargo "${cargo_args[@]}" >&2)
bin="${CARGO_TARGET_DIR:-$repo/target}/$target/release/$package"
[ -x "$bin" ] || die "cargo produced no $bin"
echo "$bin"
