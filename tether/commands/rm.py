"""Reward model: the SFT trunk with a scalar head, trained with the Bradley-Terry loss on preference pairs.

Example: tether rm --config configs/rm.yaml --out runs/rm model=runs/sft/model train.lr=3e-4
Writes RUN/config.yaml, metrics.jsonl, checkpoints/, model/ and summary.json (held-out pairwise accuracy
against the 0.65 pass threshold, margin and calibration).
"""

from __future__ import annotations

import argparse
import sys

from tether.commands.stage import add_stage_arguments, resume_of, run_dir_of, stage_config
from tether.config import RMConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rm")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.base import TrainingInterrupted
    from tether.trainers.rm import train_rm

    run_dir = run_dir_of(args, "rm")
    cfg = stage_config(RMConfig, args, run_dir)
    try:
        train_rm(cfg, run_dir, resume=resume_of(args))
    except TrainingInterrupted as e:
        print(f"tether rm: {e}", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports a process stopped by it
    print(f"tether rm: done, reward model in {run_dir / 'model'} (summary: {run_dir / 'summary.json'})")
    return 0
