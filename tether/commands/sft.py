"""Supervised fine-tuning: masked cross-entropy on prompt/completion or chat-messages demonstrations.

Example: tether sft --config configs/sft.yaml --out runs/sft train.lr=3e-4 data.max_length=128
Writes RUN/config.yaml, metrics.jsonl, checkpoints/, model/ and summary.json (test loss and perplexity).
"""

from __future__ import annotations

import argparse

from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import SFTConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "sft")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.sft import train_sft

    return run_stage(args, "sft", SFTConfig, train_sft, "model")
