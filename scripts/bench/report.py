#!/usr/bin/env python3
"""Turns the benchmark kernel's JSON (scripts/bench.sh) into docs/EVALUATION.md and its plots.

Every number in the document comes from the JSON of the run: medians over the rounds with min
and max, ratios taken inside one boot (paired) and then summarised. Targets are checked here
and reported as met or missed; nothing is hard-coded but the targets themselves. The
prose too: each figure in it is computed from the run, and each claim that rests on a
comparison is worded from the comparison's outcome (`test_report.py` feeds two different
synthetic runs and checks that). Without matplotlib (`--no-plots`, the unit tests) the text is
made without its plots.
"""

import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats import fmt, fmt_summary, fmt_summary_against, median, paired_ratios, summary  # noqa: E402
import report_smp  # noqa: E402

try:
    import matplotlib  # noqa: E402

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: E402
    import matplotlib.ticker  # noqa: E402
    from matplotlib.patches import Patch  # noqa: E402
except ImportError:  # the text alone (the unit tests); bench.sh provides matplotlib for the plots
    matplotlib = plt = Patch = None

KIB = 1024
MIB = 1024 * 1024
POLICIES = [
    "policy-lend",
    "policy-cma",
    "policy-static",
    "policy-dynamic",
    "policy-dynamic-small",
    "policy-lend-keep1",
    "policy-lend-scrub",
    "policy-lend-icount",
]
POLICY_LABEL = {
    "policy-lend": "`lend`",
    "policy-cma": "`cma`, `cma=28M`",
    "policy-static": "`static`",
    "policy-dynamic": "`dynamic`",
    "policy-dynamic-small": "`dynamic`, `swiotlb=2048`",
    "policy-lend-keep1": "`lend`, `swiotlb_keep=1`",
    "policy-lend-scrub": "`lend`, `swiotlb_reclaim_scrub=on`",
    "policy-lend-icount": "`lend` under `-icount shift=0` (instructions)",
}


def load(results):
    """{config: [(round, data)]} from r<round>-<config>.json, and the machine description."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(results, "r*-*.json"))):
        m = re.match(r"r(\d+)-(.+)\.json$", os.path.basename(path))
        if not m:
            continue
        with open(path) as f:
            runs.setdefault(m.group(2), []).append((int(m.group(1)), json.load(f)))
    for v in runs.values():
        v.sort(key=lambda rd: rd[0])
    machine = {}
    mpath = os.path.join(results, "machine.json")
    if os.path.exists(mpath):
        with open(mpath) as f:
            machine = json.load(f)
    tpath = os.path.join(results, "insn-trace.json")
    if os.path.exists(tpath):
        with open(tpath) as f:
            machine["insn_trace"] = json.load(f)
    failed = sorted(os.path.basename(p) for p in glob.glob(os.path.join(results, "*.failed.log")))
    return runs, machine, failed


class Targets:
    """The issue's targets, each checked against the measurements."""

    def __init__(self):
        self.rows = []

    def add(self, what, target, measured, met):
        self.rows.append((what, target, measured, met))

    def table(self):
        out = ["| target | wanted | measured (median [min–max]) | met? |", "|---|---|---|---|"]
        for what, target, measured, met in self.rows:
            verdict = "n/a" if met is None else ("**met**" if met else "**missed**")
            out.append(f"| {what} | {target} | {measured} | {verdict} |")
        return "\n".join(out)


def size_label(size):
    return f"{size // KIB} KiB"


# ---------------------------------------------------------------- 1. bounce cost


def io_cells(runs, config):
    """{(pattern, op, size, qd, placement): [cell per round]} and {size: [memcpy per round]}."""
    cells, memcpy = {}, {}
    for rnd, d in runs.get(config, []):
        for c in d["cells"]:
            cells.setdefault((c["pattern"], c["op"], c["size"], c["qd"], c["placement"]), []).append((rnd, c))
        for m in d["memcpy"]:
            memcpy.setdefault(m["size"], []).append((rnd, m))
    return cells, memcpy


def bounce_section(runs, targets, plots_dir):
    cells, memcpy = io_cells(runs, "io")
    fcells, _ = io_cells(runs, "io-force")
    if not cells:
        return "No `io` results.\n", None
    keys = sorted({k[:4] for k in cells}, key=lambda k: (k[2], k[3], k[0], k[1]))
    lines = [
        "Disk 0, one stream; **direct**: the buffers lie inside the DMA window (only the request "
        "header and the status byte bounce, as always for this DMA-limited device); **bounced**: the "
        "buffers lie beyond the window, so every data buffer is copied through the SWIOTLB; both in the "
        f"same boot, {'alternated in slices (see the method)' if any(c.get('slices', 1) > 1 for v in cells.values() for _, c in v) else 'alternated cell by cell'}. **forced**: `swiotlb=force` (another boot), the in-window "
        "buffers bounced too. Throughput in MiB/s; the ratio is bounced/direct taken inside each boot.",
        "",
        "| pattern | op | size | QD | direct MiB/s | bounced MiB/s | forced MiB/s | bounced/direct | direct IOPS | bounced IOPS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratio_by_key = {}
    for k in keys:
        d = dict(cells.get(k + ("direct",), []))
        b = dict(cells.get(k + ("bounced",), []))
        f = dict(fcells.get(k + ("direct",), []))
        ratios = paired_ratios([(b[r]["mib_s"], d[r]["mib_s"]) for r in d if r in b])
        ratio_by_key[k] = summary(ratios)
        lines.append(
            f"| {k[0]} | {k[1]} | {size_label(k[2])} | {k[3]} | "
            f"{fmt_summary(summary([c['mib_s'] for c in d.values()]))} | "
            f"{fmt_summary(summary([c['mib_s'] for c in b.values()]))} | "
            f"{fmt_summary(summary([c['mib_s'] for c in f.values()]))} | "
            f"{fmt_summary(ratio_by_key[k], 2)} | "
            f"{fmt_summary(summary([c['iops'] for c in d.values()]))} | "
            f"{fmt_summary(summary([c['iops'] for c in b.values()]))} |"
        )
    # Targets at 64 KiB QD 16.
    qd16 = [(k, ratio_by_key[k]) for k in keys if k[2] == 64 * KIB and k[3] == 16]
    for k, s in qd16:
        targets.add(
            f"64 KiB QD 16 {k[0]} {k[1]}: bounced/direct",
            "≥ 0.9",
            fmt_summary_against(s, 0.9, 2),
            None if s[0] is None else s[0] >= 0.9,
        )

    # Targets at QD 1, sequential: every cell.
    for k in keys:
        if k[3] == 1 and k[0] == "seq":
            s = ratio_by_key[k]
            targets.add(
                f"QD 1 seq {k[1]} {size_label(k[2])}: bounced/direct",
                "≥ 0.9",
                fmt_summary_against(s, 0.9, 2),
                None if s[0] is None else s[0] >= 0.9,
            )

    # The time a bounce adds at QD 1, against a memcpy of the same size in the same boot.
    sliced = io_sliced(runs)
    lines += [
        "",
        "**The time a bounce adds to one request at queue depth 1** (nothing overlaps): the "
        "bounced request's latency minus the direct one's, in the same boot"
        + (
            " (the cells ran in slices: the median over the slices of a bounced slice's latency minus that of "
            "the direct slice run next to it, so that a slice the host slowed down does not carry the cell)"
            if sliced
            else ""
        )
        + ", set against a plain "
        "memcpy of the same size measured in that boot. Two memcpy references: *memcpy* copies "
        "between pages that do not share QEMU's softmmu TLB entries (the usual case for a bounce, "
        "whose slot and buffer rarely alias), *aliasing memcpy* between two 1 MiB-aligned buffers "
        "whose pages evict each other from that direct-mapped TLB on every access (see the notes).",
        "",
        "| pattern | op | size | direct µs | bounced µs | added µs | memcpy µs | added/memcpy | aliasing memcpy µs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mc = {s: dict(v) for s, v in memcpy.items()}
    added_ratio = {}
    for k in keys:
        if k[3] != 1:
            continue
        d = dict(cells.get(k + ("direct",), []))
        b = dict(cells.get(k + ("bounced",), []))
        m = mc.get(k[2], {})
        added = [added_latency(d[r], b[r]) for r in d if r in b]
        ratios = paired_ratios([(added_latency(d[r], b[r]), m[r]["ns"]) for r in d if r in b and r in m])
        added_ratio[k] = summary(ratios)
        lines.append(
            f"| {k[0]} | {k[1]} | {size_label(k[2])} | "
            f"{fmt_summary(summary([c['lat_ns'] for c in d.values()]), scale=1e-3)} | "
            f"{fmt_summary(summary([c['lat_ns'] for c in b.values()]), scale=1e-3)} | "
            f"{fmt_summary(summary(added), scale=1e-3)} | "
            f"{fmt_summary(summary([x['ns'] for x in m.values()]), scale=1e-3)} | "
            f"{fmt_summary(added_ratio[k], 2)} | "
            f"{fmt_summary(summary([x['aliasing_ns'] for x in m.values()]), scale=1e-3)} |"
        )
    for k, s in added_ratio.items():
        if k[2] == 64 * KIB:
            targets.add(
                f"QD 1 {k[0]} {k[1]} 64 KiB: time a bounce adds / memcpy",
                "≤ 1.1",
                fmt_summary_against(s, 1.1, 2),
                None if s[0] is None else s[0] <= 1.1,
            )
    added_targets(runs, targets)
    plot = plot_throughput(cells, fcells, keys, plots_dir) if plots_dir else None
    extra = [throttled_section(runs, targets), cpu_per_byte_section(runs), clean_section(runs), kicks_section(runs, targets)]
    return "\n".join(lines) + "\n\n" + "\n".join(extra), plot


def io_slicing(runs):
    """How the `bench-io` configurations ran their cells, for the Method: those whose cells were
    split into slices (the cells' `slices`), direct and bounced alternated ABBA, with the slice
    count and length from the results; the others, direct and bounced one after the other."""
    by_n, whole = {}, []
    for config in ("io", "io-icount", "io-force", "io-throttled"):
        boots = [(d, c) for _, d in runs.get(config, []) for c in d.get("cells", [])]
        if not boots:
            continue
        ns = {c.get("slices", 1) for _, c in boots}
        if ns == {1}:
            whole.append(f"`{config}`")
            continue
        qds = sorted({c["qd"] for _, c in boots})
        ms = {d["cell_ms"] / c["slices"] for d, c in boots if d.get("cell_ms") and c.get("slices")}
        key = (tuple(sorted(ns)), tuple(sorted(ms)))
        by_n.setdefault(key, []).append(f"the {' and '.join(f'QD {q}' for q in qds)} cells of `{config}`")
    parts = []
    for (ns, ms), what in by_n.items():
        length = f" of {' or '.join(fmt(x) for x in ms)} ms" if ms else ""
        parts.append(
            f"{' and '.join(what)} run in {' or '.join(str(n) for n in ns)} slices{length}, direct and bounced "
            "alternated ABBA (direct then bounced in the even slices, bounced then direct in the odd ones), each "
            "placement's cell the sum of its slices (one stream going on, the counters taken around each slice), "
            "so that a drift of the host's I/O speed hits both placements alike"
        )
    if whole:
        parts.append(f"in {', '.join(whole)} direct and bounced run one after the other, direct first")
    return "; ".join(parts)


def throttle_of(runs, config):
    """The bandwidth limit disk 0 had in `config`'s boots (bytes/s, as each boot recorded it from
    its `throttle=`), or None if unthrottled or not run; several values (should not happen) give
    the smallest."""
    values = {d.get("throttle_bps") for _, d in runs.get(config, []) if d.get("throttle_bps")}
    return min(values) if values else None


def throttle_label(bps):
    """A throttle in the units a reader knows: MiB/s and MB/s, and the bytes/s QEMU was given."""
    return f"{fmt(bps / MIB)} MiB/s ({fmt(bps / 1e6)} MB/s, `throttling.bps-total={bps}`)"


def pair_ratio(cells, k, field):
    """bounced/direct of `field` for the cell key `k`, per boot: the summary."""
    d = dict(cells.get(k + ("direct",), []))
    b = dict(cells.get(k + ("bounced",), []))
    return summary(paired_ratios([(b[r].get(field), d[r].get(field)) for r in d if r in b]))


def throttled_section(runs, targets):
    """Bounce cost with disk 0 throttled to a real SSD's bandwidth (`io-throttled`)."""
    cells, _ = io_cells(runs, "io-throttled")
    bps = throttle_of(runs, "io-throttled")
    if not cells:
        return "No `io-throttled` results.\n"
    limit = bps / MIB if bps else None
    keys = sorted({k[:4] for k in cells}, key=lambda k: (k[2], k[3], k[0], k[1]))
    lines = [
        "**With the device throttled** (`io-throttled`): the same cells, but QEMU limits disk 0 to "
        + (throttle_label(bps) if bps else "an unrecorded throttle")
        + ", about a real SSD's bandwidth, so that the device and not the host's page cache sets the pace; "
        "the question is whether the bounce copies hide behind the device's work. bounced/direct is taken "
        "inside each boot, median [min–max] over the rounds.",
        "",
        "| pattern | op | size | QD | direct MiB/s | bounced MiB/s | throttle MiB/s | bounced/direct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        d = [c["mib_s"] for _, c in cells.get(k + ("direct",), [])]
        b = [c["mib_s"] for _, c in cells.get(k + ("bounced",), [])]
        lines.append(
            f"| {k[0]} | {k[1]} | {size_label(k[2])} | {k[3]} | {fmt_summary(summary(d))} | {fmt_summary(summary(b))} | "
            f"{fmt(limit)} | {fmt_summary(pair_ratio(cells, k, 'mib_s'), 2)} |"
        )
    for k in keys:
        if k[2] == 64 * KIB and k[3] == 16:
            s = pair_ratio(cells, k, "mib_s")
            targets.add(
                f"64 KiB QD 16 {k[0]} {k[1]}, device throttled to {fmt(limit)} MiB/s: bounced/direct",
                "≥ 0.95",
                fmt_summary_against(s, 0.95, 2),
                None if s[0] is None else s[0] >= 0.95,
            )
    return "\n".join(lines) + "\n"


IO_CPU_CONFIGS = [("io", "ns"), ("io-throttled", "ns"), ("io-icount", "instructions")]


def io_scrubs(runs):
    """Whether the `io` benchmark's loop scrubbed while it waited (results that record a memset
    reference and the slots scrubbed per cell; older ones slept in WFI only)."""
    return any("memset_ns" in m for _, d in runs.get("io", []) for m in d.get("memcpy", []))


def cpu_per_byte_section(runs):
    """The guest CPU time a bounce costs per byte, next to memcpy per byte of the same boot."""
    lines = [
        "**The CPU time a bounce costs per bounced byte, next to a memcpy per byte.** Per cell the guest's "
        "*busy time* is the cell's elapsed time minus the time its loop slept in WFI waiting for a completion: "
        "submissions (map, copy to the slots, descriptors, the kick), the interrupt handler (completion, unmap, "
        "copy back) and the loop itself"
        + (", its scrubbing of free bounce slots while it waits included" if io_scrubs(runs) else "")
        + ". Under TCG the time of QEMU's device emulation that runs on the vCPU's "
        "thread (the MMIO kick) counts as busy too; under `-icount` (`io-icount`, queue depth 1) busy time is "
        "guest instructions. *bounce per byte* = (busy per request bounced − busy per request direct) ÷ request "
        "bytes, both in the same boot; *memcpy per byte* = the same boot's memcpy of that size ÷ its bytes; "
        "the ratio is taken per boot, median [min–max] over the rounds.",
        "",
        "| config | unit | pattern | op | size | QD | busy/request direct | busy/request bounced | bounce per byte | memcpy per byte | bounce/memcpy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    any_row = False
    for config, unit in IO_CPU_CONFIGS:
        cells, memcpy = io_cells(runs, config)
        mc = {size: dict(v) for size, v in memcpy.items()}
        keys = sorted({k[:4] for k in cells}, key=lambda k: (k[2], k[3], k[0], k[1]))
        for k in keys:
            d = dict(cells.get(k + ("direct",), []))
            b = dict(cells.get(k + ("bounced",), []))
            m = mc.get(k[2], {})
            if not any(c.get("busy_ns_per_req") is not None for c in list(d.values()) + list(b.values())):
                continue
            size = k[2]
            rounds = [r for r in d if r in b and d[r].get("busy_ns_per_req") is not None and b[r].get("busy_ns_per_req") is not None]
            added = {r: (b[r]["busy_ns_per_req"] - d[r]["busy_ns_per_req"]) / size for r in rounds}
            per_memcpy = {r: m[r]["ns"] / size for r in m}
            ratio = paired_ratios([(added[r], per_memcpy.get(r)) for r in rounds])
            any_row = True
            lines.append(
                f"| `{config}` | {unit} | {k[0]} | {k[1]} | {size_label(size)} | {k[3]} | "
                f"{fmt_summary(summary([c.get('busy_ns_per_req') for c in d.values()]))} | "
                f"{fmt_summary(summary([c.get('busy_ns_per_req') for c in b.values()]))} | "
                f"{fmt_summary(summary(list(added.values())))} | {fmt_summary(summary(list(per_memcpy.values())))} | "
                f"{fmt_summary(summary(ratio), 2)} |"
            )
    return "\n".join(lines) + "\n" if any_row else "No busy-time results in the `io*` boots.\n"


CLEAN_CONFIGS = [("clean", "ns"), ("clean-icount", "instructions")]


def clean_cells(runs, config):
    """{(pattern, size, qd, clean_slots): [(round, cell)]} of the clean-slots boots."""
    cells = {}
    for r, d in runs.get(config, []):
        for c in d.get("cells", []):
            cells.setdefault((c["pattern"], c["size"], c["qd"], c["clean_slots"]), []).append((r, c))
    return cells


def clean_section(runs):
    """What clean slots save: bounced reads with `swiotlb_clean_slots` on and off, same boot."""
    lines = [
        "**What clean slots save** (`clean`, and `clean-icount` at queue depth 1 under `-icount`): bounced "
        "reads on disk 0 with `swiotlb_clean_slots` on and off (off: Linux's copy-in for every bounced read), "
        "alternated cell by cell in the same boot. On, the loop waits as an idle CPU does (a bounded scrub step "
        "before it sleeps, `platform::idle()`), and the pool is scrubbed whole before the cell, as the idle time "
        "between bursts would have done; the scrub steps count as busy time. on/off is taken inside each boot, "
        "median [min–max] over the rounds; *skipped* is the share of the reads (with clean slots on) that found "
        "clean slots and skipped their copy-in; *zeroed per byte read* is the bytes the scrub steps zeroed per "
        "byte read, with clean slots on.",
        "",
        "| config | unit | pattern | size | QD | MiB/s on | MiB/s off | on/off | busy/request on | busy/request off "
        "| on/off | skipped | zeroed per byte read |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    throughput, busy = [], []
    for config, unit in CLEAN_CONFIGS:
        cells = clean_cells(runs, config)
        keys = sorted({k[:3] for k in cells}, key=lambda k: (k[1], k[2], k[0]))
        for k in keys:
            on = dict(cells.get(k + (True,), []))
            off = dict(cells.get(k + (False,), []))
            rounds = [r for r in on if r in off]
            mib = summary(paired_ratios([(on[r]["mib_s"], off[r]["mib_s"]) for r in rounds]))
            cpu = summary(paired_ratios([(on[r].get("busy_ns_per_req"), off[r].get("busy_ns_per_req")) for r in rounds]))
            if config == "clean":
                throughput.append(mib)
                busy.append(cpu)
            reads = lambda c: c["reads_copy_in_skipped"] + c["reads_copied_in"]
            skipped = summary([100 * c["reads_copy_in_skipped"] / reads(c) for c in on.values() if reads(c)])
            zeroed = summary([c["slots_scrubbed"] * 2048 / (c["ops"] * k[1]) for c in on.values() if c["ops"]])
            lines.append(
                f"| `{config}` | {unit} | {k[0]} | {size_label(k[1])} | {k[2]} | "
                f"{fmt_summary(summary([c['mib_s'] for c in on.values()]))} | {fmt_summary(summary([c['mib_s'] for c in off.values()]))} | "
                f"{fmt_summary(mib, 2)} | "
                f"{fmt_summary(summary([c.get('busy_ns_per_req') for c in on.values()]))} | "
                f"{fmt_summary(summary([c.get('busy_ns_per_req') for c in off.values()]))} | {fmt_summary(cpu, 2)} | "
                f"{fmt_summary(skipped)} % | {fmt_summary(zeroed, 2)} |"
            )
    if not throughput:
        return "No `clean` results (what clean slots save).\n"
    m, word, wins, n, clear = verdict(throughput)
    cm = median([c[0] for c in busy if c[0] is not None])
    lines += [
        "",
        f"In TCG time, clean slots on/off in throughput: {word} (median of the cells' medians {fmt(m, 3)}; above 1 in "
        f"{wins} of {n} cells, wholly above or below 1 in {clear}); the CPU's busy time per request on/off, median "
        f"of the cells' medians: {fmt(cm, 3)}. A skipped copy-in saves a copy of the request's bytes at map time, "
        "and the slots it used are zeroed later on an idle CPU: the saving is the copy-in moved off the request's "
        "path, paid back by the zeroing wherever the CPU was not otherwise idle.",
    ]
    return "\n".join(lines) + "\n"


def kicks_section(runs, targets):
    """Kicks and interrupts per request in the bounce-cost cells."""
    lines = [
        "**Kicks and interrupts per request** in the same cells (the driver's counters over each cell, divided "
        "by the requests completed in it; the default features of the boot).",
        "",
        "| config | pattern | op | size | QD | kicks/request direct | kicks/request bounced | interrupts/request direct | interrupts/request bounced |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    qd16_kicks = []
    any_row = False
    for config in ("io", "io-throttled"):
        cells, _ = io_cells(runs, config)
        keys = sorted({k[:4] for k in cells}, key=lambda k: (k[2], k[3], k[0], k[1]))
        for k in keys:
            d = [c for _, c in cells.get(k + ("direct",), [])]
            b = [c for _, c in cells.get(k + ("bounced",), [])]
            if not any(c.get("kicks_per_req") is not None for c in d + b):
                continue
            any_row = True
            if config == "io" and k[3] == 16:
                qd16_kicks += [c.get("kicks_per_req") for c in d + b]
            col = lambda cs, f: fmt_summary(summary([c.get(f) for c in cs]), 2)
            lines.append(
                f"| `{config}` | {k[0]} | {k[1]} | {size_label(k[2])} | {k[3]} | {col(d, 'kicks_per_req')} | {col(b, 'kicks_per_req')} | "
                f"{col(d, 'irqs_per_req')} | {col(b, 'irqs_per_req')} |"
            )
    if not any_row:
        return "No kick and interrupt counts in the `io` boots.\n"
    s = summary(qd16_kicks)
    targets.add("kicks per request at QD 16 (`io`, every QD 16 cell, direct and bounced)", "≤ 0.25", fmt_summary_against(s, 0.25, 2), None if s[0] is None else s[0] <= 0.25)
    return "\n".join(lines) + "\n"


def plot_throughput(cells, fcells, keys, plots_dir):
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    for ax, size in zip(axes, [4 * KIB, 64 * KIB]):
        ks = [k for k in keys if k[2] == size]
        labels = [f"{k[0]} {k[1]}\nQD {k[3]}" for k in ks]
        series = [("direct", cells, "direct", "#4c72b0"), ("bounced", cells, "bounced", "#dd8452"), ("forced (swiotlb=force)", fcells, "direct", "#55a868")]
        width = 0.27
        for i, (name, src, placement, color) in enumerate(series):
            meds, los, his = [], [], []
            for k in ks:
                med, lo, hi, n = summary([c["mib_s"] for _, c in src.get(k + (placement,), [])])
                meds.append(med or 0)
                los.append((med or 0) - (lo or 0))
                his.append((hi or 0) - (med or 0))
            xs = [j + (i - 1) * width for j in range(len(ks))]
            ax.bar(xs, meds, width, yerr=[los, his], capsize=2, label=name, color=color)
        ax.set_xticks(range(len(ks)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("MiB/s (median, bars: min–max over rounds)")
        ax.set_title(f"disk 0, {size_label(size)} requests")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Bounce cost: throughput by configuration (virtio-blk on QEMU TCG)")
    fig.tight_layout()
    path = os.path.join(plots_dir, "throughput.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- 2. mapping cost


def direct_net(row):
    """A direct map+unmap as the DMA API adds it to its caller: inline in the measuring loop, net
    of the same loop with nothing in it (`direct_inline_ns` − `direct_loop_ns`); results without
    those give the call through a function of its own (`direct_called`)."""
    if "direct_inline_ns" in row:
        return row["direct_inline_ns"] - row["direct_loop_ns"]
    return direct_called(row)


def direct_called(row):
    """A direct map+unmap called through a function of its own, net of the same call to a
    function that does nothing (`direct_call_ns`, where the results have it)."""
    return row["direct_map_unmap_ns"] - row.get("direct_call_ns", 0.0)


def call_figure(runs, config, scale, f=lambda r: r.get("direct_call_ns")):
    """A per-row figure (by default the loop's own call), median [min–max] over the rows of every
    boot, for the mapping table's caption."""
    vals = [v for _, d in runs.get(config, []) for r in d["rows"] if (v := f(r)) is not None]
    return fmt_summary(summary(vals), scale=scale) if vals else "not measured in these results"


COPY_FUNCTIONS = ("memcpy", "memset")


def trace_split(trace, kind):
    """(total, copy, [(function, instructions)] besides the copy, most first) of one traced
    map+unmap (`direct` or `bounced`), or None without a trace."""
    t = (trace or {}).get(kind)
    if not t:
        return None
    copy = sum(n for f, n in t["functions"] if f in COPY_FUNCTIONS)
    rest = sorted(((f, n) for f, n in t["functions"] if f not in COPY_FUNCTIONS), key=lambda fn: -fn[1])
    return t["total"], copy, rest


def short_function(name):
    """A function's name without the crate's module path: `SwiotlbPool::alloc_slots`."""
    name = re.sub(r"<impl [\w:]*?(\w+)>", r"\1", name)  # `<impl kernel::..::SwiotlbPool>` -> `SwiotlbPool`
    if not name.startswith("<"):
        # A generic instance's parameters: `release_checked<..::{closure_env#0}>` -> `release_checked`.
        depth, cut = 0, len(name)
        for i in range(len(name) - 1, -1, -1):
            depth += {">": 1, "<": -1}.get(name[i], 0)
            if depth == 0:
                cut = i if name[i] == "<" else cut
                break
        name = name[:cut] if name.endswith(">") else name
    m = re.match(r"<(.+) as (.+)>::(\w+)$", name)
    if m:
        return f"<{m.group(1).split('::')[-1]} as {m.group(2).split('::')[-1]}>::{m.group(3)}"
    return "::".join(name.split("::")[-2:])


def trace_table(trace):
    """Per function, the instructions of one direct and one bounced 4 KiB map+unmap."""
    if not trace or "direct" not in trace or "bounced" not in trace:
        return []
    d = dict(map(tuple, trace["direct"]["functions"]))
    b = dict(map(tuple, trace["bounced"]["functions"]))
    order = list(dict.fromkeys([f for f, _ in trace["bounced"]["functions"]] + [f for f, _ in trace["direct"]["functions"]]))
    out = [
        f"*Where the instructions of one {size_label(trace.get('size', 4096))} map+unmap go*, single-stepped in GDB "
        "(`scripts/bench/insn_trace.py`, one call of each kind after a few of the same loop): per function, in the "
        "order first reached; the benchmark's `map_unmap` is the caller (a driver would be), with the inline "
        "direct path. Instruction counts, exact but for the atomics: QEMU's gdbstub steps a load-exclusive ... "
        "store-exclusive sequence as one instruction, so each atomic read-modify-write counts a few short (the "
        "`-icount` figures above count them all).",
        "",
        "| function | direct | bounced (to the device, copied) |",
        "|---|---|---|",
    ]
    for f in order:
        out.append(f"| `{short_function(f)}` | {fmt(d.get(f)) if f in d else '-'} | {fmt(b.get(f)) if f in b else '-'} |")
    out += [f"| total | {fmt(trace['direct']['total'])} | {fmt(trace['bounced']['total'])} |", ""]
    return out


def inlined_split(trace, kind="bounced"):
    """[(function, instructions)] of one traced map+unmap by the innermost workspace function
    the code came from (inlined ones taken apart), besides the copy, most first; None for a
    trace without that attribution."""
    t = (trace or {}).get(kind)
    if not t or "inlined" not in t:
        return None
    return sorted(((f, n) for f, n in t["inlined"] if f not in COPY_FUNCTIONS), key=lambda fn: -fn[1])


# Rows of the inlined table: functions with at least this many instructions; the rest summed.
INLINED_MIN = 8

# What the bookkeeping's instructions buy: each source function of the traced bounced map+unmap
# (`inlined_split`) goes to the first part whose pattern its name matches; a function no pattern
# matches (a pool's one-load accessors) goes to `OTHER_PART`. `CORE_PARTS` are what a slot pool
# that runs on several CPUs and answers `is_swiotlb_buffer` without a lock keeps, however thin the
# layers around it.
BOOKKEEPING_PARTS = [
    ("the caller (the benchmark's `map_unmap`, as a driver's submit path)", r"^bench::"),
    ("the area lock (interrupts masked, the CPU's area)", r"irq_safe_spinlock|::local_irq_|::irqs_disabled|smp::cpu_id"),
    ("the slot cache (size and alignment checks, ring, record)", r"alloc_cached|pop_oldest|::park\b|SwiotlbPool::map_cached|release_allocation|slots::Slot::"),
    ("slot states (the used bits `is_swiotlb_buffer` reads without a lock)", r"AtomicSegmentState|slot_state"),
    ("the unmap's lookup and checks",
     r"AreaSlots::mapping|allocation_of|release_checked|check_unmap|slot_index|slot_pos|area_states|slots::has_slot|"
     r"SwiotlbPool::lookup|(SwiotlbPool|FoundPool)::unmap"),
    ("the slot search and the free maps (a mapping no cached run serves)",
     r"AreaSlots::(alloc|find_|record|take_run|give_back_run|free_allocation|changed|summar)|swiotlb::slots::|search_areas|alloc_slots|map_searched|search_ended"),
    ("statistics (atomic counters)", r"stats::Counters|bounce_copy_in"),
    ("the DMA API (entry, bounce decision, reach checks) and the SWIOTLB manager", r"dma::mapping::|dma::device::|io_tlb_mem::|swiotlb::find::|irq_depth"),
    ("the copy's call and the tail's zeroing", r"platform::phys|zero_tail"),
]
OTHER_PART = "other (the pool's one-load accessors)"
CORE_PARTS = BOOKKEEPING_PARTS[1:5]


def upper_first(text):
    """`text` with its first letter a capital, the rest as it was."""
    return text[:1].upper() + text[1:]


def core_names(inlined):
    """The `CORE_PARTS` the trace has instructions in, by their short names ("the area lock, the
    slot cache and the unmap's lookup and checks")."""
    present = {label for label, _ in bookkeeping_parts(inlined)}
    names = [label.split(" (")[0] for label, _ in CORE_PARTS if label in present]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def bookkeeping_parts(inlined):
    """[(part, instructions)] of `inlined_split`'s answer, grouped by `BOOKKEEPING_PARTS`, in
    that order, then `OTHER_PART`; parts with no instruction left out."""
    sums = {}
    for f, n in inlined:
        part = next((label for label, pattern in BOOKKEEPING_PARTS if re.search(pattern, f)), OTHER_PART)
        sums[part] = sums.get(part, 0) + n
    return [(label, sums[label]) for label in [p for p, _ in BOOKKEEPING_PARTS] + [OTHER_PART] if label in sums]


def inlined_table(trace):
    """The bounced map+unmap's instructions besides the copy, by source function with inlined
    ones taken apart."""
    rest = inlined_split(trace)
    if not rest:
        return []
    shown = [(f, n) for f, n in rest if n >= INLINED_MIN]
    others = rest[len(shown):]
    out = [
        "*The same bounced map+unmap, by the source function each instruction's code came from*, inlined "
        "functions taken apart (DWARF inline records; library code such as atomics and slice indexing counted to "
        "the function that used it; a function's own prologue and epilogue to itself); besides the copy, most "
        f"first, functions under {INLINED_MIN} instructions summed.",
        "",
        "| source function | instructions |",
        "|---|---|",
    ]
    out += [f"| `{short_function(f)}` | {fmt(n)} |" for f, n in shown]
    if others:
        out.append(f"| {fmt(len(others))} others | {fmt(sum(n for _, n in others))} |")
    out += [f"| total besides the copy | {fmt(sum(n for _, n in rest))} |", ""]
    out += [
        "*The same instructions by what they buy*: the source functions above grouped (`BOOKKEEPING_PARTS` in "
        "`scripts/bench/report.py`, each function to the first part its name matches).",
        "",
        "| part | instructions |",
        "|---|---|",
    ]
    out += [f"| {label} | {fmt(n)} |" for label, n in bookkeeping_parts(rest)]
    out += [""]
    return out


def mapping_section(runs, targets, trace=None):
    out = []
    for config, unit, scale, title in [
        ("map", "µs", 1e-3, "Real time under TCG (generic timer), µs per operation"),
        ("map-icount", "k insns", 1e-3, "Instructions under `-icount shift=0` (1 ns of virtual time per instruction), thousands per operation; repeatable to the instruction"),
    ]:
        rows = {}
        for rnd, d in runs.get(config, []):
            for r in d["rows"]:
                rows.setdefault((r["live"], r["size"]), []).append(r)
        if not rows:
            continue
        out += [
            f"*{title}.* `live`: other bounced 4 KiB mappings held meanwhile. *direct map+unmap*: what a "
            "direct map+unmap adds to its caller: inline in the measuring loop (as a driver's submit path "
            "inlines `map_single`/`unmap_single`), net of the same loop with the same opaque arguments and "
            f"nothing else ({call_figure(runs, config, scale, lambda r: r.get('direct_loop_ns'))}). Called "
            "instead through a function of its own, which saves the registers the out-of-line slow paths need, "
            f"it took {call_figure(runs, config, scale, lambda r: direct_called(r) if 'direct_call_ns' in r else None)} "
            f"(net of the same call to a function that does nothing, {call_figure(runs, config, scale)}). *bookkeeping* = bounced "
            "map+unmap (one copy, to the device) minus the memcpy; *2 copies* = bidirectional without "
            "`skip_cpu_sync` (copied in at map and back at unmap), *1 copy* = the same with "
            "`DmaAttrs { skip_cpu_sync: true }` (the copy at map is always made: a device must not see "
            "stale slot contents).",
            "",
            f"| live | size | memcpy | direct map+unmap | bounced map+unmap | bookkeeping | 1 copy (skip sync) | 2 copies | is_swiotlb_buffer hit / miss |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for (live, size), rs in sorted(rows.items()):
            s = lambda key: summary([r[key] for r in rs])
            book = summary([r["bounce_to_device_ns"] - r["memcpy_ns"] for r in rs])
            out.append(
                f"| {live} | {size_label(size)} | {fmt_summary(s('memcpy_ns'), scale=scale)} | "
                f"{fmt_summary(summary([direct_net(r) for r in rs]), scale=scale)} | {fmt_summary(s('bounce_to_device_ns'), scale=scale)} | "
                f"{fmt_summary(book, scale=scale)} | {fmt_summary(s('bounce_bidir_skip_sync_ns'), scale=scale)} | "
                f"{fmt_summary(s('bounce_bidir_ns'), scale=scale)} | "
                f"{fmt_summary(s('is_swiotlb_buffer_hit_ns'), scale=scale)} / {fmt_summary(s('is_swiotlb_buffer_miss_ns'), scale=scale)} |"
            )
        out.append("")
        # Targets, per boot: against the 4 KiB memcpy of the same boot, with one live mapping.
        per_boot = [
            {(r["live"], r["size"]): r for r in d["rows"]} for _, d in runs.get(config, [])
        ]
        direct = paired_ratios([(direct_net(b[(1, 4096)]), b[(1, 4096)]["memcpy_ns"]) for b in per_boot if (1, 4096) in b])
        book = paired_ratios([(b[(1, 4096)]["bounce_to_device_ns"] - b[(1, 4096)]["memcpy_ns"], b[(1, 4096)]["memcpy_ns"]) for b in per_boot if (1, 4096) in b])
        label = "TCG time" if config == "map" else "instructions"
        # First target ≤ 0.2, tightened to ≤ 0.1 (a few dozen instructions).
        targets.add(f"map+unmap without a copy (direct, buffer in the window) / 4 KiB memcpy, {label}", "≤ 0.1", fmt_summary_against(summary(direct), 0.1, 2), None if not direct else median(direct) <= 0.1)
        targets.add(f"bounced map+unmap minus its copy (bookkeeping) / 4 KiB memcpy, {label}", "≤ 0.2", fmt_summary_against(summary(book), 0.2, 2), None if not book else median(book) <= 0.2)
        flat = []
        for b in per_boot:
            hits = [b[(live, 4096)]["is_swiotlb_buffer_hit_ns"] for live in (1, 64, 512) if (live, 4096) in b]
            if len(hits) >= 2 and min(hits) > 0:
                flat.append(max(hits) / min(hits))
        targets.add(f"`is_swiotlb_buffer` slowest / fastest over 1, 64, 512 live mappings, {label}", "flat (≤ 1.2)", fmt_summary_against(summary(flat), 1.2, 3), None if not flat else median(flat) <= 1.2)
    if out:
        out += slot_cache_table(runs)
        out += trace_table(trace)
        out += inlined_table(trace)
    return "\n".join(out) + "\n" if out else "No `map` results.\n"


def slot_cache_effect(runs, config, live=1, size=4096):
    """Per round, the bookkeeping of a bounced map+unmap (`live`, `size`) with the slot cache
    (`config`, the default) and without (`config`-nocache, booted in the same round):
    [(with, without)]."""
    pairs = []
    with_cache = dict(runs.get(config, []))
    for rnd, d in runs.get(config + "-nocache", []):
        if rnd not in with_cache:
            continue
        rows = [{(r["live"], r["size"]): r for r in x["rows"]} for x in (with_cache[rnd], d)]
        if all((live, size) in r for r in rows):
            pairs.append(tuple(r[(live, size)]["bounce_to_device_ns"] - r[(live, size)]["memcpy_ns"] for r in rows))
    return pairs


def slot_cache_table(runs):
    """The bookkeeping of a bounced map+unmap with the slot cache (the default) and without
    (`swiotlb_slot_cache=0`, Linux's way: every mapping searches), booted alternately."""
    cells = []
    for config, unit, scale in [("map-icount", "instructions", 1), ("map", "µs", 1e-3)]:
        for live in (1, 64, 512):
            for size in (4096, 65536):
                pairs = slot_cache_effect(runs, config, live, size)
                if pairs:
                    cells.append((config, unit, scale, live, size, pairs))
    if not cells:
        return []
    out = [
        "*The slot cache* (`swiotlb_slot_cache=8`, the default: each area parks up to 8 page runs that "
        "unmaps freed and hands them, with no search, to mappings of more than a slot and at most a page) against none "
        "(`swiotlb_slot_cache=0`, as Linux), booted one after the other in each round: the bookkeeping of a "
        "bounced map+unmap to the device (minus its memcpy). 64 KiB mappings do not fit a cached run and "
        "search either way.",
        "",
        "| unit | live | size | with the cache | without | with / without |",
        "|---|---|---|---|---|---|",
    ]
    for config, unit, scale, live, size, pairs in cells:
        ratio = summary(paired_ratios(pairs))
        out.append(
            f"| {unit} | {live} | {size_label(size)} | {fmt_summary(summary([a for a, _ in pairs]), scale=scale)} | "
            f"{fmt_summary(summary([b for _, b in pairs]), scale=scale)} | {fmt_summary(ratio, 2)} |"
        )
    return out + [""]


# ---------------------------------------------------------------- 3. the design table


def policy_section(runs, targets, plots_dir):
    present = [p for p in POLICIES if runs.get(p)]
    if not present:
        return "No `policy` results.\n", []
    def s(p, key, f=lambda x: x):
        return summary([f(d[key]) if d.get(key) is not None else None for _, d in runs[p]])
    rows = [
        ("memory movable allocations got (MiB)", lambda p: fmt_summary(s(p, "movable_available_bytes", lambda x: x / MIB))),
        ("pool reserved: slots and lent blocks (MiB)", lambda p: fmt_summary(s(p, "pool_bytes_reserved", lambda x: x / MIB))),
        ("share of the idle pool lent to movable allocations: at boot / after the burst", lambda p: f"{fmt_summary(s(p, 'idle_pool_lent_share_boot', lambda x: 100 * x))} % / {fmt_summary(s(p, 'idle_pool_lent_share_after', lambda x: 100 * x))} %"),
        ("CMA area, shared with movable allocations (MiB)", lambda p: fmt_summary(s(p, "cma_area_bytes", lambda x: x / MIB))),
        ("bounce slots before → peak → after idle (MiB)", lambda p: f"{fmt_summary(s(p, 'slots_before', lambda x: x * 2 * KIB / MIB))} → {fmt_summary(s(p, 'peak_pool_bytes', lambda x: x / MIB))} → {fmt_summary(s(p, 'slots_after_idle', lambda x: x * 2 * KIB / MIB))}"),
        ("IRQ-context mapping failures (of 256)", lambda p: fmt_summary(s(p, "irq_failures"))),
        ("deferred requests completed in task context", lambda p: fmt_summary(s(p, "deferred_done"))),
        ("requests lost / data corrupt", lambda p: f"{fmt_summary(s(p, 'lost'))} / {sum(1 for _, d in runs[p] if not (d['data_ok'] and d['pressure_intact']))}"),
        ("burst served under memory pressure (boots)", lambda p: f"{sum(1 for _, d in runs[p] if d['done_under_pressure'])} of {len(runs[p])}"),
        ("burst took (ms)", lambda p: fmt_summary(s(p, "burst_ms"))),
        ("pool first grew after (ms)", lambda p: fmt_summary(s(p, "grown_after_ms"))),
        ("time to grow by 4 MiB (ms)", lambda p: fmt_summary(s(p, "grow_4m_ns", lambda x: x / 1e6))),
        ("  … / copying 4 MiB in the same boot", lambda p: fmt_summary(summary(paired_ratios([(d.get("grow_4m_ns"), d["memcpy_4m_ns"]) for _, d in runs[p]])), 2)),
        ("  … pages migrated / dropped per 4 MiB", lambda p: f"{fmt_summary(s(p, 'grow_4m_pages_migrated'))} / {fmt_summary(s(p, 'grow_4m_pages_dropped'))}"),
        ("memory given back after the burst (MiB)", lambda p: fmt_summary(s(p, "given_back_bytes", lambda x: x / MIB))),
    ]
    lines = [
        "| | " + " | ".join(POLICY_LABEL[p] for p in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for name, f in rows:
        lines.append(f"| {name} | " + " | ".join(f(p) for p in present) + " |")
    if runs.get("policy-lend"):
        lend = runs["policy-lend"]
        share = summary([d["idle_pool_lent_share_after"] for _, d in lend])
        targets.add("`lend`: idle pool usable by movable allocations", "≥ 90 %", fmt_summary_against(share, 90, 3, 100) + " %", share[0] >= 0.9)
        lost = sum(d["lost"] for _, d in lend) + sum(1 for _, d in lend if not d["data_ok"])
        targets.add("`lend`: failed or lost I/O (all boots)", "0", str(lost), lost == 0)
        irq = summary([d["irq_failures"] for _, d in lend])
        targets.add("`lend`: IRQ-context mapping failures, default reserve", "0", fmt_summary(irq), irq[2] == 0)
        grow = summary(paired_ratios([(d.get("grow_4m_ns"), d["memcpy_4m_ns"]) for _, d in lend]))
        # First target ≤ 2, tightened to ≤ 1.5 (migrating and scrubbing should cost
        # little more than those copies).
        targets.add("`lend`: time to grow by 4 MiB / time to copy 4 MiB", "≤ 1.5", fmt_summary_against(grow, 1.5, 3), None if grow[0] is None else grow[0] <= 1.5)
    if runs.get("policy-lend-icount"):
        grow = summary(paired_ratios([(d.get("grow_4m_ns"), d["memcpy_4m_ns"]) for _, d in runs["policy-lend-icount"]]))
        targets.add("`lend`: grow by 4 MiB / copy 4 MiB, in instructions (`-icount`)", "≤ 1.5", fmt_summary_against(grow, 1.5, 4), None if grow[0] is None else grow[0] <= 1.5)
    plots = [plot_timeline(runs, present, plots_dir), plot_pageblocks(runs, plots_dir)] if plots_dir else []
    return "\n".join(lines) + "\n", [p for p in plots if p]


def plot_timeline(runs, present, plots_dir):
    shown = [p for p in present if p != "policy-lend-icount"]
    fig, axes = plt.subplots(len(shown), 1, figsize=(14, 2.8 * len(shown)), sharex=False)
    if len(shown) == 1:
        axes = [axes]
    for ax, p in zip(axes, shown):
        rnd, d = runs[p][0]
        ser = d["series"]
        t = ser["t_ms"]
        step = dict(drawstyle="steps-post")
        ax.plot(t, [x / MIB for x in ser["pool_bytes"]], label="bounce slots usable (pool size)", color="#dd8452", linewidth=2, **step)
        ax.plot(t, [x / MIB for x in ser["used_bytes"]], label="slots in use", color="#c44e52", linestyle="--", **step)
        ax.plot(t, [x / MIB for x in ser["lent_bytes"]], label="lent to the page allocator (MIGRATE_SWIOTLB)", color="#4c72b0", linewidth=2, **step)
        # Phases: the marks are the ends of pressure, burst and idle; the x axis starts shortly
        # before the burst (the pressure phase is one long fill with nothing to see).
        marks = [at for _, at in d["phase_marks_ms"]]
        if len(marks) == 3:
            lo = max(0.0, marks[0] - 0.08 * (marks[2] - marks[0]))
            spans = [(lo, marks[0], "memory pressure", "#eeeeee"), (marks[0], marks[1], "I/O burst from the timer IRQ (then data check)", "#fde0c5"), (marks[1], marks[2], "idle", "#d5e8d4")]
            for a, b, name, color in spans:
                ax.axvspan(a, b, color=color, zorder=0)
                ax.text((a + b) / 2, 0.98, name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7, color="#555555")
            ax.set_xlim(lo, marks[2])
        ax.set_ylabel("MiB")
        ax.set_title(f"{POLICY_LABEL[p].replace('`', '')} (round {rnd}): pool and lent memory through the workload", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 34)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes[-1].set_xlabel("ms since the workload started (the memory-pressure fill before this window is left out)")
    fig.tight_layout()
    path = os.path.join(plots_dir, "pool_timeline.png")
    fig.savefig(path, dpi=90, bbox_inches="tight")  # the legends sit outside the axes
    plt.close(fig)
    return path


PAGEBLOCK_COLORS = {
    "M": ("#9ecae1", "MOVABLE"),
    "U": ("#636363", "UNMOVABLE"),
    "S": ("#31a354", "SWIOTLB: lent, holding pages"),
    "s": ("#a1d99b", "SWIOTLB: lent, empty"),
    "I": ("#fd8d3c", "ISOLATE"),
    "b": ("#e6550d", "bounce slots"),
    "e": ("#c51b8a", "dynamic's extra pools"),
    "c": ("#756bb1", "carved for a device"),
    "u": ("#fdd0a2", "reserved for the pool, unused"),
    ".": ("#f0f0f0", "not managed / reserved"),
}


def draw_pictures(ax, pics, lo, hi, with_labels):
    labels = {"boot": "boot", "memory pressure": "pressure (before reclaim)", "I/O burst from interrupt handlers": "after the burst (reclaim)", "idle": "after idle"}
    for row, pic in enumerate(pics):
        ram = pic["ram"]
        boundary = ram.find("|")
        blocks = list(ram.replace("|", ""))
        for idx, c in pic.get("overlay", []):
            if 0 <= idx < len(blocks):
                blocks[idx] = c
        for i in range(max(lo, 0), min(hi, len(blocks))):
            ax.add_patch(plt.Rectangle((i, -row - 1), 1, 0.85, color=PAGEBLOCK_COLORS.get(blocks[i], ("#ff00ff", blocks[i]))[0], linewidth=0))
        if boundary >= 0 and lo <= boundary <= hi:
            ax.plot([boundary, boundary], [-row - 1.05, -row + 0.05], color="black", linewidth=1.2)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-len(pics) - 0.1, 0.1)
    ax.set_yticks([-i - 0.575 for i in range(len(pics))])
    ax.set_yticklabels([labels.get(pic["phase"], pic["phase"]) for pic in pics] if with_labels else [], fontsize=8)


def plot_pageblocks(runs, plots_dir):
    shown = [p for p in ["policy-lend", "policy-static", "policy-dynamic"] if runs.get(p)]
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 2, figsize=(15, 1.2 + 2.3 * len(shown)), gridspec_kw={"width_ratios": [3, 1.3]}, squeeze=False)
    for (full, zoom), p in zip(axes, shown):
        rnd, d = runs[p][0]
        pics = d["pictures"]
        n = max(len(pic["ram"].replace("|", "")) for pic in pics)
        draw_pictures(full, pics, 0, n, True)
        full.set_xlabel("2 MiB pageblocks from the start of RAM (black line: end of ZONE_DMA, the 384 MiB DMA window)", fontsize=8)
        full.set_title(f"{POLICY_LABEL[p].replace('`', '')} (round {rnd}): all of RAM, by pageblock", fontsize=10)
        first, count = d.get("pool_first_block", 0), d.get("pool_pageblocks", 16)
        draw_pictures(zoom, pics, first - 4, first + count + 2, False)
        zoom.set_title(f"zoom: the SWIOTLB region (blocks {first}–{first + count - 1})", fontsize=9)
        zoom.set_xlabel("pageblock", fontsize=8)
        zoom.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    handles = [Patch(color=c, label=f"{name}") for k, (c, name) in PAGEBLOCK_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = os.path.join(plots_dir, "pageblocks.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- 4. per-device pools


def pools_section(runs, plots_dir):
    rs = runs.get("pools", [])
    if not rs:
        return "No `pools` results.\n", None
    by = {False: {}, True: {}}
    ratio = []
    contention, misses, busy, deferred = {False: [], True: []}, {False: [], True: []}, {False: [], True: []}, {False: [], True: []}
    disk_locks = {False: [], True: []}
    for _, d in rs:
        per_hint = {False: [], True: []}
        for run in d["runs"]:
            h = run["hint"]
            for disk in run["disks"]:
                by[h].setdefault(disk["disk"], []).append(disk["mib_s"])
            by[h].setdefault("total", []).append(run["total_mib_s"])
            per_hint[h].append(run["disks"][0]["mib_s"])
            contention[h].append(run["default_pool_lock_contended"])
            misses[h].append(run["pool_misses"] + run["map_failures"])
            busy[h].append(sum(x["busy"] for x in run["disks"]))
            deferred[h].append(sum(x["deferred_to_task"] for x in run["disks"]))
            if all("disk_lock_contended" in x for x in run["disks"]):
                disk_locks[h].append(sum(x["disk_lock_contended"] for x in run["disks"]))
        if per_hint[False] and per_hint[True]:
            ratio.append(median(per_hint[True]) / median(per_hint[False]))
    # How each disk was driven and the hint, as the results say.
    first = rs[0][1]
    disk = {x["disk"]: x for x in first["runs"][0]["disks"]}
    how = lambda i: f"{x['pattern']} {x['op']}s of {size_label(x['size'])} at QD {x['qd']}" if (x := disk.get(i)) else "not run"
    lines = [
        "Bounced reads on three disks at once: disk 0 (" + how(0) + ", the default pool, or its "
        "own pool carved from the SWIOTLB region when hinted: "
        f"`set_inflight_hint(disk0, {fmt(first.get('hint_bytes', 0) / MIB)} MiB)`), "
        "disk 1 (" + how(1) + ", behind the restricted pool), disk 2 (" + how(2) + ", the default pool). "
        "Hint off and on alternate inside each boot.",
        "",
        "| | hint off | hint on |",
        "|---|---|---|",
    ]
    names = {0: "disk 0 MiB/s", 1: "disk 1 (restricted) MiB/s", 2: "disk 2 (default pool) MiB/s", "total": "all three MiB/s"}
    for k in [0, 1, 2, "total"]:
        lines.append(f"| {names[k]} | {fmt_summary(summary(by[False].get(k, [])))} | {fmt_summary(summary(by[True].get(k, [])))} |")
    lines.append(f"| disk 0 hint on / off (same boot) | | {fmt_summary(summary(ratio), 2)} |")
    lines.append(f"| default pool area-lock contention (spins) | {fmt_summary(summary(contention[False]))} | {fmt_summary(summary(contention[True]))} |")
    if disk_locks[False] or disk_locks[True]:
        lines.append(f"| disk-lock contention, three disks (spins) | {fmt_summary(summary(disk_locks[False]))} | {fmt_summary(summary(disk_locks[True]))} |")
    lines.append(f"| pool misses + map failures | {fmt_summary(summary(misses[False]))} | {fmt_summary(summary(misses[True]))} |")
    lines.append(f"| requests refused busy / deferred to task context | {fmt_summary(summary(busy[False]))} / {fmt_summary(summary(deferred[False]))} | {fmt_summary(summary(busy[True]))} / {fmt_summary(summary(deferred[True]))} |")
    if not plots_dir:
        return "\n".join(lines) + "\n", None
    fig, ax = plt.subplots(figsize=(8, 4))
    keys = [0, 1, 2, "total"]
    for i, (h, color) in enumerate([(False, "#4c72b0"), (True, "#dd8452")]):
        meds, lo, hi = [], [], []
        for k in keys:
            med, mn, mx, n = summary(by[h].get(k, []))
            meds.append(med or 0)
            lo.append((med or 0) - (mn or 0))
            hi.append((mx or 0) - (med or 0))
        ax.bar([j + (i - 0.5) * 0.38 for j in range(len(keys))], meds, 0.38, yerr=[lo, hi], capsize=3, color=color, label="disk 0 hinted (own pool)" if h else "no hint")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(["disk 0", "disk 1\n(restricted pool)", "disk 2\n(default pool)", "all three"])
    ax.set_ylabel("MiB/s (median, min–max)")
    ax.set_title("Per-device pools: 64 KiB bounced reads on three disks at once")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(plots_dir, "pools.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return "\n".join(lines) + "\n", path


# ---------------------------------------------------------------- 5. virtio features

FEATURE_CONFIGS = {
    "features-idx-ind": (True, True),
    "features-noidx-ind": (False, True),
    "features-idx-noind": (True, False),
    "features-noidx-noind": (False, False),
}


def feature_cells(runs):
    """{config: {(op, size, qd): {round: cell}}} and each config's negotiated (event_idx, indirect, max_in_flight)."""
    cells, negotiated = {}, {}
    for config in FEATURE_CONFIGS:
        for rnd, d in runs.get(config, []):
            negotiated.setdefault(config, set()).add((d["event_idx"], d["indirect"], d["max_in_flight"]))
            for c in d["cells"]:
                cells.setdefault(config, {}).setdefault((c["op"], c["size"], c["qd"]), {})[rnd] = c
    return cells, negotiated


def feature_ratio(cells, a, b, key, field="iops"):
    """Ratios a/b of `field` paired by round (the two boots of one round run back to back)."""
    ca, cb = cells.get(a, {}).get(key, {}), cells.get(b, {}).get(key, {})
    return paired_ratios([(ca[r][field], cb[r][field]) for r in ca if r in cb])


def verdict(ratios):
    """What per-cell paired on/off ratio summaries say: pays, costs or no clear difference.

    Returns (median of the cells' median ratios, word, cells above 1, cells, cells whose
    min-max range lies wholly above or below 1).
    """
    meds = [r[0] for r in ratios if r[0] is not None]
    m = median(meds)
    if m is None:
        return None, "not measured", 0, 0, 0
    wins = sum(r > 1 for r in meds)
    clear = sum(1 for r in ratios if r[3] and (r[1] > 1 or r[2] < 1))
    if m >= 1.05 and wins > len(meds) / 2:
        word = "pays off"
    elif m <= 0.95 and wins < len(meds) / 2:
        word = "costs"
    else:
        word = "no difference beyond the noise"
    return m, word, wins, len(meds), clear


def features_section(runs):
    """The table "virtio features" and what it says about INDIRECT_DESC and RING_EVENT_IDX."""
    cells, negotiated = feature_cells(runs)
    if not cells:
        return "No `features-*` results.\n", {}
    keys = sorted({k for c in cells.values() for k in c}, key=lambda k: (k[0], k[1], k[2]))
    # What the disk took at once, with and without indirect descriptors, as the kernel reported it.
    limit = lambda indirect: max((m for config, (_, ind) in FEATURE_CONFIGS.items() if ind == indirect
                                  for _, _, m in negotiated.get(config, ())), default=None)
    direct_limit, indirect_limit = limit(False), limit(True)
    lines = [
        "Random reads and writes on disk 0, buffers inside the DMA window (no data bounce: the driver and "
        "the device are measured, not the copies), one boot per combination of `blk_event_idx=` and "
        "`blk_indirect=`, the four alternated with every other configuration. Without indirect "
        "descriptors a request takes a ring descriptor for each of its buffers (header, data, status), so "
        f"the disk took {fmt(direct_limit)} requests at once and a deeper stream kept only that many in flight "
        f"(the rest wait for room); with them it took {fmt(indirect_limit)}. IOPS median [min–max] over the "
        "rounds; the ratios pair the two boots of the same round (run back to back, so the machine's noise "
        "hits both alike), then are summarised the same way.",
        "",
    ]
    neg = []
    for config, (idx, ind) in FEATURE_CONFIGS.items():
        seen = negotiated.get(config)
        if seen:
            onoff = lambda b: "on" if b else "off"
            neg.append(f"`{config}`: {', '.join(f'EVENT_IDX {onoff(e)}, INDIRECT {onoff(i)}, {m} in flight' for e, i, m in sorted(seen))}")
    if neg:
        lines += ["What each boot negotiated (from the kernel): " + "; ".join(neg) + ".", ""]
    lines += [
        "| op | size | QD | both on | EVENT_IDX off | INDIRECT off | both off | indirect on/off (EVENT_IDX on) | EVENT_IDX on/off (indirect on) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ind_ratios, idx_ratios = {}, {}
    for k in keys:
        row = [k[0], size_label(k[1]), str(k[2])]
        for config in FEATURE_CONFIGS:
            row.append(fmt_summary(summary([c["iops"] for c in cells.get(config, {}).get(k, {}).values()])))
        ind = summary(feature_ratio(cells, "features-idx-ind", "features-idx-noind", k))
        idx = summary(feature_ratio(cells, "features-idx-ind", "features-noidx-ind", k))
        ind_ratios[k], idx_ratios[k] = ind, idx
        row += [fmt_summary(ind, 2), fmt_summary(idx, 2)]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Interrupts and notifications per request (medians over the rounds; a request is one completion):",
        "",
        "| op | size | QD | interrupts/request: both on · EVENT_IDX off · INDIRECT off · both off | kicks/request: both on · EVENT_IDX off · INDIRECT off · both off |",
        "|---|---|---|---|---|",
    ]
    for k in keys:
        irq, kick = [], []
        for config in FEATURE_CONFIGS:
            cs = cells.get(config, {}).get(k, {}).values()
            irq.append(fmt(median([c["irqs_per_req"] for c in cs]), 2))
            kick.append(fmt(median([c["kicks_per_req"] for c in cs]), 2))
        lines.append(f"| {k[0]} | {size_label(k[1])} | {k[2]} | {' · '.join(irq)} | {' · '.join(kick)} |")
    cut = direct_limit if direct_limit is not None else max((k[2] for k in keys), default=0)
    deep = [k for k in keys if k[2] > cut]
    shallow = [k for k in keys if k[2] <= cut]
    others = [d.get("bootargs", "") for config, rs in runs.items() if config not in FEATURE_CONFIGS for _, d in rs]
    result = {
        "direct_limit": direct_limit,
        "indirect_limit": indirect_limit,
        "deep_qds": sorted({k[2] for k in deep}),
        "others_default": (not any("blk_indirect=" in b or "blk_event_idx=" in b for b in others)) if others else None,
        "indirect_deep": verdict([ind_ratios[k] for k in deep]),
        "indirect_shallow": verdict([ind_ratios[k] for k in shallow]),
        "event_idx": verdict([idx_ratios[k] for k in keys]),
        "kicks": {c: median([x["kicks_per_req"] for k in keys for x in cells.get(c, {}).get(k, {}).values()]) for c in FEATURE_CONFIGS},
        "irqs": {c: median([x["irqs_per_req"] for k in keys if k[2] > 1 for x in cells.get(c, {}).get(k, {}).values()]) for c in FEATURE_CONFIGS},
    }
    return "\n".join(lines) + "\n", result


def features_discussion(f):
    """Whether each feature pays off on this machine, in this run's numbers."""
    if not f:
        return ""

    def said(v):
        m, word, wins, n, clear = v
        if m is None:
            return word
        return (
            f"{word}: the median of the cells' paired on/off ratios is {fmt(m, 3)}, {wins} of {n} cells "
            f"have a median ratio above 1, and in {clear} of {n} the whole min–max range of the ratio "
            f"lies on one side of 1"
        )

    k, i = f["kicks"], f["irqs"]
    deep = ", ".join(str(q) for q in f["deep_qds"]) or "none measured"
    out = (
        f"- **INDIRECT_DESC**, at the queue depths beyond {fmt(f['direct_limit'])} ({deep}) that only indirect "
        f"descriptors let the disk take: {said(f['indirect_deep'])}; at the depths where both fit: "
        f"{said(f['indirect_shallow'])}.\n"
        f"- **RING_EVENT_IDX**, all cells: {said(f['event_idx'])}. Kicks per request (median over every "
        f"cell): {fmt(k['features-idx-ind'], 2)} with it, {fmt(k['features-noidx-ind'], 2)} without; "
        f"interrupts per request at QD > 1: {fmt(i['features-idx-ind'], 2)} with it, "
        f"{fmt(i['features-noidx-ind'], 2)} without.\n"
    )
    if k and all(v == 1 for v in k.values()):
        below = [v for v in i.values() if v is not None and v < 1]
        out += (
            "- Why every request kicks, with or without RING_EVENT_IDX: under TCG QEMU has no ioeventfd, "
            "so the driver's write to QueueNotify runs the device's queue handler synchronously on the "
            "vCPU's own thread. The device takes the request off the ring and re-enables notifications "
            "before the driver adds the next one, so neither `avail_event` nor NO_NOTIFY is ever found "
            "suppressing. (The driver also kicks after each request; a batching submitter, like blk-mq's "
            "`bd->last`, would give suppression something to save.)"
            + (" Interrupts per request fall below 1 at depth because the handler pops every completion it "
               "finds, with either mechanism.\n" if below else "\n")
        )
    saved = None if k.get("features-noidx-ind") is None or k.get("features-idx-ind") is None else k["features-noidx-ind"] - k["features-idx-ind"]
    out += (
        "- **The defaults** (`kernel/src/bootargs.rs`): by the issue's rule a feature is negotiated by "
        "default only if it pays off in the benchmark. In this run RING_EVENT_IDX "
        # (to three decimals: a difference of 1e-4 kicks per request is no saving worth a figure)
        + (f"saved {fmt(round(saved, 3), 2)} kicks per request, and its effect on IOPS: {f['event_idx'][1]}" if saved is not None else "was not measured")
        + f"; INDIRECT_DESC let a disk hold {fmt(f['indirect_limit'])} requests instead of {fmt(f['direct_limit'])}, "
        f"and its effect on IOPS at depth: {f['indirect_deep'][1]}. Both are one bootarg away (`blk_indirect=`, `blk_event_idx=`); "
        "on a host with ioeventfd (KVM), with more vCPUs, or with a driver that batches its kicks, measure "
        "there before changing the defaults.\n"
    )
    if f.get("others_default") is not None:
        out += (
            "- The other sections of this page ran "
            + ("with the defaults (no `blk_indirect=` or `blk_event_idx=` on their command line).\n" if f["others_default"]
               else "with `blk_indirect=` or `blk_event_idx=` on some command lines (see the raw results).\n")
        )
    return out


# ---------------------------------------------------------------- the document


def med_of(runs, p, key, f=lambda x: x):
    """The median over the rounds of `key` in configuration `p` (None if never measured)."""
    return median([f(d[key]) if d.get(key) is not None else None for _, d in runs.get(p, [])])


def count(runs, p, pred):
    """(boots of `p` for which `pred` holds, boots of `p`)."""
    return sum(1 for _, d in runs.get(p, []) if pred(d)), len(runs.get(p, []))


def design_discussion(runs):
    """What the design table says, in numbers from this run; each comparison worded from its outcome."""
    out = []
    med = lambda p, key, f=lambda x: x: med_of(runs, p, key, f)
    if runs.get("policy-lend") and runs.get("policy-static"):
        gain = med("policy-lend", "movable_available_bytes") - med("policy-static", "movable_available_bytes")
        static_fail = max(d["irq_failures"] for _, d in runs["policy-static"])
        static_reserved = med("policy-static", "pool_bytes_reserved", lambda x: x / MIB)
        more = "more" if gain >= 0 else "less"
        text = (
            f"- **Against `static`** (Linux's classic pool): `lend` left {fmt(abs(gain) / MIB)} MiB {more} to movable "
            f"allocations while the pool was idle, served the same burst with {fmt(med('policy-lend', 'irq_failures'))} "
            f"IRQ-context failures (median; each deferred to task context and completed, {fmt(med('policy-lend', 'lost'))} lost), "
            f"and gave {fmt(med('policy-lend', 'given_back_bytes', lambda x: x / MIB))} MiB back once the burst was over. "
            f"`static` had {fmt(static_fail)} IRQ-context failures in its worst boot"
        )
        if gain > 0:
            text += (
                f" and keeps its whole reservation ({fmt(static_reserved)} MiB) away from the page allocator all the "
                "time: that is the cost `lend` removes."
            )
        else:
            text += ", and in this run `lend` left movable allocations no more memory than `static` did."
        out.append(text)
    if runs.get("policy-lend") and runs.get("policy-dynamic"):
        dyn_served, dyn_n = count(runs, "policy-dynamic", lambda d: d["done_under_pressure"])
        lend_served, lend_n = count(runs, "policy-lend", lambda d: d["done_under_pressure"])
        text = (
            f"- **Against `dynamic`** (Linux 6.6 `SWIOTLB_DYNAMIC`: its whole boot pool of "
            f"{fmt(med('policy-dynamic', 'pool_bytes_reserved', lambda x: x / MIB))} MiB kept, transient pools on a miss, "
            f"worker pools with compaction; it left movable allocations {fmt(med('policy-dynamic', 'movable_available_bytes', lambda x: x / MIB))} MiB "
            f"against {fmt(med('policy-lend', 'movable_available_bytes', lambda x: x / MIB))} MiB for `lend`): "
            f"under memory pressure `dynamic` had {fmt(med('policy-dynamic', 'irq_failures'))} of "
            f"{fmt(med('policy-dynamic', 'mapped'))} IRQ-context mappings fail (median) and served the burst under "
            f"pressure in {dyn_served} of {dyn_n} boots, `lend` in {lend_served} of {lend_n} (burst "
            f"{fmt(med('policy-dynamic', 'burst_ms'))} ms against {fmt(med('policy-lend', 'burst_ms'))} ms for `lend`)."
        )
        lend_share, dyn_share = lend_served / lend_n, (dyn_served / dyn_n if dyn_n else 0)
        migrated = med("policy-lend", "pages_migrated")
        if lend_share > dyn_share:
            text += (
                " `lend` grew where `dynamic` could not"
                + (f": it migrated {fmt(migrated)} movable pages (median) out of the blocks it had lent, where "
                   "`dynamic` needs whole free pageblocks." if migrated else
                   "; it migrated no page to do so (the lent blocks it took were empty).")
            )
        elif lend_share < dyn_share:
            text += " `dynamic` served the burst under pressure more often than `lend` in this run."
        else:
            text += " Both served the burst under pressure equally often in this run."
        given = med("policy-dynamic", "given_back_bytes", lambda x: x / MIB)
        text += f" `dynamic` gave back {fmt(given)} MiB after the burst" + (" (its pools never shrink)." if not given else ".")
        out.append(text)
    if runs.get("policy-cma") and runs.get("policy-lend"):
        out.append(cma_discussion(runs, med))
    elif runs.get("policy-lend"):
        out.append(
            "- **Against chunks from CMA** (the objection's own alternative): not measured in this run (no "
            "`policy-cma` results), so nothing on this page says how `lend` compares with it."
        )
    if runs.get("policy-dynamic-small") and runs.get("policy-lend"):
        out.append(
            "- **Against `dynamic` with the boot pool `lend` keeps** (`swiotlb=2048`; the rest of the region "
            "is given to the page allocator, so both leave movable allocations the same memory): "
            f"{fmt(med('policy-dynamic-small', 'irq_failures'))} IRQ-context failures (median; they happen when a "
            "transient pool's `GFP_NOWAIT` allocation finds no free page) against "
            f"{fmt(med('policy-lend', 'irq_failures'))} for `lend`; burst {fmt(med('policy-dynamic-small', 'burst_ms'))} ms "
            f"against {fmt(med('policy-lend', 'burst_ms'))} ms; pages migrated to grow {fmt(med('policy-dynamic-small', 'pages_migrated'))} "
            f"against {fmt(med('policy-lend', 'pages_migrated'))}; given back after the burst "
            f"{fmt(med('policy-dynamic-small', 'given_back_bytes', lambda x: x / MIB))} MiB"
            + (" (its pools never shrink)." if not med("policy-dynamic-small", "given_back_bytes") else ".")
        )
    cycles_text = cycles_discussion(runs)
    if cycles_text:
        out.append(cycles_text)
    if runs.get("policy-lend"):
        share = med("policy-lend", "idle_pool_lent_share_after")
        keep = med("policy-lend", "pool_pageblocks") - med("policy-lend", "lent_pageblocks_after_idle")
        keep1 = med("policy-lend-keep1", "idle_pool_lent_share_after") if runs.get("policy-lend-keep1") else None
        out.append(
            f"- **Who decides how much to reserve?** With `lend` the reservation is an upper bound, not a cost: "
            f"{fmt(100 * share)} % of it was lent at the end of the idle phase, the rest ({fmt(keep)} pageblocks) still "
            "bounce slots: the `swiotlb_keep` pageblocks (2 by default), kept for the IRQ reserve and for bursts "
            "that must not wait for the worker, and any the shrink (`swiotlb_batch` pageblocks per "
            "`swiotlb_shrink_delay_ms`) had not lent again yet."
            + (f" With `swiotlb_keep=1` {fmt(100 * keep1)} % was lent, with {fmt(med('policy-lend-keep1', 'irq_failures'))} IRQ-context failures (median)." if keep1 is not None else "")
        )
    return "\n".join(out) + "\n"


def compare(a, b, lower_is_better=True, names=("`lend`", "`cma`")):
    """Words a comparison of two medians: which side is better, or that they tie."""
    if a is None or b is None:
        return "not comparable in this run"
    if a == b:
        return "the same"
    better = (a < b) == lower_is_better
    return f"better for {names[0] if better else names[1]}"


def cma_discussion(runs, med):
    """`lend` against chunks from CMA with the same reservation, metric by metric, each verdict
    taken from the data, including where `lend` is no better or is worse."""
    rows = [
        ("memory movable allocations got while the pool idled (MiB)", "movable_available_bytes", lambda x: x / MIB, False),
        ("IRQ-context mapping failures under memory pressure", "irq_failures", lambda x: x, True),
        ("time from the first miss to the pool's first growth (ms)", "grown_after_ms", lambda x: x, True),
        ("burst served in (ms)", "burst_ms", lambda x: x, True),
        ("time to grow by 4 MiB (ms)", "grow_4m_ns", lambda x: x / 1e6, True),
        ("pages migrated to grow by 4 MiB", "grow_4m_pages_migrated", lambda x: x, True),
        ("memory given back after the burst (MiB)", "given_back_bytes", lambda x: x / MIB, False),
    ]
    get = lambda key, f: lambda p: med(p, key, f)
    rows = [(name, get(key, f), lower) for name, key, f, lower in rows]
    on_cycles = lambda pick, which: lambda p: median(cycle_values(runs, p, pick, which))
    rows += [
        ("IRQ-context mapping failures without memory pressure (first cycle)", on_cycles(lambda c: c["irq_failures"], NO_PRESSURE), True),
        ("unusable free index after the last idle phase (‰)", on_cycles(frag("unusable_free_index"), LAST), True),
    ]
    parts, worse, same = [], [], []
    for name, figure, lower in rows:
        a, b = figure("policy-lend"), figure("policy-cma")
        if a is None and b is None:
            continue
        verdict = compare(a, b, lower)
        parts.append(f"{name}: {fmt(a)} for `lend`, {fmt(b)} for `cma` ({verdict})")
        if verdict == "better for `cma`":
            worse.append(name)
        elif verdict == "the same":
            same.append(name)
    text = (
        "- **Against chunks from CMA** (`cma`, the objection's own alternative, with the same reservation: a "
        "4 MiB boot pool and a 28 MiB CMA area, against `lend`'s 4 MiB of slots and 28 MiB lent): "
        + "; ".join(parts) + "."
    )
    if worse:
        text += " Where `lend` was worse than CMA chunks in this run: " + ", ".join(worse) + "."
    if same:
        text += " No difference: " + ", ".join(same) + "."
    if not worse and not same:
        text += " `lend` was ahead on every one of these measures in this run."
    text += (
        " What the two share by construction: both take memory back by migrating movable pages in task "
        "context, and neither grows from interrupt context, so an IRQ-context miss waits for the worker in "
        "both. What differs by construction: `lend`'s pool is one slot manager over one range (lookups do not "
        "grow with the number of chunks; see the pool-scaling table), and its spare blocks serve only the "
        "SWIOTLB, where a CMA area is shared with every other `cma_alloc` user."
    )
    return text


# ---------------------------------------------------------------- 3b. burst/idle cycles


def cycles_of(d):
    """The burst/idle cycles of one boot of the policy benchmark ([] in runs made before them)."""
    return d.get("cycles") or []


def frag(key):
    """A getter of one fragmentation figure of a cycle (or of `fragmentation_boot`)."""
    return lambda c: (c.get("fragmentation") or {}).get(key)


def cycle_values(runs, p, get, which):
    """`get(cycle)` for every boot of `p` and every cycle `which(index, cycle, cycles)` selects."""
    out = []
    for _, d in runs.get(p, []):
        cs = cycles_of(d)
        out += [get(c) for i, c in enumerate(cs) if which(i, c, cs)]
    return [v for v in out if v is not None]


NO_PRESSURE = lambda i, c, cs: not c["under_pressure"]
PRESSURE = lambda i, c, cs: c["under_pressure"]
LAST = lambda i, c, cs: i == len(cs) - 1
FIRST = lambda i, c, cs: i == 0


def with_cycles(runs):
    """The policy configurations of this run that measured burst/idle cycles."""
    return [p for p in POLICIES if any(cycles_of(d) for _, d in runs.get(p, []))]


def cycles_section(runs):
    """Per policy, per cycle: interrupt-context failures with and without memory pressure, and the
    page allocator's fragmentation after each idle phase."""
    present = with_cycles(runs)
    if not present:
        return "No per-cycle results in this run (the policy benchmark ran one cycle).\n"
    n_pressure = median([d.get("cycles_under_pressure") for p in present for _, d in runs[p]])
    lines = [
        f"Each boot of the policy benchmark runs the workload as {fmt(n_pressure + 1 if n_pressure is not None else None)} "
        "burst/idle cycles: the first without memory pressure, the others under it (RAM filled with movable "
        "pages afresh each time, part of them freed for migration targets). After each idle phase the "
        "pressure is released and the page allocator measured: wholly free pageblocks, the largest free "
        "order, Linux's `unusable_free_index()` at pageblock order (`mm/vmstat.c`, in thousandths as "
        "`/sys/kernel/debug/extfrag/unusable_index` prints it: the share of free pages in blocks too small "
        "for a pageblock), and the mixed pageblocks (a MOVABLE block holding unmovable pages, an UNMOVABLE "
        "block holding movable ones). Free pageblocks count every migrate type: under `lend` the lent, empty "
        "MIGRATE_SWIOTLB blocks, under `cma` the free blocks of the CMA area (both for movable allocations "
        "only), where `static` and `dynamic` keep their boot pool out of the page allocator. Median [min–max] "
        "over the rounds; the `boot` row is the allocator before the first cycle.",
        "",
    ]
    for p in present:
        rs = runs[p]
        ncycles = max(len(cycles_of(d)) for _, d in rs)
        mapped = median([c["mapped"] for _, d in rs for c in cycles_of(d)])
        lines += [
            f"**{POLICY_LABEL[p]}**",
            "",
            f"| cycle | memory pressure | IRQ-context failures (of {fmt(mapped)}) | deferred, completed | burst (ms) | pages migrated | given back (MiB) "
            "| free pageblocks after idle | largest free order | unusable free index (‰) | mixed: MOVABLE with unmovable / UNMOVABLE with movable |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        boot = [d.get("fragmentation_boot") for _, d in rs if d.get("fragmentation_boot")]
        if boot:
            b = lambda key: fmt_summary(summary([x.get(key) for x in boot]))
            lines.append(
                f"| boot | | | | | | | {b('free_pageblocks')} | {b('largest_free_order')} | {b('unusable_free_index')} | "
                f"{b('movable_blocks_with_unmovable')} / {b('unmovable_blocks_with_movable')} |"
            )
        for i in range(ncycles):
            at = [cycles_of(d)[i] for _, d in rs if len(cycles_of(d)) > i]
            s = lambda get: fmt_summary(summary([get(c) for c in at]))
            pressure = sorted({c["under_pressure"] for c in at})
            lines.append(
                f"| {i} | {'/'.join('yes' if x else 'no' for x in pressure)} | {s(lambda c: c['irq_failures'])} | "
                f"{s(lambda c: c['deferred_done'])} | {s(lambda c: c['burst_ms'])} | {s(lambda c: c['pages_migrated'])} | "
                f"{s(lambda c: c['given_back_bytes'] / MIB)} | {s(frag('free_pageblocks'))} | {s(frag('largest_free_order'))} | "
                f"{s(frag('unusable_free_index'))} | {s(frag('movable_blocks_with_unmovable'))} / {s(frag('unmovable_blocks_with_movable'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def word_trend(first, last, lower_is_better=True):
    """How a figure moved from the first cycle to the last."""
    if first is None or last is None:
        return "not measured"
    if first == last:
        return f"stayed at {fmt(first)}"
    worse = (last > first) == lower_is_better
    return f"went from {fmt(first)} to {fmt(last)} ({'worse' if worse else 'better'})"


def best_of(values, lower_is_better=True):
    """The labels with the best median (ties: all of them), from {label: value}."""
    known = {k: v for k, v in values.items() if v is not None}
    if not known:
        return []
    best = (min if lower_is_better else max)(known.values())
    return [k for k, v in known.items() if v == best]


def cycles_discussion(runs):
    """The "In short" item on repeated bursts: failures without and with pressure, fragmentation
    after the idle phases, each figure and verdict from the run."""
    present = [p for p in with_cycles(runs) if p != "policy-lend-icount"]
    if not present:
        return ""
    # Labels without commas, since the lists below are comma-separated.
    label = lambda p: POLICY_LABEL[p].split(",")[0] if p in ("policy-lend", "policy-cma", "policy-static", "policy-dynamic") else POLICY_LABEL[p].replace(", ", " with ")
    n_pressure = median([d.get("cycles_under_pressure") for p in present for _, d in runs[p]])
    quiet = {p: median(cycle_values(runs, p, lambda c: c["irq_failures"], NO_PRESSURE)) for p in present}
    loaded = {p: median(cycle_values(runs, p, lambda c: c["irq_failures"], PRESSURE)) for p in present}
    index_last = {p: median(cycle_values(runs, p, frag("unusable_free_index"), LAST)) for p in present}
    index_first = {p: median(cycle_values(runs, p, frag("unusable_free_index"), FIRST)) for p in present}
    blocks_last = {p: median(cycle_values(runs, p, frag("free_pageblocks"), LAST)) for p in present}
    mixed_last = {p: median(cycle_values(runs, p, lambda c: (frag("movable_blocks_with_unmovable")(c) or 0) + (frag("unmovable_blocks_with_movable")(c) or 0), LAST)) for p in present}
    names = lambda ps: ", ".join(label(p) for p in ps) or "none"
    text = (
        f"- **Repeated bursts** (each boot: one burst/idle cycle without memory pressure, then "
        f"{fmt(n_pressure)} under it). IRQ-context mapping failures per burst, median without pressure / "
        "under pressure: "
        + "; ".join(f"{label(p)} {fmt(quiet[p])} / {fmt(loaded[p])}" for p in present)
        + f". Fewest without pressure: {names(best_of(quiet))}; under pressure: {names(best_of(loaded))}. "
        "After the last idle phase, Linux's unusable free index at pageblock order (thousandths; lower is less "
        "fragmented) / wholly free pageblocks / mixed pageblocks: "
        + "; ".join(f"{label(p)} {fmt(index_last[p])} / {fmt(blocks_last[p])} / {fmt(mixed_last[p])}" for p in present)
        + f". Least fragmented by that index: {names(best_of(index_last))}. From the first idle phase to the last "
        "the index "
        + "; ".join(f"{label(p)} {word_trend(index_first[p], index_last[p])}" for p in present)
        + "."
    )
    if "policy-lend" in present:
        worse = []
        for p in present:
            if p == "policy-lend":
                continue
            for what, values, lower in (("failures without pressure", quiet, True), ("failures under pressure", loaded, True),
                                        ("unusable free index after the last idle", index_last, True),
                                        ("free pageblocks after the last idle", blocks_last, False)):
                if compare(values["policy-lend"], values[p], lower, ("lend", "other")) == "better for other":
                    worse.append(f"{what} (against {label(p)})")
        text += (" Where `lend` came out worse over the cycles: " + ", ".join(worse) + "." if worse
                 else " `lend` was nowhere worse than the others on these measures over the cycles.")
    return text


SCALING_CONFIGS = ["scaling-dynamic", "scaling-lend", "scaling-dynamic-icount", "scaling-lend-icount"]


def scaling_section(runs):
    """Lookup cost against the number of pools (`bench-scaling`)."""
    rows = {}
    for config in SCALING_CONFIGS:
        for _, d in runs.get(config, []):
            for r in d.get("scaling", []):
                rows.setdefault((config, r["pools"]), []).append(r)
    if not rows:
        return "No `scaling` results.\n"
    lines = [
        "A 4 KiB bounce map+unmap (no copy back) landing in the newest pool, and `is_swiotlb_buffer` of an "
        "address outside every pool (the walk's worst case), as the pool list grows. `dynamic` "
        "(`swiotlb=2048 swiotlb_dyn_pool=1`) adds one-pageblock pools and keeps all but the newest full; "
        "`lend` has one slot manager whatever it lent or reclaimed. ns (instructions in the `-icount` rows), "
        "median [min–max] over the rounds, and the ratio to a 4 KiB memcpy of the same boot.",
        "",
        "| policy | unit | pools | map+unmap 4 KiB | … / memcpy 4 KiB | `is_swiotlb_buffer` miss |",
        "|---|---|---|---|---|---|",
    ]
    for (config, pools), rs in sorted(rows.items(), key=lambda cr: (SCALING_CONFIGS.index(cr[0][0]), cr[0][1])):
        icount = config.endswith("-icount")
        lines.append(
            f"| `{config.split('-')[1]}` | {'instructions (`-icount`)' if icount else 'ns'} | {pools} | {fmt_summary(summary([r['bounce_map_unmap_4k_ns'] for r in rs]))} | "
            f"{fmt_summary(summary(paired_ratios([(r['bounce_map_unmap_4k_ns'], r['memcpy_4k_ns']) for r in rs])), 2)} | "
            f"{fmt_summary(summary([r['is_swiotlb_buffer_miss_ns'] for r in rs]))} |"
        )
    dyn = sorted(p for c, p in rows if c == "scaling-dynamic")
    if len(dyn) >= 2:
        first = median([r["is_swiotlb_buffer_miss_ns"] for r in rows[("scaling-dynamic", dyn[0])]])
        last = median([r["is_swiotlb_buffer_miss_ns"] for r in rows[("scaling-dynamic", dyn[-1])]])
        if first and last:
            lines += ["", f"Under `dynamic` an `is_swiotlb_buffer` miss cost {fmt(last / first, 2)} × as much with {dyn[-1]} pools as with {dyn[0]}."]
    return "\n".join(lines) + "\n"


def per_boot_rows(runs, config):
    """The `map` rows of each boot of `config`, by (live, size)."""
    return [{(r["live"], r["size"]): r for r in d["rows"]} for _, d in runs.get(config, [])]


def map_figure(runs, config, f, key=(1, 4096)):
    """The median over the boots of `f(row)` for the `map` row `key` of `config` (rows where `f`
    gives None left out)."""
    return median([v for b in per_boot_rows(runs, config) if key in b and (v := f(b[key])) is not None])


def losses(runs, targets, machine):
    """Where `lend` loses and which targets were missed, with the reasons we know, each figure
    taken from this run."""
    out = []
    missed = [r for r in targets.rows if r[3] is False]
    med = lambda p, key, f=lambda x: x: med_of(runs, p, key, f)
    big = max((s for b in per_boot_rows(runs, "map") for (_, s) in b), default=None)
    # Instructions (-icount) and TCG time of the mapping benchmark.
    memcpy_insns = map_figure(runs, "map-icount", lambda r: r["memcpy_ns"])
    book_insns = map_figure(runs, "map-icount", lambda r: r["bounce_to_device_ns"] - r["memcpy_ns"])
    nocache_pairs = slot_cache_effect(runs, "map-icount")
    nocache_insns = median([b for _, b in nocache_pairs]) if nocache_pairs else None
    nocache_ratio = median(paired_ratios(nocache_pairs)) if nocache_pairs else None
    direct_insns = map_figure(runs, "map-icount", direct_net)
    direct_ratio = map_figure(runs, "map-icount", lambda r: direct_net(r) / r["memcpy_ns"])
    direct_called_insns = map_figure(runs, "map-icount", lambda r: direct_called(r) if "direct_call_ns" in r else None)
    traced = trace_split(machine.get("insn_trace"), "bounced")
    inlined = inlined_split(machine.get("insn_trace"))
    one_copy = lambda cfg: map_figure(runs, cfg, lambda r: r["bounce_to_device_ns"] / r["memcpy_ns"], (1, big)) if big else None
    hit_ns = map_figure(runs, "map", lambda r: r["is_swiotlb_buffer_hit_ns"])
    timer_hz = median([d.get("timer_hz") for _, d in runs.get("map", [])])
    ticks = None if hit_ns is None or not timer_hz else hit_ns * timer_hz / 1e9
    icount_hits = [b[(live, 4096)]["is_swiotlb_buffer_hit_ns"] for b in per_boot_rows(runs, "map-icount") for live in (1, 64, 512) if (live, 4096) in b]
    icount_flat = bool(icount_hits) and max(icount_hits) == min(icount_hits)
    # Per boot, the live count whose row was slowest in TCG time.
    tcg_rows = [{live: b[(live, 4096)]["is_swiotlb_buffer_hit_ns"] for live in (1, 64, 512) if (live, 4096) in b} for b in per_boot_rows(runs, "map")]
    slowest_live = [max(r, key=r.get) for r in tcg_rows if r]
    all_hits = [h for r in tcg_rows for h in r.values()]
    grow_ratio = lambda p: median(paired_ratios([(d.get("grow_4m_ns"), d["memcpy_4m_ns"]) for _, d in runs.get(p, [])]))
    grow_insns, grow_time = grow_ratio("policy-lend-icount"), grow_ratio("policy-lend")
    grow_scrub = grow_ratio("policy-lend-scrub") if runs.get("policy-lend-scrub") else None
    # The instructions of growth split by the icount run's own figures: copies of the migrated
    # pages (4 KiB each) against everything else, per migrated page.
    grow_copy_share = grow_rest_per_page = None
    icount_grow = [
        (d["grow_4m_ns"], d["memcpy_4m_ns"], d["grow_4m_pages_migrated"])
        for _, d in runs.get("policy-lend-icount", [])
        if d.get("grow_4m_ns") and d.get("grow_4m_pages_migrated")
    ]
    if icount_grow:
        grow_copy_share = median([pages * memcpy / 1024 / grow for grow, memcpy, pages in icount_grow])
        grow_rest_per_page = median([(grow - pages * memcpy / 1024) / pages for grow, memcpy, pages in icount_grow])
    slot_bytes = 2 * KIB
    pageblock_bytes = (med("policy-lend", "slots_per_pageblock") or 0) * slot_bytes
    grow_blocks = 4 * MIB / pageblock_bytes if pageblock_bytes else None
    grow_migrated, grow_dropped = med("policy-lend", "grow_4m_pages_migrated"), med("policy-lend", "grow_4m_pages_dropped")
    ms_per_block = med("policy-lend", "grow_ns_total") / med("policy-lend", "grown_pageblocks") / 1e6 if med("policy-lend", "grown_pageblocks") else None
    icount_irq = med("policy-lend-icount", "irq_failures") if runs.get("policy-lend-icount") else None
    kept_mib = med("policy-lend", "slots_before", lambda x: x * slot_bytes / MIB)
    aliasing = median([m["aliasing_ns"] / m["ns"] for _, d in runs.get("io", []) for m in d["memcpy"] if m["ns"]])

    reasons = {
        "throttled": throttled_reason(runs),
        "kicks": (
            "The driver notifies the device after each request it queues; section 5 says what RING_EVENT_IDX "
            "spares under TCG. Batching the kicks (one per batch of requests) is what this target asks for."
        ),
        "qd16": qd16_reason(runs, machine),
        "added": (
            added_reason(runs) +
            "A bounced *read* copies once when its slots are clean: free slots are zeroed while CPUs idle "
            "(`swiotlb_clean_slots=on`, the default), and a virtio-blk read, mapped with `DmaAttrs::no_copy_in`, "
            "then skips the copy-in that Linux makes for every mapping (so that a device writing only part of the "
            "buffer cannot expose stale slot contents, CVE-2022-0854; `swiotlb_tbl_map_single`). When no clean "
            "slot is free, or with `swiotlb_clean_slots=off`, it copies twice as Linux does. A write copies once"
            + (f": a one-copy map+unmap of {size_label(big)} took {fmt(one_copy('map-icount'), 2)} times the memcpy in "
               f"instructions (`-icount`) and {fmt(one_copy('map'), 2)} times in TCG time (section 2)" if big else "")
            + f"; the aliasing memcpy, whose buffers' pages evict each other from QEMU's softmmu TLB, took "
            f"{fmt(aliasing, 2)} times the plain one (median over sizes): a bounce meets that only when no other run fits, "
            "its slots coloured away from the buffer's TLB entries (`swiotlb_colour_kib=1024`, the default; DESIGN, "
            "\"Slot colouring\"). QD 1 latencies also carry the host's I/O noise; see min–max."
        ),
        "bookkeeping": (
            f"A bounced map+unmap of 4 KiB cost {fmt(book_insns)} instructions besides the copy (the `-icount` table, "
            f"median; the reference memcpy of 4 KiB took {fmt(memcpy_insns)})."
            + (f" Single-stepped in GDB (section 2's last table), one bounced map+unmap ran {fmt(traced[0])} instructions, "
               f"{fmt(traced[1])} of them in `memcpy`/`memset`; the "
               + ("most of the rest: " if len(traced[2]) > 4 else "rest: ")
               + "; ".join(f"`{short_function(f)}` {fmt(n)}" for f, n in traced[2][:4])
               + (f" (the other {fmt(len(traced[2]) - 4)} functions {fmt(sum(n for _, n in traced[2][4:]))})" if len(traced[2]) > 4 else "")
               + "."
               if traced and traced[2] else " Single-stepping one map+unmap in GDB shows where they go.")
            + (f" Taken apart by the source function the code came from (inlining undone, section 2's table after it), "
               f"{fmt(len(inlined))} functions share them, the largest "
               + "; ".join(f"`{short_function(f)}` {fmt(n)}" for f, n in inlined[:6])
               + f"; the largest is {fmt(100 * inlined[0][1] / sum(n for _, n in inlined))} % of them: the cost is spread over the "
               "layers, with no one piece whose removal would bring it near the target."
               if inlined and len(inlined) > 6 else "")
            + (f" Grouped by what they buy (the table after it): "
               + "; ".join(f"{label} {fmt(n)}" for label, n in bookkeeping_parts(inlined))
               + f". {upper_first(core_names(inlined))}, what a pool that runs on several "
               f"CPUs and answers `is_swiotlb_buffer` without a lock keeps however thin its layers, took {fmt(core_insns)} "
               f"together in this implementation, {fmt(core_insns / (0.2 * memcpy_insns), 2)} times the target's "
               f"{fmt(0.2 * memcpy_insns)}."
               if inlined and memcpy_insns and (core_insns := sum(n for label, n in bookkeeping_parts(inlined) if label in [p for p, _ in CORE_PARTS])) else "")
            + (f" The 4 KiB mapping took a page run from its area's slot cache, with no search; without the cache "
               f"(`swiotlb_slot_cache=0`, as Linux: every mapping searches; booted alternately) the same map+unmap cost "
               f"{fmt(nocache_insns)} instructions besides the copy ({fmt(nocache_ratio, 2)} times as many with the cache)."
               if nocache_insns is not None else "")
            + " The slot search is constant time when it runs (a `u128` free map per 128-slot segment "
            "and per-area run summaries, where Linux's `swiotlb_area_find_slots` and `swiotlb_release_slots` walk "
            "the segment slot by slot). A cached run moves no slot count and writes no slot state (a parked run "
            "stays held: counted used, as Linux's `NR_FREE_PAGES` leaves out the pages on the per-CPU lists, and "
            "Used in the slot states, as those pages are not `PageBuddy`) and needs no watermark check; on the DMA "
            "API's bounce path it runs in a frame of its own (`DmaApi::map_cached_beyond_reach`), and the unmap "
            "looks the record up under the area lock with no lock-free state read first. What a cached map+unmap "
            "still pays: the DMA-API entry and the bounce decision, the area lock (IRQs masked) at map and at "
            "unmap, the cache's ring, the mapping's record, the statistics' atomic counters (maps, bytes bounced, "
            "the DMA API's bounced maps), the IRQ reserve's check, and at unmap the mapping's lookup (in the same "
            "hold of the area lock as the release when nothing is copied back; a copy back takes the lock twice, "
            "so that the copy runs with it released). About 100 instructions would leave room for little more "
            "than the lock and the record: the statistics and the layers would have to go."
        ),
        "direct": (
            f"The direct path added {fmt(direct_insns)} instructions per map+unmap to its caller"
            + (f" ({fmt(direct_called_insns)} through a function of its own)" if direct_called_insns is not None else "")
            + f" against {fmt(memcpy_insns)} for the 4 KiB memcpy: {fmt(direct_ratio, 2)} of it (median of the "
            "per-boot ratios). Its common case is inline in the caller (`DmaApi::map_single`/`unmap_single`), "
            "everything else out of line; what is left: the checks themselves (zero size, the debug tracker, the "
            "device's reach as one compare, the lent-page and CMA span a pin would need, interrupt context, and "
            "at unmap the device pool flag and the SWIOTLB's span), the direct-maps counter's atomic increment. "
            "In TCG time a memcpy also runs faster per instruction than this branchy code."
        ),
        "flat": (
            f"Timer noise: one call took {fmt(hit_ns)} ns, {fmt(ticks, 2)} ticks of the {fmt(timer_hz / 1e6 if timer_hz else None)} MHz "
            "counter, and the loop's median moves with the host."
            + (f" The time does not follow the number of live mappings: the slowest row was the one with "
               f"{', '.join(fmt(x) for x in slowest_live)} live mappings in the {fmt(len(slowest_live))} boots, and the rows took "
               f"{fmt(min(all_hits))} to {fmt(max(all_hits))} ns whatever the number."
               if len(set(slowest_live)) > 1 else "")
            + (" In instructions it is exactly flat (the `-icount` rows): the test reads one atomic state word, "
               "whatever the number of live mappings." if icount_flat else "")
        ),
        "grow": (
            f"Growing by 4 MiB takes back {fmt(grow_blocks)} pageblocks: "
            + (f"{fmt(grow_migrated)} of their {fmt(4 * MIB // 4096)} pages migrated and {fmt(grow_dropped)} dropped "
               "(median; a copy each for the migrated ones, plus isolating the blocks, allocating the targets and "
               "switching the frames under the allocator lock)" if grow_migrated else
               "no page migrated (the blocks taken were empty): isolating them and taking them out of the allocator")
            + ". The blocks' slots then serve at once, dirty (`swiotlb_reclaim_scrub=off`, the default): a mapping "
            "of dirty slots copies in and zeroes the rest of its slots, so nothing the page allocator's users left "
            "reaches a device, and idle CPUs zero them afterwards (`slots_scrubbed`). "
            + (f"That came to {fmt(grow_insns, 2)} copies' worth in instructions (`-icount`) and {fmt(grow_time, 2)} in "
               "TCG real time; " if grow_insns is not None else f"That came to {fmt(grow_time, 2)} copies' worth in TCG real time; ")
            + (f"in instructions, the migrated pages' copies (each a 4 KiB memcpy, 1/1024 of the 4 MiB one measured in the "
               f"same boot) make {fmt(100 * grow_copy_share)} % of it; the rest, {fmt(grow_rest_per_page)} instructions per "
               "migrated page, is the page allocator's bookkeeping: walking and isolating the blocks, taking each target "
               "frame from the buddy lists, freeing each source frame and merging it with its buddies, switching the "
               "handle. " + ("A ratio of 1.5 needs that bookkeeping cut, not the copies. " if grow_insns is not None and grow_insns > 1.5 else "")
               if grow_copy_share is not None else "")
            + ("TCG runs a copy loop much faster per instruction than the allocator's branchy code, and the real-time "
               "memcpy reference itself moves with the host (see its min–max). " if grow_insns is not None and grow_time is not None and grow_time > grow_insns else "")
            + (f"Zeroing the 4 MiB on the way as well (`swiotlb_reclaim_scrub=on`, its column) took "
               f"{fmt(grow_scrub, 2)} copies' worth in TCG time." if grow_scrub is not None else "")
        ),
        "irq": (
            "In some boots the worker fell behind the burst: the timer interrupt keeps mapping at its own pace "
            "whatever else the host does, the worker is kicked only at the low watermark, reclaim took "
            f"{fmt(ms_per_block, 2)} ms per pageblock, and the pool first grew after {fmt(med('policy-lend', 'grown_after_ms'))} ms "
            f"(median). Meanwhile the {fmt(kept_mib)} MiB kept as slots and the IRQ reserve run out and a few "
            "interrupt-context mappings fail. Each was deferred to task context and completed"
            + (f" ({fmt(med('policy-lend', 'lost'))} lost)" if runs.get("policy-lend") else "")
            + (f"; under `-icount`, where the guest's own instructions set the pace, the median was {fmt(icount_irq)}" if icount_irq is not None else "")
            + ". A larger `swiotlb_reserve` or `swiotlb_keep`, or an earlier low watermark, buys margin with idle memory"
            + ("; `swiotlb_keep=1` shows the other direction." if runs.get("policy-lend-keep1") else ".")
        ),
    }
    if runs.get("policy-lend"):
        pool, lent = med("policy-lend", "pool_pageblocks"), med("policy-lend", "lent_pageblocks_boot")
        share = med("policy-lend", "idle_pool_lent_share_boot")
        after = med("policy-lend", "idle_pool_lent_share_after")
        reasons["idle"] = (
            f"The default `swiotlb_keep` keeps {fmt(pool - lent)} of the {fmt(pool)} pageblocks as slots: {fmt(100 * share)} % "
            "is the most that can be lent with that setting, and was lent at boot, before the first burst"
            + (
                f"; at the end of the idle phase after the burst (the row's figure) {fmt(100 * after)} % was (median): what the "
                "burst took back, the shrink lends again `swiotlb_batch` pageblocks per `swiotlb_shrink_delay_ms`, and had not "
                "finished when the idle phase ended."
                if after < share
                else "."
            )
            + (
                f" `swiotlb_keep=1` lent {fmt(100 * med('policy-lend-keep1', 'idle_pool_lent_share_boot'))} % at boot and "
                f"{fmt(100 * med('policy-lend-keep1', 'idle_pool_lent_share_after'))} % at the end of the idle phase; see its "
                "column for what it costs."
                if runs.get("policy-lend-keep1")
                else ""
            )
        )

    def kind(what):
        if "throttled" in what:
            return "throttled"
        if "kicks" in what:
            return "kicks"
        if "QD 1 " in what:
            return "added"
        if "bounced/direct" in what:
            return "qd16"
        if "adds" in what:
            return "added"
        if "bookkeeping" in what:
            return "bookkeeping"
        if "direct, buffer in the window" in what:
            return "direct"
        if "is_swiotlb_buffer" in what:
            return "flat"
        if "grow" in what:
            return "grow"
        if "idle pool" in what:
            return "idle"
        if "IRQ-context" in what:
            return "irq"
        return None
    groups = {}
    for what, target, measured, _ in missed:
        groups.setdefault(kind(what), []).append(f"{what} (wanted {target}, measured {measured})")
    for k, items in groups.items():
        out.append("- **Missed:** " + "; ".join(items) + ". " + reasons.get(k, ""))
    if runs.get("policy-lend") and runs.get("policy-static"):
        migrated = med("policy-lend", "pages_migrated")
        static_grew = any(d.get("grown_after_ms") is not None for _, d in runs["policy-static"])
        out.append(
            f"- **Where `lend` loses**: a burst must wait for the worker to reclaim (first growth after "
            f"{fmt(med('policy-lend', 'grown_after_ms'))} ms, against "
            + ("never for `static`" if not static_grew else f"{fmt(med('policy-static', 'grown_after_ms'))} ms for `static`")
            + "), and "
            + (f"that reclaim migrated {fmt(migrated)} pages (a copy each) that `static` never moves; " if migrated else
               "in this run that reclaim migrated no page (the lent blocks it took were empty); ")
            + "requests made in interrupt context meanwhile live on the `swiotlb_reserve` slots or are deferred. "
            "Migration also needs free pages to migrate into: the workload frees part of its pressure for that. "
            "A RAM full of pinned or unmovable pages would leave `lend` nothing to migrate into (not measured here)."
        )
    return "\n".join(out) + "\n"


# The fields of an I/O cell that time the requests' own path apart from the loop around them:
# the fills that queued, the collections that found, the interrupt handlers.
PATH_FIELDS = ("submit_ns", "collect_ns", "irq_ns")


def io_sliced(runs, config="io"):
    """Whether `config`'s cells ran in slices (`slice_lat_ns`)."""
    return any(c.get("slice_lat_ns") for _, d in runs.get(config, []) for c in d.get("cells", []))


def added_latency(direct, bounced):
    """The latency a bounce added to a request in one boot: the bounced cell's minus the direct
    one's; for cells run in slices (`slice_lat_ns`, direct and bounced alternated ABBA), the median
    over the slices of the bounced slice's latency minus that of the direct slice of the same
    index (the one run next to it)."""
    ds, bs = direct.get("slice_lat_ns"), bounced.get("slice_lat_ns")
    if ds and bs and len(ds) == len(bs):
        diffs = [b - d for d, b in zip(ds, bs) if d is not None and b is not None and d == d and b == b]
        if diffs:
            return median(diffs)
    return bounced["lat_ns"] - direct["lat_ns"]


def added_samples(runs, config="io-icount"):
    """Per (pattern, op) of the 64 KiB QD 1 cells of `config`, one sample per round: what a
    bounce added to a request's busy time in 64 KiB memcpys (same boot), and its parts: the
    idle scrubbing it caused (the loop's busy time in scrub steps per request beyond the direct
    cell's, `scrub_ns`; in older results the slots zeroed per request beyond the direct cell's
    at the boot's memset speed; 0 for results without either), the rest (the request's own
    path), the copies per request (one, plus for reads the share that copied in) and that
    share. Where the cells timed the request's own path apart (`submit_ns`, `collect_ns`,
    `irq_ns`: the fills that queued, the collections that found, the interrupt handlers), "path"
    is that, exact under `-icount`, and "scrub" the rest of the busy time the bounce added (the
    loop around the requests: its scrub steps and the passes that waited); "exact" says which.
    Reads without copy-in counts are left out."""
    cells, memcpy = io_cells(runs, config)
    refs = {rnd: m for rnd, m in memcpy.get(64 * KIB, [])}
    out = {}
    for pattern in ("seq", "rand"):
        for op in ("read", "write"):
            k = (pattern, op, 64 * KIB, 1)
            d, b = dict(cells.get(k + ("direct",), [])), dict(cells.get(k + ("bounced",), []))
            for rnd in sorted(d.keys() & b.keys()):
                bd, bb, ref = d[rnd].get("busy_ns_per_req"), b[rnd].get("busy_ns_per_req"), refs.get(rnd)
                if bd is None or bb is None or not ref or not ref.get("ns"):
                    continue
                c = ref["ns"]
                copies, copied_in = 1.0, None
                if op == "read":
                    skipped, copied = b[rnd].get("reads_copy_in_skipped"), b[rnd].get("reads_copied_in")
                    if skipped is None or copied is None or skipped + copied == 0:
                        continue
                    copied_in = copied / (skipped + copied)
                    copies += copied_in
                scrub = 0.0
                per_req = lambda x: x.get("slots_scrubbed", 0) / x["ops"] if x.get("ops") else 0.0
                if "scrub_ns" in b[rnd] and "scrub_ns" in d[rnd] and b[rnd].get("ops") and d[rnd].get("ops"):
                    scrub = (b[rnd]["scrub_ns"] / b[rnd]["ops"] - d[rnd]["scrub_ns"] / d[rnd]["ops"]) / c
                elif ref.get("memset_ns"):
                    scrubbed_bytes = max(per_req(b[rnd]) - per_req(d[rnd]), 0.0) * 2 * KIB
                    scrub = scrubbed_bytes / (64 * KIB) * ref["memset_ns"] / c
                added = (bb - bd) / c
                exact = all(f in x for f in PATH_FIELDS for x in (b[rnd], d[rnd])) and b[rnd].get("ops") and d[rnd].get("ops")
                if exact:
                    own = lambda x: sum(x[f] for f in PATH_FIELDS) / x["ops"]
                    scrub = added - (own(b[rnd]) - own(d[rnd])) / c
                out.setdefault((pattern, op), []).append(
                    {"added": added, "scrub": scrub, "path": added - scrub, "copies": copies, "rest": added - scrub - copies, "copied_in": copied_in,
                     "exact": bool(exact)}
                )
    return out


def added_figures(runs, config="io-icount"):
    """[`added_samples`] per op, medians over the patterns and rounds, or None without such
    cells."""
    samples = added_samples(runs, config)
    out = {}
    for op in ("read", "write"):
        xs = [x for (_, o), v in samples.items() if o == op for x in v]
        if xs:
            out[op] = {key: median([x[key] for x in xs if x[key] is not None]) for key in ("added", "scrub", "path", "copies", "rest", "copied_in")}
            out[op]["exact"] = all(x["exact"] for x in xs)
    return out or None


def added_targets(runs, targets):
    """The instruction twins of the QD 1 "time a bounce adds" rows: the guest instructions a
    bounce added to the request's own path (under `-icount`: its submission, interrupt handler
    and collection timed apart from the loop; in older results its busy time, the idle scrubbing
    it caused set apart), in 64 KiB memcpys."""
    for (pattern, op), xs in sorted(added_samples(runs).items(), key=lambda kv: (kv[0][0] != "seq", kv[0][1])):
        s = summary([x["path"] for x in xs])
        targets.add(
            f"QD 1 {pattern} {op} 64 KiB: instructions a bounce adds to the request's path / memcpy (`io-icount`)",
            "≤ 1.1",
            fmt_summary_against(s, 1.1, 3),
            None if s[0] is None else s[0] <= 1.1,
        )


def one_copy_ceilings(runs):
    """Per QD 1 64 KiB (pattern, op), the bounced/direct throughput a bounce adding exactly one
    memcpy to each request would give: direct latency / (direct latency + the boot's 64 KiB
    memcpy), per boot, summarised."""
    cells, memcpy = io_cells(runs, "io")
    refs = {rnd: m["ns"] for rnd, m in memcpy.get(64 * KIB, [])}
    out = {}
    for pattern in ("seq", "rand"):
        for op in ("read", "write"):
            d = dict(cells.get((pattern, op, 64 * KIB, 1, "direct"), []))
            xs = [c["lat_ns"] / (c["lat_ns"] + refs[rnd]) for rnd, c in d.items() if refs.get(rnd) and c.get("lat_ns")]
            if xs:
                out[(pattern, op)] = summary(xs)
    return out


def copies_in_place(runs, config="io"):
    """Per QD 1 64 KiB (pattern, op) of `config`, per boot, in 64 KiB memcpys of that boot: the
    time a bounce added to a request (bounced latency minus direct), and the part of it its
    copies took where they ran (`bounce_copy_ns` per request, bounced minus direct: the direct
    cell bounces the header and status byte too); and where the results have it, the loop's
    scrub steps after which it collected a completion (`scrub_before_collect_ns`, bounced minus
    direct: the most the scrubbing can have held a request back), as "scrub_held"; and where the
    cells timed the request's own path apart from the loop (`submit_ns`, `collect_ns`, `irq_ns`),
    that path, bounced minus direct, as "path". Medians over the rounds, or {} for results
    without copy timing."""
    cells, memcpy = io_cells(runs, config)
    refs = {rnd: m["ns"] for rnd, m in memcpy.get(64 * KIB, [])}
    out = {}
    for pattern in ("seq", "rand"):
        for op in ("read", "write"):
            k = (pattern, op, 64 * KIB, 1)
            d, b = dict(cells.get(k + ("direct",), [])), dict(cells.get(k + ("bounced",), []))
            added, copies, held, path = [], [], [], []
            for rnd in d.keys() & b.keys():
                c = refs.get(rnd)
                if not c or "bounce_copy_ns" not in b[rnd] or not b[rnd].get("ops") or not d[rnd].get("ops"):
                    continue
                per_req = lambda field: (b[rnd][field] / b[rnd]["ops"] - d[rnd][field] / d[rnd]["ops"]) / c
                added.append(added_latency(d[rnd], b[rnd]) / c)
                copies.append(per_req("bounce_copy_ns"))
                if "scrub_before_collect_ns" in b[rnd] and "scrub_before_collect_ns" in d[rnd]:
                    held.append(per_req("scrub_before_collect_ns"))
                if all(f in x for f in PATH_FIELDS for x in (b[rnd], d[rnd])):
                    path.append(sum(per_req(f) for f in PATH_FIELDS))
            if added:
                out[(pattern, op)] = {"added": median(added), "copies": median(copies)}
                if len(held) == len(added):
                    out[(pattern, op)]["scrub_held"] = median(held)
                if len(path) == len(added):
                    out[(pattern, op)]["path"] = median(path)
    return out


def added_reason(runs):
    """The QD 1 "time a bounce adds" cells' explanation from the instruction counts of the same
    cells (`io-icount`): the copies a bounce made, the idle scrubbing, and what it spent besides;
    and what one copy per request would leave of the bounced/direct ratio."""
    f = added_figures(runs)
    text = ""
    if f:
        text = "In instructions (`io-icount`, the same cells at QD 1, exact), a bounced 64 KiB "
        parts = []
        exact = all(x["exact"] for x in f.values())
        loop = (
            "in the loop around it (its idle scrubbing, zeroing the slots while the CPU waited for the device, and the passes that "
            "waited)"
            if exact
            else "in idle scrubbing (zeroing its slots while the CPU waited for the device)"
        )
        path = (
            "on the request's own path (its submission, its interrupt handler and its collection, each timed apart from the loop)"
            if exact
            else "on the request's path"
        )
        if "read" in f:
            r = f["read"]
            parts.append(
                f"read added {fmt(r['added'], 3)} memcpys' worth of CPU: {fmt(r['scrub'], 3)} {loop}, and {path} {fmt(r['copies'], 3)} "
                f"copies' worth (the copy back, and the copy-in of the {fmt(100 * r['copied_in'])} % of reads whose slots were not "
                f"clean) and {fmt(r['rest'], 3)} besides"
            )
        if "write" in f:
            w = f["write"]
            parts.append(
                f"write added {fmt(w['added'], 3)}: {fmt(w['scrub'], 3)} {loop.split(' (')[0]}, and on its path one copy and "
                f"{fmt(w['rest'], 3)} besides"
            )
        text += "; a ".join(parts) + ". "
        if "read" in f and f["read"]["copied_in"]:
            text += (
                "The benchmark's loop zeroes free slots while it waits (a bounded step at a time where it would otherwise "
                "sleep, the next request already with the device): a read finds clean slots only where the scrubbing of "
                "earlier waits reached. "
            )
        # As the targets' rows: per cell (pattern and op), median over the rounds.
        if any(median([x["path"] for x in v]) > 1.1 for v in added_samples(runs).values()):
            text += (
                "A target of 1.1 leaves a tenth of a memcpy besides the one copy; what a bounce spends besides its copies "
                "(the slots, the completion) is the bookkeeping item below, at 64 KiB. "
            )
    in_place = copies_in_place(runs)
    if in_place:
        text += (
            "In TCG time, the bounce's copies, timed where they ran (the copy-in and copy-back of the data; "
            "the header's and status byte's cancel out against the direct cell's), took "
            + ", ".join(f"{fmt(x['copies'], 2)} memcpys' time against the {fmt(x['added'], 2)} a bounce added ({p} {o})" for (p, o), x in in_place.items())
            + " (medians over the rounds)"
        )
        over = [f"{p} {o}" for (p, o), x in in_place.items() if x["copies"] > x["added"]]
        if over:
            text += (
                f"; where the copies alone took longer than the time added ({', '.join(over)}), the rest of the bounced "
                "request took less time than the direct one's: "
                + (
                    "the host's I/O speed drifts between the slices run next to each other by that much (see min–max)"
                    if io_sliced(runs)
                    else "the two cells ran one after the other, and the host's I/O speed drifts between cells by that much (see min–max)"
                )
            )
        if all("scrub_held" in x for x in in_place.values()):
            text += (
                "; the loop's scrub steps after which it found the request done (a completion that came during "
                "such a step waited for its end: the most the scrubbing of earlier requests' slots can have held a "
                "request back) took "
                + ", ".join(f"{fmt(x['scrub_held'], 2)} ({p} {o})" for (p, o), x in in_place.items())
            )
        if len(over) < len(in_place):
            text += "; what is left besides is the bookkeeping, the completion's share and the host's I/O noise"
        text += ". "
        if all("path" in x for x in in_place.values()):
            text += (
                "The bounced request's own path (its submission, its interrupt handler and its collection, timed apart from "
                "the loop as in `io-icount`, here in TCG time) took, beyond the direct one's, "
                + ", ".join(
                    f"{fmt(x['path'], 2)} memcpys' time ({p} {o}; the copies {fmt(x['copies'], 2)}, the rest {fmt(x['path'] - x['copies'], 2)})"
                    for (p, o), x in in_place.items()
                )
                + ": the CPU time the bounce spends on the request's path"
                + (
                    " (in instructions, above: "
                    + ", ".join(f"{fmt(v['path'], 3)} memcpys for {op}s" for op, v in f.items())
                    + ")"
                    if f
                    else ""
                )
                + "; TCG runs the bookkeeping's branchy code slower per instruction than a copy loop (see the notes on "
                "measuring under TCG). "
            )
        writes = [x["copies"] for (_, o), x in in_place.items() if o == "write"]
        if writes and median(writes) > 1.1:
            text += (
                f"A write's one copy took {fmt(median(writes), 2)} memcpys' time where it ran: slower than the reference, "
                "which repeats one copy between the same warm pages. "
            )
    ceilings = one_copy_ceilings(runs)
    if ceilings:
        text += (
            "Had every bounce added exactly one 64 KiB memcpy (the floor: one copy of each byte) to a direct request's "
            "latency, bounced/direct at QD 1 would have been "
            + ", ".join(f"{fmt_summary(s, 2)} ({p} {o})" for (p, o), s in ceilings.items())
            + " (direct latency / (direct latency + memcpy), per boot): the QD 1 ratio target of 0.9 needs a direct "
            "request to take nine memcpys' time or more. "
        )
    return text


def qd16_figures(runs):
    """The figures behind the unthrottled 64 KiB QD 16 cells that missed, or None if none did:
    per placement the vCPU's busy share (busy time per request × requests ÷ the cell's elapsed
    time) and busy time per request, medians over those cells and rounds; the bounced/direct
    throughput a guest that its one CPU alone held would show (busy per request direct ÷
    bounced, per boot) next to the measured one; and the CPU a bounce added per request against
    the same boot's 64 KiB memcpy."""
    cells, memcpy = io_cells(runs, "io")
    keys = sorted(k for k in {k[:4] for k in cells} if k[2] == 64 * KIB and k[3] == 16 and (pair_ratio(cells, k, "mib_s")[0] or 1) < 0.9)
    if not keys:
        return None

    def share(c):
        busy, ops, elapsed = c.get("busy_ns_per_req"), c.get("ops"), c.get("elapsed_ns")
        return busy * ops / elapsed if busy is not None and ops and elapsed else None

    copy = {rnd: m["ns"] for rnd, m in memcpy.get(64 * KIB, [])}
    cpu_bound, ceiling, measured, added = [], [], [], []
    for k in keys:
        d, b = dict(cells.get(k + ("direct",), [])), dict(cells.get(k + ("bounced",), []))
        for rnd in d.keys() & b.keys():
            bd, bb = d[rnd].get("busy_ns_per_req"), b[rnd].get("busy_ns_per_req")
            cpu_bound += paired_ratios([(bd, bb)])
            # The most bounced requests a vCPU busy all the time could complete per second
            # (1 s / busy per bounced request), against the direct cell's measured rate.
            ops, elapsed = d[rnd].get("ops"), d[rnd].get("elapsed_ns")
            if bb and ops and elapsed:
                ceiling.append(elapsed / (bb * ops))
            measured += paired_ratios([(b[rnd].get("mib_s"), d[rnd].get("mib_s"))])
            if bd is not None and bb is not None and copy.get(rnd):
                added.append((bb - bd) / copy[rnd])
    get = lambda placement, f: median([f(c) for k in keys for _, c in cells.get(k + (placement,), [])])
    return {
        "cells": keys,
        "share_direct": get("direct", share),
        "share_bounced": get("bounced", share),
        "busy_direct": get("direct", lambda c: c.get("busy_ns_per_req")),
        "busy_bounced": get("bounced", lambda c: c.get("busy_ns_per_req")),
        "cpu_bound": median(cpu_bound),
        "ceiling": median(ceiling),
        "measured": median(measured),
        "added_copies": median(added),
    }


def qd16_reason(runs, machine):
    """Why the unthrottled 64 KiB QD 16 cells missed, from their figures and section 6's."""
    f = qd16_figures(runs)
    text = ""
    if f and f["share_bounced"] is not None and f["ceiling"] is not None:
        text += (
            f"In the missed cells ({', '.join(f'{k[0]} {k[1]}' for k in f['cells'])}) a bounced request took "
            f"{fmt(f['busy_bounced'] / 1e3)} µs of the vCPU's time against {fmt(f['busy_direct'] / 1e3)} µs for a direct one "
            "(medians over those cells and rounds). At that cost a "
            f"vCPU busy all the time could carry bounced I/O at {fmt(f['ceiling'], 2)} of direct's measured throughput at "
            f"most; it carried {fmt(f['measured'], 2)}, the vCPU busy {fmt(100 * f['share_bounced'])} % of the time bounced "
            f"and {fmt(100 * f['share_direct'])} % direct (medians of the per-boot ratios). "
            + (f"The bounce added {fmt(f['added_copies'], 2)} 64 KiB memcpys' worth of CPU per request (same boot). "
               if f["added_copies"] is not None else "")
        )
    text += (
        f"Every bounce copy is guest instructions on that one vCPU (at submission, and for reads again in the "
        "interrupt handler), while the direct path's data is copied by QEMU's I/O threads on the host's "
        f"{machine.get('nproc', '?')} CPUs; the premise of the target, that the copy of one request overlaps the "
        "device's work on others, needs a CPU to spare. "
    )
    spread = [s for cpus, what, s in report_smp.io_section(runs)[1] if cpus == 2 and "64 KiB" in what and s[0] is not None]
    if spread:
        text += (
            f"Giving the copies a second vCPU does not provide one on this host: with 2 vCPUs and each disk's "
            f"completions (where reads copy back) on its own vCPU, two disks' 64 KiB reads ran {fmt_summary(spread[0])} "
            "times as fast as with both on one vCPU (section 6), the second vCPU's host thread competing with QEMU's "
            "I/O threads for the host's cores. "
        )
    return text + "A read whose slots were not clean also copies twice (next item)."


def throttled_figures(runs):
    """The figures behind the explanation of the missed throttled 64 KiB QD 16 cells, or None if
    none missed: the cells, the limit (MiB/s), medians over those cells and rounds of direct and
    bounced MiB/s and busy ns per request, the vCPU's busy share at the bounced rate, the warm-up."""
    cells, _ = io_cells(runs, "io-throttled")
    bps = throttle_of(runs, "io-throttled")
    keys = [k for k in {k[:4] for k in cells} if k[2] == 64 * KIB and k[3] == 16]
    missed = sorted(k for k in keys if (pair_ratio(cells, k, "mib_s")[0] or 0) < 0.95)
    if not missed or not bps:
        return None
    get = lambda placement, f: median([c.get(f) for k in missed for _, c in cells.get(k + (placement,), [])])
    f = {
        "cells": missed,
        "limit": bps / MIB,
        "direct": get("direct", "mib_s"),
        "bounced": get("bounced", "mib_s"),
        "busy_direct": get("direct", "busy_ns_per_req"),
        "busy_bounced": get("bounced", "busy_ns_per_req"),
        "warmup": median([d.get("warmup_ms") for _, d in runs.get("io-throttled", [])]),
    }
    if f["direct"] is None or f["bounced"] is None:
        return None
    # Requests per second at the bounced rate times the busy time of each.
    f["share"] = None if f["busy_bounced"] is None else f["busy_bounced"] * f["bounced"] * MIB / (64 * KIB) / 1e9
    return f


def throttled_reason(runs):
    """Why the throttled 64 KiB QD 16 cells missed, from their figures: whether the bounced cells
    reached the throttle, and the guest's busy time per request that held them."""
    f = throttled_figures(runs)
    if f is None:
        return ""
    limit, direct, bounced = f["limit"], f["direct"], f["bounced"]
    text = (
        f"With disk 0 limited to {fmt(limit)} MiB/s, the missed cells ({', '.join(f'{k[0]} {k[1]}' for k in f['cells'])}) ran at "
        f"{fmt(direct)} MiB/s direct and {fmt(bounced)} MiB/s bounced (medians over those cells and rounds). "
    )
    if direct > 1.05 * limit:
        text += (
            "The direct cells ran above the limit: QEMU's leaky bucket lets a burst through at full speed (1/10 s "
            "of the limit by default)"
            + (f", which each cell's unmeasured warm-up of {fmt(f['warmup'])} ms should have used up" if f["warmup"] else
               "; these boots had no warm-up to use it up before each cell (`warmup=`)")
            + ". "
        )
    if direct < 0.9 * limit:
        text += "The direct cells did not reach the throttle either: something besides the device limited both. "
    elif bounced < 0.9 * limit:
        text += "The direct cells were held by the throttle, the bounced ones were not: the guest, not the device, set their pace. "
    if f["share"] is not None and f["busy_direct"] is not None:
        text += (
            f"The guest was busy {fmt(f['busy_bounced'] / 1e3)} µs per bounced request against {fmt(f['busy_direct'] / 1e3)} µs "
            f"per direct one, {fmt(f['share'], 2)} of the vCPU's time at the bounced rate (section 1, CPU time per bounced byte)."
        )
        if f["share"] >= 0.9:
            text += (
                " The one vCPU was nearly saturated at the bounced rate: the copies hid behind the device only just, "
                "and any host CPU time the vCPU lost shows in the ratio (its min–max above)."
            )
    return text


def icount_coverage(runs):
    """Which CPU-only figures have an `-icount shift=0` twin in this run."""
    pairs = [
        ("map", "map-icount", "mapping cost (section 2)"),
        ("scaling-dynamic", "scaling-dynamic-icount", "lookups as the pool list grows, `dynamic`"),
        ("scaling-lend", "scaling-lend-icount", "lookups as the pool list grows, `lend`"),
        ("policy-lend", "policy-lend-icount", "growth by 4 MiB against a 4 MiB copy (section 3)"),
        ("io", "io-icount", "the memcpy references and the guest's busy time per request at queue depth 1 (section 1)"),
    ]
    done = [f"{what}: `{twin}`" for real, twin, what in pairs if runs.get(twin)]
    missing = [f"{what} (`{twin}`)" for real, twin, what in pairs if runs.get(real) and not runs.get(twin)]
    text = "- CPU-only figures and their `-icount shift=0` configurations in this run: " + ("; ".join(done) if done else "none") + "."
    if missing:
        text += " Not run this time (`--quick` or `--only`): " + "; ".join(missing) + "."
    text += (
        " The `smp-map-*` figures have none: under `-icount` QEMU runs every vCPU on one host thread in turn "
        "(no multi-threaded TCG), so CPUs never run at once and the contention those figures measure cannot occur.\n"
    )
    return text


def ram_facts(runs):
    """What the RAM pictures of the `policy` boots show about the board: RAM and DMA window in
    MiB, and the pageblocks of bounce slots outside the SWIOTLB region (the restricted pool)."""
    for p in POLICIES:
        for _, d in runs.get(p, []):
            pics = d.get("pictures") or []
            if not pics:
                continue
            ram = pics[0]["ram"]
            blocks = ram.replace("|", "")
            first, count_ = d.get("pool_first_block", 0), d.get("pool_pageblocks", 0)
            block_mib = d.get("slots_per_pageblock", 1024) * 2 * KIB / MIB
            restricted = [i for i, c in enumerate(blocks) if c == "b" and not first <= i < first + count_]
            boundary = ram.find("|")
            return {
                "block_mib": block_mib,
                "ram_mib": len(blocks) * block_mib,
                "dma_window_mib": boundary * block_mib if boundary >= 0 else None,
                "restricted": restricted,
                "restricted_mib": len(restricted) * block_mib,
                "pool_below_window_end": boundary == first + count_,
            }
    return {}


def pageblocks_caption(runs):
    """The caption of the RAM-picture plot, from the pictures and counters of this run."""
    facts = ram_facts(runs)
    med = lambda p, key: med_of(runs, p, key)
    text = (
        f"*The RAM picture after each phase, one cell per {fmt(facts.get('block_mib'))} MiB pageblock (the kernel's "
        "own `ram_picture`, with the pool manager's view laid over it)."
    )
    if facts.get("restricted"):
        r = facts["restricted"]
        text += f" The bounce slots at blocks {r[0]}–{r[-1]} are disk 1's restricted pool;"
        text += " the SWIOTLB region sits " + ("just below the end of the DMA window." if facts["pool_below_window_end"] else "inside the DMA window.")
    if runs.get("policy-lend"):
        back = med("policy-lend", "grown_pageblocks")
        migrated = med("policy-lend", "pages_migrated")
        text += (
            " Under `lend` the green blocks are lent to the page allocator (dark: holding pages, light: empty), "
            f"the burst turns {fmt(back)} of them back into slots (median) "
            + (f"with {fmt(migrated)} movable pages migrated out" if migrated else "without migrating a page: they were empty")
            + (", idle lends them again;" if med("policy-lend", "given_back_bytes") else ";")
        )
    if runs.get("policy-dynamic"):
        unused = med("policy-dynamic", "unused_pageblocks")
        extra = med("policy-dynamic", "extra_pools")
        served, n = count(runs, "policy-dynamic", lambda d: d["done_under_pressure"])
        where = sorted({i for _, d in runs["policy-dynamic"][:1] for pic in d.get("pictures", []) for i, c in pic.get("overlay", []) if c == "e"})
        text += (
            f" `dynamic` leaves {fmt(unused)} pageblocks of the region unused and added {fmt(extra)} extra pools (median)"
            + (f", at blocks {where[0]}–{where[-1]} in the round shown" if where else "")
            + (" only once the pressure had gone" if served < n else "")
            + "."
        )
    return text + "*\n"


def pools_discussion(runs):
    """What the per-device pool table says about locks and throughput, from its numbers."""
    rs = runs.get("pools", [])
    if not rs:
        return ""
    contention = [r["default_pool_lock_contended"] for _, d in rs for r in d["runs"]]
    contention += [x["disk_lock_contended"] for _, d in rs for r in d["runs"] for x in r["disks"] if "disk_lock_contended" in x]
    disk0 = {h: [r["disks"][0]["mib_s"] for _, d in rs for r in d["runs"] if r["hint"] == h] for h in (False, True)}
    out = ""
    if contention and max(contention) == 0:
        out += (
            "The lock contention counters read 0 in every run: this benchmark runs on one vCPU and every lock here masks "
            "interrupts, so a lock can never be found taken, and a per-device pool cannot win by removing lock "
            "contention on this machine. What it can change is where the slots come from (a pool of its own, never "
            "short because of the other disks) and the slot search. "
        )
    elif contention:
        out += f"Lock contention was seen (up to {fmt(max(contention))} spins in a run). "
    if disk0[False] and disk0[True]:
        separate = min(disk0[True]) > max(disk0[False]) or max(disk0[True]) < min(disk0[False])
        faster = median(disk0[True]) > median(disk0[False])
        out += (
            "Disk 0's throughput with and without the hint: "
            + ((f"the min–max ranges separate, the hint {'faster' if faster else 'slower'}.") if separate
               else "the min–max ranges overlap, so the difference is within the noise.")
        )
    return out + "\n"


def build_doc(runs, machine, failed, results_rel, plots_dir, doc_dir):
    """EVALUATION.md's text; the plots are written to `plots_dir` (None: no plots)."""
    if plt is None:
        plots_dir = None
    rel = lambda p: os.path.relpath(p, doc_dir)
    targets = Targets()

    bounce_md, throughput_png = bounce_section(runs, targets, plots_dir)
    mapping_md = mapping_section(runs, targets, machine.get("insn_trace"))
    policy_md, policy_pngs = policy_section(runs, targets, plots_dir)
    pools_md, pools_png = pools_section(runs, plots_dir)
    features_md, features = features_section(runs)
    facts = ram_facts(runs)
    timer_hz = median([d.get("timer_hz") for rs in runs.values() for _, d in rs])
    pool_mib = med_of(runs, "policy-lend", "pool_bytes_reserved", lambda x: x / MIB)
    pool_blocks = med_of(runs, "policy-lend", "pool_pageblocks")
    mapped = med_of(runs, "policy-lend", "mapped")
    aliasing = median([m["aliasing_ns"] / m["ns"] for _, d in runs.get("io", []) for m in d["memcpy"] if m["ns"]])

    configs = sorted(runs)
    boots = sum(len(v) for v in runs.values())
    md = []
    md.append("# Evaluation: does lending the SWIOTLB as MIGRATE_SWIOTLB pay?\n")
    md.append(
        "*Generated by `scripts/bench.sh` (see the README) from the run of "
        f"{machine.get('date', '?')}; do not edit by hand. Raw results: `{results_rel}/`.*\n"
    )
    md.append("## In short\n")
    md.append(
        "The upstream questions were \"what exactly is the advantage compared to allocating additional "
        "swiotlb chunks from CMA?\" and \"who decides how much to reserve?\". What this run measured:\n"
    )
    md.append(design_discussion(runs))
    md.append("## The targets\n")
    md.append(targets.table() + "\n")
    md.append("## Method\n")
    md.append(
        f"- One benchmark kernel (`kernel/examples/bench/`), booted once per configuration and round by "
        f"`scripts/bench.sh`; the command line picks the benchmark (`demo=bench-io|clean|features|map|scaling|policy|pools|smp-map|smp-io`) and "
        f"the configuration (`swiotlb_policy=`, `swiotlb=`, `cma=`, `swiotlb_keep=`, `blk_event_idx=`, `blk_indirect=`, "
        f"`irq_affinity=`, and the vCPU count given to `qemu-run.sh --smp`). The configurations run "
        f"alternated, A B C … A B C …, {machine.get('rounds', '?')} rounds "
        f"({boots} boots{'; quick run' if machine.get('quick') else ''}), so that the noise of a shared machine "
        f"hits them alike. Configurations: {', '.join('`' + c + '`' for c in configs)}.\n"
        "- Each figure is the median over the rounds, with [min–max]; a ratio is taken inside one boot "
        "(both members measured in the same run) and then summarised the same way. Inside a boot, CPU-only "
        "figures are the median of several repetitions of a loop.\n"
        f"- Time comes from the generic timer (CNTVCT, {fmt(timer_hz / 1e6 if timer_hz else None)} MHz here), so it is host time under TCG. "
        "Configurations named `*-icount` run QEMU with `-icount shift=0`: the counter then advances one "
        "virtual nanosecond per guest instruction, and the CPU-only figures become instruction counts, "
        "identical from one run to the next (min = max in the tables). I/O waits are not made repeatable by "
        "`-icount` (the device still runs at host speed), so I/O throughput is measured in real time only; "
        "`io-icount` uses `-icount` for the guest's busy instructions per request and its memcpy references.\n"
        + icount_coverage(runs) +
        f"- I/O: virtio-blk (virtio-mmio, modern) on raw images of random data in a temporary directory "
        f"(QEMU's default cache, so reads come mostly from the host's page cache: the device is fast and the "
        f"guest side is what is measured"
        + (f"; except `io-throttled`, whose disk 0 QEMU limits to {throttle_label(throttle_of(runs, 'io-throttled'))}" if throttle_of(runs, "io-throttled") else "")
        + f"); {machine.get('cell_ms', '?')} ms per cell"
        + (f"; {io_slicing(runs)}" if io_slicing(runs) else "")
        + "; requests complete in the "
        "disk's interrupt handler; "
        + ("the loop waits as the kernel's idle does: after it has submitted what it can and before it looks for "
           "completions it zeroes free bounce slots, a bounded step at a time (`platform::dma::scrub_step`, which "
           "reads with clean slots then skip their copy-in), so the zeros are written while the device works on the "
           "new requests, and sleeps in WFI once there is nothing to zero; the pool is scrubbed before each cell.\n"
           if io_scrubs(runs) else "the loop waits in WFI between completions.\n")
        + "- The results leave the guest as JSON through semihosting `SYS_OPEN`/`SYS_WRITE` "
        "(`bench.json` in QEMU's working directory); `scripts/bench/report.py` makes this page and its plots.\n"
    )
    md.append("## The machine\n")
    md.append(
        f"- host: {machine.get('nproc', '?')} CPUs ({machine.get('cpu', '?')}), shared with other work; "
        f"{machine.get('qemu', '?')}, TCG (no KVM), cortex-a72 vCPUs (one, except the `smp-*` configurations of section 6), {fmt(facts.get('ram_mib'))} MiB of RAM, GICv2\n"
        f"- kernel: `{machine.get('kernel_rev', '?')}`, Rust release profile (`cargo run` and the tests use the dev profile)\n"
        f"- the board: a {fmt(facts.get('dma_window_mib'))} MiB DMA window for every device (root `dma-ranges`), a "
        f"{fmt(pool_mib)} MiB SWIOTLB region ({fmt(pool_blocks)} pageblocks) inside it, disk 1 behind a "
        f"{fmt(facts.get('restricted_mib'))} MiB restricted pool (from the RAM pictures and the `policy` results)\n"
    )
    if failed:
        md.append(f"- **failed boots** (left out, their console logs kept with the results): {', '.join(failed)}\n")
    md.append("## 1. Bounce cost\n")
    if throughput_png:
        md.append(f"![throughput by configuration]({rel(throughput_png)})\n")
    md.append(bounce_md)
    md.append("## 2. Mapping cost\n")
    md.append(mapping_md)
    md.append("## 3. The design question: the policies on one workload\n")
    md.append(
        "The scripted workload of `demo::workload`: movable pages fill RAM (the lent blocks included; "
        f"part of them is then freed, room for migration targets), then {fmt(mapped)} bounce mappings are "
        "made from the timer interrupt and held (a mapping that fails in interrupt context is deferred to task "
        "context and retried), then everything is unmapped and the pool idles. Same device, same workload, "
        "only `swiotlb_policy=` differs."
        + (" The table, the timeline and the pictures show the first cycle under memory pressure, which follows "
           "a cycle without it in the same boot (what a policy grew then and never gives back, it still has); "
           "every cycle is in the tables of \"Burst/idle cycles\" below." if with_cycles(runs) else "")
        + "\n"
    )
    md.append(policy_md)
    for p in policy_pngs:
        md.append(f"![{os.path.basename(p)}]({rel(p)})\n")
        if p.endswith("pageblocks.png"):
            md.append(pageblocks_caption(runs))
    md.append("### Burst/idle cycles\n")
    md.append(cycles_section(runs))
    md.append("### Lookups as the pool list grows\n")
    md.append(scaling_section(runs))
    md.append("## 4. Per-device pools\n")
    if pools_png:
        md.append(f"![per-device pools]({rel(pools_png)})\n")
    md.append(pools_md)
    md.append(pools_discussion(runs))
    md.append("## 5. virtio features\n")
    md.append(features_md)
    md.append(features_discussion(features))
    md.append("## 6. Scaling over CPUs\n")
    md.append(report_smp.section(runs, machine))
    md.append("## Targets missed, and where `lend` loses\n")
    md.append(losses(runs, targets, machine))
    md.append("## Notes on measuring under TCG\n")
    md.append(
        "- **Softmmu TLB aliasing.** QEMU's TLB is direct-mapped by virtual page number. A copy between two "
        "buffers whose pages are a multiple of the TLB's reach apart makes each load and store evict the "
        f"other's entry: in this run the *aliasing memcpy* took {fmt(aliasing, 2)} times the plain one (median "
        "over the sizes). Buffers from a buddy allocator are naturally aligned, so a naive memcpy reference "
        "between two of them is the pathological case; the references here avoid it, and the bounce copies "
        "meet it only now and then (when a slot and the buffer land on the same TLB entries).\n"
        "- TCG executes a copy loop faster per instruction than branchy code, so ratios against a memcpy "
        "differ between real time and `-icount` instructions; both are shown where it matters.\n"
        "- The Linux guest figures quoted when the targets were set were not measured here; set them beside the QD 1 rows above.\n"
    )
    plots = [p for p in [throughput_png, pools_png] + policy_pngs if p]
    return "\n".join(md), plots


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--results", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--plots", required=True)
    ap.add_argument("--no-plots", action="store_true", help="write the text only")
    args = ap.parse_args()
    runs, machine, failed = load(args.results)
    if not args.no_plots:
        if plt is None:
            sys.exit("report.py: matplotlib is missing (bench.sh installs it into a venv; or pass --no-plots)")
        os.makedirs(args.plots, exist_ok=True)
    doc_dir = os.path.dirname(os.path.abspath(args.doc))
    text, plots = build_doc(runs, machine, failed, os.path.relpath(args.results, doc_dir), None if args.no_plots else args.plots, doc_dir)
    with open(args.doc, "w") as f:
        f.write(text)
    print(f"report.py: wrote {args.doc} and {len(plots)} plots in {args.plots}")


if __name__ == "__main__":
    main()
