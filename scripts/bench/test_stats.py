"""Unit tests of the report's statistics: `python3 -m unittest discover -s scripts/bench`."""

import math
import unittest

from stats import fmt_summary, fmt_summary_against, median, paired_ratios, summary


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

    def test_a_median_beside_its_threshold_does_not_read_as_it(self):
        # 1.1011 against <= 1.1 is missed: it must not print as 1.1.
        self.assertEqual(fmt_summary_against((1.1011, 1.0998, 1.1011, 3), 1.1), "1.101 [1.1–1.101]")
        self.assertEqual(fmt_summary_against((0.8995, 0.8995, 0.8995, 3), 0.9, 2), "0.899")
        # Scaled (a share in %), and a median far from it or equal to it as before.
        self.assertEqual(fmt_summary_against((0.8996, 0.8996, 0.8996, 1), 90, 3, 100), "89.96")
        self.assertEqual(fmt_summary_against((1.23, 1.2, 1.3, 3), 1.1), "1.23 [1.2–1.3]")
        self.assertEqual(fmt_summary_against((1.1, 1.1, 1.1, 3), 1.1), "1.1")


if __name__ == "__main__":
    unittest.main()
