"""DPO: train the policy directly on preference pairs, no reward model (or IPO, robust, hinge variants).

Example: tether dpo --config configs/dpo.yaml --out runs/dpo policy=runs/sft/model beta=0.1
Writes RUN/config.yaml, ref_logprobs.pt (the cached reference log-probs), metrics.jsonl, checkpoints/,
model/ and summary.json (held-out preference accuracy and the sampled KL from the reference).
"""

from __future__ import annotations

import argparse

from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import DPOConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "dpo")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.dpo import train_dpo

    return run_stage(args, "dpo", DPOConfig, train_dpo, "policy")
