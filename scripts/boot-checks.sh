#!/usr/bin/env bash
# Boots that must end a particular way: the kernel must report and fail cleanly, never hang.
# Each check boots a kernel image with qemu-run.sh and checks its exit status and its console.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
cargo build -q -p kernel --bin kernel --example unhandled_fault || exit 1
bin=target/aarch64-unknown-none/debug

passed=0 failed=0
# expect NAME WANT_STATUS "REGEX..." -- QEMU_RUN_ARGS...
expect() {
    local name=$1 want=$2; shift 2
    local patterns=()
    while [[ $1 != -- ]]; do patterns+=("$1"); shift; done
    shift
    local out status
    out=$(./qemu-run.sh --timeout 60 "$@" 2>&1); status=$?
    local ok=1 why=""
    if [[ $status != "$want" ]]; then ok=0; why="exit status $status, expected $want"; fi
    for p in "${patterns[@]}"; do
        grep -Eq -- "$p" <<<"$out" || { ok=0; why="${why:+$why; }no line matching /$p/"; }
    done
    if ((ok)); then
        passed=$((passed + 1)); echo "boot-check $name ... ok"
    else
        failed=$((failed + 1)); echo "boot-check $name ... FAILED: $why"; echo "$out" | tail -40 | sed 's/^/    | /'
    fi
}

expect demo_boots_and_prints_the_memory_map 0 \
    '^Boot memory map:' '\[mem 0x0*48000000-0x0*481fffff\] fw-log' 'swiotlb-pool' '\] kernel' \
    -- "$bin/kernel"
expect unhandled_fault_is_reported_and_fails 1 \
    'Unhandled synchronous exception' 'data abort at the current EL\), translation fault' \
    'FAR  0x0000002000000000' 'ELR  0x' 'Backtrace' \
    -- "$bin/examples/unhandled_fault"
expect unhandled_fault_at_el2_entry_gicv3 1 'Unhandled synchronous exception' \
    -- --el2 --gic 3 "$bin/examples/unhandled_fault"

echo "boot-checks: $passed passed, $failed failed"
((failed == 0))
