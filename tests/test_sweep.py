"""`tether sweep`: the best-of-n KL and expectation by hand, the recommendation rule on hand-made run
records, the DPO proxy, and a two-β sweep end to end on a reduced lab (fields, resume, reports)."""

import json
import math

import pytest
from html_check import parse_report

from tether.cli import main
from tether.instruments.best_of_n import best_of_n_expectation, best_of_n_kl
from tether.sweep import recommend_beta, run_record


def test_best_of_n_kl_by_hand():
    """log n − (n−1)/n: n=1 → 0 − 0 = 0; n=2 → 0.693147 − 0.5 = 0.193147; n=4 → 1.386294 − 0.75 = 0.636294."""
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(0.193147, abs=1e-6)
    assert best_of_n_kl(4) == pytest.approx(0.636294, abs=1e-6)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_best_of_n_expectation_over_all_subsets():
    """Samples with RM scores 1, 3, 2 (gold 10, 30, 20). n=1: the mean, 2 (gold 20). n=3: the best, 3 (30).
    n=2: subsets {1,3}→3, {1,2}→2, {3,2}→3, mean 8/3 (gold 80/3)."""
    proxy, gold = [1.0, 3.0, 2.0], [10.0, 30.0, 20.0]
    assert best_of_n_expectation(proxy, gold, 1) == pytest.approx((2.0, 20.0))
    assert best_of_n_expectation(proxy, gold, 2) == pytest.approx((8 / 3, 80 / 3))
    assert best_of_n_expectation(proxy, gold, 3) == pytest.approx((3.0, 30.0))
    with pytest.raises(ValueError):
        best_of_n_expectation(proxy, gold, 4)


def test_best_of_n_curve_gold_mean_and_stderr_over_prompts(monkeypatch):
    """Two prompts, N = 2 samples each, scripted instead of sampled. Prompt 1: replies "aa" (RM 2, gold 0.0)
    and "a" (RM 1, gold 1.0); prompt 2: "bbb" (RM 3, gold 0.5) and "bbbb" (RM 4, gold 0.9); RM = length.
    n=1: per-prompt gold 0.5 and 0.7, mean 0.6, stderr sqrt(((0.1)² + (0.1)²) / 1 / 2) = 0.1.
    n=2: the RM's pick, gold 0.0 and 0.9, mean 0.45, stderr sqrt((0.45² + 0.45²) / 2) = 0.45."""
    import tether.instruments.best_of_n as bon
    from tether.instruments.evaluate import Samples

    replies = ["aa", "a", "bbb", "bbbb"]
    gold = {"aa": 0.0, "a": 1.0, "bbb": 0.5, "bbbb": 0.9}
    monkeypatch.setattr(bon, "sample_responses",
                        lambda model, tok, items, **kw: Samples(list(items), [], replies))
    curve = bon.best_of_n_curve(None, None, ["p1", "p2"], lambda p, r: [float(len(x)) for x in r],
                                lambda p, r: [gold[x] for x in r], ns=(1, 2), max_new_tokens=4, seed=0)
    assert [c["gold_reward"] for c in curve] == pytest.approx([0.6, 0.45])
    assert [c["gold_stderr"] for c in curve] == pytest.approx([0.1, 0.45])
    assert [c["proxy_reward"] for c in curve] == pytest.approx([2.5, 3.0])


def _run(beta, gold, win, flagged):
    return {"beta": beta, "gold_reward": gold, "win_rate_vs_base": win, "reward_hacking": flagged}


def test_recommendation_skips_flagged_runs_and_falls_back_to_win_rate():
    """The flagged β=0.001 has the best gold reward but is passed over for the best clear one, 0.01."""
    runs = [_run(0.001, 0.5, 0.7, True), _run(0.01, 0.4, 0.6, False), _run(0.1, 0.3, 0.65, False)]
    assert recommend_beta(runs) == (0.01, "gold_reward")
    # one run without gold (none measured): every run is compared by win-rate instead
    runs[1]["gold_reward"] = None
    assert recommend_beta(runs) == (0.1, "win_rate_vs_base")
    # equal gold: the larger β (closer to the base) wins the tie
    assert recommend_beta([_run(0.01, 0.4, 0.6, False), _run(0.1, 0.4, 0.5, False)]) == (0.1, "gold_reward")
    # every run flagged: no recommendation
    assert recommend_beta([_run(0.01, 0.4, 0.6, True)]) == (None, "gold_reward")
    assert recommend_beta([]) == (None, "win_rate_vs_base")


def test_run_record_uses_dpo_implicit_reward_without_a_reward_model():
    """No RM: proxy = β·E[log π/π_ref] over the policy's samples = β·(k1 KL) = 0.1·4.0 = 0.4."""
    summary = {
        "instruments": {
            "kl_from_base": {"value": 3.5, "stderr": 0.2, "k1": 4.0},
            "win_rate_vs_base": {"value": 0.55},
            "reward_hacking": {"value": False, "reasons": []},
        },
        "rewards": {"policy": {"proxy": None, "gold": 0.2}, "base": {"proxy": None, "gold": 0.1}},
    }
    record = run_record(0.1, summary, "beta-0.1")
    assert record["proxy_reward"] == pytest.approx(0.4) and record["proxy_source"] == "dpo_implicit"
    assert record["kl_from_base"] == 3.5 and record["gold_reward"] == 0.2
    assert record["reward_hacking"] is False


SMALL = [
    "lab.sft_train=120", "lab.sft_test=30", "lab.prefs_train=120", "lab.prefs_test=40",
    "lab.prompts_train=32", "lab.prompts_test=16", "lab.pretrain_steps=20", "lab.hidden_size=32",
    "lab.intermediate_size=64", "comparisons=24", "comparison_samples=3", "sft.train.epochs=1",
    "rm.train.epochs=1", "ppo.iterations=2", "ppo.rollout.batch_size=8", "ppo.train.batch_size=8",
    "ppo.train.micro_batch_size=8", "ppo.eval.max_prompts=16",
]
RUN_FIELDS = {"beta", "kl_from_base", "proxy_reward", "gold_reward", "win_rate_vs_base", "reward_hacking"}


@pytest.mark.slow
def test_sweep_end_to_end_small(tmp_path, capsys):
    """Two βs on a reduced lab: shared stages once, one run directory per β with its β applied, sweep.json's
    fields, best-of-n with its closed-form KL, the recommendation rule, reports that parse; a rerun skips
    every finished β and gives the same records."""
    out = tmp_path / "sweep"
    args = ["sweep", "--betas", "0.3", "0.01", *SMALL, "--out", str(out), "--no-progress",
            "--best-of-n", "1", "2", "4", "--best-of-n-prompts", "8"]
    assert main(args) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["beta"] for r in sweep["runs"]] == [0.01, 0.3]
    scales = []
    for r in sweep["runs"]:
        assert RUN_FIELDS <= set(r) and isinstance(r["reward_hacking"], bool)
        own = json.loads((out / r["dir"] / "summary.json").read_text())["instruments"]
        # the record is the β run's own evaluation; PPO moved the policy, so its KL is not 0
        assert r["kl_from_base"] == own["kl_from_base"]["value"] > 0 and r["proxy_source"] == "rm"
        scales.append(own["rm_reward_scale"]["value"])
        cfg = (out / r["dir"] / "ppo" / "config.yaml").read_text()
        assert f"beta: {r['beta']}" in cfg and f"source: {out / 'rm' / 'model'}" in cfg
        parse_report((out / r["dir"] / "report.html").read_text())
    assert [b["n"] for b in sweep["best_of_n"]] == [1, 2, 4]
    expected_kl = [pytest.approx(math.log(n) - (n - 1) / n) for n in (1, 2, 4)]
    assert [b["kl"] for b in sweep["best_of_n"]] == expected_kl
    # the std of RM scores on the SFT samples: the same samples (same seed) in every β run
    assert sweep["rm_reward_scale"] == scales[0] == scales[1] > 0
    assert sweep["best_of_n"][0]["prompts"] == 8 and sweep["best_of_n"][0]["samples_per_prompt"] == 4
    assert (sweep["recommended_beta"], sweep["recommendation_metric"]) == recommend_beta(sweep["runs"])
    page = parse_report((out / "report.html").read_text())
    assert len(page.images) == 1
    assert "tether sweep: ppo" in (out / "summary.md").read_text()
    assert not (out / "ppo").exists() and (out / "rm" / "model").is_dir()

    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "beta 0.01 already done" in printed and "beta 0.3 already done" in printed
    assert "sft already done" in printed and "best-of-n" not in printed.split("# tether sweep")[0]
    assert json.loads((out / "sweep.json").read_text())["runs"] == sweep["runs"]

    # a DPO sweep on the same lab, SFT and reward model (--reuse): nothing shared is trained again, the RM
    # gives the proxy reward, and `--best-of-n` with no values leaves the reference curve out
    out2 = tmp_path / "dpo"
    dpo = ["dpo.train.batch_size=8", "dpo.train.micro_batch_size=8", "dpo.eval.kl_prompts=4"]
    assert main(["sweep", "--betas", "0.1", "--algo", "dpo", "--reuse", str(out), "--out", str(out2),
                 "--no-progress", "--best-of-n", *dpo]) == 0
    sweep2 = json.loads((out2 / "sweep.json").read_text())
    assert sweep2["beta_key"] == "dpo.beta" and sweep2["best_of_n"] == []
    assert sweep2["runs"][0]["proxy_source"] == "rm" and sweep2["rm"] == str(out / "rm" / "model")
    assert "beta: 0.1" in (out2 / "beta-0.1" / "dpo" / "config.yaml").read_text()
    assert not (out2 / "sft").exists() and not (out2 / "rm").exists()
