"""The "Scaling over CPUs" section of EVALUATION.md, from the `smp-map-*` and
`smp-io-*` results of scripts/bench.sh.

- `bench-smp-map`: map+unmap throughput from every CPU's timer interrupt with 1, 2 and 4 vCPUs,
  one SWIOTLB area against one per CPU, under each policy booted.
- `bench-smp-io`: disks 0 and 2 reading at once, their interrupts on two CPUs or on one.

Every figure and every word of a comparison comes from the data: medians with [min–max] over
the rounds; ratios taken inside one round (the two boots of a pair run back to back) and then
summarised; a ratio whose range spans 1 is called "within noise". The host's core count comes
from machine.json's `nproc`. No matplotlib needed (`test_report_smp.py` runs anywhere).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import fmt, fmt_summary, median, paired_ratios, summary  # noqa: E402

MODES = {"skip_sync": "no copy (slot search and locks)", "copy": "copied in"}


def workload(pattern, size, qd):
    return f"{size // 1024} KiB {'sequential' if pattern == 'seq' else 'random'} reads, QD {qd} per disk"


def boots(runs, kind):
    """Every boot of benchmark `kind` as (config, round, data)."""
    return [(c, r, d) for c, v in sorted(runs.items()) for r, d in v if d.get("kind") == kind]


def ratio_words(s, higher, lower):
    """How a ratio summary (median, min, max, n) reads: `higher`/`lower` only when every round
    agrees; "within noise" when the min–max range spans 1."""
    med, lo, hi, n = s
    if n == 0:
        return "not measured"
    if n < 2:
        return f"{higher if med > 1 else lower if med < 1 else 'equal'} in the one round measured (no range to judge the noise by)"
    if lo <= 1 <= hi:
        return "within noise"
    return f"{higher} in every round" if lo > 1 else f"{lower} in every round"


def ratio_cell(s, higher, lower):
    return f"{fmt_summary(s, 3)}: {ratio_words(s, higher, lower)}" if s[3] else "-"


# ---------------------------------------------------------------- map+unmap from interrupts


def map_points(runs):
    """{(policy, cpus, areas, mode): {round: cell}} with `areas` "one" or "per-CPU", and the
    boots' `area_free_slots` by (policy, cpus, areas)."""
    points, free = {}, {}
    for _, rnd, d in boots(runs, "smp-map"):
        areas = "one" if d["nareas"] == 1 else "per-CPU"
        key = (d.get("policy", "?"), d["cpus"], areas)
        free.setdefault(key, []).append((d["nareas"], d.get("area_free_slots", [])))
        for c in d["cells"]:
            points.setdefault(key + (c["mode"],), {})[rnd] = c
    return points, free


def handler_ns_per_op(cell):
    busy = sum(p["busy_ns"] for p in cell["per_cpu"])
    ops = sum(p["ops"] for p in cell["per_cpu"])
    return busy / ops if ops else None


def outside_share(cell):
    ops = sum(p["ops"] for p in cell["per_cpu"])
    return sum(p.get("outside_own_area", 0) for p in cell["per_cpu"]) / ops if ops else None


def paired(a, b, f):
    """Same-round ratios f(a)/f(b) of two {round: cell} maps."""
    return paired_ratios([(f(a[r]), f(b[r])) for r in a if r in b])


def map_section(runs, nproc):
    points, free = map_points(runs)
    if not points:
        return "No `smp-map` results.\n", []
    tput = lambda c: c["ops_per_s"]
    setup = lambda k: median([d.get(k) for _, _, d in boots(runs, "smp-map")])
    tick_ms, slice_ms = (setup("tick_us") or 0) / 1000, (setup("slice_us") or 0) / 1000
    window_ms = median([c["window_ns"] / 1e6 for v in points.values() for c in v.values()])
    map_kib = (setup("map_len") or 0) / 1024
    lines = [
        f"Every online vCPU maps and unmaps bounce buffers of {fmt(map_kib)} KiB (from beyond the DMA window) in a loop from its "
        f"own timer interrupt (a {fmt(tick_ms)} ms tick, up to {fmt(slice_ms)} ms of mapping per interrupt) for "
        f"{fmt(window_ms)} ms of wall time; map+unmaps are counted per CPU. `swiotlb=<slots>,1` gives the pool one area "
        "(one lock for every CPU), `swiotlb=<slots>,<CPUs>` one area per CPU (a mapping starts in its CPU's area, Linux "
        "`swiotlb_find_slots`). **no copy**: `DMA_ATTR_SKIP_CPU_SYNC`, so the slot search and the locks are "
        "what is measured; **copied in**: the buffer is copied into the slot. Throughput: map+unmaps per second, "
        "all CPUs together, median [min–max] over the rounds; *× 1 CPU*: against the 1-vCPU boot of the same "
        "round, policy and mode; *ns in handler*: handler time per map+unmap; *lock waits*: area lock "
        "acquisitions that found the lock taken, per 1000 map+unmaps; *outside own area*: the share of "
        "mappings whose slots were not in their CPU's area.",
        "",
        "| policy | mode | vCPUs | areas | map+unmaps/s | per CPU | × 1 CPU | ns in handler | lock waits /1000 | outside own area |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []  # (policy, mode, cpus, summary of per-CPU / one area)
    for key in sorted(points, key=lambda k: (k[0], list(MODES).index(k[3]) if k[3] in MODES else 9, k[1], k[2] != "one")):
        policy, cpus, areas, mode = key
        cells = points[key]
        base = points.get((policy, 1, "one", mode), {})
        vs1 = summary(paired(cells, base, tput)) if cpus != 1 else (None, None, None, 0)
        lines.append(
            f"| `{policy}` | {MODES.get(mode, mode)} | {cpus} | {areas if cpus > 1 else 'one'} | "
            f"{fmt_summary(summary([c['ops_per_s'] for c in cells.values()]))} | "
            f"{fmt_summary(summary([c['ops_per_s'] / cpus for c in cells.values()]))} | "
            f"{fmt_summary(vs1, 3) if vs1[3] else '-'} | "
            f"{fmt_summary(summary([handler_ns_per_op(c) for c in cells.values()]))} | "
            f"{fmt_summary(summary([1000 * c['area_lock_contended'] / c['ops'] if c['ops'] else None for c in cells.values()]))} | "
            f"{fmt_summary(summary([outside_share(c) for c in cells.values()]), 2, 100) + ' %' if cpus > 1 and areas != 'one' else '-'} |"
        )
        if areas == "per-CPU" and cpus > 1 and (policy, cpus, "one", mode) in points:
            ratios.append((policy, mode, cpus, summary(paired(cells, points[(policy, cpus, "one", mode)], tput))))
    failures = sum(c["failures"] for v in points.values() for c in v.values())
    if failures:
        lines += ["", f"**{failures} maps or unmaps failed** in interrupt context over all boots (counted, not retried)."]
    lines += ["", "**Per-CPU areas against one area** (total throughput, same round):", ""]
    lines += ["| policy | mode | vCPUs | per-CPU areas / one area |", "|---|---|---|---|"]
    for policy, mode, cpus, s in ratios:
        lines.append(f"| `{policy}` | {MODES.get(mode, mode)} | {cpus} | {ratio_cell(s, 'faster', 'slower')} |")
    lines += ["", areas_discussion(points, free, nproc)]
    return "\n".join(lines) + "\n", ratios


def areas_discussion(points, free, nproc):
    """Where the mappings of per-CPU-area boots landed, from the boots' free slots per area."""
    out = []
    for (policy, cpus, areas), boots_free in sorted(free.items()):
        if areas != "per-CPU" or cpus < 2:
            continue
        empty = [sum(1 for n in f if n == 0) for _, f in boots_free if f]
        nareas = median([n for n, _ in boots_free])
        shares = [outside_share(c) for (p, n, a, _), v in points.items() if (p, n, a) == (policy, cpus, areas) for c in v.values()]
        share = median(shares)
        if not empty:
            continue
        if median(empty):
            out.append(
                f"Under `{policy}` with {cpus} vCPUs, {fmt(median(empty))} of the {fmt(nareas)} areas had no free slot "
                f"when the benchmark started (median over the boots): the free slots were all in the "
                f"other areas, so {fmt(share * 100 if share is not None else None, 2)} % of the mappings (median) "
                "were made outside their CPU's area, and those CPUs share a lock after all."
            )
        else:
            out.append(
                f"Under `{policy}` with {cpus} vCPUs every area had free slots at the start; "
                f"{fmt(share * 100 if share is not None else None, 2)} % of the mappings (median) were made outside their CPU's area."
            )
    return " ".join(out) + ("\n" if out else "")


# ---------------------------------------------------------------- two disks, interrupts spread or not


def io_points(runs):
    """{(cpus, routing, pattern, size): {round: cell}}, routing "spread" or "one CPU" as the
    kernel reported the interrupts' CPUs."""
    points = {}
    for _, rnd, d in boots(runs, "smp-io"):
        routing = "spread" if d["irq_cpus"] > 1 else "one CPU"
        for c in d["cells"]:
            points.setdefault((d["cpus"], routing, c["pattern"], c["size"], c["qd"]), {})[rnd] = c
    return points


def lock_waits(cell):
    """Disk lock acquisitions that waited, per 1000 requests, both disks together."""
    ops = sum(d["ops"] for d in cell["disks"])
    return 1000 * sum(d.get("disk_lock_contended", 0) for d in cell["disks"]) / ops if ops else None


def io_section(runs):
    points = io_points(runs)
    if not points:
        return "No `smp-io` results.\n", []
    mib = lambda c: c["total_mib_s"]
    lines = [
        "Disks 0 and 2 read at once, bounced (their buffers lie beyond the DMA window, so every completion "
        "copies the data back in the disk's interrupt handler); the requests are submitted from CPU 0, "
        "which polls for completions (sleeping in WFI, it would not wake for an interrupt routed to another CPU). "
        "**spread**: `irq_affinity=` routes each disk's interrupt to its own CPU; **one CPU**: both to CPU 0. "
        "Throughput of both disks together, MiB/s, median [min–max]; the ratio is spread / one CPU at the same "
        "vCPU count, same round; *disk lock waits*: acquisitions of a disk's lock that found it taken (the "
        "submitting CPU's polling against a completion handler on another CPU), per 1000 requests.",
        "",
        "| vCPUs | workload | spread MiB/s | one CPU MiB/s | spread / one CPU | disk lock waits /1000, spread | … one CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for cpus, pattern, size, qd in sorted({(k[0], k[2], k[3], k[4]) for k in points}):
        spread = points.get((cpus, "spread", pattern, size, qd), {})
        one = points.get((cpus, "one CPU", pattern, size, qd), {})
        s = summary(paired(spread, one, mib))
        ratios.append((cpus, workload(pattern, size, qd), s))
        lines.append(
            f"| {cpus} | {workload(pattern, size, qd)} | "
            f"{fmt_summary(summary([mib(c) for c in spread.values()]))} | {fmt_summary(summary([mib(c) for c in one.values()]))} | "
            f"{ratio_cell(s, 'faster spread', 'slower spread')} | "
            f"{fmt_summary(summary([lock_waits(c) for c in spread.values()]))} | {fmt_summary(summary([lock_waits(c) for c in one.values()]))} |"
        )
    return "\n".join(lines) + "\n", ratios


# ---------------------------------------------------------------- the section


def host_caveat(runs, nproc):
    """What this host can and cannot show, from its core count and the vCPU counts booted."""
    vcpus = sorted({d["cpus"] for kind in ("smp-map", "smp-io") for _, _, d in boots(runs, kind)})
    if not vcpus:
        return ""
    if not isinstance(nproc, int) or nproc < 1:
        return f"The host's core count is not in machine.json, so whether the {', '.join(map(str, vcpus))} vCPUs had a core each is unknown.\n"
    over = [n for n in vcpus if n > nproc]
    text = (
        f"The host has {nproc} core{'s' if nproc != 1 else ''} (machine.json's `nproc`), shared with other work; "
        "under MTTCG each vCPU is a host thread. "
    )
    if over:
        text += (
            f"With {' and '.join(map(str, over))} vCPUs there are more vCPUs than host cores, so scaling beyond "
            f"{nproc} CPU{'s' if nproc != 1 else ''} cannot be measured on this host: those rows show what sharing "
            "the cores costs (a vCPU that holds a lock can be descheduled by the host while others spin on it), "
            "not how the design scales.\n"
        )
    else:
        text += f"No configuration had more vCPUs ({max(vcpus)} at most) than the host has cores, so each could have had a core of its own, as far as the other work on the host allowed.\n"
    return text


def section(runs, machine):
    """The section's markdown (without its heading)."""
    nproc = machine.get("nproc")
    map_md, map_ratios = map_section(runs, nproc)
    io_md, io_ratios = io_section(runs)
    if not boots(runs, "smp-map") and not boots(runs, "smp-io"):
        return "No `smp-*` results in this run.\n"
    md = [host_caveat(runs, nproc), "### Map+unmap from interrupt handlers\n", map_md, "### Two disks, interrupts spread or on one CPU\n", io_md]
    summary_lines = []
    for policy, mode, cpus, s in map_ratios:
        if s[3]:
            summary_lines.append(f"- `{policy}`, {MODES.get(mode, mode)}, {cpus} vCPUs: per-CPU areas / one area {fmt_summary(s)}, {ratio_words(s, 'faster', 'slower')}.")
    for cpus, what, s in io_ratios:
        if s[3]:
            summary_lines.append(
                f"- {cpus} vCPUs, {what}: spread / one CPU {fmt_summary(s)}, {ratio_words(s, 'faster spread', 'slower spread')}."
            )
    if summary_lines:
        md += ["In short (same-round ratios, median [min–max]):\n", "\n".join(summary_lines) + "\n"]
    return "\n".join(md)
