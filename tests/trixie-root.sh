#!/usr/bin/env bash
# Builds (once) a minimal Debian trixie root holding the current Mender peers the interop tests run:
#   - mender-client 5.0.0-1 from experimental (the C++ client: mender-auth, mender-update,
#     mender-authd.service, mender-updated.service). It needs boost 1.83, which trixie has and sid
#     no longer does, hence a trixie root and not a sid one.
#   - mender-connect 2.3.0 from unstable (the Go agent), with trixie's libglib2.0-0t64 pinned (sid's
#     glib would drag in a newer libc).
# In the root /var/lib/mender is a symlink to /data/mender (the Mender layout). Tests run the peers
# in it with chroot (same network namespace as the host) in a private mount namespace that
# bind-mounts /proc, /sys, /dev and the test's directories (tests/interop/src/trixie.rs).
#
# Cached under tests/cache/trixie-root/ (gitignored) as root-<key>/, where <key> hashes this
# script: reruns reuse it and finish at once; an edit of this script builds a new root (the old one
# is removed). Prints the root's path on stdout. Needs root and network access to deb.debian.org.
#
# Environment: TRIXIE_ROOT_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/cache/trixie-root"
mirror="${TRIXIE_ROOT_MIRROR:-http://deb.debian.org/debian}"
key="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
root="$cache/root-$key"

mkdir -p "$cache"
exec 9>"$cache/build.lock"
# Parallel tests share one root; the second one waits here and then finds it built.
flock 9
if [ -e "$root/.interop-root-complete" ]; then
    echo "$root"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "trixie-root: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }

start=$(date +%s)
# Roots of older versions of this script, and a half-built one of this version.
for old in "$cache"/root-*; do
    [ -e "$old" ] || continue
    echo "trixie-root: removing $old" >&2
    rm -rf --one-file-system "$old"
done
tmp="$cache/building"
rm -rf --one-file-system "$tmp"

echo "trixie-root: debootstrap trixie from $mirror" >&2
debootstrap --variant=minbase --include=ca-certificates trixie "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -30 "$cache/debootstrap.log" >&2; exit 1; }

cat >"$tmp/etc/apt/sources.list" <<EOF
deb $mirror trixie main
deb $mirror unstable main
deb $mirror experimental main
EOF
# The archive's Release files can be past their Valid-Until date on a machine whose clock is ahead.
echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99interop-valid-until"
echo 'APT::Install-Recommends "false";' >"$tmp/etc/apt/apt.conf.d/99interop-no-recommends"
cat >"$tmp/etc/apt/preferences.d/interop" <<'EOF'
Package: *
Pin: release n=trixie
Pin-Priority: 900

Package: *
Pin: release a=unstable
Pin-Priority: 100

Package: *
Pin: release a=experimental
Pin-Priority: 1

Package: libglib2.0-0t64
Pin: release n=trixie
Pin-Priority: 1001
EOF
# No service manager runs in the root; packages must not try to start their daemons.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod +x "$tmp/usr/sbin/policy-rc.d"
# The Mender layout: state in /data/mender, reached through /var/lib/mender.
mkdir -p "$tmp/data/mender"
rm -rf "$tmp/var/lib/mender"
ln -s /data/mender "$tmp/var/lib/mender"

in_root() {
    # A private mount namespace: the binds vanish with the command, nothing leaks to the host.
    unshare --mount --propagation private -- /bin/sh -euc '
        r=$1; shift
        mount --bind /proc "$r/proc"; mount --rbind /sys "$r/sys"; mount --rbind /dev "$r/dev"
        exec chroot "$r" "$@"' sh "$tmp" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
}
echo "trixie-root: installing mender-client/experimental and mender-connect/unstable" >&2
{
    in_root apt-get update
    in_root apt-get install -y mender-client/experimental mender-connect/unstable libglib2.0-0t64/trixie bash procps
    in_root apt-get clean
} >"$cache/apt.log" 2>&1 || { tail -40 "$cache/apt.log" >&2; exit 1; }
rm -rf "$tmp/var/lib/apt/lists"/*_dists_* "$tmp/var/cache/apt"/*.bin

for program in mender-auth mender-update mender-connect; do
    [ -x "$tmp/usr/bin/$program" ] || { echo "trixie-root: /usr/bin/$program missing after install" >&2; exit 1; }
done
in_root dpkg-query -W mender-client mender-connect libglib2.0-0t64 libc6 >"$tmp/.interop-versions"
date -u +%FT%TZ >"$tmp/.interop-root-complete"
mv "$tmp" "$root"
echo "trixie-root: built in $(( $(date +%s) - start )) s, $(du -sh --one-file-system "$root" | cut -f1)" >&2
sed 's/^/trixie-root:   /' "$root/.interop-versions" >&2
echo "$root"
