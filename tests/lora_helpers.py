"""Checks shared by the LoRA tests: the trained model captured at the final save, the base it started from,
and the merged weights against base + (alpha/r)·B·A computed from the adapter file by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tether import lora

LORA = ["lora.r=4", "lora.alpha=8"]
SCALE = 8 / 4  # alpha / r (Hu et al. 2021, sec. 4.1)


@pytest.fixture
def captured(monkeypatch):
    """The PeftModel(s) handed to the final save, in order (one per run)."""
    models = []
    save = lora.save_lora_final

    def capture(model, tokenizer, run_dir):
        models.append(model)
        return save(model, tokenizer, run_dir)

    monkeypatch.setattr(lora, "save_lora_final", capture)
    return models


def base_parameters_unchanged(model, base_dir: Path) -> int:
    """Assert every frozen base weight of the trained PeftModel is bit-identical to the file it was loaded
    from; returns how many adapted layers were checked."""
    base = load_file(Path(base_dir) / "model.safetensors")
    inner = model.get_base_model().state_dict()
    checked = 0
    for name, value in inner.items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        plain = name.replace(".base_layer.", ".").replace(".original_module.", ".")
        if plain in base:
            assert torch.equal(value, base[plain]), name
            checked += ".base_layer." in name
    assert checked > 0
    return checked


def adapter_deltas(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """{weight name: (alpha/r)·B·A} for each adapted layer of a saved adapter."""
    ad = load_file(Path(adapter_dir) / lora.ADAPTER_WEIGHTS)
    out = {}
    for k, a in ad.items():
        if ".lora_A." in k:
            b = ad[k.replace(".lora_A.", ".lora_B.")]
            out[k.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")] = SCALE * b @ a
    return out


def merged_is_base_plus_adapter(
    base_dir: Path, run_dir: Path, atol: float = 1e-6, merged_dir: Path | None = None
) -> None:
    """RUN/model (or `merged_dir`) = base + (alpha/r)·B·A of RUN/adapter in the adapted layers (float32
    rounding: atol 1e-6), the base bit for bit elsewhere, and the adapters moved (some B·A is not 0)."""
    base = load_file(Path(base_dir) / "model.safetensors")
    merged = load_file(Path(merged_dir or Path(run_dir) / "model") / "model.safetensors")
    deltas = adapter_deltas(Path(run_dir) / "adapter")
    assert deltas and any(d.abs().max() > 1e-4 for d in deltas.values())
    for name, w in base.items():
        if name in deltas:
            torch.testing.assert_close(merged[name], w + deltas[name], atol=atol, rtol=0)
        else:
            assert torch.equal(merged[name], w), name
