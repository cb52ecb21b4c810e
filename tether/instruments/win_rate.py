"""Win-rate of a policy against the base model, as judged on the same prompts."""

from __future__ import annotations

from collections.abc import Sequence

from tether.instruments.judges import Judge
from tether.instruments.stats import wilson_interval


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
    probabilities are summed the same way. `pass` is value > threshold (the policy beats the base).
    """
    n = len(prompts)
    if n == 0:
        raise ValueError("win_rate needs at least one prompt")
    probs = judge.prefer(prompts, policy_responses, base_responses)
    wins = sum(probs)
    lo, hi = wilson_interval(wins, n)
    value = wins / n
    return {
        "value": value,
        "ci95": [lo, hi],
        "n": n,
        "judge": judge.name,
        "threshold": threshold,
        "pass": value > threshold,
    }
