"""Reward model (InstructGPT stage 2): preference pairs → `tether.losses.bradley_terry_loss` → AdamW.

    run_dir = train_rm(load_config(RMConfig, "configs/rm.yaml"), "runs/rm")

The model is the SFT trunk with a new scalar head (tether.reward_model); a pair's reward difference is
r(x, y_chosen) − r(x, y_rejected), each reward read at the response's last token (its EOS). Writes
RUN/config.yaml, metrics.jsonl (per step: loss, train pairwise accuracy, mean margin r_w − r_l and mean
rewards; per eval: test_loss, test_accuracy, test_margin, test_ece, test_pairs), checkpoints/, the final
reward model in RUN/model/ (`load_reward_model` / `AutoModelForSequenceClassification.from_pretrained`,
with its tokenizer) and summary.json with {"instruments": {"rm_test_accuracy": {"value", "n", "threshold",
"pass"}}} when there is a test set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import gather_object, set_seed

from tether import lora
from tether.config import RMConfig, RMDataConfig
from tether.data import (
    PairTokens,
    Skips,
    collate_pairs,
    load_preferences,
    pad_id,
    pair_shape,
    read_jsonl,
    tokenize_preferences,
)
from tether.errors import DataError, TetherError
from tether.files import write_json
from tether.instruments import rm_accuracy
from tether.instruments.rm_accuracy import PASS_ACCURACY
from tether.losses import bradley_terry_loss
from tether.quiet import quiet_logger
from tether.reward_model import create_reward_model, sequence_scores
from tether.trainers.base import Loop, claim_run, prepare_run_dir
from tether.trainers.supervised import to_device, train_supervised

log = logging.getLogger(__name__)


@dataclass
class RMPair:
    """A tokenised pair with what the loss needs besides tokens."""

    tokens: PairTokens
    label: float = 1.0  # probability that chosen is preferred (1: a sure preference)
    margin: float = 0.0  # subtracted from r_chosen − r_rejected


# ------------------------------------------------------------------------------------------------ data


def _number(path, line, obj, key: str) -> float:
    if key not in obj:
        raise DataError(path, line, f"missing column {key!r} (columns: {', '.join(sorted(obj))})")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(path, line, f"column {key!r} must be a finite number, got {value!r}")
    return float(value)


def read_pair_extras(path, d: RMDataConfig) -> dict[int, tuple[float, float]]:
    """{line: (label, margin)} from the columns the config asks for (1.0 and 0.0 when it asks for none)."""
    extras = {}
    if not (d.use_soft_labels or d.margin_field):
        return extras
    for line, obj in read_jsonl(path):
        label = _number(path, line, obj, "label") if d.use_soft_labels else 1.0
        if not 0.0 <= label <= 1.0:
            raise DataError(path, line, f"column 'label' must be a probability in [0, 1], got {label}")
        margin = _number(path, line, obj, d.margin_field) if d.margin_field else 0.0
        extras[line] = (label, margin)
    return extras


def load_pairs(path, tokenizer, d: RMDataConfig) -> list[RMPair]:
    """Read, validate and tokenise a preference file (errors name file:line).

    Pairs are tokenised one at a time so that each keeps its own label and margin when some are skipped;
    the skip/cut counts are reported once for the file.
    """
    examples = load_preferences(path)
    extras = read_pair_extras(path, d)
    out, skips = [], Skips()
    with quiet_logger("tether.data"):
        for ex in examples:
            got, s = tokenize_preferences([ex], tokenizer, d.max_length, d.too_long, d.chat_template)
            skips.truncated += s.truncated
            if not got:
                skips.add_skip(ex.path, ex.line)
                continue
            out.append(RMPair(got[0], *extras.get(ex.line, (1.0, 0.0))))
    skips.report(f"preference pairs of {path}")
    return out


# ------------------------------------------------------------------------------------------------ task


class RMTask:
    """Bradley-Terry loss on the rewards of chosen and rejected responses; the unit is a pair."""

    unit = "pairs"

    def __init__(
        self,
        pad_value: int,
        micro_batch_size: int,
        center_coef: float = 0.0,
        soft_labels: bool = False,
        margins: bool = False,
    ):
        self.pad_value, self.micro_batch_size, self.center_coef = pad_value, micro_batch_size, center_coef
        self.soft_labels, self.margins = soft_labels, margins

    def collate(self, items: Sequence[RMPair]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (2B, T): B chosen rows then B rejected rows; label, margin (B,)."""
        batch = collate_pairs([x.tokens for x in items], self.pad_value, side="right")
        batch["label"] = torch.tensor([x.label for x in items], dtype=torch.float32)
        batch["margin"] = torch.tensor([x.margin for x in items], dtype=torch.float32)
        return batch

    def count(self, items: Sequence[RMPair]) -> int:
        return len(items)

    def shape(self, item: RMPair) -> tuple[int, int]:
        return pair_shape(item.tokens)

    def scores(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) rewards, (B,) each, from one forward pass over all 2B rows."""
        B = batch["label"].shape[0]
        scores = sequence_scores(model, batch["input_ids"], batch["attention_mask"])  # (2B,)
        return scores[:B], scores[B:]

    def pair_loss(self, chosen, rejected, batch):
        """bradley_terry_loss (mean over the B pairs) with this task's margin, centring and labels."""
        margin = batch["margin"] if self.margins else None
        labels = batch["label"] if self.soft_labels else None
        return bradley_terry_loss(chosen, rejected, margin, self.center_coef, labels)

    def loss(self, model, batch, num_units):
        chosen, rejected = self.scores(model, batch)
        mean_loss, metrics = self.pair_loss(chosen, rejected, batch)
        return mean_loss * (chosen.shape[0] / num_units), metrics  # the batch's sum over num_units

    @torch.no_grad()
    def evaluate(self, loop: Loop, items: Sequence[RMPair]) -> dict[str, float]:
        """Held-out pairwise accuracy (ties count wrong), mean margin r_w − r_l, ECE of σ(r_w − r_l) and the
        mean loss; each process scores its share, the scores are gathered before the statistics."""
        model = loop.model
        was_training = model.training
        model.eval()
        mine = items[loop.rank :: loop.world]
        chosen, rejected, losses = [], [], []
        for i in range(0, len(mine), self.micro_batch_size):
            chunk = mine[i : i + self.micro_batch_size]
            batch = to_device(self.collate(chunk), loop.accelerator.device)
            c, r = self.scores(model, batch)
            loss, _ = self.pair_loss(c, r, batch)
            chosen += c.tolist()
            rejected += r.tolist()
            losses.append(float(loss) * len(chunk))
        if loop.world > 1:
            chosen, rejected, losses = gather_object(chosen), gather_object(rejected), gather_object(losses)
        model.train(was_training)
        acc = rm_accuracy(chosen, rejected)
        return {
            "test_accuracy": acc["value"],
            "test_margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(chosen),
            "test_ece": acc["ece"],
            "test_loss": sum(losses) / len(chosen),
            "test_pairs": acc["n"],
        }


# ------------------------------------------------------------------------------------------------ train


def train_rm(cfg: RMConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Train a reward model from `cfg.model` (an SFT directory) on `cfg.data`; returns the run directory.

    resume: True continues from the run's latest checkpoint, a path from that checkpoint. Raises
    `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input. Holds
    the run directory's lock while it runs (tether.rundir).
    """
    with claim_run(out, "rm", cfg, resume):
        return _train_rm(cfg, Path(out), resume)


def _train_rm(cfg: RMConfig, run_dir: Path, resume) -> Path:
    start = time.perf_counter()
    resume = prepare_run_dir(run_dir, resume, cfg, "rm")
    set_seed(cfg.seed)  # before the head is drawn
    model, tokenizer = create_reward_model(cfg.model, cfg.tokenizer, cfg.dtype, cfg.trust_remote_code)
    if lora.enabled(cfg.lora):  # adapters on the trunk, the new score head trained in full
        model = lora.add_adapters(model, cfg.lora, "seq_cls", cfg.model)
    d = cfg.data
    train = load_pairs(d.train, tokenizer, d)
    test = load_pairs(d.test, tokenizer, d) if d.test else None
    if not train:
        raise TetherError(f"{d.train}: no training pairs left after skipping")

    task = RMTask(
        pad_id(tokenizer),
        cfg.train.micro_batch_size,
        cfg.center_coef,
        soft_labels=d.use_soft_labels,
        margins=d.margin_field is not None,
    )
    summary = train_supervised("rm", cfg, run_dir, model, tokenizer, task, train, test, resume, start)
    if summary is not None:
        if test:
            acc = rm_accuracy_entry(summary["test_accuracy"], summary["test_pairs"])
            summary["instruments"] = {"rm_test_accuracy": acc}
        write_json(run_dir / "summary.json", summary)
    return run_dir


def rm_accuracy_entry(value: float, n: int) -> dict:
    """{"value", "n", "threshold", "pass"} as the run summary's schema has it."""
    return {"value": value, "n": n, "threshold": PASS_ACCURACY, "pass": value >= PASS_ACCURACY}
