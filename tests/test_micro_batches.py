"""How a step's examples become micro-batches (tether.trainers.supervised.micro_batches): in order, grouped
by length, or cut to a token budget; and that the trained weights do not depend on the grouping."""

import pytest
import torch
from plumbing_helpers import sft_config, sft_setup
from safetensors.torch import load_file

from tether.trainers.sft import train_sft
from tether.trainers.supervised import micro_batches

# items are their own (rows, length)
ITEMS = [(1, 5), (1, 9), (2, 3), (1, 9), (1, 2), (2, 7)]


def shape(item):
    return item


def test_in_order_runs_of_size():
    assert micro_batches(ITEMS, shape, 4, None, False) == [ITEMS[:4], ITEMS[4:]]


def test_grouped_by_decreasing_length_ties_in_order():
    """Lengths 5 9 3 9 2 7 sorted: 9 (item 1), 9 (item 3), 7, 5, 3, 2; then runs of 4."""
    got = micro_batches(ITEMS, shape, 4, None, True)
    assert got == [[(1, 9), (1, 9), (2, 7), (1, 5)], [(2, 3), (1, 2)]]


def test_token_budget_by_hand():
    """Budget 20 tokens, rows × longest row: (1, 9) → 9; + (1, 9) → 2 × 9 = 18; + (2, 7) → 4 × 9 = 36 > 20,
    new; (2, 7) → 14; + (1, 5) → 3 × 7 = 21 > 20, new; (1, 5) → 5; + (2, 3) → 3 × 5 = 15; + (1, 2) → 4 × 5 =
    20 ≤ 20. An item over the budget on its own still gets a micro-batch (budget 4: every item alone)."""
    got = micro_batches(ITEMS, shape, 99, 20, False)
    assert got == [[(1, 9), (1, 9)], [(2, 7)], [(1, 5), (2, 3), (1, 2)]]
    assert micro_batches(ITEMS, shape, 99, 4, False) == [[x] for x in sorted(ITEMS, key=lambda x: -x[1])]


def _weights(run):
    return load_file(run / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return sft_setup(tmp_path_factory.mktemp("micro"))


@pytest.mark.parametrize("train", [{"group_by_length": True}, {"micro_batch_tokens": 40}],
                         ids=["group_by_length", "micro_batch_tokens"])
def test_the_weights_do_not_depend_on_the_grouping(setup, tmp_path, train):
    """Three SFT steps of 8 examples: in order (micro-batches of 4), grouped by length, or cut at 40 tokens,
    the step's loss is the same sum divided by the same token count, so the weights agree to rounding. Adam
    divides each gradient by its running RMS, so the rounding of a gradient near 0 (micro-batches packed
    otherwise) can move its weight by up to ~lr: measured 1.1e-5 at most, against ≥ 1e-3 moved."""
    steps = {"max_steps": 3, "save_every": 0}
    plain = train_sft(sft_config(setup, **steps), tmp_path / "plain")
    other = train_sft(sft_config(setup, **steps, **train), tmp_path / "other")
    a, b = _weights(plain), _weights(other)
    assert a.keys() == b.keys()
    moved = max(float((a[k] - load_file(setup["model"] / "model.safetensors")[k]).abs().max()) for k in a)
    assert moved > 1e-3  # the steps did train
    for k in a:
        assert torch.allclose(a[k], b[k], atol=3e-5), k
