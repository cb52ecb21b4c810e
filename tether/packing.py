"""Padding-free forward passes: the rows of a padded batch packed end to end into fewer rows.

    out = run_packed(model, input_ids, attention_mask, forward)            # (B, T, ...), 0 at padding
    out = run_packed(model, input_ids, attention_mask, forward, select)    # (N, ...) at select's positions

A padded batch (B, T) spends compute on every padding position: in HH-RLHF pairs the mean row is ~150 tokens
and the padded one ~230. `pack` places the rows' real tokens in bins of the batch's own length C (the
longest row), first-fit by decreasing length, so B' ≤ B rows of C positions hold them all. Inside a bin each
row keeps its own position ids (0, 1, …, restarting per row) and attends only to itself: a block-diagonal
causal mask (B', 1, C, C). With transformers' SDPA attention the result at every real position equals the
padded batch's to float rounding (tests/test_packing.py); position ids alone would not isolate the rows.
Each bin costs at most what one padded row costs (C² attention, C positions), so a packed batch never
computes more than the padded one; it computes less whenever two rows share a bin.

Models whose attention is not SDPA (eager takes masks as additive floats, flash-attention none at all) run
padded, as does a batch where no two rows fit together; `padded()` turns packing off in a block (benchmarks
and the equality tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from tether.data import position_ids

_enabled = True


@contextlib.contextmanager
def padded():
    """Run every forward pass in the block on the padded batch (no packing)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def supports_packing(model) -> bool:
    """Whether `model` (a transformers model, possibly inside DDP / peft wrappers) attends with SDPA, which
    takes a boolean 4-D mask as the set of allowed positions."""
    for inner in (model, getattr(model, "module", None), getattr(model, "model", None)):  # DDP, AdaptersOff
        config = getattr(inner, "config", None)  # a peft model forwards `config` to the model it wraps
        if config is not None:
            return getattr(config, "_attn_implementation", None) == "sdpa"
    return False


@dataclasses.dataclass
class Packing:
    """Where each real token of a (B, T) batch sits in the packed (B', C) one."""

    input_ids: Tensor  # (B', C) the rows' real tokens, end to end; 0 on the bins' tail padding
    position_ids: Tensor  # (B', C) each row's own positions 0, 1, …; 0 on padding
    attention_mask: Tensor  # (B', 1, C, C) bool: causal within each row (a bin's tail padding, within itself)
    real: Tensor  # (B, T) bool: the real tokens of the padded batch
    to_packed: Tensor  # (N,) long: packed flat index (b·C + c) of each real token, (B, T) row-major order

    def unpack(self, x: Tensor) -> Tensor:
        """(B', C, ...) → (B, T, ...): each real token's value at its padded place, 0 at padding."""
        flat = x.reshape(-1, *x.shape[2:])[self.to_packed]  # (N, ...)
        B, T = self.real.shape
        out = flat.new_zeros(B * T, *x.shape[2:])
        out[self.real.flatten()] = flat
        return out.view(B, T, *x.shape[2:])


def bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: rows (by index) grouped so that each group's lengths sum to ≤ capacity, every
    row in some group; longer rows are placed first, ties in index order (deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for g, left in enumerate(room):
            if lengths[i] <= left:
                groups[g].append(i)
                room[g] -= lengths[i]
                break
        else:
            groups.append([i])
            room.append(capacity - lengths[i])
    return groups


def pack(input_ids: Tensor, attention_mask: Tensor) -> Packing | None:
    """The packed form of a (B, T) batch (real tokens where attention_mask is 1, in order, position ids
    counting them as `tether.data.position_ids` does), or None when it would not save a row."""
    real = attention_mask.bool()
    lengths = real.sum(-1).tolist()
    capacity = max(lengths, default=0)
    groups = bins(lengths, capacity)
    if capacity == 0 or len(groups) >= input_ids.shape[0]:
        return None
    device, B2 = input_ids.device, len(groups)
    start = torch.zeros(len(lengths), dtype=torch.long)  # each row's first packed flat index
    segment = torch.full((B2, capacity), -1, dtype=torch.long)  # which row owns each packed position
    positions = torch.zeros(B2, capacity, dtype=torch.long)
    for b, group in enumerate(groups):
        offset = 0
        for i in group:
            n = lengths[i]
            start[i] = b * capacity + offset
            segment[b, offset : offset + n] = i
            positions[b, offset : offset + n] = torch.arange(n)
            offset += n
    rank = position_ids(attention_mask).cpu()  # (B, T): a real token's place within its row
    rows = torch.arange(len(lengths))[:, None].expand_as(rank)
    to_packed = (start[rows] + rank)[real.cpu()]  # (N,)
    ids = torch.zeros(B2 * capacity, dtype=input_ids.dtype, device=device)
    ids[to_packed.to(device)] = input_ids[real]
    causal = torch.ones(capacity, capacity, dtype=torch.bool).tril()
    same = segment[:, :, None] == segment[:, None, :]  # (B', C, C)
    mask = same & causal  # the diagonal is always in: no row of the mask is empty (SDPA would give NaN)
    return Packing(
        ids.view(B2, capacity),
        positions.to(device),
        mask[:, None].to(device),
        real,
        to_packed.to(device),
    )


Forward = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def run_packed(model, input_ids: Tensor, attention_mask: Tensor, forward: Forward,
               select: Tensor | None = None) -> Tensor:
    """`forward(input_ids, attention_mask, position_ids, keep)` on the packed batch where `model` supports
    it and packing saves a row, else on the padded one.

    Without `select`, forward returns one value per position, (b, t, ...), and the result is (B, T, ...)
    (0 at padding when packed, the model's values there when not). With `select` (B, T) bool, a subset of
    the real positions, `keep` is that subset in the layout forward sees, forward returns (K, ...) for the
    kept positions in that layout's row-major order, and the result is (N, ...) in `select`'s row-major
    order, N = select.sum().
    """
    packing = pack(input_ids, attention_mask) if _enabled and supports_packing(model) else None
    if packing is None:
        return forward(input_ids, attention_mask, position_ids(attention_mask), select)
    if select is None:
        out = forward(packing.input_ids, packing.attention_mask, packing.position_ids, None)
        return packing.unpack(out)
    if (select.bool() & ~packing.real).any():
        raise ValueError("select marks padding positions")
    chosen = packing.to_packed[select.bool()[packing.real]]  # (N,) packed flat index of each selected one
    keep = torch.zeros(packing.input_ids.numel(), dtype=torch.bool, device=chosen.device)
    keep[chosen] = True
    keep = keep.view_as(packing.input_ids)
    out = forward(packing.input_ids, packing.attention_mask, packing.position_ids, keep)  # (N, ...)
    ordered = torch.empty_like(out)
    ordered[torch.argsort(chosen)] = out  # out[k] belongs to the k-th smallest packed index
    return ordered
