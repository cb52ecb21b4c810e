"""tether.model_card: RUN/model/README.md from a run's config.yaml and summary.json, and the card a real
(tiny) reward-model run writes."""

import json

import yaml
from plumbing_helpers import write_jsonl, write_model_dir

from tether.config import RMConfig, load_config
from tether.model_card import model_card
from tether.trainers.rm import train_rm

CONFIG = {
    "policy": "owner/base-model", "beta": 0.1, "loss_type": "sigmoid",
    "lora": {"r": 16, "alpha": 32.0, "target_modules": ["all-linear"], "layers": [-2, -1]},
    "provenance": {"tether_version": "0.1.0", "torch_version": "2.13.0", "transformers_version": "5.24.0",
                   "git_commit": "abc123", "data_sha256": {"pairs.jsonl": "ff00"}},
}
SUMMARY = {
    "stage": "dpo", "steps": 40, "train_items": 160, "wall_seconds": 90.0,
    "instruments": {
        "kl_from_base": {"value": 2.12, "stderr": 0.01, "n": 16, "unit": "nats"},
        "rm_test_accuracy": {"value": 0.6, "n": 396, "threshold": 0.65, "pass": False},
        "win_rate_vs_base": {"value": 0.5625, "ci95": [0.4, 0.7], "n": 32,
                             "verdict": "no measurable difference"},
    },
    "rewards": {"policy": {"gold": 0.58}, "base": {"gold": 0.2}},
}


def test_the_card_copies_the_config_and_the_summary():
    """Every figure is the summary's: KL's interval is ± 1.96 × 0.01 = ± 0.020; the accuracy fails its 0.65
    threshold; the win-rate keeps its interval and verdict; 90 s is 1.5 min. The Hub header names the base
    model and the pipeline (text-generation for a policy)."""
    card = model_card(CONFIG, SUMMARY)
    head, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert yaml.safe_load(head) == {"library_name": "transformers", "base_model": "owner/base-model",
                                    "pipeline_tag": "text-generation", "tags": ["tether", "rlhf", "dpo"]}
    assert ("- **Stage:** `tether dpo`, direct preference optimisation (Rafailov et al. 2023); loss sigmoid; "
            "β = 0.1.") in body
    assert "LoRA r 16, α 32 on all-linear, blocks [-2, -1], merged" in body
    assert "- **Training:** 40 optimizer steps, a training set of 160 items, 1.5 min of wall time." in body
    assert "- `pairs.jsonl` (SHA-256 `ff00`)" in body
    assert "| kl_from_base | 2.120 nats | ± 0.020 | 16 |  |" in body
    assert "| rm_test_accuracy | 0.600 |  | 396 | fail (threshold 0.650) |" in body
    assert "| win_rate_vs_base | 0.562 | [0.400, 0.700] | 32 | no measurable difference |" in body
    assert "| gold | 0.580 | 0.200 |" in body
    assert "tether 0.1.0 at commit abc123, torch 2.13.0, transformers 5.24.0" in body
    assert "`tether dpo --config config.yaml --out NEW_RUN`" in body


def test_a_reward_model_run_writes_its_card(tmp_path):
    """A 2-step RM run on a tiny model: RUN/model/README.md holds the run's held-out accuracy from its
    summary.json, its training-data hash from config.yaml's provenance, and the classifier's loading code."""
    sft = write_model_dir(tmp_path / "sft")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 4)
    cfg = load_config(RMConfig, None, [f"model={sft}", f"data.train={pairs}", f"data.test={pairs}",
                                       "train.max_steps=2", "train.batch_size=2", "train.micro_batch_size=2",
                                       "train.save_every=0"])
    run = train_rm(cfg, tmp_path / "run")
    card = (run / "model" / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    digest = yaml.safe_load((run / "config.yaml").read_text())["provenance"]["data_sha256"][str(pairs)]
    assert f"| rm_test_accuracy | {summary['test_accuracy']:.3f} |  | 4 |" in card
    assert f"- `{pairs}` (SHA-256 `{digest}`)" in card
    assert "pipeline_tag: text-classification" in card and "AutoModelForSequenceClassification" in card
