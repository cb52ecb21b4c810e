"""Regenerate the README's measured lab figures from runs, in the README's format, each block stamped with
the commit, date and machine it was measured on.

    PYTHONPATH=. .venv/bin/python benchmarks/readme_figures.py                    # print every block
    PYTHONPATH=. .venv/bin/python benchmarks/readme_figures.py --write README.md  # replace them in place
    PYTHONPATH=. .venv/bin/python benchmarks/readme_figures.py --only verify      # one block

Blocks, in the README's order, and the runs behind them (seed 0, all kept in --out, default
runs/readme-figures):
- default: `tether run` (run_pipeline(RunConfig())) into OUT/default: the instrument table, the mean
  rewards and the wall time per stage.
- betas: PPO at other β (the README's prose examples) on the default run's lab, SFT model and reward
  model, each evaluated against SFT as `tether run` does (OUT/betas/<settings>).
- algo: `tether run --algo grpo|rloo|dpo` on the default run's lab, SFT model and comparisons (and reward
  model; DPO is evaluated without it, as in `tether run --algo dpo`), OUT/algo/<algo>; the ppo row is the
  default run.
- verify: `tether verify` (tether.verify.verify) into OUT/verify.
- probe: `tether rm probe --rm RUN/rm/model --lab RUN/lab --steps 300 --seconds 1e9` on the default run
  (OUT/probe): the command's defaults but a fixed number of search steps instead of its 120-s limit, so
  that the figures do not depend on the machine's speed.
- sweep: `tether sweep --reuse OUT/default` with the README's betas and best-of-n (OUT/sweep).
The algo, betas, probe and sweep runs share the default run's lab, SFT model and reward model, so those
are trained once.

A part whose runs finished in an earlier call (OUT/stamps/<part>.json exists) is not run again: its block
is printed from the runs, with the stamp stored when they were made. Use a new --out to measure afresh.
`--write FILE` replaces the text between `<!-- figures:NAME -->` and `<!-- /figures:NAME -->` and nothing
else; it checks the markers before running anything. `--smoke` runs the same code on a tiny lab with tiny
stages (the test suite's settings) into another OUT: it checks the script, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # figure_blocks, beside this script

from figure_blocks import LAB_BLOCKS as PARTS  # noqa: E402  (the README's order)
from figure_blocks import (  # noqa: E402
    emit_blocks,
    md_row,
    md_rule,
    measured,
    num,
    read_for_write,
    stamp_line,
    wrap,
)

from tether.errors import TetherError  # noqa: E402

SWEEP_BETAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
# the README's prose examples of other β: each a list of `tether run` overrides (the default run is β 0.5)
BETA_RUNS = (("ppo.kl.beta=5",), ("ppo.kl.beta=0.05",), ("ppo.kl.beta=0.01", "ppo.iterations=100"))
PROBE_STEPS = 300  # the rm probe's search steps (its own default stops at 1000 steps or 120 s)
# --smoke: the test suite's reduced lab and stages (tests/test_pipeline.py)
SMOKE = [
    "lab.sft_train=120", "lab.sft_test=30", "lab.prefs_train=120", "lab.prefs_test=40",
    "lab.prompts_train=32", "lab.prompts_test=16", "lab.pretrain_steps=20", "lab.hidden_size=32",
    "lab.intermediate_size=64", "comparisons=24", "comparison_samples=3", "sft.train.epochs=1",
    "rm.train.epochs=1", "ppo.iterations=2", "ppo.rollout.batch_size=8", "ppo.train.batch_size=8",
    "ppo.train.micro_batch_size=8", "ppo.eval.max_prompts=16",
    "grpo.iterations=2", "grpo.rollout.batch_size=4", "grpo.train.batch_size=8",
    "grpo.train.micro_batch_size=8", "grpo.eval.max_prompts=16",
    "rloo.iterations=2", "rloo.rollout.batch_size=4", "rloo.train.batch_size=8",
    "rloo.train.micro_batch_size=8", "rloo.eval.max_prompts=16",
    "dpo.train.batch_size=8", "dpo.train.micro_batch_size=8", "dpo.eval.kl_prompts=4",
]
STAGE_NAMES = {"sft": "SFT", "compare": "comparisons", "cai": "AI labels", "rm": "RM", "ppo": "PPO",
               "grpo": "GRPO", "rloo": "RLOO", "dpo": "DPO", "eval": "evaluation"}
# a flagged reward-hacking check → (its label in a verdict cell, the instrument whose base → value it shows)
HACKING_LABELS = {
    "kl_without_win": ("KL without a win", None),
    "proxy_up_gold_down": ("proxy up / gold down", None),
    "length_blown_up": ("length", "length"),
    "repetition_blown_up": ("repetition", "repetition"),
    "sycophancy_up": ("sycophancy", "sycophancy_rate"),
    "over_refusal_up": ("benign refusal", "refusal_rate_benign"),
    "harmful_compliance_up": ("harmful refusal", "refusal_rate_harmful"),
}
VERIFY_NAMES = {
    "ppo_token_kl": "ppo with kl.estimator=token_kl",
    "rloo_token_kl": "rloo with kl.estimator=token_kl",
    "dpo": "dpo (soft labels σ(r_w − r_l))",
    "grpo_kl_in_reward": "grpo with the KL as k1 in the reward, no std scaling, token sums",
    "grpo": "grpo as the paper defines it",
    "ipo": "ipo (its optimum is not π*)",
}


# ------------------------------------------------------------------------------------------------- numbers


def short(x: float) -> str:
    """1e-4 → '1e-4', 2.5e-4 → '2.5e-4', 0.5 → '0.5': a setting as a person writes it."""
    if x == 0 or abs(x) >= 1e-2:
        return f"{x:g}"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def small(x: float) -> str:
    """A KL that may be tiny: 4 decimals below 0.01 (0.0037), 3 above (0.372); below 1e-4 as 9e-6."""
    if x < 1e-4:
        return short(float(f"{x:.1g}"))
    return f"{x:.4f}" if x < 0.01 else f"{x:.3f}"


# ------------------------------------------------------------------------------------------ block formats


def default_table(summary: dict) -> str:
    """`tether run`'s printed table (instruments, mean rewards) without its last line (β, wall time; the
    README gives the time per stage below it), trailing spaces removed."""
    from tether.instruments.report import terminal_table

    lines = terminal_table(summary).split("\n")
    if not (lines[-1].startswith("beta ") and lines[-2] == ""):
        raise TetherError("tether's terminal table no longer ends with its 'beta ... wall time' line")
    return "\n".join(line.rstrip() for line in lines[:-2])


def stage_times(summary: dict, lab_seconds: float | None) -> str:
    """'The whole default run took 206 s (lab 44 s, SFT 28 s, ..., the rest loading).'"""
    parts = [] if lab_seconds is None else [f"lab {lab_seconds:.0f} s"]
    parts += [f"{STAGE_NAMES.get(k, k)} {v:.0f} s" for k, v in summary.get("stage_seconds", {}).items()]
    parts.append("the rest loading")
    return f"The whole default run (seed 0) took {summary['wall_seconds']:.0f} s ({', '.join(parts)})."


def default_block(summary: dict, lab_seconds: float | None) -> str:
    return f"```\n{default_table(summary)}\n```\n\n{wrap(stage_times(summary, lab_seconds))}"


def verdict(summary: dict) -> str:
    """'clear', or 'hacking: ' and each check that flagged the run, with base → value where it has one."""
    ins = summary["instruments"]
    hacking = ins.get("reward_hacking") or {}
    if hacking.get("value") is None:
        return "not measured"
    if not hacking["value"]:
        return "clear"
    items = []
    for reason in hacking.get("reasons", []):
        name = reason.split(":", 1)[0]
        label, instrument = HACKING_LABELS.get(name, (name, None))
        inst = ins.get(instrument) or {}
        if inst.get("value") is not None and inst.get("base") is not None:
            digits = 1 if instrument == "length" else 3  # tokens
            label += f" {num(inst['base'], digits)} → {num(inst['value'], digits)}"
        items.append(label)
    return "hacking: " + ", ".join(items)


def _cells(summary: dict, kl_digits: int) -> list[str]:
    """KL, proxy, gold, win-rate and verdict cells of a policy's summary."""
    ins, policy = summary["instruments"], summary["rewards"]["policy"]
    kl = (ins.get("kl_from_base") or {}).get("value")
    win = (ins.get("win_rate_vs_base") or {}).get("value")
    return [num(kl, kl_digits), num(policy.get("proxy")), num(policy.get("gold")), num(win), verdict(summary)]


def betas_block(default: dict, runs: list[tuple[str, dict]]) -> str:
    """The table of PPO at other β: one row per (overrides, summary), the default run and SFT for scale."""
    base = default["rewards"]["base"]
    lines = [
        md_row(["`tether run` overrides", "KL from SFT (nats)", "proxy", "gold", "win-rate vs SFT",
                "verdict"]),
        md_rule(6),
        md_row(["SFT (the base)", num(0.0), num(base.get("proxy")), num(base.get("gold")), "-", "-"]),
        md_row([f"none (β {default['beta']:g})", *_cells(default, 3)]),
    ]
    lines += [md_row([f"`{label}`", *_cells(summary, 3)]) for label, summary in runs]
    return "\n".join(lines)


def algo_settings(algo: str, cfg) -> str:
    """The settings column of the --algo table, from the stage's resolved config."""
    if algo == "ppo":
        from tether.trainers.ppo import critic_kind

        critic = {"rm": "critic from the RM", "policy": "critic from SFT"}[critic_kind(cfg)]
        adaptive = " adaptive" if cfg.kl.adaptive else ""
        return f"β {cfg.kl.beta:g}{adaptive}, {critic}"
    if algo == "grpo":
        g = cfg.grpo
        paper = g.scale == "group" and not g.kl_in_reward and g.aggregation == "sequence_mean"
        scale = {"group": "std scaling", "batch": "batch std scaling", "none": "no std scaling"}[g.scale]
        kl = "k1 in the reward" if g.kl_in_reward else "k3 in the loss"
        aggregation = "" if g.aggregation == "sequence_mean" else f", {g.aggregation.replace('_', ' ')}"
        form = "the paper's form: " if paper else ""
        return f"{form}G {g.group_size}, {scale}, β {g.beta:g} {kl}{aggregation}"
    if algo == "rloo":
        return f"k {cfg.rloo.k}, β {cfg.kl.beta:g} {cfg.kl.estimator} in the reward"
    if algo == "dpo":
        t = cfg.train
        if t.max_steps is not None:
            length = f"{t.max_steps} steps"
        else:
            length = "one epoch" if t.epochs == 1 else f"{t.epochs:g} epochs"
        soft = ", soft labels" if cfg.data.use_soft_labels else ""
        return f"β {cfg.beta:g}, {cfg.loss_type} loss, lr {short(t.lr)}, {length}{soft}"
    raise TetherError(f"no settings description for algo {algo!r}")


def algo_block(rows: list[tuple[str, dict, str]]) -> str:
    """The --algo table from (algo, summary, settings) rows, then each stage 3's seconds."""
    first = rows[0][1]
    win = first["instruments"]["win_rate_vs_base"]
    base_gold = first["rewards"]["base"].get("gold")
    lines = [
        md_row(["`--algo`", f"win-rate vs SFT ({win['judge']}, n={win['n']})", "KL from SFT",
                f"gold reward (SFT {num(base_gold)})", "settings"]),
        md_rule(5),
    ]
    for algo, summary, settings in rows:
        ins = summary["instruments"]
        w = ins["win_rate_vs_base"]
        lo, hi = w["ci95"]
        cells = [f"{num(w['value'])} [{num(lo)}, {num(hi)}]", num(ins["kl_from_base"]["value"]),
                 num(summary["rewards"]["policy"].get("gold"))]
        lines.append(md_row([algo, *cells, settings]))
    seconds = ", ".join(
        f"{algo} {s['stage_seconds'][algo]:.0f} s + {s['stage_seconds']['eval']:.0f} s" for algo, s, _ in rows
    )
    return "\n".join(lines) + "\n\n" + wrap(f"Stage 3 + its evaluation: {seconds}.")


def verify_block(result: dict) -> str:
    """`tether verify`'s table (KL to π* and seconds per algorithm), then the GRPO/IPO predictions and the
    limits where they ran."""
    lines = [md_row(["algorithm", "KL(π‖π*) nats", "seconds"]), md_rule(3)]
    algorithms = result["algorithms"]
    for name, e in algorithms.items():
        lines.append(md_row([VERIFY_NAMES.get(name, name), small(e["kl_to_optimum"]), f"{e['seconds']:.0f}"]))
    notes = []
    if "grpo" in algorithms:
        g = algorithms["grpo"]
        notes.append(f"The paper's GRPO: β_eff = {g['beta_eff']:.3f}; the trained policy is "
                     f"{small(g['kl_to_prediction'])} nats from its predicted fixed point.")
    if "ipo" in algorithms:
        notes.append(f"IPO: {small(algorithms['ipo']['kl_to_prediction'])} nats from its predicted optimum.")
    limits = result.get("limits") or {}
    if limits:
        said = []
        for e in limits.values():
            if e["beta"] < result["beta"]:
                said.append(f"β = {e['beta']:g} puts {e['best_probability']:.3f} on the best response")
            else:
                said.append(f"β = {e['beta']:g} brings it back to {small(e['kl_to_optimum'])} nats from π* "
                            "(≈ the reference)")
        start = next(iter(limits.values()))["start_kl_to_reference"]
        said = ", ".join(said)
        notes.append(f"Limits, from a perturbed start {start:.2f} nats from the reference: {said}.")
    from tether.verify import failures

    missed = failures(result)
    notes.append("Targets missed: " + "; ".join(missed) + "." if missed else "Every target met.")
    return "\n".join(lines) + "\n\n" + wrap(" ".join(notes))


def probe_block(payload: dict) -> str:
    """One sentence: the probe's best response against the best demonstration and its gold reward."""
    best = max(payload["candidates"], key=lambda c: c["rm_score"])
    bar = (payload["bars"].get("data") or {}).get("value")
    gold_bar = (payload["bars"].get("gold") or {}).get("value")
    side = "above" if bar is not None and best["rm_score"] > bar else "not above"
    response = best["response"].replace("`", "'")
    response = response if len(response) <= 60 else response[:59] + "…"
    first = payload.get("seconds_to_beat_data")
    when = (f"It first beat the best demonstration after {first:.0f} s" if first is not None
            else "It never beat the best demonstration")
    return wrap(
        f"On the default run's reward model it ran {payload['steps']} steps in {payload['seconds']:.0f} s. "
        f"The best response it found, `{response}`, scores {num(best['rm_score'], 2)}, {side} the best "
        f"demonstration's {num(bar, 2)}, with gold reward {num(best['gold'], 2)} (the demonstrations' mean "
        f"gold: {num(gold_bar, 2)}). {when}; {payload['found']} of {len(payload['candidates'])} responses "
        "are adversarial (above that score, below that gold)."
    )


def best_of_n_sentence(curve: list[dict]) -> str:
    """Where best-of-n's gold reward peaks, and whether it falls after (over-optimisation)."""
    if not curve:
        return "No best-of-n curve."
    peak = max(curve, key=lambda b: b["gold_reward"])
    last = curve[-1]
    proxies = [b["proxy_reward"] for b in curve]
    rising = all(b >= a for a, b in zip(proxies, proxies[1:], strict=False))
    proxy = ("while the proxy keeps rising" if rising
             else f"while the proxy goes from {num(proxies[0])} to {num(proxies[-1])}")
    if peak["n"] == last["n"]:
        return (f"Best-of-n's gold reward still rises at n = {last['n']} ({num(last['gold_reward'])}), "
                f"{proxy}: no over-optimisation up to n = {last['n']}.")
    return (f"Best-of-n over-optimises too: its gold reward peaks at n = {peak['n']} "
            f"({num(peak['gold_reward'])}) and falls to {num(last['gold_reward'])} at n = {last['n']} "
            f"{proxy}.")


def sweep_block(sweep: dict, summaries: dict[float, dict]) -> str:
    """The sweep table (one row per β, the recommended one marked), the best-of-n sentence and the time."""
    lines = [md_row(["β", "KL (nats)", "proxy", "gold", "win-rate", "verdict"]), md_rule(6)]
    for r in sweep["runs"]:
        beta = f"{r['beta']:g}" + (" (recommended)" if r["beta"] == sweep.get("recommended_beta") else "")
        lines.append(md_row([beta, *_cells(summaries[r["beta"]], 1)]))
    took = f" The sweep took {sweep['wall_seconds']:.0f} s with `--reuse`."
    return "\n".join(lines) + "\n\n" + wrap(best_of_n_sentence(sweep.get("best_of_n", [])) + took)


# ------------------------------------------------------------------------------------------------ runs


def run_config(overrides: list[str]):
    """A RunConfig from `tether run` style overrides (`seed=1`, `ppo.kl.beta=5`, `lab.sft_train=100`); the
    overrides of stages this run does not train (--smoke's for the other algorithms) are left out, since
    `tether run` refuses them."""
    from tether.config import load_config
    from tether.pipeline import RunConfig, split_overrides, stages_of

    plain, staged = split_overrides(overrides)
    cfg = load_config(RunConfig, None, plain)
    for stage, items in staged.items():
        if stage in stages_of(cfg) or stage not in ("rm", "ppo", "grpo", "rloo", "dpo"):
            getattr(cfg, stage).extend(items)
    return cfg


class Figures:
    """The runs in OUT and the blocks made from them."""

    def __init__(self, out: Path, smoke: bool):
        self.out, self.smoke = out, smoke
        self.overrides = SMOKE if smoke else []

    def measured(self, part: str, make) -> dict:
        """Run `make()` unless the part finished before; the stamp of when its runs were made."""
        return measured(self.out / "stamps" / f"{part}.json", make, self.smoke)

    # -- the default run, which every part but verify builds on
    def default(self) -> tuple[dict, dict]:
        from tether.pipeline import run_pipeline

        run = self.out / "default"

        def make():
            if not (run / "summary.json").is_file():
                run_pipeline(run_config(self.overrides), run, resume=run.exists(), progress=False)

        stamp = self.measured("default", make)
        return json.loads((run / "summary.json").read_text()), stamp

    def shared(self, reward_model: bool = True):
        from tether.sweep import reuse_run

        self.default()
        shared = reuse_run(self.out / "default")
        return shared if reward_model else dataclasses.replace(shared, rm_dir=None)

    def stage3(self, cfg, run_dir: Path) -> dict:
        """`tether run`'s stage 3 and evaluation on the default run's shared stages, into run_dir: the
        summary run_pipeline writes (stage_seconds of stage 3 and evaluation only)."""
        from tether.config import dump_config
        from tether.sweep import run_stage3

        if (run_dir / "summary.json").is_file():
            return json.loads((run_dir / "summary.json").read_text())
        shared = self.shared(reward_model=cfg.algo != "dpo")
        dump_config(cfg, run_dir)
        return run_stage3(cfg, shared, run_dir, progress=False)

    # -- the parts: each returns (block text, stamp)
    def part_default(self) -> tuple[str, dict]:
        summary, stamp = self.default()
        timings = self.out / "default" / "lab" / "timings.json"
        lab_seconds = json.loads(timings.read_text())["total"] if timings.is_file() else None
        return default_block(summary, lab_seconds), stamp

    def beta_runs(self) -> list[tuple[str, Path, list[str]]]:
        runs = []
        for overrides in BETA_RUNS:
            used = [o for o in overrides if not (self.smoke and "iterations=" in o)]  # smoke: its own length
            name = "_".join(o.removeprefix("ppo.").replace("=", "-") for o in used)
            runs.append((" ".join(overrides), self.out / "betas" / name, used))
        return runs

    def part_betas(self) -> tuple[str, dict]:
        default, _ = self.default()
        stamp = self.measured("betas", lambda: [self.stage3(run_config([*self.overrides, *o]), d)
                                                for _, d, o in self.beta_runs()])
        runs = [(label, json.loads((d / "summary.json").read_text())) for label, d, _ in self.beta_runs()]
        return betas_block(default, runs), stamp

    def part_algo(self) -> tuple[str, dict]:
        from tether.config import load_config
        from tether.pipeline import _stage_classes

        default, _ = self.default()
        algos = ("grpo", "rloo", "dpo")

        def make():
            for algo in algos:
                self.stage3(run_config([*self.overrides, f"algo={algo}"]), self.out / "algo" / algo)

        stamp = self.measured("algo", make)
        rows, classes = [], _stage_classes()
        for algo, run in [("ppo", self.out / "default"), *((a, self.out / "algo" / a) for a in algos)]:
            summary = json.loads((run / "summary.json").read_text())
            cfg = load_config(classes[algo][0], run / algo / "config.yaml")
            rows.append((algo, summary, algo_settings(algo, cfg)))
        return algo_block(rows), stamp

    def part_verify(self) -> tuple[str, dict]:
        from tether.verify import verify

        path = self.out / "verify" / "result.json"

        def make():
            shutil.rmtree(self.out / "verify", ignore_errors=True)
            result = verify(quick=self.smoke, out=self.out / "verify" / "runs")
            path.write_text(json.dumps(result, indent=2) + "\n")

        stamp = self.measured("verify", make)
        return verify_block(json.loads(path.read_text())), stamp

    def part_probe(self) -> tuple[str, dict]:
        from tether.commands.rm_probe import PROBE_DEFAULTS
        from tether.instruments.probe_run import run_probe

        out = self.out / "probe"
        sizes = {k: PROBE_DEFAULTS[k] for k in ("num_prompts", "candidates", "top_k", "max_tokens")}
        sizes.update(steps=PROBE_STEPS, seconds=1e9)  # steps, not a time limit: machine-independent
        if self.smoke:
            sizes.update(num_prompts=4, steps=3, seconds=30.0, candidates=8)

        def make():
            self.default()
            run = self.out / "default"
            run_probe(run / "rm" / "model", out=out, lab=run / "lab", seed=0, **sizes)

        stamp = self.measured("probe", make)
        return probe_block(json.loads((out / "probe.json").read_text())), stamp

    def part_sweep(self) -> tuple[str, dict]:
        from tether.instruments.best_of_n import DEFAULT_NS
        from tether.sweep import beta_dir_name, run_sweep

        out = self.out / "sweep"
        betas, ns, prompts = (SWEEP_BETAS[-1], SWEEP_BETAS[2]), (1, 2, 4), 8
        if not self.smoke:
            betas, ns, prompts = SWEEP_BETAS, DEFAULT_NS, 200

        def make():
            self.default()
            run_sweep(run_config([*self.overrides, "algo=ppo"]), list(betas), out, reuse=self.out / "default",
                      best_of_n=ns, best_of_n_prompts=prompts, progress=False)

        stamp = self.measured("sweep", make)
        sweep = json.loads((out / "sweep.json").read_text())
        summaries = {r["beta"]: json.loads((out / beta_dir_name(r["beta"]) / "summary.json").read_text())
                     for r in sweep["runs"]}
        return sweep_block(sweep, summaries), stamp

    def block(self, part: str) -> str:
        if part != "verify":
            self.default()  # first, so that another part's stamp does not count the default run's time
        text, stamp = getattr(self, f"part_{part}")()
        return f"{text}\n\n{stamp_line(stamp)}"


# ------------------------------------------------------------------------------------------------- main


def parse_only(value: str | None) -> list[str]:
    if not value:
        return list(PARTS)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        what = ", ".join(unknown) or repr(value)
        raise TetherError(f"--only: unknown part {what}; choose from {', '.join(PARTS)}")
    return [p for p in PARTS if p in names]  # the README's order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="DIR", help="where the runs are kept (default: runs/readme-figures, "
                        "with --smoke runs/readme-figures-smoke); finished parts there are reused")
    parser.add_argument("--only", metavar="PARTS", help=f"comma-separated parts ({','.join(PARTS)})")
    parser.add_argument("--write", metavar="FILE", help="replace the blocks between the markers in FILE "
                        "(README.md) instead of printing them")
    parser.add_argument("--smoke", action="store_true", help="tiny lab and stages: checks the script only")
    args = parser.parse_args(argv)
    try:
        parts = parse_only(args.only)
        if args.write:
            read_for_write(args.write, parts)  # its markers checked before hours of runs, not after
        out = Path(args.out or ("runs/readme-figures-smoke" if args.smoke else "runs/readme-figures"))
        figures = Figures(out, args.smoke)
        blocks = {}
        for part in parts:
            print(f"readme_figures: {part}", file=sys.stderr, flush=True)
            blocks[part] = figures.block(part)
        emit_blocks(blocks, args.write, "readme_figures")
    except TetherError as e:
        print(f"readme_figures: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
