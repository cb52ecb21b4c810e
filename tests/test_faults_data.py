"""The fault-injection suite, data files (issue 21, item 7) and reward code (item 9): each bad file given to
`tether sft|rm|dpo|ppo|grpo|rloo` ends with exit code 2, one line naming FILE:LINE and the problem, and
every file that was there before untouched (tests/fault_helpers.py). The RL commands read and check their
whole prompt files before any model loads: `load_policy` is made to fail the test if it is reached."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
from pathlib import Path

import pytest
import yaml
from fault_helpers import refused, run_tether
from plumbing_helpers import write_jsonl, write_model_dir
from ppo_helpers import TOY_REWARD

import tether.trainers.rl

LAB = ["what is 3 plus 4 ? answer:", "which is bigger : 4 or 7 ? answer:"]  # two of the lab's prompts
USER, ASSISTANT = {"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}
SFT_OK, PAIR_OK = {"prompt": "a b", "completion": "b a"}, {"prompt": "a b", "chosen": "b a", "rejected": "c"}
LAB_OK = [{"prompt": p} for p in LAB]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("faults-data") / "model")


@pytest.fixture
def no_model_loads(monkeypatch):
    def fail(cfg):
        raise AssertionError(f"a model was loaded ({cfg.policy}) before the data was checked")

    monkeypatch.setattr(tether.trainers.rl, "load_policy", fail)


def bad_bytes(path: Path, good: dict, bad: bytes) -> Path:
    """Line 1 a good record, line 2 `bad` (raw bytes)."""
    path.write_bytes(json.dumps(good).encode() + b"\n" + bad + b"\n")
    return path


def truncated_gzip(path: Path) -> Path:
    """A gzip stream (whatever the file's name) cut after 40 bytes: no line of it decodes."""
    rng = random.Random(0)
    text = "".join(json.dumps({"prompt": f"{rng.getrandbits(128):032x}"}) + "\n" for _ in range(200))
    path.write_bytes(gzip.compress(text.encode())[:40])
    return path


def surrogate(path: Path, good: dict, bad_line: str) -> Path:
    """Line 2 `bad_line` as written (its JSON escapes kept)."""
    path.write_text(json.dumps(good) + "\n" + bad_line + "\n")
    return path


def records(path: Path, *rows: dict) -> Path:
    return write_jsonl(path, list(rows))


# (command, {file: writer}, expected line) — `train`/`test` name the command's data.train/data.test
SFT_CASES = [
    ({"train": lambda p: bad_bytes(p, SFT_OK, b'{"prompt": "a\xff", "completion": "b"}')},
     r"train\.jsonl:2: byte 0xff at byte 14 is not UTF-8"),
    ({"train": truncated_gzip}, r"train\.jsonl:1: corrupt or truncated gzip data"),
    ({"train": lambda p: surrogate(p, SFT_OK, r'{"prompt": "a", "completion": "b \ud800"}')},
     r"train\.jsonl:2: lone surrogate in 'completion'"),
    ({"train": lambda p: records(p, SFT_OK, {"messages": [{"role": "human", "content": "a"}, ASSISTANT]})},
     r"train\.jsonl:2: messages\[0\] has role 'human'"),
    ({"train": lambda p: records(p, SFT_OK, {"messages": [USER, ASSISTANT, ASSISTANT]})},
     r"train\.jsonl:2: the prompt ends on an assistant turn"),
    ({"train": lambda p: records(p, SFT_OK),
      "test": lambda p: bad_bytes(p, SFT_OK, b'{"prompt": "\xe9t\xe9", "completion": "b"}')},
     r"test\.jsonl:2: byte 0xe9 at byte 13 is not UTF-8"),
]
PAIR_CASES = [
    ({"train": lambda p: records(p, {"prompt": "a", "chosen": "b", "rejected": "b"}, {"prompt": "c",
                                     "chosen": "d", "rejected": "d"})},
     r"train\.jsonl: every pair \(2\) has chosen == rejected"),
    ({"train": lambda p: records(p, PAIR_OK, {"prompt": [USER, ASSISTANT], "chosen": "a", "rejected": "b"})},
     r"train\.jsonl:2: the prompt ends on an assistant turn"),
    ({"train": lambda p: surrogate(p, PAIR_OK, r'{"prompt": "a", "chosen": "b", "rejected": "\udfff"}')},
     r"train\.jsonl:2: lone surrogate in 'rejected'"),
    ({"train": lambda p: records(p, PAIR_OK, {"prompt": [{"role": "Human", "content": "a"}], "chosen": "a",
                                              "rejected": "b"})},
     r"train\.jsonl:2: prompt\[0\] has role 'Human'; tether takes 'system', 'user' and 'assistant'"),
    ({"train": truncated_gzip}, r"train\.jsonl:1: corrupt or truncated gzip data"),
    ({"train": lambda p: records(p, PAIR_OK),
      "test": lambda p: surrogate(p, PAIR_OK, r'{"prompt": [{"role": "user", "content": "\ud83d"}], '
                                              r'"chosen": "b", "rejected": "c"}')},
     r"test\.jsonl:2: lone surrogate in 'prompt\[0\]\.content'"),
]
PROMPT_CASES = [  # with reward.source = the toy reward
    ({"train": lambda p: records(p, {"prompt": "a b"}, {"prompt": "  "})}, r"train\.jsonl:2: empty prompt"),
    ({"train": lambda p: records(p, {"prompt": "a b"}, {"prompt": [USER, ASSISTANT]})},
     r"train\.jsonl:2: the prompt ends on an assistant turn"),
    ({"train": lambda p: bad_bytes(p, {"prompt": "a"}, b'{"prompt": "a \x80"}')},
     r"train\.jsonl:2: byte 0x80 at byte 15 is not UTF-8"),
    ({"train": lambda p: surrogate(p, {"prompt": "a"}, r'{"prompt": "a", "answer": "\ud800"}')},
     r"train\.jsonl:2: lone surrogate in 'answer'"),
    ({"train": lambda p: records(p, {"prompt": [{"role": "bot", "content": "a"}]})},
     r"train\.jsonl:1: prompt\[0\] has role 'bot'"),
    ({"train": truncated_gzip}, r"train\.jsonl:1: corrupt or truncated gzip data"),
    ({"train": lambda p: records(p, {"prompt": "a"}),
      "test": lambda p: records(p, {"prompt": "a"}, {"x": 1})},
     r"test\.jsonl:2: missing column 'prompt'"),
]
GOLD_CASES = [  # with reward.source=gold: every prompt of both files must be the lab's
    ({"train": lambda p: records(p, *LAB_OK, {"prompt": [USER]}, *LAB_OK)},
     r"train\.jsonl:3: not a lab prompt \(a messages list\): the gold reward scores lab prompts only"),
    ({"train": lambda p: records(p, *LAB_OK, *LAB_OK, {"prompt": "what is 3 plus 4 ?"})},
     r"train\.jsonl:5: not a lab prompt: the gold reward scores lab prompts only"),
    ({"train": lambda p: records(p, *LAB_OK), "test": lambda p: records(p, LAB_OK[0], {"prompt": "a b"})},
     r"test\.jsonl:2: not a lab prompt"),
    ({"train": lambda p: records(p, *LAB_OK, {"prompt": ""})}, r"train\.jsonl:3: empty prompt"),
]
MODEL_KEY = {"sft": "model", "rm": "model", **dict.fromkeys(("dpo", "ppo", "grpo", "rloo"), "policy")}
CASES = [
    *(("sft", files, match, ()) for files, match in SFT_CASES),
    *((cmd, files, match, ()) for cmd in ("rm", "dpo") for files, match in PAIR_CASES),
    *((cmd, files, match, (f"reward.source={TOY_REWARD}",)) for cmd in ("ppo", "grpo", "rloo")
      for files, match in PROMPT_CASES),
    *((cmd, files, match, ("reward.source=gold",)) for cmd in ("ppo", "grpo", "rloo")
      for files, match in GOLD_CASES),
    ("grpo", GOLD_CASES[1][0], GOLD_CASES[1][1],  # gold as a weighted extra term
     (f"reward.source={TOY_REWARD}", "reward.extra=[{source: gold, weight: 0.5}]")),
]


@pytest.mark.parametrize(("command", "files", "match", "extra"), CASES)
def test_bad_data_is_refused_with_file_and_line(
    capsys, tmp_path, model, no_model_loads, command, files, match, extra
):
    data = tmp_path / "data"
    data.mkdir()
    argv = [command, f"{MODEL_KEY[command]}={model}", "train.progress=false", *extra]
    for split, write in files.items():
        argv.append(f"data.{split}={write(data / f'{split}.jsonl')}")
    refused(capsys, [*argv, "--out", str(tmp_path / "run")], match, keep=[data, model])


def test_gold_weighted_zero_does_not_need_lab_prompts(capsys, tmp_path, model, no_model_loads):
    """reward.weight=0 leaves the gold reward out, so a non-lab prompt passes the data check (and reaches
    the model load, which this test's guard turns into an AssertionError)."""
    train = records(tmp_path / "train.jsonl", *LAB_OK, {"prompt": "a b"})
    argv = ["grpo", f"policy={model}", f"data.train={train}", "reward.source=gold", "reward.weight=0",
            f"reward.extra=[{{source: {TOY_REWARD}, weight: 1}}]", "--out", str(tmp_path / "run")]
    with pytest.raises(AssertionError, match="a model was loaded"):
        run_tether(argv, capsys)


# ------------------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def mixed_run(model, tmp_path_factory):
    """A PPO run on the toy reward whose prompt files are lab prompts with a messages prompt among them (a
    TypeError mid-run before: the gold reward was logged because the first prompt was the lab's)."""
    tmp = tmp_path_factory.mktemp("mixed")
    mixed = records(tmp / "prompts.jsonl", *LAB_OK * 3, {"prompt": [USER]}, *LAB_OK * 5)
    argv = ["ppo", f"policy={model}", f"data.train={mixed}", f"data.test={mixed}",
            f"reward.source={TOY_REWARD}", "iterations=1", "rollout.batch_size=16",
            "rollout.max_new_tokens=2", "ppo.epochs=1", "train.batch_size=16", "train.micro_batch_size=16",
            "eval.max_prompts=16", "train.progress=false", "--out", str(tmp / "run")]
    return argv, tmp / "run"


def test_a_file_of_lab_and_other_prompts_trains_without_the_gold_reward(capsys, mixed_run):
    argv, run = mixed_run
    code, _, err = run_tether(argv, capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows if "gold" in r] == [None, None]  # one train row, one eval row
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rewards"]["policy"]["gold"] is None
    assert summary["instruments"]["win_rate_vs_base"]["judge"] == "proxy"


def test_config_records_the_reward_code_it_imported(capsys, mixed_run):
    """reward.source=ppo_helpers:count_a imports tests/ppo_helpers.py: its path and sha256 are recorded."""
    argv, run = mixed_run
    if not (run / "config.yaml").exists():
        assert run_tether(argv, capsys)[0] == 0
    helpers = Path(__file__).with_name("ppo_helpers.py").resolve()
    code = yaml.safe_load((run / "config.yaml").read_text())["provenance"]["code"]
    sha256 = hashlib.sha256(helpers.read_bytes()).hexdigest()
    assert code == {TOY_REWARD: {"path": str(helpers), "sha256": sha256}}


def test_imported_code_names_each_function_source_of_a_weighted_reward():
    """GRPO/RLOO's sum of sources: the function term is recorded, 'gold' (tether's own code) is not."""
    from tether.rewards import WeightedReward, gold, imported_code

    helpers = Path(__file__).with_name("ppo_helpers.py").resolve()
    sha256 = hashlib.sha256(helpers.read_bytes()).hexdigest()
    both = WeightedReward([("gold", 1.0), (TOY_REWARD, 0.5)])
    assert imported_code(both) == {TOY_REWARD: {"path": str(helpers), "sha256": sha256}}
    assert imported_code(gold) == {}


@pytest.mark.parametrize("command", ["ppo", "grpo", "rloo"])
def test_help_says_that_a_reward_function_is_code_that_runs(capsys, command):
    code, out, _ = run_tether([command, "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    assert "imports that module and runs it" in text and "provenance" in text


def test_a_partial_tie_is_reported_and_left_out(capsys, caplog, tmp_path, model):
    """Four pairs, one tie (line 3): one warning with the count, and the run evaluates on 4 − 1 = 3 pairs."""
    tie = {"prompt": "c", "chosen": "d e", "rejected": "d e"}
    pairs = records(tmp_path / "pairs.jsonl", PAIR_OK, {"prompt": "b", "chosen": "c", "rejected": "d"}, tie,
                    {"prompt": "d", "chosen": "e", "rejected": "f"})
    argv = ["rm", f"model={model}", f"data.train={pairs}", f"data.test={pairs}", "train.max_steps=1",
            "train.batch_size=3", "train.micro_batch_size=3", "train.progress=false",
            "--out", str(tmp_path / "run")]
    with caplog.at_level(logging.WARNING, logger="tether.data"):
        code, _, err = run_tether(argv, capsys)
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "chosen == rejected" in r.getMessage()]
    assert warned == [f"{pairs}: 1 of 4 pairs have chosen == rejected (first at {pairs}:3); left out: a tie "
                      "states no preference (its loss is log 2 whatever the model)"] * 2  # train, then test
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_pairs"] == 3


def test_the_lab_critic_refuses_a_prompt_that_is_not_the_labs_before_any_model_loads(capsys, tmp_path):
    """`tether cai revise --critic lab` edits lab replies as the lab rater reads them: a real chat prompt on
    line 2 is named by FILE:LINE before the policy is loaded (here it does not even exist), and nothing is
    written."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "what is 3 plus 4 ? answer:"},
                                                       {"prompt": "How do I bake bread?"}])
    refused(capsys, ["cai", "revise", "--critic", "lab", "--prompts", str(prompts), "--policy",
                     str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")],
            rf"{prompts}:2: not a lab prompt", keep=[tmp_path])
    assert not (tmp_path / "out").exists()
