"""Supervised fine-tuning: masked next-token cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tether.losses._reduce import masked_mean, upcast


def sft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token cross-entropy −log p(labels[:, t] | logits[:, t]), averaged over the masked tokens.

    logits: (B, T, V); labels: (B, T) token ids; mask: (B, T), 1 on completion tokens (EOS included), 0 on
    prompt and padding, which carry no loss (their labels may be anything, e.g. -100 or the pad id).
    Aligned like `token_logprobs`: logits[:, t] predicts labels[:, t], so the caller shifts
    (`logits[:, :-1]` with `ids[:, 1:]`). `num_tokens`: optional count to divide by (see `masked_mean`).

    Maximum likelihood on demonstrations, the first stage of InstructGPT (Ouyang et al. 2022, sec. 3.5).
    Metrics (detached 0-dim tensors): `tokens` (masked tokens here) and `accuracy` (argmax == label).
    """
    m = mask.bool()
    safe_labels = torch.where(m, labels, torch.zeros_like(labels))  # (B, T)
    nll = F.cross_entropy(upcast(logits.flatten(0, 1)), safe_labels.flatten(), reduction="none")
    nll = nll.view_as(labels)  # (B, T)
    loss = masked_mean(nll, m, num_tokens)
    with torch.no_grad():
        correct = (logits.argmax(dim=-1) == safe_labels).float()  # (B, T)
        metrics = {"tokens": m.sum().float(), "accuracy": masked_mean(correct, m)}
    return loss, metrics
