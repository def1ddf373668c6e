#!/usr/bin/env bash
# All checks of the Yocto layer and the mender-artifact flow; run by tests/run-all.sh.
#   1. crates.inc is what gen-crates-inc makes from Cargo.lock (stale = failure, with the fix command)
#   2. check-layer: LAYERSERIES_COMPAT, fixed SRCREV, LIC_FILES_CHKSUM md5s, PACKAGECONFIG options vs
#      the agent's cargo features, the unit, meta-mender's variable defaults
#   3. oelint-adv (pinned, installed from PyPI into a venv) reports nothing above info, for every
#      release series the layer claims
#   4. test-inject: mender-connect-rs-inject on an ext4 image, a Mender Artifact, a disk image, and
#      the refusal cases
#   5. test-sdimg: a Mender .sdimg with the real Mender client (qemu/build-sdimg.sh), the agent injected,
#      a device key installed with mender-artifact, preauthorized on the mock server; booted under
#      QEMU: accepted without a manual accept, the agent connected, a remote shell, a clean power-off
#   6. bitbake-parse with a real bitbake and oe-core, for each pair of the shared tarballs
#      (../shared/yocto from the repository root, or MCR_YOCTO_TARBALLS; or the one pair
#      MCR_OE_CORE_DIR/MCR_BITBAKE_DIR): parse offline and check resolved variables, bitbake -n,
#      bitbake -c unpack (crates downloaded and sha256-verified). Skipped without tarballs, unless
#      MCR_REQUIRE_BITBAKE=1 (run-all.sh), then failed.
#   7. cross-build: from the crates bitbake unpacked, the recipe's cargo build for aarch64 as
#      oe-core's cargo classes run it, with Debian's cross gcc and arm64 libdbus; run under qemu-aarch64
# Installs what it needs: apt packages (as root, if missing) and oelint-adv.
# Prints one line per check and a summary; exits 1 if any check failed.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
layer="$(cd "$here/.." && pwd)"
OELINT_VERSION=9.11.2
OELINT_VENV="${MCR_OELINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mender-connect-rs/oelint-adv-$OELINT_VERSION}"

results=()
pass=0 fail=0 skip=0
record() { # <pass|fail|skip> <name> <seconds>
    results+=("$(printf '%-5s %-14s %4ss' "$1" "$2" "$3")")
    case "$1" in pass) pass=$((pass + 1)) ;; fail) fail=$((fail + 1)) ;; skip) skip=$((skip + 1)) ;; esac
}
run_check() { # <name> <command...>
    local name="$1"; shift
    local start=$SECONDS
    printf '\n=== %s\n' "$name"
    if "$@"; then record pass "$name" $((SECONDS - start)); else record fail "$name" $((SECONDS - start)); fi
}

# --- what the checks need ---------------------------------------------------------------------------
need_apt=()
for pair in mender-artifact:mender-artifact debugfs:e2fsprogs mkfs.ext4:e2fsprogs parted:parted file:file \
    openssl:openssl mkfs.vfat:dosfstools mcopy:mtools qemu-system-x86_64:qemu-system-x86 mender-cli:mender-cli \
    curl:curl; do
    command -v "${pair%%:*}" >/dev/null || need_apt+=("${pair##*:}")
done
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then need_apt+=(python3-venv); fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "check.sh: apt-get install ${need_apt[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null; } ||
            echo "check.sh: apt-get install failed; checks that need ${need_apt[*]} will fail"
    else
        echo "check.sh: missing ${need_apt[*]} (install them with apt-get)"
    fi
fi
python3 -c 'import tomllib' 2>/dev/null || echo "check.sh: python3 >= 3.11 is needed (tomllib)"

oelint_install() {
    [ -x "$OELINT_VENV/bin/oelint-adv" ] &&
        [ "$("$OELINT_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("oelint-adv"))' 2>/dev/null)" = "$OELINT_VERSION" ] &&
        return 0
    rm -rf "$OELINT_VENV"
    python3 -m venv "$OELINT_VENV" && "$OELINT_VENV/bin/pip" install -q "oelint-adv==$OELINT_VERSION"
}

oelint() {
    oelint_install || { echo "FAIL: could not install oelint-adv $OELINT_VERSION"; return 1; }
    local releases rc=0 out
    releases="$(sed -n 's/^LAYERSERIES_COMPAT_mender-connect-rs *= *"\(.*\)"/\1/p' "$layer/conf/layer.conf")"
    [ -n "$releases" ] || { echo "FAIL: no LAYERSERIES_COMPAT in conf/layer.conf"; return 1; }
    mapfile -t files < <(cd "$layer" && find recipes-* conf -name '*.bb' -o -name '*.bbappend' -o -name '*.conf' | sort)
    for rel in $releases; do
        # homepageping fetches HOMEPAGE over the network, which the checks do not have.
        out="$(cd "$layer" && "$OELINT_VENV/bin/oelint-adv" --quiet --mode all --relpaths --release "$rel" \
            --suppress oelint.vars.homepageping "${files[@]}" 2>&1)"
        local above; above="$(grep -E ':(warning|error):' <<<"$out" || true)"
        local infos; infos="$(grep -c ':info:' <<<"$out" || true)"
        if [ -n "$above" ]; then
            echo "FAIL: oelint-adv --release $rel:"; echo "$above"; rc=1
        else
            echo "ok: oelint-adv $OELINT_VERSION --release $rel on ${#files[@]} files: no warning or error ($infos info)"
        fi
    done
    return $rc
}

# A real bitbake: every oe-core/bitbake pair of the shared tarballs (or the one pair named by
# MCR_OE_CORE_DIR/MCR_BITBAKE_DIR), unpacked once into the cache directory.
yocto_cache="${MCR_YOCTO_CACHE:-$layer/../tests/cache/yocto}"
yocto_tarballs="${MCR_YOCTO_TARBALLS:-$layer/../../shared/yocto}"
bitbake_pairs=()
bitbake_setup() {
    if [ -n "${MCR_OE_CORE_DIR-}" ] && [ -n "${MCR_BITBAKE_DIR-}" ]; then
        bitbake_pairs=("$MCR_OE_CORE_DIR:$MCR_BITBAKE_DIR")
        return 0
    fi
    if [ ! -f "$yocto_tarballs/SHA256SUMS" ]; then
        echo "no oe-core/bitbake tarballs in $yocto_tarballs (set MCR_YOCTO_TARBALLS, or MCR_OE_CORE_DIR and MCR_BITBAKE_DIR)"
        [ "${MCR_REQUIRE_BITBAKE-0}" = 1 ] && return 1
        return 2
    fi
    mkdir -p "$yocto_cache"
    (cd "$yocto_tarballs" && sha256sum --quiet -c SHA256SUMS) || { echo "FAIL: $yocto_tarballs/SHA256SUMS"; return 1; }
    local sum file name
    while read -r sum file; do
        name="${file%.tar.xz}"
        if [ "$(cat "$yocto_cache/$name.sha256" 2>/dev/null)" != "$sum" ]; then
            echo "unpacking $file into $yocto_cache"
            rm -rf "${yocto_cache:?}/$name" "$yocto_cache/$name.sha256"
            tar -xJf "$yocto_tarballs/$file" -C "$yocto_cache" || return 1
            [ -d "$yocto_cache/$name" ] || { echo "FAIL: $file did not unpack into $name/"; return 1; }
            echo "$sum" >"$yocto_cache/$name.sha256"
        fi
    done <"$yocto_tarballs/SHA256SUMS"
    # oe-core series and the bitbake branch it is released with.
    bitbake_pairs=("$yocto_cache/openembedded-core-scarthgap:$yocto_cache/bitbake-2.8"
        "$yocto_cache/openembedded-core-wrynose:$yocto_cache/bitbake-2.18")
}

bitbake_check() { # <oe-core dir> <bitbake dir>
    MCR_BITBAKE_CACHE="$yocto_cache/bitbake" bash "$here/bitbake-parse" "$1" "$2" --dry-run --unpack
}

cross_build() {
    local v
    v="$(cat "$yocto_cache"/bitbake/*/vendor-dir 2>/dev/null | head -n1)"
    [ -n "$v" ] || { echo "FAIL: no vendor directory from bitbake -c unpack"; return 1; }
    MCR_CROSS_CACHE="$yocto_cache/cross" bash "$here/cross-build" "$v"
}

run_check crates.inc python3 "$here/gen-crates-inc" --check
run_check check-layer python3 "$here/check-layer"
run_check oelint-adv oelint
run_check test-inject bash "$here/test-inject"
run_check test-sdimg bash "$here/test-sdimg"
printf '\n=== bitbake setup\n'
start=$SECONDS
bitbake_setup
case $? in
    0)
        rm -f "$yocto_cache"/bitbake/*/vendor-dir
        for pair in "${bitbake_pairs[@]}"; do
            run_check "bitbake $(basename "${pair%%:*}" | sed 's/^openembedded-core-//')" bitbake_check "${pair%%:*}" "${pair#*:}"
        done
        run_check cross-build cross_build
        ;;
    2) record skip bitbake 0; record skip cross-build 0 ;;
    *) record fail bitbake-setup $((SECONDS - start)) ;;
esac

printf '\n=== meta-mender-connect-rs checks\n'
printf '%s\n' "${results[@]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
