"""PPO with a KL penalty to the SFT model (InstructGPT stage 3; Ouyang et al. 2022, Ziegler et al. 2019).

    run_dir = train_ppo(load_config(PPOConfig, "configs/ppo.yaml"), "runs/ppo")

One iteration (`ppo_iteration`, in this order):
1. sample one response to each of the iteration's `rollout.batch_size` prompts from π (KV cache, cut at the
   stop strings);
2. score them with the reward (tether.rewards), normalised by running moments and with the no-EOS penalty
   when configured;
3. log-probs under π_old (the sampler's own in float32) and π_ref and the critic's values V(s_t), each
   (B, R) (`score_rollout`);
4. the per-token KL penalty kl_t of `kl.estimator` (tether.losses.kl) and the KL-shaped rewards
   r_t = −β·kl_t, plus the score on the last token;
5. GAE advantages and returns (γ, λ), the advantages whitened over the batch;
6. `ppo.epochs` passes over shuffled minibatches of `train.batch_size` responses, one optimizer step each, of
   the loss ppo_policy_loss + vf_coef·value_loss − ent_coef·entropy [+ (β/σ_A)·token_kl] (Schulman et al.
   2017, eq. 9, the value term clipped as in OpenAI's PPO2 and Ziegler et al. 2019); early stop on
   approx_kl;
7. β's controller update on the batch's KL, and the metrics.
The token_kl estimator's reward term carries the KL of later positions and its loss term differentiates
each position's own KL (tether.losses.kl derives both); σ_A is the std the advantages were whitened by, so
the two parts keep the ratio the objective gives them.

Models: the policy starts from the SFT model (`cfg.policy`); the reference is a frozen copy of it; the
critic is a separate model with a scalar head (tether.reward_model's format), initialised from the reward
model when the reward is one (InstructGPT) or else from the SFT trunk with a new head. It does not share
weights with the policy, so the value loss cannot pull the policy's features around, and a critic that
starts as the reward model already predicts the final score. Policy and critic share one AdamW (the Loop's).
Dropout stays off in every model, so the ratio π/π_old is exactly 1 before the first update of an iteration.

Writes RUN/config.yaml, metrics.jsonl (one "train" record per iteration; "eval" records), checkpoints/
(policy at the root, the critic in value/, extra = iteration, β controller, reward moments, data position),
RUN/model/ (the policy, HF-loadable) and summary.json (held-out rewards, KL-from-SFT, win-rate vs SFT). What
PPO shares with GRPO and RLOO (sampling, scoring, the update epochs, evaluation, the run) is in
tether.trainers.rl and tether.trainers.experience.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import torch

from tether.config import PPOAlgoConfig, PPOConfig
from tether.errors import TetherError
from tether.losses import (
    REWARD_KL,
    gae,
    kl_shaped_rewards,
    masked_mean,
    ppo_policy_loss,
    token_logprobs,
    value_loss,
    whiten,
)
from tether.losses._reduce import masked_var
from tether.losses.advantages import whitening_scale
from tether.losses.kl import kl_controller
from tether.rewards import is_reward_model_dir
from tether.rollout import Rollout
from tether.trainers.distributed import global_moments
from tether.trainers.experience import (
    Batch,
    critic_values,
    exact_kl_to,
    policy_logits,
    score_rollout,
    token_entropy,
)
from tether.trainers.rl import Algorithm, RLRun
from tether.trainers.run_files import claim_run


@dataclasses.dataclass
class Experience(Batch):
    """One iteration's responses and everything the PPO update needs; every tensor is (B, R) unless noted."""

    rollout: Rollout  # prompt and response tokens, masks, sampling temperature
    scores: torch.Tensor  # (B,) the sequence score (after normalisation and the no-EOS penalty)
    old_logprobs: torch.Tensor  # log π_old(y_t | s_t), the policy that sampled
    ref_logprobs: torch.Tensor  # log π_ref(y_t | s_t), the frozen SFT model
    old_values: torch.Tensor  # V(s_t) at sampling time
    kl: torch.Tensor  # per-token KL penalty estimate (0 off the mask)
    rewards: torch.Tensor  # −β·kl_t, plus the score on the last token
    advantages: torch.Tensor  # GAE, whitened when configured
    returns: torch.Tensor  # GAE advantages (before whitening) + old values: the value targets
    kl_loss_coef: float = 0.0  # coefficient of the exact per-position KL in the loss (token_kl: β/σ_A)


# --------------------------------------------------------------------------------------------- one iteration


def ppo_iteration(run: RLRun, kl_ctl) -> dict:
    """One PPO iteration of `run` with the β controller `kl_ctl`, steps 1-7 of the module docstring;
    returns its metrics."""
    cfg, t0, beta = run.cfg, time.perf_counter(), kl_ctl.value
    # 1. sample
    examples, rollout, responses = run.sample()
    # 2. score
    raw, _ = run.score(examples, responses)  # (B,)
    scores = run.condition(raw, rollout.ended)
    # 3-5. log-probs, values, KL penalty, shaped rewards, advantages (whitened over every process's tokens)
    all_sum = run.loop.all_sum if run.loop.world > 1 else None
    with run.loop.autocast():  # reference and critic in the policy's precision (step-0 KL 0 up to rounding)
        exp = make_experience(run.policy, run.ref, run.critic, rollout, scores, beta, cfg, all_sum,
                              run.sampled_logprobs)
    t1 = time.perf_counter()
    # 6. epochs of minibatch updates
    update = run.update(exp, functools.partial(minibatch_loss, run.policy, run.critic, run.ref, cfg.ppo))
    # 7. controller and metrics
    kl = exp.kl.sum(-1)  # (B,) sequence KL estimates, nats
    every_kl = run.loop.all_gather(kl)  # the controller sees the whole batch on every process
    kl_ctl.update(every_kl.mean(), n_steps=every_kl.numel())
    return {
        **run.metrics(examples, responses, raw, scores, rollout, t0, t1),
        "kl": float(kl.mean()),
        "beta": beta,
        "explained_variance": explained_variance(exp.old_values, exp.returns, exp.mask),
        **update,
    }


def make_experience(
    policy, ref, critic, rollout: Rollout, scores: torch.Tensor, beta: float, cfg: PPOConfig, all_sum=None,
    sampled_logprobs: bool = False,
) -> Experience:
    """Steps 3-5: score a rollout with the three models (train.micro_batch_size rows per forward pass) and
    compute its PPO targets with cfg.kl.estimator and cfg.ppo (whitening over all processes when `all_sum`,
    a sum over processes, is given; π_old's log-probs from the sampler when `sampled_logprobs`, as
    `score_rollout` says)."""
    # 3. log-probs under π_old and π_ref, values; 4. the per-token KL penalty kl_t
    s = score_rollout(policy, ref, critic, rollout, cfg.kl.estimator, cfg.train.micro_batch_size,
                      sampled_logprobs)
    scores = scores.to(s["kl"].device)
    # 4-5. KL-shaped rewards, GAE, whitening
    rewards, advantages, returns, scale = advantages_and_returns(
        s["kl"], s["old_values"], scores, rollout.response_mask, beta, cfg.ppo, all_sum
    )
    kl_loss_coef = beta * scale if REWARD_KL[cfg.kl.estimator].in_loss else 0.0
    return Experience(rollout, scores, s["old_logprobs"], s["ref_logprobs"], s["old_values"], s["kl"],
                      rewards, advantages, returns, kl_loss_coef)


def advantages_and_returns(
    kl: torch.Tensor,
    old_values: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    cfg: PPOAlgoConfig,
    all_sum=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(rewards, advantages, returns, scale): KL-shaped rewards, GAE with (cfg.gamma, cfg.lam) and, when
    cfg.whiten_advantages, whitened advantages, each (B, R); scale is what the advantages were multiplied
    by (1/σ_A when whitened, else 1). kl, old_values, mask: (B, R); scores: (B,).
    all_sum: a sum over processes (tether.trainers.distributed) to whiten over every process's tokens."""
    rewards = kl_shaped_rewards(scores, kl, mask, beta)  # (B, R)
    advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)  # (B, R) each
    scale = 1.0
    if cfg.whiten_advantages:
        if all_sum is None:
            moments = masked_mean(advantages, mask), masked_var(advantages, mask)
        else:
            moments = global_moments(advantages, mask, all_sum)
        advantages = whiten(advantages, mask, moments=moments)
        scale = float(whitening_scale(moments[1]))
    return rewards, advantages, returns, scale


# --------------------------------------------------------------------------------------------- the update


def ppo_objective(
    logprobs: torch.Tensor,
    values: torch.Tensor,
    entropy: torch.Tensor,
    exp: Experience,
    cfg: PPOAlgoConfig,
    num_tokens: float | torch.Tensor | None = None,
    exact_kl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ppo_policy_loss + vf_coef·value_loss − ent_coef·entropy [+ exp.kl_loss_coef·exact_kl] on the rows of
    `exp`.

    logprobs, values, entropy: (B, R) of the current policy and critic (with gradient); exact_kl: (B, R),
    `token_kl` of the current policy against the reference (with gradient through the policy), needed when
    exp.kl_loss_coef ≠ 0. Each term is a mean over the response tokens, divided by `num_tokens` when given
    (the whole minibatch's count, so that micro-batches sum to the minibatch mean).
    """
    mask = exp.mask
    pg, pg_metrics = ppo_policy_loss(
        logprobs, exp.old_logprobs, exp.advantages, mask, cfg.clip_eps, num_tokens
    )
    vl, v_metrics = value_loss(values, exp.old_values, exp.returns, mask, cfg.value_clip_eps, num_tokens)
    ent = masked_mean(entropy, mask, num_tokens)
    loss = pg + cfg.vf_coef * vl - cfg.ent_coef * ent
    if exp.kl_loss_coef:
        if exact_kl is None:
            raise ValueError("kl_loss_coef != 0 needs exact_kl, the policy's token_kl to the reference")
        loss = loss + exp.kl_loss_coef * masked_mean(exact_kl, mask, num_tokens)
    with torch.no_grad():  # metrics are means over this micro-batch's own tokens
        scale = 1.0 if num_tokens is None else num_tokens / mask.bool().sum().clamp(min=1)
        metrics = {
            "policy_loss": pg.detach() * scale,
            "value_loss": vl.detach() * scale,
            "entropy": masked_mean(entropy.detach(), mask),
            **pg_metrics,
            **v_metrics,
        }
    return loss, metrics


def minibatch_loss(
    policy,
    critic,
    ref,
    cfg: PPOAlgoConfig,
    exp: Experience,
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward the policy and the critic (and the reference, when exp.kl_loss_coef ≠ 0) on `exp`'s
    responses and return `ppo_objective`. num_sequences is not used: PPO's terms are token means."""
    logits = policy_logits(policy, exp.rollout)  # (B, R, V)
    logprobs = token_logprobs(logits, exp.rollout.response_ids)  # (B, R)
    entropy = token_entropy(logits if cfg.ent_coef else logits.detach())  # (B, R)
    values = critic_values(critic, exp.rollout)  # (B, R)
    exact_kl = exact_kl_to(ref, logits, exp) if exp.kl_loss_coef else None  # (B, R)
    return ppo_objective(logprobs, values, entropy, exp, cfg, num_tokens, exact_kl)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var(returns − values) / Var(returns) over the response tokens: 1 is a perfect critic, 0 one no
    better than a constant, negative worse."""

    def var(x):
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    v = var(returns)
    return float(1.0 - var(returns - values) / v) if v > 0 else float("nan")


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


# --------------------------------------------------------------------------------------------- the run


def ppo_algorithm(cfg: PPOConfig) -> Algorithm:
    """PPO for tether.trainers.rl.RLRun: its iteration, the reward, the reference and the critic, the β
    controller (saved in checkpoints) and the summary's entries."""
    check_config(cfg)
    kl_ctl = kl_controller(cfg.kl.beta, cfg.kl.adaptive, cfg.kl.target, cfg.kl.horizon)
    return Algorithm(
        stage="ppo",
        iteration=functools.partial(ppo_iteration, kl_ctl=kl_ctl),
        rewards=[(cfg.reward.source, 1.0)],
        reference=True,
        epochs=cfg.ppo.epochs,
        max_approx_kl=cfg.ppo.max_approx_kl,
        critic=functools.partial(load_critic, cfg),
        state={"kl_controller": kl_ctl},
        summary=lambda: {"beta": kl_ctl.value, "critic": critic_kind(cfg)},
    )


def train_ppo(cfg: PPOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by PPO on `cfg.reward` with a KL penalty to `cfg.policy`; returns the run directory.

    resume: True continues from the run's latest checkpoint, a path from that checkpoint. Raises
    `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    with claim_run(out, "ppo", cfg, resume) as cfg:  # the run directory's lock while it runs
        return RLRun(cfg, out, resume, algorithm=ppo_algorithm).train()
