"""Small statistics shared by the instruments: every reported rate carries its sample size and interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927), 95% by default.

    successes may be fractional (ties counted as half a win). With p̂ = successes/n:
    centre = (p̂ + z²/2n) / (1 + z²/n), half-width = z·sqrt(p̂(1 − p̂)/n + z²/4n²) / (1 + z²/n).
    Unlike p̂ ± z·se it stays inside [0, 1] and is sensible at p̂ = 0 or 1 and small n.
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


BETTER, NO_DIFFERENCE, WORSE = "better", "no measurable difference", "worse"


def interval_verdict(ci95: Sequence[float], no_change: float, higher_is_better: bool = True) -> str:
    """What a 95% interval says about a comparison whose no-change value is `no_change` (0.5 for a win-rate
    against the base): "better" when the whole interval lies on the better side of it, "worse" when on the
    other, and "no measurable difference" when it contains it (an end equal to it counts as containing)."""
    lo, hi = ci95
    if lo > no_change:
        return BETTER if higher_is_better else WORSE
    if hi < no_change:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Sample mean and its standard error s/√n (s with n − 1); stderr is 0 for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_stderr needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def proportion(flags: Sequence[bool]) -> dict:
    """{"value", "n", "ci95"}: the share of true flags with its 95% Wilson interval (value None if n = 0)."""
    n = len(flags)
    if n == 0:
        return {"value": None, "n": 0, "reason": "no samples of this kind"}
    k = sum(bool(f) for f in flags)
    return {"value": k / n, "n": n, "ci95": list(wilson_interval(k, n))}


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation coefficient of paired samples; None when either side is constant or n < 2."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("pearson needs equally many xs and ys")
    if n < 2:
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def not_measured(reason: str) -> dict:
    """How an instrument without its inputs is reported: present, with its value null and why."""
    return {"value": None, "reason": reason}
