"""Padding-free forward passes: the rows of a padded batch packed end to end into fewer rows.

    out = run_packed(model, input_ids, attention_mask, forward)            # (B, T, ...), 0 at padding
    out = run_packed(model, input_ids, attention_mask, forward, select)    # (N, ...) at select's positions

A padded batch (B, T) spends compute on every padding position: in HH-RLHF pairs the mean row is ~150 tokens
and the padded one ~230. `pack` places the rows' real tokens in bins of length C, at least the batch's own
length (the longest row), first-fit by decreasing length, so B' ≤ B rows of C positions hold them all. Inside
a bin each row keeps its own position ids (0, 1, …, restarting per row) and attends only to itself: a
block-diagonal causal mask (B', 1, C, C). With transformers' SDPA attention the result at every real position
equals the padded batch's to float rounding (tests/test_packing.py); position ids alone would not isolate the
rows. Rows that begin with the same tokens — a preference pair's chosen and rejected rows after their shared
prompt, a GRPO group's G responses to one prompt — compute that prefix once: the later row's own tokens sit
after it in the same bin and attend to the earlier row's copy (same positions, same keys and values, so the
same result), and the prefix's outputs are handed to both rows (their gradients add up, as they would from two
copies). Rows linked that way form a chain that stays in one bin, so a bin is at least as long as the longest
row or the longest chain, whichever is longer (a chain holds at most 2T tokens of its own), and up to twice
that where longer bins hold the chains in fewer positions (`bin_length`: attention's cost grows with C). On
benchmarks/vs_trl.py's 64 HH-RLHF pairs (prompts are two thirds of a row), in batches of 4 pairs with
SmolLM2's tokenizer, the packed batches have 10,938 positions (12,938 in bins only as long as the longest
chain) against 18,272 without sharing and 24,320 padded (15,418 real tokens). A packing that would not compute
fewer positions than the padded batch (B' · C ≥ B · T) is not used.

Models whose attention is not SDPA (eager takes masks as additive floats, flash-attention none at all) run
padded, as does a batch that packing would not shorten; `padded()` turns packing off in a block (benchmarks
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
    attention_mask: Tensor  # (B', 1, C, C) bool: a token sees its row's tokens up to itself; padding, itself
    real: Tensor  # (B, T) bool: the real tokens of the padded batch
    to_packed: Tensor  # (N,) long: packed flat index (b·C + c) of each real token, (B, T) row-major order;
    #                    a shared prefix's tokens have one index for all rows that share it

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
    counting them as `tether.data.position_ids` does), or None when it would not save a position.

    Rows that begin alike (a preference pair's prompt, a GRPO group's) compute their common prefix once
    (`shared_prefixes`): the later row's own tokens attend to the earlier row's copy of it."""
    real = attention_mask.bool()
    rows = [r[m].tolist() for r, m in zip(input_ids.cpu(), real.cpu(), strict=True)]
    lengths = [len(r) for r in rows]
    T = max(lengths, default=0)
    if T == 0:
        return None
    links = shared_prefixes(rows, 2 * T)
    child = {a: i for i, (a, _) in enumerate(links) if a >= 0}
    chains = []  # rows computed together, each after the row it borrows from; by first row index
    for i, (a, _) in enumerate(links):
        if a < 0:
            chains.append([i])
            while chains[-1][-1] in child:
                chains[-1].append(child[chains[-1][-1]])
    chains.sort(key=min)
    own = [sum(lengths[i] - links[i][1] for i in c) for c in chains]
    capacity = bin_length(own, max(T, *own))
    groups = bins(own, capacity)
    B2 = len(groups)
    if B2 * capacity >= len(rows) * T:
        return None
    ids = torch.zeros(B2, capacity, dtype=input_ids.dtype)
    positions = torch.zeros(B2, capacity, dtype=torch.long)
    mask = torch.eye(capacity, dtype=torch.bool).repeat(B2, 1, 1)  # a bin's tail padding sees itself
    where: list[Tensor] = [torch.zeros(0, dtype=torch.long)] * len(rows)  # each row's tokens' flat indices
    for b, group in enumerate(groups):
        offset = 0
        for i in (i for c in group for i in chains[c]):
            a, k = links[i]
            n = lengths[i]
            mine = torch.arange(offset, offset + n - k)  # this row's own tokens' places in the bin
            seen = torch.cat([where[a][:k] - b * capacity, mine]) if k else mine  # all its tokens' places
            ids[b, mine] = torch.tensor(rows[i][k:], dtype=input_ids.dtype)
            positions[b, mine] = torch.arange(k, n)
            mask[b, mine[:, None], seen[None, :]] = torch.arange(n)[None, :] <= torch.arange(k, n)[:, None]
            where[i] = b * capacity + seen
            offset += n - k
    device = input_ids.device
    return Packing(
        ids.to(device),
        positions.to(device),
        mask[:, None].to(device),
        real,
        torch.cat(where).to(device),
    )


# Per layer, attention costs a position ≈ 4·C·hidden FLOPs in a bin of C positions (QKᵀ and the weighted sum
# of values) against ≈ 2 × the layer's parameters for its linear maps: for SmolLM2-135M (hidden 576, 3.54 M
# parameters a layer) C / 3073 of them. Measured on it (the trunk's forward + backward over 1,024 positions,
# 2 cores): as 4 bins of 256 4.84 s, 2 × 512 5.05 s (+4 %), 1 × 1,024 5.84 s (+21 %); this model says +8 %
# and +23 %. Wider models spend a smaller share on attention, so for them it errs towards shorter bins.
ATTENTION_LENGTH = 3073


def bin_length(own: list[int], least: int) -> int:
    """The bin length C ≥ `least` at which chains of `own` tokens pack (`bins`) at the least cost, positions ×
    (1 + C / ATTENTION_LENGTH), among least, least + least/16, …, 2·least (the shortest of equal cost).
    Bins as long as the longest chain leave room that no other chain fills (micro-batches of 4 HH-RLHF
    pairs: 24 % more positions than the chains' tokens), where a somewhat longer bin takes two."""
    def cost(c: int) -> float:
        return len(bins(own, c)) * c * (1 + c / ATTENTION_LENGTH)

    return min(range(least, 2 * least + 1, max(1, least // 16)), key=cost)


def shared_prefixes(rows: list[list[int]], limit: int) -> list[tuple[int, int]]:
    """For each row, (parent, k): its first k tokens are row `parent`'s first k, to be computed once (k = 0,
    parent −1: none). Rows are visited in lexicographic order and each borrows from the one before it, so the
    tokens left to compute are the nodes of the rows' prefix trie (Σ lengths − Σ LCP of sorted neighbours).
    A link is taken when k ≥ max(1, ⌈T / 8⌉) (T the longest row: a few shared tokens, such as a chat
    template's opening, are not worth tying two rows into one longer bin, whose attention costs C²) and the
    chain it joins keeps ≤ `limit` tokens of its own (a chain shares one bin)."""
    T = max((len(r) for r in rows), default=0)
    least = max(1, -(-T // 8))
    order = sorted(range(len(rows)), key=lambda i: (rows[i], i))
    links = [(-1, 0)] * len(rows)
    chain = 0  # tokens of the current chain's own
    for a, b in zip([None, *order], order, strict=False):  # (previous, this)
        k = 0 if a is None else _common(rows[a], rows[b])
        if a is not None and k >= least and chain + len(rows[b]) - k <= limit:
            links[b] = (a, k)
            chain += len(rows[b]) - k
        else:
            chain = len(rows[b])
    return links


def _common(x: list[int], y: list[int]) -> int:
    """Length of the common prefix of x and y."""
    n = 0
    for u, v in zip(x, y, strict=False):
        if u != v:
            break
        n += 1
    return n


Forward = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def run_packed(model, input_ids: Tensor, attention_mask: Tensor, forward: Forward,
               select: Tensor | None = None) -> Tensor:
    """`forward(input_ids, attention_mask, position_ids, keep)` on the packed batch where `model` supports
    it and packing saves positions (`pack`), else on the padded one.

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
    places, which = torch.unique(chosen, return_inverse=True)  # ascending; a shared prefix's place repeats
    keep = torch.zeros(packing.input_ids.numel(), dtype=torch.bool, device=chosen.device)
    keep[places] = True
    keep = keep.view_as(packing.input_ids)
    out = forward(packing.input_ids, packing.attention_mask, packing.position_ids, keep)  # (K, ...) ascending
    return out[which]  # (N, ...): a shared place's value to every row that selected it (gradients add up)
