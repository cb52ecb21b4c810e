"""evaluate_against_base on tiny models, the terminal table, report.html and the summary schema."""

import json
from pathlib import Path

import jsonschema
import pytest

import tether
from tether.data import PromptExample, PromptTokens
from tether.instruments import ScoreJudge
from tether.instruments.evaluate import evaluate_against_base
from tether.instruments.report import terminal_table, write_report
from tether.models import build_tiny_llama, build_word_tokenizer

SCHEMA = json.loads((Path(tether.__file__).parent / "summary.schema.json").read_text())
WORDS = "a b c d e f".split()


def _items(prompts):
    tok = build_word_tokenizer(WORDS)
    return tok, [
        PromptTokens(tok(p, add_special_tokens=False)["input_ids"], PromptExample(p, {}, "x", i + 1))
        for i, p in enumerate(prompts)
    ]


def _length(prompts, responses):
    return [float(len(r.split())) for r in responses]


def test_evaluate_same_model_has_zero_kl_and_rewards_match_samples():
    """Policy = base: KL(π‖π) = 0 exactly. The mean rewards must be the means of the scorer over the very
    samples returned, recomputed here independently; n is the number of prompts."""
    tok, items = _items(["a b", "c d e", "f", "a a"] * 3)
    model = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=3)
    judge = ScoreJudge(_length, "length")
    res = evaluate_against_base(
        model,
        model,
        tok,
        items,
        judge=judge,
        proxy=_length,
        gold=None,
        max_new_tokens=5,
        seed=0,
        batch_size=5,
    )
    kl, wr = res["instruments"]["kl_from_base"], res["instruments"]["win_rate_vs_base"]
    assert kl["value"] == pytest.approx(0.0, abs=1e-6) and kl["n"] == 12
    pol, base = res["samples"]["policy"], res["samples"]["base"]
    assert res["rewards"]["policy"]["proxy"] == pytest.approx(sum(_length(None, pol.responses)) / 12)
    assert res["rewards"]["base"]["proxy"] == pytest.approx(sum(_length(None, base.responses)) / 12)
    assert res["rewards"]["policy"]["gold"] is None
    wins = sum(
        1.0 if len(p.split()) > len(b.split()) else 0.5 if len(p.split()) == len(b.split()) else 0.0
        for p, b in zip(pol.responses, base.responses, strict=True)
    )
    assert wr["value"] == pytest.approx(wins / 12) and wr["n"] == 12


def test_the_evaluation_samples_both_models_at_the_temperature_asked():
    """temperature 0.5: the policy's samples are those `sample_responses` draws at 0.5 with the policy's seed
    (and the base's with seed + 1), and each KL is the closed form at 0.5, Σ_t Σ_v p_t(v)·log(p_t(v)/q_t(v))
    with p, q = softmax(logits / 0.5) of each model, written out here from one forward pass per row. The two
    models differ (seeds 3 and 4), so the KL is not 0. Temperature 0 is refused: the KL needs samples."""
    import torch

    from tether.instruments.evaluate import sample_responses

    tok, items = _items(["a b", "c d e", "f", "a a"])
    policy = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=3).eval()
    base = build_tiny_llama(len(tok), hidden_size=16, num_layers=1, num_heads=2, seed=4).eval()
    res = evaluate_against_base(policy, base, tok, items, judge=ScoreJudge(_length, "length"), proxy=_length,
                                gold=None, max_new_tokens=5, seed=0, batch_size=4, temperature=0.5)
    pol, ref = res["samples"]["policy"], res["samples"]["base"]
    for samples, model, seed in ((pol, policy, 0), (ref, base, 1)):
        again = sample_responses(model, tok, items, max_new_tokens=5, seed=seed, batch_size=4,
                                 temperature=0.5)
        assert torch.equal(again.rollouts[0].response_ids, samples.rollouts[0].response_ids)
        assert samples.rollouts[0].temperature == 0.5
    r = pol.rollouts[0]
    expected = []
    with torch.no_grad():
        for b in range(len(items)):
            prompt = r.prompt_ids[b][r.prompt_mask[b].bool()]
            resp = r.response_ids[b][r.response_mask[b].bool()]
            seq = torch.cat([prompt, resp])[None]
            P = len(prompt)
            p = torch.log_softmax(policy(input_ids=seq).logits[0, P - 1 : -1].double() / 0.5, -1)
            q = torch.log_softmax(base(input_ids=seq).logits[0, P - 1 : -1].double() / 0.5, -1)
            expected.append(float((p.exp() * (p - q)).sum()))
    assert pol.kl == pytest.approx(expected, abs=1e-4) and min(expected) > 0
    mean = sum(expected) / len(expected)
    assert res["instruments"]["kl_from_base"]["value"] == pytest.approx(mean, abs=1e-4)
    with pytest.raises(ValueError, match="temperature > 0"):
        evaluate_against_base(policy, base, tok, items, judge=ScoreJudge(_length, "length"), gold=None,
                              max_new_tokens=5, temperature=0.0)


def _summary():
    return {
        "instruments": {
            "rm_test_accuracy": {"value": 0.71, "n": 400, "threshold": 0.65, "pass": True},
            "kl_from_base": {"value": 3.2, "stderr": 0.1, "n": 400, "unit": "nats"},
            "win_rate_vs_base": {
                "value": 0.66,
                "ci95": [0.61, 0.7],
                "n": 400,
                "judge": "gold",
                "threshold": 0.5,
                "pass": True,
            },
        },
        "rewards": {"policy": {"proxy": 1.2, "gold": 0.5}, "base": {"proxy": 0.3, "gold": 0.2}},
        "beta": 0.05,
        "wall_seconds": 250.0,
    }


def test_schema_accepts_a_summary_and_rejects_broken_ones():
    jsonschema.validate(_summary(), SCHEMA)
    bad = _summary()
    del bad["instruments"]["win_rate_vs_base"]["ci95"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = _summary()
    bad["instruments"]["kl_from_base"]["unit"] = "bits"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_table_and_report_show_verdicts(tmp_path):
    s = _summary()
    s["instruments"]["rm_test_accuracy"].update(value=0.6, **{"pass": False})
    table = terminal_table(s)
    assert "rm_test_accuracy" in table and "FAIL" in table and "95% CI [0.610, 0.700]" in table
    path = write_report(tmp_path / "report.html", s, {"reward": ([1, 2, 3], [0.1, 0.5, 0.4])})
    text = path.read_text()
    assert "data:image/png;base64," in text and "class='fail'" in text and "win_rate_vs_base" in text
