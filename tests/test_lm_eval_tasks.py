"""The lm-eval hook of `tether eval` (tether.instruments.lm_eval_tasks): a task of our own, a multiple-choice
YAML over a local JSONL file, run by the real lm-evaluation-harness on two tiny models; its accuracies are
recomputed here from the models' own log-probabilities."""

import json
import math
import random
import sys

import pytest
import torch
from plumbing_helpers import WORDS, write_model_dir

from tether.config import load_config
from tether.errors import TetherError
from tether.instruments.eval_dirs import EvalConfig, evaluate_policy_dirs
from tether.instruments.lm_eval_tasks import lm_eval_instruments, task_manager
from tether.model_files import load_causal_lm, load_tokenizer

TASK = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def documents(n: int) -> list[dict]:
    rng = random.Random(3)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"question": words(rng.randint(1, 3)), "choices": [words(rng.randint(1, 2)) for _ in range(3)],
             "label": rng.randrange(3)} for _ in range(n)]


def accuracy_by_hand(model_dir, docs) -> float:
    """lm-eval's multiple_choice acc: the choice with the highest summed log-prob of its tokens after the
    question's (the word tokenizer splits on spaces, so lm-eval's " " delimiter changes no token)."""
    model, tok = load_causal_lm(model_dir).eval(), load_tokenizer(model_dir)
    correct = 0
    for d in docs:
        context = tok(d["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in d["choices"]:
            tokens = tok(choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([context + tokens])).logits[0], -1)
            scores.append(sum(float(logp[len(context) - 1 + i, t]) for i, t in enumerate(tokens)))
        correct += max(range(len(scores)), key=scores.__getitem__) == d["label"]
    return correct / len(docs)


def test_a_local_task_s_accuracies_and_their_difference(tmp_path, monkeypatch):
    """12 documents, policy and base two tiny models of other seeds: the instrument's value and base are the
    accuracies recomputed here; each standard error is lm-eval's sample one, sqrt(p(1 − p)/(n − 1)); the
    interval is change ± 1.96·sqrt(se² + se_base²) and the verdict is the one it gives. A task name lm-eval
    does not know stops `tether eval` before any model loads."""
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = documents(12)
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny.yaml").write_text(TASK.format(docs=tmp_path / "docs.jsonl"))
    policy, base = write_model_dir(tmp_path / "policy", seed=0), write_model_dir(tmp_path / "base", seed=1)

    manager = task_manager(["tiny_choice"], str(tmp_path / "tasks"))
    got = lm_eval_instruments(policy, base, ["tiny_choice"], manager)
    assert list(got) == ["lm_eval/tiny_choice/acc"]
    e = got["lm_eval/tiny_choice/acc"]
    p, b = accuracy_by_hand(policy, docs), accuracy_by_hand(base, docs)
    assert (e["value"], e["base"], e["n"]) == (pytest.approx(p), pytest.approx(b), 12)
    for value, se in ((p, e["stderr"]), (b, e["base_stderr"])):
        assert se == pytest.approx(math.sqrt(value * (1 - value) / 11))
    half = 1.959964 * math.sqrt(e["stderr"] ** 2 + e["base_stderr"] ** 2)
    assert e["difference_ci95"] == pytest.approx([p - b - half, p - b + half], abs=1e-6)
    low, high = e["difference_ci95"]
    assert e["verdict"] == ("better" if low > 0 else "worse" if high < 0 else "no measurable difference")
    # `tether eval` checks the task names before anything loads: the missing policy is never reached
    cfg = load_config(EvalConfig, None, ["probes=always", "lm_eval_tasks=[no_such_task]",
                                         f"lm_eval_include={tmp_path / 'tasks'}"])
    with pytest.raises(TetherError, match="lm-eval knows no task 'no_such_task'"):
        evaluate_policy_dirs(str(tmp_path / "no-such-policy"), str(base), cfg)


def test_lm_eval_settings_without_tasks_and_a_missing_harness_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(TetherError, match="config key lm_eval_limit is only read with lm_eval_tasks"):
        load_config(EvalConfig, None, ["lm_eval_limit=10"])
    for name in ("lm_eval", "lm_eval.tasks"):  # as if it were not installed (even once imported)
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(TetherError, match=r"^lm_eval_tasks needs lm-evaluation-harness: pip install "
                                          r"'tether\[lm-eval\]'$"):
        task_manager(["x"], None)
