"""Instruments' statistics, judges, win-rate, RM accuracy/calibration and KL-from-base."""

import math

import pytest
import torch

from tether.instruments import (
    ScoreJudge,
    calibration_error,
    kl_from_base,
    mean_stderr,
    rm_accuracy,
    sequence_kl,
    wilson_interval,
    win_rate,
)
from tether.models import build_tiny_llama
from tether.rollout import sample


def test_wilson_half():
    """5 of 10, z = 1.959964: z²/n = 0.384146, denom = 1.384146, centre = (0.5 + 0.192073)/1.384146 = 0.5,
    half = 1.959964·sqrt(0.025 + 3.841459/400)/1.384146 = 1.959964·0.186020/1.384146 = 0.263407."""
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.5 - 0.263407, abs=1e-6) and hi == pytest.approx(0.5 + 0.263407, abs=1e-6)


def test_wilson_zero_successes():
    """0 of 10: centre = 0.192073/1.384146 = 0.138766, half = 1.959964·sqrt(0.00960365)/1.384146 = 0.138766,
    so the interval is [0, 0.277533]."""
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.277533, abs=1e-6)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mean_stderr():
    """[1, 2, 3, 4]: mean 2.5, s² = (2.25 + 0.25 + 0.25 + 2.25)/3 = 5/3, se = sqrt(5/3/4) = 0.645497."""
    mean, se = mean_stderr([1, 2, 3, 4])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 12))


def _fixed_scores(table):
    return lambda prompts, responses: [table[r] for r in responses]


def test_win_rate_counts_ties_half():
    """Policy vs base scores (3 vs 1, 1 vs 2, 2 vs 2, 2 vs 0): wins 1 + 0 + ½ + 1 = 2.5 of 4 = 0.625."""
    judge = ScoreJudge(_fixed_scores({"a": 3, "b": 1, "c": 2, "d": 0}), name="fixed")
    res = win_rate(judge, ["p"] * 4, ["a", "b", "c", "c"], ["b", "c", "c", "d"])
    assert res["value"] == 0.625 and res["n"] == 4 and res["judge"] == "fixed" and res["pass"] is True
    lo, hi = wilson_interval(2.5, 4)
    assert res["ci95"] == [lo, hi]


def test_soft_judge_is_bradley_terry():
    """Scores 1 and 0: P(first) = σ(1) = 0.731059."""
    judge = ScoreJudge(_fixed_scores({"x": 1.0, "y": 0.0}), name="rm", soft=True)
    assert judge.prefer(["p"], ["x"], ["y"])[0] == pytest.approx(1 / (1 + math.exp(-1)))


def test_rm_accuracy_ties_are_wrong():
    """chosen (2, 1, 0) vs rejected (1, 1, 1): only the first pair is right → 1/3, below 0.65."""
    res = rm_accuracy([2.0, 1.0, 0.0], [1.0, 1.0, 1.0])
    assert res["value"] == pytest.approx(1 / 3) and res["n"] == 3 and res["pass"] is False


def test_calibration_error_by_hand():
    """Δ = ln(18/7) → p = 0.72 (right, conf 0.72); Δ = −ln(18/7) → p = 0.28 (wrong, conf 0.72); Δ = ln 19 →
    p = 0.95 (right, conf 0.95). Bin [0.70, 0.75): acc ½, conf 0.72 → |0.5 − 0.72| = 0.22 with weight 2/3;
    bin [0.95, 1]: acc 1, conf 0.95 → 0.05 with weight 1/3. ECE = 0.146667 + 0.016667 = 0.163333."""
    d = math.log(18 / 7)
    assert calibration_error([d, 0.0, math.log(19)], [0.0, d, 0.0]) == pytest.approx(0.49 / 3, abs=1e-9)


def _two_models():
    return build_tiny_llama(12, hidden_size=16, num_layers=1, num_heads=2, seed=1), build_tiny_llama(
        12, hidden_size=16, num_layers=1, num_heads=2, seed=2
    )


@torch.no_grad()
def test_sequence_kl_one_token_equals_exact_kl():
    """With one sampled token the sequence KL is the KL of the two first-token distributions, computed here
    independently from each model's logits at the prompt's last position."""
    policy, base = _two_models()
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 4]])  # the first row is left-padded
    mask = (ids != 0).long()
    r = sample(
        policy,
        ids,
        mask,
        max_new_tokens=1,
        eos_token_id=3,
        pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    closed, _ = sequence_kl(policy, base, r)
    expected = []
    for row, m in zip(ids, mask, strict=True):
        real = row[m.bool()][None]
        lp = torch.log_softmax(policy(input_ids=real).logits[0, -1], -1)
        lb = torch.log_softmax(base(input_ids=real).logits[0, -1], -1)
        expected.append(float((lp.exp() * (lp - lb)).sum()))
    assert closed.tolist() == pytest.approx(expected, abs=1e-5)


def test_kl_from_base_zero_for_same_model_and_positive_otherwise():
    policy, base = _two_models()
    ids = torch.tensor([[5, 6, 7]] * 4)
    r = sample(
        policy,
        ids,
        torch.ones_like(ids),
        max_new_tokens=4,
        eos_token_id=3,
        pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    same = kl_from_base(policy, policy, [r])
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and same["k1"] == pytest.approx(0.0, abs=1e-6)
    diff = kl_from_base(policy, base, [r])
    assert diff["value"] > 0 and diff["n"] == 4 and diff["unit"] == "nats"
    # the mean of the four sequence KLs and its standard error s/√4 (s with n − 1, torch's default)
    closed, k1 = sequence_kl(policy, base, r)
    assert diff["value"] == pytest.approx(float(closed.mean()), rel=1e-6)
    assert diff["stderr"] == pytest.approx(float(closed.std()) / 2, rel=1e-5) and diff["stderr"] > 0
    assert diff["k1"] == pytest.approx(float(k1.mean()), rel=1e-6, abs=1e-7)
