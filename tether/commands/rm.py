"""Reward model: the SFT trunk with a scalar head, trained with the Bradley-Terry loss on preference pairs.

Example: tether rm --config configs/rm.yaml --out runs/rm model=runs/sft/model train.lr=3e-4
Writes RUN/config.yaml, metrics.jsonl, checkpoints/, model/ and summary.json (held-out pairwise accuracy
against the 0.65 pass threshold, margin and calibration).

`tether rm probe --rm DIR ...` searches a trained reward model for adversarial responses instead (see
tether/commands/rm_probe.py); a leading `probe` selects it.
"""

from __future__ import annotations

import argparse

from tether.commands.rm_probe import add_probe_arguments, probe_options_given, run_probe_command
from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import RMConfig
from tether.errors import TetherError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rm")
    add_probe_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.overrides[:1] == ["probe"]:
        return run_probe_command(args)
    given = probe_options_given(args)
    if given:
        raise TetherError(f"{', '.join(given)}: only with `tether rm probe`")
    from tether.trainers.rm import train_rm

    return run_stage(args, "rm", RMConfig, train_rm, "reward model")
