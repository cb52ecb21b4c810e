"""The length-controlled win-rate (Dubois et al. 2024): logistic fit of the preference on the length
difference, reported at equal length. Expected numbers by hand or from the model the data were drawn from."""

import math
import random

import pytest

from tether.instruments.length_controlled import fit_logistic, length_controlled_win_rate, length_features


def _logit(p):
    return math.log(p / (1 - p))


def test_equal_lengths_give_the_raw_win_rate():
    """All Δ = 0 → x = 0, so σ(b0) = the mean preference (1 + 1 + 1 + 0)/4 = 0.75; the slope stays 0."""
    res = length_controlled_win_rate([1, 1, 1, 0], [10, 20, 30, 40], [10, 20, 30, 40])
    assert res["value"] == pytest.approx(0.75, abs=1e-6) and res["slope"] == pytest.approx(0.0, abs=1e-9)


def test_two_length_groups_by_hand():
    """Half the prompts have the policy 30 characters longer (x = tanh(1): Δ = ±30, sd 30), half 30 shorter
    (x = −tanh(1)). Longer: preferences 0.8 on average (4 of 5 wins); shorter: 0.5 (tie on average, wins
    1 0 1 0 ½). Two groups, two parameters: the fit is saturated, σ(b0 ± b1·t) = group means, so
    b0 = (logit 0.8 + logit 0.5)/2 = (ln 4 + 0)/2 = ln 2 → LC win-rate σ(ln 2) = 2/3, while the raw one is
    (4 + 2.5)/10 = 0.65; b1·tanh(1) = (ln 4 − 0)/2 = ln 2."""
    prefs = [1, 1, 1, 1, 0] + [1, 0, 1, 0, 0.5]
    pol = [130] * 5 + [70] * 5
    res = length_controlled_win_rate(prefs, pol, [100] * 10)
    assert res["value"] == pytest.approx(2 / 3, abs=1e-6)
    assert res["slope"] * math.tanh(1) == pytest.approx(math.log(2), abs=1e-6)
    assert res["n"] == 10 and res["length_unit"] == "characters" and "unit" not in res


def test_recovers_the_generating_model_exactly_from_its_probabilities():
    """Targets p_i = σ(b0 + b1·x_i) themselves (a soft judge that is the model): the score equations are
    zero at the true (b0, b1) = (−0.4, 1.7), so Newton lands there."""
    rng = random.Random(0)
    pol = [rng.randint(20, 400) for _ in range(300)]
    base = [rng.randint(20, 400) for _ in range(300)]
    xs = length_features(pol, base)
    prefs = [1 / (1 + math.exp(-(-0.4 + 1.7 * x))) for x in xs]
    b0, b1, _ = fit_logistic(prefs, xs)
    assert b0 == pytest.approx(-0.4, abs=1e-5) and b1 == pytest.approx(1.7, abs=1e-5)
    res = length_controlled_win_rate(prefs, pol, base)
    assert res["value"] == pytest.approx(1 / (1 + math.exp(0.4)), abs=1e-6)


def test_a_length_biased_judge_of_an_equal_policy():
    """Hard 0/1 preferences drawn from σ(0 + 2.5·x) with the policy usually longer: the judge only likes
    length, so the raw win-rate is well above ½ but the LC one's interval contains ½ and its verdict is
    'no measurable difference' (seeded draws: raw 0.7275, LC 0.483 [0.399, 0.564], slope 2.36)."""
    rng = random.Random(1)
    pol = [rng.randint(100, 500) for _ in range(400)]
    base = [rng.randint(20, 300) for _ in range(400)]
    xs = length_features(pol, base)
    prefs = [1.0 if rng.random() < 1 / (1 + math.exp(-2.5 * x)) else 0.0 for x in xs]
    raw = sum(prefs) / len(prefs)
    res = length_controlled_win_rate(prefs, pol, base)
    assert raw > 0.7
    lo, hi = res["ci95"]
    assert lo < 0.5 < hi and res["verdict"] == "no measurable difference" and res["pass"] is True
    assert res["slope"] == pytest.approx(2.5, abs=0.6)


def test_one_side_always_winning_stays_finite():
    """Every preference 1: no finite maximum; the ridge keeps b0 finite and σ(b0) close to 1."""
    res = length_controlled_win_rate([1.0] * 20, list(range(20)), [5] * 20)
    assert 0.99 < res["value"] <= 1.0 and math.isfinite(res["slope"]) and res["verdict"] == "better"


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        length_controlled_win_rate([1.5], [1], [2])
    with pytest.raises(ValueError):
        length_controlled_win_rate([1, 0], [1], [2])


def test_interval_at_equal_lengths_is_the_binomial_likelihood_ratio_interval():
    """x = 0 for all, 5 wins of 10: ℓ(π) = 5 ln π + 5 ln(1 − π), ℓ(½) = 10 ln ½. The interval's ends solve
    2·(10 ln ½ − 5 ln π(1 − π)) = z² = 3.841459 → π(1 − π) = ¼·exp(−z²/10) = ¼·0.681032 = 0.170258 →
    π = (1 ∓ sqrt(1 − 0.681032))/2 = (1 ∓ 0.564772)/2 = 0.217614, 0.782386."""
    res = length_controlled_win_rate([1, 0] * 5, [50] * 10, [50] * 10)
    lo, hi = res["ci95"]
    assert lo == pytest.approx(0.217614, abs=1e-5) and hi == pytest.approx(0.782386, abs=1e-5)
    assert res["verdict"] == "no measurable difference"
