"""The one "which judge" decision, `gold: auto | lab | none` (tether.rewards.uses_gold, used by
tether.instruments.evaluate.choose_judge): each mode on its own, the evaluator judged by it (scripted models,
tests/instrument_helpers.py), `tether eval --gold` and the RL stages' eval.gold."""

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
from tether.rewards import uses_gold

POLICY, BASE = "it is 7 .", "i can not help with that ."


def _examples(*prompts):
    return [PromptExample(p, {}, "prompts.jsonl", i + 1) for i, p in enumerate(prompts)]


def test_auto_uses_gold_exactly_when_every_prompt_is_the_labs():
    assert uses_gold("auto", _examples(*PROMPTS)) is True
    assert uses_gold("auto", _examples(*PROMPTS, "how do I bake bread?")) is False
    assert uses_gold("auto", _examples([{"role": "user", "content": PROMPTS[0]}])) is False


def test_lab_requires_lab_prompts_and_names_the_first_other_one():
    assert uses_gold("lab", _examples(*PROMPTS)) is True
    with pytest.raises(DataError, match=r"^prompts\.jsonl:3: not a lab prompt: gold is 'lab'"):
        uses_gold("lab", _examples(PROMPTS[0], PROMPTS[1], "hello", "hi"))
    with pytest.raises(DataError, match=r"^prompts\.jsonl:2: not a lab prompt \(a messages list\)"):
        uses_gold("lab", _examples(PROMPTS[0], [{"role": "user", "content": PROMPTS[0]}]))


def test_none_never_uses_gold_and_a_typo_is_refused():
    assert uses_gold("none", _examples(*PROMPTS)) is False
    with pytest.raises(TetherError, match="gold must be one of auto, lab, none; got 'gold'"):
        uses_gold("gold", _examples(*PROMPTS))


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
