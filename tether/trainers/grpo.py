"""GRPO: group-relative policy optimisation, a clipped policy gradient without a critic (Shao et al. 2024).

    run_dir = train_grpo(load_config(GRPOConfig, "configs/grpo.yaml"), "runs/grpo")

For each prompt, G = grpo.group_size responses y_1..y_G from π_old; their scores r_i (several weighted
reward sources allowed) give the advantages Â_i = (r_i − mean(r)) / std(r) of the group (sec. 4.1.2,
outcome supervision; `grpo.scale` picks the group's std, the batch's or none), and the loss is eq. 3
negated: per token −min(ρÂ, clip(ρ, 1 − ε_low, 1 + ε_high)Â) + β·k3(π, π_ref), with k3 the estimator of
eq. 4, aggregated as `grpo.aggregation` says (tether.losses.grpo_loss). β = 0 trains without the reference
model (the evaluation loads the starting model for its comparison).

`grpo.kl_in_reward` moves the KL out of the loss: each score becomes r_i − β·Σ_t (log π_old − log π_ref)
(k1, as in RLOO and PPO) before the group baseline. With scale=none and aggregation=token_sum this is
REINFORCE with a group-mean baseline on E[r] − β·KL(π‖π_ref), whose optimum is π* ∝ π_ref·exp(r/β); the
paper's form (k3 in the loss, std scaling, sequence_mean) optimises a different objective.

The run directory, checkpoints, resume and summary.json are PPO's (tether.trainers.rl); the iteration is
tether.trainers.group's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tether.config import GRPOConfig
from tether.losses import grpo_advantages
from tether.trainers.base import claim_run
from tether.trainers.group import GroupTrainer
from tether.trainers.group_step import GroupLoss


class GRPOTrainer(GroupTrainer):
    stage = "grpo"

    def needs_reference(self) -> bool:
        return self.cfg.grpo.beta > 0

    def epochs(self) -> int:
        return self.cfg.grpo.epochs

    def max_approx_kl(self) -> float | None:
        return self.cfg.grpo.max_approx_kl

    def group_size(self) -> int:
        return self.cfg.grpo.group_size

    def beta_in_reward(self) -> float:
        g = self.cfg.grpo
        return g.beta if g.kl_in_reward else 0.0

    def kl_estimator(self) -> str:
        return "k1"  # in the reward with kl_in_reward; else only measured (the loss has its own k3)

    def logged_beta(self) -> float:
        return self.cfg.grpo.beta

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return grpo_advantages(rewards, self.group_size(), self.cfg.grpo.scale)

    def loss_args(self) -> GroupLoss:
        g = self.cfg.grpo
        return GroupLoss(
            beta=0.0 if g.kl_in_reward else g.beta,
            eps_low=g.eps_low,
            eps_high=g.eps_high,
            aggregation=g.aggregation,
            max_tokens=self.cfg.rollout.max_new_tokens,
        )

    def summary_fields(self) -> dict:
        g = self.cfg.grpo
        return {"beta": g.beta, "group_size": g.group_size, "kl_in_reward": g.kl_in_reward}


def train_grpo(cfg: GRPOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by GRPO on `cfg.reward` (KL to `cfg.policy` with coefficient grpo.beta); returns the
    run directory. resume: True continues from the run's latest checkpoint, a path from that checkpoint.
    Raises `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    with claim_run(out, "grpo", cfg, resume):  # the run directory's lock while it runs
        return GRPOTrainer(cfg, out, resume).run()
