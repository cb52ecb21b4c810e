"""Reward functions for tests/test_reward_columns.py, imported by `reward.source=reward_helpers:NAME` (the
tests directory is on sys.path). Each records what it was called with in CALLS."""

from __future__ import annotations

CALLS: list[dict] = []


def says_answer(prompts, responses, answer):
    """1.0 when the response's first word is the record's `answer` column, else 0.0; None where the record
    has no answer (the reward does not apply)."""
    CALLS.append({"fn": "says_answer", "prompts": list(prompts), "answer": list(answer)})
    pairs = zip(responses, answer, strict=True)
    return [None if a is None else float(r.split()[:1] == [a]) for r, a in pairs]


def sees_all(prompts, responses, **columns):
    """0.5 for every response; records every column it was given."""
    CALLS.append({"fn": "sees_all", "prompts": list(prompts), "columns": dict(columns)})
    return [0.5] * len(responses)


def plain(prompts, responses):
    """The old two-argument form: 2.0 for every response."""
    CALLS.append({"fn": "plain", "prompts": list(prompts)})
    return [2.0] * len(responses)


def count_a(prompts, responses):
    """The number of times the word "a" occurs in the response: a score the tiny models' words can earn."""
    return [float(r.split().count("a")) for r in responses]
