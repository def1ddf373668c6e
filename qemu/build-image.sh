#!/usr/bin/env bash
# Builds a small bootable initramfs image for QEMU from Debian packages (no Yocto):
# Debian's kernel (vmlinuz + the few modules QEMU's virtio devices need), busybox-static, dbus-daemon
# with its shared libraries, and our agent plus the test auth service built statically.
#
# Usage: qemu/build-image.sh [--arch x86_64|aarch64] [--force]
# Prints the image directory (holding vmlinuz, initrd.img, manifest.txt) as the last line on stdout;
# everything else goes to stderr.
#
# The image is cached under qemu/cache/images/<arch>-<key>/, where <key> hashes every input (this
# script, the rootfs overlay, the Debian package versions and the two Rust binaries). Cargo decides
# itself whether the binaries need rebuilding, so a warm run costs one no-op cargo build.
#
# Environment:
#   QEMU_CARGO_TARGET_DIR  cargo target dir for the static builds (default qemu/cache/target). It is
#                          deliberately NOT $CARGO_TARGET_DIR: under `cargo test` the outer cargo holds
#                          that directory's lock and a nested build would wait forever.
#   QEMU_SKIP_CARGO=1      package the binaries from the last build without running cargo (to work on
#                          the image while the tree does not compile).
#   STATIC_BUILD_PLAIN=1   build the agent with the prebuilt std (stable Rust only; see
#                          scripts/build-static.sh and docs/binary-size.md).
#   QEMU_AGENT_FEATURES    cargo features for the agent build (default: its `vendored` feature, else
#                          `dbus/vendored`: libdbus built from bundled source, for static linking).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="$here/cache"

arch=x86_64
force=0
while (($#)); do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --arch=*) arch="${1#--arch=}"; shift ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-image: unknown argument: $1" >&2; exit 2 ;;
    esac
done

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/debian.sh
. "$here/lib/debian.sh"

case "$arch" in
    x86_64)
        deb_arch=amd64; kflavour=amd64; triplet=x86_64-linux-gnu
        rust_target=x86_64-unknown-linux-musl
        ;;
    aarch64|arm64)
        arch=aarch64; deb_arch=arm64; kflavour=arm64; triplet=aarch64-linux-gnu
        # musl as on x86_64: Debian's cross gcc with musl-dev:arm64's headers (scripts/build-static.sh).
        rust_target=aarch64-unknown-linux-musl
        ;;
    *) die "unsupported --arch $arch (x86_64 or aarch64)" ;;
esac

for tool in apt-get apt-cache dpkg-deb readelf cpio gzip sha256sum flock cargo; do
    command -v "$tool" >/dev/null || die "missing tool '$tool' (run: bash tests/setup.sh)"
done

mkdir -p "$cache"
exec 9>"$cache/build-$arch.lock"
# Parallel tests share one image; the second one waits here and then finds the cache warm.
flock 9

# ---------------------------------------------------------------------------------------------
# 1. Debian packages (downloaded once per version into qemu/cache/debs/<arch>/).
# ---------------------------------------------------------------------------------------------
# The metapackage linux-image-<flavour> only depends on the versioned kernel package.
kpkg="$(deb_kernel_package "$kflavour" "$deb_arch")"

# dbus-daemon's shared-library closure; the ELF resolver below fails loudly if one is missing.
packages=(
    "$kpkg" busybox-static dbus-daemon dbus-bin
    libdbus-1-3 libexpat1 libsystemd0 libselinux1 libaudit1 libcap-ng0 libapparmor1 libc6 libcap2
    libgcrypt20 libgpg-error0 liblzma5 libzstd1 liblz4-1 libpcre2-8-0
)
deb_fetch "$cache/debs/$deb_arch" "$deb_arch" "${packages[@]}"

# ---------------------------------------------------------------------------------------------
# 2. The agent and the test auth service, statically linked.
# ---------------------------------------------------------------------------------------------
export CARGO_TARGET_DIR="${QEMU_CARGO_TARGET_DIR:-$cache/target}"
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET

has_feature() { # <crate dir> <feature>
    sed -n '/^\[features\]/,/^\[/p' "$repo/$1/Cargo.toml" | grep -Eq "^$2[[:space:]]*="
}
has_dep() { # <crate dir> <dependency>
    sed -n '/^\[dependencies\]/,/^\[/p' "$repo/$1/Cargo.toml" | grep -Eq "^$2[[:space:]]*="
}
# libdbus must be built from the bundled source for a static binary: the crate's own `vendored`
# feature when it has one, else the `dbus` crate's.
static_features() { # <crate dir>
    if has_feature "$1" vendored; then echo vendored
    elif has_dep "$1" dbus; then echo dbus/vendored
    fi
}
agent_features="${QEMU_AGENT_FEATURES-$(static_features agent)}"
auth_features="$(static_features tests/test-auth)"

rustup target list --installed 2>/dev/null | grep -qx "$rust_target" ||
    die "rust target $rust_target missing (rustup target add $rust_target)"

# The agent as shipped (scripts/build-static.sh: std rebuilt for size). The test auth service uses
# the prebuilt std, so that its panics still print a message; its own target dir keeps the two
# sets of compiler flags from rebuilding each other's dependencies.
agent_dir="$CARGO_TARGET_DIR" auth_dir="$CARGO_TARGET_DIR/plain-std"
build() { # <package> <features> <target dir> <plain>
    # The full command line is in scripts/build-static.sh; a warm run needs only this line.
    log "cargo build of $1 (scripts/build-static.sh $rust_target $1 $2)"
    CARGO_TARGET_DIR="$3" STATIC_BUILD_PLAIN="$4" BUILD_STATIC_QUIET=1 \
        bash "$repo/scripts/build-static.sh" "$rust_target" "$1" "$2" >/dev/null || die "cargo build of $1 failed"
}
if [ "${QEMU_SKIP_CARGO-}" = 1 ]; then
    log "QEMU_SKIP_CARGO=1: using the binaries already in $CARGO_TARGET_DIR"
else
    build mender-connect "$agent_features" "$agent_dir" "${STATIC_BUILD_PLAIN-}"
    build mender-test-auth "$auth_features" "$auth_dir" 1
fi
agent_bin="$agent_dir/$rust_target/release/mender-connect"
auth_bin="$auth_dir/$rust_target/release/mender-test-auth"
for b in "$agent_bin" "$auth_bin"; do
    [ -x "$b" ] || die "cargo produced no $b"
    if readelf -l "$b" | grep -q 'program interpreter'; then
        die "$b is dynamically linked; the image has no libc for it"
    fi
done

# ---------------------------------------------------------------------------------------------
# 3. Cache key over all inputs.
# ---------------------------------------------------------------------------------------------
key="$(
    {
        echo "arch=$arch"
        sha256sum <"${BASH_SOURCE[0]}"
        sha256sum <"$here/lib/debian.sh"
        (cd "$here/rootfs" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        (cd "$here/rootfs" && find . -type l -printf '%p -> %l\n' | sort)
        for f in "${deb_files[@]}"; do basename "$f"; done
        sha256sum "$agent_bin" "$auth_bin" | cut -d' ' -f1
    } | sha256sum | cut -c1-16
)"
out="$cache/images/$arch-$key"
if [ "$force" = 0 ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/manifest.txt" ]; then
    log "cached image $out"
    echo "$out"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# 4. Assemble the root file system.
# ---------------------------------------------------------------------------------------------
work="$(mktemp -d "$cache/build-$arch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
stage="$work/stage"   # all packages unpacked, a sysroot to resolve libraries in
root="$work/root"     # the image's root
mkdir -p "$stage" "$root"
log "unpacking ${#deb_files[@]} packages"
for f in "${deb_files[@]}"; do dpkg-deb -x "$f" "$stage"; done

kver="$(basename "$(ls -d "$stage"/lib/modules/*/ | head -n1)")"
[ -n "$kver" ] && [ -f "$stage/boot/vmlinuz-$kver" ] || die "kernel package has no vmlinuz"

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,var,lib/modules}
chmod 1777 "$root/tmp"
ln -s ../run "$root/var/run"
install -m 0755 "$stage/bin/busybox" "$root/bin/busybox"
# The rest of busybox's applet links are created at boot (`busybox --install -s`) so that this
# script never runs a foreign-architecture busybox.
ln -s busybox "$root/bin/sh"
ln -s ../bin/busybox "$root/sbin/init"
ln -s bin/busybox "$root/init"

copy_elf usr/bin/dbus-daemon
copy_elf usr/bin/dbus-send

# Only the modules QEMU's devices need, with their dependencies (from each module's .modinfo).
mods_src="$stage/lib/modules/$kver"
mods_dst="$root/lib/modules/$kver"
modules_start
# virtio network and entropy, the power button (clean poweroff on request) and its input events:
# ACPI on the PC, a GPIO key on the arm virt machine.
case "$arch" in
    x86_64) guest_modules="virtio_pci virtio_net virtio-rng button evdev" ;;
    aarch64) guest_modules="virtio_pci virtio_mmio virtio_net virtio-rng gpio_keys evdev" ;;
esac
for m in $guest_modules; do add_module "$m"; done
# busybox depmod only reads the modules' .modinfo, so the host's busybox serves any architecture.
depmod_busybox="$root/bin/busybox"
[ "$arch" = "$(uname -m)" ] || depmod_busybox="$(command -v busybox)" ||
    die "busybox missing on the host (apt-get install busybox-static)"
modules_finish "$root" "$kver" "$depmod_busybox"
echo "$guest_modules" >"$root/etc/modules"

# Our binaries and the overlay (init scripts, D-Bus and agent configuration).
install -m 0755 "$agent_bin" "$root/usr/bin/mender-connect"
install -m 0755 "$auth_bin" "$root/usr/bin/mender-test-auth"
cp -a "$here/rootfs/." "$root/"
# Git keeps only the executable bit; the rest of the modes are set here.
chmod 0600 "$root/etc/shadow"
chmod 0755 "$root"/etc/init.d/* "$root"/usr/libexec/qemu-guest/* "$root/etc/acpi/PWRF/00000080"
echo "$kver" >"$root/etc/kernel-version"

# ---------------------------------------------------------------------------------------------
# 5. Pack: kernel + gzip'd newc cpio (the kernel unpacks it into its tmpfs root and runs /init).
# ---------------------------------------------------------------------------------------------
tmp_out="$work/out"
mkdir -p "$tmp_out"
cp "$stage/boot/vmlinuz-$kver" "$tmp_out/vmlinuz"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) |
    gzip -9n >"$tmp_out/initrd.img"
{
    echo "arch=$arch key=$key kernel=$kver rust_target=$rust_target agent_features=$agent_features auth_features=$auth_features"
    for f in "${deb_files[@]}"; do echo "deb $(basename "$f")"; done
    (cd "$root" && find . -type f -printf 'file %s %p\n' | LC_ALL=C sort -k3)
    echo "vmlinuz_bytes=$(stat -c %s "$tmp_out/vmlinuz") initrd_bytes=$(stat -c %s "$tmp_out/initrd.img")"
} >"$tmp_out/manifest.txt"

mkdir -p "$cache/images"
# Keep the newest two images per architecture; older ones were built from stale inputs.
{ ls -dt "$cache/images/$arch-"*/ 2>/dev/null || true; } | tail -n +2 | while read -r old; do rm -rf "$old"; done
rm -rf "$out"
mv "$tmp_out" "$out"
ln -sfn "$(basename "$out")" "$cache/images/$arch-latest"
log "built $out (vmlinuz $(du -h "$out/vmlinuz" | cut -f1), initrd $(du -h "$out/initrd.img" | cut -f1))"
echo "$out"
