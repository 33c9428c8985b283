#!/usr/bin/env bash
# Runs the demo as the README's first command does (`cargo run`, with the two disks qemu-run.sh
# makes and checks on the host), and checks that every phase showed its picture and counters,
# that the lent pool grew by reclaim and shrank again, and that the host check passed.
# Usage: scripts/demo-check.sh [BOOTARG...]
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
QEMU_RUN_OPTS="--timeout 300" cargo run -q -- "$@" >"$log" 2>&1
status=$?
fail=0
expect() {
    if ! grep -Eq "$1" "$log"; then
        echo "demo-check: missing: $2" >&2
        fail=1
    fi
}
for phase in "boot" "memory pressure" "I/O burst from interrupt handlers" "idle"; do
    expect "^==== demo: after $phase ====" "the picture after phase '$phase'"
done
expect "^==== demo: verification ====" "the verification"
expect "^RAM: \[" "the RAM picture"
expect "^  default  0x" "the pool table"
expect "^page cache: [1-9][0-9]* blocks of disk0 \([1-9][0-9]* pages in lent" "page-cache pages in lent pageblocks"
expect "reclaimed [1-9][0-9]* pageblocks" "the pool growing by reclaiming lent pageblocks"
expect "lent again [1-9][0-9]* pageblocks" "the pool lending its spare pageblocks again"
expect "every written byte read back as written" "the read-back verification"
expect "^qemu-run.sh: host check: disk0 image" "the host's check of disk0's image"
expect "^qemu-run.sh: host check: disk1 image" "the host's check of disk1's image"
grep -E "^(page cache|disk[01]: streamed|burst|default pool|verification|disk[01] bytes|qemu-run.sh: host)" "$log"
if ((status != 0 || fail)); then
    echo "demo-check: FAILED (exit status $status); the log's end:" >&2
    tail -40 "$log" >&2
    exit 1
fi
echo "demo-check: demo passed (exit 0, every phase shown, images checked on the host)"
