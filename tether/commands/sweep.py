"""Stage 3 once per β on a shared lab, SFT model and reward model; each run evaluated against SFT, with
best-of-n against the same reward model as the reference curve, and the β to use recommended.

Example: tether sweep --betas 0.001 0.003 0.01 0.03 0.1 0.3 --algo ppo --out runs/sweep
         tether sweep --betas 0.03 0.1 --reuse runs/demo --out runs/s2   (lab, SFT, RM of a finished run)
         tether sweep --betas 0.05 0.1 --algo dpo sft.train.epochs=2   (stage overrides as in tether run)
Writes OUT/beta-<β>/ (the run and its evaluation), OUT/sweep.json, OUT/report.html (frontier plot) and
OUT/summary.md. Run it again with the same OUT to continue: finished betas are skipped.
The recommendation: the β with the best gold reward (win-rate where there is no gold) not flagged as reward
hacking.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tether.errors import TetherError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--betas", nargs="+", required=True, metavar="BETA", help="KL coefficients (in the algo's units)"
    )
    parser.add_argument("--algo", choices=("ppo", "grpo", "rloo", "dpo"), help="stage 3 (default ppo)")
    parser.add_argument("--out", metavar="DIR", help="sweep directory (default: runs/sweep-<time>)")
    parser.add_argument("--lab", metavar="DIR", help="use this built lab instead of building one")
    parser.add_argument("--reuse", metavar="RUN_DIR", help="a finished `tether run`: its lab, SFT and RM")
    parser.add_argument("--config", metavar="FILE.yaml", help="run config (tether.pipeline.RunConfig)")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument(
        "--best-of-n", nargs="*", default=["1", "2", "4", "8", "16", "32", "64"], metavar="N",
        help="best-of-n reference points (none: no curve)",
    )
    parser.add_argument("--best-of-n-prompts", type=int, default=200, help="held-out prompts for best-of-n")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. ppo.iterations=30, sft.train.epochs=2"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from tether.commands.run import run_config
    from tether.sweep import run_sweep

    torch.set_num_threads(1)  # the lab's models are small: one thread is the fastest on CPU
    # KEY=VALUE overrides written after --betas or --best-of-n land in those lists: take them back out
    overrides = [*args.overrides, *(x for x in [*args.betas, *args.best_of_n] if "=" in x)]
    try:
        betas = [float(x) for x in args.betas if "=" not in x]
        best_of_n = [int(x) for x in args.best_of_n if "=" not in x]
    except ValueError as e:
        raise TetherError(f"--betas takes numbers, --best-of-n integers: {e}") from None
    cfg = run_config(args, overrides)
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep = run_sweep(
        cfg,
        betas,
        out,
        reuse=args.reuse,
        best_of_n=best_of_n,
        best_of_n_prompts=args.best_of_n_prompts,
        progress=not args.no_progress,
    )
    print()
    print((out / "summary.md").read_text())
    print(f"sweep: {out / 'sweep.json'}   report: {out / 'report.html'}")
    return 0 if sweep["runs"] else 1
