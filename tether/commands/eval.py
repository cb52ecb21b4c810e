"""Every instrument of a policy against its base: KL, win-rate, refusal, sycophancy, capability, perplexity,
length, repetition, the reward model's accuracy, calibration and scale, and the reward-hacking verdict.

Example: tether eval --policy runs/demo/ppo/model --base runs/demo/sft/model --rm runs/demo/rm/model \\
             --lab runs/demo/lab --out runs/demo/eval
         tether eval --policy my/policy --base my/sft --rm my/rm --prompts held_out.jsonl --out eval \\
             hacking.length_ratio_max=2.0
         tether eval --policy runs/dpo/model --base ~/.cache/tether/models/smollm2-135m-instruct \\
             --out eval probe_max_items=50
On a real model (no lab) the shipped probe sets measure refusal, over-refusal, sycophancy and capability of
both models (tether/instruments/behaviour_probes.py; probes=never to read the prompts' fields instead), so
--policy and --base are enough; --prompts with --rm or --judge add KL, win-rate, length and repetition.
Writes OUT/summary.json, OUT/samples.jsonl, OUT/probes.jsonl (every probe reply and its reading) and
OUT/report.html and prints the table with verdicts. OUT must be
new, empty or an earlier `tether eval` output: any other directory is refused, not overwritten.
Instruments without their inputs are reported as not measured. Exit code 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tether.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="DIR", required=True, help="the trained policy (HF causal LM)")
    parser.add_argument("--base", metavar="DIR", required=True, help="the model it started from (e.g. SFT)")
    parser.add_argument("--rm", metavar="DIR", help="reward model: proxy reward and the RM instruments")
    parser.add_argument("--lab", metavar="DIR", help="a built lab: default prompts, pairs, demos, gold")
    parser.add_argument("--prompts", metavar="FILE", help="held-out prompts JSONL (default: the lab's)")
    parser.add_argument("--prefs", metavar="FILE", help="held-out preference pairs for the RM's accuracy")
    parser.add_argument("--demos", metavar="FILE", help="held-out demonstrations for perplexity")
    parser.add_argument("--judge", metavar="DIR|URL",
                        help="the pairwise judge of the win-rate: a causal LM directory, or an "
                        "OpenAI-compatible server's base URL (http://HOST:PORT/v1) with judge_model=NAME")
    parser.add_argument("--beta", type=float, help="the policy's KL coefficient (default: from its run)")
    parser.add_argument(
        "--gold", metavar="MODE",
        help="the gold reward that judges and is reported: auto (default) the lab's when every prompt is a "
        "lab prompt, lab the lab's always (other prompts are an error), none no gold (the RM or --judge "
        "judges), or module:function, a gold reward on real text that gets the prompts' columns "
        "(e.g. tether.verifiable:correct)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default: runs/eval-<time>)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="fields of tether.instruments.eval_dirs.EvalConfig, e.g. max_prompts=100 "
        "hacking.kl_max=50 device=cuda probe_max_items=50 probes=never",
    )


def run(args: argparse.Namespace) -> int:
    from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs
    from tether.instruments.report import terminal_table

    keys = ("rm", "lab", "prompts", "prefs", "demos", "judge", "beta", "gold")
    flags = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    cfg = load_config(EvalConfig, None, list(args.overrides), values=flags)  # checked as the overrides are
    out = Path(args.out) if args.out else Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = evaluate_policy_dirs(args.policy, args.base, cfg, out=str(out))
    print(terminal_table(summary))
    print(f"\nsummary: {out / 'summary.json'}   report: {out / 'report.html'}")
    return 0
