"""Length-controlled win-rate: the judge's preference at equal length (AlpacaEval 2.0's LC idea).

Judges, LLM and reward model alike, prefer longer answers, so a policy can raise its raw win-rate by talking
more. Dubois et al. 2024 ("Length-Controlled AlpacaEval: A Simple Way to Debias Automatic Evaluators",
arXiv:2404.04475) fit a GLM of the judge's preference with a length term (beside model and instruction
terms) and report the win-rate predicted with the length difference set to zero. tether fits the
two-parameter version of it (one policy against one base), per prompt i:

    P(policy preferred)_i = σ(b0 + b1·x_i),   x_i = tanh(Δ_i / sd(Δ)),   Δ_i = len(policy_i) − len(base_i)

(Δ in characters; tanh of the standardised difference bounds the length term, as their GLM's does), by
maximum likelihood on the judge's preferences p_i ∈ [0, 1] (soft or 1 / ½ / 0: the cross-entropy
−Σ p_i log q_i + (1 − p_i) log(1 − q_i) accepts fractional targets), with Newton's method. At equal length
x = 0, so the length-controlled win-rate is σ(b0). Its 95% interval is the profile-likelihood one on b0
(the b0 whose profile deviance 2·(ℓ(b̂) − max_b1 ℓ(b0, b1)) is at most z² = 3.84), mapped through σ; unlike
Wald's σ(b0 ± z·se) it stays sensible when one side (nearly) always wins, where se blows up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tether.instruments.stats import WORSE, Z95, interval_verdict

RIDGE = 1e-6  # a vanishing L2 penalty on (b0, b1): keeps Newton finite when one side always wins


def _sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t)) if t >= 0 else math.exp(t) / (1 + math.exp(t))


def length_features(policy_lengths: Sequence[float], base_lengths: Sequence[float]) -> list[float]:
    """x_i = tanh(Δ_i / sd(Δ)) with sd the population standard deviation of Δ; all 0 when sd is 0."""
    if len(policy_lengths) != len(base_lengths):
        raise ValueError("length_features needs one base length per policy length")
    deltas = [float(p) - float(b) for p, b in zip(policy_lengths, base_lengths, strict=True)]
    n = len(deltas)
    mean = math.fsum(deltas) / n if n else 0.0
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in deltas) / n) if n else 0.0
    return [math.tanh(d / sd) if sd > 0 else 0.0 for d in deltas]


def fit_logistic(targets: Sequence[float], xs: Sequence[float], iters: int = 100, tol: float = 1e-12):
    """(b0, b1, cov): the maximum-likelihood logistic regression of targets (in [0, 1]) on one feature, by
    Newton's method: gradient g = Σ (q_i − p_i)·(1, x_i) + λb, Hessian H = Σ q_i(1 − q_i)·(1, x_i)(1, x_i)ᵀ
    + λI, step b ← b − H⁻¹g (2 × 2, inverted in closed form); cov = H⁻¹ at the optimum."""
    if len(targets) != len(xs) or not targets:
        raise ValueError("fit_logistic needs as many features as targets, at least one")
    if any(not 0 <= p <= 1 for p in targets):
        raise ValueError("fit_logistic needs targets in [0, 1]")
    b0 = b1 = 0.0
    for _ in range(iters):
        g0, g1, h00, h01, h11 = RIDGE * b0, RIDGE * b1, RIDGE, 0.0, RIDGE
        for p, x in zip(targets, xs, strict=True):
            q = _sigmoid(b0 + b1 * x)
            w = q * (1 - q)
            g0 += q - p
            g1 += (q - p) * x
            h00 += w
            h01 += w * x
            h11 += w * x * x
        det = h00 * h11 - h01 * h01
        cov = [[h11 / det, -h01 / det], [-h01 / det, h00 / det]]
        s0, s1 = cov[0][0] * g0 + cov[0][1] * g1, cov[1][0] * g0 + cov[1][1] * g1
        b0, b1 = b0 - s0, b1 - s1
        if max(abs(s0), abs(s1)) < tol:
            break
    return b0, b1, cov


def _loglik(targets: Sequence[float], xs: Sequence[float], b0: float, b1: float) -> float:
    """Σ p log σ(t) + (1 − p) log σ(−t), t = b0 + b1·x, minus the ridge penalty λ/2·(b0² + b1²)."""

    def log_sigmoid(t: float) -> float:
        return -math.log1p(math.exp(-t)) if t >= 0 else t - math.log1p(math.exp(t))

    total = -0.5 * RIDGE * (b0 * b0 + b1 * b1)
    for p, x in zip(targets, xs, strict=True):
        t = b0 + b1 * x
        total += p * log_sigmoid(t) + (1 - p) * log_sigmoid(-t)
    return total


def _profile_b1(targets: Sequence[float], xs: Sequence[float], b0: float, b1: float) -> float:
    """max over b1 of the log-likelihood at fixed b0 (1-D Newton from b1)."""
    for _ in range(100):
        g, h = RIDGE * b1, RIDGE
        for p, x in zip(targets, xs, strict=True):
            q = _sigmoid(b0 + b1 * x)
            g += (q - p) * x
            h += q * (1 - q) * x * x
        step = g / h
        b1 -= step
        if abs(step) < 1e-10:
            break
    return _loglik(targets, xs, b0, b1)


def profile_interval(targets: Sequence[float], xs: Sequence[float], z: float = Z95, span: float = 40.0):
    """(lo, hi) of b0: where the profile deviance crosses z², found by bisection on each side of b̂0 within
    ± span (an end that never crosses is b̂0 ± span, i.e. σ ≈ 0 or 1)."""
    b0, b1, _ = fit_logistic(targets, xs)
    top = _loglik(targets, xs, b0, b1)

    def inside(c: float) -> bool:
        return 2 * (top - _profile_b1(targets, xs, c, b1)) <= z * z

    ends = []
    for sign in (-1.0, 1.0):
        near, far = b0, b0 + sign * span
        if inside(far):
            ends.append(far)
            continue
        for _ in range(60):
            mid = (near + far) / 2
            near, far = (mid, far) if inside(mid) else (near, mid)
        ends.append((near + far) / 2)
    return ends[0], ends[1]


def length_controlled_win_rate(
    preferences: Sequence[float],
    policy_lengths: Sequence[float],
    base_lengths: Sequence[float],
    no_change: float = 0.5,
    length_unit: str = "characters",
) -> dict:
    """{"value": σ(b0), "ci95", "n", "slope": b1, "length_unit", "no_change", "verdict", "pass"}: the win-rate
    of the policy over the base at equal length (see the module docstring); verdict and pass as win_rate's.
    length_unit names what the lengths count (the value itself is a rate, without a unit)."""
    if len(preferences) != len(policy_lengths):
        raise ValueError("length_controlled_win_rate needs one pair of lengths per preference")
    xs = length_features(policy_lengths, base_lengths)
    b0, b1, _ = fit_logistic(preferences, xs)
    lo, hi = profile_interval(preferences, xs)
    ci = [_sigmoid(lo), _sigmoid(hi)]
    verdict = interval_verdict(ci, no_change)
    return {
        "value": _sigmoid(b0),
        "ci95": ci,
        "n": len(preferences),
        "slope": b1,
        "length_unit": length_unit,
        "no_change": no_change,
        "verdict": verdict,
        "pass": verdict != WORSE,
    }
