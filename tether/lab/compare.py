"""Comparison data on a policy's own samples, labelled by the lab's simulated labelers.

InstructGPT's reward model learns from labelers' comparisons of several outputs of the SFT model for each
prompt (Ouyang et al. 2022, sec. 3.4–3.5): pairs drawn from the distribution that PPO will then move. The
lab's own pairs (tether/lab/pairs.py) come from the pretrained model and from synthetic responses; this
module adds pairs of the policy's samples, so the reward model learns to rank the responses the policy
actually gives.

    compare_samples("runs/demo/lab", "runs/demo/sft/model", "runs/demo/compare", prompts=3000, samples=4)

For each of `prompts` fresh prompts drawn from the lab's world, `samples` responses are sampled from the
policy; the first two (in sample order) that differ in gold reward form a pair, labelled by the lab's
labeler mix. A prompt whose samples all tie is dropped: a tie says nothing about the gold reward (as in
the lab's own pairs). Writes OUT/prefs.policy.jsonl (these pairs, `source` "policy"), OUT/prefs.train.jsonl
(the lab's training pairs, then these: what the reward model trains on) and OUT/summary.json (counts,
agreement of the labels with gold, wall time), the summary last so that its presence marks a finished run.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from tether import rundir
from tether.errors import TetherError
from tether.files import write_json, write_text_atomic
from tether.lab.base_model import draw_prompts, sample_texts
from tether.lab.build import open_lab
from tether.lab.config import LabConfig
from tether.lab.gold import gold_reward
from tether.lab.jsonl import dumps
from tether.lab.labelers import agreement
from tether.lab.pairs import label_pairs
from tether.lab.world import FAMILIES, PromptInfo


def pick_pairs(
    infos: list[PromptInfo], samples: list[list[str]]
) -> tuple[list[tuple[PromptInfo, str, str, str]], int]:
    """For each prompt i, the first two non-empty ones of samples[0][i], samples[1][i], ... whose gold rewards
    differ, as (prompt, a, b, "policy"); returns (pairs, number of prompts dropped because all their
    non-empty samples tie)."""
    pairs, dropped = [], 0
    for i, info in enumerate(infos):
        responses = [s[i] for s in samples if s[i].strip()]  # an empty sample is no response to prefer
        golds = [gold_reward(info, r) for r in responses]
        pair = next(
            (
                (info, responses[a], responses[b], "policy")
                for a in range(len(responses))
                for b in range(a + 1, len(responses))
                if golds[a] != golds[b]
            ),
            None,
        )
        if pair is None:
            dropped += 1
        else:
            pairs.append(pair)
    return pairs, dropped


OUTPUT = ("prefs.policy.jsonl", "prefs.train.jsonl", "summary.json")


@rundir.claiming("lab compare", "out_dir", rundir.holds_only(OUTPUT, lambda s: s.get("stage") == "compare"))
def compare_samples(
    lab_dir: str | Path,
    policy_dir: str | Path,
    out_dir: str | Path,
    prompts: int = 3000,
    samples: int = 4,
    seed: int = 0,
    temperature: float = 1.0,
) -> dict:
    """Sample, pair and label (see the module docstring); returns the summary also written to
    OUT/summary.json. OUT must be new or an earlier comparison's (tether.rundir)."""
    if prompts < 1 or samples < 2:
        raise TetherError(f"compare needs prompts >= 1 and samples >= 2, got {prompts} and {samples}")
    if temperature <= 0:
        raise TetherError(f"compare needs a sampling temperature > 0, got {temperature}")
    from tether.model_files import load_causal_lm, load_tokenizer

    start = time.perf_counter()
    lab = open_lab(lab_dir)
    config = LabConfig.from_yaml(lab.config)
    model = load_causal_lm(policy_dir).eval()
    tokenizer = load_tokenizer(policy_dir)
    infos = draw_prompts(random.Random(f"{seed}-compare"), config, prompts)
    texts = [i.text for i in infos]
    drawn = [
        sample_texts(model, tokenizer, texts, config.max_response_words, temperature, seed=seed * 1000 + k)
        for k in range(samples)
    ]
    pairs, dropped = pick_pairs(infos, drawn)
    records = label_pairs(random.Random(f"{seed}-compare-labels"), pairs, config.labeler_mix())

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy_lines = "".join(dumps(r) + "\n" for r in records)
    write_text_atomic(out / "prefs.policy.jsonl", policy_lines)
    lab_lines = lab.data("prefs", "train").read_text(encoding="utf-8")
    write_text_atomic(out / "prefs.train.jsonl", lab_lines + policy_lines)
    summary = {
        "stage": "compare",
        "policy": str(policy_dir),
        "lab": str(lab.root),
        "prompts": prompts,
        "samples_per_prompt": samples,
        "pairs": len(records),
        "dropped_all_tied": dropped,
        "lab_pairs": lab_lines.count("\n"),
        "agreement": agreement(records),
        "agreement_per_family": {
            f: agreement([r for r in records if r["family"] == f])["value"] for f in FAMILIES
        },
        "wall_seconds": time.perf_counter() - start,
    }
    write_json(out / "summary.json", summary)
    return summary
