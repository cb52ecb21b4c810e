"""Writing result files so that a crash never leaves a half-written one that reads as finished.

A file is written under a temporary name beside its destination, fsynced, then renamed over it (atomic on
POSIX), and the directory is fsynced so that the rename itself survives a power cut. Directories of files
(checkpoints) are made durable with `sync_tree` before whatever marks them complete is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8, line ends as given) to a temporary file beside `path`, fsync it, rename it over
    `path` and fsync the directory. If anything fails, `path` keeps its old content (or stays absent) and
    the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json(path: str | Path, obj) -> Path:
    """`obj` as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (names created, renamed or removed in it) to the disk; a no-op where the
    platform cannot open or sync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sync_tree(root: str | Path) -> None:
    """fsync every file under `root`, then every directory, deepest first and `root` last."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(Path(directory) / name)
        fsync_dir(directory)
