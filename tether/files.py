"""Writing result files so that a crash never leaves a half-written one that reads as finished.

A file is written under a temporary name beside its destination, fsynced, then renamed over it (atomic on
POSIX), and the directory is fsynced so that the rename itself survives a power cut. Directories of files
(checkpoints) are made durable with `sync_tree` before whatever marks them complete is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


def save_atomic(obj, path: Path) -> None:
    """torch.save `obj` to a temporary file beside `path`, fsync it and rename it over `path`; a write the
    disk refuses is one TetherError line, the temporary file removed."""
    import torch

    from tether.errors import TetherError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        said = storage_error(e)
        if said is None:
            raise
        raise TetherError(f"could not write {path}: {said}") from None


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


def sha256_file(path: str | Path) -> str:
    """The file's SHA-256 as hex, read in 1 MiB blocks (no caching: a checkpoint is verified as it is now)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (safetensors, tokenizers) name it


def storage_error(e: BaseException) -> str | None:
    """What the disk said, when `e` (or an exception it came from) is a failed read or write: the OS's words
    for an OSError anywhere in its chain (torch wraps them in a RuntimeError), or for the errno that a Rust
    library (safetensors) quotes in its message. None for anything else, which is a bug to see in full."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e.strerror or os.strerror(e.errno)
        if m := _OS_ERROR_CODE.search(str(e)):
            return os.strerror(int(m.group(1)))
        e = e.__cause__ or e.__context__
    return None


def write_or_check(directory: str | Path, texts: dict[str, str], check: bool, command: str) -> list[str]:
    """Generated files: write each {name: text} of `texts` into `directory` (UTF-8, as given), or with
    `check` compare them with what is there, byte for byte. Returns the names that differ (or are missing)
    when checking, each printed with `command`, the command that regenerates them; [] after writing."""
    directory = Path(directory)
    differ = []
    for name, text in texts.items():
        path = directory / name
        if check:
            if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
                differ.append(name)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="")
    for name in differ:
        print(f"{name} differs from the generator's output ({command})")
    return differ
