#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine (root): apt packages and rustup parts.
# Idempotent and quick when everything is already there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# libdbus-1-dev:arm64 (apt-packages.txt) for the Yocto layer's aarch64 cross build.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
fi

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/apt-packages.txt")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
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
