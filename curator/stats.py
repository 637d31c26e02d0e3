"""The Wilson score interval for a binomial rate: hardness's lower bound and the benchmarks' intervals.

With p = k/n, d = 1 + z²/n, centre = p + z²/2n and half = z·sqrt(p(1-p)/n + z²/4n²), the interval is
``[max(0, (centre - half)/d), min(1, (centre + half)/d)]``.
"""

from __future__ import annotations

import math

Z95 = 1.959964  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95, divide_first: bool = False) -> tuple[float, float]:
    """(lower, upper) Wilson bounds of ``successes / n``; (nan, nan) when n = 0.

    ``divide_first`` rounds as centre/d ± half/d instead of (centre ± half)/d (the two differ by at most
    one ulp): the validity benchmark's recorded intervals were computed that way and stay bit-identical.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    p, z2 = successes / n, z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    d = 1 + z2 / n
    lo, hi = (centre / d - half / d, centre / d + half / d) if divide_first else ((centre - half) / d, (centre + half) / d)
    return (max(0.0, lo), min(1.0, hi))


def wilson_lower_bound(successes: int, n: int, z: float = 1.96) -> float:
    """The lower Wilson bound (a conservative rate: small samples shrink it); 0 when n = 0."""
    return wilson_interval(successes, n, z)[0] if n > 0 else 0.0
