"""Preference losses: the Bradley-Terry reward-model loss and the DPO family.

Notation: y_w is the chosen response, y_l the rejected one, ℓ(x) = −log σ(x) = softplus(−x).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tether.losses._reduce import upcast


def _nll_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """ℓ(x) = −log σ(x), computed stably as softplus(−x)."""
    return F.softplus(-x)


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reward-model loss: mean over pairs of −log σ(Δ), Δ = r_w − r_l − margin.

    Bradley-Terry model P(y_w ≻ y_l) = σ(r_w − r_l) as used for the InstructGPT reward model
    (Ouyang et al. 2022, eq. 1). chosen_rewards, rejected_rewards: (B,); margin: (B,) or scalar, e.g. the
    annotators' preference strength (Llama 2), None = 0. With soft `labels` p (B,), the probability that the
    chosen response is preferred (e.g. an AI judge), each term is the cross-entropy
    −[p·log σ(Δ) + (1 − p)·log σ(−Δ)]. `center_coef` adds center_coef·mean((r_w + r_l)²), which keeps the
    rewards near zero (the loss only sees differences).

    Metrics (detached 0-dim tensors): accuracy (fraction with r_w > r_l, ties count as wrong), margin
    (mean r_w − r_l), chosen_reward and rejected_reward (means).
    """
    chosen_rewards, rejected_rewards = upcast(chosen_rewards), upcast(rejected_rewards)
    diff = chosen_rewards - rejected_rewards  # (B,)
    delta = diff if margin is None else diff - margin  # (B,)
    if labels is None:
        per_pair = _nll_sigmoid(delta)
    else:
        p = labels.to(delta.dtype)
        per_pair = p * _nll_sigmoid(delta) + (1 - p) * _nll_sigmoid(-delta)
    loss = per_pair.mean()
    if center_coef:
        loss = loss + center_coef * ((chosen_rewards + rejected_rewards) ** 2).mean()
    with torch.no_grad():
        metrics = {
            "accuracy": (diff > 0).float().mean(),
            "margin": diff.mean(),
            "chosen_reward": chosen_rewards.mean(),
            "rejected_reward": rejected_rewards.mean(),
        }
    return loss, metrics


# --- DPO family ------------------------------------------------------------------------------------------
# Each entry maps h = (logπ − logπ_ref)(y_w) − (logπ − logπ_ref)(y_l), (B,), to per-pair losses, (B,).
# `p` is the per-pair probability that y_w is preferred ((B,) tensor or float): 1 − label_smoothing, or
# the soft labels. `eps` is label_smoothing.


def _dpo_sigmoid(h, beta, p, eps):
    """ℓ(βh) (Rafailov et al. 2023, eq. 7); with p < 1, p·ℓ(βh) + (1 − p)·ℓ(−βh) (conservative DPO)."""
    return p * _nll_sigmoid(beta * h) + (1 - p) * _nll_sigmoid(-beta * h)


def _dpo_robust(h, beta, p, eps):
    """[(1 − ε)·ℓ(βh) − ε·ℓ(−βh)] / (1 − 2ε): unbiased under label flips at rate ε (Chowdhury et al. 2024)."""
    return ((1 - eps) * _nll_sigmoid(beta * h) - eps * _nll_sigmoid(-beta * h)) / (1 - 2 * eps)


def _dpo_hinge(h, beta, p, eps):
    """relu(1 − βh): the hinge loss of SLiC (Zhao et al. 2023) on the DPO log-ratio."""
    return torch.relu(1 - beta * h)


def _dpo_ipo(h, beta, p, eps):
    """(h − 1/(2β))²: IPO (Azar et al. 2024), regressing h onto 1/(2τ) with τ = β."""
    return (h - 1 / (2 * beta)) ** 2


DPO_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "sigmoid": _dpo_sigmoid,
    "robust": _dpo_robust,
    "hinge": _dpo_hinge,
    "ipo": _dpo_ipo,
}

# How the trainer must reduce per-token log-probs into the sequence log-probs that `dpo_loss` takes:
# "sum" over response tokens (log π(y|x) itself), or "mean" over response tokens (length-averaged, so that
# IPO's target 1/(2β) is on the scale of a per-token log-ratio instead of growing with the response length).
DPO_LOGPROB_REDUCTION: dict[str, str] = {"sigmoid": "sum", "robust": "sum", "hinge": "sum", "ipo": "mean"}

# Loss types that accept soft labels / label smoothing. `robust` uses ε as a known flip rate, not a soft
# label, so it takes label_smoothing but not labels.
_TAKES_SMOOTHING = {"sigmoid", "robust"}
_TAKES_LABELS = {"sigmoid"}


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Direct preference optimisation and its variants, mean over the batch.

    All four log-prob inputs: (B,) sequence log-probs of the response given the prompt, reduced as
    `DPO_LOGPROB_REDUCTION[loss_type]` says (sums, except length-averaged for `ipo`). With
    h = (logπ − logπ_ref)(y_w) − (logπ − logπ_ref)(y_l) and ℓ(x) = −log σ(x):

    - `sigmoid`: ℓ(βh) (Rafailov et al. 2023, eq. 7); with `label_smoothing` ε or per-pair soft `labels` p
      (B,): p·ℓ(βh) + (1 − p)·ℓ(−βh), p = 1 − ε (conservative DPO).
    - `robust`: [(1 − ε)·ℓ(βh) − ε·ℓ(−βh)] / (1 − 2ε) (Chowdhury et al. 2024), ε < 1/2.
    - `hinge`: relu(1 − βh).
    - `ipo`: (h − 1/(2β))² (Azar et al. 2024).

    Metrics (detached 0-dim tensors, batch means): chosen_reward and rejected_reward, the implicit rewards
    β·(logπ − logπ_ref); margin (chosen − rejected); accuracy (fraction with chosen > rejected).
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {sorted(DPO_LOSSES)}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type not in _TAKES_SMOOTHING:
        raise ValueError(f"loss_type {loss_type!r} does not take label_smoothing")
    if labels is not None and loss_type not in _TAKES_LABELS:
        raise ValueError(f"loss_type {loss_type!r} does not take soft labels")
    if labels is not None and label_smoothing:
        raise ValueError("give either labels or label_smoothing, not both")

    chosen_ratio = upcast(policy_chosen_logps) - upcast(ref_chosen_logps)  # (B,)
    rejected_ratio = upcast(policy_rejected_logps) - upcast(ref_rejected_logps)  # (B,)
    h = chosen_ratio - rejected_ratio  # (B,)
    p = labels.to(h.dtype) if labels is not None else 1.0 - label_smoothing
    loss = DPO_LOSSES[loss_type](h, beta, p, label_smoothing).mean()

    with torch.no_grad():
        chosen_reward = beta * chosen_ratio  # (B,)
        rejected_reward = beta * rejected_ratio  # (B,)
        metrics = {
            "chosen_reward": chosen_reward.mean(),
            "rejected_reward": rejected_reward.mean(),
            "margin": (chosen_reward - rejected_reward).mean(),
            "accuracy": (chosen_reward > rejected_reward).float().mean(),
        }
    return loss, metrics
