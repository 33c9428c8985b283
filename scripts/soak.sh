#!/usr/bin/env bash
# The soak (kernel/tests/soak.rs): SECONDS of randomised reads, writes and flushes on two fresh
# disks under memory pressure and pool grow/shrink cycles, every byte read checked against the
# kernel's model; then the model's CRC-32 of each disk is compared with the image file here.
#   disk0: 32 MiB, throttled by QEMU to 16 MiB/s (requests stay in flight, bounce demand
#          outgrows the pools), behind the DMA window
#   disk1: 8 MiB, behind the restricted DMA pool
# Usage: scripts/soak.sh [SECONDS [SEED]]   (default 150 s: the bounded run of test-all.sh;
#        README.md "Soak" has the long run). Extra bootargs: SOAK_BOOTARGS="swiotlb_policy=static";
#        extra qemu-run.sh options: SOAK_QEMU_OPTS="--smp 4" (or "--mem 128M").
# Environment: CARGO_TARGET_DIR as for cargo; KEEP_DISKS=1 keeps the images and the log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-150}
seed=${2:-}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "usage: $0 [SECONDS [SEED]]" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
if [[ ${KEEP_DISKS:-0} == 1 ]]; then echo "soak: files kept in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi
disk0=$work/disk0.img disk1=$work/disk1.img log=$work/run.log
qemu-img create -q -f raw "$disk0" 32M
qemu-img create -q -f raw "$disk1" 8M

# qemu-run.sh splits QEMU_RUN_OPTS on spaces: one --bootargs per word. The timeout leaves room
# for the pressure fills, the drain and the whole-disk read-back after SECONDS.
demo="demo=$seconds${seed:+,$seed}"
opts="--timeout $((seconds + 600)) --disk $disk0,throttling.bps-total=16777216 --disk $disk1 --bootargs dma_debug=on --bootargs $demo"
for arg in ${SOAK_BOOTARGS:-}; do opts+=" --bootargs $arg"; done
opts+=" ${SOAK_QEMU_OPTS:-}" # e.g. --smp 4
cd "$here"
start=$(date +%s)
set +e
QEMU_RUN_OPTS=$opts cargo test -q -p kernel --test soak 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "soak: the kernel ran $(($(date +%s) - start)) s and exited $status"

# The host's side: the model's CRC of each disk must be the image file's.
python3 - "$log" "$disk0" "$disk1" <<'PY' || status=1
import re, sys, zlib
log, files = sys.argv[1], sys.argv[2:]
seen = {}
for line in open(log, errors="replace"):
    m = re.match(r"^disk(\d+) bytes=(\d+) crc32=([0-9a-f]{8})\s*$", line)
    if m:
        seen[int(m[1])] = (int(m[2]), m[3])
bad = 0
for n, path in enumerate(files):
    data = open(path, "rb").read()
    got = (len(data), "%08x" % zlib.crc32(data))
    if n not in seen:
        print(f"soak: host check FAILED: the kernel printed no model CRC for disk{n}")
        bad = 1
    elif seen[n] != got:
        print(f"soak: host check FAILED: disk{n} image has {got[0]} bytes, crc32={got[1]}; the kernel's model {seen[n][0]} bytes, crc32={seen[n][1]}")
        bad = 1
    else:
        print(f"soak: host check: disk{n} image ({got[0]} bytes) has crc32={got[1]}, as the kernel's model says")
sys.exit(bad)
PY
grep -E '^soak: [0-9]+ requests' "$log" || { echo "soak: no summary line" >&2; status=1; }
((status == 0)) && echo "soak: passed" || echo "soak: FAILED" >&2
exit "$status"
