"""PPO against a reward with a KL penalty to the SFT model (InstructGPT stage 3).

Example: tether ppo --config configs/ppo.yaml --out runs/ppo kl.beta=0.1 reward.source=runs/rm/model
The reward is a reward model directory, 'gold' (the lab's gold reward) or 'module:function'.
'module:function' imports that module and runs it, with your rights (any module on sys.path;
RUN/config.yaml's provenance.code records the file imported and its sha256): name only code you trust.
Writes RUN/config.yaml, metrics.jsonl (per iteration: reward, gold, kl, beta, entropy, clipfrac, approx_kl,
value loss, explained variance, response length, tokens/s), checkpoints/, model/ and summary.json
(held-out rewards, KL-from-SFT and win-rate against SFT samples).
"""

from __future__ import annotations

import argparse

from tether.commands.stage import add_stage_arguments, run_stage
from tether.config import PPOConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "ppo")


def run(args: argparse.Namespace) -> int:
    from tether.trainers.ppo import train_ppo

    return run_stage(args, "ppo", PPOConfig, train_ppo, "policy")
