#!/usr/bin/env bash
# Boots an image from qemu/build-image.sh under QEMU (TCG, no KVM needed) with user-mode networking.
#
# Usage: qemu/run.sh [options]
#   --arch x86_64|aarch64   guest architecture (default x86_64)
#   --image DIR             image directory (default: build or reuse the cached one)
#   --server-url URL        server URL handed to the agent, e.g. http://10.0.2.2:8080 (the guest
#                           reaches the host's 127.0.0.1 through the slirp gateway 10.0.2.2)
#   --token-file FILE       device JWT handed to the agent by the test auth service
#   --log FILE              serial console log (default: <temp dir>/console.log, removed at exit)
#   --timeout SECONDS       hard limit for the whole run (default 900); then the guest is killed
#   --mem MB                guest memory (default 256)
#   --append ARGS           extra kernel command line
#   --disk FILE             a raw disk image as the guest's virtio disk /dev/vda (qemu/build-sdimg.sh)
#   --mac MAC               the guest's network MAC address (default: QEMU's 52:54:00:12:34:56)
#   --interactive           serial console on this terminal (Ctrl-A X quits); default when stdin
#                           is a terminal and no --log is given
#   --debug                 run the agent with --debug
#
# Stopping: SIGTERM/SIGINT/SIGHUP to this script presses the power button, every 5 s (the guest shuts down
# cleanly through acpid -> poweroff) and kills QEMU if it is not gone within 30 s. The script also
# stops when its parent process dies. The exit status is QEMU's (0 after a guest poweroff), 124 on
# timeout.
#
# No host port forwarding is set up: the guest only dials out, to 10.0.2.2 = host loopback.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
arch=x86_64 image="" server_url="" token_file="" log_file="" timeout=900 mem=256 append=""
interactive=auto debug=0 grace=30 disk="" mac=""
while (($#)); do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --image) image="$2"; shift 2 ;;
        --server-url) server_url="$2"; shift 2 ;;
        --token-file) token_file="$2"; shift 2 ;;
        --log) log_file="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        --mem) mem="$2"; shift 2 ;;
        --append) append="$2"; shift 2 ;;
        --disk) disk="$2"; shift 2 ;;
        --mac) mac="$2"; shift 2 ;;
        --interactive) interactive=1; shift ;;
        --debug) debug=1; shift ;;
        -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "run: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ "$interactive" = auto ]; then
    if [ -t 0 ] && [ -z "$log_file" ]; then interactive=1; else interactive=0; fi
fi
log() { printf 'run: %s\n' "$*" >&2; }

case "$arch" in
    x86_64)
        qemu=(qemu-system-x86_64 -M pc -cpu max)
        console=ttyS0
        ;;
    aarch64|arm64)
        arch=aarch64
        qemu=(qemu-system-aarch64 -M virt -cpu cortex-a57)
        console=ttyAMA0
        ;;
    *) echo "run: unsupported --arch $arch" >&2; exit 2 ;;
esac
command -v "${qemu[0]}" >/dev/null || { echo "run: ${qemu[0]} not installed" >&2; exit 1; }

[ -n "$image" ] || image="$("$here/build-image.sh" --arch "$arch" | tail -n1)"
[ -s "$image/vmlinuz" ] && [ -s "$image/initrd.img" ] || { echo "run: no image in $image" >&2; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/mender-qemu.XXXXXX")"
[ -n "$log_file" ] || log_file="$tmp/console.log"
: >"$log_file"
qemu_pid=""
drain_pid=""
cleanup() {
    [ -n "$drain_pid" ] && kill "$drain_pid" 2>/dev/null || true
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then kill -KILL "$qemu_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

cmdline="console=$console panic=-1 loglevel=4"
if [ -n "$server_url" ]; then
    case "$server_url" in *[[:space:]]*) echo "run: --server-url must not contain spaces" >&2; exit 2 ;; esac
    cmdline+=" mender.server_url=$server_url"
fi
if [ -n "$token_file" ]; then
    token="$(tr -d '[:space:]' <"$token_file")"
    cmdline+=" mender.token=$token"
fi
[ "$debug" = 1 ] && cmdline+=" mender.debug=1"
[ -n "$append" ] && cmdline+=" $append"

mkfifo "$tmp/mon.in" "$tmp/mon.out"
# shellcheck disable=SC2054 # QEMU options are comma-separated lists, not array separators.
args=(
    "${qemu[@]}" -accel tcg -smp 1 -m "$mem" -no-reboot -nographic
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" -append "$cmdline"
    # User-mode networking only; romfile= skips the iPXE boot ROM nobody uses here.
    -netdev user,id=net0,ipv6=off -device "virtio-net-pci,netdev=net0,romfile=${mac:+,mac=$mac}"
    -device virtio-rng-pci
    # Human monitor on a pipe: `system_powerdown` presses the ACPI power button.
    -monitor "pipe:$tmp/mon"
)
if [ -n "$disk" ]; then
    [ -f "$disk" ] || { echo "run: no disk image $disk" >&2; exit 1; }
    case "$disk" in *,*) echo "run: --disk must not contain commas" >&2; exit 2 ;; esac
    args+=(-drive "file=$disk,format=raw,if=virtio")
fi
if [ "$interactive" = 1 ]; then
    args+=(-chardev "stdio,id=con0,mux=on,signal=off,logfile=$log_file" -serial chardev:con0 -mon chardev=con0)
    log "console on this terminal (Ctrl-A X quits, Ctrl-A C toggles the QEMU monitor); log in $log_file"
else
    args+=(-serial "file:$log_file")
fi

if [ "$interactive" = 1 ]; then
    # The user drives (and ends) this run; the timeout does not apply.
    "${args[@]}" && exit 0 || exit $?
fi

"${args[@]}" </dev/null &
qemu_pid=$!
# Read-write opens never block, even if QEMU died before opening its ends of the pipes.
exec 8<>"$tmp/mon.in"
# Drain the monitor's output so its pipe never fills up and blocks QEMU.
cat 0<>"$tmp/mon.out" >/dev/null 2>&1 &
drain_pid=$!
log "qemu pid $qemu_pid, console log $log_file"

powerdown() {
    printf 'system_powerdown\n' >&8 2>/dev/null || true
}
stop_requested=0
on_signal() { stop_requested=1; }
trap on_signal TERM INT HUP

parent=$PPID
deadline=$((SECONDS + timeout))
stop_deadline=""
pressed=0
status=""
while :; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        wait "$qemu_pid" && status=0 || status=$?
        break
    fi
    if [ -z "$stop_deadline" ]; then
        reason=""
        ((stop_requested)) && reason="stop requested"
        kill -0 "$parent" 2>/dev/null || reason="parent process $parent exited"
        ((SECONDS >= deadline)) && reason="timeout after $timeout s"
        if [ -n "$reason" ]; then
            log "$reason: pressing the power button"
            powerdown
            pressed=$SECONDS
            stop_deadline=$((SECONDS + grace))
            [[ "$reason" == timeout* ]] && timed_out=1
        fi
    elif ((SECONDS - pressed >= 5 && SECONDS < stop_deadline)); then
        # A press before the guest's acpid runs is lost; press again.
        powerdown
        pressed=$SECONDS
    elif ((SECONDS >= stop_deadline)); then
        log "guest did not power off within $grace s; killing qemu"
        kill -TERM "$qemu_pid" 2>/dev/null || true
        sleep 1
        kill -KILL "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
        status=137
        break
    fi
    sleep 0.5 &
    wait $! 2>/dev/null || true
done
log "qemu exited with status $status"
[ "${timed_out-0}" = 1 ] && exit 124
exit "$status"
