"""A tiny GRPO/RLOO set-up shared by tests/test_grpo.py and tests/test_rloo.py: PPO's tiny SFT model and
prompt files (ppo_helpers), the toy reward `ppo_helpers:count_a`, and small, fast settings."""

from __future__ import annotations

from pathlib import Path

import torch
from ppo_helpers import TOY_REWARD
from safetensors.torch import load_file

from tether.config import GRPOConfig, RLOOConfig, load_config
from tether.trainers.grpo import grpo_algorithm
from tether.trainers.rl import RLRun
from tether.trainers.rloo import rloo_algorithm


def group_overrides(paths: dict[str, Path], *extra: str, **train) -> list[str]:
    """8 prompts × 4 samples × 4 tokens per iteration, 2 optimizer steps of 16 responses each."""
    loop = {"lr": 1e-2, "batch_size": 16, "micro_batch_size": 8, "progress": False, **train}
    return [
        f"policy={paths['policy']}",
        f"data.train={paths['train']}",
        f"data.test={paths['test']}",
        f"reward.source={TOY_REWARD}",
        "reward.no_eos=keep",  # scores are exactly the reward source's (hand-derived advantages)
        "iterations=4",
        "rollout.batch_size=8",
        "rollout.max_new_tokens=4",
        "eval.max_prompts=8",
        *(f"train.{k}={v}" for k, v in loop.items()),
        *extra,
    ]


def captured_step(trainer):
    """Run trainer.step() with the update replaced by one that records what it was given; returns the
    experience and the loss function of a micro-batch."""
    seen = {}

    def update(exp, loss_fn):
        seen.update(exp=exp, loss_fn=loss_fn)
        return {}

    trainer.update = update
    trainer.step()
    return seen["exp"], seen["loss_fn"]


def grpo_run(cfg: GRPOConfig, out) -> RLRun:
    """The run `train_grpo` would make (not yet trained)."""
    return RLRun(cfg, out, algorithm=grpo_algorithm)


def rloo_run(cfg: RLOOConfig, out) -> RLRun:
    """The run `train_rloo` would make (not yet trained)."""
    return RLRun(cfg, out, algorithm=rloo_algorithm)


def grpo_config(paths, *extra: str, **train) -> GRPOConfig:
    return load_config(GRPOConfig, None, ["grpo.group_size=4", *group_overrides(paths, *extra, **train)])


def rloo_config(paths, *extra: str, **train) -> RLOOConfig:
    overrides = ["rloo.k=4", "kl.beta=0.1", *group_overrides(paths, *extra, **train)]
    return load_config(RLOOConfig, None, overrides)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def fixed_reward(values: list[float]):
    """A reward source that returns `values` whatever the responses (for hand-derived advantages)."""
    return lambda prompts, responses: torch.tensor(values[: len(responses)], dtype=torch.float32)
