"""The pieces GRPO and RLOO share (their iterations: tether.trainers.grpo and tether.trainers.rloo): G
responses per prompt, contiguous in the batch; a sequence reward per response; one advantage per response
from its group's rewards; the clipped surrogate with one advantage per response.

    exp = make_group_experience(policy, ref, rollout, scores, beta, advantage_fn, "k1", chunk)
    loss, metrics = group_minibatch_loss(policy, ref, loss_args, exp.rows(idx).trimmed(), num_tokens, n_seq)

At sampling time: old log-probs π_old(y_t), and, when there is a reference model, π_ref(y_t) and a per-token
KL estimate (`score_rollout`). Each response's reward is its score minus β·Σ_t kl_t when the KL is in the
reward (RLOO, GRPO's kl_in_reward; `kl_shaped_rewards` summed over the response), else the score. The
advantage function (`grpo_advantages`, `rloo_advantages`) turns the rewards of each group into one advantage
per response, and `grpo_loss` is the clipped surrogate (with β·k3 inside when the KL is in the loss).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from tether.losses import REWARD_KL, grpo_loss, kl_shaped_rewards, masked_mean, token_logprobs
from tether.rollout import Rollout
from tether.trainers.experience import Batch, exact_kl_to, policy_logits, score_rollout, token_entropy


@dataclasses.dataclass
class GroupExperience(Batch):
    """One iteration's responses, G per prompt (contiguous), and what the update needs."""

    rollout: Rollout  # prompt and response tokens, masks, sampling temperature
    scores: torch.Tensor  # (B,) the task score (after normalisation and the no-EOS penalty)
    rewards: torch.Tensor  # (B,) score − β·Σ_t kl_t when the KL is in the reward, else the score
    advantages: torch.Tensor  # (B,) one per response, from its group's rewards
    old_logprobs: torch.Tensor  # (B, R) log π_old(y_t | s_t), the policy that sampled
    ref_logprobs: torch.Tensor | None = None  # (B, R) log π_ref(y_t | s_t); None without a reference
    kl: torch.Tensor | None = None  # (B, R) per-token KL estimate at sampling time; None without a reference
    kl_loss_coef: float = 0.0  # coefficient of the exact per-position KL in the loss (token_kl: β)


@dataclasses.dataclass
class GroupLoss:
    """The arguments of `grpo_loss` that stay fixed through a run."""

    beta: float  # coefficient of k3 in the loss (0 when the KL is in the reward)
    eps_low: float
    eps_high: float
    aggregation: str  # a key of tether.losses.policy_gradient.GRPO_AGGREGATIONS
    max_tokens: int | None = None  # constant_norm's denominator per response


def make_group_experience(
    policy,
    ref,
    rollout: Rollout,
    scores: torch.Tensor,
    beta_in_reward: float,
    advantage_fn: Callable[[torch.Tensor], torch.Tensor],
    estimator: str,
    chunk: int,
    sampled_logprobs: bool = False,
) -> GroupExperience:
    """Score a rollout with the policy (and the reference, when not None; `chunk` rows per forward pass;
    π_old's log-probs from the sampler when `sampled_logprobs`, as `score_rollout` says), put β·KL in the
    rewards when beta_in_reward ≠ 0 (`estimator`'s reward term, and its loss term's coefficient β when it
    has one), and compute each response's advantage."""
    s = score_rollout(policy, ref, None, rollout, estimator, chunk, sampled_logprobs)
    scores = scores.to(s["old_logprobs"].device)
    rewards, kl_loss_coef = scores, 0.0
    if beta_in_reward:
        if ref is None:
            raise ValueError("a KL penalty in the reward needs the reference model")
        rewards = kl_shaped_rewards(scores, s["kl"], rollout.response_mask, beta_in_reward).sum(-1)  # (B,)
        kl_loss_coef = beta_in_reward if REWARD_KL[estimator].in_loss else 0.0
    return GroupExperience(
        rollout,
        scores,
        rewards,
        advantage_fn(rewards),
        s["old_logprobs"],
        s.get("ref_logprobs"),
        s.get("kl"),
        kl_loss_coef,
    )


def equal_reward_share(scores: torch.Tensor, group_size: int) -> float:
    """Fraction of groups (G contiguous scores) whose scores are all equal: they carry no learning signal."""
    groups = scores.view(-1, group_size)
    return float((groups == groups[:, :1]).all(dim=1).float().mean())


def group_minibatch_loss(
    policy,
    ref,
    args: GroupLoss,
    exp: GroupExperience,
    num_tokens: torch.Tensor | float | None = None,
    num_sequences: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward the policy (and the reference, when exp.kl_loss_coef ≠ 0) on `exp`'s responses and return
    `grpo_loss` (with the minibatch's counts, so micro-batch losses sum to the minibatch's). Metrics:
    grpo_loss's, entropy (token mean) and policy_loss (this micro-batch's loss as if it were the whole
    minibatch)."""
    logits = policy_logits(policy, exp.rollout)  # (B, R, V)
    logprobs = token_logprobs(logits, exp.rollout.response_ids)  # (B, R)
    mask = exp.mask
    kl_term = exp.kl_loss_coef * exact_kl_to(ref, logits, exp) if exp.kl_loss_coef else None  # (B, R)
    loss, metrics = grpo_loss(
        logprobs,
        exp.old_logprobs,
        exp.ref_logprobs,
        exp.advantages,
        mask,
        args.beta,
        args.eps_low,
        args.eps_high,
        args.aggregation,
        max_tokens=args.max_tokens,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        kl_term=kl_term,
    )
    with torch.no_grad():
        if args.aggregation == "token_mean":
            scale = 1.0 if num_tokens is None else num_tokens / mask.bool().sum().clamp(min=1)
        else:
            scale = 1.0 if num_sequences is None else num_sequences / exp.size
        metrics["policy_loss"] = loss.detach() * scale
        metrics["entropy"] = masked_mean(token_entropy(logits.detach()), mask)
    return loss, metrics


def sequence_kl(exp: GroupExperience) -> float | None:
    """Mean over responses of the sequence KL estimate at sampling time, nats (None without a reference)."""
    return None if exp.kl is None else float(exp.kl.sum(-1).mean())


def reward_terms(cfg) -> list[tuple[str, float]]:
    """(source, weight) of each reward term of a GRPO or RLOO config."""
    return [(cfg.reward.source, cfg.reward.weight), *((t.source, t.weight) for t in cfg.reward.extra)]
