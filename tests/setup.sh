#!/usr/bin/env bash
# Installs what the tests and the demo need on a Debian 12 machine (root): apt packages and rustup parts.
# Idempotent and quick when everything is already there.
#
# Prerequisites, checked first: Debian 12 (apt), root when a package is missing, and Rust through
# rustup with a stable toolchain at least the workspace's rust-version (Debian's own rustc is older).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

fail() { printf 'setup: %s\n' "$*" >&2; exit 1; }
msrv="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$here/../Cargo.toml")"
rust_help="install Rust with rustup and a stable toolchain >= $msrv (https://rustup.rs):
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . \"\$HOME/.cargo/env\"
then run this again (Debian's rustc and cargo packages are too old)"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    fail "this script installs Debian 12 packages with apt-get; it found no apt-get/dpkg-query"
command -v rustup >/dev/null || fail "rustup is missing: $rust_help"
command -v cargo >/dev/null || fail "cargo is missing: $rust_help"
rustc_version="$(rustc --version 2>/dev/null | awk '{print $2}')"
if [ -z "$rustc_version" ] ||
    [ "$(printf '%s\n%s\n' "$msrv" "${rustc_version%%-*}" | sort -V | head -n1)" != "$msrv" ]; then
    fail "rustc ${rustc_version:-(none)} ($(command -v rustc || echo 'not found')) is older than $msrv, the \
workspace's rust-version: run 'rustup default stable && rustup update stable', and make sure ~/.cargo/bin \
comes first in PATH (Debian's rustc package is 1.63)"
fi
# libdbus-1-dev:arm64 (apt-packages.txt) for the Yocto layer's aarch64 cross build.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" = 0 ] || fail "Debian's arm64 architecture is not enabled; run this as root (dpkg --add-architecture arm64)"
    dpkg --add-architecture arm64
fi

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/apt-packages.txt")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || fail "missing Debian packages: ${missing[*]}; run this as root (it runs apt-get install)"
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Daemon packages (mender-client, mender-connect) must not start services on the test machine.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
fi

# bitbake switches to en_US.UTF-8 (oe-core's sanity check fails without it).
if ! locale -a 2>/dev/null | grep -qix 'en_US.utf-\?8'; then
    sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
    locale-gen >/dev/null
fi
# bitbake refuses to run as root; the layer's checks run it as this unprivileged system user.
id mcr-bitbake >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mcr-bitbake

for t in thumbv7em-none-eabihf x86_64-unknown-linux-musl aarch64-unknown-linux-gnu; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || rustup component add clippy
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

# The Debian trixie root with the current Mender peers (C++ client 5.0.0, Go mender-connect 2.3.0)
# for the interop tests: built once (about 1.5-2.5 min, 170 MB), cached under tests/cache/.
bash "$here/trixie-root.sh" >/dev/null
