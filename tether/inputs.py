"""In-memory data and models for the Python API, written into RUN/inputs/ so the run reads them as files.

    records = [{"prompt": "2+2=", "completion": "4"}, ...]               # or a datasets.Dataset
    train_sft(SFTConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct", data=SFTDataConfig(train=records)),
              "runs/sft")                                                # reads runs/sft/inputs/train.jsonl
    cfg = dataclasses.replace(cfg, policy=model, tokenizer=tokenizer)   # a loaded PreTrainedModel
    train_dpo(cfg, "runs/dpo")                            # saves them to runs/dpo/inputs/policy/ first

A stage's `data.train` / `data.test` may be a list of records (dicts) or a `datasets.Dataset`, and its
`model` / `policy` a loaded `transformers.PreTrainedModel` with its tokenizer object in `tokenizer`. Each
is written once into the run directory (records as JSON lines, a model with save_pretrained in safetensors)
and the run goes on with that path: the same record checks with `inputs/train.jsonl:LINE` in their errors,
the data's SHA-256 in config.yaml, and a `--resume` that reads the same files. Given again to a run
directory that already holds different ones, they are refused: nothing written there is replaced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from tether.errors import TetherError
from tether.files import write_text_atomic

MODEL_FIELDS = ("model", "policy", "reference")


def inputs_on_disk(cfg, run_dir: Path):
    """`cfg` with every in-memory input replaced by the path it was written to under RUN/inputs/ (a new
    config; `cfg` itself is left as it is). A config whose inputs are all paths comes back unchanged."""
    data = cfg.data
    written = {name: str(write_records(getattr(data, name), run_dir / "inputs" / f"{name}.jsonl", name))
               for name in ("train", "test") if is_records(getattr(data, name))}
    changes: dict[str, Any] = {"data": dataclasses.replace(data, **written)} if written else {}
    for name in MODEL_FIELDS:
        model = getattr(cfg, name, None)
        if is_model(model):
            changes[name] = str(write_model(model, cfg.tokenizer, run_dir / "inputs" / name, name))
            changes["tokenizer"] = None  # saved beside the model
    if not changes:
        return cfg
    from tether.rundir import is_main_process

    if not is_main_process():
        raise TetherError("in-memory data or models are for one process: write them to files for a "
                          "multi-process run")
    return dataclasses.replace(cfg, **changes)


def is_records(value) -> bool:
    """A list of records or a `datasets.Dataset` (anything else is a path, checked as one)."""
    return isinstance(value, list | tuple) or type(value).__name__ == "Dataset"


def is_model(value) -> bool:
    """A loaded Hugging Face model (anything else is a path or Hub id)."""
    return hasattr(value, "save_pretrained") and hasattr(value, "config")


def write_records(records, path: Path, name: str) -> Path:
    """Records (dicts) as JSON lines at `path`; one already there must hold the same lines."""
    lines = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise TetherError(f"data.{name}: record {i} is a {type(record).__name__}, not a dict of columns")
        try:
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        except (TypeError, ValueError) as e:
            raise TetherError(f"data.{name}: record {i} cannot be written as JSON: {e}") from None
    text = "".join(lines)
    if path.is_file():
        if path.read_text(encoding="utf-8") != text:
            raise TetherError(f"data.{name}: {path} holds other records (this run directory's); give the "
                              "same records to resume it, or choose another --out")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text)


def write_model(model, tokenizer, path: Path, name: str) -> Path:
    """A loaded model and its tokenizer saved (safetensors) into the directory `path`; one already there must
    hold the same weights."""
    if tokenizer is None or isinstance(tokenizer, str | Path):
        raise TetherError(f"{name} is a loaded model: give its tokenizer object as tokenizer too")
    if hasattr(model, "peft_config"):
        raise TetherError(f"{name} is a peft model: merge its adapters first (merge_and_unload)")
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if path.is_dir():
        same = _weights_digest(path) == _weights_digest(tmp)
        shutil.rmtree(tmp)
        if not same:
            raise TetherError(f"{name}: {path} holds another model (this run directory's); give the same "
                              "model to resume it, or choose another --out")
        return path
    tmp.replace(path)
    return path


def _weights_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(directory.glob("*.safetensors")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
