"""GRPO: G samples per prompt, group-normalised advantages, clipped surrogate, no critic (Shao et al. 2024).

Example: tether grpo --config configs/grpo.yaml --out runs/grpo grpo.beta=0.04 reward.source=gold
The reward is a reward model directory, 'gold' (the lab's gold reward) or 'module:function', plus any
weighted reward.extra terms. grpo.beta=0 trains without the reference model; grpo.kl_in_reward=true
grpo.scale=none grpo.aggregation=token_sum is the form whose optimum is π* ∝ π_ref·exp(r/β).
'module:function' imports that module and runs it, with your rights (any module on sys.path;
RUN/config.yaml's provenance.code records the file imported and its sha256): name only code you trust.
Writes RUN/config.yaml, metrics.jsonl (per iteration: reward, gold, kl, equal_reward_groups, clipfrac,
entropy, response length...), checkpoints/, model/ and summary.json (held-out rewards, KL-from-SFT and
win-rate against SFT samples).
"""

from __future__ import annotations

import argparse

from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import GRPOConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "grpo")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.grpo import train_grpo

    return run_stage(args, "grpo", GRPOConfig, train_grpo, "policy")
