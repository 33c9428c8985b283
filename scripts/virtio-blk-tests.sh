#!/usr/bin/env bash
# Runs the in-QEMU virtio-blk tests (kernel/tests/virtio_blk.rs) on two fresh disk images, then
# checks on the host what the kernel read and wrote.
#   disk0 (first --disk, virtio_mmio@a003e00): 4 MiB, sector s = the little-endian u64 s, 64 times
#   disk1 (second --disk, virtio_mmio@a003c00, behind the restricted DMA pool): 1 MiB of zeros
# Usage: scripts/virtio-blk-tests.sh [EXTRA_BOOTARGS...]   (e.g. swiotlb_policy=lend)
# Environment: CARGO_TARGET_DIR as for cargo; KEEP_DISKS=1 keeps the images and the log;
#              VIRTIO_BLK_QEMU_OPTS: extra qemu-run.sh options (e.g. "--smp 4").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/virtio-blk-tests.XXXXXX")
if [[ ${KEEP_DISKS:-0} == 1 ]]; then echo "virtio-blk-tests: files kept in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi
disk0=$work/disk0.img disk1=$work/disk1.img disk2=$work/disk2.img disk3=$work/disk3.img log=$work/run.log

qemu-img create -q -f raw "$disk1" 1M
qemu-img create -q -f raw "$disk2" 1M
python3 -c 'import sys; open(sys.argv[1], "wb").write(b"\x5a" * 65536)' "$disk3"
python3 - "$disk0" <<'PY'
import struct, sys
sectors = 8192
with open(sys.argv[1], "wb") as f:
    for s in range(sectors):
        f.write(struct.pack("<Q", s) * 64)
PY
expect_crc=$(python3 -c 'import sys, zlib; print("%08x" % zlib.crc32(open(sys.argv[1], "rb").read()))' "$disk0")

# qemu-run.sh splits QEMU_RUN_OPTS on spaces: one --bootargs per word.
# disk2 is throttled (4 KiB/s) for the timeout test; disk3 is read-only.
opts="--timeout 180 --disk $disk0,serial=dmabounce-disk0 --disk $disk1 --disk $disk2,throttling.bps-total=4096 --disk $disk3,readonly=on --bootargs dma_debug=on"
opts+=" ${VIRTIO_BLK_QEMU_OPTS:-}" # e.g. --smp 4
for arg in "$@"; do opts+=" --bootargs $arg"; done
cd "$here"
set +e
QEMU_RUN_OPTS=$opts \
    cargo test -q -p kernel --test virtio_blk 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
((status == 0)) || { echo "virtio-blk-tests: the test kernel failed (status $status)" >&2; exit "$status"; }

fail=0
check() { if "$@"; then :; else echo "virtio-blk-tests: host check failed: $*" >&2; fail=1; fi; }
check grep -q "^disk0 bytes=4194304 crc32=$expect_crc" "$log"
check grep -q "^disk1 bytes=1048576 crc32=" "$log"
# What the kernel wrote: disk0 sectors 7936..8064 and disk1 sectors 0..512 hold !s as u64s;
# the rest of disk0 is untouched.
python3 - "$disk0" "$disk1" "$disk3" <<'PY' || fail=1
import struct, sys
def sector(path, s):
    with open(path, "rb") as f:
        f.seek(s * 512)
        return f.read(512)
def written(s):
    return struct.pack("<Q", ~s & (2**64 - 1)) * 64
bad = [("disk0", s) for s in range(7936, 8064) if sector(sys.argv[1], s) != written(s)]
bad += [("disk0", s) for s in list(range(0, 7936, 97)) + list(range(8064, 8192)) if sector(sys.argv[1], s) != struct.pack("<Q", s) * 64]
bad += [("disk1", s) for s in range(0, 512) if sector(sys.argv[2], s) != written(s)]
bad += [("disk1", s) for s in range(512, 2048, 31) if sector(sys.argv[2], s) != bytes(512)]
if open(sys.argv[3], "rb").read() != b"\x5a" * 65536:
    bad.append(("disk3", "changed"))
if bad:
    print("virtio-blk-tests: wrong sectors on the host:", bad[:8], "..." if len(bad) > 8 else "", file=sys.stderr)
    sys.exit(1)
PY
((fail == 0)) && echo "virtio-blk-tests: host checks passed (disk0 crc32 $expect_crc, written sectors on both disks)"
exit $fail
