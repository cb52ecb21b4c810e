"""What every RL trainer (PPO, GRPO, RLOO) shares: policy, prompts, rollouts, reward, evaluation, the run.

    class MyTrainer(RLTrainer):
        stage = "my"
        def step(self) -> dict: ...            # one rollout-and-update iteration; returns its metrics
        def minibatch_loss(self, part, num_tokens, num_sequences): ...   # (loss, metrics) of a micro-batch

`RLTrainer.__init__` first reads and checks the whole prompt files (`read_prompts`), so that bad data stops
the run before any model loads; then it loads the policy (`cfg.policy`), a frozen copy of it as the
reference when `needs_reference()` says so, tokenises the prompts, makes the Loop (one AdamW over the policy
and `extra_models()`) and the reward (`load_reward_fn()`), then resumes and writes RUN/config.yaml (with
the file of any reward code imported). The gold reward's rule: when it is a reward source ('gold' in
`reward_specs()`), every train and test prompt must be a lab prompt; otherwise it is logged (and judges the
evaluation) only when every prompt is one.
`run()` iterates to `cfg.iterations`, logging, evaluating and checkpointing on schedule (train.log_every,
eval_every, save_every count iterations), then writes RUN/model and summary.json. `update()` is the shared
optimisation of one iteration's experience: `epochs()` passes over shuffled minibatches of train.batch_size
responses, one optimizer step each, the loss of each micro-batch from the subclass. Sampling and minibatch
order are seeded by (seed, iteration), so `--resume` continues exactly.

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

import copy
import dataclasses
import time
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed

from tether import lora
from tether.config import dump_config, validate
from tether.data import collate_prompts, eos_id, load_prompts, pad_id, tokenize_prompts
from tether.errors import TetherError
from tether.files import write_json
from tether.instruments.evaluate import evaluate_judged
from tether.kl_control import AdaptiveKLController, FixedKLController
from tether.model_files import load_causal_lm, load_tokenizer, resolve_model
from tether.rewards import (
    RunningMoments,
    gold,
    imported_code,
    penalize_unended,
    require_lab_prompts,
    uses_gold,
)
from tether.rollout import Rollout, sample
from tether.rollout_vllm import check_engine
from tether.trainers.base import (
    Loop,
    TrainingInterrupted,
    prepare_run_dir,
    save_final,
    set_threads,
)
from tether.trainers.distributed import shard_seed
from tether.trainers.supervised import batch_indices


def iteration_seed(seed: int, iteration: int, stream: int) -> int:
    """A seed for one random stream (0: sampling, 1: minibatch order) of one iteration."""
    return (seed * 1_000_003 + iteration) * 4 + stream


def load_policy(cfg):
    """The model at cfg.policy (eval mode: no dropout, so π/π_old = 1 before an update) and its tokenizer."""
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy, cfg.trust_remote_code)
    return load_causal_lm(cfg.policy, cfg.dtype, cfg.trust_remote_code).eval(), tokenizer


def read_prompts(path: str, gold_scored: bool) -> list:
    """Every prompt of a file, checked (tether.data.load_prompts); when the gold reward scores them, each
    one must be a lab prompt (DataError at the first that is not), since the gold reward scores those only."""
    examples = load_prompts(path)
    if gold_scored:
        why = "the gold reward scores lab prompts only (reward.source or a reward term is 'gold')"
        require_lab_prompts(examples, why)
    return examples


def load_prompt_items(path: str, examples: list, tokenizer, cfg):
    """The tokenised prompts `examples` of the file `path` (`read_prompts`)."""
    d = cfg.data
    items, _ = tokenize_prompts(examples, tokenizer, d.max_prompt_length, d.too_long, d.chat_template)
    if not items:
        raise TetherError(f"{path}: no prompts left after skipping")
    return items


def kl_controller(cfg):
    """Fixed or adaptive β from cfg.kl (a PPOKLConfig)."""
    k = cfg.kl
    return AdaptiveKLController(k.beta, k.target, k.horizon) if k.adaptive else FixedKLController(k.beta)


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


class RLTrainer:
    """Models, data, reward and loop of one RL run; a subclass adds the algorithm (step, minibatch_loss)."""

    stage = "rl"  # the command's name: progress bar, summary.json's "stage"

    def __init__(self, cfg, run_dir: str | Path, resume: bool | str | Path = False):
        self.start = time.perf_counter()
        validate(cfg)  # each value and the rules between them, as load_config checks them
        self.check_config(cfg)
        check_engine(cfg.rollout.engine)
        gold_scored = "gold" in self.reward_specs(cfg)  # the whole prompt files, before any model loads:
        train_prompts = read_prompts(cfg.data.train, gold_scored)
        test_prompts = read_prompts(cfg.data.test, gold_scored) if cfg.data.test else []
        self.lab = uses_gold(cfg.eval.gold, train_prompts)  # the gold reward logged in training too
        uses_gold(cfg.eval.gold, test_prompts)  # eval.gold=lab: a held-out prompt not the lab's stops here
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.vllm = None  # the vLLM sampler, made at the first rollout when rollout.engine is vllm
        resume = prepare_run_dir(self.run_dir, resume, cfg, self.stage)
        set_seed(cfg.seed)
        policy, self.tokenizer = load_policy(cfg)
        if lora.enabled(cfg.lora):
            policy = lora.add_adapters(policy, cfg.lora, "causal", cfg.policy)
        set_threads(cfg.train.threads, policy, cfg.train.device)
        # the frozen reference, when the objective needs it during training
        self.ref = self.load_reference(policy) if self.needs_reference() else None
        extra_models = self.extra_models()
        self.train_items = load_prompt_items(cfg.data.train, train_prompts, self.tokenizer, cfg)
        self.test_items = []
        if test_prompts:
            self.test_items = load_prompt_items(cfg.data.test, test_prompts, self.tokenizer, cfg)
        self.loop = Loop(
            cfg.train, self.run_dir, policy, self.tokenizer, total_steps=self.total_steps(),
            extra_models=extra_models,
        )
        self.check_processes()
        self.device = self.loop.accelerator.device
        if self.ref is not None:
            self.ref.to(self.device)
        self.reward = self.load_reward_fn()
        self.moments = RunningMoments()
        self.iteration, self.last_eval = 0, {}
        self.setup()
        extra = self.loop.resume(None if resume is True else resume) if resume else None
        if extra is not None:
            self.load_extra(extra)
        self.resumed = extra is not None  # None: no checkpoint yet, the run starts from iteration 0
        if self.loop.is_main:
            dump_config(cfg, self.run_dir, [cfg.data.train, cfg.data.test], code=imported_code(self.reward))

    # ----------------------------------------------------------------------------------- hooks

    def check_config(self, cfg) -> None:
        """TetherError for settings that cannot run, beyond what `tether.config.validate` checks."""

    def needs_reference(self) -> bool:
        return True

    def check_processes(self) -> None:
        """Each process needs an equal share of prompts and of every minibatch, and the whole policy (sampling
        runs on the unwrapped model, which FSDP / DeepSpeed ZeRO would hand over sharded)."""
        t, r, w = self.cfg.train, self.cfg.rollout, self.loop.world
        kind = self.loop.accelerator.distributed_type
        if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise TetherError(f"tether {self.stage} samples with the whole policy on every process, so it "
                              f"cannot run under {kind.value}: choose multi-GPU (DDP) in `accelerate config`")
        if r.batch_size % w or t.batch_size % (w * t.micro_batch_size):
            raise TetherError(
                f"with {w} processes rollout.batch_size={r.batch_size} must be a multiple of {w} and "
                f"train.batch_size={t.batch_size} of {w} × train.micro_batch_size={t.micro_batch_size}"
            )

    def extra_models(self) -> dict[str, torch.nn.Module] | None:
        """More trained models, optimised with the policy and saved in checkpoints' sub-directories."""
        return None

    def total_steps(self) -> int:
        """Optimizer steps of the whole run, for the learning-rate schedule."""
        raise NotImplementedError

    def load_reward_fn(self):
        raise NotImplementedError

    def reward_specs(self, cfg) -> list[str]:
        """The reward sources `load_reward_fn` will load (a reward model directory, 'gold' or
        'module:function' each)."""
        return [cfg.reward.source]

    def setup(self) -> None:
        """Trainer state that checkpoints carry (e.g. a β controller), made before a resume restores it."""

    def epochs(self) -> int:
        """Passes over each iteration's experience."""
        return 1

    def max_approx_kl(self) -> float | None:
        """Stop an iteration's remaining epochs once an epoch's mean approx_kl passes this."""
        return None

    def minibatch_loss(self, part, num_tokens: torch.Tensor, num_sequences: int):
        """(loss, metrics) of one micro-batch `part` of an experience; num_tokens and num_sequences are the
        whole minibatch's counts, so micro-batch losses sum to the minibatch's."""
        raise NotImplementedError

    def step(self) -> dict:
        """One rollout-and-update iteration; returns its metrics."""
        raise NotImplementedError

    def summary_fields(self) -> dict:
        """Trainer-specific entries of summary.json."""
        return {}

    @property
    def policy(self):
        return self.loop.model

    # ----------------------------------------------------------------------------------- state

    def data_signature(self) -> dict:
        """What must not change across a resume for the data position to mean the same prompts."""
        n, cfg = len(self.train_items), self.cfg
        return {"n_prompts": n, "batch_size": cfg.rollout.batch_size, "seed": cfg.seed}

    def extra(self) -> dict:
        """What a checkpoint needs beyond the Loop's own state; the data position is the iteration."""
        return {
            "iteration": self.iteration,
            "reward_moments": self.moments.state_dict(),
            "last_eval": self.last_eval,
            "data": self.data_signature(),
        }

    def load_extra(self, extra: dict) -> None:
        if extra["data"] != self.data_signature():
            raise TetherError("the prompts, rollout batch size or seed differ from those of the checkpoint")
        self.iteration, self.last_eval = int(extra["iteration"]), dict(extra["last_eval"])
        self.moments.load_state_dict(extra["reward_moments"])

    # ----------------------------------------------------------------------------------- rollouts

    def prompt_batch(self, iteration: int):
        """This process's share of the prompts of iteration `iteration` (all of them with one process):
        passes over the data in seeded permutations."""
        idx = batch_indices(len(self.train_items), self.cfg.rollout.batch_size, self.cfg.seed, iteration)
        return self.loop.shard([self.train_items[i] for i in idx])

    def rollout(self, items, seed: int) -> Rollout:
        """Sample one response per item with the unwrapped policy (a stream of `seed` per process)."""
        r, tok = self.cfg.rollout, self.tokenizer
        if r.engine == "vllm":
            return cut_at_stop(self.vllm_rollout(items, seed), tok, r.stop, pad_id(tok))
        batch = collate_prompts(items, pad_id(tok))
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

    def vllm_rollout(self, items, seed: int) -> Rollout:
        """Sample with this process's vLLM engine after copying the current policy weights into it."""
        from tether.rollout_vllm import VLLMSampler

        if self.vllm is None:
            self.vllm = VLLMSampler(str(resolve_model(self.cfg.policy)), self.cfg.rollout, self.cfg.dtype)
        self.vllm.sync(self.loop.unwrapped)
        tok, seed = self.tokenizer, shard_seed(seed, self.loop.rank)
        return self.vllm.sample([x.prompt_ids for x in items], eos_id(tok), pad_id(tok), seed, self.device)

    def condition(self, raw: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """Scores the objective uses: normalised by running moments (when on; updated with every process's
        scores), then the no-EOS penalty."""
        scores = raw
        if self.cfg.reward.normalize:
            self.moments.update(self.loop.all_gather(raw))
            scores = self.moments.normalize(raw)
        return penalize_unended(scores, ended, self.cfg.reward.no_eos, self.cfg.reward.no_eos_score)

    def gold_mean(self, prompts, responses, raw: torch.Tensor) -> float | None:
        """Mean gold reward of the responses when the prompts are the lab's (None otherwise)."""
        if not self.lab:
            return None
        return float(raw.mean() if self.reward is gold else gold(prompts, responses).mean())

    # ----------------------------------------------------------------------------------- the update

    def update(self, exp, generator: torch.Generator) -> dict:
        """`epochs()` passes over shuffled minibatches, one optimizer step each; early stop on approx_kl.
        Returns token-weighted means of the loss metrics, the epochs run, and the last step's lr and norm.
        With several processes `exp` is this process's share and so is each minibatch (mb / processes rows);
        token counts and the early-stop KL are summed over processes."""
        cfg, loop = self.cfg, self.loop
        mb, micro = cfg.train.batch_size // loop.world, cfg.train.micro_batch_size
        sums: dict[str, float] = {}
        total_tokens, epochs_run, info = 0, 0, {}
        for _ in range(self.epochs()):
            order = torch.randperm(exp.size, generator=generator)
            epoch_kl, epoch_tokens = 0.0, 0
            for start in range(0, exp.size, mb):
                minibatch = exp.rows(order[start : start + mb])
                num_tokens = loop.all_sum(minibatch.mask.sum()).clamp(min=1)  # of the whole minibatch
                n_micro = mb // micro
                for j in range(n_micro):
                    part = minibatch.rows(slice(j * micro, (j + 1) * micro)).trimmed()
                    with loop.accumulate(sync=j == n_micro - 1):
                        with loop.autocast():  # a critic's trunk, called directly, as at sampling time
                            loss, metrics = self.minibatch_loss(part, num_tokens, cfg.train.batch_size)
                        loop.backward(loss)
                    n = int(part.mask.sum())
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + n * float(v)
                    total_tokens += n
                    epoch_tokens += n
                    epoch_kl += n * float(metrics["approx_kl"])
                info = loop.optimizer_step()
            epochs_run += 1
            bound = self.max_approx_kl()
            if bound is not None:
                kl_tokens = loop.all_sum(torch.tensor([epoch_kl, float(epoch_tokens)], dtype=torch.float64))
                if float(kl_tokens[0] / kl_tokens[1].clamp(min=1)) > bound:  # same verdict on every process
                    break
        out = {k: v / max(total_tokens, 1) for k, v in sums.items()}
        out.update(epochs=epochs_run, lr=info.get("lr"), grad_norm=info.get("grad_norm"))
        return out

    # ----------------------------------------------------------------------------------- evaluation

    def proxy_scores(self, prompts, responses) -> list[float]:
        with torch.autocast(self.device.type, enabled=False):  # the reward as training scores it
            return self.reward(prompts, responses).tolist()

    def load_reference(self, policy):
        """The frozen π_ref: the model at cfg.reference, or else a copy of the starting policy. With LoRA the
        copy is the policy itself with its adapters off (a different cfg.reference is still loaded)."""
        if lora.is_peft(policy) and lora.same_model(self.cfg.reference, self.cfg.policy):
            return lora.AdaptersOff(policy)
        if self.cfg.reference:
            model, _ = load_policy(dataclasses.replace(self.cfg, policy=self.cfg.reference))
            return model.requires_grad_(False)
        return copy.deepcopy(policy).requires_grad_(False)

    def base_model(self):
        """The model to compare with: the reference, or (when training did not need one) a fresh copy of
        cfg.reference or cfg.policy loaded for this evaluation only."""
        if self.ref is not None:
            return self.ref
        policy = self.loop.accelerator.unwrap_model(self.policy)
        if lora.is_peft(policy) and lora.same_model(self.cfg.reference, self.cfg.policy):
            return lora.AdaptersOff(policy)
        model, _ = load_policy(dataclasses.replace(self.cfg, policy=self.cfg.reference or self.cfg.policy))
        return model.requires_grad_(False).to(self.device)

    def evaluate(self) -> dict:
        """Held-out prompts: one policy and one base sample each; KL-from-base, win-rate vs base, mean
        rewards. The judge is the gold reward on lab prompts, else the proxy reward. The base samples and is
        scored in the policy's precision (so a base equal to the policy is at KL 0)."""
        with self.loop.autocast():
            return evaluate_judged(
                self.loop.unwrapped,
                self.base_model(),
                self.tokenizer,
                self.test_items[: self.cfg.eval.max_prompts],
                proxy=self.proxy_scores,
                max_new_tokens=self.cfg.rollout.max_new_tokens,
                seed=self.cfg.seed,
                gold=self.cfg.eval.gold,
            )

    def log_eval(self) -> None:
        """Evaluate and log, on the main process only (which alone writes the summary)."""
        if not self.loop.is_main:
            return
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
        with loop.running(total=cfg.iterations, initial=self.iteration, desc=self.stage):
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
            "stage": self.stage,
            "iterations": self.iteration,
            "steps": self.loop.state.step,
            "skipped_steps": self.loop.state.skipped,
            **self.last_eval,
            **self.summary_fields(),
            "model": str(model_dir),
            "wall_seconds": seconds,
        }
        write_json(self.run_dir / "summary.json", summary)
