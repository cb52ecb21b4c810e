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

One iteration (`grpo_iteration`, in this order):
1. sample G responses to each of the iteration's `rollout.batch_size` prompts from π (contiguous);
2. score them with the weighted reward sources, normalised and with the no-EOS penalty when configured;
3. log-probs under π_old (the sampler's own in float32) and, when β > 0, π_ref (`score_rollout`);
4. with kl_in_reward, each reward r_i − β·Σ_t k1_t; else the score;
5. one advantage per response from its group (`grpo_advantages` with `grpo.scale`);
6. `grpo.epochs` passes over shuffled minibatches of `train.batch_size` responses of the clipped surrogate
   (+ β·k3 in the loss unless kl_in_reward), one optimizer step each; early stop on approx_kl;
7. the metrics.
The run directory, checkpoints, resume and summary.json are PPO's (tether.trainers.rl).

Logged per iteration: reward (the weighted sum, raw; reward/<name>, each source's mean, with several
sources or a Python function), gold (eval.gold's), score, kl (sequence sum of k1 at sampling time; none
without a reference), beta, equal_reward_groups (share of groups whose scores are all equal: zero advantage,
no learning signal), clipfrac, approx_kl, ref_kl, entropy, policy_loss, response_length, ended, lr,
grad_norm, rollout_s, tokens_per_s.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from tether.config import GRPOConfig
from tether.losses import grpo_advantages
from tether.trainers.group import (
    GroupLoss,
    equal_reward_share,
    group_minibatch_loss,
    make_group_experience,
    reward_terms,
    sequence_kl,
)
from tether.trainers.rl import Algorithm, RLRun
from tether.trainers.run_files import claim_run


def grpo_iteration(run: RLRun) -> dict:
    """One GRPO iteration of `run`, steps 1-7 of the module docstring; returns its metrics."""
    cfg, g, t0 = run.cfg, run.cfg.grpo, time.perf_counter()
    # 1. sample G responses per prompt
    examples, rollout, responses = run.sample(copies=g.group_size)
    # 2. score
    raw, parts = run.score(examples, responses)  # (B,)
    scores = run.condition(raw, rollout.ended)
    # 3. log-probs; 4. β·KL in the rewards (kl_in_reward); 5. group advantages
    advantages = functools.partial(run.group_advantages, lambda r: grpo_advantages(r, g.group_size, g.scale))
    with run.loop.autocast():  # the reference in the policy's precision (step-0 KL 0 up to rounding)
        exp = make_group_experience(run.policy, run.ref, rollout, scores, g.beta if g.kl_in_reward else 0.0,
                                    advantages, "k1", cfg.train.micro_batch_size, run.sampled_logprobs)
    t1 = time.perf_counter()
    # 6. epochs of minibatch updates of the clipped surrogate (β·k3 in it unless the KL is in the reward)
    loss = GroupLoss(beta=0.0 if g.kl_in_reward else g.beta, eps_low=g.eps_low, eps_high=g.eps_high,
                     aggregation=g.aggregation, max_tokens=cfg.rollout.max_new_tokens)
    update = run.update(exp, functools.partial(group_minibatch_loss, run.policy, run.ref, loss))
    # 7. metrics
    return {
        **run.metrics(examples, responses, raw, scores, rollout, t0, t1),
        **parts,
        "kl": sequence_kl(exp),
        "beta": g.beta,
        "equal_reward_groups": equal_reward_share(scores, g.group_size),
        **update,
    }


def grpo_algorithm(cfg: GRPOConfig) -> Algorithm:
    """GRPO for tether.trainers.rl.RLRun: its iteration, the weighted reward sources, a reference when
    β > 0, and the summary's entries."""
    g = cfg.grpo
    return Algorithm(
        stage="grpo",
        iteration=grpo_iteration,
        rewards=reward_terms(cfg),
        reference=g.beta > 0,
        group_size=g.group_size,
        epochs=g.epochs,
        max_approx_kl=g.max_approx_kl,
        summary=lambda: {"beta": g.beta, "group_size": g.group_size, "kl_in_reward": g.kl_in_reward},
    )


def train_grpo(cfg: GRPOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by GRPO on `cfg.reward` (KL to `cfg.policy` with coefficient grpo.beta); returns the
    run directory. resume: True continues from the run's latest checkpoint, a path from that checkpoint.
    Raises `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    with claim_run(out, "grpo", cfg, resume) as cfg:  # the run directory's lock while it runs
        return RLRun(cfg, out, resume, algorithm=grpo_algorithm).train()
