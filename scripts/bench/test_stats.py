"""Unit tests of the report's statistics: `python3 -m unittest discover -s scripts/bench`."""

import math
import unittest

from stats import fmt_summary, median, paired_ratios, summary


class StatsTest(unittest.TestCase):
    def test_median_odd_even_and_unmeasured(self):
        self.assertEqual(median([3, 1, 2]), 2)
        self.assertEqual(median([4, 1, 3, 2]), 2.5)
        self.assertEqual(median([None, math.nan, 5]), 5)
        self.assertIsNone(median([]))
        self.assertIsNone(median([None]))

    def test_summary(self):
        self.assertEqual(summary([5, 1, 9, None]), (5, 1, 9, 3))
        self.assertEqual(summary([]), (None, None, None, 0))

    def test_ratios_are_paired_per_run(self):
        # Run 2 is slow for both members: its ratio is still 0.5.
        self.assertEqual(paired_ratios([(1, 2), (10, 20), (None, 3), (4, 0)]), [0.5, 0.5])

    def test_format(self):
        self.assertEqual(fmt_summary((2.0, 1.0, 3.0, 3)), "2 [1–3]")
        self.assertEqual(fmt_summary((2.0, 2.0, 2.0, 5)), "2")
        # A repeatable figure whose float noise does not show at 3 digits prints once.
        self.assertEqual(fmt_summary((2.0891, 2.08903, 2.08905, 3)), "2.09")
        self.assertEqual(fmt_summary((None, None, None, 0)), "-")
        self.assertEqual(fmt_summary((0.5, 0.25, 1.0, 2), scale=100), "50 [25–100]")


if __name__ == "__main__":
    unittest.main()
