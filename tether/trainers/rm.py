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
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate.utils import gather_object, set_seed

from tether import lora
from tether.config import RMConfig, RMDataConfig
from tether.data import pad_id, set_template
from tether.errors import TetherError
from tether.instruments import rm_accuracy
from tether.instruments.rm_accuracy import PASS_ACCURACY
from tether.losses import bradley_terry_loss
from tether.preferences import PairTokens, collate_pairs, load_pairs, pair_shape
from tether.reward_model import create_reward_model, sequence_scores, write_training_settings
from tether.trainers.base import Loop
from tether.trainers.run_files import claim_run, prepare_run_dir
from tether.trainers.supervised import to_device, train_supervised

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ data


def load_rm_pairs(path, tokenizer, d: RMDataConfig) -> list[PairTokens]:
    """The pairs of a preference file, each with the label and margin the config asks for
    (tether.preferences.load_pairs)."""
    return load_pairs(path, tokenizer, d.max_length, d.too_long, d.chat_template, d.use_soft_labels,
                      d.margin_field, d.columns)


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

    def collate(self, items: Sequence[PairTokens]) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (2B, T): B chosen rows then B rejected rows; label, margin (B,)."""
        batch = collate_pairs(items, self.pad_value, side="right")
        batch["label"] = torch.tensor([x.label for x in items], dtype=torch.float32)
        batch["margin"] = torch.tensor([x.margin for x in items], dtype=torch.float32)
        return batch

    def count(self, items: Sequence[PairTokens]) -> int:
        return len(items)

    def shape(self, item: PairTokens) -> tuple[int, int]:
        return pair_shape(item)

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
    def evaluate(self, loop: Loop, items: Sequence[PairTokens]) -> dict[str, float]:
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
    with claim_run(out, "rm", cfg, resume) as cfg:
        return _train_rm(cfg, Path(out), resume)


def _train_rm(cfg: RMConfig, run_dir: Path, resume) -> Path:
    start = time.perf_counter()
    resume = prepare_run_dir(run_dir, resume, cfg, "rm")
    set_seed(cfg.seed)  # before the head is drawn
    model, tokenizer = create_reward_model(cfg.model, cfg.tokenizer, cfg.dtype, cfg.trust_remote_code)
    set_template(tokenizer, cfg.data.template)
    if lora.enabled(cfg.lora):  # adapters on the trunk, the new score head trained in full
        model = lora.add_adapters(model, cfg.lora, "seq_cls", cfg.model)
    d = cfg.data
    train = load_rm_pairs(d.train, tokenizer, d)
    test = load_rm_pairs(d.test, tokenizer, d) if d.test else None
    if not train:
        raise TetherError(f"{d.train}: no training pairs left after skipping")

    task = RMTask(
        pad_id(tokenizer),
        cfg.train.micro_batch_size,
        cfg.center_coef,
        soft_labels=d.use_soft_labels,
        margins=d.margin_field is not None,
    )
    def finish(summary: dict) -> None:
        write_training_settings(Path(summary["model"]), d.chat_template, d.max_length)
        if test:
            acc = rm_accuracy_entry(summary["test_accuracy"], summary["test_pairs"])
            summary["instruments"] = {"rm_test_accuracy": acc}

    train_supervised("rm", cfg, run_dir, model, tokenizer, task, train, test, resume, start, finish)
    return run_dir


def rm_accuracy_entry(value: float, n: int) -> dict:
    """{"value", "n", "threshold", "pass"} as the run summary's schema has it."""
    return {"value": value, "n": n, "threshold": PASS_ACCURACY, "pass": value >= PASS_ACCURACY}
