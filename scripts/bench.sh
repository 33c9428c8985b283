#!/usr/bin/env bash
# Runs the benchmarks of issue 6 (and the virtio-blk feature comparison) in QEMU and regenerates docs/EVALUATION.md with its tables and
# plots (docs/eval/). Not a test: the numbers depend on the machine; nothing here fails on a
# slow result. See docs/EVALUATION.md for the method.
#
# Usage: scripts/bench.sh [--quick] [--rounds N] [--ms N] [--out DIR] [--report-only DIR]
#   --quick         2 rounds, 100 ms I/O cells, no -icount policy run (about 2 minutes)
#   --rounds N      rounds of the configurations, run alternated: A B C ... A B C ... (default 7)
#   --ms N          milliseconds per I/O cell (default 300)
#   --out DIR       where the raw JSON goes (default docs/eval/results, replaced)
#   --report-only   only turn DIR's JSON into the report again
#   --only REGEX    boot only the configurations whose name matches REGEX (bash =~), e.g.
#                   '^smp-'; a partial run: the JSON goes to --out, no report is written
# Environment: CARGO_TARGET_DIR as for cargo.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=7 ms=300 quick=0 out="$here/docs/eval/results" report_only=0
only=''
while (($#)); do
    case "$1" in
        --quick) quick=1; rounds=2; ms=100 ;;
        --rounds) rounds=${2:?--rounds needs a number}; shift ;;
        --ms) ms=${2:?--ms needs milliseconds}; shift ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --report-only) report_only=1; out=${2:?--report-only needs a directory}; shift ;;
        --only) only=${2:?--only needs a pattern}; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -n $only && $out == "$here/docs/eval/results" ]]; then
    echo "bench.sh: --only needs --out DIR (a partial run must not replace docs/eval/results)" >&2
    exit 2
fi
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

# Python with matplotlib for the plots: the system's, or a venv under the target directory.
target_dir=${CARGO_TARGET_DIR:-$here/target}
python=python3
if [[ -z $only ]] && ! python3 -c 'import matplotlib' 2>/dev/null; then
    venv=$target_dir/bench-venv
    if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
        echo "bench.sh: installing matplotlib into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q matplotlib
    fi
    python=$venv/bin/python
fi

report() {
    "$python" "$here/scripts/bench/report.py" --results "$out" --doc "$here/docs/EVALUATION.md" --plots "$here/docs/eval"
}
if ((report_only)); then report; exit 0; fi

echo "bench.sh: building the benchmark kernel" >&2
# The release profile (opt-level 3, debug info kept, no overflow checks or debug assertions):
# what a measurement of the design should see. `cargo run` and the tests use the dev profile.
(cd "$here" && cargo build -q --release -p kernel --example bench)
elf=$target_dir/aarch64-unknown-none/release/examples/bench

work=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# disk0 and disk2: 32 MiB of random data (the device reads real data, not holes); disk1 sits
# behind the 4 MiB restricted pool: 1 MiB.
head -c 32M /dev/urandom > "$work/disk0.img"
head -c 32M /dev/urandom > "$work/disk2.img"
head -c 1M /dev/urandom > "$work/disk1.img"
disks=(--disk "$work/disk0.img" --disk "$work/disk1.img" --disk "$work/disk2.img")

# name | bootargs | extra QEMU arguments [| qemu-run.sh options]. Every boot gets blk_inflight_kib=0: the pools
# benchmark sets disk 0's hint itself, the others measure the default pool.
configs=(
    "io|demo=bench-io,ms=$ms|"
    "io-force|demo=bench-io,ms=$ms swiotlb=force|"
    "map|demo=bench-map|"
    "map-icount|demo=bench-map|-icount shift=0"
    "policy-lend|demo=bench-policy swiotlb_policy=lend|"
    "policy-static|demo=bench-policy swiotlb_policy=static|"
    "policy-dynamic|demo=bench-policy swiotlb_policy=dynamic|"
    # The fair variants: Linux's dynamic and the CMA rival with the boot pool lend keeps
    # (swiotlb_keep=2 pageblocks = 2048 slots), the CMA area as large as lend's lent part.
    "policy-dynamic-small|demo=bench-policy swiotlb_policy=dynamic swiotlb=2048|"
    "policy-cma|demo=bench-policy swiotlb_policy=cma cma=28M|"
    "scaling-dynamic|demo=bench-scaling swiotlb_policy=dynamic swiotlb=2048 swiotlb_dyn_pool=1|"
    "scaling-lend|demo=bench-scaling swiotlb_policy=lend|"
    "pools|demo=bench-pools,ms=$ms|"
    # The virtio features, each combination of RING_EVENT_IDX and INDIRECT_DESC.
    "features-idx-ind|demo=bench-features,ms=$ms blk_event_idx=on blk_indirect=on|"
    "features-noidx-ind|demo=bench-features,ms=$ms blk_event_idx=off blk_indirect=on|"
    "features-idx-noind|demo=bench-features,ms=$ms blk_event_idx=on blk_indirect=off|"
    "features-noidx-noind|demo=bench-features,ms=$ms blk_event_idx=off blk_indirect=off|"
)
if ((!quick)); then
    configs+=(
        "policy-lend-keep1|demo=bench-policy swiotlb_policy=lend swiotlb_keep=1|"
        "policy-lend-icount|demo=bench-policy swiotlb_policy=lend|-icount shift=0"
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
    selected=()
    for c in "${configs[@]}"; do [[ ${c%%|*} =~ $only ]] && selected+=("$c"); done
    ((${#selected[@]})) || { echo "bench.sh: --only '$only' matches no configuration" >&2; exit 2; }
    configs=("${selected[@]}")
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
        # shellcheck disable=SC2086
        if (cd "$run" && "$here/qemu-run.sh" --timeout 300 $qemu_opts "${disks[@]}" "$elf" blk_inflight_kib=0 $bootargs ${extra:+-- $extra} > "$run/console.log" 2>&1) \
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
if [[ -n $only ]]; then
    echo "bench.sh: --only: no report written; scripts/bench/report.py --results $out --doc OUT.md --plots DIR --no-plots makes one" >&2
    exit 0
fi
report
