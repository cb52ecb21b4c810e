"""The shared training loop: one `Loop` that every trainer stands on.

A `Loop` owns what is the same in every stage: the `accelerate.Accelerator`, the AdamW optimizer, the
learning-rate schedule with warm-up, gradient accumulation and clipping, the NaN/inf guard, metrics
(RUN/metrics.jsonl), checkpoints (RUN/checkpoints/step-N/), resume and SIGTERM. It holds no loss math: a
trainer computes its loss with `tether.losses` and hands it over. The pieces:

    loop = Loop(cfg.train, run_dir, model, tokenizer, total_steps=N)
    extra = loop.resume(path)              # optional: weights, optimizer, scheduler, RNG, counters
    with loop.running():                   # SIGTERM handler + progress bar
        for each optimizer step:
            for i, micro in enumerate(micro_batches):
                with loop.accumulate(sync=i == last):   # skips the gradient all-reduce until the last
                    loss, metrics = loss_fn(loop.model, micro)
                    loop.backward(loss)                  # loss already divided by the step's total count
            info = loop.optimizer_step()   # clip, guard, step, schedule; {"grad_norm", "lr", "skipped"}
            loop.log({"loss": ..., **info})
            if loop.due(loop.cfg.save_every) or loop.stop_requested: loop.save(extra={...})

Supervised trainers (SFT, RM, DPO) use the data-iterating driver in `tether.trainers.supervised`; PPO-style
trainers call the same pieces from their own iteration (rollout, then several epochs over minibatches),
passing their iteration counter and controller state as `extra` to `save`.

Counting: `state.step` counts optimizer steps attempted, skipped ones included (the data moves on); the
scheduler advances only on applied steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration
from tqdm.auto import tqdm

from tether import lora
from tether.activations import enable_gradient_checkpointing
from tether.config import DPOConfig, GRPOConfig, LoopConfig, PPOConfig, RLOOConfig, RMConfig, SFTConfig
from tether.errors import TetherError
from tether.files import storage_error
from tether.precision import autocast as precision_block
from tether.precision import autocast_precision
from tether.quiet import quiet_transformers
from tether.trainers import checkpoint as ckpt
from tether.trainers.metrics import MetricsLog, flat_config, markdown_table

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Raised after SIGTERM once a checkpoint is written; resume with `--resume`."""

    def __init__(self, checkpoint: Path):
        super().__init__(f"interrupted by SIGTERM; checkpoint saved at {checkpoint} (continue with --resume)")
        self.checkpoint = checkpoint


class TrainingDiverged(TetherError):
    """Too many consecutive non-finite steps; no checkpoint is written, the last good one stays."""


class SaveFailed(TetherError):
    """The disk refused a checkpoint or the final model (full, read-only, no permission); what was saved
    before is intact."""


STAGE_CONFIGS = (SFTConfig, RMConfig, DPOConfig, PPOConfig, GRPOConfig, RLOOConfig)  # the training stages


SMALL_MODEL = 20_000_000  # parameters: below this, one CPU thread is faster (see LoopConfig.threads)


def set_threads(threads: int, model: torch.nn.Module, device: str) -> None:
    """torch's intra-op threads: `threads` when > 0; 0 is one thread for a small model on the CPU."""
    on_cpu = device == "cpu" or not torch.cuda.is_available()
    if threads == 0 and on_cpu and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        threads = 1
    if threads > 0:
        torch.set_num_threads(threads)


@dataclasses.dataclass
class LoopState:
    step: int = 0  # optimizer steps attempted (applied + skipped)
    skipped: int = 0  # steps skipped for a non-finite loss or gradient, in total
    bad_streak: int = 0  # consecutive skipped steps up to now


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at scheduler step `step` (0-based count of applied steps).

    Warm-up: (step + 1) / warmup_steps, so the first update already moves (lr/warmup_steps); then constant,
    linear to 0, or half a cosine to 0 at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise TetherError(f"unknown learning-rate schedule {schedule!r}")


def _plain(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.item() if x.numel() == 1 else x.tolist()
    return x


class Loop:
    """Optimizer, schedule, accumulation, clipping, NaN guard, metrics and checkpoints for one run.

    model: the trained model (saved HF-loadable at the checkpoint's root); extra_models: more trained modules
    (e.g. {"value": critic}), saved in sub-directories and optimised by the same AdamW; total_steps: optimizer
    steps of the whole run, for the schedule.
    """

    def __init__(
        self,
        cfg: LoopConfig,
        run_dir: str | Path,
        model: torch.nn.Module,
        tokenizer=None,
        *,
        total_steps: int,
        extra_models: dict[str, torch.nn.Module] | None = None,
        config: dict[str, Any] | None = None,
    ):
        self.cfg, self.run_dir, self.tokenizer = cfg, Path(run_dir), tokenizer
        self.total_steps, self.config = total_steps, config
        set_threads(cfg.threads, model, cfg.device)
        # broadcast_buffers=False: DDP's forward then runs no collective (the models' only buffers are fixed
        # rotary tables), so processes may run different numbers of no-grad forwards (sampling, evaluation)
        ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
        # torch announces forward_sync_buffers as its successor, which accelerate does not pass on yet
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        self.precision = autocast_precision(cfg.mixed_precision, cfg.device)  # "no", "bf16" or "fp16"
        run = str(self.run_dir)  # TensorBoard writes to RUN/tensorboard/tether/
        project = ProjectConfiguration(project_dir=run, logging_dir=str(self.run_dir / "tensorboard"))
        self.accelerator = Accelerator(
            cpu=use_cpu(cfg.device), mixed_precision=self.precision, kwargs_handlers=[ddp],
            log_with=list(cfg.report_to) or None, project_config=project,
        )
        self.tracking = "off" if not cfg.report_to else "not started"  # → "on" (main process) → "ended"
        self.is_main = self.accelerator.is_main_process
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.checkpoints = self.run_dir / "checkpoints"
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_partial(self.checkpoints)

        names = ["model", *(extra_models or {})]
        modules = [model, *(extra_models or {}).values()]
        if cfg.gradient_checkpointing:
            for m in modules:
                enable_gradient_checkpointing(m, cfg.checkpoint_layers)
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        betas = tuple(cfg.betas)
        # fused: one kernel per tensor instead of a dozen elementwise passes (on 2 CPU cores, SmolLM2-135M's
        # step takes 0.06 s instead of 0.46-0.68 s; benchmarks/README.md); the same update to float rounding
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay,
                                      fused=True)
        *prepared, self.optimizer = self.accelerator.prepare(*modules, optimizer)
        self.models = dict(zip(names, prepared, strict=True))
        self.model = self.models["model"]
        self.params = [p for m in prepared for p in m.parameters() if p.requires_grad]
        # Stepped by hand once per applied update (accelerate's wrapper would step it once per process).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer,
            lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.schedule),
        )
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.is_main)
        self.state = LoopState()
        self.good_checkpoint: Path | None = None  # the newest checkpoint known to be whole: saved or resumed
        self.stop_requested = False
        self.bar = None
        self._bad_loss = False

    # -------------------------------------------------------------------------------------- one step

    @contextlib.contextmanager
    def accumulate(self, sync: bool = True):
        """Wrap forward + backward of one micro-batch; sync=False defers the cross-process gradient sum."""
        if sync or self.world == 1:
            yield
        else:
            with self.accelerator.no_sync(self.model):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        """Add this micro-batch's gradients; a non-finite loss marks the whole step to be skipped.

        The trainer divides the loss by the step's total count over all processes (tokens, pairs), so the
        gradients of all micro-batches of all processes sum to those of the step's mean loss however the step
        is split. DDP averages gradients over processes, so the loss is multiplied by their number first.
        """
        if not torch.isfinite(loss.detach()).all():
            self._bad_loss = True
        self.accelerator.backward(loss * self.world if self.world > 1 else loss)

    def optimizer_step(self) -> dict[str, float]:
        """Clip, check, update and advance the schedule; or skip the step if the loss/gradient is not finite.

        Returns {"grad_norm", "lr", "skipped"}; raises TrainingDiverged after `max_bad_steps` skips in a row.
        """
        lr = self.scheduler.get_last_lr()[0]
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        grad_norm = self.accelerator.clip_grad_norm_(self.params, max_norm)
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        bad_loss = self._any_process(self._bad_loss)
        skipped = bad_loss or not math.isfinite(grad_norm)
        self.state.step += 1
        if skipped:
            self.state.skipped += 1
            self.state.bad_streak += 1
            reason = "non-finite loss" if bad_loss else "non-finite gradient"
            log.warning("step %d skipped: %s (%d in a row)", self.state.step, reason, self.state.bad_streak)
            self.metrics.write({"step": self.state.step, "kind": "skip", "reason": reason,
                                "bad_streak": self.state.bad_streak})
        else:
            self.optimizer.step()
            self.scheduler.step()
            self.state.bad_streak = 0
        self.optimizer.zero_grad(set_to_none=True)
        self._bad_loss = False
        if self.state.bad_streak >= self.cfg.max_bad_steps:
            latest = ckpt.find_latest(self.checkpoints)
            raise TrainingDiverged(
                f"stopped at step {self.state.step}: {self.state.bad_streak} consecutive steps had a "
                "non-finite loss or gradient (lower train.lr or check the data); "
                f"last good checkpoint: {latest or 'none'}"
            )
        return {"grad_norm": grad_norm, "lr": lr, "skipped": float(skipped)}

    def _any_process(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def autocast(self):
        """The precision block the trained models' forward passes run in, for passes of other models (a frozen
        reference, a critic's trunk called directly) to compute like them (tether.precision.autocast)."""
        return precision_block(self.precision, self.accelerator.device)

    # -------------------------------------------------------------------------------------- processes

    @property
    def unwrapped(self) -> torch.nn.Module:
        """The model without its DDP wrapper, for no-grad work a process does alone (sampling, evaluation)."""
        return self.accelerator.unwrap_model(self.model)

    def shard(self, items):
        """This process's contiguous share of a list whose length `world` divides (the whole list alone)."""
        share = len(items) // self.world
        return items[self.rank * share : (self.rank + 1) * share]

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (a copy of `t` with one process)."""
        if self.world == 1:
            return t.clone()
        return self.accelerator.reduce(t.to(self.accelerator.device).clone(), reduction="sum").to(t.device)

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Processes' tensors (same shape) concatenated along dim 0 in rank order (`t` with one process)."""
        if self.world == 1:
            return t
        return self.accelerator.gather(t.to(self.accelerator.device).contiguous()).to(t.device)

    # -------------------------------------------------------------------------------------- metrics

    def reduce_mean(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Numbers averaged over processes (identity with one process); an integer equal on every process
        (a step, an iteration) stays that integer. Every process must call it with the same keys."""
        out = {k: _plain(v) for k, v in metrics.items()}
        if self.world == 1:
            return out
        keys = [k for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)]
        t = torch.tensor([float(out[k]) for k in keys], dtype=torch.float64, device=self.accelerator.device)
        t = self.accelerator.reduce(t, reduction="mean")
        for k, v in zip(keys, t.tolist(), strict=True):
            out[k] = out[k] if isinstance(out[k], int) and v == out[k] else v
        return out

    def log(self, metrics: dict[str, Any], kind: str = "train", step: int | None = None) -> None:
        """Append {"step", "kind", **metrics} to metrics.jsonl (main process) and show it on the bar."""
        record = {"step": self.state.step if step is None else step, "kind": kind}
        record.update({k: _plain(v) for k, v in metrics.items()})
        self.metrics.write(record)
        self.track({f"{kind}/{k}": v for k, v in record.items() if k not in ("step", "kind")}, record["step"])
        if self.bar is not None and kind == "train" and "loss" in record:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)

    # -------------------------------------------------------------------------------------- trackers

    def start_tracking(self) -> None:
        """Start the trackers of cfg.report_to on the main process (once; the others log nothing). Called
        after any resume: TensorBoard is told to purge the events a resumed run wrote after its checkpoint
        (purge_step), as metrics.jsonl drops those records."""
        if self.tracking != "not started":
            return
        self.tracking = "on"
        if not self.is_main:
            return
        kwargs = {"tensorboard": {"purge_step": self.state.step + 1}, "wandb": {"name": self.run_dir.name}}
        self.accelerator.init_trackers("tether", config=flat_config(self.config or {}), init_kwargs=kwargs)

    def track(self, values: dict[str, Any], step: int) -> None:
        """Send the numbers among `values` (a bool as 0/1; not strings, lists or None) to the trackers at
        `step`."""
        if self.tracking == "off" or self.tracking == "ended" or not self.is_main:
            return
        self.start_tracking()
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        if numbers:
            self.accelerator.log(numbers, step=step)

    def track_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table to the trackers that take one: those with accelerate's `log_table` (wandb, clearml) as a
        table, TensorBoard as a markdown table in its text tab; the others (trackio, mlflow: accelerate has no
        table call for them) get none."""
        if self.tracking == "off" or self.tracking == "ended" or not self.is_main:
            return
        self.start_tracking()
        for tracker in self.accelerator.trackers:
            if hasattr(tracker, "log_table"):
                tracker.log_table(name, columns=columns, data=rows, step=step)
            elif tracker.name == "tensorboard":
                tracker.tracker.add_text(name, markdown_table(columns, rows), global_step=step)
                tracker.tracker.flush()

    def end_tracking(self, summary: dict[str, Any] | None = None) -> None:
        """Send the value of each of `summary`'s instruments (summary.json's) at the last step, then finish
        the trackers (idempotent; also on errors and SIGTERM). accelerate's end_training would also destroy
        the process group, which the next stage of `tether run` still needs, so the trackers are finished
        here one by one."""
        if self.tracking == "off" or self.tracking == "ended":
            return
        if summary is not None:
            instruments = summary.get("instruments") or {}
            self.track({f"summary/{name}": inst.get("value") for name, inst in instruments.items()},
                       self.state.step)
        self.tracking = "ended"
        if self.is_main:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator.trackers = []

    def due(self, every: int) -> bool:
        """True when `every` > 0 and the current step is a multiple of it."""
        return every > 0 and self.state.step % every == 0

    # -------------------------------------------------------------------------------------- running

    @contextlib.contextmanager
    def running(self, total: int | None = None, initial: int | None = None, desc: str | None = None):
        """SIGTERM sets `stop_requested` (the driver saves and stops at the next step boundary) and a tqdm
        bar counts steps (or the driver's own units: `total`, `initial`). The trackers start here (after any
        resume) and are finished when an exception (TrainingInterrupted too) leaves the block; otherwise
        the driver finishes them with `end_tracking(summary)` once the summary is written."""
        self.start_tracking()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        self.bar = tqdm(
            total=self.total_steps if total is None else total,
            initial=self.state.step if initial is None else initial,
            desc=desc, disable=not (self.is_main and self.cfg.progress), dynamic_ncols=True,
        )
        try:
            yield self
        except BaseException:
            self.end_tracking()
            raise
        finally:
            self.bar.close()
            self.bar = None
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum, frame) -> None:
        log.warning("SIGTERM: saving a checkpoint at the end of this step")
        self.stop_requested = True

    def should_stop(self) -> bool:
        """Whether any process was asked to stop (SIGTERM)."""
        return self._any_process(self.stop_requested)

    # -------------------------------------------------------------------------------------- checkpoints

    def save(self, extra: dict[str, Any] | None = None) -> Path:
        """Write RUN/checkpoints/step-N atomically (see tether.trainers.checkpoint); keeps the last k.

        `extra`: the trainer's own state (data position, PPO iteration, KL controller...), plain values or
        tensors, returned by `resume`. The oldest checkpoints that `keep_last` lets go are deleted before the
        new one is written, so the save needs room for no more than `keep_last` of them. A write the disk
        refuses raises SaveFailed (one line) with the temporary directory removed and the checkpoints before
        it intact.
        """
        acc, step = self.accelerator, self.state.step
        tmp = ckpt.tmp_dir(self.checkpoints, step)
        failed = None
        if self.is_main:
            failed = disk_refusal(self._begin_save, step)
        self._stop_if_refused(failed, f"checkpoint step-{step}", tmp)
        failed = disk_refusal(ckpt.save_rng, tmp, self.rank)
        for name, module in self.models.items():
            state_dict = acc.get_state_dict(module)  # gathers shards under FSDP/DeepSpeed: all processes
            if self.is_main and failed is None:
                target = tmp if name == "model" else tmp / name
                failed = disk_refusal(save_module, acc.unwrap_model(module), target, state_dict)
        if self.is_main and failed is None:
            if self.tokenizer is not None:
                failed = disk_refusal(self.tokenizer.save_pretrained, tmp)
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loop": dataclasses.asdict(self.state),
                "extra": extra or {},
                "world": self.world,
                "metrics_records": self.metrics.count(),
            }
            failed = failed or disk_refusal(ckpt.save_file, state, tmp / ckpt.STATE_FILE)
        self._stop_if_refused(failed, f"checkpoint step-{step}", tmp)
        if self.is_main:
            failed = disk_refusal(ckpt.commit, self.checkpoints, step)
        self._stop_if_refused(failed, f"checkpoint step-{step}", tmp)
        final = ckpt.step_dir(self.checkpoints, step)
        self.good_checkpoint = final
        if self.is_main:
            ckpt.prune(self.checkpoints, self.cfg.keep_last)
            log.info("checkpoint %s", final)
        acc.wait_for_everyone()
        return final

    def _begin_save(self, step: int) -> None:
        for path in ckpt.make_room(self.checkpoints, step, self.cfg.keep_last, self.good_checkpoint):
            log.info("deleted %s before saving step %d (keep_last=%d)", path, step, self.cfg.keep_last)
        ckpt.begin(self.checkpoints, step)

    def _stop_if_refused(self, failed: str | None, what: str, *tmps: Path) -> None:
        """Raise SaveFailed on every process when the disk refused any process's part of `what` (the main
        process removes the temporary directories `tmps` first); a no-op otherwise. Every process must call
        it: it is a barrier."""
        if not self._any_process(failed is not None):  # with several processes a collective: a barrier
            self.accelerator.wait_for_everyone()
            return
        if self.is_main:
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
        latest = ckpt.find_latest(self.checkpoints)
        kept = f"{latest.name} and older checkpoints are intact" if latest else "no checkpoint was saved yet"
        raise SaveFailed(f"could not write {what} in {self.run_dir}: {failed or 'another process failed'}; "
                         f"{kept}; make room (or make it writable), then continue with --resume")

    def latest_checkpoint(self) -> Path | None:
        return ckpt.find_latest(self.checkpoints)

    def resume(self, path: str | Path | None = None) -> dict[str, Any] | None:
        """Restore weights, optimizer, scheduler, RNG and counters from a checkpoint; returns the trainer's
        `extra`. Metrics written after it are dropped.

        path: that checkpoint, which must verify (TetherError otherwise). None: the newest complete
        checkpoint of this run that verifies against its manifest (tether.trainers.checkpoint.verify) and
        loads; newer ones that do not are named in one warning and moved aside to damaged-step-N. A
        checkpoint without a manifest (an older tether's) loads unverified, with a warning. None is returned
        when the run has no complete checkpoint at all (a start killed before its first save): the run starts
        from step 0, its metrics emptied. TetherError when checkpoints exist and none verifies.
        """
        if path is not None:
            path = ckpt.check_complete(path)
            problem = self._main_says(lambda: ckpt.verify(path))
            if problem is not None:
                raise TetherError(f"cannot resume from {path}: {problem}")
            problem, extra = self._try_load(path)
            if problem is not None:
                raise TetherError(f"cannot resume from {path}: {problem}")
            return extra
        found = [p for _, p in reversed(ckpt.list_checkpoints(self.checkpoints))]
        if not found:
            log.warning("no complete checkpoint in %s yet: starting from step 0", self.checkpoints)
            self.metrics.truncate(0)
            return None
        rejected = []
        for candidate in found:
            problem = self._main_says(lambda c=candidate: ckpt.verify(c))
            if problem is None:
                problem, extra = self._try_load(candidate)
            if problem is None:
                break
            rejected.append((candidate, problem))
        else:
            said = "; ".join(f"{p.name}: {why}" for p, why in rejected)
            raise TetherError(f"no checkpoint in {self.checkpoints} verifies ({said}); start a new run")
        if rejected:
            if len(rejected) == 1:
                (p, why), = rejected
                said = f"checkpoint {p.name} is damaged ({why}) and was moved to {ckpt.damaged_dir(p).name}"
            else:
                names = ", ".join(p.name for p, _ in rejected)
                said = "; ".join(f"{p.name}: {why}" for p, why in rejected)
                said = f"checkpoints {names} are damaged ({said}) and were moved to damaged-step-N"
            log.warning("%s; resuming from %s", said, candidate.name)
            if self.is_main:  # kept for inspection, out of the way of discovery and pruning
                for p, _ in rejected:
                    os.replace(p, ckpt.damaged_dir(p))
            self.accelerator.wait_for_everyone()
        return extra

    def _try_load(self, path: Path) -> tuple[str | None, dict[str, Any] | None]:
        """(None, extra) when `path` loaded on every process; (what went wrong, None) when it did not load
        on some process and has no manifest (an older tether's checkpoint: damage is found only by loading
        it). A checkpoint that verified but does not load is not damaged: TetherError (another model?)."""
        unverified = not ckpt.has_manifest(path)
        problem, state = None, None
        try:
            state = self._load(path)
        except _WrongWorld:
            raise
        except Exception as e:
            if not unverified:
                raise TetherError(f"cannot load {path} into this run: {_one_line(e)}") from None
            problem = f"does not load: {_one_line(e)}"
        if self._any_process(problem is not None):
            return problem or "does not load on another process", None
        if unverified:
            log.warning("resuming from %s unverified: it has no manifest (an older tether wrote it)",
                        path.name)
        self.metrics.truncate(state["metrics_records"])  # a write: a refusal here is not damage
        self.good_checkpoint = path
        log.info("resumed from %s (step %d)", path, self.state.step)
        return None, state["extra"]

    def _load(self, path: Path) -> dict[str, Any]:
        """Load everything `path` holds into this run (reads only); returns its trainer_state."""
        state = torch.load(path / ckpt.STATE_FILE, weights_only=True, map_location="cpu")
        if state.get("world", 1) != self.world:
            raise _WrongWorld(f"{path} was saved by {state['world']} processes; resume with the same number")
        for name, module in self.models.items():
            load_module(self.accelerator.unwrap_model(module), path if name == "model" else path / name)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = LoopState(**state["loop"])
        ckpt.load_rng(path, self.rank)
        return state

    def _main_says(self, fn):
        """fn() computed on the main process, the same value on every process (e.g. one verification of a
        checkpoint instead of one per process)."""
        if self.world == 1:
            return fn()
        from accelerate.utils import broadcast_object_list

        box = [fn() if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]


class _WrongWorld(TetherError):
    """A checkpoint saved by another number of processes: not damage, so no fallback."""


def disk_refusal(fn, *args) -> str | None:
    """Run fn(*args); None when it succeeded, the OS's words when the disk refused a write (full, read-only,
    no permission: tether.files.storage_error). Any other exception is raised as it is."""
    try:
        fn(*args)
    except Exception as e:
        said = storage_error(e)
        if said is None:
            raise
        return said
    return None


def _one_line(e: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's message on one line, at most `limit` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------ modules


def save_module(module: torch.nn.Module, directory: Path, state_dict=None) -> None:
    """HF models via save_pretrained (loadable by from_pretrained); LoRA models as their adapter (the base
    is re-read on resume); other modules as model.safetensors."""
    directory.mkdir(parents=True, exist_ok=True)
    if lora.is_peft(module):
        lora.save_adapter(module, directory, state_dict)
    elif hasattr(module, "save_pretrained"):
        with quiet_transformers():
            module.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
    else:
        from safetensors.torch import save_model

        save_model(module, str(directory / "model.safetensors"))


def load_module(module: torch.nn.Module, directory: Path) -> None:
    """Load weights written by `save_module` into `module` in place (the optimizer keeps its parameters)."""
    if lora.is_peft(module):
        lora.load_adapter_weights(module, directory)
    elif hasattr(module, "save_pretrained") and hasattr(type(module), "from_pretrained"):
        if not (directory / "config.json").is_file():  # from_pretrained would build a default-sized model
            raise TetherError(f"{directory} has no config.json: not a model directory")
        with quiet_transformers():
            loaded = type(module).from_pretrained(
                directory, dtype=next(module.parameters()).dtype, use_safetensors=True
            )
        module.load_state_dict(loaded.state_dict())
    else:
        from safetensors.torch import load_model

        load_model(module, str(directory / "model.safetensors"))


def launched_processes() -> int:
    """Processes of this run as the launcher (torchrun, accelerate launch) announced them (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def use_cpu(device: str) -> bool:
    """Whether accelerate must be told cpu=True: train.device is "cpu", or several processes were launched on
    a machine without an accelerator (accelerate only forms a CPU process group when told so)."""
    return device == "cpu" or (launched_processes() > 1 and not torch.accelerator.is_available())


def process_state(device: str = "auto") -> PartialState:
    """accelerate's process state (the process group, when launched with several), formed as the Loop will."""
    return PartialState(cpu=use_cpu(device))
