"""`tether <command>`: a thin layer over the Python API.

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> int`; this file only
collects them. A `TetherError`, or a write the disk refuses (full, read-only, no permission), becomes one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from tether import __version__
from tether.errors import TetherError

# (command name, module, one-line help)
COMMANDS = [
    ("optimal-policy", "tether.commands.optimal_policy", "closed-form optimum pi* ∝ prior·exp(r/beta)"),
    ("lab", "tether.commands.lab", "build or score the embedded lab"),
    ("sft", "tether.commands.sft", "supervised fine-tuning on demonstrations"),
    ("rm", "tether.commands.rm", "Bradley-Terry reward model on preference pairs"),
    ("ppo", "tether.commands.ppo", "PPO with a KL penalty to the SFT model"),
    ("grpo", "tether.commands.grpo", "GRPO: group-normalised advantages, clipped surrogate, no critic"),
    ("rloo", "tether.commands.rloo", "RLOO: leave-one-out baseline, KL to the SFT model in the reward"),
    ("dpo", "tether.commands.dpo", "DPO (or IPO, robust, hinge) on preference pairs, no reward model"),
    ("run", "tether.commands.run", "the whole pipeline: lab → SFT → RM → PPO → evaluation"),
    ("cai", "tether.commands.cai", "Constitutional AI: AI preference labels and critique-revision data"),
    ("sweep", "tether.commands.sweep", "stage 3 once per beta, best-of-n reference, beta recommended"),
    ("verify", "tether.commands.verify", "check that each optimiser reaches pi* on an enumerable task"),
    ("merge", "tether.commands.merge", "merge a LoRA adapter into its base: a full model directory"),
    ("eval", "tether.commands.eval", "every instrument of a policy against its base, reward-hacking verdict"),
    ("models", "tether.commands.models", "fetch a known real model (SmolLM2) as a Hugging Face directory"),
    ("data", "tether.commands.data", "import real preference data (HH-RLHF) into tether's formats"),
    ("config", "tether.commands.config", "every key of a stage's config, with its default and meaning"),
]


DISK_REFUSALS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class _Parser(argparse.ArgumentParser):
    _intermixed = False  # inside parse_known_intermixed_args, which calls parse_known_args itself

    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        """A command's positionals (its key=value overrides) may sit anywhere among its options
        (`tether dpo policy=X --out Y beta=0.2`): argparse alone ends the positional list at the first
        option and calls the rest unrecognized. A parser with sub-commands parses as usual, its sub-parsers
        this way."""
        if self._intermixed or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tether", description="Reinforcement learning from human feedback.")
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except TetherError as e:
        print(f"tether {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk refused a write (full, read-only, no permission): not a bug, one line
        if e.errno not in DISK_REFUSALS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"tether {args.command}: error: {e.strerror}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
