"""RLOO: k samples per prompt, leave-one-out baseline, the KL to the SFT model in the reward (Ahmadian et al.
2024).

Example: tether rloo --config configs/rloo.yaml --out runs/rloo kl.beta=0.5 rloo.k=4
The reward is a reward model directory, 'gold' (the lab's gold reward) or 'module:function', plus any
weighted reward.extra terms; each score pays β·Σ_t log π/π_ref before the baseline.
'module:function' imports that module and runs it, with your rights (any module on sys.path;
RUN/config.yaml's provenance.code records the file imported and its sha256): name only code you trust.
Writes RUN/config.yaml, metrics.jsonl (per iteration: reward, gold, kl, beta, equal_reward_groups,
clipfrac, entropy, response length...), checkpoints/, model/ and summary.json (held-out rewards,
KL-from-SFT and win-rate against SFT samples).
"""

from __future__ import annotations

import argparse

from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import RLOOConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "rloo")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.rloo import train_rloo

    return run_stage(args, "rloo", RLOOConfig, train_rloo, "policy")
