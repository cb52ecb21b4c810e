"""report.html and summary.md of a run, an evaluation and a sweep: parsed so that a broken page fails CI."""

import math

from html_check import parse_report

from tether.instruments.report import training_curves, write_report
from tether.instruments.sweep_report import write_sweep_report


def _summary(flagged: bool) -> dict:
    return {
        "instruments": {
            "kl_from_base": {"value": 3.2, "stderr": 0.1, "n": 40, "unit": "nats"},
            "win_rate_vs_base": {"value": 0.4, "ci95": [0.3, 0.5], "n": 40, "judge": "gold", "pass": False},
            "reward_hacking": {
                "value": flagged, "pass": not flagged, "n": 40,
                "reasons": ["length_blown_up: mean length 5 → 12 tokens <&>"] if flagged else [],
            },
        },
        "rewards": {"policy": {"proxy": 1.0, "gold": 0.1}, "base": {"proxy": 0.2, "gold": 0.3}},
        "beta": 0.01,
        "wall_seconds": 12.0,
    }


SAMPLES = [
    {"prompt": "a <b> prompt", "base": "short | answer", "policy": "long long long"},
    {"prompt": "another", "base": "x", "policy": "y"},
]


def test_training_curves_pick_the_logged_keys():
    """PPO train records → one curve per logged key of reward, gold, KL, β, length, entropy; eval records
    and unlogged keys are left out; DPO plots per step."""
    metrics = [
        {"kind": "train", "iteration": i, "reward": i / 10, "gold": 0.1, "kl": i, "beta": 0.5,
         "response_length": 7, "entropy": 1.0} for i in range(1, 4)
    ] + [{"kind": "eval", "iteration": 3, "reward": 9.0}]
    curves, x = training_curves(metrics, "ppo")
    assert x == "iteration" and len(curves) == 6
    assert curves["PPO proxy reward"] == ([1, 2, 3], [0.1, 0.2, 0.3])
    curves, x = training_curves([{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}], "dpo")
    assert x == "step" and list(curves) == ["DPO loss"]


def test_run_report_parses_with_plots_verdict_samples_and_markdown(tmp_path):
    curves = {"PPO proxy reward": ([1, 2, 3], [0.1, 0.5, 0.4]), "PPO KL": ([1, 2], [0.0, math.nan])}
    path = write_report(tmp_path / "report.html", _summary(True), curves, title="t <run>", samples=SAMPLES)
    page = parse_report(path.read_text())
    assert len(page.images) == 1  # the KL curve has one finite point: left out, not a broken image
    text = "".join(page.text)
    assert "flagged" in text and "length_blown_up: mean length 5 → 12 tokens <&>" in text
    assert "long long long" in text and "short | answer" in text  # base and policy side by side
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# t <run>") and "| reward_hacking | flagged |" in md
    assert "short \\| answer" in md and "length_blown_up" in md


def _sweep() -> dict:
    runs = [
        {"beta": 0.001, "kl_from_base": 40.0, "kl_stderr": 2.0, "proxy_reward": 2.0, "gold_reward": -0.2,
         "win_rate_vs_base": 0.3, "reward_hacking": True, "hacking_reasons": ["repetition_blown_up: x"],
         "dir": "beta-0.001"},
        {"beta": 0.1, "kl_from_base": 2.0, "kl_stderr": 0.1, "proxy_reward": 1.0, "gold_reward": 0.3,
         "win_rate_vs_base": 0.6, "reward_hacking": False, "hacking_reasons": [], "dir": "beta-0.1"},
    ]
    bon = [{"n": n, "kl": k, "sqrt_kl": math.sqrt(k), "proxy_reward": 0.2 + k, "gold_reward": 0.1}
           for n, k in ((1, 0.0), (2, 0.193), (4, 0.636))]
    return {"algo": "ppo", "beta_key": "ppo.kl.beta", "runs": runs, "best_of_n": bon,
            "recommended_beta": 0.1, "recommendation_metric": "gold_reward", "wall_seconds": 60.0,
            "rm_reward_scale": 0.5}


def test_sweep_report_parses_with_frontier_table_and_links(tmp_path):
    path = write_sweep_report(tmp_path, _sweep())
    page = parse_report(path.read_text())
    assert len(page.images) == 1  # the frontier plot
    text = "".join(page.text)
    assert "Recommended β = 0.1" in text and "0.1 (recommended)" in text
    assert "FLAGGED" in text and "β=0.001: repetition_blown_up: x" in text
    assert "beta-0.1/report.html" in path.read_text()
    md = (tmp_path / "summary.md").read_text()
    assert "β/scale per run: 0.002, 0.2" in md
    assert "| 0.001 | 40.000 |" in md and "Recommended β = 0.1" in md and "| 4 | 0.636 |" in md
