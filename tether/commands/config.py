"""The configuration keys of a stage: every key with its default and what it does.

tether config show ppo        every key of `tether ppo` (as KEY=VALUE overrides or YAML), its default and its
                              one-line docstring; also sft, rm, dpo, grpo, rloo and lab
"""

from __future__ import annotations

import argparse

CHOICES = ["sft", "rm", "dpo", "ppo", "grpo", "rloo", "lab"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", required=True, metavar="{show}",
                                parser_class=type(parser))
    p = sub.add_parser("show", help="every key of a stage's config, its default and docstring",
                       description=__doc__)
    p.add_argument("stage", choices=CHOICES)


def run(args) -> int:
    from tether.config.describe import STAGES, show

    if args.stage == "lab":
        from tether.lab.config import LabConfig

        print(show(LabConfig))
    else:
        print(show(STAGES[args.stage]))
    return 0
