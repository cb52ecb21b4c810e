"""Supervised fine-tuning: masked cross-entropy on prompt/completion or chat-messages demonstrations.

Example: tether sft --config configs/sft.yaml --out runs/sft train.lr=3e-4 data.max_length=128
Writes RUN/config.yaml, metrics.jsonl, checkpoints/, model/ and summary.json (test loss and perplexity).
"""

from __future__ import annotations

import argparse
import sys

from tether.commands.stage import add_stage_arguments, resume_of, run_dir_of, stage_config
from tether.config import SFTConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "sft")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.base import TrainingInterrupted
    from tether.trainers.sft import train_sft

    run_dir = run_dir_of(args, "sft")
    cfg = stage_config(SFTConfig, args, run_dir)
    try:
        train_sft(cfg, run_dir, resume=resume_of(args))
    except TrainingInterrupted as e:
        print(f"tether sft: {e}", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports a process stopped by it
    print(f"tether sft: done, model in {run_dir / 'model'} (summary: {run_dir / 'summary.json'})")
    return 0
