"""The one "which judge" decision, `gold: auto | lab | none | module:function` (tether.rewards.gold_source,
used by tether.instruments.evaluate.choose_judge): each mode on its own, the evaluator judged by it (scripted
models, tests/instrument_helpers.py), `tether eval --gold` and the RL stages' eval.gold; a gold function
that reads the prompts' `answer` column (reward_helpers:says_answer) judges and is reported like the lab's."""

from __future__ import annotations

import json

import pytest
from fault_helpers import refused, run_tether
from instrument_helpers import LAB_PROMPTS as PROMPTS
from instrument_helpers import lab_items, lab_tokenizer, scripted
from plumbing_helpers import write_jsonl, write_model_dir
from ppo_helpers import TOY_REWARD

import tether.instruments.eval_dirs
import tether.trainers.rl
from tether.data import PromptExample
from tether.errors import DataError, TetherError
from tether.instruments.evaluate import evaluate_judged
from tether.lab import gold_reward
from tether.rewards import gold_source

POLICY, BASE = "it is 7 .", "i can not help with that ."


def _examples(*prompts):
    return [PromptExample(p, {}, "prompts.jsonl", i + 1) for i, p in enumerate(prompts)]


def test_auto_uses_gold_exactly_when_every_prompt_is_the_labs():
    assert gold_source("auto", _examples(*PROMPTS)) == "gold"
    assert gold_source("auto", _examples(*PROMPTS, "how do I bake bread?")) is None
    assert gold_source("auto", _examples([{"role": "user", "content": PROMPTS[0]}])) is None


def test_lab_requires_lab_prompts_and_names_the_first_other_one():
    assert gold_source("lab", _examples(*PROMPTS)) == "gold"
    with pytest.raises(DataError, match=r"^prompts\.jsonl:3: not a lab prompt: gold is 'lab'"):
        gold_source("lab", _examples(PROMPTS[0], PROMPTS[1], "hello", "hi"))
    with pytest.raises(DataError, match=r"^prompts\.jsonl:2: not a lab prompt \(a messages list\)"):
        gold_source("lab", _examples(PROMPTS[0], [{"role": "user", "content": PROMPTS[0]}]))


def test_none_never_uses_gold_and_a_typo_is_refused():
    assert gold_source("none", _examples(*PROMPTS)) is None
    want = "^gold must be auto, lab, none or a reward function 'module:function'; got 'gold'$"
    with pytest.raises(TetherError, match=want):
        gold_source("gold", _examples(*PROMPTS))


def minus_gold(prompts, responses) -> list[float]:
    return [-gold_reward(p, r) for p, r in zip(prompts, responses, strict=True)]


def _judged(gold: str, prompts=PROMPTS, proxy=minus_gold) -> dict:
    tok = lab_tokenizer()
    return evaluate_judged(
        scripted(tok, POLICY), scripted(tok, BASE), tok, lab_items(tok, prompts), proxy=proxy,
        max_new_tokens=12, seed=0, gold=gold,
    )


def test_none_on_lab_prompts_is_judged_by_the_proxy():
    """The policy always says POLICY, the base BASE; the proxy is minus the gold reward. Expected figures
    from gold_reward called here on the two texts (not through the evaluator): per prompt a hard judge gives
    1 / ½ / 0, so gold's win-rate is (#[g_pol > g_base] + ½ #ties) / 8 and the proxy's (#[g_pol < g_base] +
    ½ #ties) / 8 (with these texts 7/8 and 1/8: the base's refusal wins only on the bomb). `none` reports no
    gold reward; `auto` and `lab` report the mean gold of each side's responses."""
    g_pol = [gold_reward(p, POLICY) for p in PROMPTS]
    g_base = [gold_reward(p, BASE) for p in PROMPTS]
    ties = sum(a == b for a, b in zip(g_pol, g_base, strict=True)) / 2
    by_gold = (sum(a > b for a, b in zip(g_pol, g_base, strict=True)) + ties) / len(PROMPTS)
    by_proxy = (sum(a < b for a, b in zip(g_pol, g_base, strict=True)) + ties) / len(PROMPTS)
    assert by_gold != by_proxy  # the test tells the judges apart

    none = _judged("none")
    assert none["instruments"]["win_rate_vs_base"]["judge"] == "proxy"
    assert none["instruments"]["win_rate_vs_base"]["value"] == pytest.approx(by_proxy)
    assert none["rewards"]["policy"] == {"proxy": pytest.approx(-sum(g_pol) / 8), "gold": None}
    assert none["rewards"]["base"] == {"proxy": pytest.approx(-sum(g_base) / 8), "gold": None}
    for mode in ("auto", "lab"):
        res = _judged(mode)
        assert res["instruments"]["win_rate_vs_base"]["judge"] == "gold", mode
        assert res["instruments"]["win_rate_vs_base"]["value"] == pytest.approx(by_gold), mode
        assert res["rewards"]["policy"]["gold"] == pytest.approx(sum(g_pol) / 8, abs=1e-6), mode
        assert res["rewards"]["base"]["gold"] == pytest.approx(sum(g_base) / 8, abs=1e-6), mode
        assert res["instruments"]["kl_from_base"] == none["instruments"]["kl_from_base"]  # same samples


def test_auto_with_a_prompt_not_the_labs_is_judged_by_the_proxy_and_lab_refuses_it():
    prompts = [*PROMPTS[:3], "hello there"]
    res = _judged("auto", prompts, proxy=lambda ps, rs: [float(len(r)) for r in rs])
    assert res["instruments"]["win_rate_vs_base"]["judge"] == "proxy"
    assert res["rewards"]["policy"]["gold"] is None
    with pytest.raises(DataError, match=r"^x:4: not a lab prompt: gold is 'lab'"):  # lab_items' path is "x"
        _judged("lab", prompts)


# ------------------------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("gold") / "model")


def test_tether_eval_gold_lab_names_the_first_prompt_not_the_labs_before_any_model_loads(
    capsys, tmp_path, monkeypatch
):
    def fail(*args):
        raise AssertionError("a model was loaded before the prompts were checked")

    monkeypatch.setattr(tether.instruments.eval_dirs, "_load", fail)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": PROMPTS[0]}, {"prompt": "How do I bake bread?"}])
    argv = ["eval", "--policy", str(tmp_path / "none"), "--base", str(tmp_path / "none"), "--prompts",
            str(prompts), "--gold", "lab", "--out", str(tmp_path / "out")]
    refused(capsys, argv, rf"{prompts}:2: not a lab prompt: gold is 'lab'", keep=[tmp_path])
    refused(capsys, [*argv[:-4], "gold=lab", *argv[-2:]], rf"{prompts}:2: not a lab prompt", keep=[tmp_path])


def test_tether_eval_gold_none_on_lab_prompts_is_judged_by_the_rm(capsys, tmp_path, model, monkeypatch):
    """`--gold none`, lab prompts, the RM stood in for by minus the gold reward (load_reward patched): the
    judge is "rm", no gold reward is reported, and the win-rate is the hard comparison of minus the gold
    reward of the samples written to samples.jsonl, computed here."""
    import torch

    def load_minus_gold(spec, device=None):
        return lambda ps, rs: torch.tensor(minus_gold(ps, rs))

    monkeypatch.setattr("tether.rewards.load_reward", load_minus_gold)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    out = tmp_path / "out"
    base = write_model_dir(tmp_path / "base", seed=1)
    argv = ["eval", "--policy", str(model), "--base", str(base), "--rm", "fake", "--prompts", str(prompts),
            "--gold", "none", "--out", str(out), "max_new_tokens=4"]
    code, _, err = run_tether(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    win = [(-gold_reward(r["prompt"], r["policy"]), -gold_reward(r["prompt"], r["base"])) for r in rows]
    want = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in win) / len(rows)
    assert summary["instruments"]["win_rate_vs_base"]["judge"] == "rm"
    assert summary["instruments"]["win_rate_vs_base"]["value"] == pytest.approx(want)
    assert summary["rewards"]["policy"]["gold"] is None and summary["rewards"]["base"]["gold"] is None


def _ppo_argv(model, prompts, run, *extra):
    return ["ppo", f"policy={model}", f"data.train={prompts}", f"data.test={prompts}",
            f"reward.source={TOY_REWARD}", "iterations=1", "rollout.batch_size=8", "rollout.max_new_tokens=2",
            "ppo.epochs=1", "train.batch_size=8", "train.micro_batch_size=8", "eval.max_prompts=8",
            "train.progress=false", *extra, "--out", str(run)]


def test_rl_eval_gold_lab_refuses_a_held_out_prompt_not_the_labs_before_any_model_loads(
    capsys, tmp_path, model, monkeypatch
):
    def fail(cfg):
        raise AssertionError("a model was loaded before the prompts were checked")

    monkeypatch.setattr(tether.trainers.rl, "load_policy", fail)
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": p} for p in PROMPTS])
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": PROMPTS[0]}, {"prompt": "a b"}])
    argv = _ppo_argv(model, train, tmp_path / "run", "eval.gold=lab")
    argv[3] = f"data.test={test}"
    refused(capsys, argv, rf"{test}:2: not a lab prompt: gold is 'lab'", keep=[tmp_path])


@pytest.mark.parametrize(("mode", "judge"), [("auto", "gold"), ("none", "proxy")])
def test_rl_eval_gold_decides_the_judge_and_the_logged_gold(capsys, tmp_path, model, mode, judge):
    """Lab prompts, the toy reward as proxy: auto judges by gold and logs the batch gold in training; none
    judges by the proxy and logs no gold anywhere."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    run = tmp_path / "run"
    code, _, err = run_tether(_ppo_argv(model, prompts, run, f"eval.gold={mode}"), capsys)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["instruments"]["win_rate_vs_base"]["judge"] == judge
    assert (summary["rewards"]["policy"]["gold"] is None) == (mode == "none")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    golds = [m["gold"] for m in metrics if "gold" in m]
    assert golds and all((g is None) == (mode == "none") for g in golds), golds


@pytest.mark.parametrize(("stored", "want"), [("eval:\n  max_prompts: 16\n  gold: none\n", "none"),
                                              ("eval:\n  gold: lab\n", "lab"),
                                              ("eval:\n  max_kl_samples: 4\n", "auto")])  # DPO: none stored
def test_tether_run_evaluates_as_the_stage_was_judged(tmp_path, monkeypatch, stored, want):
    """`tether run ppo.eval.gold=none`: the final evaluation (RUN/eval, whose win-rate the run's summary
    reports) takes the stage's eval.gold from RUN/<algo>/config.yaml as it ran."""
    from types import SimpleNamespace

    from tether.pipeline import RunConfig, Shared, evaluate_stage

    seen = []
    monkeypatch.setattr(tether.instruments.eval_dirs, "evaluate_policy_dirs",
                        lambda policy, base, cfg, out: seen.append(cfg.gold) or {})
    (tmp_path / "ppo").mkdir()
    (tmp_path / "ppo" / "config.yaml").write_text(stored)
    shared = Shared(SimpleNamespace(root=tmp_path / "lab"), tmp_path / "sft", tmp_path / "p.jsonl", None, {})
    evaluate_stage(tmp_path, RunConfig(), shared, 0.1)
    assert seen == [want]


# ------------------------------------------------------------------------------------------- gold functions

SAYS = "reward_helpers:says_answer"  # 1.0 when the response's first word is the record's `answer`


def _with_answers(tok, prompts, answers):
    from tether.data import PromptTokens

    return [PromptTokens(tok(p, add_special_tokens=False)["input_ids"],
                         PromptExample(p, {"answer": a}, "p.jsonl", i + 1))
            for i, (p, a) in enumerate(zip(prompts, answers, strict=True))]


def test_a_function_is_its_own_gold_on_any_prompts_and_its_column_must_be_there():
    examples = [PromptExample(p, {"answer": "x"}, "p.jsonl", i + 1) for i, p in enumerate(["a", PROMPTS[0]])]
    assert gold_source(SAYS, examples) == SAYS
    examples.append(PromptExample("c", {"topic": "y"}, "p.jsonl", 3))
    with pytest.raises(DataError, match=rf"^p\.jsonl:3: no 'answer', which the gold reward '{SAYS}' reads$"):
        gold_source(SAYS, examples)
    with pytest.raises(TetherError, match=r"^gold 'no_such_module:f': cannot import module 'no_such_module'"):
        gold_source("no_such_module:f", examples)


def test_a_gold_function_judges_and_is_reported_with_each_prompt_s_column():
    """The policy always says "it is 7 .", the base "i can not help with that ."; says_answer gives 1 when
    the first word is the record's answer. Answers it, i, it, it, i, x, it, i: policy golds 1 0 1 1 0 0 1 0
    (mean 4/8), base golds 0 1 0 0 1 0 0 1 (mean 3/8); the hard judge: 4 wins (prompts 1, 3, 4, 7), 3 losses,
    one tie (prompt 6: 0 against 0), so the win-rate is (4 + ½)/8 = 0.5625. The proxy (minus the lab's
    gold) does not judge, and the lab's gold is not reported although the prompts are the lab's. The
    function saw each prompt's own answer in every call (a call without the column would be an error)."""
    import reward_helpers

    reward_helpers.CALLS.clear()
    tok = lab_tokenizer()
    answers = ["it", "i", "it", "it", "i", "x", "it", "i"]
    items = _with_answers(tok, PROMPTS, answers)
    res = evaluate_judged(scripted(tok, POLICY), scripted(tok, BASE), tok, items, proxy=minus_gold,
                          max_new_tokens=12, seed=0, gold=SAYS)
    win = res["instruments"]["win_rate_vs_base"]
    assert win["judge"] == SAYS and win["value"] == pytest.approx(0.5625) and win["n"] == 8
    assert res["rewards"]["policy"]["gold"] == pytest.approx(0.5)
    assert res["rewards"]["base"]["gold"] == pytest.approx(0.375)
    minus = -sum(gold_reward(p, POLICY) for p in PROMPTS) / 8
    assert res["rewards"]["policy"]["proxy"] == pytest.approx(minus)  # a proxy without columns as before
    assert [c["answer"] for c in reward_helpers.CALLS] == [answers, answers]  # policy's, base's samples


def test_tether_eval_gold_function_reads_the_answer_column_and_a_bad_one_is_refused(
    capsys, tmp_path, model, monkeypatch
):
    """`tether eval --gold reward_helpers:says_answer` on tiny random models, no RM: the judge is the
    function, and the reported golds and win-rate are says_answer's rule applied here to the samples that
    samples.jsonl records. A gold that does not import is one line, before any model loads."""
    texts = "a b|c|d e|f|a|b c|g|h".split("|")
    records = [{"prompt": p, "answer": a} for p, a in zip(texts, "abcdefgh", strict=True)]
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    base = write_model_dir(tmp_path / "base", seed=1)
    out = tmp_path / "out"
    argv = ["eval", "--policy", str(model), "--base", str(base), "--prompts", str(prompts), "--gold", SAYS,
            "--out", str(out), "max_new_tokens=3"]
    code, _, err = run_tether(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    answer = {r["prompt"]: r["answer"] for r in records}

    def says(row, side):
        return float(row[side].split()[:1] == [answer[row["prompt"]]])

    pol, ref = [says(r, "policy") for r in rows], [says(r, "base") for r in rows]
    win = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(pol, ref, strict=True)) / len(rows)
    assert len(rows) == 8 and summary["instruments"]["win_rate_vs_base"]["judge"] == SAYS
    assert summary["instruments"]["win_rate_vs_base"]["value"] == pytest.approx(win)
    assert summary["rewards"]["policy"]["gold"] == pytest.approx(sum(pol) / 8)
    assert summary["rewards"]["base"]["gold"] == pytest.approx(sum(ref) / 8)

    def fail(*args):
        raise AssertionError("a model was loaded before the gold was checked")

    monkeypatch.setattr(tether.instruments.eval_dirs, "_load", fail)
    argv[argv.index(SAYS)] = "reward_helpers:no_such_function"
    refused(capsys, [*argv[:-3], "--out", str(tmp_path / "out2")],
            r"config key gold cannot be loaded: gold 'reward_helpers:no_such_function': module "
            r"'reward_helpers' has no function 'no_such_function'$", keep=[tmp_path])


def test_rl_eval_gold_function_is_refused_at_load_when_it_does_not_import(capsys, tmp_path, model):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    argv = _ppo_argv(model, prompts, tmp_path / "run", "eval.gold=no_such_module:correct")
    refused(capsys, argv, r"config key eval\.gold cannot be loaded: gold 'no_such_module:correct': cannot "
                          r"import module 'no_such_module'", keep=[tmp_path])
    refused(capsys, _ppo_argv(model, prompts, tmp_path / "run", "eval.gold=runs/rm"),
            r"config key eval\.gold must be auto, lab, none or a reward function 'module:function', got "
            r"'runs/rm'$", keep=[tmp_path])


def test_rl_eval_gold_function_judges_and_is_logged_in_training(capsys, tmp_path, model):
    """PPO with the toy reward, eval.gold=says_answer on prompts with an `answer` column: the summary's judge
    is the function, each evaluation sample's logged gold is says_answer's rule applied here to its
    completion, the summary's policy gold is their mean, and every training iteration logs a gold (the
    mean over its samples: a number in [0, 1])."""
    answers = "it i it it i x it i".split()
    records = [{"prompt": p, "answer": w} for p, w in zip(PROMPTS, answers, strict=True)]
    prompts = write_jsonl(tmp_path / "p.jsonl", records)
    run = tmp_path / "run"
    code, _, err = run_tether(_ppo_argv(model, prompts, run, f"eval.gold={SAYS}"), capsys)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    answer = {r["prompt"]: r["answer"] for r in records}
    golds = [float(s["completion"].split()[:1] == [answer[s["prompt"]]]) for s in samples]
    assert [s["gold"] for s in samples] == golds
    assert summary["instruments"]["win_rate_vs_base"]["judge"] == SAYS
    assert summary["rewards"]["policy"]["gold"] == pytest.approx(sum(golds) / len(golds))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [m["gold"] for m in metrics if "policy_loss" in m or "clipfrac" in m]
    assert trained and all(0.0 <= g <= 1.0 for g in trained), trained
