"""recipes/hh-rlhf/run.py on a tiny random model and 20 HH-style records (--smoke): the recipe's code path
end to end (import, `tether rm` with the recipe's config, the stamped table), not its figures.

The table's accuracy, n and interval must be the run's own summary.json figures; the interval is recomputed
here from the Wilson formula (Wilson 1927): centre (p + z²/2n) / (1 + z²/n), half-width
z·sqrt(p(1 − p)/n + z²/4n²) / (1 + z²/n), z = 1.959964.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from plumbing_helpers import load_script, write_model_dir

ROOT = Path(__file__).resolve().parent.parent
recipe = load_script(ROOT / "recipes" / "hh-rlhf" / "run.py", "hh_recipe")

H, A = "\n\nHuman: ", "\n\nAssistant: "


def hh_records(n: int) -> str:
    """HH transcripts over the tiny tokenizer's words, each prompt distinct."""
    lines = []
    for i in range(n):
        q = " ".join("abcdefghijkl"[(i + k) % 12] for k in range(3)) + f" {i}"
        lines.append(json.dumps({"chosen": f"{H}{q}{A}a b", "rejected": f"{H}{q}{A}c d e"}))
    return "\n".join(lines) + "\n"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.slow
def test_the_recipe_runs_and_its_table_is_the_runs_own(tmp_path, capsys):
    model = write_model_dir(tmp_path / "model")
    data = tmp_path / "hh.jsonl"
    data.write_text(hh_records(20))
    readme = tmp_path / "README.md"
    readme.write_text("# r\n<!-- figures:hh-rm -->\nold\n<!-- /figures:hh-rm -->\n"
                      "<!-- figures:hh-policies -->\nold\n<!-- /figures:hh-policies -->\n"
                      "<!-- figures:smollm2-probes -->\nold\n<!-- /figures:smollm2-probes -->\nend\n")
    out = tmp_path / "runs"
    argv = ["--smoke", "--data", str(data), "--model", str(model), "--out", str(out)]
    assert recipe.main([*argv, "--write", str(readme)]) == 0
    summary = json.loads((out / "rm" / "lora16" / "summary.json").read_text())
    acc = summary["instruments"]["rm_test_accuracy"]
    assert acc["n"] == 4  # round(0.2 × 20) test pairs, one per prompt
    low, high = wilson(round(acc["value"] * acc["n"]), acc["n"])
    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `lora16`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == str(summary["train_items"]) == "16"
    assert cells[2] == f"{acc['value']:.3f} [{low:.3f}, {high:.3f}]"
    assert cells[3] == "4" and cells[4] == ("pass" if acc["value"] >= 0.65 else "miss")
    assert "SMOKE SETTINGS" in text and text.endswith("<!-- /figures:smollm2-probes -->\nend\n")
    # the probes block: the model against itself, each row its own summary's rates and difference interval
    probes = json.loads((out / "probes-self" / "summary.json").read_text())["instruments"]
    harmful = probes["refusal_rate_harmful"]
    assert harmful["n"] == harmful["base_n"] == 3  # probe_max_items=3 in --smoke
    row = next(line for line in text.splitlines() if line.startswith("| refusal (harmful requests)"))
    low, high = harmful["difference_ci95"]
    assert row.split("|")[5].strip() == (f"{harmful['change']:+.3f} [{low:+.3f}, {high:+.3f}]"
                                         .replace("-", "−"))
    # the policies block: DPO and RLOO (against the RM) each against the base, each cell its eval's figures
    for name, head in (("dpo", "| DPO, β 0.1, 2 steps of 2 pairs"), ("rloo", "| RLOO, β 0.05, 1 iterations")):
        ev = json.loads((out / f"eval-{name}" / "summary.json").read_text())
        win, kl = ev["instruments"]["win_rate_vs_base"], ev["instruments"]["kl_from_base"]
        assert ev["rm"] == str(out / "rm" / "lora16" / "model") and win["n"] == 2  # max_prompts=2 in --smoke
        cells = [c.strip() for c in next(line for line in text.splitlines() if line.startswith(head))
                 .strip("|").split("|")]
        assert cells[1] == f"{kl['value']:.3f} ± {1.96 * kl['stderr']:.3f}".replace("-", "−")
        assert cells[3].startswith(f"{win['value']:.3f} [{win['ci95'][0]:.3f}, {win['ci95'][1]:.3f}]")
    rloo = yaml.safe_load((out / "rloo" / "config.yaml").read_text())
    assert rloo["reward"]["source"] == str(out / "rm" / "lora16" / "model")
    # a second call trains nothing: the same block from the stamps
    before = (out / "rm" / "lora16" / "metrics.jsonl").read_text()
    assert recipe.main([*argv, "--write", str(readme)]) == 0
    assert readme.read_text() == text and (out / "rm" / "lora16" / "metrics.jsonl").read_text() == before
    capsys.readouterr()


def test_bad_arguments_are_one_line_before_any_run(tmp_path, capsys):
    model = write_model_dir(tmp_path / "model")
    out = tmp_path / "runs"
    capsys.readouterr()  # saving the model draws a progress bar
    assert recipe.main(["--variants", "lora61", "--model", str(model), "--out", str(out)]) == 2
    assert capsys.readouterr().err == ("hh-rlhf: error: --variants: unknown lora61; choose from lora16, "
                                       "full, top10, top10-lr5e-4, top10-1.5ep\n")
    readme = tmp_path / "README.md"
    readme.write_text("# no blocks\n")
    assert recipe.main(["--model", str(model), "--out", str(out), "--write", str(readme)]) == 2
    assert capsys.readouterr().err == (f"hh-rlhf: error: {readme}: no block <!-- figures:hh-rm --> ... "
                                       "<!-- /figures:hh-rm -->\n")
    assert recipe.main(["--model", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "run `tether models pull smollm2-135m-instruct` or give --model" in capsys.readouterr().err
    assert not out.exists()
