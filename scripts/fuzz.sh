#!/usr/bin/env bash
# Builds and runs every fuzz target in fuzz/ (libFuzzer, coverage-guided, stable Rust) for a
# bounded time each, starting from the seed corpus, and fails if any target finds a crash, a
# hang or an out-of-memory. Prints one "fuzz: <target> ok|FAILED" line per target and a closing
# "fuzz: N passed, N failed" (N counts targets).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    default: 45 s, every target
#   FUZZ_RUNS=N scripts/fuzz.sh SECONDS TARGET          stop a target after N executions (or
#                                                       SECONDS, whichever comes first): the long runs
#
# Stable Rust, no cargo-fuzz: we pass the flags `cargo fuzz build -s none` would (SanitizerCoverage
# with inline 8-bit counters, PC table and comparison tracing, `--cfg fuzzing`) ourselves and link
# libFuzzer from the `libfuzzer-sys` crate, which builds it with the C++ compiler. cargo-fuzz's
# default mode needs nightly (`-Zsanitizer=address`); Rust's own checks (bounds, overflow: the
# fuzz profile keeps overflow checks and debug assertions on) stand in for AddressSanitizer.
#
# The corpus grows in $CARGO_TARGET_DIR/fuzz/corpus/<target> (kept between runs); crashes go to
# $CARGO_TARGET_DIR/fuzz/artifacts/<target>/. Reproduce one with the printed command.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here" || exit 2

seconds=${1:-45}
shift $(($# > 0 ? 1 : 0))
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }
all_targets=(fdt virtio_blk virtio_blk_reset)
targets=("${@:-${all_targets[@]}}")

host=$(rustc -vV | sed -n 's/^host: //p')   # the machine's own triple (x86_64, arm64, macOS)
out=${CARGO_TARGET_DIR:-$here/target}/fuzz
command -v cargo >/dev/null || { echo "fuzz: cargo not found (install Rust with rustup)" >&2; exit 2; }
command -v c++ >/dev/null || command -v g++ >/dev/null \
    || { echo "fuzz: a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2; exit 2; }
rustup target list --installed 2>/dev/null | grep -qx "$host" || rustup target add "$host" >/dev/null 2>&1 || true

# Coverage instrumentation for our code only: with --target, build scripts and proc macros are
# built without these flags.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "fuzz: building ${targets[*]} ($out)"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
if ! CARGO_TARGET_DIR=$out cargo build --release --manifest-path fuzz/Cargo.toml \
        --target "$host" "${bins[@]}"; then
    echo "fuzz: build failed"
    echo "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
fi
unset RUSTFLAGS

# Extra FDT seeds from this machine's QEMU, built the way qemu-run.sh builds the boot tree.
if command -v qemu-system-aarch64 >/dev/null && command -v dtc >/dev/null; then
    fuzz/seeds/make-fdt-seeds.sh "$out/seeds-qemu/fdt" >/dev/null 2>&1 || true
fi

passed=0 failed=0
for t in "${targets[@]}"; do
    bin=$out/$host/release/$t
    corpus=$out/corpus/$t artifacts=$out/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    seeds=("fuzz/seeds/$t")
    case $t in
        fdt) seeds+=(kernel/src/dt/testdata); [[ -d $out/seeds-qemu/fdt ]] && seeds+=("$out/seeds-qemu/fdt"); max_len=16384 ;;
        # The same script format with three more operations: start from virtio_blk's seeds.
        virtio_blk_reset) seeds=(fuzz/seeds/virtio_blk); max_len=4096 ;;
        *) max_len=4096 ;;
    esac
    log=$out/$t.log
    echo "fuzz: $t for ${seconds}s (corpus $corpus, log $log)"
    runs_limit=()
    [[ -n ${FUZZ_RUNS:-} ]] && runs_limit=(-runs="$FUZZ_RUNS")
    "$bin" "${runs_limit[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=$max_len \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1
    status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    if ((status == 0)); then
        passed=$((passed + 1))
        echo "fuzz: $t ok (${runs:-?} runs, ${cov:-cov: ?}, corpus $(find "$corpus" -maxdepth 1 -type f | wc -l) inputs)"
    else
        failed=$((failed + 1))
        echo "fuzz: $t FAILED (exit $status); the end of $log:"
        grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -25 | sed 's/^/    /'
        crash=$(find "$artifacts" -maxdepth 1 -type f -printf '%T@ %f\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
        [[ -n $crash ]] && echo "fuzz: reproduce: $bin $artifacts/$crash"
    fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
