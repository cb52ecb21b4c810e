"""Masked reductions shared by the losses.

A mask marks response tokens (EOS included) with 1 and everything else (prompt, padding) with 0; it may be
bool, int or float. Token losses are means over all masked tokens of the batch. Passing `num_tokens` divides
by that count instead of the local one, so a multi-process (or gradient-accumulation) run can divide every
micro-batch by the global token count and sum the results.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` where `mask` is 1, over `dim` (all dimensions when None). x, mask: same shape."""
    xm = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return xm.sum() if dim is None else xm.sum(dim)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, num_tokens: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of `x` over the masked tokens of the whole batch (0-dim).

    x, mask: (B, T). Divides by `num_tokens` when given (e.g. the global count over processes), else by
    the number of masked tokens here (at least 1, so an empty mask gives 0 rather than NaN).
    """
    if num_tokens is None:
        num_tokens = mask.bool().sum().clamp(min=1)
    return masked_sum(x, mask) / num_tokens


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance (divide by n, not n - 1) of `x` over the masked tokens (0-dim). x, mask: (B, T)."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position where `mask` is 1 in each row: (B, T) → (B,) long.

    Works for left and right padding. A row without any response token is an error.
    """
    m = mask.bool()
    if not bool(m.any(dim=-1).all()):
        raise ValueError("a row of the mask has no response token")
    T = m.shape[-1]
    return T - 1 - m.flip(-1).int().argmax(dim=-1)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """`x` as is when float32 or float64, else (half precision, integers, bool) as float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
