"""The whole InstructGPT pipeline on the embedded lab (or a lab you built): lab → SFT → comparisons → RM → PPO
→ evaluation.

Example: tether run --out runs/demo                 (about 3 minutes on 2 CPU cores)
         tether run --out runs/b1 ppo.kl.beta=0.5   (stage overrides: sft.*, rm.*, ppo.*, lab.*, ...)
         tether run --out runs/dpo --algo dpo       (stage 3: ppo | grpo | rloo | dpo)
         tether run --out runs/cai --feedback ai    (RL-CAI: an AI rater's labels, tether/cai)
Writes RUN/lab, RUN/sft, RUN/compare (the lab's labelers' pairs of SFT samples), RUN/rm, RUN/ppo (each a
run directory), RUN/summary.json and RUN/report.html, and
prints the instruments. --resume continues an interrupted run at the stage it was in.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tether.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="run config (fields of tether.pipeline.RunConfig)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. seed=1, ppo.kl.beta=0.5, sft.train.epochs=2"
    )
    parser.add_argument("--lab", metavar="DIR", help="use this built lab instead of building one")
    parser.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/run-<time>)")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument(
        "--algo",
        choices=("ppo", "grpo", "rloo", "dpo"),
        help="stage 3 (default ppo): ppo, grpo or rloo against the reward model, or dpo without one",
    )
    parser.add_argument(
        "--feedback",
        choices=("human", "ai"),
        help="who labels the pairs (default human): the lab's simulated labelers, or an AI rater following "
        "a constitution (RL-CAI; RUN/cai holds its labels and card)",
    )
    parser.add_argument("--constitution", metavar="FILE.yaml", help="constitution for --feedback ai")
    parser.add_argument("--resume", action="store_true", help="continue --out where it stopped")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_config(args: argparse.Namespace, overrides: list[str]):
    """The RunConfig that --config, --lab, --seed, --algo and KEY=VALUE overrides (stage ones included)
    describe; `tether sweep` builds its own the same way."""
    from tether.pipeline import RunConfig, split_overrides

    plain, staged = split_overrides(overrides)
    if args.lab:
        plain.append(f"lab_dir={args.lab}")
    if args.seed is not None:
        plain.append(f"seed={args.seed}")
    if args.algo:
        plain.append(f"algo={args.algo}")
    if getattr(args, "feedback", None):
        plain.append(f"feedback={args.feedback}")
    if getattr(args, "constitution", None):
        plain.append(f"constitution={args.constitution}")
    cfg = load_config(RunConfig, args.config, plain)
    for stage, items in staged.items():
        getattr(cfg, stage).extend(items)
    return cfg


def run(args: argparse.Namespace) -> int:
    from tether.instruments.report import terminal_table
    from tether.pipeline import run_pipeline
    from tether.trainers.base import TrainingInterrupted

    cfg = run_config(args, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        summary = run_pipeline(cfg, out, resume=args.resume, progress=not args.no_progress)
    except TrainingInterrupted as e:
        print(f"tether run: {e}; continue with: tether run --out {out} --resume", file=sys.stderr)
        return 143
    print()
    print(terminal_table(summary))
    print(f"\nsummary: {out / 'summary.json'}   report: {out / 'report.html'}")
    return 0
