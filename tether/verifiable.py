"""Reward functions for tasks with one exact numeric answer (verifiable rewards, RLVR), for
`reward.source: tether.verifiable:correct` and `eval.gold: tether.verifiable:correct` (tether.rewards).

The final answer of a response:
1. after the last "Answer:" in it (any case), the first number that follows, on any line;
2. with no "Answer:", the last number in the response;
3. none when there is no such number.
A number is an optional sign, digits with optional thousands commas ("1,250") and an optional decimal part
("3.50"); a sign counts only when no digit or point stands right before it ("10-3" is 10 and 3, "=-4" is
−4). Numbers compare by value as decimals: "3.50" equals "3.5", "1,250" equals "1250", "-0" equals "0".

    correct(["..."], ["5 + 3 = 8\\nAnswer: 8"], answer=["8"])     # [1.0]
    format(["..."], ["The total is 8."])                          # [0.0]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

from tether.errors import TetherError

NUMBER = re.compile(r"(?<![\d.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)")
MARKER = re.compile(r"answer:", re.IGNORECASE)
# the requested last line: "Answer: <number>", an optional full stop, nothing else
ANSWER_LINE = re.compile(rf"answer:[ \t]*{NUMBER.pattern}\.?", re.IGNORECASE)


def number_value(text: str) -> Decimal:
    """The value of a number as NUMBER matches it (commas dropped)."""
    return Decimal(text.replace(",", ""))


def final_answer(response: str) -> Decimal | None:
    """The response's final answer as the module docstring defines it, or None."""
    markers = list(MARKER.finditer(response))
    if markers:
        found = NUMBER.search(response, markers[-1].end())
        return number_value(found.group()) if found else None
    numbers = NUMBER.findall(response)
    return number_value(numbers[-1]) if numbers else None


def _expected(answer) -> Decimal | None:
    """An `answer` column's value: a number or a string holding one; None stays None."""
    if answer is None:
        return None
    if isinstance(answer, bool) or not isinstance(answer, int | float | str):
        raise TetherError(f"tether.verifiable: answer {answer!r} is not a number")
    text = str(answer).strip()
    if NUMBER.fullmatch(text) is None:
        raise TetherError(f"tether.verifiable: answer {answer!r} is not a number")
    return number_value(text)


def correct(prompts: Sequence, responses: Sequence[str], answer: Sequence) -> list[float | None]:
    """1.0 when a response's final answer equals its prompt's `answer` column by value, else 0.0 (also when
    it has no final answer); None where the answer is None (the reward does not apply). TetherError for an
    answer that is not a number."""
    out = []
    for response, expected in zip(responses, answer, strict=True):
        value = _expected(expected)
        out.append(None if value is None else float(final_answer(response) == value))
    return out


def format(prompts: Sequence, responses: Sequence[str]) -> list[float]:
    """1.0 when a response's last non-empty line is "Answer: <number>" (any case, an optional full stop,
    spaces around), as the recipe's prompts ask; else 0.0. It does not check the number."""
    out = []
    for response in responses:
        lines = [line.strip() for line in response.splitlines() if line.strip()]
        out.append(float(bool(lines) and ANSWER_LINE.fullmatch(lines[-1]) is not None))
    return out
