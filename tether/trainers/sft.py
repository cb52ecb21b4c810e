"""Supervised fine-tuning (InstructGPT stage 1): demonstrations → `tether.losses.sft_loss` → AdamW.

    run_dir = train_sft(load_config(SFTConfig, "configs/sft.yaml"), "runs/sft")

writes RUN/config.yaml, metrics.jsonl (train loss per step; test_loss and test_perplexity per eval),
checkpoints/, the final model in RUN/model/ (HF-loadable, with its tokenizer) and summary.json.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate.utils import set_seed

from tether import lora
from tether.config import SFTConfig, SFTDataConfig
from tether.data import SFTTokens, collate_sft, load_sft, pad_id, set_template, tokenize_sft
from tether.errors import TetherError
from tether.losses import sft_loss
from tether.model_files import load_causal_lm, load_tokenizer
from tether.rollout import completion_positions, logits_at
from tether.trainers.base import Loop
from tether.trainers.run_files import claim_run, prepare_run_dir
from tether.trainers.supervised import to_device, train_supervised

log = logging.getLogger(__name__)


def load_sft_items(path, tokenizer, d: SFTDataConfig) -> list[SFTTokens]:
    """The demonstrations of a file (any source, tether.data_sources), tokenised as the config asks: its
    columns, all assistant turns or the last, max_length with too_long, the chat template."""
    items, _ = tokenize_sft(load_sft(path, d.columns, d.all_assistant_turns), tokenizer, d.max_length,
                            d.too_long, d.chat_template)
    return items


class SFTTask:
    """Masked next-token cross-entropy on completion tokens (EOS included); the unit is a completion token."""

    unit = "tokens"

    def __init__(self, pad_value: int, micro_batch_size: int):
        self.pad_value, self.micro_batch_size = pad_value, micro_batch_size

    def collate(self, items: Sequence[SFTTokens]) -> dict[str, torch.Tensor]:
        return collate_sft(items, self.pad_value, side="right")

    def count(self, items: Sequence[SFTTokens]) -> int:
        return sum(len(x.completion_ids) for x in items)

    def shape(self, item: SFTTokens) -> tuple[int, int]:
        return 1, len(item.prompt_ids) + len(item.completion_ids)

    def loss(self, model, batch, num_units):
        ids, attn = batch["input_ids"], batch["attention_mask"]  # (B, T)
        # logits[:, t] predicts ids[:, t + 1]; loss_mask[:, t + 1] is 1 when that is a completion token.
        # The LM head runs only where it predicts one (`logits_at`): (N, V), ordered like labels below.
        select, target = completion_positions(batch["loss_mask"])  # (B, T), (B, T - 1)
        logits = logits_at(model, ids, attn, select)[None]  # (1, N, V)
        labels = ids[:, 1:][target][None]  # (1, N)
        loss, metrics = sft_loss(logits, labels, torch.ones_like(labels), num_tokens=num_units)
        return loss, {"accuracy": metrics["accuracy"]}

    @torch.no_grad()
    def evaluate(self, loop: Loop, items: Sequence[SFTTokens]) -> dict[str, float]:
        """Mean token NLL over the test completions (each process scores its share), and its exp."""
        model = loop.model
        was_training = model.training
        model.eval()
        mine = items[loop.rank :: loop.world]
        nll = torch.zeros(2, dtype=torch.float64, device=loop.accelerator.device)  # [summed NLL, tokens]
        for i in range(0, len(mine), self.micro_batch_size):
            chunk = mine[i : i + self.micro_batch_size]
            batch = to_device(self.collate(chunk), loop.accelerator.device)
            total, _ = self.loss(model, batch, num_units=1.0)  # dividing by 1 leaves the sum
            nll += torch.tensor([float(total), self.count(chunk)], dtype=torch.float64, device=nll.device)
        if loop.world > 1:
            nll = loop.accelerator.reduce(nll, reduction="sum")
        model.train(was_training)
        loss = float(nll[0] / nll[1].clamp(min=1))
        return {"test_loss": loss, "test_perplexity": math.exp(min(loss, 700.0)), "test_tokens": int(nll[1])}


def load_model(cfg: SFTConfig):
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model, cfg.trust_remote_code)
    set_template(tokenizer, cfg.data.template)
    return load_causal_lm(cfg.model, cfg.dtype, cfg.trust_remote_code), tokenizer


def train_sft(cfg: SFTConfig, out: str | Path, resume: bool | str | Path = False) -> Path:
    """Fine-tune `cfg.model` on `cfg.data`; returns the run directory.

    resume: True continues from the run's latest checkpoint, a path from that checkpoint. Raises
    `TrainingInterrupted` after SIGTERM (once a checkpoint is saved) and `TetherError` on bad input. Holds
    the run directory's lock while it runs (tether.rundir).
    """
    with claim_run(out, "sft", cfg, resume) as cfg:
        return _train_sft(cfg, Path(out), resume)


def _train_sft(cfg: SFTConfig, run_dir: Path, resume) -> Path:
    start = time.perf_counter()
    resume = prepare_run_dir(run_dir, resume, cfg, "sft")
    set_seed(cfg.seed)
    model, tokenizer = load_model(cfg)
    if lora.enabled(cfg.lora):
        model = lora.add_adapters(model, cfg.lora, "causal", cfg.model)
    d = cfg.data
    train = load_sft_items(d.train, tokenizer, d)
    test = load_sft_items(d.test, tokenizer, d) if d.test else None
    if not train:
        raise TetherError(f"{d.train}: no training records left after skipping")

    task = SFTTask(pad_id(tokenizer), cfg.train.micro_batch_size)
    train_supervised("sft", cfg, run_dir, model, tokenizer, task, train, test, resume, start)
    return run_dir
