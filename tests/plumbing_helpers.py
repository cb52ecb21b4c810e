"""Tiny models, data and configs shared by the plumbing tests (config, data, rollout, loop, SFT).

Nothing is downloaded: the tokenizer is tether's word-level one over WORDS and the model a 2-layer
Llama with hidden size 32, both saved to a directory that `from_pretrained` loads like a real model.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from tether.config import SFTConfig, load_config
from tether.models import build_tiny_llama, build_word_tokenizer

WORDS = "a b c d e f g h i j k l".split()  # ids 4..15; 0-3 are <pad> <unk> <bos> <eos>


def load_script(path: Path, name: str):
    """A script outside the package (benchmarks/, recipes/) imported as the module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_tokenizer():
    return build_word_tokenizer(WORDS)


def tiny_model(seed: int = 0):
    return build_tiny_llama(len(WORDS) + 4, hidden_size=32, num_layers=2, num_heads=2, seed=seed)


def word_id(w: str) -> int:
    return 4 + WORDS.index(w)


def write_model_dir(path: Path, seed: int = 0) -> Path:
    tiny_model(seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def reversal_records(n: int, seed: int = 0) -> list[dict]:
    """Prompt: 1-4 random words; completion: the same words reversed (a task a tiny model can learn)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        out.append({"prompt": " ".join(words), "completion": " ".join(reversed(words))})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def sft_setup(tmp: Path, n_train: int = 32, n_test: int = 8) -> dict[str, Path]:
    """A model directory and train/test files under `tmp`."""
    return {
        "model": write_model_dir(tmp / "model"),
        "train": write_jsonl(tmp / "train.jsonl", reversal_records(n_train, seed=1)),
        "test": write_jsonl(tmp / "test.jsonl", reversal_records(n_test, seed=2)),
    }


def sft_overrides(paths: dict[str, Path], **train) -> list[str]:
    """key=value overrides for a small, fast SFT run on `paths`; `train` overrides the loop's fields."""
    loop = {"lr": 1e-2, "batch_size": 8, "micro_batch_size": 4, "max_steps": 8, "save_every": 2,
            "keep_last": 3, "progress": False, **train}
    return [f"model={paths['model']}", f"data.train={paths['train']}", f"data.test={paths['test']}",
            "data.max_length=16", *(f"train.{k}={v}" for k, v in loop.items())]


def sft_config(paths: dict[str, Path], **train) -> SFTConfig:
    return load_config(SFTConfig, None, sft_overrides(paths, **train))


def hub_cache(root, repo: str, files_from, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """An offline Hugging Face cache laid out as huggingface_hub writes it: models--OWNER--NAME/refs/main
    holds the commit, snapshots/COMMIT/ the files."""
    folder = root / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in files_from.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return snapshot
