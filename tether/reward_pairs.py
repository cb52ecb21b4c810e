"""Preference pairs of a policy's own samples, labelled by a reward function with Bradley-Terry noise: the
synthetic preferences of the controlled-sentiment task (Rafailov et al. 2023, sec. 6.1: pairs of the SFT
model's samples, preferences from a sentiment scorer).

    from tether.reward_pairs import make_reward_pairs
    summary = make_reward_pairs("models/sft", "prompts.train.jsonl", "tether.sentiment:vader",
                                "pairs.train.jsonl", noise=0.25)

For each prompt the policy samples two replies a, b (tether.cai.label.sample_pairs: the project's sampler,
at temperature 1 by default); the reward scores them g_a, g_b, and a simulated labeler prefers a with
probability σ((g_a − g_b) / noise) (tether.lab.labelers.preference_probability): noise 0 always prefers
the higher score, a larger noise flips more labels, a tie is a coin flip. Records: {"prompt", "chosen",
"rejected", "gold_chosen", "gold_rejected"}, what `tether rm` and `tether dpo` read.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

from tether.cai.label import Pair, sample_pairs
from tether.errors import TetherError
from tether.files import write_json, write_text_atomic
from tether.lab.jsonl import dumps
from tether.lab.labelers import preference_probability


def label_by_reward(pairs: Sequence[Pair], reward, noise: float, seed: int = 0) -> tuple[list[dict], dict]:
    """(preference records, summary): each pair's sides scored by `reward` (a tether.rewards source called
    with the pairs' prompts, replies and prompt columns) and labelled by a Bradley-Terry draw at `noise`.

    Summary: pairs, noise, ties (pairs whose scores are equal), chosen_higher (share of the pairs whose
    chosen side has the strictly higher score), expected_chosen_higher (its expectation under the labeler,
    Σ σ(|Δ|/noise) over the pairs that are not ties, / pairs), gold_mean (mean score of every reply)."""
    if noise < 0:
        raise TetherError(f"noise must be >= 0, got {noise}")
    if not pairs:
        raise TetherError("no pairs to label")
    prompts = [p.prompt for p in pairs]
    names = sorted({k for p in pairs for k in p.columns})
    columns = {k: [p.columns.get(k) for p in pairs] for k in names}
    first = [float(v) for v in reward(prompts, [p.first for p in pairs], **columns)]
    second = [float(v) for v in reward(prompts, [p.second for p in pairs], **columns)]
    rng = random.Random(f"{seed}-reward-pairs")
    records, expected = [], 0.0
    for pair, a, b in zip(pairs, first, second, strict=True):
        p_first = preference_probability(a - b, noise)
        if rng.random() < p_first:
            chosen, rejected, g_chosen, g_rejected = pair.first, pair.second, a, b
        else:
            chosen, rejected, g_chosen, g_rejected = pair.second, pair.first, b, a
        records.append({"prompt": pair.prompt, "chosen": chosen, "rejected": rejected,
                        "gold_chosen": g_chosen, "gold_rejected": g_rejected})
        expected += max(p_first, 1.0 - p_first) if a != b else 0.0
    n = len(records)
    summary = {
        "pairs": n,
        "noise": noise,
        "ties": sum(1 for a, b in zip(first, second, strict=True) if a == b),
        "chosen_higher": sum(1 for r in records if r["gold_chosen"] > r["gold_rejected"]) / n,
        "expected_chosen_higher": expected / n,
        "gold_mean": (sum(first) + sum(second)) / (2 * n),
    }
    return records, summary


def summary_path(out: str | Path) -> Path:
    """Where the pairs file OUT's summary goes: OUT with its suffix replaced by .summary.json."""
    return Path(out).with_suffix(".summary.json")


def make_reward_pairs(policy: str | Path, prompts: str | Path, reward: str, out: str | Path, *,
                      per_prompt: int = 1, noise: float = 1.0, max_new_tokens: int = 48, seed: int = 0,
                      temperature: float = 1.0, limit: int | None = None, device: str = "cpu") -> dict:
    """`tether data pairs`: `per_prompt` pairs of `policy`'s samples for each prompt of the file `prompts`
    (its first `limit`), labelled by the reward spec `reward` (tether.rewards.load_reward) with noise
    `noise`; writes the records to OUT (JSONL) and the summary (`label_by_reward`'s, plus the prompts
    dropped because their two samples were the same, the settings and wall_seconds) to OUT's
    `summary_path`. Returns the summary. An existing OUT is replaced only when it is an earlier output of
    this function (its summary beside it); any other file there is refused before anything runs."""
    from tether.cai.stages import load_policy
    from tether.data import load_prompts
    from tether.rewards import load_reward

    if per_prompt < 1:
        raise TetherError(f"--per-prompt must be at least 1, got {per_prompt}")
    if Path(out).exists() and not summary_path(out).is_file():  # a file tether did not write stays as it is
        raise TetherError(f"{out} exists and is not an earlier `tether data pairs` output (no "
                          f"{summary_path(out).name} beside it): choose another --out")
    start = time.perf_counter()
    scorer = load_reward(reward, device=device)  # before sampling: a bad spec fails at once
    examples = load_prompts(prompts)[:limit]
    repeated = [ex for ex in examples for _ in range(per_prompt)]  # each drawn anew: one generator per pass
    model, tokenizer = load_policy(policy)
    pairs, dropped = sample_pairs(model.to(device), tokenizer, repeated, 2, seed, max_new_tokens, temperature)
    del model
    records, summary = label_by_reward(pairs, scorer, noise, seed)
    summary = {**summary, "dropped_same_samples": dropped, "prompts": len(examples), "per_prompt": per_prompt,
               "policy": str(policy), "prompts_file": str(prompts), "reward": reward, "seed": seed,
               "max_new_tokens": max_new_tokens, "temperature": temperature,
               "wall_seconds": time.perf_counter() - start}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out), "".join(dumps(r) + "\n" for r in records))
    write_json(summary_path(out), summary)
    return summary
