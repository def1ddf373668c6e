#!/usr/bin/env bash
# Demo: boots the emulated device (x86_64, TCG) with our agent, connects it to a mock Mender Server on
# this machine's 127.0.0.1, and leaves you in a live remote shell on the device through the server
# (Debian's real `mender-cli terminal`). Leave the shell with `exit` (or Ctrl-D); everything started
# here is then stopped (the guest powers off cleanly) and its files removed. See usage() below.
set -euo pipefail

usage() {
    cat <<'EOF_USAGE'
Usage: bash qemu/demo.sh [--no-setup] [--debug] [--keep-logs]

Boots an emulated device (x86_64 under QEMU) running this repository's mender-connect, connects it to
a mock Mender Server on 127.0.0.1 and opens a remote shell on the device with Debian's mender-cli.
Leave that shell with 'exit': the device powers off and everything the demo started is stopped.

Needs: Debian 12, Rust through rustup (stable >= 1.85), and root for the first run (apt packages).

Options:
  --no-setup   skip tests/setup.sh (apt packages and rustup targets, needs root); for later runs
  --debug      run the agent on the device with --debug
  --keep-logs  keep the temporary directory (console log, server log) after the demo
  -h, --help   this text
EOF_USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
setup=1 debug_args=() keep=0
while (($#)); do
    case "$1" in
        --no-setup) setup=0; shift ;;
        --debug) debug_args=(--debug); shift ;;
        --keep-logs) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -t 2 ]; then
    say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }
else
    say() { printf 'demo: %s\n' "$*" >&2; }
fi
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

user=admin@example.com
password=mysecretpassword
identity='{"mac":"52:54:00:12:34:56"}'

# mender-cli terminal needs a terminal to switch to raw mode; through a pipe the shell is unusable.
if [ ! -t 0 ] || [ ! -t 1 ]; then
    say "warning: stdin or stdout is not a terminal: the remote shell at the end needs one (mender-cli terminal switches it to raw mode)"
fi

if [ "$setup" = 1 ]; then
    say "installing what the demo needs (tests/setup.sh: qemu, musl-tools, busybox-static, mender-cli, ...)"
    bash "$repo/tests/setup.sh" || die "tests/setup.sh failed (see its message above)"
fi
command -v cargo >/dev/null ||
    die "cargo missing: install Rust with rustup (https://rustup.rs), a stable toolchain >= 1.85; tests/setup.sh does not install it"
for tool in qemu-system-x86_64 mender-cli curl setsid musl-gcc; do
    command -v "$tool" >/dev/null ||
        die "$tool missing: run 'bash tests/setup.sh' as root once (or this demo without --no-setup)"
done

say "building the mock server"
(cd "$repo" && cargo build -q -p mender-mock-server) || die "cargo build -p mender-mock-server failed"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
mock_bin="$target_dir/debug/mender-mock-server"
[ -x "$mock_bin" ] || die "no $mock_bin"

say "building the device image (cached in qemu/cache; the first build takes a few minutes)"
image="$(bash "$here/build-image.sh" --arch x86_64 | tail -n1)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mender-demo.XXXXXX")"
mock_pid="" qemu_pid=""
cleanup() {
    trap - EXIT INT TERM HUP
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        say "powering the device off"
        kill -TERM "$qemu_pid" 2>/dev/null || true
        for _ in $(seq 1 80); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$qemu_pid" 2>/dev/null || true
    fi
    if [ -n "$mock_pid" ]; then
        kill -TERM "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
    # run.sh exits with QEMU's status: 0 after the guest powered itself off.
    if [ -n "$qemu_pid" ]; then
        local rc=0
        wait "$qemu_pid" 2>/dev/null || rc=$?
        if [ "$rc" = 0 ] && grep -q 'reboot: Power down' "$tmp/console.log" 2>/dev/null; then
            local agent
            agent="$(grep -o 'mender-connect stopped, exit status [0-9a-z]*' "$tmp/console.log" | tail -n1)"
            say "the device powered off cleanly (${agent:-agent status not logged})"
        else
            say "the device did not power off cleanly (run.sh exit status $rc); console log: $tmp/console.log"
            keep=1
        fi
    fi
    if [ "$keep" = 1 ]; then say "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The mock prints its URL as the first stdout line; it creates the device and writes its token.
setsid "$mock_bin" --listen 127.0.0.1:0 --user "$user:$password" --state "$tmp/mock-state.json" \
    --device "$identity" --device-token-out "$tmp/device-token" >"$tmp/mock.out" 2>"$tmp/mock.log" &
mock_pid=$!
url=""
for _ in $(seq 1 120); do
    url="$(head -n1 "$tmp/mock.out" 2>/dev/null || true)"
    [ -n "$url" ] && [ -s "$tmp/device-token" ] && [ -s "$tmp/device-token.id" ] && break
    kill -0 "$mock_pid" 2>/dev/null || { cat "$tmp/mock.log" >&2; die "the mock server exited"; }
    sleep 0.5
done
[ -n "$url" ] || die "the mock server printed no URL"
port="${url##*:}"
device_id="$(cat "$tmp/device-token.id")"
say "mock Mender Server at $url (user $user / $password), device $device_id"

say "booting the device (console log: $tmp/console.log)"
setsid bash "$here/run.sh" --image "$image" --server-url "http://10.0.2.2:$port" \
    --token-file "$tmp/device-token" --log "$tmp/console.log" --timeout 86400 "${debug_args[@]}" \
    2>"$tmp/run.log" &
qemu_pid=$!
started=$SECONDS

export HOME="$tmp/home"
mkdir -p "$HOME"
cd "$HOME"
# mender-cli reads its server and login from ~/.mender-clirc (and says "Configuration file not
# found" on every call without one).
printf '{"server": "%s", "username": "%s", "password": "%s"}\n' "$url" "$user" "$password" >"$HOME/.mender-clirc"
mender-cli login >/dev/null || die "mender-cli login failed"
user_token="$(cat "$HOME/.cache/mender/authtoken")"

say "waiting for the device to connect"
status=""
for _ in $(seq 1 600); do
    kill -0 "$qemu_pid" 2>/dev/null || { tail -n 40 "$tmp/console.log" >&2; die "QEMU exited"; }
    status="$(curl -fsS -H "Authorization: Bearer $user_token" \
        "$url/api/management/v1/deviceconnect/devices/$device_id" 2>/dev/null || true)"
    case "$status" in *'"connected"'*) break ;; esac
    sleep 1
done
case "$status" in
    *'"connected"'*) ;;
    *) tail -n 40 "$tmp/console.log" >&2; die "the device did not connect" ;;
esac
say "device connected $((SECONDS - started)) s after boot"

agent_bin="${QEMU_CARGO_TARGET_DIR:-$here/cache/target}/x86_64-unknown-linux-musl/release/mender-connect"
agent_size="$(du -k "$agent_bin" 2>/dev/null | cut -f1) KiB"
if [ "$keep" = 1 ]; then kept="kept after the demo (--keep-logs)"; else kept="removed at the end; --keep-logs keeps it"; fi
b=$'\033[1m' n=$'\033[0m'
[ -t 2 ] || b="" n=""
cat >&2 <<EOF

  ${b}A tour, from a second terminal on this machine while the demo runs${n} (mender-cli's server and
  login for this demo are in \$HOME/.mender-clirc; its port-forward needs --server all the same):

    export HOME=$HOME DEVICE=$device_id SERVER=$url
    mender-cli terminal \$DEVICE           # another shell (up to 4 at once: Sessions.MaxPerUser)
    echo hello > /tmp/hello.txt
    mender-cli cp /tmp/hello.txt \$DEVICE:/tmp/hello.txt   # a file to the device
    mender-cli cp \$DEVICE:/etc/hostname ./hostname        # and one from it
    mender-cli port-forward --server \$SERVER \$DEVICE 8080:8080 &   # 127.0.0.1:8080 here -> busybox httpd on the device
    curl http://127.0.0.1:8080/; kill %1

  ${b}In the shell below, on the device${n}:

    mender-connect status                # the agent's connection, sessions and counters
    mender-connect sessions              # the open sessions
    cat /tmp/hello.txt                   # after the copy above
    cat /etc/mender/mender-connect.conf  # the agent's configuration

  ${b}The agent${n} on the device is $agent_bin
  ($agent_size, static musl: scripts/build-static.sh x86_64-unknown-linux-musl mender-connect vendored).
  To put it on an existing device, copy it to /usr/bin/mender-connect there, or write it into an image
  or Artifact with meta-mender-connect-rs/scripts/mender-connect-rs-inject (meta-mender-connect-rs/README.md).

  Device console log: $tmp/console.log ($kept)
  Leave the remote shell with 'exit'; the device then powers off.

EOF
mender-cli terminal "$device_id" || say "mender-cli terminal exited with status $?"
