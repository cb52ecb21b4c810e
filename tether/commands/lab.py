"""Build or score the embedded lab: a world with a known gold reward, biased labelers and a tiny base model.

tether lab build --out DIR [--seed N] [--config lab.yaml] [key=value ...]
tether lab score --lab DIR --data FILE.jsonl [--out FILE.jsonl]
tether lab compare --lab DIR --policy MODEL_DIR --out DIR [--prompts N] [--samples K] [--seed N]
"""

from __future__ import annotations

import argparse

from tether.lab import LabConfig, apply_overrides, build_lab, score_file
from tether.lab.world import FAMILIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="lab_command", required=True, metavar="{build,score,compare}", parser_class=type(parser)
    )
    build = sub.add_parser(
        "build",
        help="write the base model, data sets and card.json to a directory",
        description="Build the lab: DIR/pretrained (the stage-0 model), DIR/data/{sft,prefs,prompts}."
        "{train,test}.jsonl, DIR/lab.yaml and DIR/card.json. Same seed -> byte-identical data files.",
    )
    build.add_argument("--out", required=True, help="directory to write the lab into")
    build.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    build.add_argument("--config", help="lab config YAML (default: the built-in one, as in configs/lab.yaml)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. prefs_train=500 labelers.0.temperature=0.3",
    )
    build.set_defaults(lab_run=run_build)

    score = sub.add_parser(
        "score",
        help="add the gold reward and its parts to each record of a JSONL file",
        description="Add `gold` and `gold_parts` to each {prompt, completion} record of a JSONL file "
        "and print the mean gold reward per family.",
    )
    score.add_argument("--lab", required=True, help="a built lab directory")
    score.add_argument("--data", required=True, help="JSONL of {prompt, completion} (or chosen/rejected)")
    score.add_argument("--out", help="where to write the scored records (default: DATA.scored.jsonl)")
    score.set_defaults(lab_run=run_score)

    compare = sub.add_parser(
        "compare",
        help="label pairs of a policy's own samples with the lab's labelers (comparison data)",
        description="Sample K responses per fresh lab prompt from a policy, pair the first two that differ "
        "in gold reward and label them with the lab's labelers, as InstructGPT's labelers compared SFT "
        "outputs. Writes OUT/prefs.policy.jsonl, OUT/prefs.train.jsonl (the lab's pairs + these) and "
        "OUT/summary.json.",
    )
    compare.add_argument("--lab", required=True, help="a built lab directory")
    compare.add_argument("--policy", required=True, help="the policy's model directory (e.g. RUN/sft/model)")
    compare.add_argument("--out", required=True, help="directory to write the pairs into")
    compare.add_argument("--prompts", type=int, default=3000, help="prompts to sample (default 3000)")
    compare.add_argument("--samples", type=int, default=4, help="samples per prompt (default 4)")
    compare.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    compare.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    compare.set_defaults(lab_run=run_compare)


def run(args: argparse.Namespace) -> int:
    return args.lab_run(args)


def run_build(args: argparse.Namespace) -> int:
    config = LabConfig.from_yaml(args.config) if args.config else LabConfig()
    if args.overrides:
        config = apply_overrides(config, args.overrides)
    result = build_lab(args.out, config, seed=args.seed, progress=not args.quiet)
    card = result.card
    print(f"lab written to {result.paths.root}")
    print(f"  {'file':<14}" + "".join(f"{f:>9}" for f in ("all", *FAMILIES)))
    for name, counts in card["counts"].items():
        print(f"  {name:<14}" + "".join(f"{counts[f]:>9}" for f in ("all", *FAMILIES)))
    agreement = card["agreement"]
    per_family = "  ".join(f"{f} {v['value']:.3f}" for f, v in agreement["per_family"].items() if v["n"])
    print(
        f"  labeler-gold agreement {agreement['overall']['value']:.3f} (n={agreement['overall']['n']}): "
        f"{per_family}"
    )
    effects = "  ".join(f"{b} {e['effect']:+.3f}" for b, e in card["bias_effects"].items() if e["n"])
    print(f"  bias effects (labels minus gold, picking the side with more): {effects}")
    model = card["model"]
    print(
        f"  base model: {model['parameters']:,} parameters, pretraining loss "
        f"{model['pretrain_loss_first']:.2f} -> {model['pretrain_loss_last']:.2f}"
    )
    times = result.timings
    print(
        f"  wall time {times['total']:.1f}s (pretraining {times['pretrain']:.1f}s, "
        f"preference pairs {times['prefs']:.1f}s)"
    )
    return 0


def run_score(args: argparse.Namespace) -> int:
    out, means = score_file(args.lab, args.data, args.out)
    print(f"scored records written to {out}")
    print(f"  {'family':<10}{'n':>7}{'mean gold':>11}")
    for family, m in means.items():
        print(f"  {family:<10}{m['n']:>7}{m['mean']:>11.3f}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from tether.lab.compare import compare_samples

    a = args
    s = compare_samples(a.lab, a.policy, a.out, a.prompts, a.samples, a.seed, a.temperature)
    print(
        f"{s['pairs']} pairs of policy samples written to {args.out}/prefs.policy.jsonl "
        f"({s['dropped_all_tied']} prompts dropped: all samples tied on gold); with the lab's "
        f"{s['lab_pairs']} pairs in {args.out}/prefs.train.jsonl"
    )
    agree = s["agreement"]
    print(f"  labeler-gold agreement {agree['value']:.3f} (n={agree['n']}), {s['wall_seconds']:.1f}s")
    return 0
