"""Statistics for the benchmark report: medians with min and max, ratios paired by run.

Kept apart from report.py (which needs matplotlib) so that its unit test runs anywhere:
`python3 -m unittest discover -s scripts/bench`.
"""

import math


def finite(values):
    """The values that were measured (None and NaN dropped)."""
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def median(values):
    """The median of the measured values, or None if there are none."""
    v = sorted(finite(values))
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def summary(values):
    """(median, min, max, n) of the measured values; (None, None, None, 0) if none."""
    v = finite(values)
    if not v:
        return (None, None, None, 0)
    return (median(v), min(v), max(v), len(v))


def paired_ratios(pairs):
    """Ratios a/b of pairs measured in the same run (a boot), skipping unmeasured or zero b.

    A ratio per run, then summarised, keeps the noise of a shared machine (which hits both
    members of a pair alike) out of the ratio: the median of ratios, not the ratio of medians.
    """
    return [a / b for a, b in pairs if a is not None and b not in (None, 0)]


def fmt(x, digits=3):
    """A number for a table: 3 significant digits, thousands kept whole; '-' if unmeasured."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_summary_against(s, threshold, digits=3, scale=1.0):
    """`fmt_summary`, with as many more digits as it takes (at most 6) for a median that is
    not the threshold it is judged against not to read as that threshold: a median of 1.1011
    against "≤ 1.1" shows as 1.101 beside "missed", not as 1.1."""
    med = s[0]
    while med is not None and digits < 6 and med * scale != threshold and fmt(med * scale, digits) == fmt(threshold, digits):
        digits += 1
    return fmt_summary(s, digits, scale)


def fmt_summary(s, digits=3, scale=1.0):
    """'median [min-max]' of a summary(); only the median when min == max (a repeatable figure)."""
    med, lo, hi, n = s
    if n == 0:
        return "-"
    med, lo, hi = med * scale, lo * scale, hi * scale
    if n == 1 or fmt(lo, digits) == fmt(hi, digits):
        return fmt(med, digits)
    return f"{fmt(med, digits)} [{fmt(lo, digits)}–{fmt(hi, digits)}]"
