"""Constitutional AI: AI preference labels (RL-CAI) and critique-revision demonstrations (SL-CAI).

tether cai label --constitution FILE --judge lab|llm:MODEL_DIR --prompts FILE --policy DIR --out DIR
tether cai label --constitution FILE --judge llm:MODEL_DIR --pairs PREFS.jsonl --out DIR   (e.g. HH-RLHF)
tether cai revise --constitution FILE --critic lab|llm:MODEL_DIR --prompts FILE --policy DIR --out DIR
Then: tether rm data.train=OUT/prefs.jsonl data.use_soft_labels=true ... (or tether dpo), and
      tether sft data.train=OUT/sft.jsonl ...
"""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--constitution", metavar="FILE.yaml", help="default: tether/configs/constitution.yaml")
    p.add_argument("--prompts", metavar="FILE.jsonl", help="prompts ({\"prompt\"}) to sample the policy on")
    p.add_argument("--policy", metavar="DIR", help="the policy's model directory (e.g. RUN/sft/model)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest sampled reply (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="policy sampling temperature (default 1)")
    p.add_argument("--limit", type=int, help="use only the first N prompts or pairs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cai_command", required=True, metavar="{label,revise}",
                                parser_class=type(parser))
    label = sub.add_parser(
        "label",
        help="label pairs with a constitutional judge (RL-CAI) and write a card",
        description="Label pairs of a policy's samples (--prompts, --policy) or a preference file's pairs "
        "(--pairs) with a judge following the constitution, one principle drawn per pair, asked in both "
        "orders. Writes OUT/prefs.jsonl (soft labels in `label`), OUT/card.json, OUT/card.txt and "
        "OUT/summary.json.",
    )
    _common(label)
    label.add_argument("--judge", required=True, help="lab (the lab's rater) or llm:MODEL_DIR")
    label.add_argument("--pairs", metavar="FILE.jsonl", help="label these {prompt, chosen, rejected} pairs")
    label.add_argument("--samples", type=int, default=2, help="samples per prompt (default 2)")
    label.add_argument("--lab", metavar="DIR", help="a built lab: compare with its simulated labelers too")
    label.set_defaults(cai_run=run_label)

    revise = sub.add_parser(
        "revise",
        help="critique and revise a policy's replies per principle (SL-CAI) into SFT records",
        description="Sample one reply per prompt from the policy, critique and revise it once per principle "
        "and write the final revisions to OUT/sft.jsonl ({prompt, completion}) for tether sft.",
    )
    _common(revise)
    revise.add_argument("--critic", required=True, help="lab (the lab rater picks edits) or llm:DIR")
    revise.add_argument("--critic-tokens", type=int, default=128, help="longest critique/revision (128)")
    revise.set_defaults(cai_run=run_revise)


def run(args: argparse.Namespace) -> int:
    return args.cai_run(args)


def run_label(args: argparse.Namespace) -> int:
    from tether.cai import run_labelling
    from tether.cai.card import card_text

    a = args
    s = run_labelling(a.constitution, a.judge, a.out, prompts=a.prompts, policy=a.policy, pairs=a.pairs,
                      lab=a.lab, samples=a.samples, seed=a.seed, max_new_tokens=a.max_new_tokens,
                      temperature=a.temperature, limit=a.limit)
    print(card_text(s["card"]), end="")
    print(f"labels: {a.out}/prefs.jsonl   card: {a.out}/card.json   ({s['wall_seconds']:.1f}s)")
    return 0


def run_revise(args: argparse.Namespace) -> int:
    from tether.cai import run_revision

    a = args
    s = run_revision(a.constitution, a.critic, a.out, prompts=a.prompts, policy=a.policy, seed=a.seed,
                     max_new_tokens=a.max_new_tokens, temperature=a.temperature, limit=a.limit,
                     critic_tokens=a.critic_tokens)
    gold = f", mean gold {s['gold_initial']:.3f} -> {s['gold_revised']:.3f}" if "gold_initial" in s else ""
    print(f"{s['records']} records ({s['changed']} revised{gold}) written to {a.out}/sft.jsonl "
          f"({s['wall_seconds']:.1f}s)")
    return 0
