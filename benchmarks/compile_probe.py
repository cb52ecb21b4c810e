"""Does `torch.compile` pay on the CPU? SmolLM2-135M-Instruct, fp32, eager against compiled (inductor).

    PYTHONPATH=. .venv/bin/python benchmarks/compile_probe.py train --compile      # and without --compile
    PYTHONPATH=. .venv/bin/python benchmarks/compile_probe.py decode --compile

train: forward + backward of 4 random rows of 256 tokens (dense causal, SDPA), loss the mean logsumexp of
the logits; the first step (which compiles) is timed apart from 3 more. decode: a prompt pass of 8 rows of
80 random tokens, then 64 greedy decode steps at batch 8 with transformers' DynamicCache; the first call
(which compiles, with dynamic shapes for the growing cache) apart from 3 more. Each mode runs in its own
process; `torch.compile` wraps the model's trunk (`model.model`), the LM head stays eager.
"""

from __future__ import annotations

import argparse
import time

import torch

DEFAULT_MODEL = "~/.cache/tether/models/smollm2-135m-instruct"


def load(path: str, train: bool, compile_: bool):
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(Path(path).expanduser(), dtype=torch.float32)
    model.train(train)
    if compile_:
        model.model = torch.compile(model.model, dynamic=not train)
    return model


def train_step(model, ids: torch.Tensor) -> float:
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    model(input_ids=ids, use_cache=False).logits[:, :-1].logsumexp(-1).mean().backward()
    return time.perf_counter() - t


def decode(model, ids: torch.Tensor, new: int) -> float:
    """Seconds of `new` greedy decode steps after the prompt pass (not timed)."""
    from transformers import DynamicCache

    cache, n = DynamicCache(), ids.shape[1]
    with torch.no_grad():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for i in range(new):
            pos = torch.full_like(tok, n + i)
            out = model(input_ids=tok, past_key_values=cache, use_cache=True, position_ids=pos)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["train", "decode"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load(args.model, args.what == "train", args.compile)
    name = "compiled" if args.compile else "eager"
    if args.what == "train":
        ids = torch.randint(1000, 40000, (4, 256))
        print(f"train {name}: first step {train_step(model, ids):.1f} s, then",
              ", ".join(f"{train_step(model, ids):.2f}" for _ in range(3)), "s")
    else:
        ids, new = torch.randint(1000, 40000, (8, 80)), 64
        t = time.perf_counter()
        decode(model, ids, new)
        first = time.perf_counter() - t
        steps = [decode(model, ids, new) / new * 1e3 for _ in range(3)]
        print(f"decode {name}: first call {first:.1f} s, then", ", ".join(f"{s:.1f}" for s in steps),
              f"ms a step at batch 8 ({8e3 / min(steps):.1f} tokens/s at the best)")


if __name__ == "__main__":
    main()
