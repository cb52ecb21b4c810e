"""Autocast precision chosen for the hardware: bf16 only where it has bf16 units.

    precision = autocast_precision(cfg.mixed_precision, cfg.device)   # "no", "bf16" or "fp16"
    with autocast(precision, device):                                 # what the trained model's forward gets
        ref_logits = reference(ids).logits

A CPU without bf16 instructions emulates bf16 matmuls in software, which is several times slower than
float32 (a bf16-autocast DPO step on a 2-core AMD EPYC whose flags list neither avx512_bf16 nor amx_bf16 was
measured at ~580 s against ~73 s in float32: see issue 8). So a request for bf16 on a CPU without the units
falls back to float32 ("no") with a one-line warning; "auto" picks bf16 where there are units and float32
elsewhere without a warning. With the units it pays (on a 2-core AMD EPYC that lists avx512_bf16 an SFT step
read 5.9 s under bf16 autocast against 7.9 s in float32: benchmarks/README.md). CPU units are read from the
flags of /proc/cpuinfo (avx512_bf16: AVX-512 BF16 dot products; amx_bf16: AMX tiles); on CUDA
torch.cuda.is_bf16_supported() answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_warned: set[str] = set()


def read_cpuinfo() -> str:
    """The text of /proc/cpuinfo ('' where there is none, e.g. macOS)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> set[str]:
    """Every word of the 'flags' lines of a /proc/cpuinfo text."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return flags


def cpu_has_bf16(read: Callable[[], str] | None = None) -> bool:
    """Whether the CPU has bf16 arithmetic units (any of CPU_BF16_FLAGS); `read` defaults to read_cpuinfo,
    looked up at the call (so a test can replace it)."""
    return bool(cpu_flags((read or read_cpuinfo)()) & set(CPU_BF16_FLAGS))


def on_cuda(device: str) -> bool:
    """Whether the Loop will run on a GPU: device 'auto' and CUDA present."""
    return device != "cpu" and torch.cuda.is_available()


def has_bf16(device: str, read: Callable[[], str] | None = None) -> bool:
    """Whether the hardware the run uses computes in bf16 natively."""
    if on_cuda(device):
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16(read)


def autocast_precision(requested: str, device: str = "auto", read: Callable[[], str] | None = None) -> str:
    """accelerate's mixed_precision for LoopConfig.mixed_precision `requested` on `device`.

    "bf16" without bf16 units → "no" with a warning (once per process); "auto" → "bf16" with units, else
    "no"; "no" and "fp16" pass through.
    """
    if requested not in ("bf16", "auto"):
        return requested
    if has_bf16(device, read):
        return "bf16"
    if requested == "bf16" and "bf16" not in _warned:
        _warned.add("bf16")
        where = "GPU" if on_cuda(device) else "CPU (no avx512_bf16 / amx_bf16 flag)"
        log.warning("mixed_precision bf16 requested but this %s has no bf16 units: using float32", where)
    return "no"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast block accelerate runs a prepared model's forward in (Accelerator.prepare_model), for the
    passes of models it did not prepare: a frozen reference, or a trunk called directly. Run under it they
    compute in the trained policy's precision, so that at step 0 a reference equal to the policy gives its
    log-probs exactly (a KL of 0, a DPO log-ratio of 0).

    precision: "no", "bf16" or "fp16" (autocast_precision's answer); device: where the model runs. bf16 is
    autocast on any device; fp16 only off the CPU (accelerate does not autocast fp16 on a CPU); "no" is a
    block that changes nothing.
    """
    device_type = torch.device(device).type
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision == "fp16" and device_type != "cpu":
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()
