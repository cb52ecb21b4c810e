"""Advantage estimators: GAE for PPO, group baselines for GRPO and RLOO, and masked whitening.

All of them are computed without gradient: advantages and returns are targets, not functions to train.
"""

from __future__ import annotations

import torch

from tether.losses._reduce import masked_mean, masked_var, upcast


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, sec. 3): A_t = Σ_l (γλ)^l δ_{t+l} with
    δ_t = r_t + γ·V_{t+1} − V_t, over the response tokens of each row; returns = A + V.

    rewards, values, mask: (B, T) → advantages, returns: (B, T), 0 outside the mask. The steps are the
    positions where the mask is 1, in order; positions with mask 0 are skipped (rewards and values there are
    ignored), so prompt and left or right padding need no special care. The value after the last response
    token is 0: the end of a response, by EOS or by truncation, ends the episode.
    """
    with torch.no_grad():
        m = mask.bool()
        rewards, values = upcast(rewards), upcast(values)
        next_value = torch.zeros_like(values[:, 0])  # (B,) V of the next response token, 0 after the last
        next_adv = torch.zeros_like(values[:, 0])  # (B,) A of the next response token
        advantages = []
        for t in reversed(range(values.shape[1])):
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            adv = delta + gamma * lam * next_adv
            next_adv = torch.where(m[:, t], adv, next_adv)
            next_value = torch.where(m[:, t], values[:, t], next_value)
            advantages.append(torch.where(m[:, t], adv, 0.0))
        advantages = torch.stack(advantages[::-1], dim=1)  # (B, T)
        returns = torch.where(m, advantages + values, 0.0)
    return advantages, returns


def whitening_scale(var: torch.Tensor) -> torch.Tensor:
    """1 / sqrt(σ² + 1e-8): what `whiten` multiplies the centred values by."""
    return torch.rsqrt(var + 1e-8)


def whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, moments: tuple | None = None
) -> torch.Tensor:
    """(x − μ) / sqrt(σ² + 1e-8) with μ, σ² the masked mean and population variance over the whole batch.

    x, mask: (B, T) → (B, T), 0 outside the mask. With shift_mean=False the mean is added back: the spread is
    normalised and the mean kept (Ziegler et al. 2019's `whiten`). Used on advantages before the PPO loss.
    moments: (μ, σ²) computed elsewhere, e.g. over the batches of all processes, instead of this batch's.
    """
    with torch.no_grad():
        x = upcast(x)
        mean, var = moments if moments is not None else (masked_mean(x, mask), masked_var(x, mask))
        out = (x - mean) * whitening_scale(var)
        if not shift_mean:
            out = out + mean
        return torch.where(mask.bool(), out, 0.0)


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) → (B / G, G), checking that the G samples of each prompt can be contiguous groups."""
    if group_size < 2:
        raise ValueError(
            f"group_size must be at least 2 (a group baseline needs other samples), got {group_size}"
        )
    if rewards.dim() != 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"rewards must be (B,) with B a multiple of group_size={group_size}, got {tuple(rewards.shape)}"
        )
    return upcast(rewards).view(-1, group_size)


def _std_group(r, flat):
    return r.std(dim=1, keepdim=True)


def _std_batch(r, flat):
    return flat.std()


def _std_none(r, flat):
    return None


# How `grpo_advantages` scales the centred rewards: by each group's std (GRPO, Shao et al. 2024 sec. 4.1.2),
# by the whole batch's std, or not at all (Dr. GRPO, Liu et al. 2025).
GRPO_SCALES = {"group": _std_group, "batch": _std_batch, "none": _std_none}


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """Group-relative advantages A_i = (r_i − mean(group)) / (std + 1e-4): (B,) → (B,).

    rewards: (B,), the G = group_size samples of each prompt contiguous. Outcome supervision of GRPO
    (Shao et al. 2024, sec. 4.1.2). std is `torch.std`'s unbiased one (divides by n − 1) of the group
    (`scale="group"`) or of the whole batch (`"batch"`; the mean is still the group's); `"none"` only
    centres (Dr. GRPO, Liu et al. 2025). A group of equal rewards gets exactly 0 (no learning signal).
    group_size < 2 is a ValueError.
    """
    if scale not in GRPO_SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(GRPO_SCALES)}")
    with torch.no_grad():
        r = _groups(rewards, group_size)  # (B / G, G)
        centred = r - r.mean(dim=1, keepdim=True)
        std = GRPO_SCALES[scale](r, r.flatten())
        if std is not None:
            centred = centred / (std + 1e-4)
        return _zero_where_equal(centred, r).flatten()


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out: A_i = r_i − mean_{j ≠ i} r_j within each prompt's group: (B,) → (B,).

    rewards: (B,), the G = group_size samples of each prompt contiguous; the caller subtracts the KL penalty
    first (Ahmadian et al. 2024, RLOO with the sequence reward r − β·KL). Equals G/(G − 1)·(r_i − mean).
    """
    with torch.no_grad():
        r = _groups(rewards, group_size)  # (B / G, G)
        others = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
        return _zero_where_equal(r - others, r).flatten()


def _zero_where_equal(advantages: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Exactly 0 for groups whose rewards are all equal: a mean of equal floats can differ from them in the
    last bit (seven 0.1s average to 0.1 + 7e-9 in float32), which the std scaling would blow up to ~1e-4."""
    equal = (r == r[:, :1]).all(dim=1, keepdim=True)  # (B / G, 1)
    return torch.where(equal, torch.zeros_like(advantages), advantages)
