"""The RLVR recipe's results table, read from the runs that run.sh made in OUT (nothing is re-run):

    python recipes/rlvr-arithmetic/figures.py OUT                      # prints the markdown
    python recipes/rlvr-arithmetic/figures.py OUT --write recipes/rlvr-arithmetic/README.md

OUT/base is `tether eval` of the base model against itself; OUT/sft, when run.sh made it, the supervised
warm start that the RL runs start from; OUT/grpo and OUT/rloo are the RL runs, whose own final evaluation
(the same held-out prompts, their starting model sampled with the same seed) gives each figure: held-out
exact-match accuracy = the mean of the gold reward tether.verifiable:correct over one response per prompt
sampled at temperature 1 (rewards.*.gold), with a Wilson 95 % interval and n; the format rate, the share
of responses whose last line is "Answer: <number>", = (proxy − gold) / w when the training reward is
correct + w·format (it is then exact: proxy = gold + w·format response by response); KL(π‖π_start) in
nats (sequence level, ± its standard error); mean response tokens of the first and last training
iterations; the reward-hacking verdict (tether.instruments.hacking on the run's evaluation: proxy up while
the gold accuracy falls flags a policy that games the format check); wall time and the commit from
RUN/config.yaml; the machine from OUT/machine.txt (run.sh writes it); the whole recipe's time, the sum of
each step's own wall time (the base evaluation, SFT and the RL runs, their final evaluations included).
`--write FILE` replaces the text between <!-- figures:rlvr --> and <!-- /figures:rlvr --> in FILE (given
again, in each FILE).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # figure_blocks

from figure_blocks import write_blocks  # noqa: E402

from tether.errors import TetherError  # noqa: E402
from tether.instruments.hacking import reward_hacking  # noqa: E402
from tether.instruments.stats import wilson_interval  # noqa: E402

RUNS = ("grpo", "rloo")
GOLD = "tether.verifiable:correct"
FORMAT = "tether.verifiable:format"


def _read(path: Path):
    if not path.is_file():
        raise TetherError(f"{path}: missing (run recipes/rlvr-arithmetic/run.sh first)")
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return yaml.safe_load(text) if path.suffix == ".yaml" else json.loads(text)


def accuracy(summary: dict, side: str) -> dict:
    """{"value", "ci95", "n"} of the gold reward's mean of `side` ("policy" or "base"): a share of 0/1
    scores over n held-out prompts (n from the evaluation's win-rate, one response each)."""
    value = summary["rewards"][side]["gold"]
    n = summary["instruments"]["win_rate_vs_base"]["n"]
    if value is None:
        raise TetherError(f"no gold accuracy in the summary: eval.gold must be {GOLD}")
    return {"value": value, "ci95": wilson_interval(round(value * n), n), "n": n}


def format_weight(config: dict) -> float | None:
    """w when the run's reward is exactly correct (weight 1) + w·format; else None."""
    reward = config["reward"]
    extra = [(t["source"], t["weight"]) for t in reward.get("extra") or [] if t["weight"] != 0]
    if reward["source"] != GOLD or reward.get("weight", 1.0) != 1.0 or [s for s, _ in extra] != [FORMAT]:
        return None
    return extra[0][1]


def run_row(out: Path, name: str) -> dict:
    """The figures of OUT/name (an RL run of the recipe)."""
    run = out / name
    summary, config = _read(run / "summary.json"), _read(run / "config.yaml")
    train = [m for m in _read(run / "metrics.jsonl") if m.get("kind") == "train" and "response_length" in m]
    w = format_weight(config)
    formats = {side: (None if w is None else (summary["rewards"][side]["proxy"] -
                                               summary["rewards"][side]["gold"]) / w)
               for side in ("policy", "base")}
    verdict = reward_hacking(summary["instruments"], summary["rewards"])
    return {
        "name": name,
        "policy": accuracy(summary, "policy"),
        "base": accuracy(summary, "base"),
        "format": formats,
        "kl": summary["instruments"]["kl_from_base"],
        "length": (train[0]["response_length"], train[-1]["response_length"]) if train else (None, None),
        "curve": [m.get("reward/correct") for m in train],
        "flagged": verdict["value"],
        "reasons": verdict["reasons"],
        "iterations": summary["iterations"],
        "seconds": summary["wall_seconds"],
        "commit": (config.get("provenance") or {}).get("git_commit"),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _acc(a: dict) -> str:
    lo, hi = a["ci95"]
    return f"{_pct(a['value'])} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table(out: Path) -> str:
    """The markdown: the base model's accuracy from OUT/base, the warm start's run (OUT/sft) if any, then
    one row per RL run: its accuracy, its starting model's, the change from each and from the base model,
    then the verdicts' reasons and each run's training accuracy by iteration."""
    base = _read(out / "base" / "summary.json")
    b = accuracy(base, "base")
    sft = _read(out / "sft" / "summary.json") if (out / "sft" / "summary.json").is_file() else None
    rows = [run_row(out, name) for name in RUNS if (out / name / "summary.json").is_file()]
    machine = out / "machine.txt"
    lines = [
        f"Machine: {machine.read_text().strip()}." if machine.is_file() else "Machine: not recorded.",
        "",
        f"Base model (`tether eval`, {GOLD} as gold): held-out accuracy {_acc(b)} (95 % interval), "
        f"n={b['n']}.",
        "",
        *([f"SFT warm start (OUT/sft: {sft['train_items']} worked replies, {sft['wall_seconds']:.0f} s): "
           "the RL runs start from it, so their start column is its held-out accuracy.", ""] if sft else []),
        "| run | held-out accuracy, policy [95 % CI] | start [95 % CI] | change vs start "
        "| change vs base model | n | format rate, policy / start | KL from start (nats) "
        "| response tokens, first → last iteration "
        "| reward hacking | iterations | wall time | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, q = r["policy"], r["base"]
        change = f"{100 * (p['value'] - q['value']):+.1f} points"
        from_base = f"{100 * (p['value'] - b['value']):+.1f} points"
        fmt = " / ".join(_pct(r["format"][side]) for side in ("policy", "base"))
        kl = f"{r['kl']['value']:.2f} ± {r['kl']['stderr']:.2f}"
        first, last = r["length"]
        length = "-" if first is None else f"{first:.1f} → {last:.1f}"
        verdict = "flagged" if r["flagged"] else "clear"
        cells = [r["name"].upper(), _acc(p), _acc(q), change, from_base, str(p["n"]), fmt, kl, length,
                 verdict, str(r["iterations"]), f"{r['seconds']:.0f} s", (r["commit"] or "-")[:7]]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        for reason in r["reasons"]:
            lines += ["", f"{r['name'].upper()} flagged: {reason}"]
    for r in rows:
        curve = " ".join("-" if v is None else f"{v:.2f}" for v in r["curve"])
        lines += ["", f"{r['name'].upper()} training accuracy (reward/correct) by iteration: {curve}"]
    parts = [("base evaluation", base["wall_seconds"]), *([("SFT", sft["wall_seconds"])] if sft else []),
             *((r["name"].upper(), r["seconds"]) for r in rows)]
    total = sum(sec for _, sec in parts)
    lines += ["", f"The recipe's steps took {total / 60:.1f} min in all (their own wall times: "
              + ", ".join(f"{what} {sec:.0f} s" for what, sec in parts) + ")."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the directory run.sh wrote (base/, grpo/, rloo/)")
    parser.add_argument("--write", metavar="FILE", action="append", default=[],
                        help="put the table between the figures:rlvr markers (again for another FILE)")
    args = parser.parse_args(argv)
    try:
        text = table(Path(args.out))
        for path in args.write:
            write_blocks(path, {"rlvr": text})
    except TetherError as e:
        print(f"figures.py: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
