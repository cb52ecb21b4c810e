"""Policy-gradient pieces: token log-probs, KL estimators, KL-shaped rewards, PPO/GRPO surrogates, value loss.

Shapes: B sequences, T positions, V vocabulary, H hidden size. Every (B, T) tensor comes with a mask that
marks response tokens (EOS included); token losses are masked means over the whole batch and take an
optional `num_tokens` to divide by instead (see `tether.losses._reduce.masked_mean`). Metrics are detached
0-dim tensors, means over this batch's own tokens whatever `num_tokens` is, so the training loop can average
them over micro-batches and processes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tether.losses._reduce import last_index, masked_mean, masked_sum, upcast
from tether.losses.kl import masked_k3

# --- log-probs -------------------------------------------------------------------------------------------


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits[:, t])[tokens[:, t]]: (B, T, V), (B, T) → (B, T), float32 or wider.

    Aligned: the caller shifts (passes `logits[:, :-1]` with `ids[:, 1:]`) and, when scoring its own samples,
    divides the logits by the sampling temperature first, so that the log-probs are those of the policy that
    sampled. `tokens` must be valid ids everywhere (pad ids on padding are fine; mask them afterwards).
    Computed as the gathered logit minus logsumexp, which never builds the (B, T, V) log-softmax; half
    precision logits are upcast one sequence at a time.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        return torch.stack(
            [token_logprobs(row.float(), ids) for row, ids in zip(logits, tokens, strict=True)]
        )
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


def _chunk_logprobs(hidden, weight, bias, tokens, temperature):
    """(N, H), (V, H), (V,) or None, (N,) → (N,): the log-probs of one chunk of positions."""
    logits = upcast(F.linear(hidden, weight, bias)) / temperature  # (N, V)
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def chunked_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    chunk_size: int = 1024,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """`token_logprobs` of logits = (hidden @ weightᵀ + bias) / temperature, computed `chunk_size` positions
    at a time: (B, T, H), (V, H), (B, T) → (B, T), float32 or wider.

    hidden: the final hidden states (after the last norm), aligned with `tokens` like `token_logprobs`
    (pass `hidden[:, :-1]` with `ids[:, 1:]`); weight: the LM head's (V, H) weight. At most one chunk of
    (chunk_size, V) logits exists at a time: under autograd each chunk is checkpointed and its logits are
    recomputed in the backward pass, so neither pass holds the full (B, T, V) tensor. Models that transform
    the logits further (e.g. soft-capping) need the full form.
    """
    B, T, H = hidden.shape
    flat_hidden, flat_tokens = hidden.reshape(B * T, H), tokens.reshape(B * T)
    need_grad = torch.is_grad_enabled() and (
        hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    out = []
    for start in range(0, B * T, chunk_size):
        h, ids = flat_hidden[start : start + chunk_size], flat_tokens[start : start + chunk_size]
        if need_grad:
            out.append(checkpoint(_chunk_logprobs, h, weight, bias, ids, temperature, use_reentrant=False))
        else:
            out.append(_chunk_logprobs(h, weight, bias, ids, temperature))
    return torch.cat(out).view(B, T)


# --- KL-shaped rewards (the estimators and their placements: tether.losses.kl) --------------------------


def kl_shaped_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token PPO reward: −β·kl_t on each response token, plus the sequence score on the last one.

    score: (B,), the reward model's score of each response; kl: (B, T), from `kl_estimate` or `token_kl`;
    mask: (B, T), response tokens; → (B, T), 0 outside the response, without gradient. The sum over a
    response is score − β·KL, the objective of Ziegler et al. 2019 (eq. 2) and Ouyang et al. 2022 (eq. 2).
    The last response token is the last position where the mask is 1 (left or right padding).
    """
    with torch.no_grad():
        m = mask.bool()
        rewards = torch.where(m, -beta * upcast(kl), 0.0)  # (B, T)
        rows = torch.arange(rewards.shape[0], device=rewards.device)
        return rewards.index_put((rows, last_index(m)), score.to(rewards.dtype), accumulate=True)


# --- surrogates --------------------------------------------------------------------------------------------


def _clipped_surrogate(logprobs, old_logprobs, advantages, eps_low, eps_high):
    """Per-token −min(ρA, clip(ρ, 1 − eps_low, 1 + eps_high)A), ρ = π/π_old; all (B, T).

    Also returns where the clipped term is the larger loss (there the gradient is 0), ρ and log ρ.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    return torch.maximum(loss_unclipped, loss_clipped), loss_clipped > loss_unclipped, ratio, log_ratio


def _surrogate_metrics(clipped, ratio, log_ratio, mask):
    """Local token means (detached): clipfrac, approx_kl = ½·mean((log ρ)²), ratio_mean."""
    with torch.no_grad():
        return {
            "clipfrac": masked_mean(clipped.float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }


def _per_token(advantages, like):
    """Advantages (B,) broadcast over tokens as (B, 1); (B, T) unchanged."""
    return advantages.unsqueeze(-1) if advantages.dim() == like.dim() - 1 else advantages


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate, −min(ρA, clip(ρ, 1 − ε, 1 + ε)A) with ρ = π/π_old (Schulman et al. 2017,
    eq. 7), as a masked mean over the batch's response tokens.

    logprobs: (B, T), of the current policy (with gradient); old_logprobs: (B, T), of the policy that
    sampled; advantages: (B, T) (or (B,), broadcast); mask: (B, T). Metrics: clipfrac (fraction of tokens
    where clipping binds, i.e. the gradient is 0), approx_kl (½·mean((log ρ)²)), ratio_mean.
    """
    per_token, clipped, ratio, log_ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), clip_eps, clip_eps
    )
    loss = masked_mean(per_token, mask, num_tokens)
    return loss, _surrogate_metrics(clipped, ratio, log_ratio, mask)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ½·max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, −ε, ε).

    values: (B, T), with gradient; old_values: (B, T), at sampling time; returns: (B, T), from `gae`;
    mask: (B, T). ε is the value function's own clip range (the value scale is not the ratio scale). The
    form of OpenAI's PPO2 baseline, used for language models by Ziegler et al. 2019. Metrics: value_clipfrac
    (fraction of tokens where the clipped error is the larger), value_mse (mean (V − R)²).
    """
    values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    err = (values - returns) ** 2  # (B, T)
    err_clipped = (values_clipped - returns) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask, num_tokens)
    with torch.no_grad():
        metrics = {
            "value_clipfrac": masked_mean((err_clipped > err).float(), mask),
            "value_mse": masked_mean(err, mask),
        }
    return loss, metrics


# GRPO aggregations: per-token losses (B, T) and mask → 0-dim loss. `num_sequences` / `num_tokens` replace
# the local B / token count (global counts for multi-process runs).


def _sequence_mean(x, mask, max_tokens, num_tokens, num_sequences):
    """Mean over tokens within each response, then over responses (Shao et al. 2024, eq. 3)."""
    per_seq = masked_sum(x, mask, dim=-1) / mask.bool().sum(-1).clamp(min=1)  # (B,)
    return per_seq.sum() / (num_sequences if num_sequences is not None else x.shape[0])


def _token_mean(x, mask, max_tokens, num_tokens, num_sequences):
    """Mean over all response tokens of the batch, so long responses weigh more (DAPO, Yu et al. 2025)."""
    return masked_mean(x, mask, num_tokens)


def _constant_norm(x, mask, max_tokens, num_tokens, num_sequences):
    """Sum over tokens divided by B·max_tokens, a constant: no length bias (Dr. GRPO, Liu et al. 2025)."""
    if max_tokens is None:
        raise ValueError("aggregation 'constant_norm' needs max_tokens")
    n_seq = num_sequences if num_sequences is not None else x.shape[0]
    return masked_sum(x, mask) / (n_seq * max_tokens)


def _token_sum(x, mask, max_tokens, num_tokens, num_sequences):
    """Sum over the tokens of each response, mean over responses: with one advantage per response the
    gradient is A·∇log π(y), REINFORCE's (Williams 1992), which keeps the optimum of E[r] − β·KL."""
    n_seq = num_sequences if num_sequences is not None else x.shape[0]
    return masked_sum(x, mask) / n_seq


GRPO_AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "sequence_mean": _sequence_mean,
    "token_mean": _token_mean,
    "constant_norm": _constant_norm,
    "token_sum": _token_sum,
}


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    eps_low: float,
    eps_high: float,
    aggregation: str,
    max_tokens: int | None = None,
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: int | torch.Tensor | None = None,
    kl_term: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO objective (Shao et al. 2024, eq. 3), negated: per token
    −min(ρA, clip(ρ, 1 − eps_low, 1 + eps_high)A) + β·k3(π, π_ref), ρ = π/π_old.

    logprobs, old_logprobs, ref_logprobs: (B, T) (ref may be None when β = 0); advantages: (B,), one per
    response (e.g. `grpo_advantages`), broadcast over its tokens; mask: (B, T). eps_high > eps_low is
    DAPO's clip-higher. aggregation: `sequence_mean` (GRPO paper), `token_mean` (DAPO, Yu et al. 2025),
    `constant_norm` (Dr. GRPO, Liu et al. 2025: divides by B·max_tokens) or `token_sum` (per-response sums,
    mean over responses: REINFORCE, as RLOO uses it). `num_tokens` (token_mean) and `num_sequences`
    (sequence_mean, constant_norm, token_sum) replace the local counts. kl_term: (B, T), a per-token KL
    term with its gradient and coefficient, added before aggregation (the loss part of the `token_kl`
    placement, tether.losses.kl). k3 is taken at response tokens only (`masked_k3`), so a padded position
    whose log-prob is far below the reference's cannot overflow. Metrics (token means): clipfrac,
    approx_kl, ratio_mean, and ref_kl (mean k3) when ref_logprobs is given.
    """
    if aggregation not in GRPO_AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {sorted(GRPO_AGGREGATIONS)}")
    if beta and ref_logprobs is None:
        raise ValueError("grpo_loss needs ref_logprobs when beta != 0")
    per_token, clipped, ratio, log_ratio = _clipped_surrogate(
        logprobs, old_logprobs, _per_token(advantages, logprobs), eps_low, eps_high
    )
    ref_kl = None if ref_logprobs is None else masked_k3(logprobs, ref_logprobs, mask)  # (B, T)
    if beta:
        per_token = per_token + beta * ref_kl
    if kl_term is not None:
        per_token = per_token + kl_term
    loss = GRPO_AGGREGATIONS[aggregation](per_token, mask, max_tokens, num_tokens, num_sequences)
    metrics = _surrogate_metrics(clipped, ratio, log_ratio, mask)
    if ref_kl is not None:
        metrics["ref_kl"] = masked_mean(ref_kl.detach(), mask)
    return loss, metrics
