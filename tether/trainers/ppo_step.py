"""What one PPO iteration computes, as functions of tensors and models (the driver is tether.trainers.ppo).

    exp = make_experience(policy, ref, critic, rollout, scores, beta, cfg)
    loss, metrics = minibatch_loss(policy, critic, exp.rows(idx), cfg.ppo, num_tokens)

For each sampled response (B rows, R response positions): old log-probs π_old(y_t), reference log-probs
π_ref(y_t) and values V(s_t) at sampling time; a per-token KL penalty kl_t from `kl.estimator`'s entry of
tether.losses.kl.REWARD_KL; rewards r_t = −β·kl_t plus the score on the last token (`kl_shaped_rewards`);
GAE advantages and returns (`gae`), whitened. The update's loss on a minibatch is

    ppo_policy_loss + vf_coef · value_loss − ent_coef · entropy [+ (β/σ_A) · token_kl]

the last term only for the `token_kl` estimator, whose reward term carries the KL of later positions and
whose loss term differentiates each position's own KL (tether.losses.kl derives both; σ_A is the std the
advantages were whitened by, so that the two parts keep the ratio the objective gives them).

with each term from tether.losses (Schulman et al. 2017, eq. 9, with the value term clipped as in OpenAI's
PPO2 and Ziegler et al. 2019). Position t of the response is predicted from the state s_t = prompt +
y_<t; its value is read at the same position as the logits that predict y_t (the token before y_t).
"""

from __future__ import annotations

import dataclasses
from typing import Self

import torch
import torch.nn.functional as F

from tether.config import PPOAlgoConfig, PPOConfig
from tether.losses import (
    REWARD_KL,
    gae,
    kl_shaped_rewards,
    masked_mean,
    ppo_policy_loss,
    token_kl,
    token_logprobs,
    value_loss,
    whiten,
)
from tether.losses._reduce import masked_var
from tether.losses.advantages import whitening_scale
from tether.rollout import Rollout, response_logits
from tether.trainers.distributed import global_moments


class Batch:
    """What every experience dataclass (fields `rollout` and `scores` among batch-first tensors) offers."""

    rollout: Rollout
    scores: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.rollout.response_mask  # (B, R)

    @property
    def size(self) -> int:
        return self.scores.shape[0]

    def rows(self, idx) -> Self:
        """The responses `idx` (a slice, index list or tensor), every tensor cut alike."""
        return take_rows(self, idx)

    def trimmed(self) -> Self:
        """The same responses without the columns that are padding in every row (see `trim_columns`)."""
        return trim_columns(self)


@dataclasses.dataclass
class Experience(Batch):
    """One iteration's responses and everything the PPO update needs; every tensor is (B, R) unless noted."""

    rollout: Rollout  # prompt and response tokens, masks, sampling temperature
    scores: torch.Tensor  # (B,) the sequence score (after normalisation and the no-EOS penalty)
    old_logprobs: torch.Tensor  # log π_old(y_t | s_t), the policy that sampled
    ref_logprobs: torch.Tensor  # log π_ref(y_t | s_t), the frozen SFT model
    old_values: torch.Tensor  # V(s_t) at sampling time
    kl: torch.Tensor  # per-token KL penalty estimate (0 off the mask)
    rewards: torch.Tensor  # −β·kl_t, plus the score on the last token
    advantages: torch.Tensor  # GAE, whitened when configured
    returns: torch.Tensor  # GAE advantages (before whitening) + old values: the value targets
    kl_loss_coef: float = 0.0  # coefficient of the exact per-position KL in the loss (token_kl: β/σ_A)


def take_rows(obj, idx):
    """A copy of a dataclass of batch-first tensors (nested dataclasses included) with only rows `idx`."""
    changes = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, torch.Tensor):
            changes[f.name] = value[idx]
        elif dataclasses.is_dataclass(value):
            changes[f.name] = take_rows(value, idx)
    return dataclasses.replace(obj, **changes)


def trim_columns(obj):
    """A copy of a dataclass holding a `rollout` and (B, R) response tensors, without the columns that are
    padding in every row: prompt columns before the longest prompt (left padding) and response columns after
    the longest response. Position ids count real tokens only, so the models compute the same values on
    fewer positions."""
    r = obj.rollout
    first = int(r.prompt_mask.any(0).long().argmax())  # first prompt column with a real token
    end = max(1, int(r.response_mask.sum(-1).max()))  # responses are right-padded
    rollout = dataclasses.replace(
        r,
        prompt_ids=r.prompt_ids[:, first:],
        prompt_mask=r.prompt_mask[:, first:],
        response_ids=r.response_ids[:, :end],
        response_mask=r.response_mask[:, :end],
        logprobs=r.logprobs[:, :end],
    )
    cut = {
        f.name: getattr(obj, f.name)[:, :end]
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), torch.Tensor) and getattr(obj, f.name).dim() == 2
    }
    return dataclasses.replace(obj, rollout=rollout, **cut)


# --------------------------------------------------------------------------------------------- forward passes


def policy_logits(model, rollout: Rollout) -> torch.Tensor:
    """Logits predicting each response token at the sampling temperature, (B, R, V) float32."""
    t = rollout.temperature if rollout.temperature > 0 else 1.0
    return response_logits(model, rollout).float() / t


def critic_values(critic, rollout: Rollout) -> torch.Tensor:
    """V(s_t) for each response position t, (B, R): the critic's per-token score at the position whose
    logits predict y_t (the last prompt token for t = 0). 0 off the response mask."""
    from tether.reward_model import token_scores

    scores = token_scores(critic, rollout.input_ids, rollout.attention_mask)  # (B, P + R)
    P = rollout.prompt_ids.shape[1]
    return scores[:, P - 1 : -1] * rollout.response_mask  # (B, R)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution, −Σ_v p log p: (B, R, V) → (B, R), in nats."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def score_rollout(
    policy, ref, critic, rollout: Rollout, estimator: str, chunk: int
) -> dict[str, torch.Tensor]:
    """Old and reference log-probs, values and the per-token KL penalty, `chunk` rows per forward pass.

    Returns {"old_logprobs", "ref_logprobs", "old_values", "kl"}, each (B, R), 0 off the response mask;
    "kl" is the reward term of `estimator`, a key of tether.losses.kl.REWARD_KL. Without a critic (None)
    there is no "old_values", without a reference no "ref_logprobs" nor "kl".
    """
    if estimator not in REWARD_KL:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(REWARD_KL)}")
    penalty = REWARD_KL[estimator].in_reward
    parts: dict[str, list[torch.Tensor]] = {"old_logprobs": []}
    if ref is not None:
        parts.update(ref_logprobs=[], kl=[])
    if critic is not None:
        parts["old_values"] = []
    for start in range(0, rollout.prompt_ids.shape[0], chunk):
        r = take_rows(rollout, slice(start, start + chunk))
        mask = r.response_mask
        logits = policy_logits(policy, r)  # (b, R, V)
        lp = token_logprobs(logits, r.response_ids) * mask  # (b, R)
        parts["old_logprobs"].append(lp)
        if ref is not None:
            ref_logits = policy_logits(ref, r)  # (b, R, V)
            ref_lp = token_logprobs(ref_logits, r.response_ids) * mask  # (b, R)
            parts["ref_logprobs"].append(ref_lp)
            parts["kl"].append(penalty(lp, ref_lp, logits, ref_logits, mask) * mask)
        if critic is not None:
            parts["old_values"].append(critic_values(critic, r))
    return {k: torch.cat(v) for k, v in parts.items()}


# --------------------------------------------------------------------------------------------- targets


def advantages_and_returns(
    kl: torch.Tensor,
    old_values: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    cfg: PPOAlgoConfig,
    all_sum=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(rewards, advantages, returns, scale): KL-shaped rewards, GAE with (cfg.gamma, cfg.lam) and, when
    cfg.whiten_advantages, whitened advantages, each (B, R); scale is what the advantages were multiplied
    by (1/σ_A when whitened, else 1). kl, old_values, mask: (B, R); scores: (B,).
    all_sum: a sum over processes (tether.trainers.distributed) to whiten over every process's tokens."""
    rewards = kl_shaped_rewards(scores, kl, mask, beta)  # (B, R)
    advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)  # (B, R) each
    scale = 1.0
    if cfg.whiten_advantages:
        if all_sum is None:
            moments = masked_mean(advantages, mask), masked_var(advantages, mask)
        else:
            moments = global_moments(advantages, mask, all_sum)
        advantages = whiten(advantages, mask, moments=moments)
        scale = float(whitening_scale(moments[1]))
    return rewards, advantages, returns, scale


def make_experience(
    policy, ref, critic, rollout: Rollout, scores: torch.Tensor, beta: float, cfg: PPOConfig, all_sum=None
) -> Experience:
    """Score a rollout with the three models (train.micro_batch_size rows per forward pass) and compute its
    PPO targets with cfg.kl.estimator and cfg.ppo (whitening over all processes when `all_sum` is given)."""
    s = score_rollout(policy, ref, critic, rollout, cfg.kl.estimator, cfg.train.micro_batch_size)
    scores = scores.to(s["kl"].device)
    mask = rollout.response_mask
    rewards, advantages, returns, scale = advantages_and_returns(
        s["kl"], s["old_values"], scores, mask, beta, cfg.ppo, all_sum
    )
    kl_loss_coef = beta * scale if REWARD_KL[cfg.kl.estimator].in_loss else 0.0
    return Experience(
        rollout,
        scores,
        s["old_logprobs"],
        s["ref_logprobs"],
        s["old_values"],
        s["kl"],
        rewards,
        advantages,
        returns,
        kl_loss_coef,
    )


# --------------------------------------------------------------------------------------------- the update


def ppo_objective(
    logprobs: torch.Tensor,
    values: torch.Tensor,
    entropy: torch.Tensor,
    exp: Experience,
    cfg: PPOAlgoConfig,
    num_tokens: float | torch.Tensor | None = None,
    exact_kl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ppo_policy_loss + vf_coef·value_loss − ent_coef·entropy [+ exp.kl_loss_coef·exact_kl] on the rows of
    `exp`.

    logprobs, values, entropy: (B, R) of the current policy and critic (with gradient); exact_kl: (B, R),
    `token_kl` of the current policy against the reference (with gradient through the policy), needed when
    exp.kl_loss_coef ≠ 0. Each term is a mean over the response tokens, divided by `num_tokens` when given
    (the whole minibatch's count, so that micro-batches sum to the minibatch mean).
    """
    mask = exp.mask
    pg, pg_metrics = ppo_policy_loss(
        logprobs, exp.old_logprobs, exp.advantages, mask, cfg.clip_eps, num_tokens
    )
    vl, v_metrics = value_loss(values, exp.old_values, exp.returns, mask, cfg.value_clip_eps, num_tokens)
    ent = masked_mean(entropy, mask, num_tokens)
    loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
    if exp.kl_loss_coef:
        if exact_kl is None:
            raise ValueError("kl_loss_coef != 0 needs exact_kl, the policy's token_kl to the reference")
        loss = loss + exp.kl_loss_coef * masked_mean(exact_kl, mask, num_tokens)
    with torch.no_grad():  # metrics are means over this micro-batch's own tokens
        scale = 1.0 if num_tokens is None else num_tokens / mask.bool().sum().clamp(min=1)
        metrics = {
            "policy_loss": pg.detach() * scale,
            "value_loss": vl.detach() * scale,
            "entropy": masked_mean(entropy.detach(), mask),
            **pg_metrics,
            **v_metrics,
        }
    return loss, metrics


def minibatch_loss(
    policy,
    critic,
    exp: Experience,
    cfg: PPOAlgoConfig,
    num_tokens: float | torch.Tensor | None = None,
    ref=None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward the policy and the critic (and the reference, when exp.kl_loss_coef ≠ 0) on `exp`'s
    responses and return `ppo_objective`."""
    logits = policy_logits(policy, exp.rollout)  # (B, R, V)
    logprobs = token_logprobs(logits, exp.rollout.response_ids)  # (B, R)
    entropy = token_entropy(logits if cfg.ent_coef else logits.detach())  # (B, R)
    values = critic_values(critic, exp.rollout)  # (B, R)
    exact_kl = exact_kl_to(ref, logits, exp) if exp.kl_loss_coef else None  # (B, R)
    return ppo_objective(logprobs, values, entropy, exp, cfg, num_tokens, exact_kl)


def exact_kl_to(ref, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """`token_kl` of the policy's response logits (B, R, V), with their gradient, against the reference's
    on the same rollout (a forward pass without gradient): (B, R), 0 off the response mask."""
    if ref is None:
        raise ValueError("the exact KL in the loss needs the reference model")
    with torch.no_grad():
        ref_logits = policy_logits(ref, batch.rollout)  # (B, R, V)
    return token_kl(logits, ref_logits, batch.mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(returns − values) / Var(returns) over the response tokens: 1 is a perfect critic, 0 one no
    better than a constant, negative worse."""

    def var(x):
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    v = var(returns)
    return float(1.0 - var(returns - values) / v) if v > 0 else float("nan")
