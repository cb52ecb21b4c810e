"""RLOO: REINFORCE with a leave-one-out baseline and the KL to the SFT model in the reward
(Ahmadian et al. 2024, "Back to Basics", sec. 3).

    run_dir = train_rloo(load_config(RLOOConfig, "configs/rloo.yaml"), "runs/rloo")

For each prompt, k = rloo.k responses y_1..y_k from π_old; each one's reward is the sequence-level
KL-shaped score R_i = r_i − β·Σ_t (log π_old(y_t) − log π_ref(y_t)) (k1 summed; kl.estimator picks another
per-token estimate), and its advantage is R_i − (1/(k − 1))·Σ_{j≠i} R_j (tether.losses.rloo_advantages),
an unbiased baseline because it does not depend on y_i. The loss is the clipped surrogate with one advantage
per response and per-response token sums, mean over responses (`grpo_loss` with β = 0 in the loss,
aggregation token_sum): at ρ = π/π_old = 1 its gradient is −(1/B)·Σ_i A_i·∇log π(y_i), the RLOO estimator.
With rloo.epochs = 1 and train.batch_size = all the iteration's responses, every step is at ρ = 1, so this
is exactly RLOO; more steps per batch are PPO-clipped (clip_eps) as the paper's comparison does with PPO.
Its optimum, like PPO's, is π* ∝ π_ref·exp(r/β). β may be fixed or adaptive (kl.adaptive); β = 0 (fixed)
trains without the reference model.

The run directory, checkpoints, resume and summary.json are PPO's (tether.trainers.rl); the iteration is
tether.trainers.group's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tether.config import RLOOConfig
from tether.losses import rloo_advantages
from tether.trainers.base import claim_run
from tether.trainers.group import GroupTrainer
from tether.trainers.group_step import GroupLoss
from tether.trainers.rl import kl_controller


class RLOOTrainer(GroupTrainer):
    stage = "rloo"

    def needs_reference(self) -> bool:
        return self.cfg.kl.beta > 0 or self.cfg.kl.adaptive

    def setup(self) -> None:
        self.kl_ctl = kl_controller(self.cfg)

    def epochs(self) -> int:
        return self.cfg.rloo.epochs

    def max_approx_kl(self) -> float | None:
        return self.cfg.rloo.max_approx_kl

    def group_size(self) -> int:
        return self.cfg.rloo.k

    def beta_in_reward(self) -> float:
        return self.kl_ctl.value if self.ref is not None else 0.0

    def kl_estimator(self) -> str:
        return self.cfg.kl.estimator

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        return rloo_advantages(rewards, self.group_size())

    def loss_args(self) -> GroupLoss:
        eps = self.cfg.rloo.clip_eps
        return GroupLoss(beta=0.0, eps_low=eps, eps_high=eps, aggregation="token_sum")

    def after_update(self, kl: torch.Tensor | None, n: int) -> None:
        if kl is not None:
            self.kl_ctl.update(kl.mean(), n_steps=n)

    def extra(self) -> dict:
        return {**super().extra(), "kl_controller": self.kl_ctl.state_dict()}

    def load_extra(self, extra: dict) -> None:
        super().load_extra(extra)
        self.kl_ctl.load_state_dict(extra["kl_controller"])

    def summary_fields(self) -> dict:
        return {"beta": self.kl_ctl.value, "k": self.cfg.rloo.k}


def train_rloo(cfg: RLOOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by RLOO on `cfg.reward` with a KL penalty to `cfg.policy` in the reward; returns the
    run directory. resume: True continues from the run's latest checkpoint, a path from that checkpoint.
    Raises `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    with claim_run(out, "rloo", cfg, resume):  # the run directory's lock while it runs
        return RLOOTrainer(cfg, out, resume).run()
