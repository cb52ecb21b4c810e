"""Bring real data into tether's formats, or make preference pairs from a policy's samples.

tether data import hh-rlhf FILE --out DIR [--test-fraction 0.2] [--seed N] [--skip-bad] [--harmful]
tether data pairs --policy DIR --prompts FILE --reward SPEC --out FILE [--per-prompt 1] [--noise 1.0]
                  [--max-new-tokens 48] [--temperature 1.0] [--seed 0] [--limit N] [--device cpu]

FILE: HH-RLHF records (.jsonl or .jsonl.gz, {"chosen", "rejected"} transcripts). Writes DIR/train.jsonl and
DIR/test.jsonl (preference pairs with the shared conversation as a messages prompt, the trainers' format),
DIR/prompts.jsonl (the test split's prompts) and DIR/summary.json (counts, skipped records by reason), and
prints the counts. The method: tether.hh_rlhf.

`pairs`: two samples of the policy per prompt, scored by a reward (a reward model directory, 'gold' or
'module:function', e.g. tether.sentiment:vader), the first chosen with probability σ((g_a − g_b) / noise);
writes {"prompt", "chosen", "rejected", "gold_chosen", "gold_rejected"} records to FILE and a summary to
FILE's name with .summary.json (pairs, share whose chosen side scores higher). The method:
tether.reward_pairs.
"""

from __future__ import annotations

import argparse

from tether.hh_rlhf import import_hh_rlhf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="data_command", required=True, metavar="{import,pairs}", parser_class=type(parser)
    )
    p = sub.add_parser("import", help="convert a public preference data set", description=__doc__)
    p.add_argument("format", choices=["hh-rlhf"], help="the data set's format")
    p.add_argument("file", help="the data file (.jsonl or .jsonl.gz)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of pairs held out (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave malformed records out (counted in summary.json) instead of stopping")
    p.add_argument("--harmful", action="store_true",
                   help="label every prompt harmful in prompts.jsonl (red-team splits such as harmless-base)")
    p = sub.add_parser("pairs", help="preference pairs of a policy's samples labelled by a reward",
                       description=__doc__)
    p.add_argument("--policy", required=True, metavar="DIR", help="the model to sample (e.g. the SFT model)")
    p.add_argument("--prompts", required=True, metavar="FILE", help="prompt records ({\"prompt\"} per line)")
    p.add_argument("--reward", required=True, metavar="SPEC",
                   help="reward model directory, 'gold' or 'module:function' (e.g. tether.sentiment:vader)")
    p.add_argument("--out", required=True, metavar="FILE", help="the pairs file to write (.jsonl)")
    p.add_argument("--per-prompt", type=int, default=1, help="pairs per prompt (default 1)")
    p.add_argument("--noise", type=float, default=1.0,
                   help="Bradley-Terry temperature: P(a chosen) = σ((g_a − g_b) / noise); 0 always takes the "
                   "higher score (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="longest sampled reply (default 48)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and the labels (default 0)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--device", default="cpu", help="where the policy samples (default cpu)")


def run(args) -> int:
    if args.data_command == "pairs":
        return run_pairs(args)
    s = import_hh_rlhf(args.file, args.out, args.test_fraction, args.seed, args.skip_bad,
                       True if args.harmful else None)
    print(f"{s['pairs']} pairs ({s['distinct_prompts']} distinct prompts): {s['train']} train, "
          f"{s['test']} test, {s['test_prompts']} test prompts; {s['skipped']} records skipped -> {args.out}")
    return 0


def run_pairs(args) -> int:
    from tether.reward_pairs import make_reward_pairs, summary_path

    a = args
    s = make_reward_pairs(a.policy, a.prompts, a.reward, a.out, per_prompt=a.per_prompt, noise=a.noise,
                          max_new_tokens=a.max_new_tokens, seed=a.seed, temperature=a.temperature,
                          limit=a.limit, device=a.device)
    print(f"{s['pairs']} pairs ({s['dropped_same_samples']} dropped: both samples the same); chosen scores "
          f"higher in {s['chosen_higher']:.3f} (expected {s['expected_chosen_higher']:.3f} at noise "
          f"{s['noise']:g}, {s['ties']} ties); mean score {s['gold_mean']:.3f} ({s['wall_seconds']:.1f}s) "
          f"-> {a.out}, {summary_path(a.out)}")
    return 0
