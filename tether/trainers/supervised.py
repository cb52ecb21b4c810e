"""The data-iterating driver for supervised stages (SFT, reward model, DPO) on top of `Loop`.

A trainer supplies a `SupervisedTask`: how to batch its tokenised items, how many units (tokens, pairs) a
list of items holds, the loss of a micro-batch divided by the step's total units, and an evaluation. The
driver supplies everything else: the data order, micro-batching, logging, evaluation and checkpoint timing,
resume and SIGTERM.

Data order: epoch e visits the training items in `torch.randperm(n)` order under a generator seeded with
seed + e; step k of the epoch takes the k-th run of `batch_size` items (a last incomplete batch is dropped so
every step sees the same number of items). The position is a function of the step counter and is saved
in every checkpoint, so a resumed run sees exactly the batches an uninterrupted run would.
Multi-process: each process takes its contiguous slice of the step's batch; the loss is divided by the
count of the whole (global) batch, so the weights do not depend on how the batch is split.

Micro-batches: by default a process's share is cut into runs of micro_batch_size items in data order. With
train.group_by_length the share is sorted by length first (rows of like length share a forward pass, so
less padding), and with train.micro_batch_tokens the sorted share is cut wherever the next item would take
a micro-batch past that many tokens (rows × its longest row, padding counted), so memory is bounded by
tokens rather than by the longest row. Either way the step's gradient is the same sum over the same items,
divided by the same count (to float rounding); only the grouping into forward passes changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from tether.config import dump_config, to_dict
from tether.errors import TetherError
from tether.files import write_json
from tether.model_card import write_model_card
from tether.trainers.base import Loop, TrainingInterrupted
from tether.trainers.run_files import save_final


class SupervisedTask(Protocol):
    unit: str  # what `count` counts, e.g. "tokens" or "pairs" (the name of the metric)

    def shape(self, item: Any) -> tuple[int, int]:
        """(rows, tokens per row) the item takes in a collated batch (a pair: 2 rows of its longer side)."""

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        """A micro-batch of tensors on the CPU."""

    def count(self, items: Sequence[Any]) -> int:
        """Units (the loss's denominator) in `items`."""

    def loss(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], num_units: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The micro-batch's summed loss divided by `num_units`, and metrics that are means over the batch."""

    def evaluate(self, loop: Loop, items: Sequence[Any]) -> dict[str, float]:
        """Evaluation metrics on held-out items (called on every process)."""


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    steps = n_items // batch_size
    if steps == 0:
        raise TetherError(f"the training data has {n_items} examples, fewer than batch_size={batch_size}")
    return steps


def total_steps(cfg, n_items: int) -> int:
    """max_steps, or ceil(epochs × steps per epoch)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * steps_per_epoch(n_items, cfg.batch_size)))


def micro_batches_per_step(cfg, world: int) -> int:
    per_process, rem = divmod(cfg.batch_size, world)
    if rem or per_process % cfg.micro_batch_size:
        raise TetherError(
            f"train.batch_size={cfg.batch_size} must be a multiple of train.micro_batch_size="
            f"{cfg.micro_batch_size} × {world} process(es)"
        )
    return per_process // cfg.micro_batch_size


def micro_batches(items: Sequence[Any], shape, size: int, tokens: int | None, by_length: bool) -> list[list]:
    """`items` (one process's share of a step) cut into micro-batches: runs of `size` in order; with
    by_length (or a token budget) sorted by decreasing length first (ties in order); with `tokens`, each
    micro-batch as long as rows × its longest row stays ≤ tokens (an item over the budget alone)."""
    if not by_length and tokens is None:
        return [list(items[i : i + size]) for i in range(0, len(items), size)]
    rows = [shape(x) for x in items]
    order = sorted(range(len(items)), key=lambda i: (-rows[i][1], i))
    if tokens is None:
        return [[items[i] for i in order[j : j + size]] for j in range(0, len(order), size)]
    out: list[list] = []
    n_rows = longest = 0
    for i in order:
        r, length = rows[i]
        if out and (n_rows + r) * max(longest, length) <= tokens:
            out[-1].append(items[i])
            n_rows, longest = n_rows + r, max(longest, length)
        else:
            out.append([items[i]])
            n_rows, longest = r, length
    return out


def batch_indices(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the items of (0-based) step `step`: epoch = step // steps per epoch, seeded permutation."""
    per_epoch = steps_per_epoch(n_items, batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed + epoch))
    return order[k * batch_size : (k + 1) * batch_size].tolist()


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def fit(
    loop: Loop,
    task: SupervisedTask,
    train_items: Sequence[Any],
    eval_items: Sequence[Any] | None,
    seed: int,
    resume: str | Path | bool = False,
) -> dict[str, float]:
    """Train to `loop.total_steps`, evaluating and saving on the configured schedule; returns the last eval
    metrics ({} without eval items). resume: True for the run's latest checkpoint, or a checkpoint path.
    Raises TrainingInterrupted after SIGTERM (a checkpoint is written first)."""
    cfg, n = loop.cfg, len(train_items)
    micro_batches_per_step(cfg, loop.world)  # the batch must split evenly over the processes
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    extra = loop.resume(None if resume is True else resume) if resume else None  # None: from step 0
    if extra is not None:
        if (extra.get("n_items"), extra.get("batch_size"), extra.get("seed")) != (n, cfg.batch_size, seed):
            raise TetherError("the training data, batch size or seed differ from those of the checkpoint")
    last_eval: dict[str, float] = dict(extra.get("last_eval", {})) if extra is not None else {}
    evaluated_at = extra.get("evaluated_at", -1) if extra is not None else -1
    saved_at = loop.state.step if extra is not None else -1

    def position() -> dict[str, int]:
        return {"epoch": loop.state.step // per_epoch, "batch_in_epoch": loop.state.step % per_epoch,
                "n_items": n, "batch_size": cfg.batch_size, "seed": seed,
                "evaluated_at": evaluated_at, "last_eval": last_eval}

    with loop.running(desc="train"):
        while loop.state.step < loop.total_steps:
            t0 = time.perf_counter()
            idx = batch_indices(n, cfg.batch_size, seed, loop.state.step)
            step_items = [train_items[i] for i in idx]
            num_units = task.count(step_items)  # of the global batch: every process divides by the same
            share = len(step_items) // loop.world
            mine = step_items[loop.rank * share : (loop.rank + 1) * share]
            loss_sum, sums, my_units = 0.0, {}, max(1, task.count(mine))
            micros = micro_batches(mine, task.shape, cfg.micro_batch_size, cfg.micro_batch_tokens,
                                   cfg.group_by_length)
            for j, micro in enumerate(micros):
                batch = to_device(task.collate(micro), loop.accelerator.device)
                with loop.accumulate(sync=j == len(micros) - 1):
                    loss, metrics = task.loss(loop.model, batch, num_units)
                    loop.backward(loss)
                loss_sum += float(loss.detach())
                weight = task.count(micro) / my_units  # metrics: means over this process's units
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + weight * float(v)
            info = loop.optimizer_step()
            loop.bar.update(1)
            if loop.due(cfg.log_every) and not info["skipped"]:
                record = {"loss": loss_sum, **sums}
                record = loop.reduce_mean(record)
                record["loss"] *= loop.world  # each process held its share of the global mean
                rate = num_units / (time.perf_counter() - t0)
                epoch = loop.state.step / per_epoch
                record.update({task.unit: num_units, f"{task.unit}_per_s": rate, "epoch": epoch,
                               "grad_norm": info["grad_norm"], "lr": info["lr"]})
                loop.log(record)
            if eval_items and loop.due(cfg.eval_every):
                last_eval, evaluated_at = task.evaluate(loop, eval_items), loop.state.step
                loop.log(last_eval, kind="eval")
            if loop.due(cfg.save_every):
                loop.save(position())
                saved_at = loop.state.step
            if loop.should_stop():
                path = loop.save(position()) if saved_at != loop.state.step else loop.latest_checkpoint()
                raise TrainingInterrupted(path)
    if eval_items and evaluated_at != loop.state.step:
        last_eval = task.evaluate(loop, eval_items)
        loop.log(last_eval, kind="eval")
    if cfg.save_every > 0 and saved_at != loop.state.step:
        loop.save(position())
    return last_eval


def train_supervised(
    stage: str, cfg, run_dir: Path, model, tokenizer, task, train, test, resume, start: float,
    finish: Callable[[dict], None] | None = None,
) -> None:
    """The common body of a supervised stage: the Loop, RUN/config.yaml, `fit`, RUN/model and the summary
    fields every stage reports, which `finish` (the stage's) extends in place before the main process writes
    RUN/summary.json and sends its instruments to the trackers (train.report_to). `cfg` needs `train`
    (LoopConfig), `seed` and `data.train` / `data.test`."""
    loop = Loop(cfg.train, run_dir, model, tokenizer, total_steps=total_steps(cfg.train, len(train)),
                config=to_dict(cfg))
    try:
        if loop.is_main:
            dump_config(cfg, run_dir, [cfg.data.train, cfg.data.test])
        last_eval = fit(loop, task, train, test, cfg.seed, resume=resume)
        model_dir = save_final(loop, run_dir)
        if not loop.is_main:
            return
        summary = {
            "stage": stage,
            "steps": loop.state.step,
            "skipped_steps": loop.state.skipped,
            "train_items": len(train),
            **last_eval,
            "model": str(model_dir),
            "wall_seconds": time.perf_counter() - start,
        }
        if finish is not None:
            finish(summary)
        write_json(run_dir / "summary.json", summary)
        write_model_card(run_dir)
        loop.end_tracking(summary)
    finally:
        loop.end_tracking()
