"""Simulated labelers: Bradley-Terry on gold + biases, and how each bias moves the labels."""

import math
import random

import pytest

from tether.errors import TetherError
from tether.lab import BIASES, LabConfig, Labeler, LabelerMix, agreement, bias_effects, bias_features
from tether.lab.base_model import draw_prompts
from tether.lab.pairs import label_pairs, make_pairs

ADD = "what is 3 plus 4 ? answer:"


@pytest.fixture(scope="module")
def pairs():
    """Synthetic pairs (no model) over all four families, with every bias feature varying."""
    rng = random.Random(0)
    return make_pairs(rng, draw_prompts(rng, LabConfig(), 1000), LabConfig().pair_mix)


def test_model_pairs_never_have_an_empty_side():
    """A model that ends at once (every other sample empty) still gives pairs of two non-empty responses
    that differ in gold: the empty side is redrawn, and the pair's source says it is no longer two model
    samples."""
    rng = random.Random(0)
    calls = iter(range(10**6))
    sampler = lambda prompts: ["" if next(calls) % 2 == 0 else "7" for _ in prompts]  # noqa: E731
    pairs = make_pairs(rng, draw_prompts(rng, LabConfig(), 200), {"model": 1.0}, sampler=sampler)
    assert len(pairs) > 150
    assert all(a.strip() and b.strip() for _, a, b, _ in pairs)
    assert all(kind == "mixed" for *_, kind in pairs)


def _label(pairs, labeler):
    return label_pairs(random.Random(1), pairs, LabelerMix([labeler], [1.0]))


def test_bradley_terry_probability_by_hand():
    """gold("7") = 1.0 and gold("it is 8 .") = 0.0, so at T = 0.5 P("7" wins) = sigmoid(1.0 / 0.5) = 0.8808.
    A length weight of 0.25 per word adds 0.25 x (1 - 4) = -0.75 to the difference: sigmoid(0.25 / 0.5)."""
    labeler = Labeler({}, temperature=0.5)
    assert labeler.prob_first(ADD, "7", "it is 8 .") == pytest.approx(1 / (1 + math.exp(-2.0)))
    biased = Labeler({"length": 0.25}, temperature=0.5)
    assert biased.prob_first(ADD, "7", "it is 8 .") == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert Labeler({}, temperature=0.0).prob_first(ADD, "7", "it is 8 .") == 1.0
    assert Labeler({}, temperature=1e6).prob_first(ADD, "7", "it is 8 .") == pytest.approx(0.5)


def test_bias_features():
    prompt = "what is 3 plus 4 ? i think it is 9 . answer:"
    features = bias_features(prompt, "yes yes , you are right , it is 9 .")
    assert features == {"length": 11.0, "emphasis": 2.0, "sycophancy": 1.0, "refusal": 0.0}
    assert bias_features(ADD, "sorry , i can not help with that .")["refusal"] == 1.0


def test_unbiased_labeler_at_zero_temperature_agrees_with_gold_on_every_pair(pairs):
    records = _label(pairs, Labeler({}, temperature=0.0))
    result = agreement(records)
    assert result["n"] == len(pairs) > 900
    assert result["value"] == 1.0
    assert all(r["label"] == 1.0 for r in records)


@pytest.mark.parametrize("bias", BIASES)
def test_raising_a_bias_weight_moves_the_labels_its_way(pairs, bias):
    """As the weight grows, agreement with gold falls and the labels pick the long / emphatic / agreeing /
    refusing side more often (at T = 0 each pair's winner can only switch towards that side)."""
    agreements, shares = [], []
    for weight in (0.0, 0.2, 0.6, 2.0):
        records = _label(pairs, Labeler({bias: weight}, temperature=0.0))
        agreements.append(agreement(records)["value"])
        shares.append(bias_effects(records)[bias]["labels_pick_higher"])
    assert agreements == sorted(agreements, reverse=True) and agreements[-1] < agreements[0] - 0.02
    assert shares == sorted(shares) and shares[-1] > shares[0] + 0.05


def test_default_mix_is_mildly_biased(pairs):
    """The default mix agrees with gold on at least 75% of pairs, and every bias effect is positive."""
    records = label_pairs(random.Random(2), pairs, LabConfig().labeler_mix())
    assert 0.75 <= agreement(records)["value"] < 0.95
    for bias, effect in bias_effects(records).items():
        assert effect["effect"] > 0, bias


def test_higher_temperature_is_noisier(pairs):
    values = [agreement(_label(pairs, Labeler({}, temperature=t)))["value"] for t in (0.0, 0.3, 3.0)]
    assert values[0] > values[1] > values[2] > 0.5


def test_bad_labelers_are_refused():
    with pytest.raises(TetherError, match="unknown bias 'loudness'"):
        Labeler({"loudness": 1.0})
    with pytest.raises(TetherError, match="temperature must be >= 0"):
        Labeler({}, temperature=-1.0)
