"""Scoring responses with the gold reward: `score_records` in-process, `score_file` for a JSONL file."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tether.data import read_jsonl
from tether.errors import DataError
from tether.lab.build import open_lab
from tether.lab.gold import gold_parts
from tether.lab.jsonl import write_jsonl
from tether.lab.world import FAMILIES, parse_prompt

RESPONSE_FIELDS = ("completion", "response")


def score_records(records, path: str | Path = "<records>") -> tuple[list[dict], dict]:
    """(scored records, means). Each record needs a lab `prompt` and a `completion` (or `response`); it gets
    `gold` and `gold_parts` added, and `family` when it has none. Preference records (`chosen`, `rejected`)
    get `gold_chosen` and `gold_rejected` instead. `records` is a list of dicts or of (line, dict) pairs;
    problems raise DataError naming `path` and the line. `means` maps each family present (and "all") to
    {"mean", "n"} of the completion gold rewards, or of the chosen side for preference records."""
    scored, by_family = [], defaultdict(list)
    for index, item in enumerate(records, start=1):
        line, record = item if isinstance(item, tuple) else (index, item)
        prompt = record.get("prompt")
        if not isinstance(prompt, str):
            raise DataError(path, line, "missing or non-string 'prompt'")
        try:
            info = parse_prompt(prompt)
        except ValueError as e:
            raise DataError(path, line, str(e)) from None
        out = dict(record)
        out.setdefault("family", info.family)
        field = next((f for f in RESPONSE_FIELDS if f in record), None)
        if field is not None:
            out["gold_parts"] = _parts(record[field], field, path, line, info)
            out["gold"] = round(sum(out["gold_parts"].values()), 6) + 0.0
            value = out["gold"]
        elif "chosen" in record and "rejected" in record:
            for side in ("chosen", "rejected"):
                out[f"gold_{side}"] = (
                    round(sum(_parts(record[side], side, path, line, info).values()), 6) + 0.0
                )
            value = out["gold_chosen"]
        else:
            raise DataError(path, line, "missing 'completion' (or 'response', or 'chosen' and 'rejected')")
        by_family[info.family].append(value)
        by_family["all"].append(value)
        scored.append(out)
    means = {
        f: {"mean": round(sum(v) / len(v), 4), "n": len(v)}
        for f in ("all", *FAMILIES)
        if (v := by_family.get(f))
    }
    return scored, means


def _parts(response, field: str, path, line: int, info) -> dict[str, float]:
    if not isinstance(response, str):
        raise DataError(path, line, f"'{field}' must be a string")
    return gold_parts(info, response)


def score_file(lab_dir: str | Path, data: str | Path, out: str | Path | None = None) -> tuple[Path, dict]:
    """Score every record of the JSONL file `data` with the gold reward of the lab in `lab_dir`, write the
    scored records to `out` (default: DATA with `.scored.jsonl` in place of `.jsonl`), and return
    (out path, means per family)."""
    open_lab(lab_dir)  # the gold reward is fixed by the world version the lab was built with
    data = Path(data)
    scored, means = score_records(read_jsonl(data), data)
    if out is None:
        stem = data.name[: -len(".jsonl")] if data.name.endswith(".jsonl") else data.name
        out = data.with_name(stem + ".scored.jsonl")
    write_jsonl(out, scored)
    return Path(out), means
