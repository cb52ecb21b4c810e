"""An RL iteration's responses as rows of tensors, and the forward passes that score them.

    s = score_rollout(policy, ref, critic, rollout, "k1", chunk)   # no gradient: π_old, π_ref, V, KL
    logits = policy_logits(policy, exp.rollout)                      # with gradient, in the update

Position t of a response is predicted from the state s_t = prompt + y_<t: its log-prob, its entropy and its
value V(s_t) are all read at the position whose logits predict y_t (the token before y_t). Every tensor is
(B, R) over B responses and R response positions, 0 off the response mask, unless noted. The algorithms
(tether.trainers.ppo, grpo, rloo) define their experience dataclasses on `Batch`.
"""

from __future__ import annotations

import dataclasses
from typing import Self

import torch
import torch.nn.functional as F

from tether.losses import REWARD_KL, token_kl, token_logprobs
from tether.rollout import Rollout, response_logits


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
    policy, ref, critic, rollout: Rollout, estimator: str, chunk: int, sampled_logprobs: bool = False
) -> dict[str, torch.Tensor]:
    """Old and reference log-probs, values and the per-token KL penalty, `chunk` rows per forward pass.

    Returns {"old_logprobs", "ref_logprobs", "old_values", "kl"}, each (B, R), 0 off the response mask;
    "kl" is the reward term of `estimator`, a key of tether.losses.kl.REWARD_KL. Without a critic (None)
    there is no "old_values", without a reference no "ref_logprobs" nor "kl".

    sampled_logprobs: π_old's log-probs are the ones the sampler recorded (rollout.logprobs, at the
    sampling temperature like `policy_logits`), so the policy's forward pass is skipped unless the
    estimator reads the policy's logits (token_kl). Only for a rollout that `policy` itself sampled in the
    precision it is scored in: the two then differ by float rounding only (the sampler's cached decoding
    against one pass over the whole sequence). Saves one of the iteration's forward passes, as CleanRL's
    PPO keeps the log-prob of each action it samples.
    """
    if estimator not in REWARD_KL:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {sorted(REWARD_KL)}")
    penalty = REWARD_KL[estimator].in_reward
    forward = not sampled_logprobs or REWARD_KL[estimator].uses_logits
    parts: dict[str, list[torch.Tensor]] = {"old_logprobs": []}
    if ref is not None:
        parts.update(ref_logprobs=[], kl=[])
    if critic is not None:
        parts["old_values"] = []
    for start in range(0, rollout.prompt_ids.shape[0], chunk):
        r = take_rows(rollout, slice(start, start + chunk))
        mask = r.response_mask
        if forward:
            logits = policy_logits(policy, r)  # (b, R, V)
            lp = token_logprobs(logits, r.response_ids) * mask  # (b, R)
        else:
            logits, lp = None, r.logprobs * mask  # the sampler's own log-probs of π_old
        parts["old_logprobs"].append(lp)
        if ref is not None:
            ref_logits = policy_logits(ref, r)  # (b, R, V)
            ref_lp = token_logprobs(ref_logits, r.response_ids) * mask  # (b, R)
            parts["ref_logprobs"].append(ref_lp)
            parts["kl"].append(penalty(lp, ref_lp, logits, ref_logits, mask) * mask)
        if critic is not None:
            parts["old_values"].append(critic_values(critic, r))
    return {k: torch.cat(v) for k, v in parts.items()}


def exact_kl_to(ref, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """`token_kl` of the policy's response logits (B, R, V), with their gradient, against the reference's
    on the same rollout (a forward pass without gradient): (B, R), 0 off the response mask."""
    if ref is None:
        raise ValueError("the exact KL in the loss needs the reference model")
    with torch.no_grad():
        ref_logits = policy_logits(ref, batch.rollout)  # (B, R, V)
    return token_kl(logits, ref_logits, batch.mask)


# --------------------------------------------------------------------------------------------- the update


def update_epochs(loop, exp: Batch, loss_fn, epochs: int, max_approx_kl: float | None, batch_size: int,
                  micro_batch_size: int, generator: torch.Generator) -> dict:
    """`epochs` passes over shuffled minibatches of `batch_size` responses of `exp`, one optimizer step of
    `loop` (a tether.trainers.base.Loop) each; stop early once an epoch's mean approx_kl passes
    `max_approx_kl` (None: never).

    loss_fn(part, num_tokens, num_sequences) → (loss, metrics) of a micro-batch `part` of micro_batch_size
    responses, with the whole minibatch's token count (over all processes) and response count, so
    micro-batch losses sum to the minibatch's; its metrics include approx_kl. Returns token-weighted means of
    the loss metrics, the epochs run, and the last step's lr and grad_norm. With several processes `exp` is
    this process's share and so is each minibatch (batch_size / processes rows); token counts and the
    early-stop KL are summed over processes."""
    mb = batch_size // loop.world
    sums: dict[str, float] = {}
    total_tokens, epochs_run, info = 0, 0, {}
    for _ in range(epochs):
        order = torch.randperm(exp.size, generator=generator)
        epoch_kl, epoch_tokens = 0.0, 0
        for start in range(0, exp.size, mb):
            minibatch = exp.rows(order[start : start + mb])
            num_tokens = loop.all_sum(minibatch.mask.sum()).clamp(min=1)  # of the whole minibatch
            n_micro = mb // micro_batch_size
            for j in range(n_micro):
                part = minibatch.rows(slice(j * micro_batch_size, (j + 1) * micro_batch_size)).trimmed()
                with loop.accumulate(sync=j == n_micro - 1):
                    with loop.autocast():  # a critic's trunk, called directly, as at sampling time
                        loss, metrics = loss_fn(part, num_tokens, batch_size)
                    loop.backward(loss)
                n = int(part.mask.sum())
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + n * float(v)
                total_tokens += n
                epoch_tokens += n
                epoch_kl += n * float(metrics["approx_kl"])
            info = loop.optimizer_step()
        epochs_run += 1
        if max_approx_kl is not None:
            kl_tokens = loop.all_sum(torch.tensor([epoch_kl, float(epoch_tokens)], dtype=torch.float64))
            if float(kl_tokens[0] / kl_tokens[1].clamp(min=1)) > max_approx_kl:  # same verdict everywhere
                break
    out = {k: v / max(total_tokens, 1) for k, v in sums.items()}
    out.update(epochs=epochs_run, lr=info.get("lr"), grad_norm=info.get("grad_norm"))
    return out
