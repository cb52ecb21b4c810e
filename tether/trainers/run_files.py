"""A training stage's run directory around its Loop: claiming it for the run (tether.rundir's marker and
lock), settling a fresh start or a resume, and the final model in RUN/model."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from tether import lora, rundir
from tether.config.train import missing_tracker
from tether.errors import TetherError
from tether.inputs import inputs_on_disk
from tether.trainers import checkpoint as ckpt
from tether.trainers.base import (
    STAGE_CONFIGS,
    Loop,
    disk_refusal,
    launched_processes,
    process_state,
    save_module,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def claim_run(out: str | Path, stage: str, cfg, resume):
    """The lock and ownership check of a training run directory for its whole run (tether.rundir): `out` must
    be new, or `stage`'s (its marker, or a config.yaml of `cfg`'s type from before markers); resuming needs it
    to exist. Use as `with claim_run(...) as cfg:` around the run: it yields `cfg` with its in-memory data
    and models written into RUN/inputs/ (tether.inputs)."""
    with rundir.claim(out, stage, must_exist=bool(resume), legacy=made_by(type(cfg))) as path:
        yield inputs_on_disk(cfg, path)


def made_by(cls: type):
    """Recognises a run directory of the stage configured by `cls` from before tether.rundir's markers (by
    its config.yaml)."""
    return rundir.made_by_config(cls, among=STAGE_CONFIGS)


def prepare_run_dir(run_dir: Path, resume, cfg, stage: str, startup: tuple[str, ...] = ("metrics.jsonl",)):
    """Check that `run_dir` is `stage`'s (tether.rundir.check) and settle how the run starts; returns the
    `resume` to use. `cfg` is the stage's config (its type recognises runs from before markers).

    A run that holds no complete checkpoint yet (a start that failed, or was killed, before its first save)
    is started again from step 0 in place, by `--resume` as by a fresh run: its start-up files (`startup`,
    RUN/config.yaml is rewritten, samples.jsonl and tensorboard/) and partial checkpoints are removed, any
    other file stays. A fresh run is refused where there is a checkpoint, RUN/model or RUN/summary.json;
    `--resume` where the run finished without checkpoints (nothing to continue). With several processes all
    of them check before any goes on (the main one soon writes there)."""
    missing = missing_tracker(cfg.train.report_to)  # a config built in Python: before any model loads
    if missing:
        raise TetherError(f"config key train.report_to {missing}")
    if rundir.is_main_process():  # the others checked in `claim_run`, before the main one began writing
        rundir.check(run_dir, stage, must_exist=bool(resume), legacy=made_by(type(cfg)))
    checkpoints = run_dir / "checkpoints"
    latest = ckpt.find_latest(checkpoints)
    started = latest is not None or (run_dir / "model").exists() or (run_dir / "summary.json").exists()
    if resume is True and latest is None:
        if (run_dir / "summary.json").is_file():
            raise TetherError(f"nothing to resume: {run_dir} holds a finished run without checkpoints "
                              "(train.save_every=0); choose another --out for a new one")
        if any((run_dir / name).exists() for name in (*startup, "config.yaml", "checkpoints")):
            log.warning("%s has no checkpoint yet: starting the run again from step 0", run_dir)
        resume = False
    elif not resume and started:
        raise TetherError(f"{run_dir} already holds a run; continue it with --resume or choose another --out")
    if not resume and rundir.is_main_process() and run_dir.is_dir():
        for name in startup:
            (run_dir / name).unlink(missing_ok=True)
        (run_dir / "samples.jsonl").unlink(missing_ok=True)  # the RL stages' evaluation samples
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)  # train.report_to's event files
        ckpt.clean_partial(checkpoints)
    if launched_processes() > 1:
        process_state(cfg.train.device).wait_for_everyone()
    return resume


def save_final(loop: Loop, run_dir: Path) -> Path:
    """The trained model and tokenizer in RUN/model/, written to a temporary directory and renamed. With LoRA
    RUN/model holds the merged weights and RUN/adapter the adapter (tether.lora.save_lora_final). A write the
    disk refuses raises SaveFailed (one line), the temporary directory removed and the checkpoints intact."""
    final, tmp = run_dir / "model", run_dir / ".tmp-model"
    failed = None
    if lora.is_peft(loop.accelerator.unwrap_model(loop.model)):
        if loop.is_main:
            unwrapped = loop.accelerator.unwrap_model(loop.model)
            failed = disk_refusal(lora.save_lora_final, unwrapped, loop.tokenizer, run_dir)
        loop._stop_if_refused(failed, "the final model", run_dir / ".tmp-adapter", tmp)
        return final
    state_dict = loop.accelerator.get_state_dict(loop.model)
    if loop.is_main:
        failed = disk_refusal(_write_final, loop, state_dict, tmp, final)
    loop._stop_if_refused(failed, "the final model", tmp)
    return final


def _write_final(loop: Loop, state_dict, tmp: Path, final: Path) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    save_module(loop.accelerator.unwrap_model(loop.model), tmp, state_dict)
    loop.tokenizer.save_pretrained(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
