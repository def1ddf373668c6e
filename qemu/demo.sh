#!/usr/bin/env bash
# Demo: boots the emulated device (x86_64, TCG) with our agent, connects it to a mock Mender Server on
# this machine's 127.0.0.1, and leaves you in a live remote shell on the device through the server
# (Debian's real `mender-cli terminal`). Leave the shell with `exit` (or Ctrl-D); everything started
# here is then stopped (the guest powers off cleanly) and its files removed.
#
# Usage (as root, from a fresh Debian 12 clone): bash qemu/demo.sh [--no-setup] [--debug]
#   --no-setup   skip tests/setup.sh (apt packages and rustup targets; needs root)
#   --debug      run the agent in the guest with --debug
#   --keep-logs  keep the temporary directory with the console and server logs
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
setup=1 debug_args=() keep=0
while (($#)); do
    case "$1" in
        --no-setup) setup=0; shift ;;
        --debug) debug_args=(--debug); shift ;;
        --keep-logs) keep=1; shift ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "demo: unknown argument: $1" >&2; exit 2 ;;
    esac
done
say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

user=admin@example.com
password=mysecretpassword
identity='{"mac":"52:54:00:12:34:56"}'

if [ "$setup" = 1 ]; then
    say "installing what the demo needs (tests/setup.sh: qemu, musl-tools, busybox-static, mender-cli, ...)"
    bash "$repo/tests/setup.sh"
fi
for tool in qemu-system-x86_64 mender-cli curl cargo setsid; do
    command -v "$tool" >/dev/null || die "$tool missing (run without --no-setup, as root)"
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
mender-cli login --server "$url" --username "$user" --password "$password" >/dev/null ||
    die "mender-cli login failed"
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

cat >&2 <<EOF

  Another shell on the device, from a second terminal on this machine (while this demo runs):

    HOME=$HOME mender-cli terminal --server $url $device_id

  or with a fresh login:

    mender-cli login --server $url --username $user --password $password
    mender-cli terminal --server $url $device_id

  Guest console log: $tmp/console.log   (run with --keep-logs to keep it)
  Leave the remote shell with 'exit'; the device then powers off.

EOF
mender-cli terminal --server "$url" "$device_id" || say "mender-cli terminal exited with status $?"
