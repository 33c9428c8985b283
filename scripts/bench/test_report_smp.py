"""Unit tests of the "Scaling over CPUs" section (report_smp.py) on synthetic results:
`python3 -m unittest discover -s scripts/bench`.

The prose must follow the data: the host caveat from machine.json's `nproc`, "within noise"
exactly when a same-round ratio's min–max range spans 1, the areas finding from the boots' free
slots, and no figure the data does not give.
"""

import os
import re
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402
import report_smp  # noqa: E402
from stats import fmt  # noqa: E402


def map_boot(cpus, nareas, ops_per_s, policy="lend", free=None, outside=0.0, contended=0):
    """One `bench-smp-map` boot: both modes at `ops_per_s` in total, split evenly over the CPUs."""
    window = 300_000_000
    cells = []
    for mode in ("skip_sync", "copy"):
        total = int(ops_per_s * window / 1e9)
        per = total // cpus
        per_cpu = [
            {"cpu": c, "ops": per, "busy_ns": per * 5000, "slices": 100, "failures": 0, "outside_own_area": int(per * outside),
             "ops_per_s": per / 0.3, "ns_per_op": 5000.0}
            for c in range(cpus)
        ]
        cells.append({"mode": mode, "window_ns": window, "ops": per * cpus, "ops_per_s": per * cpus / 0.3, "failures": 0,
                      "area_lock_contended": contended, "contended_per_op": 0.0, "per_cpu": per_cpu})
    if free is None:
        free = [16384 // nareas] * nareas
    return {"kind": "smp-map", "policy": policy, "cpus": cpus, "nareas": nareas, "area_free_slots": free, "cells": cells,
            "tick_us": 2000, "slice_us": 1500, "map_len": 8192}


def io_boot(cpus, irq_cpus, mib_s):
    """One `bench-smp-io` boot: both workloads at `mib_s` in total, half per disk."""
    cells = []
    for pattern, size, qd in (("seq", 65536, 8), ("rand", 4096, 16)):
        disks = [{"disk": d, "ops": 1000, "mib_s": mib_s / 2, "irqs": 500, "disk_lock_contended": 10 * (irq_cpus - 1)} for d in (0, 2)]
        cells.append({"pattern": pattern, "size": size, "qd": qd, "elapsed_ns": 300_000_000, "total_mib_s": mib_s, "disks": disks})
    return {"kind": "smp-io", "cpus": cpus, "irq_cpus": irq_cpus, "wait": "poll", "cells": cells}


def result_set(per_cpu_gain, spread_gain, lend_free4=None):
    """Three rounds of every smp configuration. `per_cpu_gain[r]`: per-CPU areas' throughput over
    one area's in round r (4 vCPUs; 2 vCPUs gets the same); `spread_gain[r]` likewise for spread
    interrupts over one CPU."""
    runs = {}
    for r in (1, 2, 3):
        g, s = per_cpu_gain[r - 1], spread_gain[r - 1]
        base = 100_000 + 1000 * r
        runs.setdefault("smp-map-1cpu", []).append((r, map_boot(1, 1, base)))
        for cpus in (2, 4):
            runs.setdefault(f"smp-map-{cpus}cpu-1area", []).append((r, map_boot(cpus, 1, base * 1.5, contended=500)))
            free = lend_free4 if (cpus == 4 and lend_free4) else None
            outside = 0.75 if free else 0.0
            runs.setdefault(f"smp-map-{cpus}cpu-percpu", []).append((r, map_boot(cpus, cpus, base * 1.5 * g, free=free, outside=outside)))
            runs.setdefault(f"smp-io-{cpus}cpu-spread", []).append((r, io_boot(cpus, 2, 200 * s)))
            runs.setdefault(f"smp-io-{cpus}cpu-one", []).append((r, io_boot(cpus, 1, 200.0)))
    return runs


NOISY = [0.8, 1.1, 1.3]  # spans 1
BETTER = [1.2, 1.5, 1.8]
WORSE = [0.5, 0.6, 0.7]


class RatioWords(unittest.TestCase):
    def test_range_spanning_one_is_within_noise(self):
        self.assertEqual(report_smp.ratio_words((1.1, 0.8, 1.3, 3), "faster", "slower"), "within noise")
        self.assertEqual(report_smp.ratio_words((1.0, 1.0, 1.2, 3), "faster", "slower"), "within noise")

    def test_every_round_one_way(self):
        self.assertEqual(report_smp.ratio_words((1.5, 1.2, 1.8, 3), "faster", "slower"), "faster in every round")
        self.assertEqual(report_smp.ratio_words((0.6, 0.5, 0.7, 3), "faster", "slower"), "slower in every round")

    def test_one_round_claims_no_noise_estimate_and_none_is_not_measured(self):
        self.assertIn("no range", report_smp.ratio_words((1.5, 1.5, 1.5, 1), "faster", "slower"))
        self.assertEqual(report_smp.ratio_words((None, None, None, 0), "faster", "slower"), "not measured")


class Section(unittest.TestCase):
    def text(self, runs, nproc=2):
        return report_smp.section(runs, {"nproc": nproc})

    def test_host_caveat_follows_nproc(self):
        runs = result_set(NOISY, NOISY)
        two = self.text(runs, nproc=2)
        self.assertIn("The host has 2 cores", two)
        self.assertIn("scaling beyond 2 CPUs cannot be measured on this host", two)
        self.assertIn("With 4 vCPUs there are more vCPUs than host cores", two)
        one = self.text(runs, nproc=1)
        self.assertIn("With 2 and 4 vCPUs", one)
        self.assertIn("scaling beyond 1 CPU cannot", one)
        eight = self.text(runs, nproc=8)
        self.assertNotIn("cannot be measured", eight)
        self.assertIn("The host has 8 cores", eight)
        self.assertIn("(4 at most)", eight)
        unknown = report_smp.section(runs, {})
        self.assertIn("not in machine.json", unknown)
        self.assertNotIn("cannot be measured", unknown)

    def test_noisy_ratios_are_within_noise_and_clear_ones_are_not(self):
        noisy = self.text(result_set(NOISY, NOISY))
        self.assertIn("per-CPU areas / one area 1.1 [0.8–1.3], within noise", noisy)
        self.assertIn("spread / one CPU 1.1 [0.8–1.3], within noise", noisy)
        self.assertNotIn("in every round", noisy)
        clear = self.text(result_set(BETTER, WORSE))
        self.assertIn("per-CPU areas / one area 1.5 [1.2–1.8], faster in every round", clear)
        self.assertIn("spread / one CPU 0.6 [0.5–0.7], slower spread in every round", clear)
        self.assertNotIn("within noise", clear)

    def test_throughput_and_scaling_figures_come_from_the_data(self):
        text = self.text(result_set(BETTER, WORSE))
        # 1 vCPU, rounds at 101k, 102k, 103k map+unmaps/s (rounded down to whole ops per window).
        ops = sorted(int(100_000 + 1000 * r) * 3 // 10 / 0.3 for r in (1, 2, 3))
        self.assertIn(f"| 1 | one | {fmt(ops[1])} [{fmt(ops[0])}–{fmt(ops[2])}] |", text)
        # One area at 4 vCPUs: 1.5 x the 1-vCPU boot of the same round.
        self.assertRegex(text, r"\| 4 \| one \| [^|]+ \| [^|]+ \| 1\.5 \|")
        # Lock waits per 1000 map+unmaps at 4 vCPUs and one area: 500 over each round's ops.
        ops4 = [int((100_000 + 1000 * r) * 1.5 * 300_000_000 / 1e9) // 4 * 4 for r in (1, 2, 3)]
        waits = sorted(1000 * 500 / n for n in ops4)
        self.assertIn(f"| {fmt(waits[1])} [{fmt(waits[0])}–{fmt(waits[2])}] | - |", text)
        # The set-up as the boots report it.
        self.assertIn("bounce buffers of 8 KiB", text)
        self.assertIn("a 2 ms tick, up to 1.5 ms of mapping per interrupt) for 300 ms", text)
        self.assertIn("64 KiB sequential reads, QD 8 per disk", text)

    def test_areas_finding_follows_the_free_slots(self):
        starved = self.text(result_set(NOISY, NOISY, lend_free4=[4096, 0, 0, 0]))
        self.assertIn("with 4 vCPUs, 3 of the 4 areas had no free slot", starved)
        self.assertIn("75 % of the mappings (median) were made outside their CPU's area", starved)
        even = self.text(result_set(NOISY, NOISY))
        self.assertNotIn("had no free slot", even)
        self.assertIn("with 4 vCPUs every area had free slots", even)

    def test_no_figure_without_data(self):
        self.assertEqual(report_smp.section({}, {"nproc": 2}), "No `smp-*` results in this run.\n")
        only_io = {k: v for k, v in result_set(NOISY, NOISY).items() if k.startswith("smp-io")}
        text = self.text(only_io)
        self.assertIn("No `smp-map` results.", text)
        self.assertNotIn("per-CPU areas /", text)

    def test_every_number_in_the_prose_is_derived(self):
        """Outside the tables, each number in the text is one the data or machine.json gives."""
        runs = result_set(BETTER, WORSE, lend_free4=[4096, 0, 0, 0])
        text = self.text(runs, nproc=2)
        prose = "\n".join(line for line in text.splitlines() if not line.startswith("|"))
        # The data's: vCPU and area counts, the set-up (tick, slice, window, sizes, QD), the
        # ratios and shares; "1" also as the ratio's reference ("spans 1").
        allowed = {"0", "1", "2", "3", "4", "1.5", "300", "8", "64", "16", "75", "1.2", "1.8", "0.6", "0.5", "0.7", "1000"}
        for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", prose):
            self.assertIn(n, allowed, f"unexplained figure {n} in the prose")


class Hook(unittest.TestCase):
    def test_report_has_the_section(self):
        runs = result_set(NOISY, NOISY)
        text, _ = report.build_doc(runs, {"nproc": 2}, [], "results", None, HERE)
        self.assertIn("## 6. Scaling over CPUs", text)
        self.assertIn("scaling beyond 2 CPUs cannot be measured", text)


if __name__ == "__main__":
    unittest.main()
