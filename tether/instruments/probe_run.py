"""The probe on directories, as `tether rm probe` runs it: load, measure the bars, search, flag, write.

    payload = run_probe("runs/x/rm/model", lab="runs/x/lab", sft="runs/x/sft/model", out="runs/probe")
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tether.errors import TetherError
from tether.files import write_json
from tether.instruments.probe import probe_reward_model
from tether.instruments.probe_bars import data_bar, data_mean_gold, policy_mean_gold
from tether.instruments.probe_report import write_probe_report

METHOD = (
    "Gradient-guided discrete search (HotFlip, Ebrahimi et al. 2018; GCG, Zou et al. 2023): one chain per "
    "prompt from random tokens; each step ranks every token at every position by the gradient of the RM "
    "score with respect to the one-hot input, draws swap/insert/delete variants from the top-k, scores them "
    "exactly and keeps the best if it improves."
)


def pick_prompts(path: str | Path, n: int) -> list:
    """The first `n` prompts of a prompts JSONL file, taken round-robin over its `family` column where it
    has one (so each lab family is probed)."""
    from tether.data import load_prompts

    groups: dict = {}
    for ex in load_prompts(path):
        groups.setdefault(ex.meta.get("family"), []).append(ex.prompt)
    out, i = [], 0
    while len(out) < n and any(i < len(g) for g in groups.values()):
        out += [g[i] for g in groups.values() if i < len(g)][: n - len(out)]
        i += 1
    return out


def _lab_paths(lab: str | Path | None) -> dict:
    if lab is None:
        return {}
    data = Path(lab) / "data"
    if not data.is_dir():
        raise TetherError(f"{lab}: not a lab directory (no data/ inside)")
    return {"prompts": data / "prompts.test.jsonl", "data": data / "sft.train.jsonl"}


def run_probe(
    rm: str | Path, *, out: str | Path, tokenizer: str | Path | None = None, lab: str | Path | None = None,
    prompts: str | Path | None = None, data: str | Path | None = None, sft: str | Path | None = None,
    num_prompts: int = 16, steps: int = 1000, seconds: float | None = 120.0, seed: int = 0, **search_args,
) -> dict:
    """Run the probe and write RUN/probe.json and RUN/report.html; returns the payload.

    prompts default to the lab's test prompts, data (the RM-score bar) to the lab's demonstrations; `sft`,
    a policy directory, sets the gold bar to its samples' mean gold on the prompts file (else the data's)."""
    from tether.model_files import load_tokenizer
    from tether.reward_model import load_reward_model

    wall = time.perf_counter()
    paths = _lab_paths(lab)
    prompts, data = prompts or paths.get("prompts"), data or paths.get("data")
    if prompts is None:
        raise TetherError("the probe needs prompts: give --prompts FILE or --lab DIR")
    model, tok = load_reward_model(rm)
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    chosen = pick_prompts(prompts, num_prompts)
    if not chosen:
        raise TetherError(f"{prompts}: no prompts")
    bars = {"data": data_bar(model, tok, data) if data else None, "gold": None}
    reference_words = bars["data"]["max_words"] if bars["data"] else None
    target = bars["data"]["value"] if bars["data"] else None
    result = probe_reward_model(model, tok, chosen, steps=steps, seconds=seconds, seed=seed, target=target,
                                reference_words=reference_words, **search_args)
    lab_known = all(c.gold is not None for c in result.candidates)
    if lab_known and sft:
        bars["gold"] = policy_mean_gold(sft, prompts, seed=seed)
    elif lab_known and data:
        bars["gold"] = data_mean_gold(data)
    candidates = [_flag(c.to_dict(), bars) for c in result.candidates]
    payload = {
        "method": METHOD,
        "rm": str(rm),
        "prompts": str(prompts),
        "settings": {"num_prompts": len(chosen), "steps": steps, "seconds": seconds, "seed": seed,
                     **search_args},
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "evaluated": result.evaluated,
        "seconds_to_beat_data": _round(result.seconds_to_target),
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "bars": bars,
        "found": sum(c["adversarial"] for c in candidates),
        "candidates": candidates,
        "trace": [round(x, 4) for x in result.trace],
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe.json", json.loads(json.dumps(payload, default=str)))
    write_probe_report(out / "report.html", payload)
    return payload


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _flag(c: dict, bars: dict) -> dict:
    """Add beats_data (RM score above the data bar), below_gold (gold under the gold bar) and adversarial
    (both, or beats_data alone where no gold is known)."""
    c["beats_data"] = bars["data"] is not None and c["rm_score"] > bars["data"]["value"]
    c["below_gold"] = None if bars["gold"] is None else c["gold"] < bars["gold"]["value"]
    c["adversarial"] = c["beats_data"] and c["below_gold"] is not False
    return c
