"""Precision for the hardware (tether.precision) on fake /proc/cpuinfo texts, and gradient checkpointing
(tether.activations): the layers are recomputed in the backward pass and the gradients do not change."""

import logging

import pytest
import torch
from plumbing_helpers import sft_config, sft_setup, tiny_model

from tether import precision
from tether.activations import enable_gradient_checkpointing
from tether.config import LoRAConfig
from tether.lora import add_adapters
from tether.trainers.base import Loop

NO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 amx_tile amx_bf16\n"


@pytest.fixture(autouse=True)
def fresh_notice(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())


def test_cpu_flags_are_read_from_the_flags_lines():
    assert precision.cpu_flags(NO_BF16) == {"fpu", "sse2", "avx2", "avx512f", "avx512bw"}
    assert not precision.cpu_has_bf16(lambda: NO_BF16)
    assert precision.cpu_has_bf16(lambda: AVX512_BF16) and precision.cpu_has_bf16(lambda: AMX)
    assert not precision.cpu_has_bf16(lambda: "")


def test_bf16_without_units_falls_back_to_float32_with_one_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="tether.precision"):
        assert precision.autocast_precision("bf16", "cpu", lambda: NO_BF16) == "no"
        assert precision.autocast_precision("bf16", "cpu", lambda: NO_BF16) == "no"
    notices = [r for r in caplog.records if "no bf16 units" in r.getMessage()]
    assert len(notices) == 1


def test_bf16_with_units_and_auto(caplog):
    with caplog.at_level(logging.WARNING, logger="tether.precision"):
        assert precision.autocast_precision("bf16", "cpu", lambda: AVX512_BF16) == "bf16"
        assert precision.autocast_precision("bf16", "cpu", lambda: AMX) == "bf16"
        assert precision.autocast_precision("auto", "cpu", lambda: AMX) == "bf16"
        assert precision.autocast_precision("auto", "cpu", lambda: NO_BF16) == "no"
        assert precision.autocast_precision("no", "cpu", lambda: AMX) == "no"
    assert not caplog.records  # "auto" chooses silently


def test_the_loop_gets_float32_for_bf16_on_a_cpu_without_units(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "read_cpuinfo", lambda: NO_BF16)
    cfg = sft_config(sft_setup(tmp_path / "d"), mixed_precision="bf16", device="cpu").train
    loop = Loop(cfg, tmp_path / "run", tiny_model(), total_steps=1)
    assert loop.accelerator.mixed_precision == "no"


def _grads(model, checkpointing: bool):
    """Mean squared logit of a batch, backward; returns (grads of the trainable parameters, calls of the first
    layer's input norm: 1 per forward, and one more when the backward pass recomputes the layer)."""
    calls = []
    norm = model.get_base_model().model.layers[0].input_layernorm  # the layer's first module
    handle = norm.register_forward_hook(lambda *a: calls.append(1))
    if checkpointing:
        enable_gradient_checkpointing(model)
    ids = torch.tensor([[2, 4, 5, 6, 7, 3], [2, 8, 9, 10, 3, 0]])
    model(input_ids=ids).logits.pow(2).mean().backward()
    handle.remove()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, len(calls)


def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients():
    """In eval mode (how tether trains), with LoRA: without checkpointing the first layer's norm runs once
    per forward+backward; with it, twice (the recomputation). The gradients agree to float32 rounding."""
    torch.manual_seed(0)
    plain = add_adapters(tiny_model().eval(), LoRAConfig(r=4, alpha=8))
    torch.manual_seed(0)
    ckpt = add_adapters(tiny_model().eval(), LoRAConfig(r=4, alpha=8))
    for m in (plain, ckpt):  # move B off 0 so every adapter gets a gradient
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.01)
    g0, calls0 = _grads(plain, checkpointing=False)
    g1, calls1 = _grads(ckpt, checkpointing=True)
    assert (calls0, calls1) == (1, 2)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-6, rtol=1e-5)
    assert not ckpt.get_base_model().model.layers[0].mlp.training  # sub-modules keep eval mode
