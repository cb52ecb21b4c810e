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
Sampling and minibatch order are seeded by (seed, iteration), so `--resume` continues exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed

from tether.config import PPOConfig, dump_config
from tether.data import collate_prompts, eos_id, load_prompts, pad_id, tokenize_prompts
from tether.errors import TetherError
from tether.files import write_json
from tether.instruments.evaluate import decode_responses, evaluate_against_base
from tether.instruments.judges import GoldJudge, ScoreJudge
from tether.kl_control import AdaptiveKLController, FixedKLController
from tether.rewards import (
    RunningMoments,
    gold,
    is_lab_prompt,
    is_reward_model_dir,
    load_reward,
    penalize_unended,
)
from tether.rollout import Rollout, sample
from tether.trainers.base import (
    Loop,
    TrainingInterrupted,
    prepare_run_dir,
    quiet_transformers,
    save_final,
    set_threads,
)
from tether.trainers.ppo_step import Experience, explained_variance, make_experience, minibatch_loss
from tether.trainers.supervised import batch_indices

EVAL_SEED_OFFSET = 7919  # evaluation samples use their own seeds, apart from the training ones


def iteration_seed(seed: int, iteration: int, stream: int) -> int:
    """A seed for one random stream (0: sampling, 1: minibatch order) of one iteration."""
    return (seed * 1_000_003 + iteration) * 4 + stream


# --------------------------------------------------------------------------------------------- set-up


def check_config(cfg: PPOConfig) -> None:
    t, r = cfg.train, cfg.rollout
    if r.batch_size % t.batch_size or t.batch_size % t.micro_batch_size:
        raise TetherError(
            f"rollout.batch_size={r.batch_size} must be a multiple of train.batch_size="
            f"{t.batch_size}, itself a multiple of train.micro_batch_size={t.micro_batch_size}"
        )
    if cfg.iterations < 1 or cfg.ppo.epochs < 1 or r.max_new_tokens < 1:
        raise TetherError("iterations, ppo.epochs and rollout.max_new_tokens must be at least 1")
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


def load_policy(cfg: PPOConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}[cfg.dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer or cfg.policy)
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(cfg.policy, dtype=dtype)
    except OSError as e:
        raise TetherError(f"cannot load the policy {cfg.policy!r}: {e}") from None
    return model.eval(), tokenizer  # eval: no dropout, so π/π_old = 1 before an update


def load_critic(cfg: PPOConfig):
    """The value model: a trainable copy of the reward model, or the SFT trunk with a scalar head set to 0
    (a randomly initialised head would start with values of ±0.5 that swamp the first advantages)."""
    from tether.reward_model import create_reward_model, load_reward_model, score_head

    if critic_kind(cfg) == "rm":
        model, _ = load_reward_model(cfg.reward.source, dtype=cfg.dtype)
    else:
        model, _ = create_reward_model(cfg.policy, cfg.tokenizer, dtype=cfg.dtype)
        torch.nn.init.zeros_(score_head(model).weight)
    return model.eval().requires_grad_(True)


def load_prompt_items(path: str, tokenizer, cfg: PPOConfig):
    d = cfg.data
    items, _ = tokenize_prompts(
        load_prompts(path), tokenizer, d.max_prompt_length, d.too_long, d.chat_template
    )
    if not items:
        raise TetherError(f"{path}: no prompts left after skipping")
    return items


def kl_controller(cfg: PPOConfig):
    k = cfg.kl
    return AdaptiveKLController(k.beta, k.target, k.horizon) if k.adaptive else FixedKLController(k.beta)


# --------------------------------------------------------------------------------------------- rollouts


def cut_at_stop(rollout: Rollout, tokenizer, stops: list[str], pad_value: int) -> Rollout:
    """End each response after the first token whose decoded prefix contains a stop string (the row then
    counts as ended, like EOS); later tokens become padding with mask 0."""
    if not stops:
        return rollout
    mask, ended = rollout.response_mask.clone(), rollout.ended.clone()  # (B, R), (B,)
    for b in range(mask.shape[0]):
        ids = rollout.response_ids[b, : int(mask[b].sum())].tolist()
        if not any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in stops):
            continue
        for t in range(1, len(ids) + 1):  # the shortest prefix that contains one
            if any(s in tokenizer.decode(ids[:t], skip_special_tokens=True) for s in stops):
                mask[b, t:] = 0
                ended[b] = True
                break
    ids = torch.where(mask.bool(), rollout.response_ids, torch.full_like(rollout.response_ids, pad_value))
    return dataclasses.replace(
        rollout, response_ids=ids, response_mask=mask, logprobs=rollout.logprobs * mask, ended=ended
    )


class PPOTrainer:
    """Models, data, reward, β controller and loop of one PPO run; `run()` trains it to the end."""

    def __init__(self, cfg: PPOConfig, run_dir: str | Path, resume: bool | str | Path = False):
        self.start = time.perf_counter()
        check_config(cfg)
        self.cfg, self.run_dir, self.resumed = cfg, Path(run_dir), bool(resume)
        prepare_run_dir(self.run_dir, resume)
        set_seed(cfg.seed)
        policy, self.tokenizer = load_policy(cfg)
        set_threads(cfg.train.threads, policy, cfg.train.device)
        self.ref = copy.deepcopy(policy).requires_grad_(False)  # the frozen SFT model
        critic = load_critic(cfg)
        self.train_items = load_prompt_items(cfg.data.train, self.tokenizer, cfg)
        self.test_items = load_prompt_items(cfg.data.test, self.tokenizer, cfg) if cfg.data.test else []
        steps = cfg.iterations * cfg.ppo.epochs * (cfg.rollout.batch_size // cfg.train.batch_size)
        self.loop = Loop(
            cfg.train, self.run_dir, policy, self.tokenizer, total_steps=steps, extra_models={"value": critic}
        )
        if self.loop.world > 1:
            raise TetherError("tether ppo runs in one process for now (multi-process PPO is issue 9)")
        self.device = self.loop.accelerator.device
        self.ref.to(self.device)
        self.reward = load_reward(cfg.reward.source, device=self.device)
        self.lab = is_lab_prompt(self.train_items[0].example.prompt)  # gold reward known: log it
        self.kl_ctl = kl_controller(cfg)
        self.moments = RunningMoments()
        self.iteration, self.last_eval = 0, {}
        if resume:
            self.load_extra(self.loop.resume(None if resume is True else resume))
        if self.loop.is_main:
            dump_config(cfg, self.run_dir, [cfg.data.train, cfg.data.test])

    @property
    def policy(self):
        return self.loop.model

    @property
    def critic(self):
        return self.loop.models["value"]

    # ----------------------------------------------------------------------------------- state

    def extra(self) -> dict:
        """What a checkpoint needs beyond the Loop's own state; the data position is the iteration."""
        return {
            "iteration": self.iteration,
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_moments": self.moments.state_dict(),
            "last_eval": self.last_eval,
            "data": {
                "n_prompts": len(self.train_items),
                "batch_size": self.cfg.rollout.batch_size,
                "seed": self.cfg.seed,
            },
        }

    def load_extra(self, extra: dict) -> None:
        if extra["data"] != self.extra()["data"]:
            raise TetherError("the prompts, rollout batch size or seed differ from those of the checkpoint")
        self.iteration, self.last_eval = int(extra["iteration"]), dict(extra["last_eval"])
        self.kl_ctl.load_state_dict(extra["kl_controller"])
        self.moments.load_state_dict(extra["reward_moments"])

    # ----------------------------------------------------------------------------------- one iteration

    def prompt_batch(self, iteration: int):
        """The prompts of iteration `iteration`: passes over the data in seeded permutations."""
        idx = batch_indices(len(self.train_items), self.cfg.rollout.batch_size, self.cfg.seed, iteration)
        return [self.train_items[i] for i in idx]

    def rollout(self, items, seed: int) -> Rollout:
        r, tok = self.cfg.rollout, self.tokenizer
        batch = collate_prompts(items, pad_id(tok))
        rollout = sample(
            self.policy,
            batch["input_ids"].to(self.device),
            batch["attention_mask"].to(self.device),
            max_new_tokens=r.max_new_tokens,
            eos_token_id=eos_id(tok),
            pad_token_id=pad_id(tok),
            temperature=r.temperature,
            top_p=r.top_p,
            generator=torch.Generator().manual_seed(seed),
        )
        return cut_at_stop(rollout, tok, r.stop, pad_id(tok))

    def condition(self, raw: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """Scores the objective uses: normalised by running moments (when on), then the no-EOS penalty."""
        scores = raw
        if self.cfg.reward.normalize:
            self.moments.update(raw)
            scores = self.moments.normalize(raw)
        return penalize_unended(scores, ended, self.cfg.reward.no_eos, self.cfg.reward.no_eos_score)

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
        exp = make_experience(self.policy, self.ref, self.critic, rollout, scores, beta, cfg)
        t1 = time.perf_counter()
        update = self.update(exp, torch.Generator().manual_seed(iteration_seed(cfg.seed, self.iteration, 1)))
        kl = exp.kl.sum(-1)  # (B,) sequence KL estimates, nats
        self.kl_ctl.update(kl.mean(), n_steps=exp.size)
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

    def gold_mean(self, prompts, responses, raw: torch.Tensor) -> float | None:
        """Mean gold reward of the responses when the prompts are the lab's (None otherwise)."""
        if not self.lab:
            return None
        return float(raw.mean() if self.cfg.reward.source == "gold" else gold(prompts, responses).mean())

    def update(self, exp: Experience, generator: torch.Generator) -> dict:
        """`ppo.epochs` passes over shuffled minibatches, one optimizer step each; early stop on approx_kl.
        Returns token-weighted means of the loss metrics, the epochs run, and the last step's lr and norm."""
        cfg, loop = self.cfg, self.loop
        mb, micro = cfg.train.batch_size, cfg.train.micro_batch_size
        sums: dict[str, float] = {}
        total_tokens, epochs_run, info = 0, 0, {}
        for _ in range(cfg.ppo.epochs):
            order = torch.randperm(exp.size, generator=generator)
            epoch_kl, epoch_tokens = 0.0, 0
            for start in range(0, exp.size, mb):
                minibatch = exp.rows(order[start : start + mb])
                num_tokens = minibatch.mask.sum().clamp(min=1)
                n_micro = mb // micro
                for j in range(n_micro):
                    part = minibatch.rows(slice(j * micro, (j + 1) * micro)).trimmed()
                    with loop.accumulate(sync=j == n_micro - 1):
                        loss, metrics = minibatch_loss(self.policy, self.critic, part, cfg.ppo, num_tokens)
                        loop.backward(loss)
                    n = int(part.mask.sum())
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + n * float(v)
                    total_tokens += n
                    epoch_tokens += n
                    epoch_kl += n * float(metrics["approx_kl"])
                info = loop.optimizer_step()
            epochs_run += 1
            bound = cfg.ppo.max_approx_kl
            if bound is not None and epoch_kl / max(epoch_tokens, 1) > bound:
                break
        out = {k: v / max(total_tokens, 1) for k, v in sums.items()}
        out.update(epochs=epochs_run, lr=info.get("lr"), grad_norm=info.get("grad_norm"))
        return out

    # ----------------------------------------------------------------------------------- evaluation

    def proxy_scores(self, prompts, responses) -> list[float]:
        return self.reward(prompts, responses).tolist()

    def evaluate(self) -> dict:
        """Held-out prompts: one policy and one SFT sample each; KL-from-SFT, win-rate vs SFT, mean rewards.
        The judge is the gold reward on lab prompts, else the proxy reward."""
        items = self.test_items[: self.cfg.eval.max_prompts]
        judge = GoldJudge() if self.lab else ScoreJudge(self.proxy_scores, "proxy")
        result = evaluate_against_base(
            self.policy,
            self.ref,
            self.tokenizer,
            items,
            judge=judge,
            proxy=self.proxy_scores,
            gold=(lambda p, r: gold(p, r).tolist()) if self.lab else None,
            max_new_tokens=self.cfg.rollout.max_new_tokens,
            seed=self.cfg.seed + EVAL_SEED_OFFSET,
            batch_size=self.cfg.rollout.batch_size,
        )
        result.pop("samples")
        return result

    def log_eval(self) -> None:
        self.last_eval = self.evaluate()
        ins, rw = self.last_eval["instruments"], self.last_eval["rewards"]
        self.loop.log(
            {
                "iteration": self.iteration,
                "kl_from_base": ins["kl_from_base"]["value"],
                "win_rate_vs_base": ins["win_rate_vs_base"]["value"],
                "reward": rw["policy"]["proxy"],
                "gold": rw["policy"]["gold"],
                "base_reward": rw["base"]["proxy"],
                "base_gold": rw["base"]["gold"],
            },
            kind="eval",
        )

    # ----------------------------------------------------------------------------------- the run

    def due(self, every: int) -> bool:
        return every > 0 and self.iteration % every == 0

    def run(self) -> Path:
        """Train to `cfg.iterations`, evaluating and saving on schedule; then the final evaluation, RUN/model
        and summary.json. Raises TrainingInterrupted after SIGTERM (once a checkpoint is written)."""
        cfg, loop = self.cfg, self.loop
        saved_at, evaluated_at = self.iteration if self.resumed else -1, -1
        with loop.running(total=cfg.iterations, initial=self.iteration, desc="ppo"):
            while self.iteration < cfg.iterations:
                record = self.step()
                self.iteration += 1
                loop.bar.update(1)
                loop.bar.set_postfix(
                    reward=f"{record['reward']:.3f}", kl=f"{record['kl']:.2f}", refresh=False
                )
                if self.due(cfg.train.log_every):
                    loop.log(record)
                if self.test_items and self.due(cfg.train.eval_every):
                    self.log_eval()
                    evaluated_at = self.iteration
                if self.due(cfg.train.save_every):
                    loop.save(self.extra())
                    saved_at = self.iteration
                if loop.should_stop():
                    path = loop.save(self.extra()) if saved_at != self.iteration else loop.latest_checkpoint()
                    raise TrainingInterrupted(path)
        if self.test_items and evaluated_at != self.iteration:
            self.log_eval()
        if cfg.train.save_every > 0 and saved_at != self.iteration:
            loop.save(self.extra())
        model_dir = save_final(loop, self.run_dir)
        if loop.is_main:
            self.write_summary(model_dir, time.perf_counter() - self.start)
        return self.run_dir

    def write_summary(self, model_dir: Path, seconds: float) -> None:
        summary = {
            "stage": "ppo",
            "iterations": self.iteration,
            "steps": self.loop.state.step,
            "skipped_steps": self.loop.state.skipped,
            **self.last_eval,
            "beta": self.kl_ctl.value,
            "critic": critic_kind(self.cfg),
            "model": str(model_dir),
            "wall_seconds": seconds,
        }
        write_json(self.run_dir / "summary.json", summary)


def train_ppo(cfg: PPOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a policy by PPO on `cfg.reward` with a KL penalty to `cfg.policy`; returns the run directory.

    resume: True continues from the run's latest checkpoint, a path from that checkpoint. Raises
    `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input.
    """
    return PPOTrainer(cfg, out, resume).run()
