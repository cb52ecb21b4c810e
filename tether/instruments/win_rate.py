"""Win-rate of a policy against the base model, as judged on the same prompts."""

from __future__ import annotations

from collections.abc import Sequence

from tether.instruments.judges import Judge
from tether.instruments.stats import WORSE, interval_verdict, wilson_interval


def win_rate(
    judge: Judge,
    prompts: Sequence[str],
    policy_responses: Sequence[str],
    base_responses: Sequence[str],
    threshold: float = 0.5,
) -> dict:
    """Mean P(policy response preferred) over prompts, with a 95% Wilson interval.

    Each prompt has one policy sample and one base sample. A hard judge gives 1 / ½ / 0 per prompt, so
    the value is (wins + ties/2)/n and the interval is Wilson's on wins + ties/2; a soft judge's
    probabilities are summed the same way.

    threshold is the no-change value (0.5: policy and base equally preferred), also under "no_change".
    "verdict" is what the interval says (tether.instruments.stats.interval_verdict): "better" (the whole
    interval above it), "worse" (below) or "no measurable difference" (it contains the no-change value).
    "pass" is "not measurably worse": true for better and for no measurable difference. (Before verdicts,
    pass was value > threshold, which called a tie such as 0.498 [0.327, 0.669] a failure.)
    """
    if not prompts:
        raise ValueError("win_rate needs at least one prompt")
    return win_rate_of(judge.prefer(prompts, policy_responses, base_responses), judge.name, threshold)


def win_rate_of(preferences: Sequence[float], judge_name: str, threshold: float = 0.5) -> dict:
    """`win_rate`'s result from the judge's per-prompt preferences P(policy preferred) (1 / ½ / 0 or soft)."""
    n = len(preferences)
    if n == 0:
        raise ValueError("win_rate needs at least one prompt")
    wins = sum(preferences)
    lo, hi = wilson_interval(wins, n)
    value = wins / n
    verdict = interval_verdict((lo, hi), threshold)
    return {
        "value": value,
        "ci95": [lo, hi],
        "n": n,
        "judge": judge_name,
        "threshold": threshold,
        "no_change": threshold,
        "verdict": verdict,
        "pass": verdict != WORSE,
    }
