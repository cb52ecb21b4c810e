"""Direct preference optimisation: preference pairs → `tether.losses.dpo_loss` → AdamW, no reward model.

    run_dir = train_dpo(load_config(DPOConfig, "configs/dpo.yaml"), "runs/dpo")

DPO (Rafailov et al. 2023) trains the policy π directly on pairs (x, y_w, y_l): its implicit reward
β·log(π(y|x)/π_ref(y|x)) is fitted to the preferences with the Bradley-Terry loss, so the policy it reaches
is the optimum π* ∝ π_ref·exp(r/β) of the KL-regularised objective for the reward the pairs imply. The
variants (IPO, robust, hinge) are entries of `tether.losses.preference.DPO_LOSSES`; the trainer only
computes the four sequence log-probs each needs (reduced as `DPO_LOGPROB_REDUCTION` says).

Chosen and rejected rows go through the policy in one forward pass (`collate_pairs`: B chosen rows, then
the B rejected rows). The reference's log-probs are computed once before training and cached in
RUN/ref_logprobs.pt (`precompute_reference: true`, reused on --resume), or at every step.

Writes RUN/config.yaml, ref_logprobs.pt, metrics.jsonl (per step: loss, chosen_reward and rejected_reward,
the implicit rewards β·(log π − log π_ref); margin, their difference; accuracy, the share of pairs whose
chosen reward is higher; per eval: the same on held-out pairs as test_*, and kl_from_reference, the
sequence-level KL(π‖π_ref) in nats of policy samples on held-out prompts), checkpoints/, the policy in
RUN/model/ and summary.json.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object, set_seed

from tether import lora
from tether.config import DPOConfig, DPODataConfig, validate
from tether.data import collate_prompts, eos_id, pad_id, set_template
from tether.errors import TetherError
from tether.files import save_atomic
from tether.instruments.kl import kl_from_base
from tether.losses import DPO_LOGPROB_REDUCTION, dpo_loss
from tether.model_files import load_causal_lm, load_tokenizer
from tether.precision import autocast, autocast_precision
from tether.preferences import PairTokens, collate_pairs, load_pairs, pair_shape
from tether.reference import load_reference
from tether.rollout import completion_logprobs, sample
from tether.trainers.base import Loop
from tether.trainers.run_files import claim_run, prepare_run_dir
from tether.trainers.supervised import to_device, train_supervised

log = logging.getLogger(__name__)

REF_CACHE = "ref_logprobs.pt"
KL_SEED_OFFSET = 7919  # the KL samples' generator: seed + this, the same prompts and draws at every eval


@dataclass
class DPOPair:
    """A tokenised pair (with its label) and, when precomputed, the reference's log-probs of its responses."""

    tokens: PairTokens
    ref: tuple[float, float] | None = None  # (log π_ref(y_w|x), log π_ref(y_l|x)), reduced like the policy's

    @property
    def label(self) -> float:
        """P(chosen ≻ rejected); 1 is a sure preference."""
        return self.tokens.label


def load_dpo_pairs(path, tokenizer, d: DPODataConfig) -> list[DPOPair]:
    """Read, validate (errors name file:line) and tokenise a preference file (tether.preferences)."""
    pairs = load_pairs(path, tokenizer, d.max_length, d.too_long, d.chat_template, d.use_soft_labels,
                       columns=d.columns)
    return [DPOPair(p) for p in pairs]


def check_config(cfg: DPOConfig) -> None:
    """What dpo_loss would refuse (β, label smoothing, soft labels: DPOConfig's rules), as a TetherError
    naming the config keys; a config from load_config has passed it already."""
    validate(cfg)


# ------------------------------------------------------------------------------------------------ log-probs


def sequence_logprobs(model, batch: dict[str, torch.Tensor], reduction: str) -> torch.Tensor:
    """log π(y|x) of each row's response tokens (EOS included), one forward pass: (R,) float32.

    reduction "sum" gives the sequence log-prob itself, "mean" divides it by the row's response length.
    The LM head runs on the response positions only (`tether.rollout.completion_logprobs`)."""
    total = completion_logprobs(model, batch).sum(-1)  # (R,)
    return total if reduction == "sum" else total / batch["loss_mask"][:, 1:].sum(-1).clamp(min=1)


@torch.no_grad()
def reference_logprobs(reference, items: Sequence[DPOPair], pad_value: int, reduction: str, device,
                       batch_size: int) -> torch.Tensor:
    """(N, 2) reference log-probs (chosen, rejected) of `items`, in order."""
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        batch = to_device(collate_pairs([x.tokens for x in chunk], pad_value, side="right"), device)
        lp = sequence_logprobs(reference, batch, reduction).float().cpu()  # (2B,)
        out.append(torch.stack([lp[: len(chunk)], lp[len(chunk) :]], dim=1))
    return torch.cat(out) if out else torch.zeros(0, 2)


def precision_of(cfg: DPOConfig) -> str:
    """The autocast precision of the run's Loop ("no", "bf16", "fp16"), which the reference passes share."""
    return autocast_precision(cfg.train.mixed_precision, cfg.train.device)


def fingerprint(cfg: DPOConfig, splits: dict[str, Sequence[DPOPair]]) -> str:
    """sha256 of the reference, dtype, reduction, autocast precision (when not "no") and every pair's token
    ids: what the cache depends on."""
    reduction = DPO_LOGPROB_REDUCTION[cfg.loss_type]
    precision = precision_of(cfg)
    mixed = f"|{precision}" if precision != "no" else ""  # float32 caches keep their earlier fingerprint
    h = hashlib.sha256(f"{cfg.reference or cfg.policy}|{cfg.dtype}|{reduction}{mixed}".encode())
    for name, items in splits.items():
        h.update(name.encode())
        for x in items:
            t = x.tokens
            h.update(repr((t.prompt_ids, t.chosen_ids, t.rejected_ids)).encode())
    return h.hexdigest()


def cache_checksum(cache: dict) -> str:
    """SHA-256 of a reference cache's fingerprint and log-probs (split names sorted); the cache stores it."""
    h = hashlib.sha256(cache["fingerprint"].encode())
    for name in sorted(k for k in cache if k not in ("fingerprint", "sha256")):
        h.update(name.encode())
        h.update(cache[name].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def read_cache(path: Path) -> tuple[dict | None, str | None]:
    """(cache, None) when RUN/ref_logprobs.pt loads and, when it records one (tether writes it), matches its
    SHA-256; else (None, what is wrong)."""
    try:
        cache = torch.load(path, weights_only=True)
        if "sha256" in cache and cache["sha256"] != cache_checksum(cache):
            return None, "its contents differ from their SHA-256"
    except Exception as e:  # a truncated or foreign file fails anywhere in torch's reader
        return None, f"it does not load: {' '.join(str(e).split()).split('. ')[0][:160]}"
    return cache, None


def attach_reference(cfg: DPOConfig, run_dir: Path, reference, splits: dict[str, Sequence[DPOPair]],
                     pad_value: int, device) -> None:
    """Set each pair's `ref` from RUN/ref_logprobs.pt, computing and writing the file (atomically, main
    process only) when it is not there yet. A cache for other pairs or another reference is an error; a
    damaged one (truncated, or its SHA-256 no longer matches) is computed again, with a warning. The
    reference runs in the training's autocast precision (train.mixed_precision), as the policy will."""
    path, key = run_dir / REF_CACHE, fingerprint(cfg, splits)
    cache = None
    if path.is_file():
        cache, damage = read_cache(path)
        if cache is not None and cache.get("fingerprint") != key:
            raise TetherError(f"{path} was computed for other pairs, reference, loss_type or "
                              "train.mixed_precision; start a new run")
        if cache is not None and any(tuple(cache[n].shape) != (len(x), 2) for n, x in splits.items()):
            cache, damage = None, "its log-probs do not have one row per pair"
        if cache is None:
            log.warning("%s is damaged (%s): computing the reference log-probs again", path, damage)
    if cache is None:
        reduction = DPO_LOGPROB_REDUCTION[cfg.loss_type]
        size = cfg.train.micro_batch_size
        with autocast(precision_of(cfg), device):
            cache = {name: reference_logprobs(reference, items, pad_value, reduction, device, size)
                     for name, items in splits.items()}
        cache["fingerprint"] = key
        cache["sha256"] = cache_checksum(cache)
        if PartialState().is_main_process:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_atomic(cache, path)
    for name, items in splits.items():
        for x, (c, r) in zip(items, cache[name].tolist(), strict=True):
            x.ref = (c, r)


# ------------------------------------------------------------------------------------------------ task


class DPOTask:
    """`dpo_loss` on the policy's and the reference's log-probs of chosen and rejected; the unit is a pair."""

    unit = "pairs"

    def __init__(self, cfg: DPOConfig, tokenizer, reference=None):
        """reference: the frozen π_ref, needed when its log-probs are not precomputed and for the KL."""
        self.cfg, self.tokenizer, self.reference = cfg, tokenizer, reference
        self.pad_value = pad_id(tokenizer)
        self.precision = precision_of(cfg)  # the reference computes in the policy's autocast precision
        self.reduction = DPO_LOGPROB_REDUCTION[cfg.loss_type]

    def collate(self, items: Sequence[DPOPair]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask, loss_mask (2B, T): B chosen rows then B rejected rows; label (B,);
        ref_chosen, ref_rejected (B,) when the reference log-probs are precomputed."""
        batch = collate_pairs([x.tokens for x in items], self.pad_value, side="right")
        batch["label"] = torch.tensor([x.label for x in items], dtype=torch.float32)
        if all(x.ref is not None for x in items):
            ref = torch.tensor([x.ref for x in items], dtype=torch.float32)  # (B, 2)
            batch["ref_chosen"], batch["ref_rejected"] = ref[:, 0], ref[:, 1]
        return batch

    def count(self, items: Sequence[DPOPair]) -> int:
        return len(items)

    def shape(self, item: DPOPair) -> tuple[int, int]:
        return pair_shape(item.tokens)

    def policy_logprobs(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) log-probs, (B,) each, from one forward pass over all 2B rows."""
        B = batch["label"].shape[0]
        lp = sequence_logprobs(model, batch, self.reduction)  # (2B,)
        return lp[:B], lp[B:]

    def reference_logprobs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen" in batch:
            return batch["ref_chosen"], batch["ref_rejected"]
        if self.reference is None:
            raise TetherError("the reference log-probs are neither precomputed nor computable (no reference)")
        with torch.no_grad(), autocast(self.precision, batch["input_ids"].device):
            return self.policy_logprobs(self.reference, batch)

    def pair_loss(self, chosen, rejected, ref_chosen, ref_rejected, label):
        """dpo_loss, mean over the B pairs, with this run's β, loss type and (soft) labels."""
        labels = label if self.cfg.data.use_soft_labels else None
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.cfg.beta, self.cfg.loss_type,
                        self.cfg.label_smoothing, labels)

    def loss(self, model, batch, num_units):
        chosen, rejected = self.policy_logprobs(model, batch)
        mean_loss, metrics = self.pair_loss(chosen, rejected, *self.reference_logprobs(batch), batch["label"])
        return mean_loss * (chosen.shape[0] / num_units), metrics  # the batch's sum over num_units

    @torch.no_grad()
    def evaluate(self, loop: Loop, items: Sequence[DPOPair]) -> dict[str, float]:
        """Held-out loss, preference accuracy, implicit rewards and margin (each process scores its share,
        gathered before the means), then the sampled KL from the reference."""
        model = loop.model
        was_training = model.training
        model.eval()
        rows = []  # (loss, chosen_reward, rejected_reward) per pair
        mine = items[loop.rank :: loop.world]
        for i in range(0, len(mine), self.cfg.train.micro_batch_size):
            chunk = mine[i : i + self.cfg.train.micro_batch_size]
            batch = to_device(self.collate(chunk), loop.accelerator.device)
            logps = [*self.policy_logprobs(model, batch), *self.reference_logprobs(batch), batch["label"]]
            for j in range(len(chunk)):  # one pair at a time, so the gathered means need no weights
                loss, m = self.pair_loss(*(x[j : j + 1] for x in logps))
                rows.append((float(loss), float(m["chosen_reward"]), float(m["rejected_reward"])))
        if loop.world > 1:
            rows = gather_object(rows)
        model.train(was_training)
        n = len(rows)
        out = {
            "test_loss": sum(r[0] for r in rows) / n,
            "test_accuracy": sum(r[1] > r[2] for r in rows) / n,
            "test_margin": sum(r[1] - r[2] for r in rows) / n,
            "test_chosen_reward": sum(r[1] for r in rows) / n,
            "test_rejected_reward": sum(r[2] for r in rows) / n,
            "test_pairs": n,
        }
        out.update(self.kl_from_reference(loop, items))
        return out

    @torch.no_grad()
    def kl_from_reference(self, loop: Loop, items: Sequence[DPOPair]) -> dict[str, float]:
        """KL(π‖π_ref) in nats per response: one policy sample (temperature 1) for each of the first
        eval.kl_prompts distinct held-out prompts, the per-token closed-form KL summed over the response
        (tether.instruments.kl); the same seed at every eval. {} when there is nothing to compare."""
        k = self.cfg.eval.kl_prompts
        if k <= 0 or self.reference is None:
            return {}
        prompts = list({tuple(x.tokens.prompt_ids): x.tokens for x in items}.values())[:k]
        policy = loop.accelerator.unwrap_model(loop.model)
        was_training = policy.training
        policy.eval()
        generator = torch.Generator().manual_seed(self.cfg.seed + KL_SEED_OFFSET)
        device, rollouts = loop.accelerator.device, []
        with loop.autocast():  # one block: weights cast once, not at every decode step (RLRun.rollout)
            for i in range(0, len(prompts), self.cfg.train.micro_batch_size):
                batch = collate_prompts(prompts[i : i + self.cfg.train.micro_batch_size], self.pad_value)
                rollouts.append(sample(
                    policy, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                    max_new_tokens=self.cfg.eval.max_new_tokens, eos_token_id=eos_id(self.tokenizer),
                    pad_token_id=self.pad_value, generator=generator,
                ))
            kl = kl_from_base(policy, self.reference, rollouts)
        policy.train(was_training)
        return {"kl_from_reference": kl["value"], "kl_from_reference_stderr": kl["stderr"],
                "kl_from_reference_k1": kl["k1"], "kl_prompts": kl["n"]}


# ------------------------------------------------------------------------------------------------ train


def train_dpo(cfg: DPOConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train `cfg.policy` by DPO (or a variant) on `cfg.data` against `cfg.reference`; returns the run dir.

    resume: True continues from the run's latest checkpoint, a path from that checkpoint (the cached
    reference log-probs are reused). Raises `TrainingInterrupted` after SIGTERM (once a checkpoint is
    saved) and `TetherError` on bad input. Holds the run directory's lock while it runs (tether.rundir).
    """
    check_config(cfg)
    with claim_run(out, "dpo", cfg, resume) as cfg:
        return _train_dpo(cfg, Path(out), resume)


def _train_dpo(cfg: DPOConfig, run_dir: Path, resume) -> Path:
    start = time.perf_counter()
    # a run restarted before its first checkpoint computes the reference log-probs again
    resume = prepare_run_dir(run_dir, resume, cfg, "dpo", startup=("metrics.jsonl", REF_CACHE))
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy, cfg.trust_remote_code)
    set_template(tokenizer, cfg.data.template)
    d = cfg.data
    train = load_dpo_pairs(d.train, tokenizer, d)
    test = load_dpo_pairs(d.test, tokenizer, d) if d.test else None
    if not train:
        raise TetherError(f"{d.train}: no training pairs left after skipping")

    # eval mode, no dropout: with π = π_ref the first step's log-ratios are exactly 0
    policy = load_causal_lm(cfg.policy, cfg.dtype, cfg.trust_remote_code).eval()
    device = PartialState(cpu=cfg.train.device == "cpu").device  # where the Loop will put the policy
    if lora.enabled(cfg.lora):  # on the device now: the adapters-off reference may score before the Loop
        policy = lora.add_adapters(policy, cfg.lora, "causal", cfg.policy).to(device)
    # π_ref: the model at cfg.reference, else the policy's weights read again (with LoRA: its adapters off)
    reference = load_reference(policy, cfg.policy, cfg.reference, dtype=cfg.dtype,
                               trust_remote_code=cfg.trust_remote_code, device=device)
    if cfg.precompute_reference:
        splits = {"train": train, **({"test": test} if test else {})}
        attach_reference(cfg, run_dir, reference, splits, pad_id(tokenizer), device)
        if not (test and cfg.eval.kl_prompts > 0):
            reference = None  # only the KL estimate would need it

    task = DPOTask(cfg, tokenizer, reference)
    def finish(summary: dict) -> None:
        summary.update(beta=cfg.beta, loss_type=cfg.loss_type)
        if test:
            summary["instruments"] = instruments(summary)

    train_supervised("dpo", cfg, run_dir, policy, tokenizer, task, train, test, resume, start, finish)
    return run_dir


def instruments(summary: dict) -> dict:
    """The summary's held-out preference accuracy and KL from the reference, with their sample sizes."""
    out = {"preference_accuracy": {"value": summary["test_accuracy"], "n": summary["test_pairs"]}}
    if "kl_from_reference" in summary:
        out["kl_from_reference"] = {
            "value": summary["kl_from_reference"],
            "stderr": summary["kl_from_reference_stderr"],
            "n": summary["kl_prompts"],
            "unit": "nats",
        }
    return out
