"""Capability on verifiable tasks, and perplexity on held-out demonstrations — what RLHF may cost (the
"alignment tax", Ouyang et al. 2022 sec. 4.2). Both are reported beside the base's figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tether.data import SFTTokens, collate_sft, pad_id, position_ids
from tether.instruments.stats import proportion
from tether.instruments.text_stats import contains_phrase


def capability_accuracy(correct: Sequence[bool]) -> dict:
    """{"value", "n", "ci95"}: share of verifiable questions answered exactly right."""
    return proportion(correct)


def contains_answer(response: str, answer: str) -> bool:
    """Real-data checker: the reference answer occurs in the response as whole words (case and punctuation
    ignored)."""
    return contains_phrase(response, answer)


@torch.no_grad()
def heldout_perplexity(model, tokenizer, items: Sequence[SFTTokens], batch_size: int = 32) -> dict:
    """{"value": exp(Σ NLL / Σ tokens), "n": demonstrations, "tokens", "nll_per_token"}: the perplexity of
    the completions (EOS included) of held-out demonstrations given their prompts, token-weighted like the
    SFT trainer's test loss."""
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = collate_sft(items[start : start + batch_size], pad_id(tokenizer), side="right")
        ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # (B, T)
        mask = batch["loss_mask"][:, 1:].to(device).bool()  # (B, T-1): ids[:, t+1] is a completion token
        logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
        ).view_as(mask)  # (B, T-1)
        total += float(nll[mask].double().sum())
        tokens += int(mask.sum())
    if tokens == 0:
        raise ValueError("heldout_perplexity needs at least one completion token")
    mean = total / tokens
    return {"value": math.exp(min(mean, 700.0)), "n": len(items), "tokens": tokens, "nll_per_token": mean}
