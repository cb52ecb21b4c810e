"""recipes/sentiment (the DPO paper's controlled-sentiment frontier, issue 18 part 2) on tiny models: the
shipped prompts are the generator's output and say nothing good or bad yet, run.sh's commands parse and its
configs load with its overrides at three β per method, `tether data pairs` scores with VADER, and
frontier.py's table holds the runs' figures."""

import json
import math
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from plumbing_helpers import load_script, write_model_dir

from tether.cli import build_parser, main
from tether.config import DPOConfig, GRPOConfig, PPOConfig, RLOOConfig, RMConfig, load_config
from tether.sentiment import vader

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sentiment"


def recipe_module(name: str):
    """recipes/sentiment/<name>.py imported as a module (the recipe's scripts are not a package)."""
    return load_script(RECIPE / f"{name}.py", f"sentiment_{name}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_prompts_are_the_generators_output_and_neutral():
    """The two files equal make_prompts.build() byte for byte (--check agrees); >= 500 train, >= 100 test,
    no opening in both; every opening scores exactly 0 with VADER (not already positive or negative); each
    prompt holds its opening."""
    make = recipe_module("make_prompts")
    built = make.build()
    for name, text in built.items():
        assert (RECIPE / "data" / name).read_text(encoding="utf-8") == text, name
    assert make.main(["--check"]) == 0
    train, test = (read_jsonl(RECIPE / "data" / f"prompts.{s}.jsonl") for s in ("train", "test"))
    assert len(train) >= 500 and len(test) >= 100
    assert not {r["opening"] for r in train} & {r["opening"] for r in test}
    openings = [r["opening"] for r in train + test]
    assert len(set(openings)) == len(openings)
    assert vader(None, openings) == [0.0] * len(openings)
    for r in train + test:
        content = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
        assert content.endswith(r["opening"])


CONFIGS = {"rm": RMConfig, "dpo": DPOConfig, "ppo": PPOConfig, "grpo": GRPOConfig, "rloo": RLOOConfig}
BETA = {"dpo": "beta", "ppo": "kl.beta", "rloo": "kl.beta", "grpo": "grpo.beta"}


def dry_run(out: Path, **env_vars: str) -> list[list[str]]:
    """run.sh's commands (DRY_RUN=1 prints them), split into words, with MODEL and OUT as given."""
    env = {**os.environ, "DRY_RUN": "1", **env_vars}
    done = subprocess.run(["bash", str(RECIPE / "run.sh"), "MODEL", str(out)], env=env, check=True,
                          capture_output=True, text=True)
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_run_sh_commands_parse_and_configs_load_at_three_betas(tmp_path):
    """Every command run.sh would run parses (tether's own parser for `tether ...`); each stage's config
    loads with the script's overrides; DPO, PPO, RLOO and GRPO each run at 3 distinct β; best-of-n at n =
    1, 4, 16; the RL configs' eval.gold is VADER."""
    commands = dry_run(tmp_path / "out")
    betas = {m: set() for m in BETA}
    stages = set()
    for words in commands:
        if words[1].endswith("best_of_n.py"):
            assert words[words.index("--ns") + 1 :][:3] == ["1", "4", "16"]
            continue
        args = build_parser().parse_args(words[1:])
        if args.command == "data":
            assert args.reward == "tether.sentiment:vader" and args.max_new_tokens == 48
            continue
        stage = args.command
        config = words[words.index("--config") + 1]
        overrides = [w for w in words if "=" in w and not w.startswith("--")]
        cfg = load_config(CONFIGS[stage], config, overrides)
        if hasattr(cfg, "eval") and hasattr(cfg.eval, "gold"):
            assert cfg.eval.gold == "tether.sentiment:vader"
        stages.add(stage)
        if stage in BETA:
            value = cfg
            for part in BETA[stage].split("."):
                value = getattr(value, part)
            assert f"{BETA[stage]}={value!r}" in overrides or f"{BETA[stage]}={value:g}" in overrides
            betas[stage].add(value)
    assert stages == set(CONFIGS)
    assert all(len(b) >= 3 for b in betas.values()), betas


def test_methods_chooses_the_trained_methods(tmp_path):
    """METHODS="dpo rloo": the pairs, the reward model, DPO and RLOO at their three β each, best-of-n; no PPO
    and no GRPO run."""
    words = dry_run(tmp_path / "out", METHODS="dpo rloo")
    stages = [w[1] if not w[1].endswith("best_of_n.py") else "best_of_n" for w in words]
    assert stages == ["data", "data", "rm", "dpo", "dpo", "dpo", "rloo", "rloo", "rloo", "best_of_n"]


def test_pairs_command_scores_with_vader_on_a_tiny_model(tmp_path):
    """run.sh's first step on a tiny random model and four recipe prompts: each record's scores are VADER's
    of its two texts (scored again here), and the summary's counts are the records'."""
    model = write_model_dir(tmp_path / "model")
    out = tmp_path / "pairs" / "train.jsonl"
    prompts = str(RECIPE / "data/prompts.test.jsonl")
    assert main(["data", "pairs", "--policy", str(model), "--prompts", prompts, "--reward",
                 "tether.sentiment:vader", "--out", str(out), "--noise", "0.25", "--limit", "4",
                 "--max-new-tokens", "4"]) == 0
    records = read_jsonl(out)
    summary = json.loads((tmp_path / "pairs" / "train.summary.json").read_text())
    assert summary["pairs"] == len(records) == 4 - summary["dropped_same_samples"] > 0
    for r in records:
        again = vader(None, [r["chosen"], r["rejected"]])
        assert [r["gold_chosen"], r["gold_rejected"]] == pytest.approx(again)
    assert summary["ties"] == sum(r["gold_chosen"] == r["gold_rejected"] for r in records)


def write_run(out: Path, method: str, beta: str, policy: list[str], base: list[str], kl: float) -> None:
    """A finished run as run.sh leaves it: OUT/<method>/beta-<β>/summary.json and `tether eval`'s
    summary.json and samples.jsonl in OUT/eval/<method>-beta-<β>/."""
    run, ev = out / method / f"beta-{beta}", out / "eval" / f"{method}-beta-{beta}"
    run.mkdir(parents=True)
    ev.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"wall_seconds": 100.0}))
    (ev / "summary.json").write_text(json.dumps({
        "instruments": {"kl_from_base": {"value": kl, "stderr": 0.5},
                        "reward_hacking": {"value": False, "reasons": []}},
        "rewards": {"policy": {"proxy": 1.5}}, "wall_seconds": 20.0}))
    rows = [{"prompt": "p", "policy": a, "base": b} for a, b in zip(policy, base, strict=True)]
    (ev / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_frontier_table_holds_each_runs_figures(tmp_path):
    """Two DPO runs and best-of-n. VADER scores (tests/test_sentiment.py): good 0.4404, terrible -0.4767,
    neutral 0. Base samples [good, terrible, neutral, neutral]: mean -0.009075. DPO β=0.1 samples
    [good, good, good, neutral]: mean 0.3303, s = 0.2202, half-width 1.96·0.2202/2 = 0.2158. Best-of-n
    rows come from its summary (half-width 1.96·0.05 = 0.098)."""
    frontier = recipe_module("frontier")
    out = tmp_path / "out"
    base = ["good", "terrible", "A table.", "A chair."]
    write_run(out, "dpo", "0.1", ["good", "good", "good", "A chair."], base, kl=3.0)
    write_run(out, "dpo", "0.5", base, base, kl=0.25)
    (out / "best_of_n").mkdir()
    (out / "best_of_n" / "summary.json").write_text(json.dumps({"wall_seconds": 50.0, "rows": [
        {"n": 4, "kl": 0.636, "proxy_reward": 2.0, "gold_reward": 0.2, "gold_stderr": 0.05, "prompts": 4}]}))
    assert frontier.main([str(out)]) == 0
    rows = json.loads((out / "frontier.json").read_text())
    assert [(r["method"], r["value"]) for r in rows] == [("base", None), ("dpo", 0.1), ("dpo", 0.5),
                                                         ("best-of-n", 4)]
    assert rows[0]["gold"] == pytest.approx(-0.009075, abs=1e-6)
    assert rows[1]["gold"] == pytest.approx(0.3303, abs=1e-6)
    s = math.sqrt((3 * 0.1101**2 + 0.3303**2) / 3)  # deviations from 0.3303: 0.1101 three times, -0.3303
    assert rows[1]["gold_half"] == pytest.approx(1.96 * s / 2)
    assert rows[1]["kl"] == 3.0 and rows[2]["kl"] == 0.25 and rows[3]["gold_half"] == pytest.approx(0.098)
    md = (out / "frontier.md").read_text()
    assert "| dpo | β = 0.1 | +0.330 [+0.115, +0.546] | +0.339 | 3.00 ± 0.50 | 1.500 | 100 | 20 | no |" in md
    assert "| best-of-n | n = 4 | +0.200 [+0.102, +0.298] |" in md
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:sentiment -->\nplaceholder\n<!-- /figures:sentiment -->\nend\n")
    top = tmp_path / "top" / "README.md"  # a second README elsewhere gets the same block
    top.parent.mkdir()
    top.write_text(readme.read_text())
    assert frontier.main([str(out), "--readme", str(readme), "--readme", str(top)]) == 0
    text = readme.read_text()
    assert "placeholder" not in text and "| dpo | β = 0.5 |" in text and text.endswith("end\n")
    assert (tmp_path / "frontier.png").is_file() and not (top.parent / "frontier.png").exists()
    assert "![frontier](frontier.png)" in text
    assert top.read_text() == text.replace("![frontier](frontier.png)", "![frontier](../frontier.png)")


def test_frontier_states_the_base_mean_the_rm_accuracy_the_whole_time_and_each_invocation(tmp_path):
    """Steps' own wall times: pairs 60 + 30 s, RM 120 s, two DPO runs 100 s each, their evaluations 20 s
    each, best-of-n 50 s: 500 s = 8.3 minutes over 8 steps. The base mean and the RM accuracy are read from
    their summaries; each line of OUT/invocations.jsonl (run.sh's) is stated."""
    frontier = recipe_module("frontier")
    out = tmp_path / "out"
    base = ["good", "terrible", "A table.", "A chair."]
    write_run(out, "dpo", "0.1", base, base, kl=1.0)
    write_run(out, "dpo", "0.5", base, base, kl=0.5)
    (out / "pairs").mkdir()
    (out / "pairs" / "train.summary.json").write_text(json.dumps({"pairs": 600, "gold_mean": 0.2,
                                                                  "wall_seconds": 60.0}))
    (out / "pairs" / "test.summary.json").write_text(json.dumps({"pairs": 120, "gold_mean": 0.26,
                                                                 "wall_seconds": 30.0}))
    (out / "rm").mkdir()
    (out / "rm" / "summary.json").write_text(json.dumps({
        "instruments": {"rm_test_accuracy": {"value": 0.812, "n": 117}}, "wall_seconds": 120.0}))
    (out / "best_of_n").mkdir()
    (out / "best_of_n" / "summary.json").write_text(json.dumps({"wall_seconds": 50.0, "rows": []}))
    (out / "invocations.jsonl").write_text(json.dumps({"date": "2026-12-02 02:30 UTC", "commit": "abc1234",
                                                       "cpu": "AMD EPYC", "cores": 2, "load": 0.5}) + "\n")
    assert frontier.main([str(out)]) == 0
    md = " ".join((out / "frontier.md").read_text().split())  # the paragraph is wrapped as the README is
    assert "held-out VADER mean over its 240 pair samples (OUT/pairs/test.summary.json): +0.260." in md
    assert "Reward model's held-out accuracy 0.812 (n = 117)." in md
    assert "The recipe's 8 steps took 8.3 minutes in all" in md
    stated = "run.sh started 2026-12-02 02:30 UTC at commit abc1234, 2 cores (AMD EPYC), load average 0.5."
    assert stated in md


def test_rm_follows_gold_against_vaders_own_scores():
    """Three held-out pairs (VADER chosen, rejected): (0.5, -0.5), (0.2, 0.2) a tie, (0.1, 0.3); a stand-in
    RM scores them (1, 0), (7, 7), (2, 1). Order: pair 1 agrees ((1−0)·(0.5+0.5) > 0), pair 3 does not
    ((2−1)·(0.1−0.3) < 0), the tie is left out: 1 of 2 = 0.5. Pearson over the six responses, RM [1, 7, 2,
    0, 7, 1] (mean 3) against VADER [0.5, 0.2, 0.1, −0.5, 0.2, 0.3] (mean 0.8/6): Σ products of deviations
    1.4, Σ squares 50 and 0.57333, r = 1.4/√(50·0.57333) = 0.26148. The provenance paragraph states both."""
    frontier = recipe_module("frontier")
    pairs = [{"prompt": "p1", "chosen": "a", "rejected": "b", "gold_chosen": 0.5, "gold_rejected": -0.5},
             {"prompt": "p2", "chosen": "c", "rejected": "d", "gold_chosen": 0.2, "gold_rejected": 0.2},
             {"prompt": "p3", "chosen": "e", "rejected": "f", "gold_chosen": 0.1, "gold_rejected": 0.3}]
    rm = {"a": 1, "b": 0, "c": 7, "d": 7, "e": 2, "f": 1}
    seen = []

    def score(prompts, responses):
        seen.append(list(prompts))
        return [rm[r] for r in responses]

    follows = frontier.rm_follows_gold(pairs, score)
    assert seen == [["p1", "p2", "p3", "p1", "p2", "p3"]]
    assert follows["order_agrees"] == 0.5 and follows["pairs"] == 2 and follows["responses"] == 6
    assert follows["r"] == pytest.approx(0.26148, abs=1e-5)
    text = " ".join(frontier.provenance(Path("/nonexistent"), follows).split())
    assert "Its scores correlate 0.26 (Pearson) with VADER's over the 6 held-out pair responses, and it " \
           "orders 0.500 of the 2 untied pairs as VADER does." in text


def test_a_training_run_stopped_part_way_resumes(tmp_path):
    """OUT/dpo/beta-0.1 holds a run's config.yaml but no summary.json (stopped part-way): its command gets
    --resume and parses; the finished OUT/dpo/beta-0.05 (summary.json) is skipped; the other runs, not
    started, get no --resume."""
    out = tmp_path / "out"
    (out / "dpo" / "beta-0.1").mkdir(parents=True)
    (out / "dpo" / "beta-0.1" / "config.yaml").write_text("beta: 0.1\n")
    (out / "dpo" / "beta-0.05").mkdir(parents=True)
    (out / "dpo" / "beta-0.05" / "summary.json").write_text("{}")
    commands = [w for w in dry_run(out, METHODS="dpo") if w[1] == "dpo"]
    outs = {w[w.index("--out") + 1]: w for w in commands}
    assert sorted(Path(o).name for o in outs) == ["beta-0.1", "beta-0.5"]
    for o, words in outs.items():
        assert ("--resume" in words) == o.endswith("beta-0.1")
        assert build_parser().parse_args(words[1:]).resume == o.endswith("beta-0.1")
