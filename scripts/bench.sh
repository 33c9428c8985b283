#!/usr/bin/env bash
# Runs the benchmarks (and the virtio-blk feature comparison) in QEMU and writes
# EVALUATION.md with its tables and plots. Not a test: the numbers depend on the machine;
# nothing here fails on a slow result. See docs/EVALUATION.md for the method.
#
# Usage: scripts/bench.sh [--quick] [--rounds N] [--ms N] [--cycles N] [--only REGEX]
#                         [--out DIR] [--update-docs] [--report-only RESULTS_DIR]
#   --quick         2 rounds, 100 ms I/O cells, 2 cycles, no keep1, scrub or -icount policy runs
#   --rounds N      rounds of the configurations, run alternated: A B C ... A B C ... (default 7)
#   --ms N          milliseconds per I/O cell (default 300)
#   --cycles N      burst/idle cycles under memory pressure per policy boot, after the one
#                   without pressure (default 3)
#   --only REGEX    only the configurations whose name matches (e.g. '^policy-'); not with
#                   --update-docs; without matplotlib, the report comes without plots
#   --out DIR       the scratch folder (default target/bench, replaced): raw JSON in
#                   DIR/results, the report in DIR/EVALUATION.md, plots in DIR/eval
#   --update-docs   write docs/eval/results, docs/EVALUATION.md and docs/eval/*.png instead:
#                   the committed evaluation (only a full run should)
#   --report-only   only turn RESULTS_DIR's JSON into the report again (scratch or docs)
# Plots need matplotlib: the system's, else as root the distribution's python3-matplotlib
# (apt-get), else a venv under the target directory (needs python3-venv).
# Environment: CARGO_TARGET_DIR as for cargo.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$here/target}
rounds=7 ms=300 cycles=3 quick=0 only="" scratch="$target_dir/bench" update_docs=0 report_only=""
while (($#)); do
    case "$1" in
        --quick) quick=1; rounds=2; ms=100; cycles=2 ;;
        --rounds) rounds=${2:?--rounds needs a number}; shift ;;
        --ms) ms=${2:?--ms needs milliseconds}; shift ;;
        --cycles) cycles=${2:?--cycles needs a number}; shift ;;
        --only) only=${2:?--only needs a regular expression}; shift ;;
        --out) scratch=${2:?--out needs a directory}; shift ;;
        --update-docs) update_docs=1 ;;
        --report-only) report_only=${2:?--report-only needs a directory}; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if ((update_docs)) && [[ -n $only ]]; then
    echo "bench.sh: --only makes a partial run; it may not replace the committed evaluation (--update-docs)" >&2
    exit 2
fi
if ((update_docs)); then
    out=$here/docs/eval/results doc=$here/docs/EVALUATION.md plots=$here/docs/eval
else
    mkdir -p "$scratch"
    scratch=$(cd "$scratch" && pwd)
    out=$scratch/results doc=$scratch/EVALUATION.md plots=$scratch/eval
fi

# Python with matplotlib for the plots: the system's; as root on Debian/Ubuntu the
# distribution's python3-matplotlib; otherwise a venv under the target directory.
# The distribution's package goes to the distribution's Python (/usr/bin/python3), which need not
# be the first python3 on PATH (pyenv, a venv).
python=python3
if [[ -z $only ]] && ! python3 -c 'import matplotlib' 2>/dev/null; then
    venv=$target_dir/bench-venv
    if "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        python=$venv/bin/python
    elif /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
        python=/usr/bin/python3
    elif ((EUID == 0)) && command -v apt-get >/dev/null; then
        echo "bench.sh: installing python3-matplotlib with apt-get" >&2
        apt-get install -y -q python3-matplotlib >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3-matplotlib >/dev/null; }
        python=/usr/bin/python3
    elif python3 -m venv "$venv" 2>/dev/null; then
        echo "bench.sh: installing matplotlib into $venv" >&2
        "$venv/bin/pip" install -q matplotlib
        python=$venv/bin/python
    else
        rm -rf "$venv"
        echo "bench.sh: the plots need matplotlib: sudo apt-get install python3-matplotlib (or python3-venv, for a venv)" >&2
        exit 1
    fi
fi

report() {
    # --only skips the matplotlib set-up above: without it, the text alone.
    local no_plots=()
    "$python" -c 'import matplotlib' 2>/dev/null || no_plots=(--no-plots)
    "$python" "$here/scripts/bench/report.py" --results "$1" --doc "$doc" --plots "$plots" "${no_plots[@]}"
    echo "bench.sh: report in $doc" >&2
}
if [[ -n $report_only ]]; then report "$(cd "$report_only" && pwd)"; exit 0; fi

echo "bench.sh: building the benchmark kernel" >&2
# The release profile (opt-level 3, debug info kept, no overflow checks or debug assertions):
# what a measurement of the design should see. `cargo run` and the tests use the dev profile.
if ! (cd "$here" && cargo build -q --release -p kernel --example bench); then
    echo "bench.sh: the benchmark kernel does not build; nothing measured" >&2
    exit 1
fi
elf=$target_dir/aarch64-unknown-none/release/examples/bench

work=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# disk0 and disk2: 32 MiB of random data (the device reads real data, not holes); disk1 sits
# behind the 4 MiB restricted pool: 1 MiB.
head -c 32M /dev/urandom > "$work/disk0.img"
head -c 32M /dev/urandom > "$work/disk2.img"
head -c 1M /dev/urandom > "$work/disk1.img"
disks=(--disk "$work/disk0.img" --disk "$work/disk1.img" --disk "$work/disk2.img")

# A real SSD's bandwidth for the throttled bounce-cost cells: 500 MiB/s.
throttle_bps=524288000

# name | bootargs | extra QEMU arguments [| qemu-run.sh options]. Every boot gets blk_inflight_kib=0: the pools
# benchmark sets disk 0's hint itself, the others measure the default pool. A `throttle=<B/s>`
# in the demo= options also limits disk 0 to that many bytes/s (QEMU's throttling.bps-total):
# the kernel writes the figure into its results, the host applies it.
configs=(
    # Bounce cost: each cell's time in 8 slices, direct and bounced alternated ABBA (the host's
    # I/O speed drifts between cells run one after the other by more than a memcpy; the report
    # takes the median over the slices of the time a bounce adds).
    "io|demo=bench-io,ms=$ms,slices=8|"
    "io-force|demo=bench-io,ms=$ms swiotlb=force|"
    "io-throttled|demo=bench-io,ms=$ms,warmup=200,throttle=$throttle_bps|"
    # The guest's instructions per request (its busy time under -icount), direct and bounced,
    # and the memcpy of each size in instructions; queue depth 1 only; the bounce copies not
    # timed (the timer reads would count as the bounce's instructions).
    "io-icount|demo=bench-io,ms=$ms,qd1,untimed,slices=4|-icount shift=0"
    "map|demo=bench-map|"
    "map-icount|demo=bench-map|-icount shift=0"
    # The same without the slot cache (Linux: every mapping searches), alternated with the above.
    "map-nocache|demo=bench-map swiotlb_slot_cache=0|"
    "map-icount-nocache|demo=bench-map swiotlb_slot_cache=0|-icount shift=0"
    # What clean slots save: bounced reads with swiotlb_clean_slots on and off, alternated.
    "clean|demo=bench-clean,ms=$ms|"
    "clean-icount|demo=bench-clean,ms=$ms,qd1|-icount shift=0"
    "policy-lend|demo=bench-policy,cycles=$cycles swiotlb_policy=lend|"
    "policy-static|demo=bench-policy,cycles=$cycles swiotlb_policy=static|"
    "policy-dynamic|demo=bench-policy,cycles=$cycles swiotlb_policy=dynamic|"
    # The fair variants: Linux's dynamic and the CMA rival with the boot pool lend keeps
    # (swiotlb_keep=2 pageblocks = 2048 slots), the CMA area as large as lend's lent part.
    "policy-dynamic-small|demo=bench-policy,cycles=$cycles swiotlb_policy=dynamic swiotlb=2048|"
    "policy-cma|demo=bench-policy,cycles=$cycles swiotlb_policy=cma cma=28M|"
    "scaling-dynamic|demo=bench-scaling swiotlb_policy=dynamic swiotlb=2048 swiotlb_dyn_pool=1|"
    "scaling-lend|demo=bench-scaling swiotlb_policy=lend|"
    "scaling-dynamic-icount|demo=bench-scaling swiotlb_policy=dynamic swiotlb=2048 swiotlb_dyn_pool=1|-icount shift=0"
    "scaling-lend-icount|demo=bench-scaling swiotlb_policy=lend|-icount shift=0"
    "pools|demo=bench-pools,ms=$ms|"
    # The virtio features, each combination of RING_EVENT_IDX and INDIRECT_DESC.
    "features-idx-ind|demo=bench-features,ms=$ms blk_event_idx=on blk_indirect=on|"
    "features-noidx-ind|demo=bench-features,ms=$ms blk_event_idx=off blk_indirect=on|"
    "features-idx-noind|demo=bench-features,ms=$ms blk_event_idx=on blk_indirect=off|"
    "features-noidx-noind|demo=bench-features,ms=$ms blk_event_idx=off blk_indirect=off|"
)
if ((!quick)); then
    configs+=(
        "policy-lend-keep1|demo=bench-policy,cycles=$cycles swiotlb_policy=lend swiotlb_keep=1|"
        "policy-lend-scrub|demo=bench-policy,cycles=$cycles swiotlb_policy=lend swiotlb_reclaim_scrub=on|"
        "policy-lend-icount|demo=bench-policy,cycles=$cycles swiotlb_policy=lend|-icount shift=0"
    )
fi
# Scaling over CPUs (the 4th field: qemu-run.sh options). Map+unmap from every CPU's timer
# interrupt with one SWIOTLB area against one per CPU (16384 slots: the whole default region),
# under lend (the default) and static (nothing lent: every area keeps its slots); disks 0 and 2
# reading at once with their interrupts on CPUs 0 and 1 against both on CPU 0 (77 and 79 are
# their lines on QEMU virt; the kernel records the routing it used).
configs+=(
    "smp-map-1cpu|demo=bench-smp-map,ms=$ms swiotlb=16384,1||--smp 1"
    "smp-map-2cpu-1area|demo=bench-smp-map,ms=$ms swiotlb=16384,1||--smp 2"
    "smp-map-2cpu-percpu|demo=bench-smp-map,ms=$ms swiotlb=16384,2||--smp 2"
    "smp-map-4cpu-1area|demo=bench-smp-map,ms=$ms swiotlb=16384,1||--smp 4"
    "smp-map-4cpu-percpu|demo=bench-smp-map,ms=$ms swiotlb=16384,4||--smp 4"
    "smp-map-1cpu-static|demo=bench-smp-map,ms=$ms swiotlb=16384,1 swiotlb_policy=static||--smp 1"
    "smp-map-2cpu-1area-static|demo=bench-smp-map,ms=$ms swiotlb=16384,1 swiotlb_policy=static||--smp 2"
    "smp-map-2cpu-percpu-static|demo=bench-smp-map,ms=$ms swiotlb=16384,2 swiotlb_policy=static||--smp 2"
    "smp-map-4cpu-1area-static|demo=bench-smp-map,ms=$ms swiotlb=16384,1 swiotlb_policy=static||--smp 4"
    "smp-map-4cpu-percpu-static|demo=bench-smp-map,ms=$ms swiotlb=16384,4 swiotlb_policy=static||--smp 4"
    "smp-io-2cpu-spread|demo=bench-smp-io,ms=$ms irq_affinity=79:0,77:1||--smp 2"
    "smp-io-2cpu-one|demo=bench-smp-io,ms=$ms irq_affinity=79:0,77:0||--smp 2"
    "smp-io-4cpu-spread|demo=bench-smp-io,ms=$ms irq_affinity=79:0,77:1||--smp 4"
    "smp-io-4cpu-one|demo=bench-smp-io,ms=$ms irq_affinity=79:0,77:0||--smp 4"
)
if [[ -n $only ]]; then
    chosen=()
    for c in "${configs[@]}"; do
        [[ ${c%%|*} =~ $only ]] && chosen+=("$c")
    done
    ((${#chosen[@]})) || { echo "bench.sh: --only '$only' matches no configuration" >&2; exit 2; }
    configs=("${chosen[@]}")
fi

rm -rf "$out"
mkdir -p "$out"
{
    echo "{"
    echo "  \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo "  \"nproc\": $(nproc),"
    echo "  \"cpu\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/"/\\"/g')\","
    echo "  \"qemu\": \"$(qemu-system-aarch64 --version | head -1 | sed 's/"/\\"/g')\","
    echo "  \"kernel_rev\": \"$(git -C "$here" rev-parse --short HEAD)$(git -C "$here" diff --quiet HEAD -- kernel boot drivers || echo -dirty)\","
    echo "  \"rounds\": $rounds,"
    echo "  \"cell_ms\": $ms,"
    echo "  \"cycles\": $cycles,"
    echo "  \"only\": \"$only\","
    echo "  \"quick\": $( ((quick)) && echo true || echo false)"
    echo "}"
} > "$out/machine.json"

start=$(date +%s)
failed=0
for ((round = 1; round <= rounds; round++)); do
    for c in "${configs[@]}"; do
        IFS='|' read -r name bootargs extra qemu_opts <<< "$c"
        run=$work/run-$round-$name
        mkdir -p "$run"
        run_disks=("${disks[@]}")
        if [[ $bootargs =~ demo=[^\ ]*,throttle=([0-9]+) ]]; then
            run_disks[1]+=",throttling.bps-total=${BASH_REMATCH[1]}" # disk 0
        fi
        # shellcheck disable=SC2086
        if (cd "$run" && "$here/qemu-run.sh" --timeout 300 $qemu_opts "${run_disks[@]}" "$elf" blk_inflight_kib=0 $bootargs ${extra:+-- $extra} > "$run/console.log" 2>&1) \
            && [[ -s $run/bench.json ]]; then
            mv "$run/bench.json" "$out/r$round-$name.json"
            printf 'bench.sh: round %d/%d %-20s ok   (%ds so far)\n' "$round" "$rounds" "$name" $(($(date +%s) - start)) >&2
        else
            failed=$((failed + 1))
            cp "$run/console.log" "$out/r$round-$name.failed.log"
            printf 'bench.sh: round %d/%d %-20s FAILED (console in %s)\n' "$round" "$rounds" "$name" "$out/r$round-$name.failed.log" >&2
            tail -5 "$run/console.log" >&2
        fi
        rm -rf "$run"
    done
done
echo "bench.sh: $((rounds * ${#configs[@]} - failed)) boots done, $failed failed, in $(($(date +%s) - start))s" >&2

# Where the instructions of one 4 KiB map+unmap go, direct and bounced: GDB single-steps one of
# each in a boot of the mapping benchmark (scripts/bench/insn_trace.py) and counts per function.
# Instruction counts do not depend on the host's load. With the mapping benchmark chosen only.
if [[ -z $only || map =~ $only ]]; then
    if command -v gdb-multiarch >/dev/null; then
        run=$work/insn-trace
        mkdir -p "$run"
        port=$((20000 + RANDOM % 20000))
        (cd "$run" && exec "$here/qemu-run.sh" --gdb --gdb-port "$port" --timeout 600 "${disks[@]}" "$elf" blk_inflight_kib=0 demo=bench-map > "$run/console.log" 2>&1) &
        qemu_pid=$!
        sleep 2
        INSN_TRACE_OUT=$out/insn-trace.json timeout 900 gdb-multiarch -q -batch -ex "target remote :$port" \
            -x "$here/scripts/bench/insn_trace.py" "$elf" > "$run/gdb.log" 2>&1
        wait "$qemu_pid" 2>/dev/null
        if [[ -s $out/insn-trace.json ]]; then
            echo "bench.sh: instruction trace of one map+unmap in $out/insn-trace.json" >&2
        else
            echo "bench.sh: the instruction trace failed (its GDB log follows); the report goes without it" >&2
            tail -5 "$run/gdb.log" >&2
        fi
    else
        echo "bench.sh: no gdb-multiarch (scripts/setup.sh installs it): no instruction trace" >&2
    fi
fi
report "$out"
