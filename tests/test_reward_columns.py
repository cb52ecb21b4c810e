"""Reward functions that see the prompt file's other columns (issue 19): what each signature receives, None
as "does not apply", the weighted sum and the per-source means, and a GRPO run whose reward reads each
prompt's own `answer` in training and in the evaluation."""

import math

import pytest
import reward_helpers
from group_helpers import grpo_config, grpo_run
from plumbing_helpers import write_jsonl, write_model_dir

from tether.errors import TetherError
from tether.rewards import FunctionReward, WeightedReward, load_weighted_reward, term_names


@pytest.fixture(autouse=True)
def clear_calls():
    reward_helpers.CALLS.clear()


def test_each_function_gets_the_columns_its_signature_names():
    """says_answer names `answer` and gets only it; sees_all takes **columns and gets all; plain takes
    neither and is called as before. None becomes NaN (the reward does not apply)."""
    columns = {"answer": ["a", None, "c"], "topic": ["x", "y", "z"]}
    out = FunctionReward("reward_helpers:says_answer")(["p1", "p2", "p3"], ["a b", "b", "d"], **columns)
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == 0.0
    FunctionReward("reward_helpers:sees_all")(["p"] * 3, ["r"] * 3, **columns)
    FunctionReward("reward_helpers:plain")(["p"] * 3, ["r"] * 3, **columns)
    calls = {c["fn"]: c for c in reward_helpers.CALLS}
    assert calls["says_answer"]["answer"] == ["a", None, "c"]
    assert calls["sees_all"]["columns"] == columns
    assert set(calls["plain"]) == {"fn", "prompts"}


def test_a_column_the_prompts_lack_is_one_line():
    """says_answer needs `answer`; prompts without it: a TetherError naming the column and what there is."""
    with pytest.raises(TetherError, match=r"asks for the column\(s\) answer, .*other columns: topic\)$"):
        FunctionReward("reward_helpers:says_answer")(["p"], ["r"], topic=["x"])


def test_a_none_adds_nothing_to_the_weighted_sum():
    """Weights 2 (says_answer) and 1 (plain, 2.0 each): responses scored (1, None, 0) by says_answer sum to
    2·1 + 2 = 4, 0 + 2 = 2 (None adds 0) and 2·0 + 2 = 2. Names: the functions' names."""
    reward = WeightedReward([("reward_helpers:says_answer", 2.0), ("reward_helpers:plain", 1.0)])
    assert reward.names == ["says_answer", "plain"]
    total = reward(["p"] * 3, ["a", "b", "d"], answer=["a", None, "c"])
    assert total.tolist() == [4.0, 2.0, 2.0]


def test_names_are_short_and_unique():
    assert term_names(["gold", "m:f", "m:g"]) == ["gold", "f", "g"]
    assert term_names(["m:f", "n:f"]) == ["f_0", "f_1"]


def test_a_single_function_is_kept_whole_so_none_counts_as_zero():
    """One function of weight 1 is wrapped (a None in it must not reach the objective as NaN)."""
    reward = load_weighted_reward([("reward_helpers:says_answer", 1.0)])
    assert isinstance(reward, WeightedReward)
    assert reward(["p", "q"], ["a", "b"], answer=[None, "b"]).tolist() == [0.0, 1.0]


def test_a_grpo_run_scores_each_response_with_its_own_prompt_s_answer(tmp_path):
    """Prompts of random words, each with an `answer` column (its first word; none for every third record).
    Every call of the reward — in training and for the held-out evaluation's samples — receives, for each
    prompt, that prompt's own answer. The iteration logs reward/says_answer, the mean over the responses
    the reward applied to (A of the B responses), and reward, the mean over all B with None as 0; both sum
    the same scores, so reward = reward/says_answer · A / B."""
    records = [{"prompt": p, "answer": (p.split()[0] if i % 3 else None)}
               for i, p in enumerate(["a b", "c d e", "f", "g h", "i j", "k l", "a c", "b d"])]
    paths = {"policy": write_model_dir(tmp_path / "sft"),
             "train": write_jsonl(tmp_path / "train.jsonl", records),
             "test": write_jsonl(tmp_path / "test.jsonl", records)}
    cfg = grpo_config(paths, "reward.source=reward_helpers:says_answer", "iterations=1", "grpo.beta=0")
    run = grpo_run(cfg, tmp_path / "run")
    want = {r["prompt"]: r["answer"] for r in records}
    record = run.step()
    run.evaluate()
    # training, then the evaluation: the rewards of the policy's and the base's samples, which the proxy's
    # judgement of the two (off the lab) reuses rather than scoring them again
    assert len(reward_helpers.CALLS) == 3
    for call in reward_helpers.CALLS:
        assert call["answer"] == [want[p] for p in call["prompts"]]
    answers = reward_helpers.CALLS[0]["answer"]
    applied = sum(a is not None for a in answers)
    assert 0 < applied < len(answers)
    assert record["reward"] == pytest.approx(record["reward/says_answer"] * applied / len(answers))
