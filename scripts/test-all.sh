#!/usr/bin/env bash
# Runs every test: host unit tests, the in-QEMU test kernels (GICv2 at EL1, then GICv3 entered at
# EL2), boot checks that must fail cleanly, and the GDB test. Prints each runner's summary and a
# closing "N passed, N failed" over the steps; exits nonzero if any step failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 2

./scripts/setup.sh || exit 2

passed=0 failed=0 failures=()
step() {
    local name=$1; shift
    echo
    echo "=== $name: $*"
    if "$@"; then
        passed=$((passed + 1)); echo "=== $name: ok"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED"
    fi
}

# cargo prints one "test result: ... N passed; N failed" line per crate: add them up.
host_unit_tests() {
    local out status
    out=$(cargo test --target host-tuple --lib -p kernel -p drivers -p boot 2>&1); status=$?
    echo "$out" | grep -E '^test result' || true
    ((status == 0)) || echo "$out" | tail -80
    echo "$out" | awk '/^test result:/ { p += $4; f += $6 } END { printf "host-unit-tests: %d passed, %d failed\n", p, f }'
    return $status
}
step host-unit-tests host_unit_tests
# The style, enforced: rustfmt (rustfmt.toml) on the workspace and the fuzz crate, clippy with
# every warning an error (the workspace's lints include undocumented_unsafe_blocks,
# missing_safety_doc, missing_docs and unreachable_pub) for the kernel images, every test kernel
# (those outside plain `cargo test` named) and the host-tested libraries with their tests, and
# every script through shellcheck.
lints() {
    local name=$1; shift
    if "$@"; then echo "$name: 1 passed, 0 failed"; else echo "$name: 0 passed, 1 failed"; return 1; fi
}
step rustfmt lints rustfmt sh -c 'cargo fmt --all --check && cd fuzz && cargo fmt --check'
step clippy-target lints clippy-target cargo clippy -q --workspace --lib --bins --tests --examples \
    --test virtio_blk --test virtio_blk_recovery --test virtio_blk_storms --test smp --test smp_io --test soak -- -D warnings
step clippy-host lints clippy-host cargo clippy -q --target host-tuple -p kernel -p drivers -p boot --lib --profile test -- -D warnings
step shellcheck lints shellcheck shellcheck -x qemu-run.sh scripts/*.sh fuzz/seeds/*.sh .ci/run
# The benchmark report's prose comes from the data: its unit tests.
step report-tests python3 -m unittest discover -s scripts/bench
# The in-QEMU test kernels without disks, default policy (lend), DMA-API debugging on.
qemu_tests=(--test boot --test page_alloc --test dma)
step qemu-tests-gicv2-el1 env QEMU_RUN_OPTS="--timeout 300 --bootargs dma_debug=on" cargo test -p kernel "${qemu_tests[@]}"
step qemu-tests-gicv3-el2 env QEMU_RUN_OPTS="--timeout 300 --gic 3 --el2 --bootargs dma_debug=on" cargo test -p kernel "${qemu_tests[@]}"
# At 128 MiB of RAM (qemu-run.sh fits the repo's fragment: a 64 MiB DMA window, the restricted
# pool moved into it, fw-log@48000000 beyond RAM and skipped): the tests size themselves to it,
# and virtio-blk runs on both disks.
step qemu-tests-128m env QEMU_RUN_OPTS="--timeout 300 --mem 128M --bootargs dma_debug=on" cargo test -p kernel "${qemu_tests[@]}"
step virtio-blk-128m env VIRTIO_BLK_QEMU_OPTS="--mem 128M" ./scripts/virtio-blk-tests.sh
# The DMA suite with the debug tracker off, as the demo and the benchmarks run: the direct path's
# inline common case and a direct unmap's span check run in the kernel (the debug-mode case skips).
step qemu-dma-debug-off env QEMU_RUN_OPTS="--timeout 300" cargo test -p kernel --test dma
# Without semihosting (a VMM that has none): results and the exit status on the UART, then PSCI.
step qemu-tests-no-semihosting env QEMU_RUN_OPTS="--timeout 300 --no-semihosting --bootargs dma_debug=on" cargo test -p kernel --test boot --test dma
# The same suites on four CPUs (secondaries idle, the worker may run on any CPU), and the SMP test
# kernel: every CPU maps bounce buffers from its own timer interrupt while one reclaims lent
# pageblocks under memory pressure and another grows and shrinks the pool.
step qemu-tests-smp4-gicv2-el1 env QEMU_RUN_OPTS="--timeout 300 --smp 4 --bootargs dma_debug=on" cargo test -p kernel "${qemu_tests[@]}"
step qemu-tests-smp4-gicv3-el2 env QEMU_RUN_OPTS="--timeout 300 --smp 4 --gic 3 --el2 --bootargs dma_debug=on" cargo test -p kernel "${qemu_tests[@]}"
step qemu-smp-gicv2-el1 env QEMU_RUN_OPTS="--timeout 300 --smp 4 --bootargs dma_debug=on" cargo test -p kernel --test smp
step qemu-smp-gicv3-el2 env QEMU_RUN_OPTS="--timeout 300 --smp 4 --gic 3 --el2 --bootargs dma_debug=on" cargo test -p kernel --test smp
# The SMP kernel at 128 MiB (the pressure fills the smaller RAM, the pool grows within its window).
step qemu-smp-128m env QEMU_RUN_OPTS="--timeout 300 --smp 4 --mem 128M --bootargs dma_debug=on" cargo test -p kernel --test smp
# The DMA tests again under the policies we compare against: Linux's two, Linux's dynamic with
# a small boot pool (so it grows: transient pools, compaction), the CMA rival, lend with
# Linux's copy-in for every bounced read (no clean slots), and lend zeroing what it reclaims
# before its slots serve (the behaviour before grown slots came back dirty).
for policy in static dynamic "dynamic swiotlb=2048" "cma cma=28M" "lend swiotlb_clean_slots=off" "lend swiotlb_reclaim_scrub=on"; do
    tests=(--test dma)
    # page_alloc's boot-CMA-area case runs only when a cma= area exists (it skips otherwise).
    [[ $policy == cma* ]] && tests+=(--test page_alloc)
    step "qemu-dma-${policy// /-}" env QEMU_RUN_OPTS="--timeout 300 --bootargs dma_debug=on --bootargs swiotlb_policy=${policy// / --bootargs }" cargo test -p kernel "${tests[@]}"
done
# virtio-blk on two fresh disk images (checked on the host afterwards), under every policy.
for policy in lend static dynamic; do
    step "virtio-blk-$policy" ./scripts/virtio-blk-tests.sh "swiotlb_policy=$policy"
done
step virtio-blk-cma ./scripts/virtio-blk-tests.sh swiotlb_policy=cma cma=28M
# The same suite on four CPUs (it routes the disks' interrupts to its own CPU, where masking
# IRQs holds completions back; the worker may run on any CPU).
step virtio-blk-smp4 env VIRTIO_BLK_QEMU_OPTS="--smp 4" ./scripts/virtio-blk-tests.sh
# Both disks from three CPUs at once, their interrupts on CPUs 1 and 2, while CPU 0 holds most of
# the bounce pool under memory pressure (the pool grows by migrating pages); images checked; and
# once at 128 MiB of RAM.
step smp-io-gicv2-el1 ./scripts/smp-io-tests.sh
step smp-io-gicv3-el2 ./scripts/smp-io-tests.sh --gic 3 --el2
step smp-io-128m ./scripts/smp-io-tests.sh --mem 128M
# And with the virtio features flipped from their defaults: INDIRECT_DESC declined (direct chains,
# 21 requests in flight), RING_EVENT_IDX negotiated.
step virtio-blk-features-on ./scripts/virtio-blk-tests.sh blk_indirect=on blk_event_idx=on
# virtio-blk recovery on a throttled disk (reset, requeue, retries exhausted, dead disk; checked
# on the host), with the features off and on, and at 128 MiB of RAM.
step virtio-blk-recovery ./scripts/virtio-blk-recovery-tests.sh
step virtio-blk-recovery-features-on ./scripts/virtio-blk-recovery-tests.sh blk_indirect=on blk_event_idx=on
step virtio-blk-recovery-128m env VIRTIO_BLK_QEMU_OPTS="--mem 128M" ./scripts/virtio-blk-recovery-tests.sh
# A disk whose interrupt misbehaves: silent (completed by the tick's poll), stuck (disabled as
# "nobody cared", then polled); both GICs (the storm pends the SPI through GICD_ISPENDR), and at
# 128 MiB of RAM.
step virtio-blk-storms-gicv2-el1 ./scripts/virtio-blk-storm-tests.sh
step virtio-blk-storms-gicv3-el2 env VIRTIO_BLK_QEMU_OPTS="--gic 3 --el2" ./scripts/virtio-blk-storm-tests.sh
step virtio-blk-storms-128m env VIRTIO_BLK_QEMU_OPTS="--mem 128M" ./scripts/virtio-blk-storm-tests.sh
# The README's first command: the two-disk demo, its images checked on the host.
step demo ./scripts/demo-check.sh
# The same demo under the CMA rival: chunks cma_alloc'ed from the area, pages migrated out of it.
step demo-cma ./scripts/demo-check.sh swiotlb_policy=cma cma=28M
# The bounded soak: a randomised read/write/flush mix on both disks with memory pressure and
# reclaim/shrink cycles, every byte checked against a model and the images on the host.
step soak ./scripts/soak.sh
# A shorter soak on four CPUs (the disks' interrupts on CPUs 0 and 1), one under the CMA rival,
# and one at 128 MiB of RAM (40 s: a pressure cycle with its grow, shrink and reset, and the
# next cycle's fill).
step soak-smp4 env SOAK_QEMU_OPTS="--smp 4" ./scripts/soak.sh 60
step soak-cma env SOAK_BOOTARGS="swiotlb_policy=cma cma=28M" ./scripts/soak.sh 60
step soak-128m env SOAK_QEMU_OPTS="--mem 128M" ./scripts/soak.sh 40
# Coverage-guided fuzzing of the FDT interpretation and of the virtio-blk driver against a
# hostile device, a short bounded run (scripts/fuzz.sh 600 for a long one).
step fuzz ./scripts/fuzz.sh
step boot-checks ./scripts/boot-checks.sh
step gdb-test ./scripts/gdb-test.sh

echo
((failed)) && echo "failed steps: ${failures[*]}"
echo "all: $passed passed, $failed failed"
((failed == 0))
