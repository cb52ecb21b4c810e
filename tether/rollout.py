"""Batched sampling from a Hugging Face causal LM with a KV cache → `Rollout`.

    batch = collate_prompts(prompts, pad_id)                      # left-padded (B, P)
    r = sample(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=32,
               eos_token_id=tok.eos_token_id, pad_token_id=pad_id, temperature=1.0, top_p=1.0,
               generator=torch.Generator().manual_seed(0))

Left padding: position ids count real tokens only (`tether.data.position_ids`), so a padded row is
computed exactly as it would be alone; each new token takes the next position of its own row.
Each step draws one uniform number per row from `generator` (a CPU generator, whatever the model's
device) and inverts the CDF of the (temperature-scaled, top-p-truncated) next-token distribution, so a
seed fixes the samples. The CDF runs over the vocabulary in id order; only top-p < 1 sorts the tokens by
probability (most likely first), which it needs to find the nucleus (a sort of the 49k-token vocabulary
at batch 8 took ~18 ms of a ~100 ms SmolLM2 decode step on 2 CPU cores). A row stops at its EOS (kept,
mask 1); later positions hold the pad id with mask 0.

Banned tokens (`banned_token_ids`, e.g. the lab's <pad> <bos> <unk>) are never drawn: their logits are
set to −inf before temperature, top-p and the draw (a logits mask, as transformers' logits processors
apply before its warpers), so the other tokens' probabilities are renormalised, p_i / (1 − Σ_banned p).

Log-probs are those of the temperature-scaled distribution softmax(logits / T) at the sampled token —
what `score_responses` recomputes with a forward pass, so the PPO ratio is 1 before an update. Top-p and
banned tokens only restrict which tokens can be drawn; they do not renormalise the recorded log-probs.
With T ≠ 1 a KL computed from them is the KL of the sampling distribution. T = 0 means greedy decoding
(argmax over the tokens not banned), with log-probs at T = 1.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tether.data import position_ids
from tether.lora import merged_in_place, unwrap
from tether.losses import token_logprobs
from tether.packing import run_packed


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on prompt tokens
    response_ids: torch.Tensor  # (B, R) right-padded with the pad id
    response_mask: torch.Tensor  # (B, R) 1 on response tokens, EOS included
    logprobs: torch.Tensor  # (B, R) float32 sampling log-probs; 0 where response_mask is 0
    ended: torch.Tensor  # (B,) bool: the response ends with EOS (False: cut at max_new_tokens)
    temperature: float

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt then response, (B, P + R)."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + R): 1 on prompt and response tokens."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1).long()

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B,) response tokens per row, EOS included."""
        return self.response_mask.sum(-1)


def _draw(
    logits: torch.Tensor, temperature: float, top_p: float, generator, banned: torch.Tensor | None = None,
    u: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """One token per row from next-token logits (B, V) → (tokens (B,), log-probs (B,)). `banned` (K,): ids
    whose logits are masked to −inf for the draw; the log-probs are those of the unmasked logits. `u` (B,),
    float64 in [0, 1): the rows' uniform numbers, drawn here from `generator` when not given."""
    masked = logits if banned is None else logits.index_fill(-1, banned, -torch.inf)  # (B, V)
    if temperature == 0:
        token = masked.argmax(-1)  # (B,)
        return token, F.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(-1)
    logp_all = F.log_softmax(logits / temperature, -1)  # (B, V)
    logp_draw = logp_all if banned is None else F.log_softmax(masked / temperature, -1)  # (B, V)
    probs, order = logp_draw.exp(), None  # (B, V), in vocabulary order
    if top_p < 1.0:  # the nucleus needs the tokens by probability; without it the sort is skipped
        probs, order = probs.sort(dim=-1, descending=True, stable=True)  # (B, V)
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens
        probs = torch.where(before < top_p, probs, torch.zeros_like(probs))  # the most likely always stays
    cdf = probs.cumsum(-1)  # (B, V)
    if u is None:
        u = torch.rand(logits.shape[0], generator=generator, dtype=torch.float64)
    u = (u.to(logits.device) * cdf[:, -1].double()).to(cdf.dtype)  # (B,) uniform on [0, kept mass)
    idx = torch.searchsorted(cdf, u[:, None], right=True)  # first position whose CDF exceeds u, (B, 1)
    # rounding must not step past the last token that can be drawn (in vocabulary order a banned or
    # underflowed token may follow it)
    positions = torch.arange(probs.shape[-1], device=probs.device)  # (V,)
    last_kept = torch.where(probs > 0, positions, -1).amax(-1, keepdim=True)  # (B, 1)
    idx = torch.minimum(idx, last_kept)
    token = (idx if order is None else order.gather(-1, idx)).squeeze(-1)  # (B,)
    return token, logp_all.gather(-1, token[:, None]).squeeze(-1)


def _banned(ids: Sequence[int], vocab_size: int, device) -> torch.Tensor | None:
    """The banned ids as a (K,) tensor (None when there are none); ValueError when one is outside the
    vocabulary or they leave no token to draw."""
    ids = sorted(set(ids))
    if not ids:
        return None
    if ids[0] < 0 or ids[-1] >= vocab_size:
        raise ValueError(f"banned_token_ids must lie in [0, {vocab_size}), got {ids}")
    if len(ids) == vocab_size:
        raise ValueError(f"banned_token_ids ban all {vocab_size} tokens: none is left to draw")
    return torch.tensor(ids, dtype=torch.long, device=device)


def _inner(model):
    """The transformers model whose forward() receives the keyword arguments: DDP and compile wrappers
    forward them as they are, a peft model (or its adapters-off view) to the model it wraps."""
    return unwrap(getattr(model, "module", model))


def _takes(model, argument: str) -> bool:
    """Whether the transformers model inside `model` has a forward() argument of that name."""
    return argument in inspect.signature(_inner(model).forward).parameters


def _cache_argument(model) -> str:
    """The name under which forward() takes the KV cache: `cache` in recent transformers, else the older
    `past_key_values`."""
    return "cache" if _takes(model, "cache") else "past_key_values"


def _cache_of(out):
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def _prefill(model, prompt_ids: Tensor, attn: Tensor, pos: Tensor):
    """The prompts' forward pass with the KV cache, run once per distinct prompt row (GRPO and RLOO sample
    G responses to each prompt, rows in a row): logits and cache are then copied out to every row, (B, ...)
    as if all B rows had run (up to float rounding). The LM head runs on the last position only
    (`logits_to_keep=1` where forward() takes it): the others' logits are never read."""
    from transformers import DynamicCache, PreTrainedModel

    kwargs = {"use_cache": True}
    if _takes(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    rows = torch.cat([prompt_ids, attn], dim=1)  # (B, 2P): a row's tokens and padding
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)  # (B,) the distinct row of each row
    B, U = rows.shape[0], int(inverse.max()) + 1
    if U == B or not isinstance(_inner(model), PreTrainedModel):  # another model's cache: rows not copied
        return model(input_ids=prompt_ids, attention_mask=attn, position_ids=pos, **kwargs)
    try:  # given, not left to forward(), which in older transformers returns a legacy tuple; from the config
        cache = DynamicCache(config=_inner(model).config)  # where it takes one (sliding or linear layers)
    except TypeError:
        cache = DynamicCache()
    kwargs[_cache_argument(model)] = cache
    index = torch.arange(B, device=rows.device)
    first = torch.full((U,), B, device=rows.device).scatter_reduce(0, inverse, index, "amin")  # (U,)
    out = model(input_ids=prompt_ids[first], attention_mask=attn[first], position_ids=pos[first], **kwargs)
    cache.reorder_cache(inverse)  # every layer's keys and values indexed by row: (U, ...) → (B, ...)
    out["logits"] = out.logits[inverse]  # (B, 1, V)
    return out


@torch.no_grad()
def sample(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_token_id: int,
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    banned_token_ids: Sequence[int] = (),
) -> Rollout:
    """Sample up to `max_new_tokens` per left-padded prompt (B, P), reusing the KV cache; tokens in
    `banned_token_ids` are never drawn (the module docstring says how)."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    attn = prompt_mask.long()  # (B, P)
    if not bool(attn.sum(-1).gt(0).all()):
        raise ValueError("every prompt needs at least one token")
    was_training = model.training
    model.eval()
    try:
        with merged_in_place(getattr(model, "module", model)):  # LoRA: adapters merged while sampling
            return _decode(model, prompt_ids, attn, max_new_tokens, eos_token_id, pad_token_id, temperature,
                           top_p, generator, banned_token_ids)
    finally:
        model.train(was_training)


def _decode(model, prompt_ids, attn, max_new_tokens, eos_token_id, pad_token_id, temperature, top_p,
            generator, banned_token_ids) -> Rollout:
    """`sample`'s loop: the prompt's forward pass, then one cached forward pass per new token.

    Rows that have ended leave the batch (their KV cache rows too) once they are a quarter of the rows
    still run: a batch whose responses end at different lengths then stops paying for the finished ones
    (an evaluation batch of 64 short answers and one long one ran 64 rows to the end before). Every step
    still draws one uniform number for each of the B rows from `generator`, so the draws a row gets do not
    depend on when the others ended."""
    B, device = prompt_ids.shape[0], prompt_ids.device
    cache_arg = _cache_argument(model)
    prompt_mask = attn
    pos = position_ids(attn)  # (B, P)
    out = _prefill(model, prompt_ids, attn, pos)
    banned = _banned(banned_token_ids, out.logits.shape[-1], device)  # (K,) or None
    next_pos = pos[:, -1:] + 1  # (B, 1): rows are left-padded, so the last column is each row's last token
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)  # (n,) the rows the model still runs, n ≤ B
    drops_rows = hasattr(_cache_of(out), "reorder_cache")  # a legacy tuple cache keeps every row
    tokens, logps, masks = [], [], []
    for t in range(max_new_tokens):
        u = None if temperature == 0 else torch.rand(B, generator=generator, dtype=torch.float64)[rows.cpu()]
        token_n, logp_n = _draw(out.logits[:, -1].float(), temperature, top_p, generator, banned, u)  # (n,)
        token = torch.full_like(finished, pad_token_id, dtype=token_n.dtype).index_copy(0, rows, token_n)
        logp = torch.zeros_like(finished, dtype=logp_n.dtype).index_copy(0, rows, logp_n)  # (B,)
        active = ~finished
        tokens.append(torch.where(active, token, torch.full_like(token, pad_token_id)))
        logps.append(torch.where(active, logp, torch.zeros_like(logp)))
        masks.append(active)
        finished = finished | (active & (token == eos_token_id))
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        ended = finished[rows]  # (n,)
        if drops_rows and int(ended.sum()) >= max(1, len(rows) // 4):
            keep = (~ended).nonzero().squeeze(-1)  # (n',) positions in the running batch
            _cache_of(out).reorder_cache(keep)
            rows, attn, next_pos = rows[keep], attn[keep], next_pos[keep]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # (n, P + t + 1)
        cache = {cache_arg: _cache_of(out)}
        out = model(input_ids=tokens[-1][rows][:, None], attention_mask=attn, position_ids=next_pos,
                    use_cache=True, **cache)
        next_pos = next_pos + 1
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=torch.stack(tokens, 1),  # (B, R)
        response_mask=torch.stack(masks, 1).long(),  # (B, R)
        logprobs=torch.stack(logps, 1),  # (B, R)
        ended=finished,
        temperature=temperature,
    )


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response text of each row: its masked tokens without EOS and other special tokens."""
    out = []
    for ids, mask in zip(rollout.response_ids, rollout.response_mask, strict=True):
        out.append(tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=True).strip())
    return out


def _keeps_logits(model) -> bool:
    """Whether forward() takes transformers' `logits_to_keep` as a boolean (B, T) mask (the LM head applied
    to those positions only)."""
    if not _takes(model, "logits_to_keep"):
        return False
    # a boolean (B, T) mask is understood only where the model slices through transformers'
    # slice_logits_to_keep (older releases and some architectures take an int or 1-D index only)
    module = sys.modules.get(type(_inner(model)).__module__)
    return getattr(module, "slice_logits_to_keep", None) is not None


def logits_at(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, select: torch.Tensor) -> Tensor:
    """Logits at the positions where `select` (B, T) is True, (N, V), in row-major order.

    The trunk runs over every position (attention needs them all) but the LM head, a (V × H) matmul per
    position (for SmolLM2-135M a fifth of the forward FLOPs) whose (B, T, V) output dominates the memory of
    a step, runs on the selected positions only: transformers' `logits_to_keep` with a boolean mask. A model
    whose forward lacks it computes every position's logits, then the selected ones are taken."""
    def forward(ids, mask, positions, keep):
        kept = {"logits_to_keep": keep} if _keeps_logits(model) else {}
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, **kept).logits
        if logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
            return logits
        return logits[keep]

    return run_packed(model, input_ids, attention_mask, forward, select.bool())


def completion_positions(loss_mask: torch.Tensor) -> tuple[Tensor, Tensor]:
    """(select (B, T), target (B, T − 1)), bool: target[:, t] is True when ids[:, t + 1] is a completion
    token (loss_mask 1), select[:, t] when position t predicts one (target shifted left, last column False).
    Row-major, ids[:, 1:][target] lists the tokens in the order `logits_at(…, select)` lists their logits."""
    target = loss_mask[:, 1:].bool()
    return torch.cat([target, torch.zeros_like(target[:, :1])], dim=1), target


def completion_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """log π(ids[:, t + 1] | ids[:, :t + 1]) of the completion tokens, (B, T − 1), 0 elsewhere: aligned with
    `ids[:, 1:]` like `token_logprobs` (batch: input_ids, attention_mask, loss_mask, each (B, T); loss_mask
    is 1 on completion tokens). Gradients flow when called outside no_grad.

    Only the positions that predict a completion token go through the LM head (`logits_at`), and the
    log-prob is the gathered logit minus logsumexp (`token_logprobs`), so no (B, T, V) tensor is built."""
    ids, attn = batch["input_ids"], batch["attention_mask"]
    select, target = completion_positions(batch["loss_mask"])
    logits = logits_at(model, ids, attn, select)  # (N, V), N = target.sum(), ordered like ids[:, 1:][target]
    if temperature != 1.0:
        logits = logits / temperature
    lp = token_logprobs(logits[None], ids[:, 1:][target][None])[0]  # (N,)
    return torch.zeros(target.shape, dtype=lp.dtype, device=lp.device).masked_scatter(target, lp)


def response_logits(model, rollout: Rollout) -> torch.Tensor:
    """Logits that predict each response token, (B, R, V), 0 where the response mask is 0, from one forward
    pass over prompt + response (packed, `logits_at`: the LM head only where it predicts a response token)."""
    mask = rollout.response_mask.bool()  # (B, R)
    P = rollout.prompt_ids.shape[1]
    select = torch.zeros_like(rollout.attention_mask, dtype=torch.bool)  # (B, P + R)
    select[:, P - 1 : -1] = mask  # position P − 1 + t predicts response token t
    logits = logits_at(model, rollout.input_ids, rollout.attention_mask, select)  # (N, V)
    out = logits.new_zeros(*mask.shape, logits.shape[-1])  # (B, R, V)
    out[mask] = logits
    return out


def score_responses(model, rollout: Rollout, temperature: float | None = None) -> torch.Tensor:
    """Log-probs of the response tokens under `model` at `temperature` (default: the rollout's; 0 → 1),
    (B, R), 0 where the response mask is 0. Gradients flow when called outside no_grad."""
    t = rollout.temperature if temperature is None else temperature
    logits = response_logits(model, rollout).float()
    lp = token_logprobs(logits / (t if t > 0 else 1.0), rollout.response_ids)  # (B, R)
    return lp * rollout.response_mask


def cut_at_stop(rollout: Rollout, tokenizer, stops: list[str], pad_value: int) -> Rollout:
    """End each response after the first token whose decoded prefix contains a stop string (the row then
    counts as ended, like EOS); later tokens become padding with mask 0."""
    if not stops:
        return rollout
    mask, ended = rollout.response_mask.clone(), rollout.ended.clone()  # (B, R), (B,)
    for b in range(mask.shape[0]):
        ids = rollout.response_ids[b, : int(mask[b].sum())].tolist()
        if not any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in stops):
            continue
        for t in range(1, len(ids) + 1):  # the shortest prefix that contains one
            if any(s in tokenizer.decode(ids[:t], skip_special_tokens=True) for s in stops):
                mask[b, t:] = 0
                ended[b] = True
                break
    ids = torch.where(mask.bool(), rollout.response_ids, torch.full_like(rollout.response_ids, pad_value))
    return dataclasses.replace(
        rollout, response_ids=ids, response_mask=mask, logprobs=rollout.logprobs * mask, ended=ended
    )
