"""Constitutional judges: P(first reply preferred) under a principle drawn per comparison, in both orders.

Bai et al. 2022 (sec. 4.1) label a pair by asking a feedback model a multiple-choice question under one
principle sampled from the constitution, and take the normalised probabilities of the answer letters as a
soft label. Here every judge answers P(the reply shown as A wins) — `shown_first_wins` — and

    prefer(x, y) = ½·[P_A(x shown as A, y as B) + 1 − P_A(y shown as A, x as B)]

so prefer(x, y) = 1 − prefer(y, x) exactly: the principle is drawn from a hash of (seed, prompt, the unordered
pair), the same whichever side comes first. `orders` also returns the two one-order probabilities, from
which the card measures position bias (how often the choice follows the position rather than the reply).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence

from tether.cai.constitution import Constitution, Principle, RaterSettings
from tether.errors import TetherError
from tether.instruments.judges import Judge
from tether.instruments.llm_judge import PairwiseLLMJudge


def principle_index(seed: int, prompt, a: str, b: str, count: int) -> int:
    """The principle drawn for comparing a and b on `prompt`: seeded, and the same for (a, b) and (b, a)."""
    key = json.dumps([seed, prompt, sorted([a, b])], ensure_ascii=False)
    return random.Random(key).randrange(count)


class ConstitutionJudge(Judge):
    """A judge that compares under one principle per comparison, asked in both orders."""

    def __init__(self, constitution: Constitution, seed: int = 0, name: str = "constitution"):
        self.constitution, self.seed, self.name = constitution, seed, name

    def principles_for(self, prompts, first, second) -> list[Principle]:
        ps = self.constitution.principles
        triples = zip(prompts, first, second, strict=True)
        return [ps[principle_index(self.seed, p, a, b, len(ps))] for p, a, b in triples]

    def shown_first_wins(self, prompts, shown_a, shown_b, principles: Sequence[Principle]) -> list[float]:
        """P(the reply shown as A is preferred) for each comparison, in that one order."""
        raise NotImplementedError

    def orders(self, prompts, first, second) -> tuple[list[float], list[float], list[Principle]]:
        """(P_A with first shown as A, P_A with second shown as A, the principle of each comparison)."""
        if not len(prompts) == len(first) == len(second):
            raise ValueError("prompts, first and second must have the same length")
        principles = self.principles_for(prompts, first, second)
        both = self.shown_first_wins(
            [*prompts, *prompts], [*first, *second], [*second, *first], [*principles, *principles]
        )
        n = len(prompts)
        return both[:n], both[n:], principles

    def prefer(self, prompts, first, second) -> list[float]:
        forward, swapped, _ = self.orders(prompts, first, second)
        return [0.5 * (f + 1.0 - s) for f, s in zip(forward, swapped, strict=True)]


class LabRater(ConstitutionJudge):
    """The lab's principle-following AI rater: the world's gold parts seen through the principle, imperfectly.

    For a principle p with focus weights c_k over the gold reward's parts g_k (all parts at weight 1 when the
    principle names none), the rater's utility of a reply is

        U_p(x, y) = Σ_k c_k·g_k(x, y) + Σ_b w_b·f_b(x, y)

    with the simulated labelers' bias features f_b (tether/lab/labelers.py: length, emphasis, sycophancy,
    refusal) and its own weights w_b; it reads the reply shown first with a bonus δ (position bias), and
    answers with temperature T:  P_A = σ((U_p(A) − U_p(B) + δ) / T)  (T = 0: 1, ½ or 0 by the sign).

    How agreement with gold moves with each knob (Δ = U_p(x) − U_p(y) before biases, equal to the gold
    difference when the focus is every part at weight 1):
    - refusal w: a pair of a refusal and a non-refusal flips towards the refusal when w > its margin, so on
      benign requests (gold prefers the answer) agreement falls as w grows.
    - length w: a pair flips towards the longer reply when w·(length difference) exceeds the gold margin.
    - position δ (T = 0): on a pair with |Δ| < δ both orders pick A, the averaged label is ½ (half
      agreement), and the choice flips with the swap: the position-bias rate is the share with |Δ| < δ.
    - temperature T: the averaged label on a pair the rater ranks like gold is ½[σ((Δ+δ)/T) + σ((Δ−δ)/T)],
      which falls towards ½ as T grows, so soft agreement falls (hard choices are unchanged).
    """

    def __init__(self, constitution: Constitution, settings: RaterSettings | None = None, seed: int = 0):
        from tether.lab.labelers import check_biases

        super().__init__(constitution, seed, name="lab-rater")
        self.settings = settings if settings is not None else constitution.lab_rater
        check_biases(self.settings.biases, "lab_rater.biases")
        if not self.settings.temperature >= 0:
            raise TetherError(f"lab_rater.temperature must be >= 0, got {self.settings.temperature!r}")

    def utility(self, prompt: str, reply: str, principle: Principle) -> float:
        from tether.lab import bias_features, gold_parts, parse_prompt

        try:
            info = parse_prompt(prompt)
        except (ValueError, TypeError):
            raise TetherError(f"the lab rater judges lab prompts only, got {prompt!r}") from None
        parts = gold_parts(info, reply)
        focus = principle.lab_focus or dict.fromkeys(parts, 1.0)
        features = bias_features(info, reply)
        return sum(w * parts[k] for k, w in focus.items()) + sum(
            w * features[b] for b, w in self.settings.biases.items()
        )

    def shown_first_wins(self, prompts, shown_a, shown_b, principles) -> list[float]:
        t, delta = self.settings.temperature, self.settings.position_bias
        out = []
        for prompt, a, b, principle in zip(prompts, shown_a, shown_b, principles, strict=True):
            d = self.utility(prompt, a, principle) - self.utility(prompt, b, principle) + delta
            if t == 0 or abs(d) < 1e-12:
                out.append(1.0 if d > 1e-12 else 0.0 if d < -1e-12 else 0.5)
            else:
                out.append(0.5 * (1.0 + math.tanh(d / t / 2)))  # σ(d / t) without overflow
        return out


class ConstitutionLLMJudge(ConstitutionJudge):
    """A causal LM asked the constitution's question under the drawn principle; P_A from its next-token
    probabilities of the two answer tokens (tether/instruments/llm_judge.py), normalised over the two."""

    def __init__(self, llm: PairwiseLLMJudge, constitution: Constitution, seed: int = 0):
        super().__init__(constitution, seed, name=llm.name)
        self.llm = llm

    def shown_first_wins(self, prompts, shown_a, shown_b, principles) -> list[float]:
        from tether.data import render_plain

        questions = []
        for prompt, a, b, principle in zip(prompts, shown_a, shown_b, principles, strict=True):
            text_prompt = render_plain(prompt) if isinstance(prompt, list) else prompt
            text = self.constitution.question(principle, text_prompt, a, b)
            questions.append(self.llm.question_ids(prompt, a, b, text=text))
        return self.llm.prob_a(questions)


def load_judge(spec: str, constitution: Constitution, seed: int = 0, device=None) -> ConstitutionJudge:
    """`lab` (the lab rater with the constitution's `lab_rater` settings) or `llm:MODEL_DIR`."""
    if spec == "lab":
        return LabRater(constitution, seed=seed)
    if spec.startswith("llm:") and spec[4:]:
        from tether.instruments.llm_judge import load_llm_judge

        try:
            llm = load_llm_judge(spec[4:], device=device, answers=constitution.answers)
        except OSError as e:
            raise TetherError(f"--judge {spec}: cannot load the model: {e}") from None
        except ValueError as e:
            raise TetherError(f"--judge {spec}: {e}") from None
        return ConstitutionLLMJudge(llm, constitution, seed)
    raise TetherError(f"unknown judge {spec!r}: use 'lab' or 'llm:MODEL_DIR'")
