"""Reward-model quality on held-out preference pairs: pairwise accuracy and calibration."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PASS_ACCURACY = 0.65  # the lesson's criterion: a reward model below this is not worth optimising against


def calibration_error(
    chosen_scores: Sequence[float], rejected_scores: Sequence[float], bins: int = 10
) -> float:
    """Expected calibration error of the Bradley-Terry probability σ(r_w − r_l) (Guo et al. 2017, eq. 3).

    Each pair predicts the side with the higher score, with confidence max(p, 1 − p), p = σ(r_w − r_l);
    the prediction is right when that side is the labelled chosen one. ECE = Σ_bins (n_b/n)·|acc_b − conf_b|
    over equal-width confidence bins on [0.5, 1].
    """
    chosen = torch.tensor(chosen_scores, dtype=torch.float64)  # (N,)
    rejected = torch.tensor(rejected_scores, dtype=torch.float64)  # (N,)
    p = torch.sigmoid(chosen - rejected)  # (N,)
    conf = torch.maximum(p, 1 - p)  # (N,)
    correct = (p > 0.5).double()  # a tie (p = ½) predicts nothing and counts as wrong
    edges = torch.linspace(0.5, 1.0, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges[1:-1], right=True)  # (N,) bin of each pair
    total = 0.0
    for b in range(bins):
        inside = idx == b
        if inside.any():
            total += float(inside.double().mean()) * abs(float(correct[inside].mean() - conf[inside].mean()))
    return total


def rm_accuracy(
    chosen_scores: Sequence[float], rejected_scores: Sequence[float], threshold: float = PASS_ACCURACY
) -> dict:
    """{"value", "n", "threshold", "pass", "ece"}: share of pairs with r_w > r_l (ties are wrong)."""
    n = len(chosen_scores)
    if n == 0 or n != len(rejected_scores):
        raise ValueError("rm_accuracy needs equally many (≥ 1) chosen and rejected scores")
    value = sum(c > r for c, r in zip(chosen_scores, rejected_scores, strict=True)) / n
    return {
        "value": value,
        "n": n,
        "threshold": threshold,
        "pass": value >= threshold,
        "ece": calibration_error(chosen_scores, rejected_scores),
    }
