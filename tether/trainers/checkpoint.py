"""Checkpoint directories: atomic writes, a manifest-bearing completion marker, verification, discovery,
pruning and RNG states.

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

The marker is a manifest, JSON: {"format": 1, "files": {relative path: {"bytes": size, "sha256": hex}}} for
every other file of the checkpoint. `verify` checks a checkpoint against it, so a file lost, truncated or
with a flipped bit after the save is found before anything is loaded, and resume falls back to an older
checkpoint (tether.trainers.base.Loop.resume). A marker that reads `ok` was written by a tether without
manifests: such a checkpoint loads unverified.

Cost (benchmarks/checkpoint_hash.py, measured on the project's shared 2-core build machine): the lab
model's checkpoint (0.56 M parameters, 6.7 MB with the optimizer state) hashes in 4 ms, within a 72 ms
save; a 540 MB file, the float32 weights of a 135 M-parameter model, in 0.58 s (about 0.9 GB/s from the
page cache), so such a model's whole checkpoint (weights and AdamW's two moments, about 1.6 GB) adds about
1.7 s to its save and as much to a resume.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tether.errors import TetherError
from tether.files import fsync_dir, sha256_file, sync_tree

MARKER = "COMPLETE"
MANIFEST_FORMAT = 1
STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step-{step}"


def tmp_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f".tmp-step-{step}"


def is_complete(path: Path) -> bool:
    """Whether the save of `path` ended (its marker is there); whether its files are whole is `verify`'s."""
    return path.is_dir() and (path / MARKER).is_file()


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
    """Sync the temporary directory's files, mark it complete with its manifest and rename it to step-N
    (replacing an older step-N)."""
    tmp, final = tmp_dir(checkpoints, step), step_dir(checkpoints, step)
    sync_tree(tmp)  # the marker must never reach the disk before the files it vouches for
    manifest = {"format": MANIFEST_FORMAT, "files": manifest_of(tmp)}
    _write_synced(tmp / MARKER, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    fsync_dir(tmp)
    if final.exists():  # e.g. the same step saved again after a resume: move the old one out of the way first
        old = old_dir(checkpoints, step)
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)  # the old step-N stays the checkpoint
            raise
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    fsync_dir(checkpoints)
    return final


def old_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f".old-step-{step}"


def damaged_dir(path: Path) -> Path:
    """Where a checkpoint that failed verification is moved, kept for inspection and ignored by discovery and
    pruning: damaged-step-N beside it (damaged-step-N-2, -3, ... when that is taken)."""
    target, n = path.with_name(f"damaged-{path.name}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"damaged-{path.name}-{n}")
    return target


def manifest_of(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every file under `directory` but the marker."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.relative_to(directory).as_posix() != MARKER:
            out[p.relative_to(directory).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def read_manifest(path: Path) -> dict[str, dict[str, Any]] | None:
    """The files the checkpoint's marker vouches for; None for a marker without a manifest (an older tether's
    `ok`). ValueError when the marker is neither."""
    text = (path / MARKER).read_text(encoding="utf-8", errors="replace")
    if text.strip() == "ok":
        return None
    try:
        manifest = json.loads(text)
        files = manifest["files"]
        if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError
        for entry in files.values():
            if not (isinstance(entry["bytes"], int) and isinstance(entry["sha256"], str)):
                raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"its {MARKER} marker is not a manifest tether can read") from None
    return files


def verify(path: str | Path) -> str | None:
    """None when every file the manifest lists is there with its size and SHA-256 (or when there is no
    manifest: see `has_manifest`); else what is wrong, as a short phrase naming the file."""
    path = Path(path)
    try:
        manifest = read_manifest(path)
        if manifest is None:
            return None
        for rel, entry in manifest.items():
            f = path / rel
            if not f.is_file():
                return f"{rel} is missing"
            size = f.stat().st_size
            if size != entry["bytes"]:
                return f"{rel} has {size} bytes, its manifest says {entry['bytes']}"
            if sha256_file(f) != entry["sha256"]:
                return f"{rel} does not match the SHA-256 in its manifest"
    except (OSError, ValueError) as e:
        return str(e)
    return None


def has_manifest(path: Path) -> bool:
    try:
        return read_manifest(path) is not None
    except (OSError, ValueError):
        return True  # an unreadable marker is not an old one; `verify` reports it


def prune(checkpoints: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (keep_last <= 0 keeps all)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(checkpoints)[:-keep_last]:
        shutil.rmtree(path)


def make_room(checkpoints: Path, step: int, keep_last: int, keep: Path | None) -> list[Path]:
    """Before saving `step`: delete the oldest complete checkpoints that `keep_last` would delete once the
    save is done, so the save needs no more room than `keep_last` checkpoints (a full disk that held them
    has room for the next one). `keep`, the newest checkpoint known to be good, is never deleted, nor the
    newest one when `keep` is None: a save that then fails still leaves one. Returns the deleted paths."""
    if keep_last <= 0:
        return []
    found = [p for s, p in list_checkpoints(checkpoints) if s != step]  # a step-N saved again replaces it
    protect = keep if keep is not None else (found[-1] if found else None)
    gone = []
    for path in found[: max(0, len(found) + 1 - keep_last)]:
        if path != protect:
            shutil.rmtree(path)
            gone.append(path)
    return gone


def clean_partial(checkpoints: Path) -> None:
    """Remove temporary directories left by saves that crashed; a checkpoint moved aside to be replaced
    (`.old-step-N`) whose replacement never arrived is put back."""
    if checkpoints.is_dir():
        for p in checkpoints.iterdir():
            if p.name.startswith(".old-step-") and p.is_dir():
                final = checkpoints / p.name[len(".old-") :]
                if not final.exists() and is_complete(p):
                    os.replace(p, final)
                    continue
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
    save_file(rng_state(), directory / f"rng-{rank}.pt")


def save_file(obj: Any, path: Path) -> None:
    """torch.save through a Python file, so a failed write reaches the caller as the OSError it is (torch's
    own writer reports only a RuntimeError about a stream)."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def load_rng(directory: Path, rank: int) -> None:
    path = directory / f"rng-{rank}.pt"
    if not path.is_file():
        raise TetherError(f"{directory} has no RNG state for process {rank}; resume with the same number of "
                          "processes that saved it")
    set_rng_state(torch.load(path, weights_only=True))
