"""benchmarks/readme_figures.py's pure parts: each block's text from fixed summaries (expected text written
by hand in the README's format), and --write's marker handling. No run is made here."""

import importlib
from pathlib import Path

import pytest
from plumbing_helpers import load_script

from tether.config import DPOConfig, GRPOConfig, PPOConfig, RLOOConfig, load_config
from tether.errors import TetherError

ROOT = Path(__file__).resolve().parent.parent
rf = load_script(ROOT / "benchmarks" / "readme_figures.py", "readme_figures")
fb = importlib.import_module("figure_blocks")  # readme_figures put benchmarks/ on sys.path


def summary(kl, win, ci, proxy, gold, reasons=(), extra=None, base=(0.189, -0.115), n=200):
    """A run summary in the shape `tether run` writes, with only what the blocks read."""
    instruments = {
        "kl_from_base": {"value": kl, "unit": "nats", "stderr": 0.03, "n": n},
        "win_rate_vs_base": {"value": win, "ci95": list(ci), "judge": "gold", "threshold": 0.5, "n": n,
                             "pass": win >= 0.5},
        **(extra or {}),
        "reward_hacking": {"value": bool(reasons), "pass": not reasons, "reasons": list(reasons), "n": n},
    }
    rewards = {"policy": {"proxy": proxy, "gold": gold}, "base": {"proxy": base[0], "gold": base[1]}}
    return {"instruments": instruments, "beta": 0.5, "rewards": rewards}


def test_default_block_is_the_run_table_then_the_time_per_stage():
    """The table `tether run` prints, trailing spaces cut and its last line (beta, wall time) left out.
    Column widths by hand: names 16 ("win_rate_vs_base"), values 10 ("0.743 nats"), details 56 (the
    win-rate's "95% CI [0.589, 0.720], judge gold, threshold 0.50, n=200"), two spaces between columns.
    Seconds round to whole ones: 206.2 → 206, 44.4 → 44, 28.1 → 28, 27.4 → 27, 40.2 → 40, 55.0 → 55,
    3.3 → 3."""
    s = summary(0.743, 0.657, (0.589, 0.72), 0.989, 0.239)
    s["wall_seconds"] = 206.2
    s["stage_seconds"] = {"sft": 28.1, "compare": 27.4, "rm": 40.2, "ppo": 55.0, "eval": 3.3}
    expected = "\n".join([
        "```",
        "instrument" + " " * 13 + "value  detail" + " " * 52 + "verdict",
        "kl_from_base" + " " * 6 + "0.743 nats  ± 0.030 (stderr), n=200",
        "win_rate_vs_base" + " " * 7 + "0.657  95% CI [0.589, 0.720], judge gold, threshold 0.50, n=200"
        "  PASS",
        "reward_hacking" + " " * 9 + "clear  0 reason(s) below, n=200" + " " * 34 + "PASS",
        "",
        "mean reward" + " " * 11 + "policy  base",
        "gold reward" + " " * 12 + "0.239  -0.115",
        "proxy reward" + " " * 11 + "0.989  0.189",
        "```",
        "",
        "The whole default run (seed 0) took 206 s (lab 44 s, SFT 28 s, comparisons 27 s, RM 40 s, PPO 55 s, "
        "evaluation",
        "3 s, the rest loading).",
    ])
    assert rf.default_block(s, 44.4) == expected


def test_verdict_names_each_check_with_base_to_policy_values():
    """Three flagged checks: proxy/gold has no single instrument, so it is named alone; repetition and the
    harmful refusal rate show base → policy to 3 decimals (0.032 → 0.247, 0.583 → 0.000)."""
    extra = {"repetition": {"value": 0.247, "base": 0.032},
             "refusal_rate_harmful": {"value": 0.0, "base": 0.583}}
    reasons = ["proxy_up_gold_down: proxy reward 0.189 → 1.72", "repetition_blown_up: share 0.032 → 0.247",
               "harmful_compliance_up: harmful refusal rate 0.583 → 0"]
    s = summary(13.8, 0.32, (0.26, 0.39), 1.719, -1.451, reasons, extra)
    assert rf.verdict(s) == (
        "hacking: proxy up / gold down, repetition 0.032 → 0.247, harmful refusal 0.583 → 0.000"
    )
    assert rf.verdict(summary(0.7, 0.6, (0.5, 0.7), 1.0, 0.2)) == "clear"


def test_betas_block_rows_sft_default_and_each_override():
    default = summary(0.743, 0.657, (0.589, 0.72), 0.989, 0.239)
    run = summary(0.131, 0.527, (0.458, 0.596), 0.45, 0.05)
    assert rf.betas_block(default, [("ppo.kl.beta=5", run)]) == "\n".join([
        "| `tether run` overrides | KL from SFT (nats) | proxy | gold | win-rate vs SFT | verdict |",
        "|---|---|---|---|---|---|",
        "| SFT (the base) | 0.000 | 0.189 | −0.115 | - | - |",
        "| none (β 0.5) | 0.743 | 0.989 | 0.239 | 0.657 | clear |",
        "| `ppo.kl.beta=5` | 0.131 | 0.450 | 0.050 | 0.527 | clear |",
    ])


def stage_config(cls, overrides):
    """A stage config from overrides alone (no defaults file), with the keys every stage requires."""
    return load_config(cls, None, ["policy=sft", "data.train=train.jsonl", *overrides])


def test_algo_settings_from_each_stage_config():
    """The README's settings column, read from configs whose every read field is set here."""
    ppo = stage_config(PPOConfig, ["kl.beta=0.5", "kl.adaptive=false", "critic=rm"])
    assert rf.algo_settings("ppo", ppo) == "β 0.5, critic from the RM"
    paper = ["grpo.group_size=8", "grpo.scale=group", "grpo.beta=0.5", "grpo.kl_in_reward=false",
             "grpo.aggregation=sequence_mean"]
    grpo = stage_config(GRPOConfig, paper)
    assert rf.algo_settings("grpo", grpo) == "the paper's form: G 8, std scaling, β 0.5 k3 in the loss"
    other = stage_config(GRPOConfig, [*paper, "grpo.scale=none", "grpo.kl_in_reward=true",
                                           "grpo.aggregation=token_sum"])
    assert rf.algo_settings("grpo", other) == "G 8, no std scaling, β 0.5 k1 in the reward, token sum"
    rloo = stage_config(RLOOConfig, ["rloo.k=4", "kl.beta=0.5", "kl.estimator=k1"])
    assert rf.algo_settings("rloo", rloo) == "k 4, β 0.5 k1 in the reward"
    dpo_set = ["beta=0.1", "loss_type=sigmoid", "train.lr=1e-4", "train.epochs=1", "train.max_steps=null",
               "data.use_soft_labels=false"]
    dpo = stage_config(DPOConfig, dpo_set)
    assert rf.algo_settings("dpo", dpo) == "β 0.1, sigmoid loss, lr 1e-4, one epoch"
    capped = stage_config(DPOConfig, [*dpo_set, "train.lr=2.5e-4", "train.max_steps=40"])
    assert rf.algo_settings("dpo", capped) == "β 0.1, sigmoid loss, lr 2.5e-4, 40 steps"


def test_algo_block_table_and_stage_seconds():
    """Header n and SFT gold from the first row; seconds 55.4 → 55, 3.3 → 3, 67.0 → 67, 3.6 → 4."""
    ppo = summary(0.743, 0.657, (0.589, 0.72), 0.989, 0.239)
    ppo["stage_seconds"] = {"ppo": 55.4, "eval": 3.3}
    dpo = summary(0.33, 0.623, (0.554, 0.687), None, 0.086)
    dpo["stage_seconds"] = {"dpo": 67.0, "eval": 3.6}
    rows = [("ppo", ppo, "β 0.5, critic from the RM"), ("dpo", dpo, "β 0.1, sigmoid loss")]
    assert rf.algo_block(rows) == "\n".join([
        "| `--algo` | win-rate vs SFT (gold, n=200) | KL from SFT | gold reward (SFT −0.115) | settings |",
        "|---|---|---|---|---|",
        "| ppo | 0.657 [0.589, 0.720] | 0.743 | 0.239 | β 0.5, critic from the RM |",
        "| dpo | 0.623 [0.554, 0.687] | 0.330 | 0.086 | β 0.1, sigmoid loss |",
        "",
        "Stage 3 + its evaluation: ppo 55 s + 3 s, dpo 67 s + 4 s.",
    ])


def test_sweep_block_marks_the_recommended_beta_and_finds_the_best_of_n_peak():
    """KL to 1 decimal (6.94 → 6.9, 0.97 → 1.0); best-of-n gold peaks at n = 2 (0.323) and is 0.090 at
    the last n = 4, the proxy never falls: over-optimisation."""
    flagged = summary(6.94, 0.39, (0.3, 0.5), 1.49, -0.907, ["proxy_up_gold_down: ..."])
    clear = summary(0.97, 0.703, (0.6, 0.8), 1.063, 0.286)
    sweep = {
        "runs": [{"beta": 0.01}, {"beta": 0.3}],
        "recommended_beta": 0.3,
        "best_of_n": [{"n": 1, "proxy_reward": 0.19, "gold_reward": -0.1},
                      {"n": 2, "proxy_reward": 0.5, "gold_reward": 0.323},
                      {"n": 4, "proxy_reward": 0.5, "gold_reward": 0.09}],
        "wall_seconds": 519.4,
    }
    assert rf.sweep_block(sweep, {0.01: flagged, 0.3: clear}) == "\n".join([
        "| β | KL (nats) | proxy | gold | win-rate | verdict |",
        "|---|---|---|---|---|---|",
        "| 0.01 | 6.9 | 1.490 | −0.907 | 0.390 | hacking: proxy up / gold down |",
        "| 0.3 (recommended) | 1.0 | 1.063 | 0.286 | 0.703 | clear |",
        "",
        "Best-of-n over-optimises too: its gold reward peaks at n = 2 (0.323) and falls to 0.090 at n = 4 "
        "while the",
        "proxy keeps rising. The sweep took 519 s with `--reuse`.",
    ])


def test_best_of_n_without_a_peak_before_the_end():
    curve = [{"n": 1, "proxy_reward": 0.1, "gold_reward": 0.0},
             {"n": 2, "proxy_reward": 0.4, "gold_reward": 0.2},
             {"n": 4, "proxy_reward": 0.3, "gold_reward": 0.4}]
    assert rf.best_of_n_sentence(curve) == (
        "Best-of-n's gold reward still rises at n = 4 (0.400), while the proxy goes from 0.100 to 0.300: no "
        "over-optimisation up to n = 4."
    )


def _entry(kl, seconds, target=0.02, **more):
    return {"kl_to_optimum": kl, "seconds": seconds, "target": {"kl_to_optimum": target},
            "pass": kl <= target, **more}


def test_verify_block_table_predictions_limits_and_targets():
    """KL below 0.01 to 4 decimals (0.0037, 0.0009), above it to 3 (0.372); 9.2e-6 → 9e-6; seconds
    64.6 → 65. The grpo entry's target is its distance to the prediction (0.026 ≤ 0.05)."""
    grpo = {"kl_to_optimum": 0.3724, "seconds": 31.6, "kl_to_prediction": 0.0261, "beta_eff": 0.3061,
            "target": {"kl_to_prediction": 0.05}, "pass": True}
    result = {
        "beta": 0.5,
        "algorithms": {"ppo": _entry(0.00371, 64.6), "grpo_kl_in_reward": _entry(0.00091, 30.2),
                       "grpo": grpo},
        "limits": {
            "beta_0.01": {"beta": 0.01, "best_probability": 0.9971, "kl_to_optimum": 0.5, "seconds": 40.0,
                          "start_kl_to_reference": 0.7012, "target": {"best_probability": 0.95},
                          "pass": True},
            "beta_100": {"beta": 100.0, "best_probability": 0.1, "kl_to_optimum": 9.2e-6, "seconds": 20.0,
                         "start_kl_to_reference": 0.7012, "target": {"kl_to_optimum": 0.02}, "pass": True},
        },
    }
    assert rf.verify_block(result) == "\n".join([
        "| algorithm | KL(π‖π*) nats | seconds |",
        "|---|---|---|",
        "| ppo | 0.0037 | 65 |",
        "| grpo with the KL as k1 in the reward, no std scaling, token sums | 0.0009 | 30 |",
        "| grpo as the paper defines it | 0.372 | 32 |",
        "",
        "The paper's GRPO: β_eff = 0.306; the trained policy is 0.026 nats from its predicted fixed point. "
        "Limits, from",
        "a perturbed start 0.70 nats from the reference: β = 0.01 puts 0.997 on the best response, β = 100 "
        "brings it",
        "back to 9e-6 nats from π* (≈ the reference). Every target met.",
    ])
    result = {"beta": 0.5, "algorithms": {"rloo": _entry(0.031, 7.0)}, "limits": {}}
    assert rf.verify_block(result).endswith(
        "| rloo | 0.031 | 7 |\n\nTargets missed: rloo: kl_to_optimum 0.031 (target 0.02)."
    )


def test_probe_block_sentence():
    payload = {"steps": 412, "seconds": 120.3, "seconds_to_beat_data": 29.6, "found": 1,
               "bars": {"data": {"value": 3.19}, "gold": {"value": 0.412}},
               "candidates": [{"response": "hay hay storm", "rm_score": 2.5, "gold": -0.8},
                              {"response": "storm `blue` farm", "rm_score": 3.344, "gold": -1.5}]}
    assert rf.probe_block(payload) == "\n".join([
        "On the default run's reward model it ran 412 steps in 120 s. The best response it found, "
        "`storm 'blue' farm`,",
        "scores 3.34, above the best demonstration's 3.19, with gold reward −1.50 (the demonstrations' "
        "mean gold:",
        "0.41). It first beat the best demonstration after 30 s; 1 of 2 responses are adversarial "
        "(above that score,",
        "below that gold).",
    ])


def test_stamp_line():
    stamp = {"commit": "584d0a9+dirty", "date": "2026-11-28 10:00 UTC", "cores": 2, "cpu": "AMD EPYC",
             "load_start": 0.5, "load_end": 1.25, "seconds": 1604.4, "smoke": False}
    assert fb.stamp_line(stamp) == (
        "_Generated by `benchmarks/readme_figures.py` at commit 584d0a9+dirty on 2026-11-28 10:00 UTC: "
        "2 cores (AMD\n"
        "EPYC), load average 0.50 at the start and 1.25 at the end, 1604 s._"
    )


README = """# t
intro
<!-- figures:default -->
old default
<!-- /figures:default -->
middle text
<!-- figures:sweep -->
old sweep
<!-- /figures:sweep -->
end
"""


def test_replace_blocks_changes_only_the_text_between_the_markers():
    out = fb.replace_blocks(README, {"sweep": "new sweep\n| a |"})
    assert out == README.replace("old sweep", "new sweep\n| a |")
    both = fb.replace_blocks(README, {"default": "D", "sweep": "S"})
    assert both == README.replace("old default", "D").replace("old sweep", "S")
    # one newline after the opening marker and one before the closing one, whatever the block brings: a
    # second --write gives the same file
    assert fb.replace_blocks(README, {"sweep": "\n\nS\n\n"}) == README.replace("old sweep", "S")
    assert fb.replace_blocks(both, {"default": "D", "sweep": "S"}) == both


@pytest.mark.parametrize("text, message", [
    (README.replace("<!-- /figures:sweep -->\n", ""), "README.md: <!-- figures:sweep --> is never closed"),
    (README.replace("<!-- figures:default -->\n", ""), "README.md:4: <!-- /figures:default --> without its"),
    (README.replace("middle text", "<!-- figures:sweep -->"), "README.md:7: <!-- figures:sweep --> inside"),
    (README + "<!-- figures:sweep -->\nx\n<!-- /figures:sweep -->\n", "README.md:11: a second"),
    (README.replace("figures:sweep", "figures:swep"), "README.md:7: unknown block <!-- figures:swep -->"),
    (README.replace("<!-- figures:default -->", "<!-- figures:default -->\n<!-- /figures:sweep -->"),
     "README.md:4: <!-- /figures:sweep --> while the block 'default' is open"),
    (README.replace("figures:sweep", "figures:algo"), "README.md: no block <!-- figures:sweep -->"),
])
def test_write_refuses_missing_or_unbalanced_markers_in_one_line(text, message):
    with pytest.raises(TetherError) as err:
        fb.replace_blocks(text, {"default": "D", "sweep": "S"})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_write_checks_the_markers_before_any_run(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = tmp_path / "runs"
    assert rf.main(["--only", "verify", "--out", str(out), "--write", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err == (f"readme_figures: error: {readme}: no block <!-- figures:verify --> ... "
                   "<!-- /figures:verify -->\n")
    assert not out.exists() and readme.read_text() == README
    assert rf.main(["--only", "verify,sweeep"]) == 2
    assert capsys.readouterr().err == (
        "readme_figures: error: --only: unknown part sweeep; choose from default, betas, algo, verify, "
        "probe, sweep\n"
    )


def test_the_readme_has_every_block():
    fb.check_markers((ROOT / "README.md").read_text(), rf.PARTS, "README.md")
