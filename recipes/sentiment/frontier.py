"""The controlled-sentiment frontier from a run.sh output directory: table and plot.

    python recipes/sentiment/frontier.py OUT                      # OUT/frontier.{md,json,png}
    python recipes/sentiment/frontier.py OUT --readme recipes/sentiment/README.md

Reads every run's summary: OUT/<method>/beta-<β>/summary.json (training wall time), its evaluation
OUT/eval/<method>-beta-<β>/{summary.json,samples.jsonl} (`tether eval`: KL from the base, RM reward, the
reward-hacking verdict, and the held-out samples), OUT/best_of_n/summary.json, and the base model's row from
the evaluations' base samples (the same samples in every evaluation: one seed). The gold reward is VADER's
compound score (tether.sentiment:vader) of each held-out sample, recomputed here from samples.jsonl, so
that every method is scored alike: mean and 95 % interval mean ± 1.96·s/√n over the prompts.
--readme FILE replaces the text between `<!-- figures:sentiment -->` and `<!-- /figures:sentiment -->` in FILE
with the table and copies the plot beside FILE (frontier.png); given again, it writes the same block into
another FILE too, linking that one copy of the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # figure_blocks

from figure_blocks import read_for_write, wrap, write_blocks  # noqa: E402

from tether.errors import TetherError  # noqa: E402
from tether.instruments.plots import _pyplot  # noqa: E402
from tether.instruments.rm_accuracy import rm_accuracy  # noqa: E402
from tether.instruments.stats import mean_stderr, pearson  # noqa: E402
from tether.sentiment import vader  # noqa: E402

METHODS = ("dpo", "ppo", "rloo", "grpo")
Z95 = 1.96


def gold_interval(texts: list[str]) -> tuple[float, float, int]:
    """(mean VADER score, half-width of its 95 % interval, n) of the texts."""
    mean, stderr = mean_stderr(vader(None, texts))
    return mean, Z95 * stderr, len(texts)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def beta_of(run: Path) -> float:
    return float(run.name.removeprefix("beta-"))


def policy_rows(out: Path) -> tuple[list[dict], list[str] | None]:
    """(one row per evaluated DPO/PPO/RLOO/GRPO run, the base samples of the first evaluation)."""
    rows, base = [], None
    for method in METHODS:
        for run in sorted((out / method).glob("beta-*"), key=beta_of):
            ev = out / "eval" / f"{method}-{run.name}"
            if not (ev / "summary.json").is_file():
                continue
            summary = json.loads((ev / "summary.json").read_text())
            samples = read_jsonl(ev / "samples.jsonl")
            base = base or [s["base"] for s in samples]
            gold, half, n = gold_interval([s["policy"] for s in samples])
            ins = summary["instruments"]
            kl, hacking = ins.get("kl_from_base") or {}, ins.get("reward_hacking") or {}
            train = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
            rows.append({
                "method": method, "setting": "β", "value": beta_of(run), "gold": gold, "gold_half": half,
                "n": n, "kl": kl.get("value"), "kl_stderr": kl.get("stderr"),
                "rm": (summary.get("rewards", {}).get("policy") or {}).get("proxy"),
                "train_seconds": train.get("wall_seconds"), "eval_seconds": summary.get("wall_seconds"),
                "hacking": hacking.get("value"), "hacking_reasons": hacking.get("reasons", []),
            })
    return rows, base


def best_of_n_rows(out: Path) -> list[dict]:
    path = out / "best_of_n" / "summary.json"
    if not path.is_file():
        return []
    summary = json.loads(path.read_text())
    return [{"method": "best-of-n", "setting": "n", "value": r["n"], "gold": r["gold_reward"],
             "gold_half": Z95 * r["gold_stderr"], "n": r["prompts"], "kl": r["kl"], "kl_stderr": 0.0,
             "rm": r["proxy_reward"], "train_seconds": None, "eval_seconds": summary["wall_seconds"],
             "hacking": None, "hacking_reasons": []} for r in summary["rows"]]


def collect(out: str | Path) -> list[dict]:
    """Every row: the base, each evaluated run, each n of best-of-n."""
    out = Path(out)
    rows, base = policy_rows(out)
    head = []
    if base:
        gold, half, n = gold_interval(base)
        head = [{"method": "base", "setting": "", "value": None, "gold": gold, "gold_half": half, "n": n,
                 "kl": 0.0, "kl_stderr": 0.0, "rm": None, "train_seconds": None, "eval_seconds": None,
                 "hacking": None, "hacking_reasons": []}]
    return head + rows + best_of_n_rows(out)


def _num(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def table(rows: list[dict]) -> str:
    """The markdown table: gold with its interval, the change from the base, KL, RM reward, times."""
    base = next((r["gold"] for r in rows if r["method"] == "base"), None)
    lines = ["| method | β or n | VADER gold [95 % interval] | Δ gold vs base | KL from base (nats) | "
             "RM reward | train s | eval s | hacking flagged |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        setting = "" if r["value"] is None else f"{r['setting']} = {r['value']:g}"
        gold = f"{r['gold']:+.3f} [{r['gold'] - r['gold_half']:+.3f}, {r['gold'] + r['gold_half']:+.3f}]"
        delta = "–" if base is None or r["method"] == "base" else f"{r['gold'] - base:+.3f}"
        kl = _num(r["kl"], ".2f") + (f" ± {r['kl_stderr']:.2f}" if r["kl_stderr"] else "")
        flag = {None: "–", True: "yes: " + ", ".join(r["hacking_reasons"]), False: "no"}[r["hacking"]]
        lines.append(f"| {r['method']} | {setting} | {gold} | {delta} | {kl} | {_num(r['rm'], '.3f')} | "
                     f"{_num(r['train_seconds'], '.0f')} | {_num(r['eval_seconds'], '.0f')} | {flag} |")
    n = max((r["n"] for r in rows), default=0)
    return "\n".join(lines) + f"\n\nn = {n} held-out prompts per row (KL ± its standard error).\n"


def rm_follows_gold(pairs: list[dict], score) -> dict:
    """How closely the reward model follows VADER itself on the held-out pairs (`tether data pairs` stores
    both responses' VADER scores): Pearson's r between `score(prompts, responses)` and VADER over the 2n
    responses (None when either side is constant), and the RM's accuracy (ties wrong) on the pairs ordered
    by VADER, its ties left out. The RM's own accuracy counts agreement with the noisy labels instead; these
    say what a policy optimising the RM is pushed towards."""
    n = len(pairs)
    responses = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    gold = [p["gold_chosen"] for p in pairs] + [p["gold_rejected"] for p in pairs]
    rm = [float(x) for x in score([p["prompt"] for p in pairs] * 2, responses)]
    higher = [(i, n + i) if gold[i] > gold[n + i] else (n + i, i) for i in range(n) if gold[i] != gold[n + i]]
    ordered = rm_accuracy([rm[h] for h, _ in higher], [rm[lo] for _, lo in higher])
    return {"r": pearson(rm, gold), "order_agrees": ordered["value"], "pairs": ordered["n"],
            "responses": 2 * n}


def rm_follows_gold_of(out: Path) -> dict | None:
    """`rm_follows_gold` for OUT's reward model on OUT/pairs/test.jsonl; None before both exist."""
    from tether.rewards import load_reward

    model, pairs = out / "rm" / "model", out / "pairs" / "test.jsonl"
    if not (model.is_dir() and pairs.is_file()):
        return None
    return rm_follows_gold(read_jsonl(pairs), load_reward(str(model)))


def provenance(out: Path, follows: dict | None = None) -> str:
    """What the table rests on: the base model's held-out mean over its pair samples, the reward model's
    held-out accuracy and how closely it follows VADER (`rm_follows_gold`), the whole recipe's time (the
    sum of every step's own wall time, so a resumed run counts only work done) and, from
    OUT/invocations.jsonl (run.sh), the commit, date and machine of each invocation."""
    test, rm = out / "pairs" / "test.summary.json", out / "rm" / "summary.json"
    steps = [out / "pairs" / "train.summary.json", test, rm, *sorted(out.glob("*/beta-*/summary.json")),
             *sorted((out / "eval").glob("*/summary.json")), out / "best_of_n" / "summary.json"]
    summaries = {path: json.loads(path.read_text()) for path in steps if path.is_file()}  # each read once
    parts = []
    if test in summaries:
        t = summaries[test]
        parts.append(f"Base model's held-out VADER mean over its {2 * t['pairs']} pair samples "
                     f"(OUT/pairs/test.summary.json): {t['gold_mean']:+.3f}.")
    acc = (summaries[rm]["instruments"].get("rm_test_accuracy") or {}) if rm in summaries else {}
    if acc.get("value") is not None:
        parts.append(f"Reward model's held-out accuracy {acc['value']:.3f} (n = {acc['n']}).")
    if follows:
        parts.append(f"Its scores correlate {_num(follows['r'], '.2f')} (Pearson) with VADER's over the "
                     f"{follows['responses']} held-out pair responses, and it orders "
                     f"{follows['order_agrees']:.3f} of the {follows['pairs']} untied pairs as VADER does.")
    seconds = sum(s.get("wall_seconds") or 0.0 for s in summaries.values())
    parts.append(f"The recipe's {len(summaries)} steps took {seconds / 60:.1f} minutes in all (the sum of "
                 "their own wall times).")
    runs = out / "invocations.jsonl"
    if runs.is_file():
        for line in read_jsonl(runs):
            parts.append(f"run.sh started {line['date']} at commit {line['commit']}, {line['cores']} cores "
                         f"({line['cpu']}), load average {line['load']}.")
    return wrap(" ".join(parts))


def plot(rows: list[dict], path: Path) -> Path:
    """Gold reward against KL from the base, one line per method, 95 % intervals as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method in ("base", *METHODS, "best-of-n"):
        pts = sorted((r["kl"], r["gold"], r["gold_half"], r["value"]) for r in rows
                     if r["method"] == method and r["kl"] is not None)
        if not pts:
            continue
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    fmt="--s" if method == "best-of-n" else "-o", capsize=3, markersize=4, label=method)
        for kl, gold, _, value in pts:
            if value is not None:
                ax.annotate(f"{'n' if method == 'best-of-n' else 'β'}={value:g}", (kl, gold), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("KL(π‖π_base) on held-out prompts (nats)")
    ax.set_ylabel("VADER sentiment of the continuation")
    ax.set_title("controlled sentiment: gold reward against KL", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def write_readmes(readmes: list[Path], text: str, png: Path) -> None:
    """`text` and the plot in each README's sentiment block: the plot is copied beside the first README as
    frontier.png, and every block links that one copy by its path from its own README."""
    for readme in readmes:  # every README's markers checked before anything is written
        read_for_write(str(readme), ["sentiment"])
    copy = readmes[0].parent / "frontier.png"
    shutil.copyfile(png, copy)
    for readme in readmes:
        link = Path(os.path.relpath(copy.resolve(), readme.parent.resolve())).as_posix()
        write_blocks(readme, {"sentiment": f"{text}\n![frontier]({link})"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="run.sh's output directory")
    p.add_argument("--readme", action="append", default=[],
                   help="a README whose results block to replace (again for another README)")
    a = p.parse_args(argv)
    out = Path(a.out)
    rows = collect(out)
    if not rows:
        print(f"{out}: no evaluated runs yet", file=sys.stderr)
        return 1
    text = table(rows) + "\n" + provenance(out, rm_follows_gold_of(out)) + "\n"
    (out / "frontier.md").write_text(text, encoding="utf-8")
    (out / "frontier.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    png = plot(rows, out / "frontier.png")
    if a.readme:
        try:
            write_readmes([Path(r) for r in a.readme], text, png)
        except TetherError as e:
            print(f"frontier.py: error: {e}", file=sys.stderr)
            return 2
    print(text, end="")
    print(f"{out / 'frontier.md'}  {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
