"""The whole-batch statistics of tether.trainers.distributed, with two "processes" played by two threads
that meet in a fake all-reduce: the statistics of the shards must be those of the concatenated batch,
computed independently by the single-batch functions (masked_mean / masked_var, whiten, grpo_advantages)."""

import threading

import torch

from tether.losses import grpo_advantages, whiten
from tether.losses._reduce import masked_mean, masked_var
from tether.trainers.distributed import gathered_rows, global_moments, shard_seed


class FakeGroup:
    """all_sum / all_gather across `n` threads: each call waits for the other threads' matching call."""

    def __init__(self, n: int):
        self.n, self.barrier, self.slots = n, threading.Barrier(n), [None] * n

    def _exchange(self, rank: int, t: torch.Tensor) -> list[torch.Tensor]:
        self.barrier.wait()
        self.slots[rank] = t
        self.barrier.wait()
        got = list(self.slots)
        self.barrier.wait()
        return got

    def all_sum(self, rank):
        return lambda t: torch.stack(self._exchange(rank, t)).sum(0)

    def all_gather(self, rank):
        return lambda t: torch.cat(self._exchange(rank, t))


def on_two(fn, *shards):
    """fn(rank, group, shard) on two threads; returns the two results."""
    group, out = FakeGroup(2), [None, None]

    def run(rank):
        out[rank] = fn(rank, group, shards[rank])

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    mask = (torch.rand(6, 5, generator=g) < 0.7).long()
    mask[:, 0] = 1
    return x, mask


def test_global_moments_of_two_shards_are_those_of_the_whole_batch():
    x, mask = batch()
    shards = (x[:3], mask[:3]), (x[3:], mask[3:])
    got = on_two(lambda r, g, s: global_moments(s[0], s[1], g.all_sum(r)), *shards)
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    for m, v in got:
        assert torch.allclose(m, mean) and torch.allclose(v, var)


def test_whitening_with_global_moments_equals_whitening_the_whole_batch():
    x, mask = batch()

    def shard_whiten(rank, group, s):
        return whiten(s[0], s[1], moments=global_moments(s[0], s[1], group.all_sum(rank)))

    got = on_two(shard_whiten, (x[:3], mask[:3]), (x[3:], mask[3:]))
    assert torch.allclose(torch.cat(got), whiten(x, mask))
    assert not torch.allclose(got[0], whiten(x[:3], mask[:3]))  # a shard's own statistics differ


def test_group_advantages_with_a_batch_scale_on_gathered_rewards():
    """4 groups of 3; each process holds 2 whole groups. The batch std is the whole batch's."""
    r = torch.tensor([1.0, 0.0, 2.0, 3.0, 3.0, 1.0, 0.5, 0.0, 0.0, 4.0, 1.0, 2.0])

    def adv(rank, group, s):
        return gathered_rows(lambda x: grpo_advantages(x, 3, "batch"), s, group.all_gather(rank), rank)

    got = on_two(adv, r[:6], r[6:])
    assert torch.allclose(torch.cat(got), grpo_advantages(r, 3, "batch"))
    assert not torch.allclose(got[0], grpo_advantages(r[:6], 3, "batch"))


def test_process_zero_keeps_the_seed_and_others_differ():
    assert shard_seed(1234, 0) == 1234
    assert len({shard_seed(1234, r) for r in range(8)}) == 8
