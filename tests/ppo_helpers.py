"""A tiny PPO set-up shared by the PPO tests: the plumbing tests' tiny Llama as the SFT model, prompt
files of random words, and a toy reward that `tether.rewards` imports as `ppo_helpers:count_a`."""

from __future__ import annotations

import random
from pathlib import Path

from plumbing_helpers import WORDS, write_jsonl, write_model_dir

from tether.config import PPOConfig, load_config
from tether.trainers.ppo import ppo_algorithm
from tether.trainers.rl import RLRun

TOY_REWARD = "ppo_helpers:count_a"


def count_a(prompts: list, responses: list[str]) -> list[float]:
    """The toy reward: how many times the word "a" appears in the response."""
    return [float(r.split().count("a")) for r in responses]


def prompt_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))} for _ in range(n)]


def ppo_setup(tmp: Path) -> dict[str, Path]:
    """An SFT model directory (a random tiny Llama) and train/test prompt files under `tmp`."""
    return {
        "policy": write_model_dir(tmp / "sft"),
        "train": write_jsonl(tmp / "prompts.train.jsonl", prompt_records(32, seed=1)),
        "test": write_jsonl(tmp / "prompts.test.jsonl", prompt_records(8, seed=2)),
    }


def ppo_overrides(paths: dict[str, Path], *extra: str, **train) -> list[str]:
    """key=value overrides for a small, fast run: 16 prompts × 4 tokens per iteration, minibatches of 8."""
    loop = {"lr": 1e-2, "batch_size": 8, "micro_batch_size": 4, "progress": False, **train}
    return [
        f"policy={paths['policy']}",
        f"data.train={paths['train']}",
        f"data.test={paths['test']}",
        f"reward.source={TOY_REWARD}",
        "iterations=4",
        "rollout.batch_size=16",
        "rollout.max_new_tokens=4",
        "ppo.epochs=2",
        "eval.max_prompts=8",
        *(f"train.{k}={v}" for k, v in loop.items()),
        *extra,
    ]


def ppo_config(paths: dict[str, Path], *extra: str, **train) -> PPOConfig:
    return load_config(PPOConfig, None, ppo_overrides(paths, *extra, **train))


def ppo_run(cfg: PPOConfig, out) -> RLRun:
    """The run `train_ppo` would make (not yet trained)."""
    return RLRun(cfg, out, algorithm=ppo_algorithm)
