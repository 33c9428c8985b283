#!/usr/bin/env bash
# The GDB test: boots the demo kernel with --gdb, attaches gdb-multiarch in batch mode and runs
# gdb/test_gdb.py (break, step, backtrace). Fails if any of that does not happen.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
cargo build -q -p kernel --bin kernel
elf=target/aarch64-unknown-none/debug/kernel
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
./qemu-run.sh --gdb --gdb-port "$port" --timeout 120 "$elf" >"$log" 2>&1 &
qemu_pid=$!
trap 'kill $qemu_pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
    grep -q "waits for a debugger" "$log" && break
    sleep 0.1
done
sleep 0.5
status=0
out=$(timeout 120 gdb-multiarch -q -batch -nx -x gdb/kernel.gdb -ex "target remote :$port" -x gdb/test_gdb.py "$elf" 2>&1) || status=$?
echo "$out" | grep -E "^gdb( test|:)"
# Trust the summary line as well as the exit status: gdb can exit 0 when a script dies early.
grep -Eq "^gdb: [3-9][0-9]* passed, 0 failed$" <<<"$out" || status=${status/#0/1}
if ((status != 0)); then
    echo "$out" | tail -30 >&2
    echo "gdb-test: FAILED (gdb exit status $status); QEMU said:" >&2
    cat "$log" >&2
fi
exit $status
