"""JSONL out for the lab: stable bytes on write (reading is tether.data.read_jsonl)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def dumps(record) -> str:
    """One JSON value with sorted keys and fixed separators, so the same data gives the same bytes."""
    return json.dumps(record, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write one record per line (UTF-8, "\\n" line ends); returns the number written."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(dumps(record) + "\n")
            n += 1
    return n
