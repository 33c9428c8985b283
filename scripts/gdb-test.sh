#!/usr/bin/env bash
# The GDB test: boots the demo kernel with --gdb on two fresh disks (demo=read-verify
# dma_debug=on), attaches gdb-multiarch in batch mode and runs gdb/test_gdb.py: break, step,
# backtrace, then the kernel views (buddyinfo, pageblocks, swiotlb, dma-mappings) checked against
# the kernel's counters at stops in the virtio-blk interrupt handler. Fails if any of that does
# not happen.
#   disk0 (first --disk, DMA buffer above the window: bounces through the default pool, as
#   blk_inflight_kib=0 gives it no per-device pool): 4 MiB
#   disk1 (second --disk, behind the restricted DMA pool): 1 MiB of zeros
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
cargo build -q -p kernel --bin kernel
elf=${CARGO_TARGET_DIR:-target}/aarch64-unknown-none/debug/kernel
port=$((20000 + RANDOM % 20000))
work=$(mktemp -d "${TMPDIR:-/tmp}/gdb-test.XXXXXX")
log=$work/qemu.log
qemu-img create -q -f raw "$work/disk0.img" 4M
python3 -c 'import sys; open(sys.argv[1], "r+b").write(bytes(range(256)) * 16384)' "$work/disk0.img"
qemu-img create -q -f raw "$work/disk1.img" 1M
./qemu-run.sh --gdb --gdb-port "$port" --timeout 120 --disk "$work/disk0.img" --disk "$work/disk1.img" \
    "$elf" demo=read-verify dma_debug=on blk_inflight_kib=0 >"$log" 2>&1 &
qemu_pid=$!
trap 'kill $qemu_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    grep -q "waits for a debugger" "$log" && break
    sleep 0.1
done
sleep 0.5
status=0
out=$(timeout 120 gdb-multiarch -q -batch -nx -x gdb/kernel.gdb -ex "target remote :$port" -x gdb/test_gdb.py "$elf" 2>&1) || status=$?
echo "$out" | grep -E "^gdb( test|:)"
# Trust the summary line as well as the exit status: gdb can exit 0 when a script dies early.
grep -Eq "^gdb: [1-9][0-9]* passed, 0 failed$" <<<"$out" || status=${status/#0/1}
if ((status != 0)); then
    echo "$out" | tail -60 >&2
    echo "gdb-test: FAILED (gdb exit status $status); QEMU said:" >&2
    cat "$log" >&2
fi
exit "$status"
