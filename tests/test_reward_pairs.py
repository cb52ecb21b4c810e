"""Preference pairs labelled by a reward with Bradley-Terry noise (tether.reward_pairs, `tether data pairs`):
the labelling probability worked out by hand, noise 0 exactly, the prompt columns reaching the reward, and
the command on a tiny random model."""

import json
import math

import pytest
from plumbing_helpers import write_jsonl, write_model_dir

from tether.cai.label import Pair
from tether.cli import main
from tether.errors import TetherError
from tether.preferences import load_preferences
from tether.reward_pairs import label_by_reward

SCORES = {"low": 0.0, "high": math.log(3.0), "mid": 0.5}


def by_text(prompts, responses, **columns):
    """The score of a reply is looked up by its text."""
    return [SCORES[r] for r in responses]


def test_bradley_terry_share_matches_the_hand_worked_probability():
    """g_high − g_low = ln 3, so at noise 1 P(high chosen) = σ(ln 3) = 3 / (3 + 1) = 0.75, whichever side
    it is shown on. 4000 seeded draws: the share chosen lies within 3 standard errors, 3·sqrt(0.75·0.25 /
    4000) = 0.021, of 0.75; the expected share the summary reports is 0.75 exactly. At noise 2 the
    probability is σ(ln 3 / 2) = √3 / (√3 + 1) = 0.6340."""
    pairs = [Pair("p", "high", "low") if i % 2 else Pair("p", "low", "high") for i in range(4000)]
    records, summary = label_by_reward(pairs, by_text, noise=1.0, seed=3)
    share = sum(r["chosen"] == "high" for r in records) / len(records)
    assert abs(share - 0.75) < 0.021
    assert summary["chosen_higher"] == share and summary["ties"] == 0
    assert summary["expected_chosen_higher"] == pytest.approx(0.75, abs=1e-12)
    assert summary["gold_mean"] == pytest.approx(math.log(3.0) / 2)
    _, at_two = label_by_reward(pairs, by_text, noise=2.0, seed=3)
    assert at_two["expected_chosen_higher"] == pytest.approx(math.sqrt(3) / (math.sqrt(3) + 1), abs=1e-12)


def test_noise_zero_always_chooses_the_higher_score_and_records_the_scores():
    """Noise 0: the higher score is chosen on every pair, each side's score stored with it; a tie (the same
    score on both sides) is a coin flip and counted."""
    pairs = [Pair("p", "low", "mid"), Pair("p", "high", "mid"), Pair("p", "mid", "low")] * 50
    records, summary = label_by_reward(pairs, by_text, noise=0.0, seed=0)
    assert all(r["gold_chosen"] == SCORES[r["chosen"]] > r["gold_rejected"] == SCORES[r["rejected"]]
               for r in records)
    assert [r["chosen"] for r in records[:3]] == ["mid", "high", "mid"]
    assert summary["chosen_higher"] == 1.0 and summary["expected_chosen_higher"] == 1.0
    ties = [Pair("p", "mid", "mid")] * 200
    records, summary = label_by_reward(ties, by_text, noise=0.0, seed=0)
    assert summary["ties"] == 200 and summary["chosen_higher"] == summary["expected_chosen_higher"] == 0.0


def test_the_reward_receives_the_prompt_records_columns_and_bad_noise_is_refused():
    seen = {}

    def reads_topic(prompts, responses, topic):
        seen["topic"] = list(topic)
        return [1.0 if t == r else 0.0 for r, t in zip(responses, topic, strict=True)]

    pairs = [Pair("p", "x", "y", columns={"topic": "y"}), Pair("q", "x", "y", columns={"topic": "x"})]
    records, _ = label_by_reward(pairs, reads_topic, noise=0.0)
    assert seen["topic"] == ["y", "x"] and [r["chosen"] for r in records] == ["y", "x"]
    with pytest.raises(TetherError, match="noise must be >= 0"):
        label_by_reward(pairs, reads_topic, noise=-1.0)


def test_data_pairs_command_on_a_tiny_model(tmp_path, capsys):
    """`tether data pairs` with the reward "number of a's in the reply" at noise 0: every record's chosen
    side has at least the rejected side's count (recounted here from the text), the pairs file is what
    `tether rm` / `tether dpo` read, the summary's counts add up, and the same seed writes the same file."""
    model = write_model_dir(tmp_path / "model")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": w} for w in "a b c d e f".split()])
    out = tmp_path / "pairs" / "train.jsonl"
    args = ["data", "pairs", "--policy", str(model), "--prompts", str(prompts), "--reward",
            "reward_helpers:count_a", "--out", str(out), "--per-prompt", "2", "--noise", "0",
            "--max-new-tokens", "6", "--seed", "1"]
    assert main(args) == 0
    assert "pairs (" in capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    summary = json.loads((tmp_path / "pairs" / "train.summary.json").read_text())
    assert summary["pairs"] == len(records) > 0
    assert summary["pairs"] + summary["dropped_same_samples"] == 6 * 2
    for r in records:
        assert r["gold_chosen"] == r["chosen"].split().count("a") >= r["rejected"].split().count("a")
        assert r["gold_rejected"] == r["rejected"].split().count("a")
    higher = sum(r["gold_chosen"] > r["gold_rejected"] for r in records) / len(records)
    assert summary["chosen_higher"] == higher
    assert len(load_preferences(out)) == len(records)
    first = out.read_text()
    assert main(args) == 0 and out.read_text() == first
    assert main([*args[:-2], "--per-prompt", "0"]) == 2
    assert "--per-prompt must be at least 1" in capsys.readouterr().err
    mine = tmp_path / "mine.jsonl"  # a file tether did not write is never replaced
    mine.write_text("my notes\n")
    assert main([*args[:9], str(mine), *args[10:]]) == 2
    assert "mine.jsonl exists and is not an earlier `tether data pairs` output" in capsys.readouterr().err
    assert mine.read_text() == "my notes\n" and not (tmp_path / "mine.summary.json").exists()
