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


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of p1 − p2 for two independent proportions k1/n1 and k2/n2: Newcombe's hybrid score
    interval (Newcombe 1998, "Interval estimation for the difference between independent proportions:
    comparison of eleven methods", Statistics in Medicine 17:873-890, method 10), built from the two Wilson
    intervals (l1, u1), (l2, u2):

        lower = (p1 − p2) − sqrt((p1 − l1)² + (u2 − p2)²),  upper = (p1 − p2) + sqrt((u1 − p1)² + (p2 − l2)²).

    It stays inside [−1, 1], is sensible at 0 or n successes, and covers close to 95% at small n (Newcombe's
    Table II example 56/70 − 48/80 gives [0.0524, 0.3339])."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return max(-1.0, d - math.hypot(p1 - l1, u2 - p2)), min(1.0, d + math.hypot(u1 - p1, p2 - l2))


def compare_rates(policy: dict, base: dict, higher_is_better: bool | None) -> dict:
    """The policy's rate {"value", "n", "ci95", ...} with the base's beside it and their difference:
    "base", "base_n", "base_ci95", "change" (policy − base), "difference_ci95" (`difference_interval`),
    "no_change" 0 and — when the direction is known (`higher_is_better` not None) — "verdict" (better / no
    measurable difference / worse: where the difference's interval lies against 0) and "pass" (not
    measurably worse). Unmeasured on either side: the policy's entry with the base's value, no comparison."""
    out = dict(policy)
    out["base"] = base.get("value")
    if not policy.get("n") or not base.get("n") or policy.get("value") is None or base.get("value") is None:
        return out
    k1, n1 = round(policy["value"] * policy["n"]), policy["n"]
    k2, n2 = round(base["value"] * base["n"]), base["n"]
    lo, hi = difference_interval(k1, n1, k2, n2)
    out.update(base_n=n2, base_ci95=list(wilson_interval(k2, n2)), change=k1 / n1 - k2 / n2,
               difference_ci95=[lo, hi], no_change=0.0)
    if higher_is_better is not None:
        out["verdict"] = interval_verdict((lo, hi), 0.0, higher_is_better)
        out["pass"] = out["verdict"] != WORSE
    return out


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
