#!/usr/bin/env bash
# Regenerates the FDT seed corpus (fuzz/seeds/fdt/) the way qemu-run.sh builds the tree a kernel
# boots with: QEMU's own DTB for a set of machine options, with the repo's fragments and the
# boot-check fragments merged by dtc and bootargs set. Needs qemu-system-aarch64 and dtc.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$here/fuzz/seeds/fdt}
mkdir -p "$out"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
n=0
seed() {   # seed MACHINE_OPTS MEM BOOTARGS FRAGMENT...
    local machine=$1 mem=$2 bootargs=$3; shift 3
    qemu-system-aarch64 -cpu cortex-a72 -m "$mem" -nographic -M "$machine,dumpdtb=$work/q.dtb" >/dev/null 2>&1
    dtc -q -I dtb -O dts -o "$work/q.dts" "$work/q.dtb"
    { cat "$work/q.dts"; for f in "$@"; do echo; cat "$f"; done
      printf '\n/ { chosen { bootargs = "%s"; }; };\n' "$bootargs"; } > "$work/run.dts"
    dtc -q -I dts -O dtb -o "$out/qemu-$n.dtb" "$work/run.dts"
    n=$((n + 1))
}
repo=("$here"/dts/*.dtsi)
seed virt,gic-version=2 512M "" 
seed virt,gic-version=2 512M "dma_debug=on" "${repo[@]}"
seed virt,gic-version=3,virtualization=on 512M "swiotlb_policy=static swiotlb=8192,2,force" "${repo[@]}"
seed virt,gic-version=2 256M "swiotlb_policy=dynamic loglevel=debug" "${repo[@]}" "$here/scripts/testdata/extra-reserved.dtsi"
seed virt,gic-version=2 512M "swiotlb_keep=4 swiotlb_reserve=128 swiotlb_low_wm=30" "${repo[@]}" "$here/scripts/testdata/overlapping-reserved.dtsi"
seed virt,gic-version=3 2G "demo=read-verify swiotlb_batch=3 garbage= =x" "${repo[@]}"
echo "make-fdt-seeds: $n seeds in $out"
