"""What the RL trainers need to run on several processes (accelerate / torch.distributed), as small functions.

Every process holds the whole prompt list and takes its contiguous share of each iteration's prompts; a
group of G responses to one prompt is therefore always sampled, scored and baselined on one process. Whole-
batch statistics (advantage whitening, reward normalisation, a batch-std scale) are computed over the
responses of all processes, so they are those a single process with the whole batch would compute.
`all_sum` / `all_gather` are a Loop's (the identity with one process).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tether.losses._reduce import masked_sum

Reduce = Callable[[torch.Tensor], torch.Tensor]


def shard_seed(seed: int, rank: int) -> int:
    """The sampling seed of process `rank`: `seed` itself on process 0 (so one process samples as before),
    a different stream on each other process."""
    return seed if rank == 0 else (seed * 8191 + rank) % (2**63)


def global_moments(x: torch.Tensor, mask: torch.Tensor, all_sum: Reduce) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean and population variance of `x` over the masked entries of every process (two passes, as
    `masked_mean` / `masked_var` do on one batch). x, mask: (B, T); returns two 0-dim float tensors."""
    x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
    first = all_sum(torch.stack([masked_sum(x, mask), mask.bool().sum().to(x.dtype)]))  # [Σx, n]
    n = first[1].clamp(min=1)
    mean = first[0] / n
    var = all_sum(masked_sum((x - mean) ** 2, mask)[None])[0] / n
    return mean, var


def gathered_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, all_gather: Reduce,
                  rank: int) -> torch.Tensor:
    """`fn` applied to the rows of every process (equal counts, gathered in rank order), this process's
    rows of the result: (B,) → (B,). E.g. group advantages whose scale is the whole batch's std."""
    out = fn(all_gather(x))
    n = x.shape[0]
    return out[rank * n : (rank + 1) * n]
