"""Arguments every training stage takes: --config FILE.yaml, key=value overrides, --out, --seed, --resume."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from tether import rundir
from tether.config import load_config, to_dict

log = logging.getLogger(__name__)


def add_stage_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    from tether.config.describe import STAGES, describe

    keys = ", ".join(key.name for key in describe(STAGES[stage]))
    parser.epilog = (f"config keys (KEY=VALUE; `tether config show {stage}` gives each default and meaning): "
                     f"{keys}")
    parser.add_argument("--config", metavar="FILE.yaml", help=f"stage config (e.g. configs/{stage}.yaml)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=3e-4"
    )
    parser.add_argument("--out", metavar="RUN_DIR", help=f"run directory (default: runs/{stage}-<time>)")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument("--resume", action="store_true", help="continue --out from its last checkpoint")
    parser.add_argument("--resume-from", metavar="CHECKPOINT", help="continue --out from CHECKPOINT")


def resume_of(args) -> bool | str:
    """False, True (the latest checkpoint) or a checkpoint path, from --resume / --resume-from."""
    return args.resume_from or args.resume


def run_dir_of(args, stage: str) -> Path:
    if args.out:
        return Path(args.out)
    return Path("runs") / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"


def stage_config(cls: type, args, run_dir: Path):
    """The config from --config (or, when resuming without one, the run's own config.yaml), the overrides
    and --seed. Resuming with a config that differs from the run's logs the differences."""
    path, resume = args.config, resume_of(args)
    stored = run_dir / "config.yaml"
    if path is None and resume and stored.is_file():
        path = stored
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(cls, path, overrides)
    if resume and stored.is_file():
        before = load_config(cls, stored)
        if to_dict(before) != to_dict(cfg):
            changed = sorted(_diff(to_dict(before), to_dict(cfg)))
            log.warning("resuming with a config that differs from %s in: %s", stored, ", ".join(changed))
    return cfg


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], prefix + k + ".")
        elif a.get(k) != b.get(k):
            out.append(prefix + k)
    return out


def run_stage(args, stage: str, cls: type, train_fn, what: str) -> int:
    """The body of every training command: resolve the config, train, report where the result is.

    Returns 143 (128 + SIGTERM, as a shell reports it) when SIGTERM stopped the run after a checkpoint."""
    import sys

    from tether.trainers.base import TrainingInterrupted
    from tether.trainers.run_files import made_by

    run_dir = run_dir_of(args, stage)
    # before its config.yaml is read: a directory that is not this stage's is refused, not parsed
    rundir.check(run_dir, stage, must_exist=bool(resume_of(args)), legacy=made_by(cls))
    cfg = stage_config(cls, args, run_dir)
    try:
        train_fn(cfg, run_dir, resume=resume_of(args))
    except TrainingInterrupted as e:
        print(f"tether {stage}: {e}", file=sys.stderr)
        return 143
    if os.environ.get("RANK", "0") == "0":  # once, from the main process of a multi-process launch
        print(f"tether {stage}: done, {what} in {run_dir / 'model'} (summary: {run_dir / 'summary.json'})")
    return 0
