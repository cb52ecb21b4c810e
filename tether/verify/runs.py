"""Each optimiser of `tether verify`, run through its real trainer on the exact task.

    files = write_files(task, work_dir)                 # reference model dir, prompt and pair files
    logp, seconds = run_one(Run("rloo", beta=0.5, length=600, lr=2e-3), task, files, work_dir / "rloo")

Every run starts from the task's reference model (also the frozen reference), trains with the stated β,
and returns the exact log-probability of every response under the trained policy (`sequence_logprobs`)
and the trainer's wall time (model loading, training and saving; not the exact evaluation).

Settings, each keeping the trainer's objective as it is (only sizes, learning rates and lengths are tuned):
- the RL trainers sample max_new_tokens = max_words with reward.no_eos = keep, no held-out evaluation, and
  take one optimizer step per iteration on all of its responses (on-policy: the ratio π/π_old is 1);
  the learning rate decays linearly to 0, which lets the sampled gradients' noise average out at the end.
- `ppo`: GAE with γ = λ = 1, fixed β, the k1 penalty per token, no entropy bonus, no penalty for never
  ending (every response ends here anyway).
- `rloo`: the k1 penalty summed into each response's reward, leave-one-out baseline.
- `ppo_token_kl`, `rloo_token_kl`: the same with kl.estimator = token_kl (the exact per-position KL: in the
  reward for later positions, in the loss for its own; tether.losses.kl).
- `grpo_kl_in_reward`: grpo.kl_in_reward, grpo.scale = none, grpo.aggregation = token_sum.
- `grpo`: the paper's form: group-std scaling, β·k3 inside the loss, sequence_mean.
- `dpo`: every pair of distinct responses once, the better one as chosen, with its exact Bradley-Terry
  probability σ(r_w − r_l) as a soft label; full-batch steps.
- `ipo`: the same pairs with hard labels (the better response always wins); no target.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.config import DPOConfig, GRPOConfig, PPOConfig, RLOOConfig, load_config
from tether.verify.task import REWARD_SOURCE, ExactTask, sequence_logprobs


@dataclass
class Files:
    reference: Path  # model directory of the starting policy (and the frozen reference)
    perturbed: Path  # the reference with noise on its weights: the limits' starting policy
    prompts: Path  # the prompt, repeated: the RL trainers draw rollout.batch_size prompts per iteration
    soft_pairs: Path  # every pair with label σ(r_w − r_l)
    hard_pairs: Path  # every pair, the better response chosen


PROMPT_COPIES = 512  # ≥ every rollout.batch_size (the trainers refuse fewer prompts than a batch)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def pair_records(task: ExactTask, soft: bool) -> list[dict]:
    """Every unordered pair of distinct responses, the higher reward as chosen (soft: with "label")."""
    r, out = task.rewards, []
    n = len(task.texts)
    for i in range(n):
        for j in range(i + 1, n):
            w, l_ = (i, j) if r[i] >= r[j] else (j, i)
            record = {"prompt": task.prompt, "chosen": task.pair_text(w), "rejected": task.pair_text(l_)}
            if soft:
                record["label"] = float(torch.sigmoid(r[w] - r[l_]))
            out.append(record)
    return out


def write_files(task: ExactTask, work: Path) -> Files:
    work.mkdir(parents=True, exist_ok=True)
    return Files(
        reference=task.save(task.build_reference(), work / "reference"),
        perturbed=task.save(task.build_perturbed(), work / "perturbed"),
        prompts=_write_jsonl(work / "prompts.jsonl", [{"prompt": task.prompt}] * PROMPT_COPIES),
        soft_pairs=_write_jsonl(work / "pairs.soft.jsonl", pair_records(task, soft=True)),
        hard_pairs=_write_jsonl(work / "pairs.hard.jsonl", pair_records(task, soft=False)),
    )


# --------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Run:
    """One training run: the algorithm, its β, and the sizes tuned for the task (not the objective)."""

    algorithm: str  # a key of ALGORITHMS: ppo, ppo_token_kl, rloo, rloo_token_kl, grpo..., dpo or ipo
    beta: float
    length: int  # RL: iterations (one optimizer step each); DPO/IPO: full-batch optimizer steps
    lr: float  # AdamW's peak, decaying linearly to 0
    prompts: int = 16  # RL: prompts per iteration (copies of the task's prompt)
    group: int = 4  # RL: responses per prompt (rloo.k, grpo.group_size; 1 for ppo)
    start: str = "reference"  # or "perturbed": start there, with the task's reference model as π_ref
    seed: int = 0


def _loop(lr: float, batch: int, **more) -> list[str]:
    """Shared LoopConfig overrides: one thread, no progress bar, no checkpoints, lr decaying linearly to 0."""
    loop = {"lr": lr, "batch_size": batch, "micro_batch_size": batch, "schedule": "linear", "device": "cpu",
            "threads": 1, "progress": False, "save_every": 0, "max_grad_norm": 1.0, **more}
    return [f"train.{k}={v}" for k, v in loop.items()]


def _start(run: Run, files: Files) -> list[str]:
    if run.start == "perturbed":
        return [f"policy={files.perturbed}", f"reference={files.reference}"]
    return [f"policy={files.reference}"]


def _rl(run: Run, task: ExactTask, files: Files) -> list[str]:
    return [
        *_start(run, files),
        f"data.train={files.prompts}",
        f"reward.source={REWARD_SOURCE}",
        "reward.no_eos=keep",  # a max_words-word response has ended (its EOS is forced): no penalty
        "reward.normalize=false",
        f"rollout.max_new_tokens={task.max_words}",
        f"rollout.batch_size={run.prompts}",
        f"iterations={run.length}",
        f"seed={run.seed}",
        *_loop(run.lr, run.prompts * run.group),
    ]


# The algorithm-specific overrides (β goes in with the right key).
def _ppo(estimator: str):
    return lambda b: ["critic=policy", f"kl.beta={b}", "kl.adaptive=false", f"kl.estimator={estimator}",
                      "ppo.lam=1.0", "ppo.gamma=1.0", "ppo.ent_coef=0.0", "ppo.epochs=1"]


def _rloo(estimator: str):
    return lambda b: [f"kl.beta={b}", "kl.adaptive=false", f"kl.estimator={estimator}", "rloo.epochs=1"]


ALGORITHMS = {
    "ppo": (PPOConfig, _ppo("k1")),
    "ppo_token_kl": (PPOConfig, _ppo("token_kl")),
    "rloo": (RLOOConfig, _rloo("k1")),
    "rloo_token_kl": (RLOOConfig, _rloo("token_kl")),
    "grpo_kl_in_reward": (GRPOConfig, lambda b: [
        f"grpo.beta={b}", "grpo.kl_in_reward=true", "grpo.scale=none", "grpo.aggregation=token_sum",
        "grpo.epochs=1"]),
    "grpo": (GRPOConfig, lambda b: [
        f"grpo.beta={b}", "grpo.kl_in_reward=false", "grpo.scale=group", "grpo.aggregation=sequence_mean",
        "grpo.epochs=1"]),
    "dpo": (DPOConfig, lambda b: [f"beta={b}", "loss_type=sigmoid", "data.use_soft_labels=true"]),
    "ipo": (DPOConfig, lambda b: [f"beta={b}", "loss_type=ipo", "data.use_soft_labels=false"]),
}


def config(run: Run, task: ExactTask, files: Files):
    """The trainer config of `run`: its algorithm's overrides on the config class's defaults."""
    cls, algo = ALGORITHMS[run.algorithm]
    if cls is not DPOConfig:
        group = {RLOOConfig: [f"rloo.k={run.group}"], GRPOConfig: [f"grpo.group_size={run.group}"]}
        return load_config(cls, None, [*_rl(run, task, files), *algo(run.beta), *group.get(cls, [])])
    n_pairs = len(task.texts) * (len(task.texts) - 1) // 2
    return load_config(cls, None, [
        *_start(run, files),
        f"data.train={files.soft_pairs if run.algorithm == 'dpo' else files.hard_pairs}",
        # prompt + max_words tokens: a max_words-word response loses the EOS that the data path appends
        f"data.max_length={len(task.prompt_ids) + task.max_words}",
        "eval.kl_prompts=0",
        f"seed={run.seed}",
        *algo(run.beta),
        *_loop(run.lr, n_pairs, max_steps=run.length),
    ])


# --------------------------------------------------------------------------------------------- runs


def train(cfg, out: Path) -> Path:
    from tether.trainers.dpo import train_dpo
    from tether.trainers.grpo import train_grpo
    from tether.trainers.ppo import train_ppo
    from tether.trainers.rloo import train_rloo

    trainer = {PPOConfig: train_ppo, RLOOConfig: train_rloo, GRPOConfig: train_grpo, DPOConfig: train_dpo}
    return trainer[type(cfg)](cfg, out)


def run_one(run: Run, task: ExactTask, files: Files, out: Path) -> tuple[torch.Tensor, float]:
    """Train `run` into `out`; (exact log-probs (N,) of the trained policy, the trainer's wall seconds)."""
    from tether.model_files import load_causal_lm
    from tether.quiet import quiet_logger

    cfg = config(run, task, files)
    start = time.perf_counter()
    with quiet_logger("tether.data"):  # the cut it would report is the forced EOS
        run_dir = train(cfg, out)
    seconds = time.perf_counter() - start
    model = load_causal_lm(run_dir / "model", dtype=torch.float32)
    return sequence_logprobs(model, task), seconds


