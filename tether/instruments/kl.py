"""KL-from-base in nats: how far a policy has moved from the model it started from."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tether.instruments.stats import mean_stderr
from tether.losses import token_kl, token_logprobs
from tether.rollout import Rollout, response_logits


@torch.no_grad()
def sequence_kl(policy, base, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence KL(π‖π_base) for responses sampled from π: (closed-form, k1), each (B,) in nats.

    Closed form: Σ_t Σ_v π(v|s_t)·log(π(v|s_t)/π_base(v|s_t)) over the response tokens (`token_kl`);
    k1: Σ_t log π(y_t|s_t) − log π_base(y_t|s_t) at the sampled tokens. Both are unbiased estimates of the
    sequence KL; the closed form has lower variance. Both models must share the tokenizer. At a sampling
    temperature T ≠ 1 both are scored at T, so this is the KL of the sampling distributions.
    """
    t = rollout.temperature if rollout.temperature > 0 else 1.0
    mask = rollout.response_mask  # (B, R)
    pol = response_logits(policy, rollout).float() / t  # (B, R, V)
    ref = response_logits(base, rollout).float() / t  # (B, R, V)
    closed = token_kl(pol, ref, mask).sum(-1)  # (B,)
    ids = rollout.response_ids
    k1 = ((token_logprobs(pol, ids) - token_logprobs(ref, ids)) * mask).sum(-1)  # (B,)
    return closed, k1


def response_kls(policy, base, rollouts: Iterable[Rollout]) -> tuple[list[float], list[float]]:
    """(closed-form, k1) sequence KL(π‖π_base) of each response of `rollouts` (`sequence_kl`), in order."""
    closed, k1 = [], []
    for r in rollouts:
        c, k = sequence_kl(policy, base, r)
        closed += c.tolist()
        k1 += k.tolist()
    return closed, k1


def kl_from_base(policy, base, rollouts: Iterable[Rollout]) -> dict:
    """Mean sequence-level KL(π‖π_base) over policy samples, with its standard error and k1 beside it.

    `rollouts`: batches sampled from `policy` (e.g. on held-out prompts). Returns
    {"value", "stderr", "n", "unit": "nats", "k1", "k1_stderr"}.
    """
    return kl_entry(*response_kls(policy, base, rollouts))


def kl_entry(closed: list[float], k1: list[float]) -> dict:
    """`kl_from_base`'s record of per-response KLs (closed-form and k1)."""
    value, stderr = mean_stderr(closed)
    k1_value, k1_stderr = mean_stderr(k1)
    return {
        "value": value,
        "stderr": stderr,
        "n": len(closed),
        "unit": "nats",
        "k1": k1_value,
        "k1_stderr": k1_stderr,
    }
