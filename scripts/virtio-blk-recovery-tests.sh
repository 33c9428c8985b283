#!/usr/bin/env bash
# Runs the in-QEMU virtio-blk recovery tests (kernel/tests/virtio_blk_recovery.rs) on a fresh,
# throttled disk image, then checks on the host what the kernel wrote after the resets.
#   disk0 (virtio_mmio@a003e00): 1 MiB, sector s = the little-endian u64 s, 64 times;
#   QEMU throttles it to 4 KiB/s, so a request behind a large one is held past its deadline.
# Usage: scripts/virtio-blk-recovery-tests.sh [EXTRA_BOOTARGS...]
# Environment: CARGO_TARGET_DIR as for cargo; KEEP_DISKS=1 keeps the image and the log;
# VIRTIO_BLK_QEMU_OPTS adds qemu-run.sh options (e.g. "--mem 128M").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/virtio-blk-recovery.XXXXXX")
if [[ ${KEEP_DISKS:-0} == 1 ]]; then echo "virtio-blk-recovery-tests: files kept in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi
disk0=$work/disk0.img log=$work/run.log

python3 - "$disk0" <<'PY'
import struct, sys
with open(sys.argv[1], "wb") as f:
    for s in range(2048):
        f.write(struct.pack("<Q", s) * 64)
PY

opts="--timeout 180 --disk $disk0,throttling.bps-total=4096 --bootargs dma_debug=on"
opts+=" ${VIRTIO_BLK_QEMU_OPTS:-}" # e.g. --mem 128M
for arg in "$@"; do opts+=" --bootargs $arg"; done
cd "$here"
set +e
QEMU_RUN_OPTS=$opts cargo test -q -p kernel --test virtio_blk_recovery 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
((status == 0)) || { echo "virtio-blk-recovery-tests: the test kernel failed (status $status)" >&2; exit "$status"; }

# Sectors 100..108 hold !s as u64s (written after the resets); every other sector is untouched.
python3 - "$disk0" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
def sector(s):
    return data[s * 512:(s + 1) * 512]
bad = [s for s in range(100, 108) if sector(s) != struct.pack("<Q", ~s & (2**64 - 1)) * 64]
bad += [s for s in list(range(0, 100)) + list(range(108, 2048)) if sector(s) != struct.pack("<Q", s) * 64]
if bad:
    print("virtio-blk-recovery-tests: wrong sectors on the host:", bad[:8], file=sys.stderr)
    sys.exit(1)
PY
echo "virtio-blk-recovery-tests: host checks passed (sectors 100..108 written after the resets, the rest untouched)"
