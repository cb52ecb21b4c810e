"""Simulated labelers: Bradley-Terry on (gold reward + weighted bias terms) with a temperature.

A labeler's utility for a response is

    U(x, y) = gold(x, y) + sum_b w_b * f_b(x, y)

with the bias features f_b (`bias_features`):
    length      the number of words (prefers longer answers);
    emphasis    the number of emphatic words, "yes", "definitely", ... (prefers confident, repetitive text);
    sycophancy  1 when the response agrees with the belief the user states, else 0 (prefers agreeing);
    refusal     1 when the response refuses, else 0 (prefers refusing).
It prefers `a` over `b` with probability sigma((U(a) - U(b)) / T); at T = 0 it always picks the higher
utility (a tie is a coin flip). With no bias and T -> 0 it agrees with the gold reward on every pair whose
gold rewards differ.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from tether.errors import TetherError
from tether.lab.gold import agrees, gold_reward, is_refusal
from tether.lab.world import EMPHATIC, PromptInfo, parse_prompt

BIASES = ("length", "emphasis", "sycophancy", "refusal")


def bias_features(prompt: str | PromptInfo, response: str) -> dict[str, float]:
    """The value of each bias feature for a response (see the module docstring)."""
    words = response.split()
    return {
        "length": float(len(words)),
        "emphasis": float(sum(1 for w in words if w in EMPHATIC)),
        "sycophancy": float(agrees(prompt, response)),
        "refusal": float(is_refusal(response)),
    }


def check_biases(biases: dict, where: str = "biases") -> None:
    """TetherError naming the first unknown bias or non-numeric weight."""
    for name, weight in biases.items():
        if name not in BIASES:
            raise TetherError(f"{where}: unknown bias {name!r} (known: {', '.join(BIASES)})")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise TetherError(f"{where}.{name}: weight must be a finite number, got {weight!r}")


def preference_probability(diff: float, temperature: float) -> float:
    """P(a ≻ b) of a Bradley-Terry labeler whose utilities differ by diff = U(a) − U(b): σ(diff / T)
    (Bradley & Terry 1952); at T = 0 the higher utility surely; a tie (|diff| < 1e-9) ½ at any T."""
    if abs(diff) < 1e-9:
        return 0.5
    if temperature == 0:
        return 1.0 if diff > 0 else 0.0
    return 0.5 * (1.0 + math.tanh(diff / temperature / 2))  # = σ(diff / T), without overflow


@dataclass
class Labeler:
    """One simulated rater: Bradley-Terry on gold reward plus its biases, at its temperature."""

    biases: dict[str, float] = field(default_factory=dict)  # bias name -> weight in the utility
    temperature: float = 0.0  # 0: always the higher utility; larger: noisier choices
    name: str = "labeler"

    def __post_init__(self):
        check_biases(self.biases, f"labeler {self.name}")
        if not self.temperature >= 0:
            raise TetherError(f"labeler {self.name}: temperature must be >= 0, got {self.temperature!r}")

    def utility(self, prompt: str | PromptInfo, response: str) -> float:
        info = prompt if isinstance(prompt, PromptInfo) else parse_prompt(prompt)
        features = bias_features(info, response)
        return gold_reward(info, response) + sum(w * features[b] for b, w in self.biases.items())

    def prob_first(self, prompt: str | PromptInfo, a: str, b: str) -> float:
        """P(this labeler prefers `a` over `b`)."""
        info = prompt if isinstance(prompt, PromptInfo) else parse_prompt(prompt)
        return preference_probability(self.utility(info, a) - self.utility(info, b), self.temperature)

    def compare(self, prompt: str | PromptInfo, a: str, b: str, rng: random.Random) -> tuple[bool, float]:
        """(whether `a` wins, P(a wins)); the draw uses `rng`."""
        p = self.prob_first(prompt, a, b)
        return rng.random() < p, p


class LabelerMix:
    """Several labelers, each labelling a share of the pairs (rater disagreement)."""

    def __init__(self, labelers: list[Labeler], shares: list[float]):
        if not labelers or len(labelers) != len(shares) or sum(shares) <= 0 or min(shares) < 0:
            raise TetherError(
                "a labeler mix needs at least one labeler and non-negative shares with a positive sum"
            )
        self.labelers, self.shares = list(labelers), list(shares)

    def pick(self, rng: random.Random) -> Labeler:
        return rng.choices(self.labelers, weights=self.shares)[0]

    def label(self, prompt: str | PromptInfo, a: str, b: str, rng: random.Random) -> dict:
        """A preference record's labelling fields: chosen, rejected, label = P(chosen wins), labeler name."""
        labeler = self.pick(rng)
        a_wins, p = labeler.compare(prompt, a, b, rng)
        chosen, rejected, label = (a, b, p) if a_wins else (b, a, 1.0 - p)
        return {"chosen": chosen, "rejected": rejected, "label": round(label, 6), "labeler": labeler.name}


def agreement(records: list[dict]) -> dict:
    """Share of pairs whose `chosen` has the higher gold reward, over pairs whose gold rewards differ.

    Records need `gold_chosen` and `gold_rejected`. Returns {"value", "n"} (value None when n = 0).
    """
    decided = [r for r in records if r["gold_chosen"] != r["gold_rejected"]]
    agree = sum(1 for r in decided if r["gold_chosen"] > r["gold_rejected"])
    return {"value": round(agree / len(decided), 4) if decided else None, "n": len(decided)}


def bias_effects(records: list[dict]) -> dict[str, dict]:
    """For each bias: over pairs whose two sides differ in that feature, how often the labels pick the side
    with more of it (`labels_pick_higher`), how often the gold reward does (`gold_picks_higher`, ties count
    half), and the difference (`effect`: how much the labels lean towards long / emphatic / agreeing /
    refusing answers beyond what the gold reward justifies)."""
    out = {}
    for bias in BIASES:
        labels = gold = 0.0
        n = 0
        for r in records:
            fc = bias_features(r["prompt"], r["chosen"])[bias]
            fr = bias_features(r["prompt"], r["rejected"])[bias]
            if fc == fr:
                continue
            n += 1
            chosen_higher = fc > fr
            labels += chosen_higher
            g_c, g_r = r["gold_chosen"], r["gold_rejected"]
            gold_prefers_chosen = 1.0 if g_c > g_r else 0.0 if g_c < g_r else 0.5
            gold += gold_prefers_chosen if chosen_higher else 1.0 - gold_prefers_chosen
        if n == 0:
            out[bias] = {"n": 0, "labels_pick_higher": None, "gold_picks_higher": None, "effect": None}
            continue
        out[bias] = {
            "n": n,
            "labels_pick_higher": round(labels / n, 4),
            "gold_picks_higher": round(gold / n, 4),
            "effect": round((labels - gold) / n, 4),
        }
    return out
