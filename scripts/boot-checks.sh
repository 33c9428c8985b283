#!/usr/bin/env bash
# Boots that must end a particular way: the kernel must report and fail cleanly, never hang.
# Each check boots a kernel image with qemu-run.sh and checks its exit status and its console.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 2
cargo build -q -p kernel --bin kernel --example unhandled_fault --example psci_off --example stack_overflow --example heap_oom --example ipi_fail || exit 1
bin=target/aarch64-unknown-none/debug

passed=0 failed=0
# expect NAME WANT_STATUS "REGEX..." -- QEMU_RUN_ARGS...
expect() {
    local name=$1 want=$2; shift 2
    local patterns=()
    while [[ $1 != -- ]]; do patterns+=("$1"); shift; done
    shift
    local out status
    out=$(./qemu-run.sh --timeout 180 "$@" 2>&1); status=$?
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
# A kernel stack that overflows hits its guard page; the exception entry sees the stack full,
# moves to the CPU's emergency stack and reports it (without that, the entry's own pushes fault
# again and again and run into whatever lies below). On the boot CPU, and on a secondary.
expect stack_overflow_is_reported_cpu0 1 '\*\*\* Kernel stack overflow on CPU 0: SP 0x[0-9a-f]+, stack \[' \
    'data abort at the current EL' \
    -- "$bin/examples/stack_overflow"
expect stack_overflow_is_reported_on_a_secondary 1 'smp: 2 of 2 CPUs online' '\*\*\* Kernel stack overflow on CPU 1: ' \
    -- --smp 2 --gic 3 --el2 "$bin/examples/stack_overflow" demo=overflow,cpu=1
# Heap exhaustion: Rust's allocation-error path panics; the report says it is out of memory,
# what was asked and what the heap had, and the status is a failure.
expect heap_exhaustion_is_reported_as_out_of_memory 1 \
    '\*\*\* Out of memory: the kernel heap could not allocate 1048576 bytes \(align 1\): [0-9]+ arenas' \
    'memory allocation of 1048576 bytes failed' \
    -- --mem 128M "$bin/examples/heap_oom"
expect unhandled_fault_at_el2_entry_gicv3 1 'Unhandled synchronous exception' \
    -- --el2 --gic 3 "$bin/examples/unhandled_fault"

# Without semihosting (a VMM that has none): the kernel finds out, prints its results and exit
# status on the UART and powers off through PSCI; qemu-run.sh --no-semihosting exits with it.
expect no_semihosting_demo_powers_off_with_status_0 0 'semihosting: not available' \
    'demo: every request served once' '^exit status 0 \(no semihosting' \
    -- --no-semihosting --no-demo-disks "$bin/kernel"
expect no_semihosting_fault_powers_off_with_status_1 1 'Unhandled synchronous exception' '^exit status 1 \(no semihosting' \
    -- --no-semihosting --el2 --gic 3 "$bin/examples/unhandled_fault"
expect psci_system_off_stops_the_machine 0 'powering off through PSCI SYSTEM_OFF' \
    -- "$bin/examples/psci_off"
expect psci_system_off_at_el2_uses_smc 0 'powering off through PSCI SYSTEM_OFF' \
    -- --el2 "$bin/examples/psci_off"
expect user_fragment_is_merged 0 '\[mem 0x0*50000000-0x0*500fffff\] test-carveout@50000000 reserved no-map' \
    -- --dts-fragment scripts/testdata/extra-reserved.dtsi --smp 2 --mem 1G "$bin/kernel"
expect overlapping_fragment_stops_boot_with_a_clear_error 1 'Boot failed: memory map: .*clash@48100000.*fw-log@48000000|Boot failed: memory map: .*fw-log@48000000.*clash@48100000' \
    -- --dts-fragment scripts/testdata/overlapping-reserved.dtsi "$bin/kernel"
# Broken fragments (scripts/testdata/): each stops the boot with an error naming the node, or
# boots with a warning and without what it broke. Never a hang, never a silently wrong map.
expect pool_outside_ram_stops_boot 1 'WARN +memblock: reserved region swiotlb-pool \[0x100000000-0x102000000\) lies wholly outside RAM: skipped' \
    'Boot failed: DMA: no default SWIOTLB pool' \
    -- --no-demo-disks --dts-fragment scripts/testdata/pool-outside-ram.dtsi "$bin/kernel"
expect pool_above_dma_limit_stops_boot 1 'Boot failed: DMA: the default SWIOTLB pool ends at 0x60000000, above the DMA limit 0x58000000' \
    -- --no-demo-disks --dts-fragment scripts/testdata/pool-above-dma-limit.dtsi "$bin/kernel"
# The pool's binding: without `reusable` nothing is lent, and the log says so.
expect pool_not_reusable_lends_nothing 0 'WARN +swiotlb: swiotlb-pool is not reusable: nothing is lent' \
    'swiotlb: policy Static' 'demo: every request served once' \
    -- --no-demo-disks --dts-fragment scripts/testdata/pool-not-reusable.dtsi "$bin/kernel"
expect pool_reusable_is_lent 0 'INFO +swiotlb: swiotlb-pool is reusable: its spare pageblocks are lent' \
    -- --no-demo-disks "$bin/kernel"
# Any memory size: at 128 MiB qemu-run.sh fits the repo's fragment (a 64 MiB DMA window, the
# restricted pool moved into it, so disk1 works); fw-log@48000000 lies beyond RAM and is
# skipped with a warning. At 1 GiB the demo runs as at 512 MiB. Both disks' images are checked
# on the host.
expect demo_runs_in_128m 0 'qemu-run.sh: 128 MiB of RAM: the repo fragment fitted: DMA window \[0x40000000-0x44000000\)' \
    'WARN +memblock: reserved region fw-log@48000000 \[0x48000000-0x48200000\) lies wholly outside RAM: skipped' \
    'demo: no I/O failed, every byte intact' 'host check: disk0 image' 'host check: disk1 image' \
    -- --mem 128M "$bin/kernel"
expect demo_runs_in_1g 0 'host check: disk0 image' 'host check: disk1 image' -- --mem 1G "$bin/kernel"
expect zero_sized_pool_stops_boot 1 'Boot failed: memory map: memblock: swiotlb-pool: reserved region has zero size' \
    -- --no-demo-disks --dts-fragment scripts/testdata/zero-sized-pool.dtsi "$bin/kernel"
expect reusable_restricted_pool_stops_boot 1 'Boot failed: .*restricted-dma@4a000000: restricted-dma-pool must not be reusable' \
    -- --no-demo-disks --dts-fragment scripts/testdata/reusable-restricted-pool.dtsi "$bin/kernel"
# A disk's memory-region: with the disks attached. A dangling phandle, a region of the wrong
# kind, or a restricted pool the device cannot reach fails only that disk's probe (it is never
# attached without the pool it asked for), and the demo runs on with the other disk.
expect unknown_memory_region_phandle_fails_the_disk 0 'WARN +virtio_mmio@a003c00: .*memory-region phandle 0xdead does not name a valid node' \
    '^\[ *[0-9.]+\] INFO +disk0 on virtio_mmio@a003e00' 'demo: no two virtio-blk disks' 'demo: every request served once' \
    -- --dts-fragment scripts/testdata/unknown-memory-region.dtsi "$bin/kernel"
expect memory_region_not_a_pool_fails_the_disk 0 'WARN +virtio_mmio@a003c00: .*memory-region fw-log@48000000 is not a restricted-dma-pool' \
    '^\[ *[0-9.]+\] INFO +disk0 on virtio_mmio@a003e00' 'demo: no two virtio-blk disks' 'demo: every request served once' \
    -- --dts-fragment scripts/testdata/memory-region-not-a-pool.dtsi "$bin/kernel"
expect restricted_pool_beyond_dma_limit_fails_the_disk 0 \
    '\[mem 0x0*5c000000-0x0*5c3fffff\] restricted-dma@4a000000' \
    'WARN +virtio_mmio@a003c00: .*restricted-dma-pool restricted-dma@4a000000 ends at 0x5c400000, beyond the device.s DMA limit 0x57ffffff' \
    'demo: no two virtio-blk disks' 'demo: every request served once' \
    -- --dts-fragment scripts/testdata/restricted-pool-above-dma-limit.dtsi "$bin/kernel"
expect swiotlb_too_many_areas_warns_and_boots 0 'WARN +swiotlb: 1024 areas do not fit a pool of 16384 slots .*using 128' \
    'demo: every request served once' \
    -- --no-demo-disks "$bin/kernel" swiotlb=16384,1024
expect garbage_bootargs_warn_and_boot 0 "bootargs: ignoring 'swiotlb_policy=fastest'" "bootargs: ignoring 'nonsense'" \
    -- "$bin/kernel" swiotlb_policy=fastest nonsense

# SMP: every CPU comes up and the disks' interrupts go to different CPUs; a CPU that cannot be
# started (one /cpus lists but the machine lacks) is reported and the others boot.
expect smp_four_cpus_online_disk_irqs_spread 0 'smp: 4 of 4 CPUs online: 0,1,2,3' 'irq 78 routed to CPU 1' \
    'host check: disk1 image' \
    -- --smp 4 "$bin/kernel" demo=read-verify
expect smp_irq_affinity_bootarg_routes_a_disk 0 'smp: 2 of 2 CPUs online: 0,1' 'irq 79 routed to CPU 1' 'host check: disk0 image' \
    -- --smp 2 --gic 3 --el2 "$bin/kernel" demo=read-verify irq_affinity=79:1,78:0
expect smp_missing_cpu_is_reported 0 'smp: CPU2 \(MPIDR 0x7\) failed to come online: PSCI CPU_ON failed' \
    'smp: 2 of 3 CPUs online: 0,1' 'host check: disk1 image' \
    -- --smp 2 --dts-fragment scripts/testdata/extra-cpu.dtsi "$bin/kernel" demo=read-verify
expect smp_missing_cpu_is_reported_gicv3 0 'smp: CPU2 \(MPIDR 0x7\) failed to come online' 'smp: 2 of 3 CPUs online: 0,1' \
    -- --smp 2 --gic 3 --el2 --dts-fragment scripts/testdata/extra-cpu.dtsi "$bin/kernel" demo=read-verify
# A failed IPI registration costs that IPI, not the CPUs: the secondaries enable only what the
# boot CPU registered, and the reschedule IPI still wakes one for work.
expect smp_failed_ipi_registration_keeps_the_cpus 0 'smp: no handler for IPI 1' 'smp: 4 of 4 CPUs online: 0,1,2,3' \
    'ipi_fail: work ran on CPU[123], woken by the reschedule IPI' \
    -- --smp 4 --no-demo-disks "$bin/examples/ipi_fail"

# demo=read-verify on a user's raw image: the CRC must match the host's.
img=$(mktemp "${TMPDIR:-/tmp}/read-verify.XXXXXX.img")
head -c 3000000 /dev/urandom > "$img"; truncate -s 3145728 "$img"
crc=$(python3 -c 'import sys, zlib; print("%08x" % zlib.crc32(open(sys.argv[1], "rb").read()))' "$img")
expect demo_read_verify_matches_the_host_crc 0 "^disk0 bytes=3145728 crc32=$crc" \
    -- --disk "$img" "$bin/kernel" demo=read-verify
expect demo_read_verify_without_a_disk_fails_clearly 1 'read-verify: no virtio-blk disk' \
    -- --no-demo-disks "$bin/kernel" demo=read-verify
rm -f "$img"

echo "boot-checks: $passed passed, $failed failed"
((failed == 0))
