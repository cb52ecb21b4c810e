"""The run every RL algorithm stands on: models, prompts, sampling, scoring, the update epochs, evaluation,
checkpoints. The algorithms are iteration functions (tether.trainers.ppo, grpo, rloo), each read top to
bottom in the order of its math, calling the pieces here; an `Algorithm` record says what else it needs.

    run = RLRun(cfg, "runs/grpo", algorithm=grpo_algorithm)
    run.train()    # iterations to cfg.iterations, evaluation and checkpoints on schedule, RUN/model, summary

Set-up (`RLRun.__init__`): the whole prompt files are read and checked first (`read_prompts`), so bad data
stops the run before any model loads; then the policy (`cfg.policy`), a frozen reference when the algorithm
needs one during training, the algorithm's critic, the tokenised prompts, the Loop (one AdamW over the
policy and the critic) and the reward; then a resume, and RUN/config.yaml (with the file of any reward code
imported). The gold reward's rule: when the lab's is a reward source, every train and test prompt must be a
lab prompt; eval.gold (tether.rewards.gold_source) says which gold reward, if any, judges the evaluation and
is logged beside the reward in training: the lab's only when every prompt is one (auto), or a
'module:function' gold on any prompts that have the columns it reads.

The pieces an iteration calls, in its order: `sample` (this iteration's prompts, `copies` responses each),
`score` and `condition` (the reward, normalised, the no-EOS penalty), `group_advantages` (a group baseline
over every process's rewards), `update` (the algorithm's epochs over shuffled minibatches of
train.batch_size responses, one optimizer step each, the loss of each micro-batch from the algorithm; early
stop on approx_kl), `metrics`. `train()` owns what is common: iterating, logging, evaluating and
checkpointing on schedule (train.log_every, eval_every, save_every count iterations), SIGTERM, RUN/model and
summary.json. Sampling and minibatch order are seeded by (seed, iteration), so `--resume` continues exactly.

Several processes (`accelerate launch` / `torchrun`): each iteration's rollout.batch_size prompts are split
into contiguous shares, one per process, which samples (with its own seed stream), scores with its own
copies of the reference and reward models, and trains on its own responses: a minibatch is
train.batch_size / processes responses on each, every token loss divided by the minibatch's token count over
all processes, and DDP sums the gradients. Whole-batch statistics (reward normalisation, PPO's advantage
whitening, the KL controller, the approx_kl early stop) are computed over all processes; a GRPO/RLOO group
never spans two processes (see tether.trainers.distributed). Metrics are averaged over processes before they
are logged (tokens_per_s is summed); evaluation runs on the main process only.

The config must have: policy, reference, tokenizer, dtype, seed, iterations, data (PPODataConfig), rollout
(PPORolloutConfig or a subclass), reward (normalize, no_eos, no_eos_score), eval (PPOEvalConfig), train.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType, set_seed

from tether import lora
from tether.config import dump_config, to_dict, validate
from tether.data import collate_prompts, eos_id, pad_id
from tether.errors import TetherError
from tether.files import write_json
from tether.instruments.evaluate import evaluate_judged
from tether.model_card import write_model_card
from tether.model_files import dir_sha256, resolve_model
from tether.reference import load_reference
from tether.rewards import (
    RunningMoments,
    WeightedReward,
    columns_of,
    gold,
    gold_scorer,
    gold_source,
    imported_code,
    load_weighted_reward,
    penalize_unended,
)
from tether.rollout import Rollout, cut_at_stop, decode_responses, sample
from tether.rollout_vllm import check_engine
from tether.trainers.base import Loop, TrainingInterrupted, set_threads
from tether.trainers.distributed import gathered_rows, shard_seed
from tether.trainers.experience import update_epochs
from tether.trainers.rl_inputs import (
    append_samples,
    keep_samples_up_to,
    load_policy,
    load_prompt_items,
    read_prompts,
)
from tether.trainers.run_files import prepare_run_dir, save_final
from tether.trainers.supervised import batch_indices


@dataclasses.dataclass
class Algorithm:
    """What an RL algorithm tells the run it stands on."""

    stage: str  # the command's name: progress bar, summary.json's "stage", the run directory's marker
    iteration: Callable[[RLRun], dict]  # one sample → score → update iteration of `run`; returns its metrics
    rewards: list[tuple[str, float]]  # reward sources (RM directory, 'gold', 'module:function') with weights
    reference: bool  # whether training needs π_ref (the evaluation loads a base model either way)
    group_size: int = 1  # responses sampled per prompt (contiguous)
    epochs: int = 1  # passes of `update` over each iteration's responses, one optimizer step per minibatch
    max_approx_kl: float | None = None  # stop an iteration's epochs once an epoch's mean approx_kl passes it
    critic: Callable[[], torch.nn.Module] | None = None  # loads a value model trained beside the policy
    state: dict[str, Any] = dataclasses.field(default_factory=dict)  # has state_dict(): kept in checkpoints
    summary: Callable[[], dict] = dict  # the algorithm's own entries of summary.json


def iteration_seed(seed: int, iteration: int, stream: int) -> int:
    """A seed for one random stream (0: sampling, 1: minibatch order) of one iteration."""
    return (seed * 1_000_003 + iteration) * 4 + stream


class RLRun:
    """Models, data, reward and loop of one RL run of `algorithm(cfg)`; `train()` runs it to the end."""

    def __init__(self, cfg, run_dir: str | Path, resume: bool | str | Path = False, *,
                 algorithm: Callable[[Any], Algorithm]):
        self.start = time.perf_counter()
        validate(cfg)  # each value and the rules between them, as load_config checks them
        check_engine(cfg.rollout.engine)
        algorithm = algorithm(cfg)  # e.g. ppo_algorithm: its own checks, after the config's
        self.cfg, self.algo, self.run_dir = cfg, algorithm, Path(run_dir)
        gold_scored = "gold" in [spec for spec, weight in algorithm.rewards if weight != 0]
        train_prompts = read_prompts(cfg.data.train, gold_scored, cfg.data.columns)  # before any model loads
        test_prompts = read_prompts(cfg.data.test, gold_scored, cfg.data.columns) if cfg.data.test else []
        # the gold reward logged in training too; eval.gold=lab: a prompt not the lab's stops here, and a
        # gold function's missing column too (the held-out prompts are checked again by the evaluation)
        self.gold = gold_scorer(gold_source(cfg.eval.gold, train_prompts))
        gold_source(cfg.eval.gold, test_prompts)
        self.vllm = None  # the vLLM sampler, made at the first rollout when rollout.engine is vllm
        self._base_key = None  # the base's key in the samples cache (`base_key`), computed once
        resume = prepare_run_dir(self.run_dir, resume, cfg, algorithm.stage)
        set_seed(cfg.seed)
        policy, self.tokenizer = load_policy(cfg)
        if lora.enabled(cfg.lora):
            policy = lora.add_adapters(policy, cfg.lora, "causal", cfg.policy)
        set_threads(cfg.train.threads, policy, cfg.train.device)
        self.ref = self.load_reference(policy) if algorithm.reference else None  # frozen π_ref
        critic = {"value": algorithm.critic()} if algorithm.critic else None
        self.train_items = load_prompt_items(cfg.data.train, train_prompts, self.tokenizer, cfg)
        self.test_items = []
        if test_prompts:
            self.test_items = load_prompt_items(cfg.data.test, test_prompts, self.tokenizer, cfg)
        self.loop = Loop(cfg.train, self.run_dir, policy, self.tokenizer, total_steps=self.total_steps(),
                         extra_models=critic, config=to_dict(cfg))
        self.check_processes()
        self.device = self.loop.accelerator.device
        if self.ref is not None:
            self.ref.to(self.device)
        self.reward = load_weighted_reward(algorithm.rewards, device=self.device)
        self.moments = RunningMoments()
        self.iteration, self.last_eval = 0, {}
        extra = self.loop.resume(None if resume is True else resume) if resume else None
        if extra is not None:
            self.load_extra(extra)
        self.resumed = extra is not None  # None: no checkpoint yet, the run starts from iteration 0
        if self.resumed and self.loop.is_main:  # as metrics.jsonl: drop what was written after the checkpoint
            keep_samples_up_to(self.run_dir / "samples.jsonl", self.iteration)
        if self.loop.is_main:
            dump_config(cfg, self.run_dir, [cfg.data.train, cfg.data.test], code=imported_code(self.reward))

    def total_steps(self) -> int:
        """Optimizer steps of the whole run, for the learning-rate schedule."""
        cfg, a = self.cfg, self.algo
        return cfg.iterations * a.epochs * (cfg.rollout.batch_size * a.group_size // cfg.train.batch_size)

    def check_processes(self) -> None:
        """Each process needs an equal share of prompts and of every minibatch, and the whole policy (sampling
        runs on the unwrapped model, which FSDP / DeepSpeed ZeRO would hand over sharded)."""
        t, r, w = self.cfg.train, self.cfg.rollout, self.loop.world
        kind = self.loop.accelerator.distributed_type
        if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise TetherError(f"tether {self.algo.stage} samples with the whole policy on every process, so "
                              f"it cannot run under {kind.value}: choose multi-GPU (DDP) in "
                              "`accelerate config`")
        if r.batch_size % w or t.batch_size % (w * t.micro_batch_size):
            raise TetherError(
                f"with {w} processes rollout.batch_size={r.batch_size} must be a multiple of {w} and "
                f"train.batch_size={t.batch_size} of {w} × train.micro_batch_size={t.micro_batch_size}"
            )

    @property
    def policy(self):
        return self.loop.model

    @property
    def critic(self):
        """The value model (None for algorithms without one)."""
        return self.loop.models.get("value")

    # ----------------------------------------------------------------------------------- state

    def data_signature(self) -> dict:
        """What must not change across a resume for the data position to mean the same prompts."""
        n, cfg = len(self.train_items), self.cfg
        sig = {"n_prompts": n, "batch_size": cfg.rollout.batch_size, "seed": cfg.seed}
        return {**sig, "group_size": self.algo.group_size} if self.algo.group_size > 1 else sig

    def extra(self) -> dict:
        """What a checkpoint needs beyond the Loop's own state; the data position is the iteration."""
        return {
            "iteration": self.iteration,
            "reward_moments": self.moments.state_dict(),
            "last_eval": self.last_eval,
            "data": self.data_signature(),
            **{name: obj.state_dict() for name, obj in self.algo.state.items()},
        }

    def load_extra(self, extra: dict) -> None:
        if extra["data"] != self.data_signature():
            raise TetherError("the prompts, rollout batch size or seed differ from those of the checkpoint")
        self.iteration, self.last_eval = int(extra["iteration"]), dict(extra["last_eval"])
        self.moments.load_state_dict(extra["reward_moments"])
        for name, obj in self.algo.state.items():
            obj.load_state_dict(extra[name])

    # ----------------------------------------------------------------------------------- sampling

    def sample(self, copies: int = 1) -> tuple[list, Rollout, list[str]]:
        """This iteration's prompts (this process's share), each `copies` times in a row, and one response
        to each from π: (examples, rollout, decoded responses); an example (tether.data.PromptExample) is
        the prompt with its file's other columns, which the reward functions see."""
        items = [x for x in self.prompt_batch(self.iteration) for _ in range(copies)]
        rollout = self.rollout(items, iteration_seed(self.cfg.seed, self.iteration, 0))
        return [x.example for x in items], rollout, decode_responses(self.tokenizer, rollout)

    def prompt_batch(self, iteration: int):
        """This process's share of the prompts of iteration `iteration` (all of them with one process):
        passes over the data in seeded permutations."""
        idx = batch_indices(len(self.train_items), self.cfg.rollout.batch_size, self.cfg.seed, iteration)
        return self.loop.shard([self.train_items[i] for i in idx])

    def rollout(self, items, seed: int) -> Rollout:
        """Sample one response per item with the unwrapped policy (a stream of `seed` per process), cut at
        the stop strings.

        Under mixed precision the whole call runs in one autocast block (`Loop.autocast`): autocast keeps
        its low-precision copies of the weights until the outermost block ends, so they are cast once for
        the rollout, where the forward's own block (accelerate's wrapper) alone casts every weight again at
        every decode step. The samples are the same; bf16 on a CPU with bf16 units drew 95 against 55-62
        tokens/s at batch 8 (benchmarks/README.md, "Sampling throughput")."""
        r, tok = self.cfg.rollout, self.tokenizer
        if r.engine == "vllm":
            return cut_at_stop(self.vllm_rollout(items, seed), tok, r.stop, pad_id(tok))
        batch = collate_prompts(items, pad_id(tok))
        with self.loop.autocast():
            rollout = sample(
                self.loop.unwrapped,
                batch["input_ids"].to(self.device),
                batch["attention_mask"].to(self.device),
                max_new_tokens=r.max_new_tokens,
                eos_token_id=eos_id(tok),
                pad_token_id=pad_id(tok),
                temperature=r.temperature,
                top_p=r.top_p,
                generator=torch.Generator().manual_seed(shard_seed(seed, self.loop.rank)),
            )
        return cut_at_stop(rollout, tok, r.stop, pad_id(tok))

    @property
    def sampled_logprobs(self) -> bool:
        """Whether π_old's log-probs are taken from the sampler (tether.trainers.experience.score_rollout):
        when the policy sampled with the hf engine in float32 without autocast, where they differ from a
        scoring pass by float rounding only (vLLM, bf16 weights or mixed precision differ by more)."""
        dtype = next(self.loop.unwrapped.parameters()).dtype
        return self.cfg.rollout.engine == "hf" and self.loop.precision == "no" and dtype == torch.float32

    def vllm_rollout(self, items, seed: int) -> Rollout:
        """Sample with this process's vLLM engine after copying the current policy weights into it."""
        from tether.rollout_vllm import VLLMSampler

        if self.vllm is None:
            self.vllm = VLLMSampler(str(resolve_model(self.cfg.policy)), self.cfg.rollout, self.cfg.dtype)
        self.vllm.sync(self.loop.unwrapped)
        tok, seed = self.tokenizer, shard_seed(seed, self.loop.rank)
        return self.vllm.sample([x.prompt_ids for x in items], eos_id(tok), pad_id(tok), seed, self.device)

    # ----------------------------------------------------------------------------------- scoring

    def score(self, examples, responses) -> tuple[torch.Tensor, dict]:
        """The reward (B,) of each response to its example's prompt (the reward functions also receive the
        examples' other columns): the weighted sum of the sources, and each source's mean as
        reward/<name> when there are several or one is a Python function (its mean over the responses it
        applied to: None is left out)."""
        prompts, columns = [ex.prompt for ex in examples], columns_of(examples)
        if not isinstance(self.reward, WeightedReward):
            return self.reward(prompts, responses, **columns), {}
        parts = self.reward.parts(prompts, responses, **columns)
        names = self.reward.names
        means = {f"reward/{name}": float(p.nanmean()) for name, p in zip(names, parts, strict=True)}
        return self.reward.combine(parts), means

    def condition(self, raw: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """Scores the objective uses: normalised by running moments (when on; updated with every process's
        scores), then the no-EOS penalty."""
        scores = raw
        if self.cfg.reward.normalize:
            self.moments.update(self.loop.all_gather(raw))
            scores = self.moments.normalize(raw)
        return penalize_unended(scores, ended, self.cfg.reward.no_eos, self.cfg.reward.no_eos_score)

    def group_advantages(self, advantages: Callable[[torch.Tensor], torch.Tensor], rewards: torch.Tensor):
        """`advantages` (rewards (B,) → (B,), G per group) of this process's rewards. With several processes
        they are computed on every process's rewards gathered (so a batch-wide scale is the whole batch's)
        and this share is kept; groups are contiguous and never span processes, so a group statistic is
        unchanged by the gather."""
        if self.loop.world == 1:
            return advantages(rewards)
        return gathered_rows(advantages, rewards, self.loop.all_gather, self.loop.rank)

    def gold_mean(self, examples, responses, raw: torch.Tensor) -> float | None:
        """Mean gold reward of the responses (eval.gold's: the lab's on lab prompts, or a gold function with
        the examples' columns); None without one."""
        if self.gold is None:
            return None
        if self.reward is gold:  # the training reward is the lab's gold reward: already computed
            return float(raw.mean())
        scores = self.gold([ex.prompt for ex in examples], responses, **columns_of(examples))
        return sum(scores) / len(scores)

    # ----------------------------------------------------------------------------------- the update

    def update(self, exp, loss_fn) -> dict:
        """The algorithm's epochs of minibatch updates on `exp` (tether.trainers.experience.update_epochs),
        in minibatch orders seeded by the iteration."""
        cfg = self.cfg
        generator = torch.Generator().manual_seed(iteration_seed(cfg.seed, self.iteration, 1))
        return update_epochs(self.loop, exp, loss_fn, self.algo.epochs, self.algo.max_approx_kl,
                             cfg.train.batch_size, cfg.train.micro_batch_size, generator)

    def metrics(self, examples, responses, raw, scores, rollout: Rollout, t0: float, t1: float) -> dict:
        """What every iteration logs about its samples (the algorithm adds its own): the iteration, the
        mean raw reward, gold (eval.gold's, when any) and score, response length and share ended, the time
        spent sampling and scoring (rollout_s, up to `t1`) and the throughput since `t0`."""
        tokens = int(rollout.response_mask.sum())
        return {
            "iteration": self.iteration + 1,
            "reward": float(raw.mean()),
            "gold": self.gold_mean(examples, responses, raw),
            "score": float(scores.mean()),
            "response_length": tokens / rollout.response_mask.shape[0],
            "ended": float(rollout.ended.float().mean()),
            "rollout_s": t1 - t0,
            "tokens_per_s": tokens / (time.perf_counter() - t0),
        }


    # ----------------------------------------------------------------------------------- evaluation

    def proxy_scores(self, prompts, responses, **columns) -> list[float]:
        """The training reward of the evaluation's responses, with their prompts' other columns (which the
        evaluator passes), scored as training scores them."""
        with torch.autocast(self.device.type, enabled=False):
            return self.reward(prompts, responses, **columns).tolist()

    def load_reference(self, policy):
        """The frozen π_ref: the model at cfg.reference, or else a copy of the starting policy. With LoRA the
        copy is the policy itself with its adapters off (a different cfg.reference is still loaded)."""
        c = self.cfg
        return load_reference(policy, c.policy, c.reference, dtype=c.dtype,
                              trust_remote_code=c.trust_remote_code, copy=True)

    def base_model(self):
        """The model to compare with: the reference, or (when training did not need one) a fresh copy of
        cfg.reference or cfg.policy loaded for this evaluation only."""
        if self.ref is not None:
            return self.ref
        c, policy = self.cfg, self.loop.accelerator.unwrap_model(self.policy)
        return load_reference(policy, c.policy, c.reference, dtype=c.dtype,
                              trust_remote_code=c.trust_remote_code, device=self.device)

    def evaluate(self) -> dict:
        """Held-out prompts: one policy and one base sample each; KL-from-base, win-rate vs base, mean
        rewards. The judge is eval.gold's gold reward (the lab's on lab prompts by default), else the proxy
        reward. The base samples and is
        scored in the policy's precision (so a base equal to the policy is at KL 0)."""
        base = self.base_model()
        with self.loop.autocast():
            return evaluate_judged(
                self.loop.unwrapped,
                base,
                self.tokenizer,
                self.test_items[: self.cfg.eval.max_prompts],
                proxy=self.proxy_scores,
                max_new_tokens=self.cfg.rollout.max_new_tokens,
                seed=self.cfg.seed,
                gold=self.cfg.eval.gold,
                keep_samples=True,
                temperature=self.cfg.eval.temperature,
                base_key=self.base_key(base),
            )

    def base_key(self, base) -> str | None:
        """The base's key in the samples cache (tether/instruments/sample_cache.py), so that every evaluation
        of this run and of any run from the same start reuses one draw of the base samples: the files of
        cfg.reference or cfg.policy, how the base was made of them (the policy with adapters off, or a loaded
        model) and the autocast precision. None when those are not a local directory (a Hub id)."""
        c = self.cfg
        path = Path(c.reference or c.policy)
        if not c.eval.cache_base_samples or not path.is_dir():
            return None
        if self._base_key is None:
            self._base_key = f"{dir_sha256(path)}|{type(base).__name__}|{self.loop.precision}"
        return self._base_key

    def log_eval(self) -> None:
        """Evaluate and log, on the main process only (which alone writes the summary): the means to
        metrics.jsonl, each policy sample to samples.jsonl (`log_samples`)."""
        if not self.loop.is_main:
            return
        result = self.evaluate()
        samples = result.pop("samples")["policy"]
        self.last_eval = result
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
        self.log_samples(samples)

    def log_samples(self, samples) -> None:
        """Append the policy's evaluation samples to RUN/samples.jsonl (`append_samples`) and send them as a
        table to the trackers."""
        columns, rows = append_samples(self.run_dir / "samples.jsonl", self.iteration, self.loop.state.step,
                                       samples)
        self.loop.track_table("samples", columns, rows, self.loop.state.step)

    # ----------------------------------------------------------------------------------- the run

    def due(self, every: int) -> bool:
        return every > 0 and self.iteration % every == 0

    def step(self) -> dict:
        """One iteration of the algorithm; returns its metrics (this process's)."""
        return self.algo.iteration(self)

    def train(self) -> Path:
        """Train to `cfg.iterations`, evaluating and saving on schedule; then the final evaluation, RUN/model
        and summary.json. Raises TrainingInterrupted after SIGTERM (once a checkpoint is written)."""
        try:
            return self._train()
        finally:
            self.loop.end_tracking()  # on errors; after the summary it has ended already

    def _train(self) -> Path:
        cfg, loop = self.cfg, self.loop
        saved_at, evaluated_at = self.iteration if self.resumed else -1, -1
        with loop.running(total=cfg.iterations, initial=self.iteration, desc=self.algo.stage):
            while self.iteration < cfg.iterations:
                record = self.reduce_record(self.step())
                self.iteration += 1
                loop.bar.update(1)
                kl = record.get("kl")
                loop.bar.set_postfix(
                    reward=f"{record['reward']:.3f}", kl="-" if kl is None else f"{kl:.2f}", refresh=False
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

    def reduce_record(self, record: dict) -> dict:
        """An iteration's metrics averaged over processes (every process's share is the same size, so a mean
        of means is the whole batch's mean); throughput is summed."""
        out = self.loop.reduce_mean(record)
        if "tokens_per_s" in out and self.loop.world > 1:
            out["tokens_per_s"] *= self.loop.world
        return out

    def write_summary(self, model_dir: Path, seconds: float) -> None:
        summary = {
            "stage": self.algo.stage,
            "iterations": self.iteration,
            "steps": self.loop.state.step,
            "skipped_steps": self.loop.state.skipped,
            **self.last_eval,
            **self.algo.summary(),
            "model": str(model_dir),
            "wall_seconds": seconds,
        }
        write_json(self.run_dir / "summary.json", summary)
        write_model_card(self.run_dir)
        self.loop.end_tracking(summary)
