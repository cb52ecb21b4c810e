"""In-memory data and models for the Python API, written into RUN/inputs/ so the run reads them as files.

    records = [{"prompt": "2+2=", "completion": "4"}, ...]               # or a datasets.Dataset
    train_sft(SFTConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct", data=SFTDataConfig(train=records)),
              "runs/sft")                                                # reads runs/sft/inputs/train.jsonl
    cfg = dataclasses.replace(cfg, policy=model, tokenizer=tokenizer)   # a loaded PreTrainedModel
    train_dpo(cfg, "runs/dpo")                            # saves them to runs/dpo/inputs/policy/ first

A stage's `data.train` / `data.test` may be a list of records (dicts) or a `datasets.Dataset`, and its
`model` / `policy` / `reference` a loaded `transformers.PreTrainedModel` with its tokenizer object in
`tokenizer` (a tokenizer object alone also works, beside a model given as a path). Each
is written once into the run directory (records as JSON lines, a model with save_pretrained in safetensors)
and the run goes on with that path: the same record checks with `inputs/train.jsonl:LINE` in their errors,
the data's SHA-256 in config.yaml, and a `--resume` that reads the same files. Given again to a run
directory that already holds different ones, they are refused: nothing written there is replaced.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from tether.errors import TetherError
from tether.files import write_text_atomic
from tether.trainers.checkpoint import manifest_of

MODEL_FIELDS = ("model", "policy", "reference")


def inputs_on_disk(cfg, run_dir: Path):
    """`cfg` with every in-memory input replaced by the path it was written to under RUN/inputs/ (a new
    config; `cfg` itself is left as it is). A config whose inputs are all paths comes back unchanged."""
    data = cfg.data
    in_memory = [name for name in ("train", "test") if is_records(getattr(data, name))]
    models = [name for name in MODEL_FIELDS if is_model(getattr(cfg, name, None))]
    tokenizer = getattr(cfg, "tokenizer", None)
    tokenizer_object = tokenizer is not None and not isinstance(tokenizer, str | Path)
    if not (in_memory or models or tokenizer_object):
        return cfg
    from tether.rundir import is_main_process

    if not is_main_process():
        raise TetherError("in-memory data or models are for one process: write them to files for a "
                          "multi-process run")
    changes: dict[str, Any] = {}
    if in_memory:
        changes["data"] = dataclasses.replace(data, **{
            name: str(write_records(getattr(data, name), run_dir / "inputs" / f"{name}.jsonl", name))
            for name in in_memory})
    for name in models:
        changes[name] = str(write_model(getattr(cfg, name), tokenizer, run_dir / "inputs" / name, name))
    if tokenizer_object:  # saved beside each model, or alone for a model given as a path
        changes["tokenizer"] = None if models else str(write_tokenizer(tokenizer, run_dir / "inputs"))
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
    """A loaded model and its tokenizer saved (safetensors) into the directory `path`."""
    if tokenizer is None or isinstance(tokenizer, str | Path):
        raise TetherError(f"{name} is a loaded model: give its tokenizer object as tokenizer too")
    if hasattr(model, "peft_config"):
        raise TetherError(f"{name} is a peft model: merge its adapters first (merge_and_unload)")

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return write_dir(save, path, name, "model")


def write_tokenizer(tokenizer, inputs: Path) -> Path:
    """A tokenizer object saved into INPUTS/tokenizer."""
    return write_dir(tokenizer.save_pretrained, inputs / "tokenizer", "tokenizer", "tokenizer")


def write_dir(save, path: Path, name: str, what: str) -> Path:
    """`save(directory)` into a temporary directory renamed to `path`; where `path` is already there (an
    earlier start of this run), its files must be byte for byte the ones just saved, and it is kept."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if not path.is_dir():
        tmp.replace(path)
        return path
    same = manifest_of(path) == manifest_of(tmp)  # every file's size and SHA-256
    shutil.rmtree(tmp)
    if not same:
        raise TetherError(f"{name}: {path} holds another {what} (this run directory's); give the same "
                          f"{what} to resume it, or choose another --out")
    return path
