#!/usr/bin/env bash
# Runs the in-QEMU tests of a disk whose interrupt misbehaves (kernel/tests/virtio_blk_storms.rs:
# a silent device completed by the tick's poll, an interrupt storm disabled as "nobody cared")
# on a fresh disk image, then checks the log and what the kernel wrote on the host.
#   disk0 (virtio_mmio@a003e00): 1 MiB, sector s = the little-endian u64 s, 64 times.
# Usage: scripts/virtio-blk-storm-tests.sh [EXTRA_BOOTARGS...]   (noirqdebug: the storm case fails)
# Environment: CARGO_TARGET_DIR as for cargo; KEEP_DISKS=1 keeps the image and the log;
# VIRTIO_BLK_QEMU_OPTS adds qemu-run.sh options ("--gic 3 --el2", "--smp 4", "--mem 128M").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/virtio-blk-storms.XXXXXX")
if [[ ${KEEP_DISKS:-0} == 1 ]]; then echo "virtio-blk-storm-tests: files kept in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi
disk0=$work/disk0.img log=$work/run.log

python3 - "$disk0" <<'PY'
import struct, sys
with open(sys.argv[1], "wb") as f:
    for s in range(2048):
        f.write(struct.pack("<Q", s) * 64)
PY

opts="--timeout 180 --disk $disk0 --bootargs dma_debug=on"
opts+=" ${VIRTIO_BLK_QEMU_OPTS:-}" # e.g. --gic 3 --el2, --smp 4, --mem 128M
for arg in "$@"; do opts+=" --bootargs $arg"; done
cd "$here"
set +e
QEMU_RUN_OPTS=$opts cargo test -q -p kernel --test virtio_blk_storms 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
((status == 0)) || { echo "virtio-blk-storm-tests: the test kernel failed (status $status)" >&2; exit "$status"; }

# Reported once, with its counts (Linux __report_bad_irq).
reports=$(grep -c 'nobody cared ([0-9]* of the last [0-9]* interrupts unhandled' "$log" || true)
[[ $reports == 1 ]] || { echo "virtio-blk-storm-tests: expected one 'nobody cared' report, saw $reports" >&2; exit 1; }

# Sectors 200..208 and 300..308 hold !s as u64s; every other sector is untouched.
python3 - "$disk0" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
def sector(s):
    return data[s * 512:(s + 1) * 512]
written = set(range(200, 208)) | set(range(300, 308))
bad = [s for s in range(2048) if sector(s) != struct.pack("<Q", (~s & (2**64 - 1)) if s in written else s) * 64]
if bad:
    print("virtio-blk-storm-tests: wrong sectors on the host:", bad[:8], file=sys.stderr)
    sys.exit(1)
PY
echo "virtio-blk-storm-tests: host checks passed (one 'nobody cared' report; sectors 200..208 and 300..308 written while polled, the rest untouched)"
