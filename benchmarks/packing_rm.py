"""Seconds per reward-model step on HH-RLHF pairs, padded vs packed vs packed with length grouping.

    python benchmarks/packing_rm.py --data data/hh/train.jsonl --steps 13

`tether rm` itself (train_rm) on SmolLM2-135M-Instruct (`tether models pull smollm2-135m-instruct`), rows of
at most 256 tokens (longer pairs skipped, as in the README's HH run), 8 pairs a step, 4 pairs a forward
pass, fp32, no evaluation. Each mode is a separate process (its peak RSS its own) over the same batches
(seed 0); seconds per step come from metrics.jsonl (8 pairs / pairs_per_s) and the first step is left out
as warm-up. Modes: padded (tether.packing.padded(): every forward on the padded batch), packed (the
default), grouped (packed, and train.group_by_length=true).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("padded", "packed", "grouped")
MODEL = "~/.cache/tether/models/smollm2-135m-instruct"


def child(mode: str, data: str, model: str, steps: int, out: Path) -> None:
    from tether.config import RMConfig, load_config
    from tether.packing import padded
    from tether.trainers.rm import train_rm

    overrides = [f"model={Path(model).expanduser()}", f"data.train={data}", "data.test=null",
                 "data.max_length=256", "data.too_long=skip", "train.lr=2e-5", "train.batch_size=8",
                 "train.micro_batch_size=4", f"train.max_steps={steps}", "train.eval_every=0",
                 "train.save_every=0", "train.progress=false"]
    if mode == "grouped":
        overrides.append("train.group_by_length=true")
    cfg = load_config(RMConfig, None, overrides)
    with padded() if mode == "padded" else contextlib.nullcontext():
        train_rm(cfg, out)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    seconds = [8 / r["pairs_per_s"] for r in rows if r.get("kind") == "train"]
    timed = seconds[1:]
    print(json.dumps({"mode": mode, "s_per_step": sum(timed) / len(timed), "steps": seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a tether preference file, e.g. data/hh/train.jsonl")
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--steps", type=int, default=13, help="steps per mode (the first is warm-up)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.model, args.steps, Path(args.out))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            cmd = [sys.executable, __file__, "--child", mode, "--data", args.data, "--model", args.model,
                   "--steps", str(args.steps), "--out", str(Path(tmp) / mode)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{mode:<8} {r['s_per_step']:6.2f} s/step  peak RSS {r['peak_rss_gb']:.2f} GB  "
                  f"steps {' '.join(f'{s:.1f}' for s in r['steps'])}", flush=True)


if __name__ == "__main__":
    main()
