"""The iteration GRPO and RLOO share: G responses per prompt, scored, a baseline from the group, an update.

Each iteration: take the next `rollout.batch_size` prompts → sample each G times (one batch, the copies of a
prompt contiguous) → cut at stop strings → score with the weighted reward sources (tether.rewards;
normalisation and the no-EOS penalty when configured) → old (and, when needed, reference) log-probs → β·KL
in the rewards or not → one advantage per response from its group (tether.trainers.group_step) → `epochs()`
passes over shuffled minibatches of train.batch_size responses (the shared `RLTrainer.update`) with
`grpo_loss`. No critic. A subclass says which advantage, where the KL goes and the loss's settings.

Logged per iteration: reward (the weighted sum, raw), gold (lab prompts), score, kl (sequence sum of the
per-token estimate at sampling time; none without a reference), beta, equal_reward_groups (share of groups
whose scores are all equal: zero advantage, no learning signal), clipfrac, approx_kl, ref_kl, entropy,
policy_loss, response_length, ended, lr, grad_norm, rollout_s, tokens_per_s.
"""

from __future__ import annotations

import time

import torch

from tether.rewards import WeightedReward, load_weighted_reward
from tether.rollout import decode_responses
from tether.trainers.distributed import gathered_rows
from tether.trainers.group_step import (
    GroupExperience,
    GroupLoss,
    equal_reward_share,
    group_minibatch_loss,
    make_group_experience,
)
from tether.trainers.rl import RLTrainer, iteration_seed


def reward_terms(cfg) -> list[tuple[str, float]]:
    """(spec, weight) of each reward source of a GroupRewardConfig."""
    return [(cfg.source, cfg.weight), *((t.source, t.weight) for t in cfg.extra)]


class GroupTrainer(RLTrainer):
    """What GRPO and RLOO share; subclasses define the hooks below."""

    def group_size(self) -> int:
        raise NotImplementedError

    def beta_in_reward(self) -> float:
        """β of the KL penalty subtracted from each response's score (0: none)."""
        raise NotImplementedError

    def kl_estimator(self) -> str:
        """Per-token KL penalty at sampling time (a key of tether.losses.kl.REWARD_KL)."""
        raise NotImplementedError

    def advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """(B,) rewards, G per group → (B,) advantages."""
        raise NotImplementedError

    def loss_args(self) -> GroupLoss:
        raise NotImplementedError

    def logged_beta(self) -> float:
        return self.beta_in_reward()

    def after_update(self, kl: torch.Tensor | None, n: int) -> None:
        """Called with the iteration's sequence KL estimates (B,) (None without a reference)."""

    # ----------------------------------------------------------------------------------- RLTrainer hooks

    def total_steps(self) -> int:
        cfg = self.cfg
        steps_per_epoch = cfg.rollout.batch_size * self.group_size() // cfg.train.batch_size
        return cfg.iterations * self.epochs() * steps_per_epoch

    def load_reward_fn(self):
        return load_weighted_reward(reward_terms(self.cfg.reward), device=self.device)

    def reward_specs(self, cfg) -> list[str]:
        return [spec for spec, weight in reward_terms(cfg.reward) if weight != 0]

    def data_signature(self) -> dict:
        return {**super().data_signature(), "group_size": self.group_size()}

    def group_advantages(self, rewards: torch.Tensor) -> torch.Tensor:
        """`advantages` of this process's rewards. With several processes they are computed on every
        process's rewards gathered (so a batch-wide scale is the whole batch's) and this share is kept;
        groups are contiguous and never span processes, so a group statistic is unchanged by the gather."""
        if self.loop.world == 1:
            return self.advantages(rewards)
        return gathered_rows(self.advantages, rewards, self.loop.all_gather, self.loop.rank)

    def minibatch_loss(self, part: GroupExperience, num_tokens, num_sequences: int):
        return group_minibatch_loss(self.policy, part, self.loss_args(), num_tokens, num_sequences, self.ref)

    # ----------------------------------------------------------------------------------- one iteration

    def score(self, prompts, responses) -> tuple[torch.Tensor, dict]:
        """The summed reward (B,) and, with several sources, each one's mean as reward_<i>."""
        if not isinstance(self.reward, WeightedReward):
            return self.reward(prompts, responses), {}
        parts = self.reward.parts(prompts, responses)
        return self.reward.combine(parts), {f"reward_{i}": float(p.mean()) for i, p in enumerate(parts)}

    def step(self) -> dict:
        """One rollout-and-update iteration; returns its metrics."""
        cfg, t0, G = self.cfg, time.perf_counter(), self.group_size()
        items = [x for x in self.prompt_batch(self.iteration) for _ in range(G)]  # G copies, contiguous
        rollout = self.rollout(items, iteration_seed(cfg.seed, self.iteration, 0))
        prompts = [x.example.prompt for x in items]
        responses = decode_responses(self.tokenizer, rollout)
        raw, parts = self.score(prompts, responses)  # (B,)
        scores = self.condition(raw, rollout.ended)
        beta = self.logged_beta()
        with self.loop.autocast():  # the reference in the policy's precision (step-0 KL exactly 0)
            exp = make_group_experience(
                self.policy,
                self.ref,
                rollout,
                scores,
                self.beta_in_reward(),
                self.group_advantages,
                self.kl_estimator(),
                cfg.train.micro_batch_size,
            )
        t1 = time.perf_counter()
        update = self.update(exp, torch.Generator().manual_seed(iteration_seed(cfg.seed, self.iteration, 1)))
        kl = exp.kl.sum(-1) if exp.kl is not None else None  # (B,) sequence KL estimates, nats
        self.after_update(None if kl is None else self.loop.all_gather(kl), exp.size * self.loop.world)
        tokens = int(exp.mask.sum())
        return {
            "iteration": self.iteration + 1,
            "reward": float(raw.mean()),
            **parts,
            "gold": self.gold_mean(prompts, responses, raw),
            "score": float(scores.mean()),
            "kl": None if kl is None else float(kl.mean()),
            "beta": beta,
            "equal_reward_groups": equal_reward_share(scores, G),
            "response_length": tokens / exp.size,
            "ended": float(rollout.ended.float().mean()),
            **update,
            "rollout_s": t1 - t0,
            "tokens_per_s": tokens / (time.perf_counter() - t0),
        }
