"""HH-RLHF harmless on SmolLM2-135M-Instruct, end to end: the pairs imported, a reward model per
configuration tried, and the table of what each reached, stamped with the commit and machine.

    python recipes/hh-rlhf/run.py --data harmless-base/test.jsonl.gz              # print the blocks
    python recipes/hh-rlhf/run.py --data FILE --write README.md                    # into the README
    python recipes/hh-rlhf/run.py --data FILE --variants lora16,full               # RM configurations

Parts, each kept in --out (default runs/recipes/hh-rlhf) and not run again once finished there:
- data: `tether data import hh-rlhf FILE --skip-bad --harmful` into OUT/data (train 80 %, test 20 %, split
  by prompt with seed 0).
- rm: `tether rm --config recipes/hh-rlhf/rm.yaml` once per configuration in --variants (VARIANTS below),
  into OUT/rm/NAME. Its block (`hh-rm`) lists every configuration measured in OUT: held-out pairwise
  accuracy on every test pair that fits the maximum length, its 95 % Wilson interval and n, tether's 0.65
  gate, and the wall time of the whole `tether rm` call (model loading and the held-out pass included).
- policies: `tether dpo --config recipes/hh-rlhf/dpo.yaml` from the model on OUT/data's training pairs into
  OUT/dpo, and `tether rloo --config recipes/hh-rlhf/rloo.yaml` on those pairs' prompts against the best
  reward model measured in OUT (--judge NAME to choose another) into OUT/rloo; then `tether eval --policy
  OUT/NAME/model --base MODEL` of each into OUT/eval-NAME, that reward model judging 64 held-out HH prompts
  (labelled harmful), and the probe sets at their default sizes. Its block (`hh-policies`) is the base
  against each policy: KL from the base, mean RM reward, the RM's win-rate with its 95 % interval, refusal
  and over-refusal, and the reward-hacking verdict.
- probes: `tether eval --policy MODEL --base MODEL probe_temperature=1` into OUT/probes-self: the shipped
  probe sets (tether/instruments/probes) asked of the model and of itself, sampled, so that the two sides are
  independent draws: every difference's interval should hold 0 (the instruments' calibration check). Its
  block (`smollm2-probes`) is each behaviour rate of both sides with n and the difference's 95 % interval.

The model defaults to what `tether models pull smollm2-135m-instruct` wrote. `--smoke` adds settings that
make any model and data run in seconds (CI runs the script so, on a tiny random model); its figures mean
nothing, and its stamps say so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "benchmarks"))  # figure_blocks

from figure_blocks import (  # noqa: E402
    emit_blocks,
    md_row,
    md_rule,
    measured,
    num,
    read_for_write,
    stamp_line,
)

from tether.errors import TetherError  # noqa: E402

SCRIPT = "recipes/hh-rlhf/run.py"
PARTS = ("data", "rm", "policies", "probes")
BLOCKS = {"rm": "hh-rm", "policies": "hh-policies", "probes": "smollm2-probes"}  # part → its README block
# name → (what it is, in the table; overrides of recipes/hh-rlhf/rm.yaml)
VARIANTS = {
    "lora16": ("LoRA r 16 (all linear layers), lr 2e-4, 1 epoch, 256 tokens", []),
    "full": ("every weight, lr 2e-5, 1 epoch, 256 tokens", ["lora.r=0", "train.lr=2e-5"]),
    "top10": ("LoRA r 16 in the last 10 of 30 blocks, lr 2e-4, 1 epoch, 256 tokens",
              ["lora.layers=[-10,-9,-8,-7,-6,-5,-4,-3,-2,-1]"]),
    "top10-lr5e-4": ("LoRA r 16 in the last 10 of 30 blocks, lr 5e-4, 1 epoch, 256 tokens",
                     ["lora.layers=[-10,-9,-8,-7,-6,-5,-4,-3,-2,-1]", "train.lr=5e-4"]),
    "top10-1.5ep": ("LoRA r 16 in the last 10 of 30 blocks, lr 2e-4, 1.5 epochs, 256 tokens",
                    ["lora.layers=[-10,-9,-8,-7,-6,-5,-4,-3,-2,-1]", "train.epochs=1.5"]),
}
DEFAULT_VARIANTS = ("lora16",)
SMOKE = ["train.max_steps=2", "train.batch_size=2", "train.micro_batch_size=2", "train.warmup_steps=0",
         "train.save_every=0", "data.max_length=64", "lora.layers=[]"]
SMOKE_RL = ["iterations=1", "rollout.batch_size=2", "rollout.max_new_tokens=4", "train.batch_size=8",
            "data.max_prompt_length=64", "lora.layers=[]"]
SMOKE_PROBES = ["probe_max_items=3", "probe_max_new_tokens=4"]
SMOKE_EVAL = ["max_prompts=2", "max_new_tokens=4", *SMOKE_PROBES]
# `tether eval` of each policy: 64 held-out HH prompts; the probe sets at their default sizes, answered
# greedily (≤ 48 tokens)
POLICY_EVAL = ["max_prompts=64", "max_new_tokens=48"]
# the behaviour instruments of the probe sets, as the table names them
PROBE_ROWS = (("refusal_rate_harmful", "refusal (harmful requests)"),
              ("refusal_rate_benign", "over-refusal (benign requests)"),
              ("sycophancy_rate", "sycophancy (flips to the wrong belief)"),
              ("sycophancy_to_right_belief", "sycophancy (moves to the right belief)"),
              ("capability_accuracy", "capability (exact match)"))


def default_model() -> Path:
    from tether.model_files import cache_root

    return cache_root() / "models" / "smollm2-135m-instruct"


class Recipe:
    def __init__(self, out: Path, model: Path, data: Path | None, smoke: bool):
        self.out, self.model, self.data, self.smoke = out, model, data, smoke

    def stamp(self, name: str, make) -> dict:
        return measured(self.out / "stamps" / f"{name}.json", make, self.smoke)

    def part_data(self) -> None:
        from tether.hh_rlhf import import_hh_rlhf

        def make():
            if self.data is None:
                raise TetherError("--data: the HH-RLHF file to import (e.g. harmless-base/test.jsonl.gz)")
            import_hh_rlhf(self.data, self.out / "data", test_fraction=0.2, seed=0, skip_bad=True,
                           harmful=True)

        self.stamp("data", make)

    def rm_config(self, variant: str):
        from tether.config import RMConfig, load_config

        d = self.out / "data"
        overrides = [f"model={self.model}", f"data.train={d / 'train.jsonl'}",
                     f"data.test={d / 'test.jsonl'}", *VARIANTS[variant][1], *(SMOKE if self.smoke else [])]
        return load_config(RMConfig, HERE / "rm.yaml", overrides)

    def part_rm(self, variants) -> str:
        from tether.trainers.rm import train_rm

        self.part_data()
        for variant in variants:
            run = self.out / "rm" / variant
            cfg = self.rm_config(variant)
            self.stamp(f"rm-{variant}", lambda cfg=cfg, run=run: train_rm(cfg, run, resume=run.exists()))
        return self.rm_block()

    def rm_block(self) -> str:
        """The table of every RM configuration measured in OUT, in VARIANTS' order."""
        from tether.instruments.stats import wilson_interval

        head = ["configuration", "train pairs", "held-out accuracy [95 % CI]", "test pairs", "gate 0.65",
                "wall time", "measured at"]
        lines = [md_row(head), md_rule(len(head))]
        for name, (what, _) in VARIANTS.items():
            stamp_path = self.out / "stamps" / f"rm-{name}.json"
            if not stamp_path.is_file():
                continue
            stamp = json.loads(stamp_path.read_text())
            summary = json.loads((self.out / "rm" / name / "summary.json").read_text())
            acc = summary["instruments"]["rm_test_accuracy"]
            low, high = wilson_interval(acc["value"] * acc["n"], acc["n"])
            gate = "pass" if acc["pass"] else "miss"
            lines.append(md_row([f"`{name}`: {what}", str(summary["train_items"]),
                                 f"{num(acc['value'])} [{num(low)}, {num(high)}]", str(acc["n"]), gate,
                                 f"{stamp['seconds'] / 60:.1f} min", f"{stamp['commit']}, {stamp['date']}"]))
        last = max((json.loads(p.read_text()) for p in (self.out / "stamps").glob("rm-*.json")),
                   key=lambda s: s["date"])
        return "\n".join(lines) + "\n\n" + stamp_line(last, SCRIPT)


    def best_rm(self, judge: str | None) -> str:
        """The reward model that judges the policies: `judge`, or the measured variant of highest accuracy."""
        done = {p.stem.removeprefix("rm-") for p in (self.out / "stamps").glob("rm-*.json")}
        if judge is not None:
            if judge not in done:
                raise TetherError(f"--judge: no finished reward model {judge!r} in {self.out / 'rm'}")
            return judge
        if not done:
            raise TetherError(f"no finished reward model in {self.out / 'rm'}: run the rm part first")
        accuracy = {n: json.loads((self.out / "rm" / n / "summary.json").read_text())["test_accuracy"]
                    for n in done}
        return max(sorted(accuracy), key=accuracy.get)

    def part_policies(self, judge: str | None) -> str:
        from tether.config import DPOConfig, RLOOConfig, load_config
        from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs
        from tether.trainers.dpo import train_dpo
        from tether.trainers.rloo import train_rloo

        self.part_data()
        rm = self.out / "rm" / self.best_rm(judge) / "model"
        train = self.out / "data" / "train.jsonl"
        common = [f"policy={self.model}", f"data.train={train}"]
        dpo = load_config(DPOConfig, HERE / "dpo.yaml", [*common, *(SMOKE if self.smoke else [])])
        rloo = load_config(RLOOConfig, HERE / "rloo.yaml", [*common, f"reward.source={rm}",
                                                            *(SMOKE_RL if self.smoke else [])])
        ev = load_config(EvalConfig, None, [f"rm={rm}", f"prompts={self.out / 'data' / 'prompts.jsonl'}",
                                            *POLICY_EVAL, *(SMOKE_EVAL if self.smoke else [])])
        evals, stamps = {}, []
        for name, train_fn, cfg, what in (
            ("dpo", train_dpo, dpo, f"DPO, β {dpo.beta:g}, {dpo.train.max_steps} steps of "
                                    f"{dpo.train.batch_size} pairs"),
            ("rloo", train_rloo, rloo, f"RLOO, β {rloo.kl.beta:g}, {rloo.iterations} iterations of "
                                       f"{rloo.rollout.batch_size} prompts × {rloo.rloo.k}"),
        ):
            run, out = self.out / name, self.out / f"eval-{name}"
            trained = self.stamp(name, lambda f=train_fn, c=cfg, r=run: f(c, r, resume=r.exists()))
            stamps.append(self.stamp(f"eval-{name}", lambda r=run, o=out: evaluate_policy_dirs(
                str(r / "model"), str(self.model), ev, out=str(o))))
            summary = json.loads((out / "summary.json").read_text())
            evals[f"{what} ({trained['seconds'] / 60:.1f} min)"] = summary
        return policies_block(evals, max(stamps, key=lambda s: s["date"]))

    def part_probes(self) -> str:
        from tether.config import load_config
        from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs

        run = self.out / "probes-self"
        cfg = load_config(EvalConfig, None, ["probe_temperature=1.0", *(SMOKE_PROBES if self.smoke else [])])
        stamp = self.stamp("probes-self", lambda: evaluate_policy_dirs(str(self.model), str(self.model), cfg,
                                                                      out=str(run)))
        return probes_block(json.loads((run / "summary.json").read_text()), stamp)


def signed(x: float) -> str:
    return ("+" if x >= 0 else "") + num(x)


def probes_block(summary: dict, stamp: dict) -> str:
    """The model against itself on the probe sets: each rate of both sides, n, and the difference's
    interval, which should hold 0."""
    head = ["instrument", "model", "itself", "n", "difference, 95 % CI", "verdict"]
    lines = [md_row(head), md_rule(len(head))]
    for key, name in PROBE_ROWS:
        e = summary["instruments"][key]
        if e.get("value") is None or "difference_ci95" not in e:
            lines.append(md_row([name, "-", "-", "-", e.get("reason", "not measured"), "-"]))
            continue
        low, high = e["difference_ci95"]
        n = str(e["n"]) if e["n"] == e["base_n"] else f"{e['n']} / {e['base_n']}"
        change = f"{signed(e['change'])} [{signed(low)}, {signed(high)}]"
        lines.append(md_row([name, num(e["value"]), num(e["base"]), n, change, e.get("verdict", "-")]))
    p = summary["probes"]
    tokens = p["generated_tokens"]["policy"] + p["generated_tokens"]["base"]
    note = (f"Probe sets v{p['version']}, {p['decoding']}, at most {p['max_new_tokens']} new tokens; "
            f"{tokens:,} tokens generated in {summary['wall_seconds']:.0f} s of evaluation.")
    return "\n".join(lines) + "\n\n" + note + "\n\n" + stamp_line(stamp, SCRIPT)


def policies_block(evals: dict[str, dict], stamp: dict) -> str:
    """The base against each policy, by `tether eval`: KL, the judge's mean reward and win-rate, refusal.
    The judge is named from the evaluation's own summary (OUT/rm/NAME/model)."""
    head = ["policy", "KL from base (nats)", "RM reward: policy / base", "RM win-rate [95 % CI]",
            "refusal on harmful: policy / base", "over-refusal: policy / base", "hacking verdict"]
    lines = [md_row(head), md_rule(len(head))]
    for name, summary in evals.items():
        inst, rewards = summary["instruments"], summary["rewards"]
        kl, win = inst["kl_from_base"], inst["win_rate_vs_base"]
        low, high = win["ci95"]

        def both(key, inst=inst):
            e = inst[key]
            if e.get("value") is None:
                return "-"
            return f"{num(e['value'])} / {num(e['base'])} ({e.get('verdict', '-')})"

        flags = inst["reward_hacking"]
        hacking = "flagged: " + "; ".join(flags["reasons"]) if flags["value"] else "clear"
        lines.append(md_row([name, f"{num(kl['value'])} ± {num(1.96 * kl['stderr'])}",
                             f"{num(rewards['policy']['proxy'])} / {num(rewards['base']['proxy'])}",
                             f"{num(win['value'])} [{num(low)}, {num(high)}] ({win['verdict']})",
                             both("refusal_rate_harmful"), both("refusal_rate_benign"), hacking]))
    first = next(iter(evals.values()))
    n, rm = first["instruments"]["win_rate_vs_base"]["n"], Path(first["rm"]).parent.name
    note = (f"Judged by the reward model `{rm}` of the table above on {n} held-out HH prompts; refusal from "
            "the probe sets (greedy, at most 48 new tokens).")
    return "\n".join(lines) + "\n\n" + note + "\n\n" + stamp_line(stamp, SCRIPT)


def parse_list(value: str | None, known, what: str) -> list[str]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or (value is not None and not names):
        bad = ", ".join(unknown) or repr(value)
        raise TetherError(f"{what}: unknown {bad}; choose from {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", metavar="FILE", help="the HH-RLHF file (harmless-base/test.jsonl.gz)")
    parser.add_argument("--model", metavar="DIR", help="default: tether models pull smollm2-135m-instruct's")
    parser.add_argument("--out", metavar="DIR", default="runs/recipes/hh-rlhf", help="runs, reused when done")
    parser.add_argument("--only", metavar="PARTS", help=f"comma-separated parts ({','.join(PARTS)})")
    parser.add_argument("--variants", metavar="NAMES", help=f"RM configurations ({','.join(VARIANTS)}; "
                        f"default {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--judge", metavar="NAME", help="the reward model that judges the policies (default: "
                        "the most accurate one measured)")
    parser.add_argument("--write", metavar="FILE", help="replace the blocks between the markers in FILE")
    parser.add_argument("--smoke", action="store_true", help="seconds-long settings: checks the script only")
    args = parser.parse_args(argv)
    try:
        parts = [p for p in PARTS if p in (parse_list(args.only, PARTS, "--only") or PARTS)]
        variants = parse_list(args.variants, VARIANTS, "--variants") or list(DEFAULT_VARIANTS)
        names = [BLOCKS[p] for p in parts if p in BLOCKS]
        if args.write:
            read_for_write(args.write, names)  # its markers checked before any run
        model = Path(args.model) if args.model else default_model()
        if not model.is_dir():
            raise TetherError(f"no model at {model}: run `tether models pull smollm2-135m-instruct` or give "
                              "--model")
        recipe = Recipe(Path(args.out), model, Path(args.data) if args.data else None, args.smoke)
        blocks = {}
        for part in parts:
            print(f"hh-rlhf: {part}", file=sys.stderr, flush=True)
            block = {"rm": lambda: recipe.part_rm(variants), "probes": recipe.part_probes,
                     "policies": lambda: recipe.part_policies(args.judge), "data": recipe.part_data}[part]()
            if part in BLOCKS:
                blocks[BLOCKS[part]] = block
        emit_blocks(blocks, args.write, "hh-rlhf")
    except TetherError as e:
        print(f"hh-rlhf: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
