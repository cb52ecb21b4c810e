"""`tether rm probe`: search for responses the reward model scores beyond what the data or gold supports.

Example: tether rm probe --rm runs/x/rm/model --lab runs/x/lab --sft runs/x/sft/model --out runs/probe
Writes RUN/probe.json and RUN/report.html (the top adversarial responses with their RM score, gold reward
and the lab biases they lean on) and prints the table. The method: tether.instruments.probe.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tether.errors import TetherError

# dest -> default, for telling whether a probe option was given outside `tether rm probe`
PROBE_DEFAULTS = {"rm": None, "tokenizer": None, "lab": None, "prompts": None, "data": None, "sft": None,
                  "num_prompts": 16, "steps": 1000, "seconds": 120.0, "candidates": 48, "top_k": 16,
                  "max_tokens": 24, "top": 10}


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tether rm probe [options]", "search for responses the reward model "
                                  "over-scores (--out and --seed are shared with training)")
    g.add_argument("--rm", metavar="DIR", help="the reward model to probe (RUN/model of `tether rm`)")
    g.add_argument("--tokenizer", metavar="DIR", help="tokenizer, when it differs from the RM directory's")
    g.add_argument("--lab", metavar="DIR", help="a lab: its test prompts, demonstrations and gold reward")
    g.add_argument("--prompts", metavar="FILE", help="prompts JSONL to start from (default: the lab's test)")
    g.add_argument("--data", metavar="FILE", help="SFT or preference JSONL whose best RM score is the bar "
                   "(default: the lab's demonstrations)")
    g.add_argument("--sft", metavar="DIR", help="policy whose samples' mean gold is the gold bar (lab)")
    g.add_argument("--num-prompts", type=int, default=16, help="prompts searched, one chain each")
    g.add_argument("--steps", type=int, default=1000, help="search steps at most")
    g.add_argument("--seconds", type=float, default=120.0, help="search time at most, in seconds")
    g.add_argument("--candidates", type=int, default=48, help="variants scored per prompt and step")
    g.add_argument("--top-k", type=int, default=16, help="tokens per position the gradient proposes")
    g.add_argument("--max-tokens", type=int, default=24, help="longest response searched, in tokens")
    g.add_argument("--top", type=int, default=10, help="rows of the printed table")


def probe_options_given(args) -> list[str]:
    return [f"--{k.replace('_', '-')}" for k, v in PROBE_DEFAULTS.items() if getattr(args, k, v) != v]


def run_probe_command(args) -> int:
    from tether.instruments.probe_report import probe_table
    from tether.instruments.probe_run import run_probe

    extra = [*args.overrides[1:], *(["--config"] if args.config else []),
             *(["--resume"] if args.resume or args.resume_from else [])]
    if extra:
        raise TetherError(f"`tether rm probe` takes no {' '.join(extra)}")
    if not args.rm:
        raise TetherError("`tether rm probe` needs --rm DIR")
    out = Path(args.out or Path("runs") / f"probe-{time.strftime('%Y%m%d-%H%M%S')}")
    payload = run_probe(
        args.rm, out=out, tokenizer=args.tokenizer, lab=args.lab, prompts=args.prompts, data=args.data,
        sft=args.sft, num_prompts=args.num_prompts, steps=args.steps, seconds=args.seconds,
        seed=args.seed or 0, candidates=args.candidates, top_k=args.top_k, max_tokens=args.max_tokens,
    )
    print(probe_table(payload, top=args.top))
    print(f"tether rm probe: done, {out / 'probe.json'} and {out / 'report.html'}")
    return 0
