"""Checkpoint directories: atomic writes, a completion marker, discovery, pruning and RNG states.

Layout of RUN/checkpoints/step-N/:
    config.json, model.safetensors, tokenizer files   the model, loadable by `from_pretrained`
                                                      (with LoRA: adapter_model.safetensors and
                                                      adapter_config.json, the adapter only: resume
                                                      re-reads the frozen base from the configured model)
    <name>/                                           each extra model (e.g. a value model), same format
    trainer_state.pt                                  optimizer, scheduler, loop counters, trainer extras
    rng-<rank>.pt                                     python, numpy and torch RNG states of each process
    COMPLETE                                          written last: without it, not a checkpoint

A checkpoint is written into `.tmp-step-N/`; every file and directory in it is fsynced, then the marker
goes in (fsynced too), and the directory is renamed to `step-N/` (rename is atomic on one filesystem) and
RUN/checkpoints fsynced. A crash at any moment, power cuts included, therefore leaves either no `step-N/`
or a complete one; `find_latest` and `check_complete` ignore anything else.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tether.errors import TetherError
from tether.files import fsync_dir, sync_tree

MARKER = "COMPLETE"
STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step-{step}"


def tmp_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f".tmp-step-{step}"


def is_complete(path: Path) -> bool:
    return path.is_dir() and (path / MARKER).is_file() and (path / STATE_FILE).is_file()


def check_complete(path: str | Path) -> Path:
    """`path` if it is a complete checkpoint, else TetherError (e.g. a save that crashed)."""
    path = Path(path)
    if not path.is_dir():
        raise TetherError(f"no checkpoint at {path}")
    if not is_complete(path):
        raise TetherError(f"{path} is not a complete checkpoint (no {MARKER} marker: the save did not end)")
    return path


def list_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first."""
    if not checkpoints.is_dir():
        return []
    found = []
    for p in checkpoints.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and is_complete(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest(checkpoints: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    found = list_checkpoints(checkpoints)
    return found[-1][1] if found else None


def begin(checkpoints: Path, step: int) -> Path:
    """A fresh, empty temporary directory for the checkpoint of `step`."""
    tmp = tmp_dir(checkpoints, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(checkpoints: Path, step: int) -> Path:
    """Sync the temporary directory's files, mark it complete and rename it to step-N (replacing an older
    step-N)."""
    tmp, final = tmp_dir(checkpoints, step), step_dir(checkpoints, step)
    sync_tree(tmp)  # the marker must never reach the disk before the files it vouches for
    _write_synced(tmp / MARKER, b"ok\n")
    fsync_dir(tmp)
    if final.exists():  # e.g. the same step saved again after a resume: move the old one out of the way first
        old = checkpoints / f".old-step-{step}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(checkpoints)
    return final


def prune(checkpoints: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (keep_last <= 0 keeps all)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(checkpoints)[:-keep_last]:
        shutil.rmtree(path)


def clean_partial(checkpoints: Path) -> None:
    """Remove temporary directories left by saves that crashed."""
    if checkpoints.is_dir():
        for p in checkpoints.iterdir():
            if p.name.startswith((".tmp-step-", ".old-step-")) and p.is_dir():
                shutil.rmtree(p)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------------ RNG


def rng_state() -> dict[str, Any]:
    """This process's RNG states, in a form `torch.load(weights_only=True)` reads back."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(directory: Path, rank: int) -> None:
    torch.save(rng_state(), directory / f"rng-{rank}.pt")


def load_rng(directory: Path, rank: int) -> None:
    path = directory / f"rng-{rank}.pt"
    if not path.is_file():
        raise TetherError(f"{directory} has no RNG state for process {rank}; resume with the same number of "
                          "processes that saved it")
    set_rng_state(torch.load(path, weights_only=True))
