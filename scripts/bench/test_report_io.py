"""Unit tests of the issue-14 rows of the report on synthetic data: the throttled-device cells,
the CPU time per bounced byte next to memcpy per byte, kicks and interrupts per request, and the
`-icount` twins of the CPU-only figures. `python3 -m unittest discover -s scripts/bench`.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

KIB = 1024
MIB = 1024 * 1024


def cell(pattern, op, size, qd, placement, mib_s, busy_ns_per_req, kicks=1.0, irqs=1.0):
    return {
        "pattern": pattern, "op": op, "size": size, "qd": qd, "placement": placement, "mib_s": mib_s,
        "iops": mib_s * MIB / size, "lat_ns": size / (mib_s * MIB) * 1e9 * qd, "busy_ns_per_req": busy_ns_per_req,
        "kicks_per_req": kicks, "irqs_per_req": irqs,
    }


def io_boot(throttle_bps, ratio, direct_busy, bounce_ns_per_byte, memcpy_ns_per_byte, kicks=1.0, irqs=0.5, direct_mib_s=400.0, warmup_ms=0):
    """One `bench-io` boot: every cell at `direct_mib_s` direct and `ratio` times that bounced; the
    bounced requests busy `bounce_ns_per_byte` more per byte than the direct ones."""
    cells = []
    for pattern in ("seq", "rand"):
        for op in ("read", "write"):
            for size in (4 * KIB, 64 * KIB):
                for qd in (1, 16):
                    k = kicks if qd == 16 else 1.0
                    cells.append(cell(pattern, op, size, qd, "direct", direct_mib_s, direct_busy, k, irqs))
                    cells.append(cell(pattern, op, size, qd, "bounced", direct_mib_s * ratio, direct_busy + bounce_ns_per_byte * size, k, irqs))
    memcpy = [{"size": s, "ns": memcpy_ns_per_byte * s, "aliasing_ns": 3 * memcpy_ns_per_byte * s} for s in (4 * KIB, 64 * KIB)]
    return {"kind": "io", "timer_hz": 62_500_000, "throttle_bps": throttle_bps, "warmup_ms": warmup_ms, "cells": cells, "memcpy": memcpy}


def runs_with(throttle_bps, throttled_ratios, kicks=1.0):
    return {
        "io": [(r, io_boot(0, 0.5, 20_000.0, 1.5, 0.25, kicks)) for r in (1, 2)],
        "io-throttled": [(r, io_boot(throttle_bps, x, 30_000.0, 0.75, 0.25, kicks, direct_mib_s=240.0, warmup_ms=200)) for r, x in zip((1, 2, 3), throttled_ratios)],
        "io-icount": [(r, io_boot(0, 0.6, 11_000.0, 0.5, 0.125)) for r in (1, 2)],
    }


def target(targets, what):
    rows = [r for r in targets.rows if what in r[0]]
    return rows


class ThrottledCells(unittest.TestCase):
    def test_throttle_and_verdict_from_data(self):
        targets = report.Targets()
        text = report.throttled_section(runs_with(262_144_000, [0.96, 0.97, 0.99]), targets)
        self.assertIn("250 MiB/s (262 MB/s, `throttling.bps-total=262144000`)", text)
        self.assertNotIn("500", text)
        rows = target(targets, "device throttled to 250 MiB/s")
        self.assertEqual(len(rows), 4, "one row per 64 KiB QD 16 cell")
        for what, wanted, measured, met in rows:
            self.assertEqual(wanted, "≥ 0.95")
            self.assertEqual(measured, "0.97 [0.96–0.99]")
            self.assertTrue(met)
        self.assertIn("| seq | read | 64 KiB | 16 | 240 | 233 [230–238] | 250 | 0.97 [0.96–0.99] |", text)

    def test_missed_when_below(self):
        targets = report.Targets()
        report.throttled_section(runs_with(524_288_000, [0.9, 0.94, 0.99]), targets)
        rows = target(targets, "device throttled to 500 MiB/s")
        self.assertEqual({r[3] for r in rows}, {False}, "median 0.94 < 0.95")

    def test_reason_from_data(self):
        text = report.throttled_reason(runs_with(262_144_000, [0.5, 0.5, 0.5]))
        self.assertIn("limited to 250 MiB/s, the missed cells (rand read, rand write, seq read, seq write) ran at 240 MiB/s direct and 120 MiB/s bounced", text)
        self.assertIn("The direct cells were held by the throttle, the bounced ones were not", text)
        # 30 us + 0.75 ns/B * 64 KiB = 79.2 us per bounced request, at 120 MiB/s = 1920 requests/s.
        self.assertIn("busy 79.2 µs per bounced request against 30 µs per direct one, 0.15 of the vCPU's time", text)
        self.assertNotIn("nearly saturated", text)
        text = report.throttled_reason(runs_with(104_857_600, [0.9, 0.9, 0.9]))
        self.assertIn("ran above the limit", text)
        self.assertIn("warm-up of 200 ms", text)
        self.assertEqual(report.throttled_reason(runs_with(262_144_000, [0.98, 0.98, 0.98])), "", "nothing missed")
        self.assertEqual(report.throttled_reason({}), "")

    def test_absent(self):
        self.assertEqual(report.throttled_section({}, report.Targets()), "No `io-throttled` results.\n")


class Qd16Reason(unittest.TestCase):
    def test_figures_from_data(self):
        runs = runs_with(0, [1.0, 1.0, 1.0])
        for _, d in runs["io"]:
            for c in d["cells"]:
                c["elapsed_ns"], c["ops"] = 1e9, c["iops"]  # one second per cell
        text = report.qd16_reason(runs, {"nproc": 2})
        # Direct: 20 us busy per request at 400 MiB/s of 64 KiB (6400/s); bounced: 20 us + 1.5 ns/B
        # * 64 KiB = 118.3 us at 3200/s; the 64 KiB memcpy 0.25 ns/B = 16.4 us.
        self.assertIn("a bounced request took 118 µs of the vCPU's time against 20 µs for a direct one (medians", text)
        # 1 s / 118.3 us = 8,453 bounced requests/s at most, against 6,400/s direct.
        self.assertIn("bounced I/O at 1.3 of direct's measured throughput at most; it carried 0.5, the vCPU busy 37.9 % of the time bounced and 12.8 % direct", text)
        self.assertIn("The bounce added 6 64 KiB memcpys' worth of CPU per request", text)
        self.assertIn("host's 2 CPUs", text)
        self.assertNotIn("second vCPU", text, "no smp-io results in these runs")
        runs["io"] = [(r, io_boot(0, 0.95, 20_000.0, 1.5, 0.25)) for r in (1, 2)]
        self.assertNotIn("busy", report.qd16_reason(runs, {}), "no cell missed: no figures")


class Qd1SequentialTargets(unittest.TestCase):
    def test_one_row_per_sequential_cell(self):
        targets = report.Targets()
        runs = runs_with(0, [1.0, 1.0, 1.0])
        runs["io"][1][1]["cells"] = [
            dict(c, mib_s=c["mib_s"] * (1.9 if c["placement"] == "bounced" and c["size"] == 4 * KIB else 1.0))
            for c in runs["io"][1][1]["cells"]
        ]
        report.bounce_section(runs, targets, None)
        rows = {r[0]: r for r in target(targets, "QD 1 seq") if "bounced/direct" in r[0]}
        self.assertEqual(sorted(rows), sorted(f"QD 1 seq {op} {size}: bounced/direct" for op in ("read", "write") for size in ("4 KiB", "64 KiB")))
        # Bounced at 0.5 of direct in both boots, but 0.95 for 4 KiB in the second: median 0.725.
        self.assertEqual(rows["QD 1 seq read 64 KiB: bounced/direct"][2:], ("0.5", False))
        self.assertEqual(rows["QD 1 seq write 4 KiB: bounced/direct"][1:], ("≥ 0.9", "0.72 [0.5–0.95]", False))


class AddedReason(unittest.TestCase):
    def test_copies_and_the_rest_from_data(self):
        runs = runs_with(0, [1.0, 1.0, 1.0])
        self.assertNotIn("read added", report.added_reason(runs), "results without the read counts: no split for reads")
        for _, d in runs["io-icount"]:
            for c in d["cells"]:
                if c["op"] == "read" and c["placement"] == "bounced":
                    c["reads_copy_in_skipped"], c["reads_copied_in"] = 1, 3
        text = report.added_reason(runs)
        # 0.5 instructions per byte more than direct: 32,768 for 64 KiB, against an 8,192 memcpy.
        self.assertIn(
            "read added 4 memcpys' worth of CPU: 0 in idle scrubbing (zeroing its slots while the CPU waited for the "
            "device), and on the request's path 1.75 copies' worth (the copy back, and the copy-in of the 75 % of reads", text)
        self.assertIn("and 2.25 besides; a write added 4: 0 in idle scrubbing, and on its path one copy and 3 besides.", text)
        self.assertIn("loop zeroes free slots while it waits", text)

    def test_idle_scrubbing_is_set_apart(self):
        runs = runs_with(0, [1.0, 1.0, 1.0])
        for _, d in runs["io-icount"]:
            for m in d["memcpy"]:
                m["memset_ns"] = m["ns"] / 2
            for c in d["cells"]:
                c["ops"] = 100
                c["slots_scrubbed"] = 3400 if c["placement"] == "bounced" else 200
        f = report.added_figures(runs)
        # 32 slots (64 KiB) per request beyond direct's 2, at half a memcpy's cost: 0.5 memcpy.
        self.assertAlmostEqual(f["write"]["scrub"], 0.5)
        self.assertAlmostEqual(f["write"]["path"], 3.5)
        self.assertAlmostEqual(f["write"]["rest"], 2.5)
        # The loop's own time in its scrub steps, where the results have it, over the slots' count:
        # 1.25 memcpys (8,192 each) per request bounced, 0.25 direct.
        for _, d in runs["io-icount"]:
            for c in d["cells"]:
                c["scrub_ns"] = 100 * 8192 * (1.25 if c["placement"] == "bounced" else 0.25)
        f = report.added_figures(runs)
        self.assertAlmostEqual(f["write"]["scrub"], 1.0)
        self.assertAlmostEqual(f["write"]["rest"], 2.0)

    def test_the_path_timed_apart_from_the_loop(self):
        runs = runs_with(0, [1.0, 1.0, 1.0])
        for _, d in runs["io-icount"]:
            for c in d["cells"]:
                c["ops"] = 100
                c["scrub_ns"] = 100 * 8192 * (1.25 if c["placement"] == "bounced" else 0.25)
                if c["op"] == "read" and c["placement"] == "bounced":
                    c["reads_copy_in_skipped"], c["reads_copied_in"] = 4, 0
                # Per request: direct 1,000 submitting, 500 collecting, 1,500 in the handler;
                # bounced 9,100 more submitting (one copy of 8,192 and 908 besides).
                extra = 9100 if c["placement"] == "bounced" else 0
                c["submit_ns"], c["collect_ns"], c["irq_ns"] = 100 * (1000 + extra), 100 * 500, 100 * 1500
        f = report.added_figures(runs)
        # Busy time added: 4 memcpys (as above); the path 9,100 / 8,192; the loop the rest.
        self.assertAlmostEqual(f["write"]["path"], 9100 / 8192)
        self.assertAlmostEqual(f["write"]["scrub"], 4 - 9100 / 8192)
        self.assertTrue(f["write"]["exact"])
        text = report.added_reason(runs)
        self.assertIn("in the loop around it (its idle scrubbing", text)
        self.assertIn("on the request's own path (its submission, its interrupt handler and its collection", text)
        targets = report.Targets()
        report.added_targets(runs, targets)
        self.assertEqual(target(targets, "seq write 64 KiB: instructions")[0][2:], ("1.11", False))
        # One boot without the fields: the figure is not called exact.
        for c in runs["io-icount"][0][1]["cells"]:
            del c["irq_ns"]
        self.assertFalse(report.added_figures(runs)["read"]["exact"])

    def test_instruction_rows_per_cell_with_verdict(self):
        runs = runs_with(0, [1.0, 1.0, 1.0])
        targets = report.Targets()
        report.added_targets(runs, targets)
        rows = target(targets, "instructions a bounce adds to the request's path")
        self.assertEqual([r[0].split(":")[0] for r in rows], ["QD 1 seq read 64 KiB", "QD 1 seq write 64 KiB", "QD 1 rand read 64 KiB", "QD 1 rand write 64 KiB"][1::2])
        self.assertEqual(rows[0][1:], ("≤ 1.1", "4", False))
        # A bounce of 1.05 memcpys' worth of instructions meets it.
        runs["io-icount"] = [(r, io_boot(0, 0.6, 11_000.0, 0.13125, 0.125)) for r in (1, 2)]
        targets = report.Targets()
        report.added_targets(runs, targets)
        self.assertEqual(target(targets, "seq write 64 KiB: instructions")[0][2:], ("1.05", True))

    def test_copies_timed_in_place(self):
        runs = runs_with(0, [1.0, 1.0, 1.0])
        self.assertNotIn("timed where they ran", report.added_reason(runs), "results without copy timing")
        for _, d in runs["io"]:
            for c in d["cells"]:
                c["ops"] = 10
                # 1.5 memcpys of 64 KiB (16,384 ns each) per request bounced, 0.1 direct.
                c["bounce_copy_ns"] = 10 * 16_384 * (1.5 if c["placement"] == "bounced" else 0.1)
        text = report.added_reason(runs)
        # io: 400 MiB/s direct, 200 bounced: 156,250 ns more per 64 KiB request, 9.54 memcpys.
        self.assertIn("took 1.4 memcpys' time against the 9.5 a bounce added (seq read)", text)
        self.assertIn("A write's one copy took 1.4 memcpys' time where it ran", text)
        self.assertNotIn("scrub steps after which", text, "results without the scrub steps' timing")
        for _, d in runs["io"]:
            for c in d["cells"]:
                # 0.75 memcpys per request bounced, 0.25 direct: 0.5 held back at most.
                c["scrub_before_collect_ns"] = 10 * 16_384 * (0.75 if c["placement"] == "bounced" else 0.25)
        text = report.added_reason(runs)
        self.assertIn("held a request back) took 0.5 (seq read), 0.5 (seq write)", text)
        self.assertNotIn("own path (its submission", text, "results without the path timed apart")
        for _, d in runs["io"]:
            for c in d["cells"]:
                # The path: 2 memcpys per request bounced (1.5 of them the copies), 0.25 direct.
                c["submit_ns"], c["collect_ns"] = 10 * 16_384 * (1.5 if c["placement"] == "bounced" else 0.1), 0
                c["irq_ns"] = 10 * 16_384 * (0.5 if c["placement"] == "bounced" else 0.15)
        text = report.added_reason(runs)
        self.assertIn("beyond the direct one's, 1.8 memcpys' time (seq read; the copies 1.4, the rest 0.35)", text)
        self.assertIn("on the request's path (in instructions, above: 4 memcpys for writes)", text)

    def test_one_copy_ceiling_from_direct_latency(self):
        text = report.added_reason(runs_with(0, [1.0, 1.0, 1.0]))
        # 64 KiB at 400 MiB/s: 156,250 ns direct; memcpy 16,384 ns: 0.905.
        self.assertIn("would have been 0.91 (seq read), 0.91 (seq write), 0.91 (rand read), 0.91 (rand write)", text)


class CpuPerByte(unittest.TestCase):
    def test_bounce_and_memcpy_per_byte_with_ratio(self):
        text = report.cpu_per_byte_section(runs_with(524_288_000, [1, 1, 1]))
        # io: 1.5 ns/B bounce, 0.25 ns/B memcpy: 6 x.
        self.assertIn("| `io` | ns | seq | read | 64 KiB | 16 | 20,000 | 118,304 | 1.5 | 0.25 | 6 |", text)
        self.assertIn("| `io-throttled` | ns | rand | write | 4 KiB | 1 | 30,000 | 33,072 | 0.75 | 0.25 | 3 |", text)
        self.assertIn("| `io-icount` | instructions | seq | write | 64 KiB | 1 | 11,000 | 43,768 | 0.5 | 0.125 | 4 |", text)

    def test_scrubbing_loop_named_when_the_results_show_it(self):
        runs = runs_with(524_288_000, [1, 1, 1])
        self.assertNotIn("scrubbing of free bounce slots", report.cpu_per_byte_section(runs))
        for _, d in runs["io"]:
            for m in d["memcpy"]:
                m["memset_ns"] = m["ns"] / 2
        self.assertTrue(report.io_scrubs(runs))
        self.assertIn("its scrubbing of free bounce slots while it waits included", report.cpu_per_byte_section(runs))

    def test_old_results_without_busy_time(self):
        runs = runs_with(524_288_000, [1, 1, 1])
        for rs in runs.values():
            for _, d in rs:
                for c in d["cells"]:
                    del c["busy_ns_per_req"]
        self.assertIn("No busy-time results", report.cpu_per_byte_section(runs))


class KicksPerRequest(unittest.TestCase):
    def test_table_and_target(self):
        targets = report.Targets()
        text = report.kicks_section(runs_with(524_288_000, [1, 1, 1], kicks=0.2), targets)
        self.assertIn("| `io` | seq | read | 64 KiB | 16 | 0.2 | 0.2 | 0.5 | 0.5 |", text)
        self.assertIn("| `io-throttled` | rand | write | 4 KiB | 1 | 1 | 1 | 0.5 | 0.5 |", text)
        (row,) = target(targets, "kicks per request at QD 16")
        self.assertEqual((row[2], row[3]), ("0.2", True))
        targets = report.Targets()
        report.kicks_section(runs_with(524_288_000, [1, 1, 1], kicks=1.0), targets)
        (row,) = target(targets, "kicks per request at QD 16")
        self.assertEqual((row[2], row[3]), ("1", False))


class IcountTwins(unittest.TestCase):
    def test_coverage_from_the_configs_run(self):
        runs = {"map": [(1, {})], "map-icount": [(1, {})], "scaling-lend": [(1, {})], "io": [(1, {})], "io-icount": [(1, {})]}
        text = report.icount_coverage(runs)
        self.assertIn("mapping cost (section 2): `map-icount`", text)
        self.assertIn("at queue depth 1 (section 1): `io-icount`", text)
        self.assertIn("Not run this time (`--quick` or `--only`): lookups as the pool list grows, `lend` (`scaling-lend-icount`).", text)
        self.assertNotIn("scaling-dynamic-icount", text)
        self.assertIn("`smp-map-*` figures have none", text)

    def test_scaling_rows_in_instructions(self):
        row = lambda n: {"pools": 1, "bounce_map_unmap_4k_ns": n, "memcpy_4k_ns": 500.0, "is_swiotlb_buffer_miss_ns": 12.0}
        text = report.scaling_section({"scaling-lend": [(1, {"scaling": [row(3000.0)]})], "scaling-lend-icount": [(1, {"scaling": [row(2500.0)]})]})
        self.assertIn("| `lend` | ns | 1 | 3,000 | 6 | 12 |", text)
        self.assertIn("| `lend` | instructions (`-icount`) | 1 | 2,500 | 5 | 12 |", text)


class IoSlices(unittest.TestCase):
    @staticmethod
    def sliced(slices, cell_ms=300):
        """`runs_with`, the `io` and `io-icount` cells run in `slices` slices of `cell_ms` / slices
        (`io-icount` at QD 1 only, as `bench.sh` runs it); `io-throttled` in one."""
        runs = runs_with(0, [1.0, 1.0, 1.0])
        for config in ("io", "io-icount"):
            for _, d in runs[config]:
                d["cell_ms"] = cell_ms
                d["cells"] = [dict(c, slices=slices) for c in d["cells"] if config == "io" or c["qd"] == 1]
        return runs

    def method(self, runs):
        text, _ = report.build_doc(runs, {"cell_ms": 300}, [], "results", None, "/tmp")
        return text[text.index("## Method"):text.index("## The machine")]

    def test_method_gives_the_slices_of_the_results(self):
        text = self.method(self.sliced(4))
        self.assertIn(
            "the QD 1 and QD 16 cells of `io` and the QD 1 cells of `io-icount` run in 4 slices of 75 ms, "
            "direct and bounced alternated ABBA (direct then bounced in the even slices, bounced then direct in the odd ones)", text)
        self.assertIn("in `io-throttled` direct and bounced run one after the other, direct first", text)
        # The count comes from the cells, not from a fixed figure.
        text = self.method(self.sliced(3, cell_ms=600))
        self.assertIn("cells of `io-icount` run in 3 slices of 200 ms, direct and bounced alternated ABBA", text)
        self.assertNotIn("4 slices", text)

    def test_cells_in_one_slice(self):
        for runs in (runs_with(0, [1.0, 1.0, 1.0]), self.sliced(1)):
            text = self.method(runs)
            self.assertNotIn("ABBA", text, "results without slices, or one slice: one after the other")
            self.assertIn("in `io`, `io-icount`, `io-throttled` direct and bounced run one after the other, direct first", text)

    def test_added_time_is_the_median_of_the_slices(self):
        runs = self.sliced(4)
        for _, d in runs["io"]:
            for c in d["cells"]:
                # Direct slices at 100 µs; bounced 20 µs more in three slices, and one slice the
                # host slowed down by 500 µs more: the sum would say 145 µs, the median 20.
                if c["placement"] == "direct":
                    c["slice_lat_ns"] = [100_000.0] * 4
                else:
                    c["slice_lat_ns"] = [120_000.0, 620_000.0, 120_000.0, 120_000.0]
                c["lat_ns"] = sum(c["slice_lat_ns"]) / 4
        targets = report.Targets()
        text, _ = report.bounce_section(runs, targets, None)
        # The 64 KiB memcpy of the fixture: 0.25 ns a byte, 16,384 ns; 20 µs: 1.22 memcpys.
        rows = {r[0]: r for r in target(targets, "time a bounce adds / memcpy")}
        self.assertEqual(rows["QD 1 rand read 64 KiB: time a bounce adds / memcpy"][2:], ("1.2", False))
        self.assertIn("the median over the slices of a bounced slice's latency minus that of the direct slice", text)
        self.assertIn("| 20 | 16.4 | 1.2 |", text)
        # Without slices the cells' latencies as they are.
        self.assertNotIn("median over the slices", report.bounce_section(runs_with(0, [1.0, 1.0, 1.0]), report.Targets(), None)[0])


if __name__ == "__main__":
    unittest.main()
