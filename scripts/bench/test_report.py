"""Unit tests of the report's prose: `python3 -m unittest discover -s scripts/bench`.

Two small synthetic result sets, both cut from one round of the committed run
(docs/eval/results/) and then given different figures, go through report.py's text generation
(no plots, so matplotlib is not needed; nothing is written outside a temporary directory). The
prose must change with the data, word its comparisons from their outcome, and hold no figure
that the data does not give.
"""

import copy
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402
from stats import fmt, median  # noqa: E402

FIXTURE = os.path.join(HERE, "..", "..", "docs", "eval", "results")
MIB = 1024 * 1024


def one_round(runs, rnd=1):
    """The fixture cut to one round: a small result set."""
    return {c: [(r, copy.deepcopy(d)) for r, d in v if r == rnd] for c, v in runs.items()}


def fixture_round():
    """One round of the committed run and its machine description; skips the test class when
    the fixture is missing."""
    base, machine, _ = report.load(FIXTURE)
    if not base:
        raise unittest.SkipTest(f"no fixture results in {FIXTURE}")
    return one_round(base), machine


def set_all(runs, config, **fields):
    for _, d in runs[config]:
        d.update(fields)


def result_set_a(base):
    """Like the committed run: `lend` migrates, `dynamic` cannot grow under pressure. No
    throttled cells (the committed run may have them), so that their prose must be absent."""
    runs = one_round(base)
    runs.pop("io-throttled", None)
    # Results from before the benchmark measured its loop's own call: the raw direct figure.
    for config in ("map", "map-icount"):
        for _, d in runs.get(config, []):
            for row in d["rows"]:
                for key in ("direct_call_ns", "direct_inline_ns", "direct_loop_ns"):
                    row.pop(key, None)
    set_all(runs, "policy-lend", grow_4m_pages_migrated=768, grow_4m_pages_dropped=0, pages_migrated=3840,
            lent_pageblocks_after_idle=14, idle_pool_lent_share_after=0.875)
    set_all(runs, "policy-dynamic", done_under_pressure=False, irq_failures=192, given_back_bytes=0)
    set_all(runs, "policy-lend-icount", grow_4m_ns=1_000_000.0, memcpy_4m_ns=500_000.0, grow_4m_pages_migrated=500)
    return runs


def result_set_b(base):
    """Different figures and outcomes: `lend` took only empty blocks, `dynamic` kept up and
    shrank, another kernel's `swiotlb_keep`, a slower timer, other memcpy and map costs."""
    runs = one_round(base)
    set_all(runs, "policy-lend", grow_4m_pages_migrated=0, grow_4m_pages_dropped=0, pages_migrated=0,
            lent_pageblocks_boot=13, lent_pageblocks_after_idle=13, idle_pool_lent_share_boot=0.8125,
            idle_pool_lent_share_after=0.8125, grown_after_ms=47.25, irq_failures=7, grow_4m_ns=5123456.0,
            memcpy_4m_ns=1234567.0)
    set_all(runs, "policy-lend-icount", grow_4m_pages_migrated=0)
    set_all(runs, "policy-dynamic", done_under_pressure=True, irq_failures=11, given_back_bytes=6 * MIB)
    # The fair variants, where the fixture has them: other figures than set A's too.
    if runs.get("policy-dynamic-small"):
        set_all(runs, "policy-dynamic-small", given_back_bytes=6 * MIB)
    if runs.get("policy-cma"):
        set_all(runs, "policy-cma", grow_4m_pages_migrated=640)
    set_all(runs, "policy-lend-keep1", idle_pool_lent_share_boot=0.90625, idle_pool_lent_share_after=0.90625)
    for config in ("map", "map-icount"):
        for _, d in runs[config]:
            d["timer_hz"] = 24_000_000
            for row in d["rows"]:
                row["memcpy_ns"] *= 1.7
                row["bounce_to_device_ns"] *= 1.3
                row["direct_map_unmap_ns"] = 211.0
                row["direct_call_ns"] = 15.0  # the loop's own call: reported net of it
                row["direct_inline_ns"] = 230.0
                row["direct_loop_ns"] = 11.0  # the empty loop: the inline figure is net of it
    for rs in runs.values():
        for _, d in rs:
            d["timer_hz"] = 24_000_000
    for _, d in runs["io"]:
        for m in d["memcpy"]:
            m["aliasing_ns"] = m["ns"] * 7.25
    for _, d in runs["features-idx-ind"] + runs["features-noidx-ind"]:
        d["max_in_flight"] = 48
    # The throttled rows: a throttled copy of the `io` boots whose bounced 64 KiB QD 16 reads fell
    # short of the direct ones, with busy times, kicks and interrupts per request.
    runs["io-throttled"] = copy.deepcopy(runs["io"])
    for _, d in runs["io-throttled"]:
        d.update(throttle_bps=262_144_000, warmup_ms=200)
        for c in d["cells"]:
            c.update(mib_s=min(c["mib_s"], 250.0), busy_ns_per_req=30_000.0 + (c["size"] if c["placement"] == "bounced" else 0),
                     kicks_per_req=1.0, irqs_per_req=0.75)
            if (c["size"], c["qd"], c["op"], c["placement"]) == (64 * 1024, 16, "read", "bounced"):
                c["mib_s"] = 161.5
    return runs


def generate(runs, machine):
    with tempfile.TemporaryDirectory() as tmp:
        text, plots = report.build_doc(runs, machine, [], "results", None, tmp)
    return text


def prose(text):
    """The generated text minus tables, headings, images and code spans: what is written in words."""
    lines = [l for l in text.splitlines() if l and not l.startswith(("|", "#", "!", "*Generated"))]
    out = "\n".join(lines)
    out = re.sub(r"`[^`]*`", " ", out)  # bootargs, names, commands
    return re.sub(r"CVE-\d+-\d+", " ", out)


NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?")


def numbers(text):
    return {m.group(0) for m in NUMBER.finditer(text)}


def leaves(value):
    """Every number in a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from leaves(v)


def spellings(x):
    """The ways the report writes a number."""
    out = set()
    for digits in (2, 3):
        out.add(fmt(x, digits))
        if isinstance(x, float) and x.is_integer():
            out.add(fmt(int(x), digits))
    return out


class ProseFromDataTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        base, cls.machine, _ = report.load(FIXTURE)
        if not base:
            raise unittest.SkipTest(f"no fixture results in {FIXTURE}")
        cls.a, cls.b = result_set_a(base), result_set_b(base)
        cls.text_a, cls.text_b = generate(cls.a, cls.machine), generate(cls.b, cls.machine)
        cls.prose_a, cls.prose_b = prose(cls.text_a), prose(cls.text_b)

    def test_figures_follow_the_data(self):
        self.assertIn("768 of their 1024 pages migrated", self.prose_a)
        self.assertIn("**What clean slots save**", self.text_a, "the committed run has the clean-slot cells")
        self.assertIn("| `clean-icount` | instructions | seq | 64 KiB | 1 |", self.text_a)
        # 500 pages of 500,000 / 1024 instructions each against 1,000,000: 24.4 %, the rest per page.
        self.assertIn("make 24.4 % of it; the rest, 1,512 instructions per migrated page", self.prose_a)
        self.assertNotIn("per migrated page", self.prose_b, "set B migrated nothing")
        self.assertNotIn("768", self.prose_b)
        self.assertIn("no page migrated (the blocks taken were empty)", self.prose_b)
        self.assertIn("87.5 % of it was lent at the end of the idle phase", self.prose_a)
        self.assertIn("81.2 % of it was lent at the end of the idle phase", self.prose_b)
        self.assertNotIn("87.5 % of it was lent", self.prose_b)
        self.assertIn("rest (3 pageblocks)", self.prose_b, "pool minus lent pageblocks of set B")
        self.assertIn("62.5 MHz", self.prose_a)
        self.assertIn("24 MHz", self.prose_b)
        self.assertNotIn("62.5", self.prose_b)
        self.assertIn("added 219 instructions per map+unmap to its caller (196 through a function of its own)", self.prose_b)
        self.assertNotIn("through a function of its own)", self.prose_a, "set A's results do not measure the call")
        self.assertNotIn("520", self.prose_a + self.prose_b, "the old fixed memcpy figure")
        self.assertIn("took 7.2 times the plain one", self.prose_b)
        self.assertIn("with them it took 48", self.prose_b)
        self.assertIn("first growth after 47.2 ms", self.prose_b)
        # The throttled cells of set B (none in set A).
        self.assertIn("limited to 250 MiB/s, the missed cells (rand read, seq read) ran at 250 MiB/s direct and 162 MiB/s bounced", self.prose_b)
        self.assertIn("whose disk 0 QEMU limits to 250 MiB/s", self.prose_b)
        self.assertNotIn("throttled", self.prose_a)

    def test_idle_share_after_the_burst_is_told_apart_from_the_boot_one(self):
        runs = copy.deepcopy(self.a)
        set_all(runs, "policy-lend", lent_pageblocks_boot=14, idle_pool_lent_share_boot=0.875, idle_pool_lent_share_after=0.75)
        text = generate(runs, self.machine)
        self.assertIn("87.5 % is the most that can be lent with that setting, and was lent at boot", text)
        self.assertIn("at the end of the idle phase after the burst (the row's figure) 75 % was (median)", text)
        # Everything lent again by the end of the idle phase: nothing to explain.
        self.assertNotIn("the row's figure", self.text_a)

    def test_claims_are_worded_from_the_comparison(self):
        self.assertIn("`lend` grew where `dynamic` could not", self.text_a)
        self.assertIn("migrated 3840 movable pages", self.text_a)
        self.assertNotIn("could not", self.text_b)
        self.assertIn("Both served the burst under pressure equally often", self.text_b)
        self.assertIn("(its pools never shrink)", self.text_a)
        self.assertNotIn("never shrink", self.text_b)
        self.assertIn("gave back 6 MiB", self.text_b)
        self.assertIn("that reclaim migrated 3840 pages", self.text_a)
        self.assertIn("that reclaim migrated no page", self.text_b)
        self.assertNotIn("movable pages migrated out", self.text_b)

    def test_no_figure_the_data_does_not_give(self):
        for name, runs, text, words in [("A", self.a, self.text_a, self.prose_a), ("B", self.b, self.text_b, self.prose_b)]:
            allowed = numbers("\n".join(l for l in text.splitlines() if l.startswith("|")))  # the tables
            values = list(leaves([d for rs in runs.values() for _, d in rs])) + list(leaves(self.machine))
            for v in values:
                for scaled in (v, v / MIB, 100 * v, v / 1e3, v / 1e6, 2 * v):  # units: µs to ms, ns to µs
                    allowed |= spellings(scaled)
            allowed |= self.derived(runs)
            allowed |= self.traced(self.machine.get("insn_trace"))
            # Not measurements: Linux's version, the issue's number, the targets' thresholds (in
            # the targets table), "1" of "ratio above 1" and "QD 1".
            allowed |= {"6.6", "6", "1"}
            stray = sorted(numbers(words) - allowed)
            self.assertEqual(stray, [], f"set {name}: figures in the prose that the data does not give")

    @staticmethod
    def traced(trace):
        """The sums the prose takes from the instruction trace (the copy; the functions after
        the four largest, and how many), recomputed here."""
        if not trace:
            return set()
        fs = trace["bounced"]["functions"]
        copy = sum(n for f, n in fs if f in ("memcpy", "memset"))
        rest = sorted((n for f, n in fs if f not in ("memcpy", "memset")), reverse=True)
        out = spellings(copy) | spellings(sum(rest[4:])) | spellings(len(rest) - 4)
        inlined = [n for f, n in trace["bounced"].get("inlined", []) if f not in ("memcpy", "memset")]
        if inlined:
            out |= spellings(len(inlined)) | spellings(100 * max(inlined) / sum(inlined))
        return out

    @staticmethod
    def derived(runs):
        """The figures the prose computes from two or more values, recomputed here."""
        med = lambda p, k: median([d[k] for _, d in runs.get(p, [])])
        out = set()
        out |= spellings(abs(med("policy-lend", "movable_available_bytes") - med("policy-static", "movable_available_bytes")) / MIB)
        out |= spellings(med("policy-lend", "pool_pageblocks") - med("policy-lend", "lent_pageblocks_boot"))
        out |= spellings(med("policy-lend", "pool_pageblocks") - med("policy-lend", "lent_pageblocks_after_idle"))
        out |= spellings(4 * MIB / (med("policy-lend", "slots_per_pageblock") * 2048))  # pageblocks per 4 MiB
        out |= spellings(med("policy-lend", "grow_ns_total") / med("policy-lend", "grown_pageblocks") / 1e6)
        out |= spellings(med("policy-lend", "slots_before") * 2048 / MIB)
        out |= spellings(med("policy-lend", "slots_per_pageblock") * 2048 / MIB)  # MiB per pageblock
        rows = lambda c, key: [r for _, d in runs.get(c, []) for r in d["rows"] if (r["live"], r["size"]) == key]
        big = max(r["size"] for _, d in runs.get("map", []) for r in d["rows"])
        for c in ("map", "map-icount"):
            out |= spellings(median([r["bounce_to_device_ns"] / r["memcpy_ns"] for r in rows(c, (1, big))]))
            out |= spellings(median([r["bounce_to_device_ns"] - r["memcpy_ns"] for r in rows(c, (1, 4096))]))
            # The direct map+unmap through a function of its own, net of the empty call (ns, µs).
            called = [r["direct_map_unmap_ns"] - r["direct_call_ns"] for r in rows(c, (1, 4096)) if "direct_call_ns" in r]
            if called:
                out |= spellings(median(called)) | spellings(median(called) / 1e3)
            out |= spellings(big // 1024)
        hit = median([r["is_swiotlb_buffer_hit_ns"] for r in rows("map", (1, 4096))])
        out |= spellings(hit * median([d["timer_hz"] for _, d in runs["map"]]) / 1e9)
        out |= spellings(median([m["aliasing_ns"] / m["ns"] for _, d in runs["io"] for m in d["memcpy"]]))
        # A slice of a sliced I/O cell, in ms: the cell's time over its slices.
        for config in ("io", "io-icount"):
            for _, d in runs.get(config, []):
                for c in d["cells"]:
                    if d.get("cell_ms") and c.get("slices"):
                        out |= spellings(d["cell_ms"] / c["slices"])
        ram = runs["policy-lend"][0][1]["pictures"][0]["ram"]
        out |= spellings(len(ram.replace("|", "")) * 2)  # RAM MiB
        out |= spellings(ram.find("|") * 2)  # DMA window MiB
        out |= {str(i) for i, c in enumerate(ram.replace("|", "")) if c == "b"}  # restricted pool blocks
        out |= spellings(4)  # restricted pool MiB: two 'b' blocks outside the region
        out |= {str(4 * MIB // 4096)}  # pages in 4 MiB
        # Growth in instructions: the migrated pages' copies against the rest, per migrated page.
        grow = [(d["grow_4m_ns"], d["memcpy_4m_ns"], d["grow_4m_pages_migrated"]) for _, d in runs.get("policy-lend-icount", [])
                if d.get("grow_4m_ns") and d.get("grow_4m_pages_migrated")]
        if grow:
            out |= spellings(100 * median([p * m / 1024 / g for g, m, p in grow]))
            out |= spellings(median([(g - p * m / 1024) / p for g, m, p in grow]))
            out |= {"1024", "1.5"}  # the 4 KiB copy's share of the 4 MiB one; the target
        # What clean slots save: per cell the paired on/off ratios of throughput and busy time
        # per request (TCG time); the prose gives the median of the cells' medians and counts.
        clean = {}
        for r, d in runs.get("clean", []):
            for c in d["cells"]:
                clean.setdefault((c["pattern"], c["size"], c["qd"]), {}).setdefault(c["clean_slots"], {})[r] = c
        if clean:
            def cell_ratios(field):
                per_cell = []
                for by in clean.values():
                    on, off = by.get(True, {}), by.get(False, {})
                    ratios = [on[r][field] / off[r][field] for r in on if r in off and off[r][field]]
                    per_cell.append((median(ratios), min(ratios), max(ratios), len(ratios) > 1))
                return per_cell
            mib = cell_ratios("mib_s")
            out |= spellings(median([c[0] for c in mib]))
            out |= spellings(median([c[0] for c in cell_ratios("busy_ns_per_req")]))
            out |= {str(sum(c[0] > 1 for c in mib)), str(len(mib)), str(sum(c[3] and (c[1] > 1 or c[2] < 1) for c in mib))}
        # The missed unthrottled 64 KiB QD 16 cells: the vCPU's busy share and busy time per
        # request, bounced and direct; the busy-time ratio; the measured ratio; the memcpys' worth
        # of CPU a bounce added (recomputed from the cells, as `qd16_reason` words them).
        io = {}
        for r, d in runs.get("io", []):
            copy = {m["size"]: m["ns"] for m in d["memcpy"]}
            for c in d["cells"]:
                if c["size"] == 64 * 1024 and c["qd"] == 16:
                    io.setdefault((c["pattern"], c["op"]), {}).setdefault(r, {})[c["placement"]] = (c, copy[64 * 1024])
        missed = [by for by in io.values() if median([b["bounced"][0]["mib_s"] / b["direct"][0]["mib_s"] for b in by.values()]) < 0.9]
        pairs = [b for by in missed for b in by.values() if "busy_ns_per_req" in b["direct"][0]]
        if pairs:
            for p in ("direct", "bounced"):
                out |= spellings(100 * median([b[p][0]["busy_ns_per_req"] * b[p][0]["ops"] / b[p][0]["elapsed_ns"] for b in pairs]))
                out |= spellings(median([b[p][0]["busy_ns_per_req"] for b in pairs]) / 1e3)
            out |= spellings(median([b["direct"][0]["busy_ns_per_req"] / b["bounced"][0]["busy_ns_per_req"] for b in pairs]))
            out |= spellings(median([b["direct"][0]["elapsed_ns"] / (b["bounced"][0]["busy_ns_per_req"] * b["direct"][0]["ops"]) for b in pairs]))
            out |= spellings(median([b["bounced"][0]["mib_s"] / b["direct"][0]["mib_s"] for b in pairs]))
            out |= spellings(median([(b["bounced"][0]["busy_ns_per_req"] - b["direct"][0]["busy_ns_per_req"]) / b["bounced"][1] for b in pairs]))
        # What a bounce added at QD 1 in instructions (`io-icount`, 64 KiB): per op, in memcpys,
        # the idle scrubbing (slots zeroed per request beyond direct's, at the memset's cost), the
        # copies (reads: one plus the share that copied in) and the rest.
        for op in ("read", "write"):
            added, copies, rest, share, scrub = [], [], [], [], []
            for _, d in runs.get("io-icount", []):
                copy = {m["size"]: m["ns"] for m in d["memcpy"]}[64 * 1024]
                memset = {m["size"]: m.get("memset_ns") for m in d["memcpy"]}[64 * 1024]
                by = {(c["pattern"], c["placement"]): c for c in d["cells"] if c["op"] == op and c["size"] == 64 * 1024 and c["qd"] == 1}
                for pattern in ("seq", "rand"):
                    dc, bc = by[(pattern, "direct")], by[(pattern, "bounced")]
                    n = 1.0
                    if op == "read":
                        if "reads_copied_in" not in bc:
                            continue
                        share.append(bc["reads_copied_in"] / (bc["reads_copied_in"] + bc["reads_copy_in_skipped"]))
                        n += share[-1]
                    a = (bc["busy_ns_per_req"] - dc["busy_ns_per_req"]) / copy
                    z = 0.0
                    own = ("submit_ns", "collect_ns", "irq_ns")
                    if all(k in c for k in own for c in (bc, dc)):
                        # The request's own path timed apart: the loop around it is the rest.
                        z = a - (sum(bc[k] for k in own) / bc["ops"] - sum(dc[k] for k in own) / dc["ops"]) / copy
                    elif "scrub_ns" in bc and "scrub_ns" in dc:
                        z = (bc["scrub_ns"] / bc["ops"] - dc["scrub_ns"] / dc["ops"]) / copy
                    elif memset:
                        slots = bc.get("slots_scrubbed", 0) / bc["ops"] - dc.get("slots_scrubbed", 0) / dc["ops"]
                        z = max(slots, 0.0) * 2048 / (64 * 1024) * memset / copy
                    added, copies, rest, scrub = added + [a], copies + [n], rest + [a - z - n], scrub + [z]
            if added:
                out |= spellings(median(added)) | spellings(median(copies)) | spellings(median(rest)) | spellings(median(scrub))
                out |= spellings(100 * median(share)) if share else set()
        kicks = lambda c: median([x["kicks_per_req"] for _, d in runs.get(c, []) for x in d["cells"]])
        if runs.get("features-idx-ind"):
            out |= spellings(kicks("features-noidx-ind") - kicks("features-idx-ind"))
            out |= {str(q) for _, d in runs["features-idx-ind"] for q in {x["qd"] for x in d["cells"]}}
        # The features' verdicts: the median over the cells of each cell's paired on/off ratio
        # (the per-cell ratios are the table's last two columns).
        cells, _ = report.feature_cells(runs)
        keys = {k for c in cells.values() for k in c}
        limit = min((d["max_in_flight"] for c in report.FEATURE_CONFIGS for _, d in runs.get(c, [])), default=0)
        for a, b in (("features-idx-ind", "features-idx-noind"), ("features-idx-ind", "features-noidx-ind")):
            for subset in (keys, {k for k in keys if k[2] > limit}, {k for k in keys if k[2] <= limit}):
                out |= spellings(median([median(report.feature_ratio(cells, a, b, k)) for k in subset]))
                out |= {str(len(subset))}
        # The burst/idle cycles (runs that have them): medians over the rounds and cycles.
        for p in report.with_cycles(runs):
            for get, which in ((lambda c: c["irq_failures"], report.NO_PRESSURE), (lambda c: c["irq_failures"], report.PRESSURE),
                               (report.frag("unusable_free_index"), report.LAST), (report.frag("unusable_free_index"), report.FIRST),
                               (report.frag("free_pageblocks"), report.LAST),
                               (lambda c: c["fragmentation"]["movable_blocks_with_unmovable"] + c["fragmentation"]["unmovable_blocks_with_movable"], report.LAST)):
                out |= spellings(median(report.cycle_values(runs, p, get, which)))
            out |= spellings(median([d.get("cycles_under_pressure") for _, d in runs[p]]) + 1)
        f = report.throttled_figures(runs)
        if f:
            out |= spellings(f["direct"]) | spellings(f["bounced"]) | spellings(f["share"])
            out |= spellings(f["busy_direct"] / 1e3) | spellings(f["busy_bounced"] / 1e3)
        out |= {str(sum(len(v) for v in runs.values()))}  # boots
        out |= {str(len(v)) for v in runs.values()}  # boots per configuration
        return out

    def test_command_line_writes_only_where_asked(self):
        with tempfile.TemporaryDirectory() as tmp:
            doc = os.path.join(tmp, "EVALUATION.md")
            subprocess.run([sys.executable, os.path.join(HERE, "report.py"), "--results", FIXTURE, "--doc", doc,
                            "--plots", os.path.join(tmp, "eval"), "--no-plots"], check=True, capture_output=True)
            with open(doc) as f:
                text = f.read()
        self.assertIn("## In short", text)
        self.assertIsNone(re.search(r"(?<![\d,.])1,750(?![\d,.])", text), "a figure from a GDB session, not from the run")


if __name__ == "__main__":
    unittest.main()


class InstructionTrace(unittest.TestCase):
    """The single-stepped map+unmap (insn-trace.json): its table and the bookkeeping reason
    come from the trace, and without one the report says so instead."""

    TRACE = {
        "size": 4096,
        "direct": {"total": 57, "functions": [["bench::mapping::map_unmap", 57]]},
        "bounced": {"total": 913, "functions": [
            ["bench::mapping::map_unmap", 61], ["kernel::dma::swiotlb::area::AreaSlots::alloc", 151],
            ["memcpy", 503], ["<kernel::platform::phys::IdentityMappedRam as kernel::mm::phys::PhysMemory>::copy", 9],
            ["kernel::dma::swiotlb::bounce::<impl kernel::dma::swiotlb::pool::SwiotlbPool>::map_attrs", 97],
            ["memset", 11], ["kernel::dma::swiotlb::area::AreaSlots::release", 81]]},
    }

    @classmethod
    def setUpClass(cls):
        cls.runs, cls.machine = fixture_round()

    def test_table_and_reason_from_the_trace(self):
        machine = dict(self.machine, insn_trace=self.TRACE)
        text = generate(self.runs, machine)
        self.assertIn("| `AreaSlots::alloc` | - | 151 |", text)
        self.assertIn("| `mapping::map_unmap` | 57 | 61 |", text)
        self.assertIn("| `SwiotlbPool::map_attrs` | - | 97 |", text)
        self.assertIn("| `<IdentityMappedRam as PhysMemory>::copy` | - | 9 |", text)
        self.assertIn("| total | 57 | 913 |", text)
        self.assertIn("one bounced map+unmap ran 913 instructions, 514 of them in `memcpy`/`memset`; the most of the rest: "
                      "`AreaSlots::alloc` 151; `SwiotlbPool::map_attrs` 97; `AreaSlots::release` 81; `mapping::map_unmap` 61 "
                      "(the other 1 functions 9)", text)

    def test_inlined_table_and_reason_from_the_trace(self):
        trace = copy.deepcopy(self.TRACE)
        self.assertNotIn("by the source function", generate(self.runs, dict(self.machine, insn_trace=trace)), "no inline records")
        names = ["kernel::dma::swiotlb::area::AreaSlots::record", "kernel::dma::swiotlb::slots::run_mask",
                 "kernel::dma::swiotlb::pool::SwiotlbPool::release_checked<kernel::dma::swiotlb::bounce::{impl#0}::unmap::{closure_env#0}>",
                 "kernel::dma::mapping::DmaApi::bounce", "kernel::dma::swiotlb::stats::Counters::add_used",
                 "kernel::dma::swiotlb::pool::SwiotlbPool::unmap", "kernel::dma::swiotlb::slots::SlotRequest::new"]
        trace["bounced"]["inlined"] = [["memcpy", 503], *([n, c] for n, c in zip(names, [40, 30, 20, 20, 5, 3, 2]))]
        text = generate(self.runs, dict(self.machine, insn_trace=trace))
        self.assertIn("| `AreaSlots::record` | 40 |", text)
        self.assertIn("| `SwiotlbPool::release_checked` | 20 |", text)
        self.assertIn("| 3 others | 10 |", text)
        self.assertIn("| total besides the copy | 120 |", text)
        self.assertIn("7 functions share them, the largest `AreaSlots::record` 40; `slots::run_mask` 30; "
                      "`SwiotlbPool::release_checked` 20; `DmaApi::bounce` 20; `Counters::add_used` 5; `SwiotlbPool::unmap` 3; "
                      "the largest is 33.3 % of them", text)
        # Grouped by what they buy: each function in the first part its name matches.
        self.assertIn("| the unmap's lookup and checks | 23 |", text)
        self.assertIn("| the slot search and the free maps (a mapping no cached run serves) | 72 |", text)
        self.assertIn("| statistics (atomic counters) | 5 |", text)
        self.assertIn("| the DMA API (entry, bounce decision, reach checks) and the SWIOTLB manager | 20 |", text)
        # The DMA API's own frame for the cached case is the DMA API's, not the slot cache's.
        self.assertEqual(report.bookkeeping_parts([["kernel::dma::mapping::DmaApi::map_cached_beyond_reach", 5],
                                                   ["kernel::dma::swiotlb::pool::SwiotlbPool::map_cached", 3]]),
                         [("the slot cache (size and alignment checks, ring, record)", 3),
                          ("the DMA API (entry, bounce decision, reach checks) and the SWIOTLB manager", 5)])
        # The core parts named are those the trace has: here the lookup alone.
        self.assertIn(". The unmap's lookup and checks, what a pool that runs on several CPUs", text)
        self.assertEqual(report.core_names([["kernel::sync::irq_safe_spinlock::x", 1], ["kernel::dma::swiotlb::area::AreaSlots::park", 2],
                                            ["kernel::dma::swiotlb::area::AreaSlots::mapping", 3]]),
                         "the area lock, the slot cache and the unmap's lookup and checks")
        memcpy = report.median([b[(1, 4096)]["memcpy_ns"] for b in report.per_boot_rows(self.runs, "map-icount")])
        self.assertIn(f"took 23 together in this implementation, {report.fmt(23 / (0.2 * memcpy), 2)} times the target's "
                      f"{report.fmt(0.2 * memcpy)}.", text)
        # A function no part claims is counted, not dropped.
        trace["bounced"]["inlined"].append(["kernel::dma::swiotlb::pool::SwiotlbPool::nslots", 4])
        self.assertIn("| other (the pool's one-load accessors) | 4 |", generate(self.runs, dict(self.machine, insn_trace=trace)))

    def test_flat_reason_says_when_the_slowest_row_moves(self):
        base = report.load(FIXTURE)[0]
        runs = {c: [(r, copy.deepcopy(d)) for r, d in v] for c, v in base.items()}
        for slow in ((512, 512, 512), (1, 64, 512)):
            for (_, d), live in zip(runs["map"], slow):
                for r in d["rows"]:
                    r["is_swiotlb_buffer_hit_ns"] = 300.0 if r["live"] == live else 150.0
            text = generate(runs, self.machine)
            if len(set(slow)) == 1:
                self.assertNotIn("does not follow the number of live mappings", text)
            else:
                self.assertIn("the slowest row was the one with 1, 64, 512 live mappings in the 3 boots, and the rows took 150 "
                              "to 300 ns whatever the number.", text)

    def test_a_trace_of_four_functions_or_fewer_lists_them_all(self):
        trace = copy.deepcopy(self.TRACE)
        trace["bounced"]["functions"] = [f for f in trace["bounced"]["functions"] if "AreaSlots" not in f[0]]
        text = generate(self.runs, dict(self.machine, insn_trace=trace))
        self.assertIn("514 of them in `memcpy`/`memset`; the rest: `SwiotlbPool::map_attrs` 97; `mapping::map_unmap` 61; "
                      "`<IdentityMappedRam as PhysMemory>::copy` 9.", text)
        self.assertNotIn("Single-stepping one map+unmap in GDB shows where they go.", text)

    def test_without_a_trace(self):
        machine = {k: v for k, v in self.machine.items() if k != "insn_trace"}
        text = generate(self.runs, machine)
        self.assertNotIn("Where the instructions of one", text)
        self.assertIn("Single-stepping one map+unmap in GDB shows where they go.", text)


class SlotCacheComparison(unittest.TestCase):
    """The slot cache against none (`map-nocache`, `map-icount-nocache`): the table pairs the two
    by round, and the bookkeeping reason quotes the figure without the cache, only when there is
    one."""

    @classmethod
    def setUpClass(cls):
        cls.runs, cls.machine = fixture_round()
        for config in ("map", "map-icount"):
            cls.runs.pop(config + "-nocache", None)
            for _, d in cls.runs[config]:
                for r in d["rows"]:
                    r["memcpy_ns"], r["bounce_to_device_ns"] = 500.0, 500.0 + (300.0 if r["size"] == 4096 else 800.0)

    def with_nocache(self, extra):
        runs = copy.deepcopy(self.runs)
        for config in ("map", "map-icount"):
            runs[config + "-nocache"] = copy.deepcopy(runs[config])
            for _, d in runs[config + "-nocache"]:
                for r in d["rows"]:
                    r["bounce_to_device_ns"] += extra if r["size"] == 4096 else 0.0
        return runs

    def test_table_and_reason_follow_the_data(self):
        for extra, want in ((450.0, "750"), (100.0, "400")):
            text = generate(self.with_nocache(extra), self.machine)
            ratio = fmt(300.0 / float(want), 2)
            self.assertIn(f"| instructions | 1 | 4 KiB | 300 | {want} | {ratio} |", text)
            self.assertIn("| instructions | 1 | 64 KiB | 800 | 800 | 1 |", text)
            self.assertIn(f"the same map+unmap cost {want} instructions besides the copy ({ratio} times as many with the cache)", text)

    def test_absent_without_the_nocache_boots(self):
        text = generate(self.runs, self.machine)
        self.assertNotIn("*The slot cache*", text)
        self.assertNotIn("swiotlb_slot_cache=0", text)


class CmaComparison(unittest.TestCase):
    """The answer to "what is the advantage over swiotlb chunks from CMA?" is worded from the data,
    and says where `lend` is worse."""

    def runs(self, lend_burst, cma_burst, lend_fail, cma_fail):
        base = one_round(report.load(FIXTURE)[0])
        runs = {"policy-lend": base["policy-lend"], "policy-cma": copy.deepcopy(base["policy-lend"])}
        set_all(runs, "policy-lend", burst_ms=lend_burst, irq_failures=lend_fail)
        set_all(runs, "policy-cma", burst_ms=cma_burst, irq_failures=cma_fail)
        return runs

    def test_verdicts_follow_the_data(self):
        text = report.design_discussion(self.runs(100.0, 50.0, 1, 9))
        self.assertIn("burst served in (ms): 100 for `lend`, 50 for `cma` (better for `cma`)", text)
        self.assertIn("IRQ-context mapping failures under memory pressure: 1 for `lend`, 9 for `cma` (better for `lend`)", text)
        self.assertIn("Where `lend` was worse than CMA chunks in this run: burst served in (ms)", text)
        text = report.design_discussion(self.runs(50.0, 100.0, 9, 1))
        self.assertIn("(better for `lend`)", text)
        self.assertIn("IRQ-context mapping failures under memory pressure: 9 for `lend`, 1 for `cma` (better for `cma`)", text)
        self.assertNotIn("burst served in (ms), ", text.split("worse than CMA chunks")[1].split(".")[0] + ", ")

    def test_scaling_table_from_data(self):
        runs = {"scaling-dynamic": [(1, {"scaling": [
            {"pools": 1, "bounce_map_unmap_4k_ns": 100.0, "memcpy_4k_ns": 50.0, "is_swiotlb_buffer_miss_ns": 10.0},
            {"pools": 64, "bounce_map_unmap_4k_ns": 300.0, "memcpy_4k_ns": 50.0, "is_swiotlb_buffer_miss_ns": 40.0},
        ]})]}
        text = report.scaling_section(runs)
        self.assertIn("| `dynamic` | ns | 64 | 300", text)
        self.assertIn("cost 4 × as much with 64 pools as with 1", text)


def policy_boot(cycles, boot_index=5):
    """One boot of the policy benchmark with burst/idle cycles: `cycles` is a list of
    (irq_failures, unusable_free_index, free_pageblocks, mixed), the first without pressure."""
    out = []
    for i, (fails, index, blocks, mixed) in enumerate(cycles):
        out.append({
            "cycle": i, "under_pressure": i > 0, "mapped": 256, "lost": 0, "data_ok": True, "pressure_intact": True,
            "done_in_time": True, "irq_failures": fails, "deferred_done": fails, "burst_ms": 100.0 + i,
            "grown_after_ms": None, "slots_before": 2048, "slots_after_burst": 12288, "slots_after_idle": 2048,
            "pages_migrated": 0 if i == 0 else 3840, "pages_dropped": 0, "grown_pageblocks": 10, "given_back_bytes": 20 * MIB,
            "fragmentation": {"free_pages": 120000, "free_pageblocks": blocks, "largest_free_order": 9,
                              "unusable_free_index": index, "movable_blocks_with_unmovable": mixed,
                              "unmovable_blocks_with_movable": 0},
        })
    return {"cycles": out, "cycles_under_pressure": len(cycles) - 1,
            "fragmentation_boot": {"free_pages": 125000, "free_pageblocks": 243, "largest_free_order": 9,
                                   "unusable_free_index": boot_index, "movable_blocks_with_unmovable": 0,
                                   "unmovable_blocks_with_movable": 0}}


class BurstIdleCycles(unittest.TestCase):
    """The per-cycle tables and the "Repeated bursts" item of "In short" follow the data."""

    @staticmethod
    def runs(lend, cma, static):
        return {"policy-lend": [(1, policy_boot(lend))], "policy-cma": [(1, policy_boot(cma))],
                "policy-static": [(1, policy_boot(static))]}

    def test_tables_per_policy_and_cycle(self):
        runs = self.runs([(0, 9, 242, 0), (2, 11, 238, 1), (4, 13, 236, 2)],
                         [(1, 8, 241, 0), (7, 12, 237, 0), (9, 17, 233, 3)],
                         [(0, 7, 230, 0), (0, 7, 230, 0), (0, 7, 230, 0)])
        text = report.cycles_section(runs)
        self.assertIn("as 3 burst/idle cycles", text)
        for label in ("**`lend`**", "**`cma`, `cma=28M`**", "**`static`**"):
            self.assertIn(label, text)
        lend = text.split("**`lend`**")[1].split("**`cma`")[0]
        self.assertIn("| boot | | | | | | | 243 | 9 | 5 | 0 / 0 |", lend)
        self.assertIn("| 0 | no | 0 | 0 | 100 | 0 | 20 | 242 | 9 | 9 | 0 / 0 |", lend)
        self.assertIn("| 2 | yes | 4 | 4 | 102 | 3,840 | 20 | 236 | 9 | 13 | 2 / 0 |", lend)
        cma = text.split("**`cma`, `cma=28M`**")[1].split("**`static`")[0]
        self.assertIn("| 1 | yes | 7 | 7 |", cma)
        self.assertIn("No per-cycle results", report.cycles_section({"policy-lend": [(1, {"irq_failures": 0})]}))

    def test_verdicts_follow_the_data(self):
        # lend: fewer failures under pressure than cma, less fragmented than cma; static best on both.
        runs = self.runs([(0, 9, 242, 0), (2, 11, 238, 1), (4, 13, 236, 2)],
                         [(1, 8, 241, 0), (7, 12, 237, 0), (9, 17, 233, 3)],
                         [(0, 7, 230, 0), (0, 7, 230, 0), (0, 7, 230, 0)])
        text = report.cycles_discussion(runs)
        self.assertIn("then 2 under it", text)
        self.assertIn("`lend` 0 / 3; `cma` 1 / 8; `static` 0 / 0", text)
        self.assertIn("Fewest without pressure: `lend`, `static`; under pressure: `static`.", text)
        self.assertIn("`lend` 13 / 236 / 2; `cma` 17 / 233 / 3; `static` 7 / 230 / 0", text)
        self.assertIn("Least fragmented by that index: `static`.", text)
        self.assertIn("`lend` went from 9 to 13 (worse); `cma` went from 8 to 17 (worse); `static` stayed at 7", text)
        worse = text.split("Where `lend` came out worse over the cycles: ")[1]
        self.assertIn("unusable free index after the last idle (against `static`)", worse)
        self.assertIn("failures under pressure (against `static`)", worse)
        self.assertNotIn("against `cma`", worse, "lend beat cma on every measure here")
        self.assertIn("free pageblocks after the last idle (against `static`)", report.cycles_discussion(self.runs(
            [(0, 9, 200, 0), (0, 9, 200, 0)], [(0, 9, 200, 0), (0, 9, 200, 0)], [(0, 9, 201, 0), (0, 9, 201, 0)])))
        # Flipped: lend best everywhere.
        text = report.cycles_discussion(self.runs([(0, 5, 250, 0), (0, 4, 251, 0)],
                                                  [(3, 9, 240, 1), (6, 30, 200, 4)],
                                                  [(1, 9, 240, 0), (2, 30, 200, 0)]))
        self.assertIn("Fewest without pressure: `lend`; under pressure: `lend`.", text)
        self.assertIn("Least fragmented by that index: `lend`.", text)
        self.assertIn("`lend` went from 5 to 4 (better)", text)
        self.assertIn("`lend` was nowhere worse than the others on these measures over the cycles.", text)
        self.assertNotIn("came out worse", text)

    def test_in_short_and_cma_comparison_use_the_cycles(self):
        runs = self.runs([(2, 9, 242, 0), (3, 11, 238, 1)], [(0, 8, 241, 0), (5, 12, 237, 0)], [(0, 7, 230, 0), (0, 7, 230, 0)])
        for p in runs:
            runs[p][0][1].update({"movable_available_bytes": 400 * MIB, "irq_failures": 3, "burst_ms": 100.0, "given_back_bytes": 0,
                                  "pool_bytes_reserved": 32 * MIB, "lost": 0, "pool_pageblocks": 16, "lent_pageblocks_after_idle": 12,
                                  "idle_pool_lent_share_after": 0.75, "mapped": 256, "data_ok": True, "pressure_intact": True,
                                  "done_under_pressure": True})
        text = report.design_discussion(runs)
        self.assertIn("- **Repeated bursts**", text)
        self.assertIn("IRQ-context mapping failures without memory pressure (first cycle): 2 for `lend`, 0 for `cma` (better for `cma`)", text)
        self.assertIn("unusable free index after the last idle phase (‰): 11 for `lend`, 12 for `cma` (better for `lend`)", text)
        self.assertIn("Where `lend` was worse than CMA chunks in this run: IRQ-context mapping failures without memory pressure (first cycle)", text)

    def test_no_figure_the_cycles_do_not_give(self):
        runs = self.runs([(0, 9, 242, 0), (2, 11, 238, 1), (4, 13, 236, 2)],
                         [(1, 8, 241, 0), (7, 12, 237, 0), (9, 17, 233, 3)],
                         [(0, 7, 230, 0), (0, 7, 230, 0), (0, 7, 230, 0)])
        words = prose(report.cycles_discussion(runs))
        allowed = set()
        for v in leaves([d for rs in runs.values() for _, d in rs]):
            allowed |= spellings(v)
        allowed |= spellings(3.0) | spellings(8.0)  # medians over the cycles under pressure (2, 4) and (7, 9)
        allowed |= {"6.6"}  # Linux's version, if named
        self.assertEqual(sorted(numbers(words) - allowed), [])
