"""Bring real data into tether's formats.

tether data import hh-rlhf FILE --out DIR [--test-fraction 0.2] [--seed N] [--skip-bad] [--harmful]

FILE: HH-RLHF records (.jsonl or .jsonl.gz, {"chosen", "rejected"} transcripts). Writes DIR/train.jsonl and
DIR/test.jsonl (preference pairs with the shared conversation as a messages prompt, the trainers' format),
DIR/prompts.jsonl (the test split's prompts) and DIR/summary.json (counts, skipped records by reason), and
prints the counts. The method: tether.hh_rlhf.
"""

from __future__ import annotations

import argparse

from tether.hh_rlhf import import_hh_rlhf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="data_command", required=True, metavar="{import}", parser_class=type(parser)
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


def run(args) -> int:
    s = import_hh_rlhf(args.file, args.out, args.test_fraction, args.seed, args.skip_bad,
                       True if args.harmful else None)
    print(f"{s['pairs']} pairs ({s['distinct_prompts']} distinct prompts): {s['train']} train, "
          f"{s['test']} test, {s['test_prompts']} test prompts; {s['skipped']} records skipped -> {args.out}")
    return 0
