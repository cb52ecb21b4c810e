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

One iteration (`rloo_iteration`, in this order):
1. sample k responses to each of the iteration's `rollout.batch_size` prompts from π (contiguous);
2. score them with the weighted reward sources, normalised and with the no-EOS penalty when configured;
3. log-probs under π_old (the sampler's own in float32) and π_ref (`score_rollout`);
4. the per-token KL penalty of `kl.estimator` and each reward R_i = r_i − β·Σ_t kl_t;
5. the leave-one-out advantages (`rloo_advantages`);
6. `rloo.epochs` passes over shuffled minibatches of `train.batch_size` responses of the clipped
   surrogate with per-response token sums (+ β·token_kl in the loss for that estimator), one optimizer step
   each; early stop on approx_kl;
7. β's controller update on the batch's KL, and the metrics (those of GRPO).
The run directory, checkpoints, resume and summary.json are PPO's (tether.trainers.rl).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from tether.config import RLOOConfig
from tether.losses import rloo_advantages
from tether.losses.kl import kl_controller
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


def rloo_iteration(run: RLRun, kl_ctl) -> dict:
    """One RLOO iteration of `run` with the β controller `kl_ctl`, steps 1-7 of the module docstring;
    returns its metrics."""
    cfg, k, t0 = run.cfg, run.cfg.rloo.k, time.perf_counter()
    beta = kl_ctl.value if run.ref is not None else 0.0
    # 1. sample k responses per prompt
    examples, rollout, responses = run.sample(copies=k)
    # 2. score
    raw, parts = run.score(examples, responses)  # (B,)
    scores = run.condition(raw, rollout.ended)
    # 3. log-probs; 4. KL penalty and KL-shaped rewards; 5. leave-one-out advantages
    advantages = functools.partial(run.group_advantages, lambda r: rloo_advantages(r, k))
    with run.loop.autocast():  # the reference in the policy's precision (step-0 KL 0 up to rounding)
        exp = make_group_experience(run.policy, run.ref, rollout, scores, beta, advantages, cfg.kl.estimator,
                                    cfg.train.micro_batch_size, run.sampled_logprobs)
    t1 = time.perf_counter()
    # 6. epochs of minibatch updates of the clipped surrogate, per-response token sums
    eps = cfg.rloo.clip_eps
    loss = GroupLoss(beta=0.0, eps_low=eps, eps_high=eps, aggregation="token_sum")
    update = run.update(exp, functools.partial(group_minibatch_loss, run.policy, run.ref, loss))
    # 7. controller and metrics
    if exp.kl is not None:
        every_kl = run.loop.all_gather(exp.kl.sum(-1))  # (B × processes,) sequence KL estimates, nats
        kl_ctl.update(every_kl.mean(), n_steps=every_kl.numel())
    return {
        **run.metrics(examples, responses, raw, scores, rollout, t0, t1),
        **parts,
        "kl": sequence_kl(exp),
        "beta": beta,
        "equal_reward_groups": equal_reward_share(scores, k),
        **update,
    }


def rloo_algorithm(cfg: RLOOConfig) -> Algorithm:
    """RLOO for tether.trainers.rl.RLRun: its iteration, the weighted reward sources, a reference unless β
    is fixed at 0, the β controller (saved in checkpoints) and the summary's entries."""
    kl_ctl = kl_controller(cfg.kl.beta, cfg.kl.adaptive, cfg.kl.target, cfg.kl.horizon)
    return Algorithm(
        stage="rloo",
        iteration=functools.partial(rloo_iteration, kl_ctl=kl_ctl),
        rewards=reward_terms(cfg),
        reference=cfg.kl.beta > 0 or cfg.kl.adaptive,
        group_size=cfg.rloo.k,
        epochs=cfg.rloo.epochs,
        max_approx_kl=cfg.rloo.max_approx_kl,
        state={"kl_controller": kl_ctl},
        summary=lambda: {"beta": kl_ctl.value, "k": cfg.rloo.k},
    )


def train_rloo(cfg: RLOOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by RLOO on `cfg.reward` with a KL penalty to `cfg.policy` in the reward; returns the
    run directory. resume: True continues from the run's latest checkpoint, a path from that checkpoint.
    Raises `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    with claim_run(out, "rloo", cfg, resume) as cfg:  # the run directory's lock while it runs
        return RLRun(cfg, out, resume, algorithm=rloo_algorithm).train()
