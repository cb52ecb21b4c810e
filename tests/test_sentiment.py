"""tether.sentiment:vader, VADER's compound score as a reward function, against values worked out by hand
from VADER's lexicon (vader_lexicon.txt: "good" 1.9, "terrible" -2.1) and its normalisation
compound = x / sqrt(x² + 15), rounded to 4 decimals."""

import sys

import pytest
import torch

from tether.errors import TetherError
from tether.rewards import load_weighted_reward
from tether.sentiment import analyzer, vader


def test_compound_scores_worked_out_from_the_lexicon():
    """good: 1.9 / sqrt(1.9² + 15) = 1.9 / 4.3139 = 0.4404; terrible: -2.1 / sqrt(4.41 + 15) = -0.4767;
    "not good": the negation scales 1.9 by -0.74, -1.406 / sqrt(1.9768 + 15) = -0.3412; "good good": the
    valences add, 3.8 / sqrt(14.44 + 15) = 0.7003; a sentence with no rated word: 0.0. The prompt is not
    read: a positive prompt leaves a neutral response at 0."""
    responses = ["good", "terrible", "not good", "good good", "The table is made of wood."]
    got = vader(["What a wonderful, great day!"] * 5, responses)
    assert got == pytest.approx([0.4404, -0.4767, -0.3412, 0.7003, 0.0], abs=1e-4)


def test_it_is_a_reward_spec_with_one_score_per_response():
    """Through tether.rewards as `reward.source: tether.sentiment:vader`: a (B,) float32 tensor, and an extra
    column in the prompt file does not reach it (its signature names none)."""
    reward = load_weighted_reward([("tether.sentiment:vader", 1.0)])
    out = reward(["p1", "p2"], ["good", "terrible"], topic=["film", "food"])
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([0.4404, -0.4767], abs=1e-4)


def test_without_the_package_one_line_says_what_to_install(monkeypatch):
    """A None entry in sys.modules makes `import vaderSentiment` fail as if it were not installed."""
    analyzer.cache_clear()
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    try:
        with pytest.raises(TetherError, match=r"pip install 'tether\[sentiment\]'"):
            vader(["p"], ["good"])
    finally:
        analyzer.cache_clear()
