"""Judges: given a prompt and two responses, the probability that the first is preferred.

One interface for every judge (the lab's gold reward, a reward model, later an LLM judge), so win-rates
and AI feedback are computed the same way whoever judges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

# (prompts as the data gives them — text or chat messages —, responses, **columns) → one score per response;
# columns: the prompt file's other columns of those prompts, which the evaluator passes and a judge's
# `prefer` does not (tether/instruments/evaluate.py)
ScoreFn = Callable[..., Sequence[float]]


class Judge:
    """P(first response preferred) for each (prompt, first, second) triple."""

    name = "judge"

    def prefer(self, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float]:
        raise NotImplementedError


class ScoreJudge(Judge):
    """A judge built on a scalar score of (prompt, response).

    `soft=False`: 1 if the first scores higher, 0 if lower, ½ on a tie (the gold judge).
    `soft=True`: σ(s₁ − s₂), the Bradley-Terry probability (a reward-model judge).
    """

    def __init__(self, score: ScoreFn, name: str, soft: bool = False):
        self.score, self.name, self.soft = score, name, soft

    def prefer(self, prompts, first, second) -> list[float]:
        if not len(prompts) == len(first) == len(second):
            raise ValueError("prompts, first and second must have the same length")
        return self.compare(self.score(prompts, first), self.score(prompts, second))

    def compare(self, s1, s2) -> list[float]:
        """The preferences of first over second from their scores (already computed, e.g. by the caller)."""
        if self.soft:
            return [1.0 / (1.0 + math.exp(b - a)) for a, b in zip(s1, s2, strict=True)]
        return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(s1, s2, strict=True)]


class GoldJudge(ScoreJudge):
    """The lab's gold reward as a judge: the truth the lab knows and real data does not."""

    def __init__(self):
        from tether.lab import gold_reward

        super().__init__(lambda ps, rs: [gold_reward(p, r) for p, r in zip(ps, rs, strict=True)], "gold")
