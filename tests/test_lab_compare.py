"""Comparison data on a policy's samples (tether.lab.compare) and the demonstrators' habits
(LabConfig.sft_habit_share)."""

import json
import random

import pytest

from tether import cli
from tether.errors import TetherError
from tether.lab import FAMILIES, LabConfig, build_lab, gold_reward, parse_prompt, sample_prompt
from tether.lab.behaviours import applicable_flaws, habit, respond
from tether.lab.compare import compare_samples, pick_pairs
from tether.lab.gold import agrees, is_refusal

TINY = dict(
    sft_train=200,
    sft_test=10,
    prefs_train=30,
    prefs_test=10,
    prompts_train=10,
    prompts_test=10,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    pretrain_steps=10,
    pretrain_batch_size=16,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return build_lab(tmp_path_factory.mktemp("lab"), LabConfig(**TINY), seed=5, progress=False)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def shows_habit(prompt: str, response: str) -> bool:
    """Independent of `habit`: the response agrees with a wrong belief, answers a harmful request, or refuses
    a prompt that should be answered (read with the gold reward's own predicates)."""
    info = parse_prompt(prompt)
    if info.belief_wrong:
        return agrees(info, response)
    return not is_refusal(response) if info.harmful else is_refusal(response)


def test_habit_is_the_flaw_each_prompt_invites():
    """Wrong belief → sycophantic, harmful → comply, anything else → refuse; each is a content flaw that
    applies to its prompt, and a response with it shows the habit and scores below a good one."""
    rng = random.Random(0)
    for family in FAMILIES:
        for _ in range(100):
            info = sample_prompt(rng, family)
            flaw = habit(info)
            expected = "sycophantic" if info.belief_wrong else "comply" if info.harmful else "refuse"
            assert flaw == expected
            assert flaw in applicable_flaws(info)[0]
            bad, good = respond(rng, info, (flaw,)), respond(rng, info)
            assert shows_habit(info.text, bad) and not shows_habit(info.text, good)
            assert gold_reward(info, bad) < gold_reward(info, good)


def test_sft_habit_share(lab):
    """With sft_habit_share = 0.5, about half of the 210 demonstrations show their prompt's habit: the share
    is binomial with sd sqrt(0.25 / 210) ≈ 0.035, so 0.5 ± 0.15 (±4.3 sd) fails with probability < 1e-4;
    with 0, none do."""
    demos = read(lab.paths.data("sft", "train")) + read(lab.paths.data("sft", "test"))
    share = sum(shows_habit(d["prompt"], d["completion"]) for d in demos) / len(demos)
    assert 0.35 <= share <= 0.65, share
    config = LabConfig(**{**TINY, "pretrain_steps": 1}, sft_habit_share=0.0)
    clean = build_lab(lab.paths.root.parent / "clean", config, seed=5, progress=False)
    demos = read(clean.paths.data("sft", "train"))
    assert not any(shows_habit(d["prompt"], d["completion"]) for d in demos)


def test_pick_pairs_takes_the_first_two_samples_that_differ_in_gold():
    """"what is 3 plus 4": "7" scores 1.0 and "8" 0.0 (the answer rule), so samples ("7", "7", "8") pair as
    ("7", "8") — samples 0 and 2, since 0 and 1 tie; a prompt whose samples all tie is dropped."""
    add, other = parse_prompt("what is 3 plus 4 ? answer:"), parse_prompt("what is 1 plus 1 ? answer:")
    assert (gold_reward(add, "7"), gold_reward(add, "8")) == (1.0, 0.0)
    samples = [["7", "2"], ["7", "2"], ["8", "2"]]  # samples[k][i]: sample k of prompt i
    pairs, dropped = pick_pairs([add, other], samples)
    assert pairs == [(add, "7", "8", "policy")] and dropped == 1


def test_pick_pairs_never_takes_an_empty_sample():
    """An empty sample (the policy ended at once) differs in gold from "7" but is no response to prefer:
    samples ("", "7", "8") pair as ("7", "8"); a prompt left with one non-empty sample is dropped."""
    add = parse_prompt("what is 3 plus 4 ? answer:")
    assert gold_reward(add, "") != gold_reward(add, "7")  # without the rule, ("", "7") would be the pair
    pairs, dropped = pick_pairs([add, add], [["", ""], ["7", "7"], ["8", " "]])
    assert pairs == [(add, "7", "8", "policy")] and dropped == 1


def test_compare_samples_writes_labelled_policy_pairs(lab, tmp_path):
    """Every pair differs in gold, carries the labels' fields and source "policy"; prefs.train.jsonl is the
    lab's pairs followed by these; the counts add up; the same seed gives the same bytes."""
    model = lab.paths.pretrained
    s = compare_samples(lab.paths.root, model, tmp_path / "a", prompts=40, samples=3, seed=2)
    policy = read(tmp_path / "a" / "prefs.policy.jsonl")
    assert s["pairs"] == len(policy) > 0 and s["pairs"] + s["dropped_all_tied"] == 40
    for r in policy:
        assert r["source"] == "policy" and r["chosen"] != r["rejected"]
        assert r["gold_chosen"] == gold_reward(r["prompt"], r["chosen"]) != r["gold_rejected"]
        assert r["gold_rejected"] == gold_reward(r["prompt"], r["rejected"]) and 0 <= r["label"] <= 1
    lab_lines = lab.paths.data("prefs", "train").read_text()
    assert (tmp_path / "a" / "prefs.train.jsonl").read_text() == lab_lines + (
        tmp_path / "a" / "prefs.policy.jsonl"
    ).read_text()
    agree = sum(r["gold_chosen"] > r["gold_rejected"] for r in policy) / len(policy)
    assert s["agreement"] == {"value": round(agree, 4), "n": len(policy)}
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["pairs"] == s["pairs"]
    # the command: same seed, same bytes
    code = cli.main(["lab", "compare", "--lab", str(lab.paths.root), "--policy", str(model),
                     "--out", str(tmp_path / "b"), "--prompts", "40", "--samples", "3", "--seed", "2"])
    assert code == 0
    first, second = (tmp_path / d / "prefs.policy.jsonl" for d in "ab")
    assert first.read_bytes() == second.read_bytes()


def test_compare_rejects_bad_settings(lab, tmp_path):
    with pytest.raises(TetherError, match="samples >= 2"):
        compare_samples(lab.paths.root, lab.paths.pretrained, tmp_path, prompts=5, samples=1)
    with pytest.raises(TetherError, match="not a built lab"):
        compare_samples(tmp_path, lab.paths.pretrained, tmp_path / "o")
