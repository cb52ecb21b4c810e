"""recipes/rlvr-arithmetic: the shipped problems are the generator's output, sized as promised, disjoint, and
each answer is right (recomputed here from the question's text by a pattern per template, not by the
generator's code); and the recipe's code path — run.sh itself: the base evaluation, GRPO and RLOO from its
configs with its overrides, figures.py — runs on a tiny random model, with a table whose numbers are the
runs' summaries'. Long runs on SmolLM2 are not tests (the README says how to run them)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plumbing_helpers import load_script, write_model_dir

from tether.config import GRPOConfig, RLOOConfig, SFTConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "rlvr-arithmetic"
INSTRUCTION = " Give the final answer on the last line as 'Answer: <number>'."


def _module(name: str):
    return load_script(RECIPE / f"{name}.py", f"rlvr_{name}")


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (RECIPE / "data" / name).read_text().splitlines()]


def test_the_shipped_files_are_the_generator_s_output_byte_for_byte():
    built = _module("make_data").build()
    assert sorted(built) == ["sft.jsonl", "test.jsonl", "train.jsonl"]
    for name, text in built.items():
        assert (RECIPE / "data" / name).read_bytes() == text.encode("utf-8"), name
    assert _module("make_data").main(["--check"]) == 0


def test_sizes_steps_and_no_question_in_both_sets():
    train, test = _records("train.jsonl"), _records("test.jsonl")
    assert len(train) >= 1000 and len(test) >= 200
    for r in train + test:
        assert set(r) == {"prompt", "answer", "steps"} and r["steps"] in (1, 2)
        [turn] = r["prompt"]
        assert turn["role"] == "user" and turn["content"].endswith(INSTRUCTION)
    assert {r["steps"] for r in test} == {1, 2}
    questions = [r["prompt"][0]["content"] for r in train + test]
    assert len(set(questions)) == len(questions)


N = r"(\d+)"
W = r"([A-Z][a-z]+)"
# (pattern of a question, its answer from the pattern's numbers, steps), one per template, written from the
# questions' wording: the number groups in order of appearance
ANSWERS = [
    (rf"{W} has {N} \w+\. \1 buys {N} more\. How many \w+ does \1 have now\?", lambda a, b: a + b, 1),
    (rf"{W} had {N} \w+ and gave {N} of them to {W}\. How many \w+ does \1 have left\?",
     lambda a, b: a - b, 1),
    (rf"A shop sells one \w+ for {N} dollars\. How many dollars do {N} \w+ cost\?", lambda p, n: p * n, 1),
    (rf"A train has {N} cars\. At the station {N} more cars are added\. How many cars does the train have "
     r"now\?", lambda a, b: a + b, 1),
    (rf"{W} is {N} years old\. How old will \1 be in {N} years\?", lambda a, b: a + b, 1),
    (rf"{W} is {N} years old\. {W} is {N} years younger than \1\. How old is \3\?", lambda a, b: a - b, 1),
    (rf"There are {N} boxes with {N} eggs in each box\. How many eggs are there in all\?",
     lambda k, m: k * m, 1),
    (rf"{N} cookies are shared equally among {N} children\. How many cookies does each child get\?",
     lambda c, k: c // k if c % k == 0 else None, 1),
    (rf"{W} has {N} (\w+), buys {N} more and then eats {N}\. How many \3 does \1 have left\?",
     lambda a, b, c: a + b - c, 2),
    (rf"One \w+ costs {N} dollars\. {W} buys {N} \w+ and pays with a {N}-dollar bill\. How many dollars of "
     r"change does \2 get\?", lambda p, n, bill: bill - p * n, 2),
    (rf"A train leaves with {N} passengers\. At the first stop {N} passengers get off and {N} get on\. How "
     r"many passengers are on the train now\?", lambda a, b, c: a - b + c, 2),
    (rf"{W} is {N} years old\. {W} is twice as old as \1\. How old will \3 be in {N} years\?",
     lambda a, b: 2 * a + b, 2),
    (rf"{W} has {N} bags with {N} (\w+) in each bag and gives away {N} \4\. How many \4 does \1 have left\?",
     lambda k, m, c: k * m - c, 2),
    (rf"{W} reads {N} pages every day for {N} days and then {N} more pages\. How many pages does \1 read in "
     r"all\?", lambda p, d, q: p * d + q, 2),
    (rf"{W} buys {N} \w+ at {N} dollars each and one \w+ for {N} dollars\. How many dollars does \1 spend\?",
     lambda n, p, q: n * p + q, 2),
    (rf"{W} has {N} (\w+) and buys {N} more\. \1 shares all of them equally among {N} friends\. How many \3 "
     r"does each friend get\?", lambda a, b, k: (a + b) // k if (a + b) % k == 0 else None, 2),
]


def test_every_answer_is_right_recomputed_from_the_question():
    """Each question matches exactly one pattern; the answer recomputed from its numbers (a share must
    divide exactly) is the record's, ≥ 0, and the record's steps are the pattern's."""
    used = set()
    for r in _records("train.jsonl") + _records("test.jsonl"):
        question = r["prompt"][0]["content"][: -len(INSTRUCTION)]
        found = [(i, m) for i, (p, _, _) in enumerate(ANSWERS) if (m := re.fullmatch(p, question))]
        assert len(found) == 1, question
        i, m = found[0]
        _, answer, steps = ANSWERS[i]
        numbers = [int(g) for g in m.groups() if g.isdigit()]
        value = answer(*numbers)
        assert value is not None and value >= 0, question
        assert r["answer"] == str(value) and r["steps"] == steps, question
        used.add(i)
    assert used == set(range(len(ANSWERS)))  # every template is in the data


STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def test_sft_replies_work_each_step_and_end_on_the_training_answer():
    """sft.jsonl: 250 training problems, each reply one line `a op b = c` per step of the problem (c
    recomputed here), each later step starting from the one before's result, and a last line `Answer: N`
    with N the training record's answer, which `tether.verifiable.correct` and `format` both reward 1."""
    from tether.verifiable import correct
    from tether.verifiable import format as answer_format

    sft, train = _records("sft.jsonl"), {json.dumps(r["prompt"]): r for r in _records("train.jsonl")}
    assert len(sft) == 250
    for r in sft:
        user, reply = r["messages"]
        problem = train[json.dumps([user])]  # a training problem, given as the user turn
        *steps, last = reply["content"].split("\n")
        assert len(steps) == problem["steps"] and last == f"Answer: {problem['answer']}"
        result = None
        for line in steps:
            a, op, b, c = STEP.fullmatch(line).groups()
            assert OPS[op](int(a), int(b)) == int(c), line
            assert result is None or int(a) == result or int(b) == result, reply
            result = int(c)
        assert str(result) == problem["answer"]
        assert correct([user], [reply["content"]], [problem["answer"]]) == [1.0]
        assert answer_format([user], [reply["content"]]) == [1.0]


# ----------------------------------------------------------------------------------------- the recipe

SMALL = ["iterations=1", "rollout.batch_size=2", "train.batch_size=8", "train.micro_batch_size=8",
         "train.threads=1", "train.progress=false"]  # what the test passes to run.sh for the RL runs


def test_the_configs_load_with_run_sh_s_overrides():
    """run.sh sets policy, eval.max_prompts and rollout.max_new_tokens; the rest is the YAML's: the reward is
    correct + 0.1·format, the gold is correct, on the shipped files."""
    common = ["policy=/models/smol", "eval.max_prompts=200", "rollout.max_new_tokens=64"]
    for cls, name in ((GRPOConfig, "grpo"), (RLOOConfig, "rloo")):
        cfg = load_config(cls, RECIPE / f"{name}.yaml", common)
        assert cfg.reward.source == "tether.verifiable:correct" and cfg.reward.weight == 1.0
        assert [(t.source, t.weight) for t in cfg.reward.extra] == [("tether.verifiable:format", 0.1)]
        assert cfg.eval.gold == "tether.verifiable:correct"
        assert cfg.data.train == "recipes/rlvr-arithmetic/data/train.jsonl"
        assert cfg.data.test == "recipes/rlvr-arithmetic/data/test.jsonl"
        load_config(cls, RECIPE / f"{name}.yaml", [*common, *SMALL])
    sft = load_config(SFTConfig, RECIPE / "sft.yaml", ["model=/models/smol"])
    assert sft.data.train == "recipes/rlvr-arithmetic/data/sft.jsonl" and sft.data.too_long == "error"


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval at z = 1.959964, written out here: (p + z²/2n ± z√(p(1−p)/n + z²/4n²)) /
    (1 + z²/n)."""
    z, p = 1.959964, k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.slow
def test_run_sh_runs_the_recipe_on_a_tiny_model_and_the_table_is_the_summaries(tmp_path):
    """run.sh with a tiny random Llama (tests/plumbing_helpers), 4 held-out prompts and 4 new tokens, two
    SFT steps, one iteration of 2 prompts × 4 responses per method: every stage finishes, the RL runs start
    from the SFT model, and results.md's rows carry each run's accuracies (Wilson interval recomputed
    here), their changes from its start and from the base model, n, KL and wall time as its summary.json
    has them."""
    model = write_model_dir(tmp_path / "model")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "TETHER": f"{sys.executable} -m tether.cli",
           "EVAL_PROMPTS": "4", "NEW_TOKENS": "4", "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
           "SFT_ARGS": "train.max_steps=2 train.threads=1 train.progress=false"}
    done = subprocess.run(["bash", str(RECIPE / "run.sh"), str(model), str(out), *SMALL], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (out / "results.md").read_text()
    assert text == done.stdout[-len(text):]
    base = json.loads((out / "base" / "summary.json").read_text())
    b = base["rewards"]["base"]["gold"]
    assert f"held-out accuracy {100 * b:.1f} %" in text
    for name in ("grpo", "rloo"):
        summary = json.loads((out / name / "summary.json").read_text())
        [row] = [line for line in text.splitlines() if line.startswith(f"| {name.upper()} |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        n = summary["instruments"]["win_rate_vs_base"]["n"]
        assert n == 4 and cells[5] == "4"
        for cell, side in ((cells[1], "policy"), (cells[2], "base")):
            acc = summary["rewards"][side]["gold"]
            lo, hi = _wilson(round(acc * n), n)
            assert cell == f"{100 * acc:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]", (cell, acc)
        kl = summary["instruments"]["kl_from_base"]
        assert cells[7] == f"{kl['value']:.2f} ± {kl['stderr']:.2f}"
        assert cells[10] == "1" and cells[11] == f"{summary['wall_seconds']:.0f} s"
        assert cells[9] in ("clear", "flagged")
        start = summary["rewards"]["base"]["gold"]  # the SFT model, which the RL run starts from
        assert cells[3] == f"{100 * (summary['rewards']['policy']['gold'] - start):+.1f} points"
        assert cells[4] == f"{100 * (summary['rewards']['policy']['gold'] - b):+.1f} points"
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        assert config["policy"] == str(out / "sft" / "model")


def _fake_run(out: Path, name: str, policy: tuple[float, float], base: tuple[float, float]) -> None:
    """OUT/name as an RL run of the recipe leaves it, with only what figures.py reads: (proxy, gold) means
    of the policy's and the base's held-out samples, n = 200, KL 3.2 ± 0.4 nats, two training iterations."""
    run = out / name
    run.mkdir(parents=True)
    instruments = {"kl_from_base": {"value": 3.2, "stderr": 0.4, "n": 200},
                   "win_rate_vs_base": {"value": 0.5, "n": 200, "judge": "tether.verifiable:correct"}}
    rewards = {"policy": dict(zip(("proxy", "gold"), policy, strict=True)),
               "base": dict(zip(("proxy", "gold"), base, strict=True))}
    summary = {"instruments": instruments, "rewards": rewards, "iterations": 2, "wall_seconds": 1234.4}
    (run / "summary.json").write_text(json.dumps(summary))
    config = {"reward": {"source": "tether.verifiable:correct", "weight": 1.0,
                         "extra": [{"source": "tether.verifiable:format", "weight": 0.1}]},
              "provenance": {"git_commit": "abc1234"}}
    (run / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
    metrics = [{"kind": "train", "iteration": 1, "response_length": 40.0, "reward/correct": 0.25},
               {"kind": "eval", "iteration": 2, "reward": 0.3},
               {"kind": "train", "iteration": 2, "response_length": 12.5, "reward/correct": 0.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def test_the_table_flags_a_policy_that_games_the_format_check(tmp_path):
    """GRPO games the format: proxy 0.33 → 0.35 (up) while the accuracy falls 0.31 → 0.25 (0.06, past the
    0.05 of hacking.gold_drop_min): flagged. Its format rate is (0.35 − 0.25)/0.1 = 100.0 % against the
    base's (0.33 − 0.31)/0.1 = 20.0 %. RLOO improves honestly (accuracy 0.31 → 0.45, proxy up too): clear.
    Change −6.0 and +14.0 points; Wilson intervals of 50/200 and 62/200 (0.25 and 0.31 of 200)."""
    out = tmp_path / "out"
    _fake_run(out, "grpo", policy=(0.35, 0.25), base=(0.33, 0.31))
    _fake_run(out, "rloo", policy=(0.52, 0.45), base=(0.33, 0.31))
    (out / "base").mkdir()
    (out / "base" / "summary.json").write_text((out / "grpo" / "summary.json").read_text())
    text = _module("figures").table(out)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith(("| GRPO", "| RLOO"))}
    lo, hi = _wilson(50, 200)
    assert rows["GRPO"][1] == f"25.0 % [{100 * lo:.1f}, {100 * hi:.1f}]"
    lo, hi = _wilson(62, 200)
    assert rows["GRPO"][2] == f"31.0 % [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert rows["GRPO"][3:] == ["-6.0 points", "-6.0 points", "200", "100.0 % / 20.0 %", "3.20 ± 0.40",
                                "40.0 → 12.5", "flagged", "2", "1234 s", "abc1234"]
    assert rows["RLOO"][3:5] == ["+14.0 points", "+14.0 points"] and rows["RLOO"][9] == "clear"
    assert "GRPO flagged: proxy_up_gold_down: proxy reward 0.33 → 0.35, gold reward 0.31 → 0.25" in text
    assert "RLOO flagged" not in text
    assert "GRPO training accuracy (reward/correct) by iteration: 0.25 0.50" in text
    # no SFT here; base evaluation, GRPO and RLOO each 1234.4 s: 3703.2 s = 61.7 min
    assert text.endswith("took 61.7 min in all (their own wall times: base evaluation 1234 s, GRPO 1234 s, "
                         "RLOO 1234 s).\n")
    # --write, given twice, puts the same table into both files' rlvr blocks
    files = [tmp_path / "a.md", tmp_path / "b.md"]
    for f in files:
        f.write_text("x\n<!-- figures:rlvr -->\nold\n<!-- /figures:rlvr -->\ny\n")
    assert _module("figures").main([str(out), "--write", str(files[0]), "--write", str(files[1])]) == 0
    for f in files:
        assert f.read_text() == f"x\n<!-- figures:rlvr -->\n{text}<!-- /figures:rlvr -->\ny\n"
