"""Best-of-n against the reward model, VADER as gold: one row per n in OUT/summary.json.

    python recipes/sentiment/best_of_n.py --model MODEL --rm OUT/rm/model \\
        --prompts recipes/sentiment/data/prompts.test.jsonl --out OUT/best_of_n --ns 1 4 16

Each held-out prompt is sampled max(ns) times from the base model once; each n's figures are exact
expectations over the n-subsets of those samples, its KL from the base log n − (n − 1)/n
(tether.instruments.best_of_n). The samples' seed is `tether eval`'s (EVAL_SEED_OFFSET) + 2, as in
`tether sweep`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tether.files import write_json
from tether.instruments.best_of_n import best_of_n_dirs
from tether.instruments.evaluate import EVAL_SEED_OFFSET

GOLD = "tether.sentiment:vader"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the base model directory")
    p.add_argument("--rm", required=True, help="the reward model directory (RUN/model of `tether rm`)")
    p.add_argument("--prompts", required=True, help="held-out prompts (.jsonl)")
    p.add_argument("--out", required=True, help="directory for summary.json")
    p.add_argument("--ns", type=int, nargs="+", default=[1, 4, 16], help="values of n (default 1 4 16)")
    p.add_argument("--max-prompts", type=int, default=120, help="prompts used (default 120)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="longest response (default 48)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    start = time.perf_counter()
    rows = best_of_n_dirs(a.model, a.rm, a.prompts, gold=GOLD, ns=sorted(set(a.ns)),
                          max_prompts=a.max_prompts, max_new_tokens=a.max_new_tokens,
                          seed=a.seed + EVAL_SEED_OFFSET + 2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", {"method": "best-of-n", "gold": GOLD, "rm": a.rm, "model": a.model,
                                      "rows": rows, "wall_seconds": time.perf_counter() - start})
    for r in rows:
        print(f"n={r['n']}: KL {r['kl']:.3f}, RM {r['proxy_reward']:.3f}, VADER {r['gold_reward']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
