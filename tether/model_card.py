"""RUN/model/README.md: the model card of a trained stage, written from RUN/config.yaml and RUN/summary.json.

    write_model_card(Path("runs/dpo"))   # -> runs/dpo/model/README.md

The card follows the Hugging Face Hub's layout (a YAML header the Hub reads: library, base model, pipeline,
tags; then Markdown): what was trained from what (stage, algorithm, β, LoRA), on which data files (with
their SHA-256), the instruments of summary.json with their intervals and verdicts, the versions and commit
that made it, and the command that trains it again from RUN/config.yaml. Every figure is copied from those
two files; nothing is measured here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tether.files import write_text_atomic

ALGORITHMS = {
    "sft": "supervised fine-tuning: masked cross-entropy on demonstrations (InstructGPT stage 1)",
    "rm": "a Bradley-Terry reward model on preference pairs (InstructGPT stage 2)",
    "dpo": "direct preference optimisation (Rafailov et al. 2023)",
    "ppo": "PPO against a reward with a KL penalty to the reference (InstructGPT stage 3)",
    "grpo": "GRPO: group-relative advantages, no value model (Shao et al. 2024)",
    "rloo": "RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024)",
}


def write_model_card(run_dir: Path) -> Path:
    """Write RUN/model/README.md (atomically) from the run's config.yaml and summary.json; its path."""
    from tether.config import load_yaml

    run_dir = Path(run_dir)
    config = load_yaml((run_dir / "config.yaml").read_text())  # with its provenance section
    summary = json.loads((run_dir / "summary.json").read_text())
    return write_text_atomic(run_dir / "model" / "README.md", model_card(config, summary))


def model_card(config: dict[str, Any], summary: dict[str, Any]) -> str:
    """The card's text from a run's config (as RUN/config.yaml holds it) and summary."""
    stage = summary["stage"]
    base = config.get("model") or config.get("policy")
    prov = config.get("provenance", {})
    header = ["---", "library_name: transformers", f"base_model: {json.dumps(str(base))}",
              f"pipeline_tag: {'text-classification' if stage == 'rm' else 'text-generation'}",
              "tags:", "- tether", "- rlhf", f"- {stage}", "---", ""]
    about = [f"# {stage.upper()} model trained with tether", "",
             f"- **Stage:** `tether {stage}`, {ALGORITHMS.get(stage, stage)}{_objective(config, summary)}.",
             f"- **Started from:** `{base}`.", f"- **Weights:** {_weights(config.get('lora', {}))}.",
             f"- **Training:** {_training(summary)}.", ""]
    hashes = prov.get("data_sha256", {})
    data = ["## Data", "", *([f"- `{path}` (SHA-256 `{digest}`)" for path, digest in hashes.items()]
                             or ["- (not recorded)"]), ""]
    instruments = ["## Instruments", "", *_instruments(summary.get("instruments", {})), "",
                   *_rewards(summary.get("rewards", {}))]
    version = {k: prov.get(f"{k}_version", "?") for k in ("tether", "torch", "transformers")}
    commit = prov.get("git_commit") or "(not a git checkout)"
    made = ["## Made by", "",
            f"tether {version['tether']} at commit {commit}, torch {version['torch']}, transformers "
            f"{version['transformers']}. The run's whole configuration is `config.yaml` beside this "
            f"directory; `tether {stage} --config config.yaml --out NEW_RUN` trains it again.", "",
            "## Loading", "", "```python", _loading(stage), "```", ""]
    return "\n".join(header + about + data + instruments + made)


def _objective(config: dict[str, Any], summary: dict[str, Any]) -> str:
    beta = summary.get("beta", config.get("beta", (config.get("kl") or {}).get("beta")))
    loss = config.get("loss_type")
    parts = [f"loss {loss}" if loss else None, f"β = {beta:g}" if isinstance(beta, int | float) else None]
    return "".join(f"; {p}" for p in parts if p)


def _weights(lora: dict[str, Any]) -> str:
    if not lora.get("r"):
        return "every weight trained"
    layers = f", blocks {lora['layers']}" if lora.get("layers") else ""
    targets = ", ".join(lora.get("target_modules", []))
    return (f"LoRA r {lora['r']}, α {lora.get('alpha'):g} on {targets}{layers}, merged into the weights "
            "here (the adapter alone is in the run's adapter/)")


def _training(summary: dict[str, Any]) -> str:
    parts = [f"{summary['iterations']} iterations" if "iterations" in summary else None,
             f"{summary['steps']} optimizer steps" if "steps" in summary else None,
             f"a training set of {summary['train_items']} items" if "train_items" in summary else None,
             f"{summary['wall_seconds'] / 60:.1f} min of wall time" if "wall_seconds" in summary else None]
    return ", ".join(p for p in parts if p)


def _instruments(instruments: dict[str, Any]) -> list[str]:
    """One table row per instrument: value, its 95 % interval (or ± standard error), n and verdict."""
    if not instruments:
        return ["None were measured in this run (no test data); `tether eval` measures them."]
    rows = ["| instrument | value | 95 % interval | n | verdict |", "|---|---|---|---|---|"]
    for name, inst in instruments.items():
        if not isinstance(inst, dict):
            continue
        value = _number(inst.get("value"))
        if inst.get("unit"):
            value += f" {inst['unit']}"
        if "ci95" in inst:
            low, high = inst["ci95"]
            interval = f"[{_number(low)}, {_number(high)}]"
        elif "stderr" in inst:
            interval = f"± {_number(1.96 * inst['stderr'])}"
        else:
            interval = ""
        verdict = inst.get("verdict") or ({True: "pass", False: "fail"}.get(inst.get("pass"), ""))
        if "threshold" in inst and verdict in ("pass", "fail"):
            verdict += f" (threshold {_number(inst['threshold'])})"
        rows.append(f"| {name} | {value} | {interval} | {inst.get('n', '')} | {verdict} |")
    return rows


def _rewards(rewards: dict[str, Any]) -> list[str]:
    """The held-out mean rewards (proxy: the trained-against reward; gold: the judge's) of policy and base."""
    if not rewards:
        return []
    kinds = [k for k in ("proxy", "gold") if any(k in rewards.get(who, {}) for who in ("policy", "base"))]
    rows = ["Mean reward on the held-out prompts:", "", "| reward | this model | base |", "|---|---|---|"]
    for k in kinds:
        mine, base = (_number(rewards.get(who, {}).get(k, "")) for who in ("policy", "base"))
        rows.append(f"| {k} | {mine} | {base} |")
    return [*rows, ""]


def _number(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _loading(stage: str) -> str:
    cls = "AutoModelForSequenceClassification" if stage == "rm" else "AutoModelForCausalLM"
    return (f"from transformers import AutoTokenizer, {cls}\n\n"
            f"model = {cls}.from_pretrained(\"PATH/TO/model\")\n"
            "tokenizer = AutoTokenizer.from_pretrained(\"PATH/TO/model\")")
