"""Sampling throughput of tether's rollout engine (`tether.rollout.sample`, the hf engine) on the CPU.

    PYTHONPATH=. .venv/bin/python benchmarks/sampling.py [--model DIR] [--new-tokens 64] [--reps 3]

The rows are vs_trl.py's GRPO rollout: the last 300 characters of the first pairs' prompts (vs_trl's
selection of the HH-RLHF file), tokenised without a chat template, batch 8 in two layouts: 8 distinct
prompts, and 2 prompts × G 4 copies in a row (GRPO's; the copies share one prompt pass). Every row decodes
exactly --new-tokens tokens (no EOS stops a row), at temperature 1, top-p 1, so that tokens/s is new tokens
÷ wall time of the whole `sample` call, prompt pass included. `--bf16` times the fp32 model under bf16
autocast instead (what `train.mixed_precision=bf16` samples with), two ways: one autocast block around the
whole call, and one per forward pass (accelerate's wrapper of a prepared model's forward), where autocast's
cache of bf16 weight copies ends with each pass; bf16 pays only on a CPU with bf16 units
(`tether.precision.cpu_has_bf16`). Otherwise both as loaded (fp32) and with LoRA r 16 on every linear
layer (whose adapters `sample` merges while it decodes). The best of --reps runs after one warm-up; the load
average is printed before and after.

`--ragged` times the evaluation's case instead: the first 64 held-out problems of recipes/rlvr-arithmetic
through the model's chat template, sampled by the evaluator's own `sample_responses` in one batch of 64,
rows ending at their EOS (at most --new-tokens each), temperature 1: seconds of the whole call and the
response tokens drawn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vs_trl import DEFAULT_DATA, DEFAULT_MODEL, GRPO_PROMPT_CHARS, select_pairs  # noqa: E402


def prompts(data: str, n: int) -> list[str]:
    return [p["prompt"][-GRPO_PROMPT_CHARS:] for p in select_pairs(data, n)]


def tokens_per_s(model, tok, texts: list[str], new_tokens: int, reps: int, precision: str = "no") -> float:
    from tether.data import pad
    from tether.precision import autocast
    from tether.rollout import sample

    ids, mask = pad([tok(t)["input_ids"] for t in texts], tok.pad_token_id or 0, side="left")
    best = float("inf")
    for rep in range(reps + 1):  # the first is the warm-up
        start = time.perf_counter()
        with autocast(precision, "cpu"):
            sample(model, ids, mask, max_new_tokens=new_tokens, eos_token_id=-1, pad_token_id=0,
                   generator=torch.Generator().manual_seed(rep))
        if rep:
            best = min(best, time.perf_counter() - start)
    return len(texts) * new_tokens / best


def ragged(model, tok, new_tokens: int, reps: int) -> tuple[float, int]:
    """(best seconds of one evaluation sampling — `sample_responses`, the evaluator's own, responses decoded
    included — and the response tokens of the last) on 64 RLVR held-out problems in one batch."""
    from tether.data import load_prompts, tokenize_prompts
    from tether.instruments.evaluate import sample_responses

    test = Path(__file__).resolve().parents[1] / "recipes/rlvr-arithmetic/data/test.jsonl"
    items, _ = tokenize_prompts(load_prompts(str(test))[:64], tok, 256)
    best, drawn = float("inf"), 0
    for rep in range(reps + 1):  # the first is the warm-up
        start = time.perf_counter()
        s = sample_responses(model, tok, items, max_new_tokens=new_tokens, seed=0, batch_size=64)
        if rep:
            best = min(best, time.perf_counter() - start)
        drawn = sum(int(r.response_mask.sum()) for r in s.rollouts)
    return best, drawn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true",
                    help="under bf16 autocast, as train.mixed_precision=bf16 samples (no LoRA rows)")
    ap.add_argument("--ragged", action="store_true",
                    help="the evaluation's case: 64 RLVR problems, EOS stops")
    args = ap.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tether.config import LoRAConfig
    from tether.lora import add_adapters

    torch.set_num_threads(args.threads)
    path = os.path.expanduser(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    if args.ragged:
        load = os.getloadavg()[0]
        seconds, drawn = ragged(model, tok, args.new_tokens, args.reps)
        print(f"load average {load:.2f} → {os.getloadavg()[0]:.2f}; 64 RLVR problems, ≤ {args.new_tokens} "
              f"new tokens, EOS stops: {seconds:.2f} s, {drawn} response tokens "
              f"({drawn / seconds:.1f} tokens/s)")
        return 0
    distinct = prompts(args.data, 8)
    layouts = {"8 distinct prompts": distinct, "2 prompts × G 4": [p for p in distinct[:2] for _ in range(4)]}
    print(f"load average {os.getloadavg()[0]:.2f}; batch 8, {args.new_tokens} new tokens per row")
    if args.bf16:
        from tether.precision import cpu_has_bf16

        print(f"bf16 autocast; this CPU {'has' if cpu_has_bf16() else 'has no'} bf16 units")
        for name, texts in layouts.items():
            rate = tokens_per_s(model, tok, texts, args.new_tokens, args.reps, "bf16")
            print(f"fp32 weights, one bf16 autocast around the call, {name}: {rate:.1f} tokens/s")
        model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)  # as accelerate wraps it
        for name, texts in layouts.items():
            rate = tokens_per_s(model, tok, texts, args.new_tokens, args.reps)
            print(f"fp32 weights, bf16 autocast per forward pass, {name}: {rate:.1f} tokens/s")
        print(f"load average {os.getloadavg()[0]:.2f}")
        return 0
    for name, texts in layouts.items():
        print(f"fp32, {name}: {tokens_per_s(model, tok, texts, args.new_tokens, args.reps):.1f} tokens/s")
    torch.manual_seed(0)
    lora = add_adapters(model, LoRAConfig(r=16, alpha=32, target_modules=["all-linear"]))
    for name, texts in layouts.items():
        print(f"LoRA r 16, {name}: {tokens_per_s(lora, tok, texts, args.new_tokens, args.reps):.1f} tokens/s")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
