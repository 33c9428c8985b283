#!/usr/bin/env bash
# Boots a kernel image on qemu-system-aarch64 -M virt with a device tree made for the run.
# The one way to boot this kernel: `cargo run`, the in-QEMU tests and the GDB test all come here.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<'TXT'
Usage: ./qemu-run.sh [OPTIONS] [KERNEL_ELF [BOOTARG...]] [-- EXTRA_QEMU_ARGS]

Boots KERNEL_ELF (default: builds and boots the demo kernel) on QEMU's virt machine. The device
tree is QEMU's own for the same machine options, with the repo's fragments (dts/*.dtsi) and any
--dts-fragment merged in by dtc, and /chosen/bootargs set. QEMU's exit status is the kernel's.

Options:
  --gdb               wait for a debugger before the first instruction (prints the gdb command)
  --gdb-port PORT     port for --gdb (default 1234)
  --mem SIZE          RAM size (default 512M); below 512M the repo's fragments are fitted to it
                      (a generated fitted.dtsi: DMA window = first half of RAM, pools inside it)
  --smp N             number of CPUs (default 1; the kernel brings up every one)
  --gic 2|3           GIC version (default 2)
  --el2               enter the kernel at EL2 (virtualization=on); it drops to EL1
  --disk FILE[,OPTS]  attach FILE (raw) as a virtio-blk disk (repeatable); OPTS are added to
                      QEMU's -drive, e.g. --disk a.img,readonly=on or ,throttling.bps-total=4096,
                      except serial=ID, which goes to the device (its GET_ID answer)
  --dts-fragment FILE merge a DTS fragment "/ { ... };" into the device tree (repeatable)
  --no-repo-fragments do not merge the repo's dts/*.dtsi fragments
  --no-demo-disks     boot the demo kernel without the two disks made for it (see below)
  --bootargs STRING   kernel command line (/chosen/bootargs); repeatable, joined with spaces;
                      words after KERNEL_ELF are appended too
  --timeout SECONDS   stop QEMU after SECONDS (exit status 124)
  --keep              keep the generated device tree and print where it is
  --no-semihosting    start QEMU without semihosting (as a VMM without it would): the kernel
                      prints its exit status on the UART and powers off through PSCI; this
                      script exits with that status
  --help              this text

Words after KERNEL_ELF are bootargs (key=value). For an in-QEMU test kernel (an image cargo
built under deps/), a word without '=' is a test-name filter (bootarg ktest=WORD: only cases
whose name contains it run), so
`cargo test -p kernel --test dma burst` runs the matching cases; libtest's `--skip NAME`
becomes ktest_skip=NAME, and its other flags (--nocapture, --test-threads N, ...) are ignored.

The demo kernel (an image named "kernel", as `cargo run` boots) given no --disk gets two fresh
raw disks, made with qemu-img in the run's temporary folder (kept with --keep): disk0, 32 MiB,
throttled to 32 MiB/s so that requests stay in flight as on a real device, and disk1, 8 MiB.
When the demo kernel exits 0 having printed "disk<N> bytes=<size> crc32=<hex>" lines, each is
checked against the image file on the host (size and zlib CRC-32); a mismatch exits 1.

Environment: QEMU_RUN_OPTS is read as extra OPTIONS before the command line (cargo's runner uses
it, e.g. QEMU_RUN_OPTS="--gic 3 --el2" cargo test).
TXT
}

die() { echo "qemu-run.sh: $*" >&2; exit 2; }

need() {
    local missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "qemu-run.sh: missing: ${missing[*]}" >&2
        echo "  install them with: ./scripts/setup.sh   (or as root: apt-get install -y qemu-system-arm qemu-utils gdb-multiarch device-tree-compiler)" >&2
        exit 2
    fi
}

gdb=0 gdb_port=1234 mem=512M smp=1 gic=2 el2=0 timeout_s=0 keep=0 repo_fragments=1 demo_disks=1 semihosting=1
bootargs="" elf="" disks=() fragments=() extra=() positional_bootargs=()

# shellcheck disable=SC2206
opts=(${QEMU_RUN_OPTS:-} "$@")
set -- "${opts[@]+"${opts[@]}"}"
while (($#)); do
    case "$1" in
        --help|-h) usage; exit 0 ;;
        --gdb) gdb=1 ;;
        --gdb-port) gdb_port=${2:?--gdb-port needs a port}; shift ;;
        --mem) mem=${2:?--mem needs a size}; shift ;;
        --smp) smp=${2:?--smp needs a count}; shift ;;
        --gic) gic=${2:?--gic needs 2 or 3}; shift
               [[ $gic == 2 || $gic == 3 ]] || die "--gic takes 2 or 3, not '$gic'" ;;
        --el2) el2=1 ;;
        --disk) disks+=("${2:?--disk needs a file}"); shift ;;
        --dts-fragment) fragments+=("${2:?--dts-fragment needs a file}"); shift ;;
        --no-repo-fragments) repo_fragments=0 ;;
        --no-demo-disks) demo_disks=0 ;;
        --bootargs) bootargs="${bootargs:+$bootargs }${2?--bootargs needs a string}"; shift ;;
        --timeout) timeout_s=${2:?--timeout needs seconds}; shift ;;
        --keep) keep=1 ;;
        --no-semihosting) semihosting=0 ;;
        --) shift; extra=("$@"); break ;;
        # After the kernel image, what cargo passes a test binary (`cargo test --test dma NAME
        # -- --nocapture`): libtest's flags. `--skip NAME` has a meaning here; the
        # others are about capturing output and threads, which the in-QEMU harness lacks.
        --skip) [[ -n $elf ]] || die "unknown option '$1' (see --help)"
                positional_bootargs+=("ktest_skip=${2:?--skip needs a name}"); shift ;;
        --test-threads|--color|--format|-Z|--logfile|--shuffle-seed)
            [[ -n $elf ]] || die "unknown option '$1' (see --help)"
            echo "qemu-run.sh: ignoring the test harness option '$1 ${2:-}' (tests run one by one in QEMU)" >&2
            shift $(($# > 1 ? 1 : 0)) ;;
        -*) [[ -n $elf ]] || die "unknown option '$1' (see --help)"
            echo "qemu-run.sh: ignoring the test harness option '$1' (tests run one by one in QEMU)" >&2 ;;
        *) if [[ -z $elf ]]; then elf=$1
           elif [[ $1 != *=* && $elf == */deps/* ]]; then
               positional_bootargs+=("ktest=$1")    # a test-name filter, as libtest takes it
           else positional_bootargs+=("$1")
           fi ;;
    esac
    shift
done
if ((${#positional_bootargs[@]})); then
    bootargs="${bootargs:+$bootargs }${positional_bootargs[*]}"
fi

need qemu-system-aarch64 dtc
if [[ -z $elf ]]; then
    need cargo
    (cd "$here" && cargo build -q -p kernel --bin kernel) || die "building the demo kernel failed"
    elf="$here/target/aarch64-unknown-none/debug/kernel"
fi
[[ -f $elf ]] || die "no kernel image at '$elf'"
for d in "${disks[@]+"${disks[@]}"}"; do [[ -f ${d%%,*} ]] || die "no disk image at '${d%%,*}'"; done
repo_fragment_count=0
if ((repo_fragments)); then
    repo=()
    for f in "$here"/dts/*.dtsi; do [[ -f $f ]] && repo+=("$f"); done
    repo_fragment_count=${#repo[@]}
    fragments=("${repo[@]+"${repo[@]}"}" "${fragments[@]+"${fragments[@]}"}")
fi
for f in "${fragments[@]+"${fragments[@]}"}"; do [[ -f $f ]] || die "no DTS fragment at '$f'"; done

work=$(mktemp -d "${TMPDIR:-/tmp}/qemu-run.XXXXXX")
if ((keep)); then echo "qemu-run.sh: device tree files kept in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi

# The repo's fragment plays the board's firmware, written for 512 MiB of RAM (QEMU's RAM starts
# at 0x4000_0000): a 384 MiB DMA window, the SWIOTLB pool placed inside it, a restricted pool
# at 0x4a00_0000. Firmware describes the RAM it has, so with less RAM a generated fragment,
# merged after the repo's (and before any --dts-fragment), fits it: the DMA window becomes the
# first half of RAM (so that buffers beyond it exist and bounce), the pool's alloc-ranges that
# window (its size 1/8 of RAM if 32 MiB would take more than half the window), and the
# restricted pool moves to the top of the window if it lies beyond it (a device must reach its
# restricted pool). fw-log@48000000 stays where it is: beyond 128 MiB of RAM it is the example
# of a reserved region wholly outside RAM, which the kernel skips with a warning.
# 512 MiB and more: nothing is generated, the device tree is the same as ever.
mem_mib() { # QEMU's -m SIZE in MiB (a bare number is MiB); nothing if it is not a plain size
    local s=${1^^}
    [[ $s =~ ^([0-9]+)([KMGT]?)B?$ ]] || return 0
    local n=$((10#${BASH_REMATCH[1]}))
    case ${BASH_REMATCH[2]} in
        K) echo $((n / 1024)) ;;
        M|"") echo "$n" ;;
        G) echo $((n * 1024)) ;;
        T) echo $((n * 1024 * 1024)) ;;
    esac
}
fit_repo_fragment() {
    local mib ram_base=$((0x40000000)) mib_b=$((1 << 20)) pool=$((0x2000000))
    local rpool_size=$((0x400000)) rpool=$((0x4a000000)) fw_log=$((0x48000000)) fw_log_end=$((0x48200000))
    mib=$(mem_mib "$mem")
    if [[ -z $mib ]]; then
        echo "qemu-run.sh: cannot tell the size of --mem '$mem': the repo's fragment is not fitted to it" >&2
        return 0
    fi
    ((mib < 512)) || return 0
    local window=$(((mib / 2) * mib_b & ~(2 * mib_b - 1)))
    local window_end=$((ram_base + window))
    local pool_note="32 MiB (unchanged)"
    if ((pool > window / 2)); then
        pool=$(((mib / 8) * mib_b & ~(2 * mib_b - 1)))
        ((pool >= 2 * mib_b)) || pool=$((2 * mib_b))
        pool_note="$((pool / mib_b)) MiB (1/8 of RAM)"
    fi
    local rpool_name="restricted-dma@4a000000" rpool_note="stays at 0x4a000000"
    if ((rpool + rpool_size > window_end)); then
        rpool=$((window_end - rpool_size))
        # Never over the firmware log, where it lies in RAM.
        if ((rpool < fw_log_end && rpool + rpool_size > fw_log)); then rpool=$((fw_log - rpool_size)); fi
        rpool_name=$(printf 'restricted-dma@%x' "$rpool")
        rpool_note=$(printf 'moves to %s [%#x-%#x)' "$rpool_name" "$rpool" "$((rpool + rpool_size))")
    fi
    {
        echo "// Generated by qemu-run.sh: the repo's fragment (dts/reserved-memory.dtsi) fitted to $mib MiB of RAM."
        echo "/ {"
        printf '\tdma-ranges = <0x0 %#x 0x0 %#x 0x0 %#x>;\n' "$ram_base" "$ram_base" "$window"
        echo
        printf '\treserved-memory {\n'
        printf '\t\tswiotlb-pool {\n'
        printf '\t\t\tsize = <0x0 %#x>;\n' "$pool"
        printf '\t\t\talloc-ranges = <0x0 %#x 0x0 %#x>;\n' "$ram_base" "$window"
        printf '\t\t};\n'
        if [[ $rpool_name != restricted-dma@4a000000 ]]; then
            printf '\n\t\t/delete-node/ restricted-dma@4a000000;\n'
            printf '\t\trestricted_dma: %s {\n' "$rpool_name"
            printf '\t\t\tcompatible = "restricted-dma-pool";\n'
            printf '\t\t\treg = <0x0 %#x 0x0 %#x>;\n' "$rpool" "$rpool_size"
            printf '\t\t};\n'
        fi
        printf '\t};\n'
        echo "};"
    } > "$work/fitted.dtsi"
    printf 'qemu-run.sh: %s MiB of RAM: the repo fragment fitted: DMA window [%#x-%#x) (%d MiB), SWIOTLB pool %s inside it, restricted pool %s\n' \
        "$mib" "$ram_base" "$window_end" "$((window / mib_b))" "$pool_note" "$rpool_note" >&2
    # After the repo's fragments, before the user's.
    fragments=("${fragments[@]:0:repo_fragment_count}" "$work/fitted.dtsi" "${fragments[@]:repo_fragment_count}")
}
((repo_fragments)) && fit_repo_fragment

demo=0
[[ $(basename "$elf") == kernel ]] && demo=1
if ((demo && demo_disks)) && ((${#disks[@]} == 0)); then
    need qemu-img
    qemu-img create -q -f raw "$work/disk0.img" 32M
    qemu-img create -q -f raw "$work/disk1.img" 8M
    disks=("$work/disk0.img,throttling.bps-total=33554432" "$work/disk1.img")
    echo "qemu-run.sh: demo disks $work/disk0.img (32 MiB, 32 MiB/s) and $work/disk1.img (8 MiB)" >&2
fi

machine="virt,gic-version=$gic"
((el2)) && machine+=",virtualization=on"
qemu=(qemu-system-aarch64 -cpu cortex-a72 -m "$mem" -smp "$smp" -nographic -no-reboot
      -global virtio-mmio.force-legacy=false)
i=0
for d in "${disks[@]+"${disks[@]}"}"; do
    file=${d%%,*} drive_opts="" device_opts=""
    if [[ $d == *,* ]]; then
        IFS=, read -ra words <<< "${d#*,}"
        for w in "${words[@]}"; do
            # serial= belongs to the device (GET_ID answers with it), the rest to the drive.
            if [[ $w == serial=* ]]; then device_opts+=",$w"; else drive_opts+=",$w"; fi
        done
    fi
    qemu+=(-drive "if=none,format=raw,file=$file,id=disk$i$drive_opts"
           -device "virtio-blk-device,drive=disk$i,iommu_platform=on$device_opts")
    i=$((i + 1))
done

# 1. QEMU's own device tree for exactly these machine options.
"${qemu[@]}" -M "$machine,dumpdtb=$work/qemu.dtb" >/dev/null 2>"$work/dump.log" \
    || { cat "$work/dump.log" >&2; die "QEMU could not dump its device tree"; }
# 2. Merge the fragments, the way dtc merges a node defined twice, and set bootargs.
dtc -q -I dtb -O dts -o "$work/qemu.dts" "$work/qemu.dtb"
{
    cat "$work/qemu.dts"
    for f in "${fragments[@]+"${fragments[@]}"}"; do echo; echo "// ---- $f"; cat "$f"; done
    escaped=${bootargs//\\/\\\\}; escaped=${escaped//\"/\\\"}
    printf '\n/ { chosen { bootargs = "%s"; }; };\n' "$escaped"
} > "$work/run.dts"
dtc -q -I dts -O dtb -o "$work/run.dtb" "$work/run.dts" 2>"$work/dtc.log" \
    || { cat "$work/dtc.log" >&2; die "dtc could not build the device tree (fragments: ${fragments[*]-none})"; }

qemu+=(-M "$machine" -kernel "$elf" -dtb "$work/run.dtb")
((semihosting)) && qemu+=(-semihosting-config "enable=on,target=native")
if ((gdb)); then
    qemu+=(-S -gdb "tcp::$gdb_port")
    echo "qemu-run.sh: QEMU waits for a debugger on port $gdb_port. In another terminal:" >&2
    echo "  gdb-multiarch -q -x $here/gdb/kernel.gdb -ex 'target remote :$gdb_port' $elf" >&2
fi
qemu+=("${extra[@]+"${extra[@]}"}")

set +e
if ((timeout_s > 0)); then
    timeout --foreground -k 5 "$timeout_s" "${qemu[@]}"
else
    "${qemu[@]}"
fi 2>&1 | tee "$work/console.log"   # the UART and semihosting's stderr, in the order written
status=${PIPESTATUS[0]}
set -e
((status == 124)) && echo "qemu-run.sh: QEMU stopped after the ${timeout_s}s timeout" >&2
# Without semihosting QEMU's own status is 0 after PSCI SYSTEM_OFF: the kernel's is on the UART.
if ((!semihosting && status == 0)); then
    said=$(grep -aoE '^exit status [0-9]+ \(no semihosting' "$work/console.log" | tail -1 | awk '{print $3}')
    if [[ -n $said ]]; then
        status=$said
    else
        echo "qemu-run.sh: the kernel powered off without printing its exit status" >&2
        status=1
    fi
fi

# The host's side of the demo: what the kernel read back must be what is in the image files.
if ((demo && status == 0)) && grep -Eq '^disk[0-9]+ bytes=[0-9]+ crc32=' "$work/console.log"; then
    files=()
    for d in "${disks[@]}"; do files+=("${d%%,*}"); done
    python3 - "$work/console.log" "${files[@]}" <<'PY' || status=1
import re, sys, zlib
log, files = sys.argv[1], sys.argv[2:]
bad = 0
for line in open(log, errors="replace"):
    m = re.match(r"^disk(\d+) bytes=(\d+) crc32=([0-9a-f]{8})\s*$", line)
    if not m:
        continue
    n, size, crc = int(m[1]), int(m[2]), m[3]
    if n >= len(files):
        print(f"qemu-run.sh: host check FAILED: the kernel reported disk{n}, only {len(files)} attached")
        bad = 1
        continue
    data = open(files[n], "rb").read()
    got = "%08x" % zlib.crc32(data)
    if (len(data), got) != (size, crc):
        print(f"qemu-run.sh: host check FAILED: disk{n} image {files[n]} has {len(data)} bytes, crc32={got}; the kernel read {size} bytes, crc32={crc}")
        bad = 1
    else:
        print(f"qemu-run.sh: host check: disk{n} image ({size} bytes) has crc32={crc}, what the kernel read back")
sys.exit(bad)
PY
fi
exit "$status"
