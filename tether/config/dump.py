"""The resolved dump of a config, RUN/config.yaml, with its provenance (versions, git commit, data hashes)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tether.config.loader import PROVENANCE_KEY, to_dict
from tether.files import write_text_atomic


def dump_config(
    cfg, run_dir: str | Path, data_files: list[str | None] | None = None, code: dict | None = None
) -> Path:
    """Write the resolved `cfg` and its provenance to RUN/config.yaml; returns the path.

    Provenance: versions of tether, torch and transformers, the git commit of the tether source when it is
    a git checkout, and the sha256 of each data file (so a run can be matched to the data it saw); `code`,
    when given, as provenance.code: the user code the run imported ({spec: {"path", "sha256"}}, e.g.
    tether.rewards.imported_code of a `module:function` reward).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = to_dict(cfg)
    doc[PROVENANCE_KEY] = provenance(data_files or [])
    if code:
        doc[PROVENANCE_KEY]["code"] = code
    path = run_dir / "config.yaml"
    return write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))


def provenance(data_files: list[str | None]) -> dict[str, Any]:
    """Versions, git commit and data hashes, for the record."""
    import torch
    import transformers

    import tether

    return {
        "tether_version": str(tether.__version__),
        "torch_version": str(torch.__version__),
        "transformers_version": str(transformers.__version__),
        "git_commit": git_commit(),
        "data_sha256": {str(p): sha256_source(p) for p in data_files if p},
    }


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_source(source: str | Path) -> str | None:
    """sha256 of a data source (tether.data_sources): a file's bytes; for a directory (saved by `datasets`),
    of each file's relative path and sha256 in path order; None for a Hub dataset (no local file to hash)."""
    path = Path(source)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def git_commit() -> str | None:
    """The commit of the checkout tether runs from (with '+dirty' for local changes); None outside git."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
