#!/usr/bin/env bash
# Builds a Mender disk image of the kind meta-mender produces, from Debian packages (no Yocto), for
# QEMU x86_64: an .sdimg (MBR) with four partitions
#   1 boot      vfat  the kernel (Debian's vmlinuz) and a small initramfs that loads virtio_blk and
#                     ext4 and switches to the root file system named by root= (rootfs A by default)
#   2 rootfs A  ext4  busybox, the real Mender client (Debian's mender-client 3.4.0) with its D-Bus
#                     policy and systemd unit (enabled), dbus-daemon, every shared library they need
#                     (resolved with readelf), /etc/mender/mender.conf, an identity script
#   3 rootfs B  ext4  the same as A, as in a fresh meta-mender image
#   4 data      ext4  mounted on /data; /var/lib/mender -> /data/mender, holding device_type
# It has no mender-connect and no device key: qemu/../meta-mender-connect-rs/scripts/test-sdimg
# adds them as a user would to an existing image (mender-connect-rs-inject, mender-artifact).
#
# Usage: qemu/build-sdimg.sh [--force]
# Prints the image directory (image.sdimg, manifest.txt) as the last line on stdout.
# Cached under qemu/cache/sdimg/x86_64-<key>/, where <key> hashes this script, lib/debian.sh,
# sdimg/ and the Debian package versions; packages are shared with build-image.sh in
# qemu/cache/debs/amd64/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/cache"
force=0
while (($#)); do
    case "$1" in
        --force) force=1; shift ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "build-sdimg: unknown argument: $1" >&2; exit 2 ;;
    esac
done
log() { printf 'build-sdimg: %s\n' "$*" >&2; }
die() { printf 'build-sdimg: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/debian.sh
. "$here/lib/debian.sh"

arch=x86_64 deb_arch=amd64 triplet=x86_64-linux-gnu
# Partition sizes in MiB; the first partition starts at 1 MiB, as meta-mender aligns them.
boot_mib=32 rootfs_mib=80 data_mib=32

for tool in apt-get apt-cache dpkg-deb readelf cpio gzip sha256sum flock mkfs.ext4 mkfs.vfat mcopy parted; do
    command -v "$tool" >/dev/null || die "missing tool '$tool' (run: bash tests/setup.sh)"
done

mkdir -p "$cache"
exec 9>"$cache/build-sdimg.lock"
flock 9

kpkg="$(deb_kernel_package amd64 "$deb_arch")"
packages=(
    "$kpkg" busybox-static dbus-daemon dbus-bin mender-client
    # dbus-daemon's libraries (as build-image.sh)
    libdbus-1-3 libexpat1 libsystemd0 libselinux1 libaudit1 libcap-ng0 libapparmor1 libc6 libcap2
    libgcrypt20 libgpg-error0 liblzma5 libzstd1 liblz4-1 libpcre2-8-0
    # the Mender client's (glib's gio, OpenSSL)
    libglib2.0-0 libssl3 zlib1g libmount1 libblkid1 libffi8
)
deb_fetch "$cache/debs/$deb_arch" "$deb_arch" "${packages[@]}"

key="$(
    {
        sha256sum <"${BASH_SOURCE[0]}"
        sha256sum <"$here/lib/debian.sh"
        (cd "$here" && find sdimg rootfs/etc/passwd rootfs/etc/group rootfs/etc/shadow rootfs/etc/nsswitch.conf \
            rootfs/etc/profile rootfs/etc/shells rootfs/etc/dbus-1/system.conf rootfs/etc/acpi -type f -print0 |
            sort -z | xargs -0 sha256sum)
        (cd "$here/sdimg" && find . -type l -printf '%p -> %l\n' | sort)
        for f in "${deb_files[@]}"; do basename "$f"; done
    } | sha256sum | cut -c1-16
)"
out="$cache/sdimg/$arch-$key"
if [ "$force" = 0 ] && [ -s "$out/image.sdimg" ] && [ -s "$out/manifest.txt" ]; then
    log "cached image $out"
    echo "$out"
    exit 0
fi

work="$(mktemp -d "$cache/build-sdimg.XXXXXX")"
trap 'rm -rf "$work"' EXIT
stage="$work/stage" root="$work/root" initrd="$work/initrd"
mkdir -p "$stage" "$root" "$initrd"
log "unpacking ${#deb_files[@]} packages"
for f in "${deb_files[@]}"; do dpkg-deb -x "$f" "$stage"; done
kver="$(basename "$(ls -d "$stage"/lib/modules/*/ | head -n1)")"
[ -n "$kver" ] && [ -f "$stage/boot/vmlinuz-$kver" ] || die "kernel package has no vmlinuz"

# --- the initramfs: busybox and the modules for the disk, ext4, network, entropy, power button ---
mkdir -p "$initrd"/{bin,dev,proc,sys,etc,newroot,lib/modules}
install -m 0755 "$stage/bin/busybox" "$initrd/bin/busybox"
install -m 0755 "$here/sdimg/init" "$initrd/init"
mods_src="$stage/lib/modules/$kver" mods_dst="$initrd/lib/modules/$kver"
modules_start
# crc32c before ext4: ext4 asks the crypto API for it at mount time, and nothing here would load
# it on demand.
initrd_modules="virtio_pci virtio_blk crc32c_generic ext4 virtio_net virtio-rng button evdev"
for m in $initrd_modules; do add_module "$m"; done
modules_finish "$initrd" "$kver" "$initrd/bin/busybox"
echo "$initrd_modules" >"$initrd/etc/modules"
(cd "$initrd" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet) | gzip -9n >"$work/initrd.img"

# --- rootfs A ---
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,var/lib,var/log,data,lib,usr/lib,etc/ssl/certs,usr/lib/ssl}
# OpenSSL's directory as Debian lays it out (the Mender client lists it; no CA is installed, the
# server's certificate is named by ServerCertificate).
ln -s /etc/ssl/certs "$root/usr/lib/ssl/certs"
chmod 1777 "$root/tmp"
ln -s ../run "$root/var/run"
install -m 0755 "$stage/bin/busybox" "$root/bin/busybox"
# Applet links made now from busybox's own list, so the root file system needs no first-boot step.
while read -r applet; do
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
copy_elf usr/bin/dbus-daemon
copy_elf usr/bin/dbus-send
copy_elf usr/bin/mender
# The client's D-Bus policy and unit as Debian ships them; the unit enabled as in a meta-mender image.
mkdir -p "$root/usr/share/dbus-1/system.d" "$root/lib/systemd/system" "$root/etc/systemd/system/multi-user.target.wants"
cp "$stage/usr/share/dbus-1/system.d/io.mender.AuthenticationManager.conf" "$root/usr/share/dbus-1/system.d/"
cp "$stage/lib/systemd/system/mender-client.service" "$root/lib/systemd/system/"
ln -s /lib/systemd/system/mender-client.service "$root/etc/systemd/system/multi-user.target.wants/mender-client.service"
mkdir -p "$root/usr/share/mender/inventory" "$root/usr/share/mender/modules/v3"
# The base files of build-image.sh's image (users, name service, shell profile, the power button).
for f in etc/passwd etc/group etc/shadow etc/nsswitch.conf etc/profile etc/shells etc/acpi; do
    mkdir -p "$root/$(dirname "$f")"
    cp -a "$here/rootfs/$f" "$root/$f"
done
# Its system bus configuration (Debian's default deny policy), also reading the policies packages
# install under /usr/share, as Debian's own system.conf does.
mkdir -p "$root/etc/dbus-1/system.d"
sed 's|  <includedir>system.d</includedir>|  <includedir>/usr/share/dbus-1/system.d</includedir>\n&|' \
    "$here/rootfs/etc/dbus-1/system.conf" >"$root/etc/dbus-1/system.conf"
grep -q '/usr/share/dbus-1/system.d' "$root/etc/dbus-1/system.conf" || die "system.conf: includedir not added"
cp -a "$here/sdimg/rootfs/." "$root/"
chmod 0600 "$root/etc/shadow" "$root/etc/mender/mender.conf"
chmod 0755 "$root/etc/acpi/PWRF/00000080"
# As meta-mender: the client's state directory lives on the data partition.
ln -s /data/mender "$root/var/lib/mender"
echo "$kver" >"$root/etc/kernel-version"

# --- data ---
data="$work/data"
mkdir -p "$data/mender"
chmod 0700 "$data/mender"
echo "device_type=qemux86-64" >"$data/mender/device_type"

# --- boot ---
mkfs.vfat -n BOOT -C "$work/boot.vfat" $((boot_mib * 1024)) >/dev/null
mcopy -i "$work/boot.vfat" "$stage/boot/vmlinuz-$kver" ::/vmlinuz
mcopy -i "$work/boot.vfat" "$work/initrd.img" ::/initrd.img

# --- partitions and the disk ---
mkfs.ext4 -q -F -L primary -d "$root" "$work/rootfs.ext4" "${rootfs_mib}M" >/dev/null
mkfs.ext4 -q -F -L data -d "$data" "$work/data.ext4" "${data_mib}M" >/dev/null
img="$work/image.sdimg"
total=$((1 + boot_mib + 2 * rootfs_mib + data_mib))
truncate -s "${total}M" "$img"
a=$((1 + boot_mib)) b=$((1 + boot_mib + rootfs_mib)) d=$((1 + boot_mib + 2 * rootfs_mib))
parted -s "$img" mklabel msdos \
    mkpart primary fat32 1MiB "${a}MiB" set 1 boot on \
    mkpart primary ext4 "${a}MiB" "${b}MiB" \
    mkpart primary ext4 "${b}MiB" "${d}MiB" \
    mkpart primary ext4 "${d}MiB" 100% 2> >(grep -v udevadm >&2)
dd if="$work/boot.vfat" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/rootfs.ext4" of="$img" bs=1M seek="$a" conv=notrunc,sparse status=none
dd if="$work/rootfs.ext4" of="$img" bs=1M seek="$b" conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$img" bs=1M seek="$d" conv=notrunc,sparse status=none

tmp_out="$work/out"
mkdir -p "$tmp_out"
mv "$img" "$tmp_out/image.sdimg"
{
    echo "arch=$arch key=$key kernel=$kver"
    echo "partitions: boot ${boot_mib} MiB vfat, rootfs A ${rootfs_mib} MiB ext4, rootfs B ${rootfs_mib} MiB ext4, data ${data_mib} MiB ext4"
    for f in "${deb_files[@]}"; do echo "deb $(basename "$f")"; done
    echo "initrd_modules=$initrd_modules"
    (cd "$root" && find . -type f -printf 'file %s %p\n' | LC_ALL=C sort -k3)
    echo "rootfs_used_bytes=$(du -sb "$root" | cut -f1)"
} >"$tmp_out/manifest.txt"
mkdir -p "$cache/sdimg"
{ ls -dt "$cache/sdimg/$arch-"*/ 2>/dev/null || true; } | tail -n +2 | while read -r old; do rm -rf "$old"; done
rm -rf "$out"
mv "$tmp_out" "$out"
log "built $out ($(du -h --apparent-size "$out/image.sdimg" | cut -f1), rootfs $(($(du -sb "$root" | cut -f1) / 1024 / 1024)) MiB used)"
echo "$out"
