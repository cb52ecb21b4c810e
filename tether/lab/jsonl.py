"""JSONL out for the lab: stable bytes on write (reading is tether.data.read_jsonl)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tether.files import write_text_atomic


def dumps(record) -> str:
    """One JSON value with sorted keys and fixed separators, so the same data gives the same bytes."""
    return json.dumps(record, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write one record per line (UTF-8, "\\n" line ends) atomically (tether.files: a failure leaves the
    old file or none); returns the number written."""
    lines = [dumps(record) + "\n" for record in records]
    write_text_atomic(path, "".join(lines))
    return len(lines)
