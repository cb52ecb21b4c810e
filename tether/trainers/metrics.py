"""What a run writes about itself as it goes: RUN/metrics.jsonl, and the helpers that hand the same records
to experiment trackers (train.report_to; the Loop in tether.trainers.base sends them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.files import write_text_atomic


class MetricsLog:
    """RUN/metrics.jsonl: one flat JSON object per line, flushed at once (only the main process writes)."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def count(self) -> int:
        """Records written so far (saved with each checkpoint)."""
        if not (self.enabled and self.path.is_file()):
            return 0
        return sum(1 for ln in self.path.read_text().splitlines() if ln.strip())

    def truncate(self, n_records: int) -> None:
        """Keep the first `n_records` (those written before the checkpoint a run resumes from)."""
        if not (self.enabled and self.path.is_file()):
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        write_text_atomic(self.path, "".join(ln + "\n" for ln in lines[:n_records]))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {"train.lr": 1e-4, ...}, each value a bool, int, float or str (what every tracker
    stores as a hyperparameter; lists and None as their text)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value if isinstance(value, bool | int | float | str) else json.dumps(value)
    return out


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A markdown table (TensorBoard's text tab renders it), with cells on one line and | escaped."""
    def cell(x: Any) -> str:
        text = x if isinstance(x, str) else json.dumps(x)
        return " ".join(text.split()).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows])
