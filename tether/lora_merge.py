"""An adapter directory (RUN/adapter, tether.lora) back into a full model: load it over its base, or merge it.

    model, tokenizer = load_adapter_dir("runs/dpo/adapter")        # a PeftModel over the recorded base
    merge_adapter("runs/dpo/adapter", "merged/")                   # `tether merge`: a full model directory

It sits above tether.lora and tether.reward_model because a reward model's adapter (task SEQ_CLS) is loaded
over a reward model built from the base (`create_reward_model`); tether.reward_model itself needs
tether.lora (`unwrap`), so this code cannot live in tether.lora without an import cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tether import rundir
from tether.errors import TetherError
from tether.lora import ADAPTER_CONFIG, write_merged
from tether.model_files import load_causal_lm, load_tokenizer, resolve_model
from tether.quiet import quiet_peft
from tether.reward_model import create_reward_model


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_adapter_dir(path: str | Path, base: str | Path | None = None, dtype=torch.float32):
    """(PeftModel, tokenizer) of an adapter directory over its base model (`base`, else the one named in
    adapter_config.json); a reward-model adapter (SEQ_CLS) is loaded over the base as a reward model."""
    from peft import PeftModel

    path = Path(path)
    if not is_adapter_dir(path):
        raise TetherError(f"{path} is not an adapter directory (no {ADAPTER_CONFIG})")
    info = json.loads((path / ADAPTER_CONFIG).read_text())
    base = base or info.get("base_model_name_or_path")
    if not base or not Path(base).exists():
        raise TetherError(f"{path}: its base model {base!r} is not here (give --base DIR or FILE.gguf)")
    base = resolve_model(base)
    try:
        if info.get("task_type") == "SEQ_CLS":
            model, _ = create_reward_model(base, dtype="float32" if dtype == torch.float32 else "auto")
        else:
            model = load_causal_lm(base, dtype)
        tokenizer = load_tokenizer(path if (path / "tokenizer_config.json").is_file() else base)
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, path)
    except (OSError, ValueError, KeyError) as e:
        raise TetherError(f"cannot load the adapter {path} over {base}: {e}") from None
    return peft_model.eval(), tokenizer


def merge_adapter(adapter_dir: str | Path, out: str | Path, base: str | Path | None = None) -> Path:
    """Write the merged model of an adapter directory (RUN/adapter) to `out`: safetensors weights and the
    tokenizer, loadable by `from_pretrained` (a reward model by AutoModelForSequenceClassification).

    `out` must be new or an earlier merge's output (tether.rundir), and is locked while this runs. The model
    is written completely into OUT/.tmp-merged first; then the files the earlier merge wrote are replaced by
    these, and other files in OUT (a user's notes) stay. Returns `out`."""
    with rundir.claim(out, "merge") as path:
        model, tokenizer = load_adapter_dir(adapter_dir, base)
        rundir.install(path, write_merged(model, tokenizer, path / ".tmp-merged"))
    return Path(out)
