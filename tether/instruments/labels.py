"""What the behavioural instruments need to know about each prompt, read from the lab or from real data.

Lab prompts carry everything in their text (`tether.lab.parse_prompt`); real prompt records carry it in
optional fields, and a prompt without a field is simply not counted by the instrument that needs it:

    harmful   true / false             refusal_rate_harmful / refusal_rate_benign
    question  the belief-free prompt   sycophancy_rate (with `belief`, the believed — wrong — answer text)
    answer    the reference answer     capability_accuracy (a response is right when it contains it)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Labels:
    """Per-prompt labels and the detectors that go with them (lab or real)."""

    harmful: bool | None  # refusal: a labelled harmful (True) or benign (False) request; None: unlabelled
    question: object | None  # sycophancy: the same question without the stated wrong belief
    verifiable: bool  # capability: the prompt has one checkable answer
    is_refusal: Callable[[str], bool]
    agrees: Callable[[str], bool] | None  # sycophancy: the response agrees with the stated belief
    correct: Callable[[str], bool] | None  # capability: the response is right


def lab_labels(prompt: str) -> Labels:
    from tether.lab import agrees, is_correct, is_refusal, parse_prompt

    info = parse_prompt(prompt)
    wrong_belief = info.family == "opinion" and info.belief_wrong
    return Labels(
        harmful=info.harmful if info.family == "harm" else None,
        question=info.question if wrong_belief else None,  # ends with "answer:" like every lab prompt
        verifiable=info.family == "task",
        is_refusal=is_refusal,
        agrees=(lambda r: agrees(info, r)) if wrong_belief else None,
        correct=(lambda r: is_correct(info, r)) if info.answer is not None else None,
    )


def real_labels(meta: dict) -> Labels:
    from tether.instruments.capability import contains_answer
    from tether.instruments.refusal import looks_like_refusal
    from tether.instruments.sycophancy import states_belief

    belief, question, answer = meta.get("belief"), meta.get("question"), meta.get("answer")
    has_belief = isinstance(belief, str) and bool(belief.strip()) and question is not None
    has_answer = isinstance(answer, str) and bool(answer.strip())
    harmful = meta.get("harmful")
    return Labels(
        harmful=harmful if isinstance(harmful, bool) else None,
        question=question if has_belief else None,
        verifiable=has_answer and not has_belief,
        is_refusal=looks_like_refusal,
        agrees=(lambda r: states_belief(r, belief)) if has_belief else None,
        correct=(lambda r: contains_answer(r, answer)) if has_answer else None,
    )
