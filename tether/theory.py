"""The variational view of KL-regularised RLHF over a finite set of responses.

For one prompt with responses y_1..y_N, a reference ("prior") policy p and a reward r, the objective

    J(π) = E_π[r] − β·KL(π ‖ p)

is maximised by the Gibbs policy  π*(y) = p(y)·exp(r(y)/β) / Z,  Z = Σ_y p(y)·exp(r(y)/β)
(Ziegler et al. 2019; Rafailov et al. 2023, eq. 4), and its optimal value is the soft value β·log Z.
β → 0 gives the reward maximiser, β → ∞ gives the prior back.

Everything is computed in float64. To stay accurate for very small and very large β we never form
exp(r/β) directly: with c = max r over the prior's support,

    log Z = c/β + s,   s = log Σ p·exp((r − c)/β),   β·log Z = c + β·s,

and when every |r − c|/β < 1 (large β), s = log1p(Σ p·expm1((r − c)/β)), which keeps the tiny
differences from the prior that a plain logsumexp would round away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

PRIOR_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class OptimalPolicy:
    """The closed-form optimum for one β. `policy` is a float64 tensor (N,); the rest are floats."""

    beta: float
    policy: torch.Tensor  # (N,) π*(y) = p(y)·exp(r(y)/β)/Z
    log_partition: float  # log Z (±inf at β = 0 unless max r = 0)
    soft_value: float  # β·log Z, the optimal value of E[r] − β·KL
    expected_reward: float  # E_π*[r]
    kl_to_prior: float  # KL(π* ‖ p) in nats
    objective: float  # E_π*[r] − β·KL(π*‖p); equals soft_value

    def as_dict(self) -> dict:
        return {
            "beta": self.beta,
            "policy": self.policy.tolist(),
            "log_partition": self.log_partition,
            "soft_value": self.soft_value,
            "expected_reward": self.expected_reward,
            "kl_to_prior": self.kl_to_prior,
            "objective": self.objective,
        }


def _as_vector(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to(dtype=torch.float64, device="cpu")
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be a list of numbers ({e})") from None
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of numbers, got shape {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    return t


def _check_inputs(prior, reward, beta, normalize: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    p = _as_vector(prior, "prior")
    r = _as_vector(reward, "reward")
    if p.numel() != r.numel():
        raise ValueError(f"prior has {p.numel()} entries but reward has {r.numel()}")
    if torch.isinf(p).any() or (p < 0).any():
        raise ValueError("prior must be finite and non-negative")
    if torch.isinf(r).any():
        raise ValueError("reward must be finite")
    total = float(p.sum())
    if total <= 0:
        raise ValueError("prior sums to 0")
    if abs(total - 1.0) > PRIOR_SUM_TOLERANCE and not normalize:
        raise ValueError(
            f"prior sums to {total:.8g}, not 1 (±{PRIOR_SUM_TOLERANCE:g}); "
            "pass --normalize (normalize=True) to rescale it"
        )
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a number, got {beta!r}") from None
    if math.isnan(b) or b < 0:
        raise ValueError(f"beta must be >= 0 (0 and inf allowed), got {beta!r}")
    return p / total, r, b


def _kl(policy: torch.Tensor, log_ratio: torch.Tensor) -> float:
    """Σ π·log(π/p) over the support of π (terms with π = 0 contribute 0)."""
    on = policy > 0
    return max(0.0, float((policy[on] * log_ratio[on]).sum()))  # ≥ 0; rounding can dip below at huge β


def optimal_policy(prior, reward, beta, normalize: bool = False) -> OptimalPolicy:
    """π* ∝ prior·exp(reward/β) over N responses, with its partition function, value and KL.

    Args:
        prior: (N,) reference probabilities p(y) (a tensor, list or numpy array); must sum to 1 (±1e-6)
            unless `normalize` is True.
        reward: (N,) finite rewards r(y).
        beta: KL coefficient β ≥ 0; 0 and inf give the limits.

    β = 0 puts all mass on the highest reward among responses with p > 0, ties split in proportion to p
    (the limit of π* as β → 0); then β·log Z = max r and KL = −log p(best set). β = inf returns the prior,
    with β·log Z = E_p[r] (its limit) and KL = 0. Raises ValueError on bad input (pure math: this module
    imports nothing from tether, so not TetherError; the CLI turns it into one line).
    """
    p, r, b = _check_inputs(prior, reward, beta, normalize)
    support = p > 0
    c = float(r[support].max())
    log_p = torch.where(support, p.log(), torch.full_like(p, -math.inf))  # (N,)

    if b == 0:
        best = support & (r == c)
        mass = float(p[best].sum())
        policy = torch.where(best, p / mass, torch.zeros_like(p))
        log_partition = math.log(mass) if c == 0 else math.copysign(math.inf, c)
        soft_value = c
        kl = -math.log(mass)
    elif math.isinf(b):
        policy = p.clone()
        log_partition = 0.0
        soft_value = float((p * r).sum())
        kl = 0.0
    else:
        x = torch.where(support, (r - c) / b, torch.zeros_like(r))  # (N,) ≤ 0 on the support
        if float(x[support].min()) > -1.0:
            s = math.log1p(float((p * torch.expm1(x)).sum()))
        else:
            s = float(torch.logsumexp(log_p + x, dim=0))
        log_ratio = x - s  # (N,) log(π*/p) on the support
        policy = torch.where(support, p * log_ratio.exp(), torch.zeros_like(p))
        log_partition = c / b + s
        soft_value = c + b * s
        kl = _kl(policy, log_ratio)

    expected = float((policy * r).sum())
    # β·KL → 0 at both limits (at β → ∞, KL shrinks like 1/β²), so the objective is E[r] there.
    objective = expected if (b == 0 or math.isinf(b)) else expected - b * kl
    return OptimalPolicy(
        beta=b,
        policy=policy,
        log_partition=log_partition,
        soft_value=soft_value,
        expected_reward=expected,
        kl_to_prior=kl,
        objective=objective,
    )


def dpo_implicit_reward(policy, prior, beta) -> torch.Tensor:
    """β·log(π(y)/π_ref(y)), (N,) float64: the reward DPO reads off a policy (Rafailov et al. 2023, eq. 5).

    At π = π* it equals r(y) − β·log Z: the true reward up to a per-prompt constant. Responses with
    π_ref = 0 give NaN or ±inf (the ratio is undefined there).
    """
    pi = _as_vector(policy, "policy")
    ref = _as_vector(prior, "prior")
    if pi.numel() != ref.numel():
        raise ValueError(f"policy has {pi.numel()} entries but prior has {ref.numel()}")
    b = float(beta)
    if not (b > 0 and math.isfinite(b)):
        raise ValueError(f"beta must be finite and > 0, got {beta!r}")
    return b * (pi.log() - ref.log())


def optimal_policies(prior, reward, betas: Sequence, normalize: bool = False) -> list[OptimalPolicy]:
    """`optimal_policy` for each β in `betas` (one prompt, several KL coefficients)."""
    return [optimal_policy(prior, reward, b, normalize=normalize) for b in betas]
