"""benchmarks/steps.py's position count (the "computed" FLOPs); the timed stages need a real model."""

from pathlib import Path

import torch
from plumbing_helpers import load_script

from tether.models import build_tiny_llama

steps = load_script(Path(__file__).parent.parent / "benchmarks" / "steps.py", "steps_bench")


def test_positions_counts_token_embedding_inputs_by_gradient_mode():
    """A (2, 5) batch with gradients recorded: 10 trained positions; a (3, 4) one under no_grad: 12 forward
    ones; a pass while not counting adds nothing, nor does an embedding of fewer than 1000 rows (not a
    vocabulary)."""
    model = build_tiny_llama(1000, hidden_size=16, num_layers=1, num_heads=2)
    small = torch.nn.Embedding(10, 4)
    positions = steps.Positions()
    try:
        positions.counting = True
        model(input_ids=torch.zeros(2, 5, dtype=torch.long))
        small(torch.zeros(7, dtype=torch.long))
        with torch.no_grad():
            model(input_ids=torch.zeros(3, 4, dtype=torch.long))
        positions.counting = False
        model(input_ids=torch.zeros(1, 9, dtype=torch.long))
    finally:
        positions.handle.remove()
    assert (positions.train, positions.forward) == (10, 12)
