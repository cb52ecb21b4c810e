"""Repetition, distinct-2, correlation and proportions on hand-made inputs; ECE of a calibrated set."""

import math

import pytest

from tether.instruments.rm_accuracy import calibration_error
from tether.instruments.stats import pearson, proportion, wilson_interval
from tether.instruments.text_stats import distinct_n, repeated_share, repetition


def test_repeated_share_by_hand():
    """"waves waves waves": bigrams (w w), (w w) → 1 − 1/2 = ½; unigrams w, w, w → 1 − 1/3 = ⅔.
    "a b a b": bigrams ab, ba, ab → 1 − 2/3 = ⅓. One word has no bigram → None."""
    assert repeated_share("waves waves waves", 2) == pytest.approx(0.5)
    assert repeated_share("waves waves waves", 1) == pytest.approx(2 / 3)
    assert repeated_share("a b a b", 2) == pytest.approx(1 / 3)
    assert repeated_share("the sea is blue", 2) == 0.0
    assert repeated_share("alone", 2) is None


def test_distinct_2_pools_responses():
    """["a b c", "a b d"]: bigrams ab, bc, ab, bd → 3 distinct of 4 = 0.75 (ab repeats across responses)."""
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(0.75)
    assert distinct_n(["x"], 2) is None


def test_repetition_averages_over_responses_with_enough_words():
    """rep-2 of "w w w" = ½, of "a b c" = 0, "z" is skipped: mean ¼ over n = 2; distinct-2 pooled: bigrams
    ww, ww, ab, bc → 3/4."""
    res = repetition(["w w w", "a b c", "z"], 2)
    assert res["value"] == pytest.approx(0.25) and res["n"] == 2 and res["distinct_2"] == pytest.approx(0.75)


def test_pearson():
    """y = 2x + 1 → r = 1; y = −x → r = −1; a constant side has no correlation (None)."""
    xs = [1.0, 2.0, 3.0, 4.0]
    assert pearson(xs, [2 * x + 1 for x in xs]) == pytest.approx(1.0)
    assert pearson(xs, [-x for x in xs]) == pytest.approx(-1.0)
    assert pearson(xs, [5.0] * 4) is None


def test_proportion_carries_n_and_wilson():
    res = proportion([True, False, True, True])
    assert res["value"] == 0.75 and res["n"] == 4 and res["ci95"] == list(wilson_interval(3, 4))
    assert proportion([])["value"] is None


def test_ece_of_a_perfectly_calibrated_set_is_zero():
    """Ten pairs at Δ = ln 4 (p = σ(Δ) = 0.8): 8 with the chosen side ahead (right), 2 reversed (p = 0.2,
    confidence 0.8, wrong) → accuracy 0.8 = confidence 0.8. Five at Δ = ln 1.5 (p = 0.6): 3 right, 2 wrong
    → 0.6 = 0.6. Every bin has accuracy = confidence, so ECE = 0."""
    d8, d6 = math.log(4.0), math.log(1.5)
    margins = [d8] * 8 + [-d8] * 2 + [d6] * 3 + [-d6] * 2
    assert calibration_error(margins, [0.0] * len(margins)) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_overconfident_set():
    """All ten pairs at p = 0.8 but only half right: |0.5 − 0.8| = 0.3."""
    d = math.log(4.0)
    assert calibration_error([d] * 5 + [-d] * 5, [0.0] * 10) == pytest.approx(0.3)
