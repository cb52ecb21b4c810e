"""PPO with a KL penalty to the SFT model (InstructGPT stage 3; Ouyang et al. 2022, Ziegler et al. 2019).

    run_dir = train_ppo(load_config(PPOConfig, "configs/ppo.yaml"), "runs/ppo")

Models: the policy starts from the SFT model (`cfg.policy`); the reference is a frozen copy of it; the
critic is a separate model with a scalar head (tether.reward_model's format), initialised from the reward
model when the reward is one (InstructGPT) or else from the SFT trunk with a new head. It does not share
weights with the policy, so the value loss cannot pull the policy's features around, and a critic that
starts as the reward model already predicts the final score. Policy and critic share one AdamW (the Loop's).

Each iteration: take the next `rollout.batch_size` prompts (a seeded permutation per pass over the data) →
sample one response each with the KV cache → cut at stop strings → score (tether.rewards; running
normalisation and the no-EOS penalty when configured) → old, reference log-probs and values → per-token KL
→ KL-shaped rewards → GAE → whitening (tether.trainers.ppo_step) → `ppo.epochs` passes over shuffled
minibatches of `train.batch_size` responses, one optimizer step each → β update. Dropout stays off in every
model, so the ratio π/π_old is exactly 1 before the first update of an iteration.

Writes RUN/config.yaml, metrics.jsonl (one "train" record per iteration; "eval" records), checkpoints/
(policy at the root, the critic in value/, extra = iteration, β controller, reward moments, data position),
RUN/model/ (the policy, HF-loadable) and summary.json (held-out rewards, KL-from-SFT, win-rate vs SFT).
Sampling and minibatch order are seeded by (seed, iteration), so `--resume` continues exactly. What PPO
shares with GRPO and RLOO (rollouts, reward conditioning, the update loop, evaluation, the run) is in
tether.trainers.rl.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tether.config import PPOConfig
from tether.errors import TetherError
from tether.rewards import is_reward_model_dir, load_reward
from tether.rollout import decode_responses
from tether.trainers.base import claim_run
from tether.trainers.ppo_step import Experience, explained_variance, make_experience, minibatch_loss
from tether.trainers.rl import RLTrainer, iteration_seed, kl_controller
from tether.trainers.rl import cut_at_stop as cut_at_stop  # re-exported: where PPO's users found it

# --------------------------------------------------------------------------------------------- set-up


def check_config(cfg: PPOConfig) -> None:
    """What the config's own rules (tether.config.validate) cannot know: the critic needs a reward model."""
    if critic_kind(cfg) == "rm" and not is_reward_model_dir(cfg.reward.source):
        raise TetherError(
            f"critic=rm needs reward.source to be a reward model directory, got "
            f"{cfg.reward.source!r} (use critic=policy)"
        )


def critic_kind(cfg: PPOConfig) -> str:
    """'rm' or 'policy': 'auto' is rm when the reward is a reward model directory."""
    if cfg.critic != "auto":
        return cfg.critic
    return "rm" if is_reward_model_dir(cfg.reward.source) else "policy"


def load_critic(cfg: PPOConfig):
    """The value model: a trainable copy of the reward model, or the SFT trunk with a scalar head set to 0
    (a randomly initialised head would start with values of ±0.5 that swamp the first advantages).

    With LoRA the critic gets its own adapters (cfg.lora) on its frozen trunk and trains its head in full: it
    starts from other weights than the policy (the reward model) or needs features of its own, so it shares
    no adapters with the policy; it is still a second model in memory."""
    from tether import lora
    from tether.reward_model import create_reward_model, load_reward_model, score_head

    if critic_kind(cfg) == "rm":
        model, _ = load_reward_model(cfg.reward.source, dtype=cfg.dtype)
    else:
        model, _ = create_reward_model(cfg.policy, cfg.tokenizer, cfg.dtype, cfg.trust_remote_code)
        torch.nn.init.zeros_(score_head(model).weight)
    model = model.eval().requires_grad_(True)
    if lora.enabled(cfg.lora):
        source = cfg.reward.source if critic_kind(cfg) == "rm" else cfg.policy
        model = lora.add_adapters(model, cfg.lora, "seq_cls", source)
    return model


class PPOTrainer(RLTrainer):
    """Models, data, reward, β controller and loop of one PPO run; `run()` trains it to the end."""

    stage = "ppo"

    def check_config(self, cfg: PPOConfig) -> None:
        check_config(cfg)

    def extra_models(self) -> dict:
        return {"value": load_critic(self.cfg)}

    def total_steps(self) -> int:
        cfg = self.cfg
        return cfg.iterations * cfg.ppo.epochs * (cfg.rollout.batch_size // cfg.train.batch_size)

    def load_reward_fn(self):
        return load_reward(self.cfg.reward.source, device=self.device)

    def setup(self) -> None:
        self.kl_ctl = kl_controller(self.cfg)

    def epochs(self) -> int:
        return self.cfg.ppo.epochs

    def max_approx_kl(self) -> float | None:
        return self.cfg.ppo.max_approx_kl

    @property
    def critic(self):
        return self.loop.models["value"]

    def extra(self) -> dict:
        return {**super().extra(), "kl_controller": self.kl_ctl.state_dict()}

    def load_extra(self, extra: dict) -> None:
        super().load_extra(extra)
        self.kl_ctl.load_state_dict(extra["kl_controller"])

    def summary_fields(self) -> dict:
        return {"beta": self.kl_ctl.value, "critic": critic_kind(self.cfg)}

    # ----------------------------------------------------------------------------------- one iteration

    def step(self) -> dict:
        """One rollout-and-update iteration; returns its metrics."""
        cfg, t0 = self.cfg, time.perf_counter()
        items = self.prompt_batch(self.iteration)
        rollout = self.rollout(items, iteration_seed(cfg.seed, self.iteration, 0))
        prompts = [x.example.prompt for x in items]
        responses = decode_responses(self.tokenizer, rollout)
        raw = self.reward(prompts, responses)  # (B,)
        scores = self.condition(raw, rollout.ended)
        beta = self.kl_ctl.value
        all_sum = self.loop.all_sum if self.loop.world > 1 else None  # whiten over every process's tokens
        with self.loop.autocast():  # reference and critic in the policy's precision (step-0 KL exactly 0)
            exp = make_experience(self.policy, self.ref, self.critic, rollout, scores, beta, cfg, all_sum)
        t1 = time.perf_counter()
        update = self.update(exp, torch.Generator().manual_seed(iteration_seed(cfg.seed, self.iteration, 1)))
        kl = exp.kl.sum(-1)  # (B,) sequence KL estimates, nats
        every_kl = self.loop.all_gather(kl)  # the controller sees the whole batch on every process
        self.kl_ctl.update(every_kl.mean(), n_steps=every_kl.numel())
        tokens = int(exp.mask.sum())
        record = {
            "iteration": self.iteration + 1,
            "reward": float(raw.mean()),
            "gold": self.gold_mean(prompts, responses, raw),
            "score": float(scores.mean()),
            "kl": float(kl.mean()),
            "beta": beta,
            "response_length": tokens / exp.size,
            "ended": float(rollout.ended.float().mean()),
            "explained_variance": explained_variance(exp.old_values, exp.returns, exp.mask),
            **update,
            "rollout_s": t1 - t0,
            "tokens_per_s": tokens / (time.perf_counter() - t0),
        }
        return record

    def minibatch_loss(self, part: Experience, num_tokens, num_sequences: int):
        return minibatch_loss(self.policy, self.critic, part, self.cfg.ppo, num_tokens, self.ref)


def train_ppo(cfg: PPOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by PPO on `cfg.reward` with a KL penalty to `cfg.policy`; returns the run directory.

    resume: True continues from the run's latest checkpoint, a path from that checkpoint. Raises
    `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    with claim_run(out, "ppo", cfg, resume):  # the run directory's lock while it runs
        return PPOTrainer(cfg, out, resume).run()
