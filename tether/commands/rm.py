"""Reward model: the SFT trunk with a scalar head, trained with the Bradley-Terry loss on preference pairs.

Example: tether rm --config configs/rm.yaml --out runs/rm model=runs/sft/model train.lr=3e-4
Writes RUN/config.yaml, metrics.jsonl, checkpoints/, model/ and summary.json (held-out pairwise accuracy
against the 0.65 pass threshold, margin and calibration).
"""

from __future__ import annotations

import argparse

from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import RMConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rm")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.rm import train_rm

    return run_stage(args, "rm", RMConfig, train_rm, "reward model")
