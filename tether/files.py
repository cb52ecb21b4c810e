"""Writing result files so that a crash never leaves a half-written one that reads as finished."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def write_json(path: str | Path, obj) -> Path:
    """`obj` as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
