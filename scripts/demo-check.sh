#!/usr/bin/env bash
# Runs the demo as the README's first command does (`cargo run`, with the two disks qemu-run.sh
# makes and checks on the host), and checks that every phase showed its picture and counters,
# that the host check passed, and what the policy the kernel ran under must show:
# - lend: before the burst the page cache sits in lent pageblocks and every lent pageblock
#   holds pages (no `s` in the picture after the memory pressure), the pool
#   grows by reclaiming lent pageblocks with pages migrated out (N > 0) and clean page-cache
#   pages dropped, and lends pageblocks again when idle;
# - cma: the pool grows by chunks cma_alloc'ed from the CMA area with pages migrated out of it
#   (N > 0), and gives chunks back when idle;
# - any other policy (static, dynamic): its counts are printed, not required.
# Usage: scripts/demo-check.sh [BOOTARG...]
#        scripts/demo-check.sh --log FILE   (check a saved `cargo run` log instead of running)
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if [[ ${1:-} == --log ]]; then
    cp "${2:?--log needs a file}" "$log" || exit 1
    status=0
else
    QEMU_RUN_OPTS="--timeout 300" cargo run -q -- "$@" >"$log" 2>&1
    status=$?
fi
sed -i 's/\r$//' "$log" # the serial console ends lines with CR LF
fail=0
missing() {
    echo "demo-check: missing: $1" >&2
    fail=1
}
expect() {
    grep -Eq "$1" "$log" || missing "$2"
}
for phase in "boot" "memory pressure" "I/O burst from interrupt handlers" "idle"; do
    expect "^==== demo: after $phase ====" "the picture after phase '$phase'"
done
expect "^==== demo: verification ====" "the verification"
expect "^RAM: \[" "the RAM picture"
expect "^  default  0x" "the pool table"
expect "^page cache: [1-9][0-9]* blocks of disk0 " "the page cache's counts"
expect "every written byte read back as written" "the read-back verification"
expect "^qemu-run.sh: host check: disk0 image" "the host's check of disk0's image"
expect "^qemu-run.sh: host check: disk1 image" "the host's check of disk1's image"

# The policy the kernel ran under (an unknown swiotlb_policy= falls back to the default, and
# the kernel says which it used).
policy=$(sed -nE 's/.*demo: policy ([A-Za-z]+);.*/\1/p' "$log" | head -1 | tr '[:upper:]' '[:lower:]')
[[ -n $policy ]] || missing "the policy line (demo: policy ...)"
# The burst's counts, from the verification's pool line:
# "... reclaimed R pageblocks (M pages migrated, D dropped, P pinned pages in the way); lent again L pageblocks"
counts=$(grep -E "^default pool \+ lent: " "$log" | sed -nE \
    's/.*reclaimed ([0-9]+) pageblocks \(([0-9]+) pages migrated, ([0-9]+) dropped, ([0-9]+) pinned.*lent again ([0-9]+) pageblocks.*/\1 \2 \3 \4 \5/p' | head -1)
if [[ -z $counts ]]; then
    missing "the burst's counts (reclaimed ... pages migrated, ... dropped ...)"
    counts="0 0 0 0 0"
fi
read -r reclaimed migrated dropped pinned lent_again <<<"$counts"
echo "demo-check: policy ${policy:-?}: reclaimed $reclaimed pageblocks, pages $migrated migrated, $dropped dropped, $pinned pinned in the way; lent again $lent_again"
case $policy in
lend)
    expect "^page cache: [1-9][0-9]* blocks of disk0 \([1-9][0-9]* pages in lent" "page-cache pages in lent pageblocks"
    # The picture after the memory pressure: every lent pageblock holds pages, so the pool can
    # only grow by taking occupied blocks (reclaim rightly prefers empty ones when it has them).
    pressure_picture=$(sed -n '/^==== demo: after memory pressure ====/,/^RAM: /p' "$log" | sed -nE 's/^RAM: \[(.*)\]$/\1/p')
    if [[ -z $pressure_picture ]]; then
        missing "the RAM picture after the memory pressure"
    elif [[ $pressure_picture == *s* ]]; then
        missing "every lent pageblock holding pages before the burst (the picture shows empty ones: s)"
    fi
    ((reclaimed > 0)) || missing "the pool growing by reclaiming lent pageblocks (reclaimed $reclaimed)"
    ((migrated > 0)) || missing "movable pages migrated out of lent pageblocks during the burst (pages $migrated migrated)"
    ((dropped > 0)) || missing "clean page-cache pages dropped from lent pageblocks during the burst ($dropped dropped)"
    ((lent_again > 0)) || missing "the pool lending its spare pageblocks again (lent again $lent_again)"
    ;;
cma)
    ((migrated > 0)) || missing "movable pages migrated out of the CMA area by cma_alloc during the burst (pages $migrated migrated)"
    ((lent_again > 0)) || missing "chunks given back to the CMA area when idle (given back $lent_again pageblocks)"
    ;;
*)
    echo "demo-check: policy ${policy:-?}: the counts above are reported, not required"
    ;;
esac
grep -E "^(memory pressure|page cache|moved out|disk[01]: streamed|burst|default pool|verification|disk[01] bytes|qemu-run.sh: host)" "$log"
if ((status != 0 || fail)); then
    echo "demo-check: FAILED (exit status $status); the log's end:" >&2
    tail -40 "$log" >&2
    exit 1
fi
echo "demo-check: demo passed (exit 0, every phase shown, images checked on the host, policy ${policy}'s counts)"
