"""`tether run --feedback ai` (RL-CAI on the lab) end to end on a reduced lab, and its bad settings."""

import json

import pytest
import yaml
from test_pipeline import SMALL  # the reduced lab and stages of the pipeline's own end-to-end test

from tether.cli import main


def test_bad_feedback_or_constitution_fails_before_any_stage(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--no-progress", "feedback=crowd"]) == 2
    assert "feedback: unknown 'crowd'" in capsys.readouterr().err
    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\n")
    code = main(["run", "--out", str(tmp_path / "s"), "--feedback", "ai", "--constitution", str(bad)])
    assert code == 2 and f"{bad}:1: constitution: missing" in capsys.readouterr().err
    assert not (tmp_path / "r" / "lab").exists() and not (tmp_path / "s" / "lab").exists()


def test_ai_feedback_with_a_dpo_loss_that_takes_no_soft_labels_fails_first(tmp_path, capsys):
    """AI labels are soft, and IPO takes hard labels only: the run stops before the lab is built, not
    after SFT and the labelling."""
    out = tmp_path / "r"
    code = main(["run", "--out", str(out), "--no-progress", "--feedback", "ai", "--algo", "dpo",
                 "dpo.loss_type=ipo"])
    assert code == 2 and "data.use_soft_labels needs loss_type sigmoid" in capsys.readouterr().err
    assert not (out / "lab").exists()


@pytest.mark.slow
def test_run_with_ai_feedback(tmp_path, capsys):
    """RUN/cai holds the AI labels (the lab's pairs re-labelled plus pairs of SFT samples) and their card;
    the reward model fits their soft labels; the summary says who gave the feedback."""
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--no-progress", "--feedback", "ai", *SMALL]) == 0
    card = json.loads((out / "cai" / "card.json").read_text())
    lab_pairs = sum(1 for _ in open(out / "lab" / "data" / "prefs.train.jsonl"))
    records = [json.loads(line) for line in open(out / "cai" / "prefs.train.jsonl")]
    assert len(records) == card["pairs"] >= lab_pairs and card["judge"] == "lab-rater"
    assert all(0.5 <= r["label"] <= 1.0 for r in records)
    for key in ("agreement_with_gold", "agreement_with_lab_labelers", "lab_labelers_with_gold"):
        assert 0.0 <= card[key]["value"] <= 1.0 and card[key]["n"] > 0
    rm_config = yaml.safe_load((out / "rm" / "config.yaml").read_text())
    assert rm_config["data"]["use_soft_labels"] is True
    assert rm_config["data"]["train"] == str(out / "cai" / "prefs.train.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["feedback"] == "ai" and "cai" in summary["stage_seconds"]
    assert not (out / "compare").exists()
