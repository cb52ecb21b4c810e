"""Preference pairs: two different responses to one prompt, labelled by a labeler mix.

Each pair is one of four kinds (its `source`), drawn with the shares of `mix`:
- "model":     two samples of the pretrained model (needs a sampler; otherwise drawn as "noisy");
- "noisy":     two demonstrations with word-level noise (each sloppy three times in four) — pairs like those
               of a policy's samples, which differ in a number, a repeated or an off-topic word;
- "contrast":  a response (good half of the time) and the same response with one more flaw — minimal pairs
               that show one distinction at a time, and where a bias can flip the label;
- "synthetic": two independent synthetic responses, each good with probability `good_share`.
A side that ties the other on gold reward, or that is empty (a model sample that ended at once), is
redrawn synthetically (the source becomes "mixed" when that replaces a model sample): a tie says nothing
about the gold reward, agreement with gold is undefined on it, and a preference file has no empty response.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from tether.lab.behaviours import applicable_flaws, perturb, respond, sample_response
from tether.lab.gold import gold_reward
from tether.lab.labelers import LabelerMix
from tether.lab.world import PromptInfo

# prompts -> one sampled response per prompt
Sampler = Callable[[list[str]], list[str]]

MAX_REDRAWS = 20


PAIR_KINDS = ("model", "noisy", "contrast", "synthetic")


def make_pairs(
    rng: random.Random,
    prompts: Sequence[PromptInfo],
    mix: dict[str, float],
    good_share: float = 0.35,
    sampler: Sampler | None = None,
    max_words: int = 24,
) -> list[tuple[PromptInfo, str, str, str]]:
    """(prompt, a, b, source) per prompt, the kind drawn from `mix` (kind -> share; see the module
    docstring). Model samples are drawn in one batch. A prompt whose pair still ties after `MAX_REDRAWS`
    redraws is dropped."""
    names = [k for k in PAIR_KINDS if mix.get(k, 0) > 0]
    kinds = [rng.choices(names, [mix[k] for k in names])[0] for _ in prompts]
    if sampler is None:
        kinds = ["noisy" if k == "model" else k for k in kinds]
    wanted = [info.text for info, kind in zip(prompts, kinds, strict=True) if kind == "model" for _ in "ab"]
    samples = iter(sampler(wanted) if wanted else [])
    pairs = []
    for info, kind in zip(prompts, kinds, strict=True):
        if kind == "model":
            a, b = next(samples), next(samples)
        elif kind == "noisy":
            a, b = (respond(rng, info, ("sloppy",) if rng.random() < 0.75 else (), max_words) for _ in "ab")
        elif kind == "contrast":
            a = sample_response(rng, info, 0.5, max_words)
            b = perturb(rng, info, a, rng.choice(sum(applicable_flaws(info), ())), max_words)
        else:
            a, b = (sample_response(rng, info, good_share, max_words) for _ in "ab")
        for _ in range(MAX_REDRAWS):
            if not a.strip():
                a = sample_response(rng, info, good_share, max_words)
            elif b.strip() and gold_reward(info, a) != gold_reward(info, b):
                break
            else:
                b = sample_response(rng, info, good_share, max_words)
            kind = "mixed" if kind == "model" else kind
        else:
            continue
        pairs.append((info, a, b, kind) if rng.random() < 0.5 else (info, b, a, kind))
    return pairs


def label_pairs(
    rng: random.Random, pairs: Sequence[tuple[PromptInfo, str, str, str]], mix: LabelerMix
) -> list[dict]:
    """Preference records: {prompt, chosen, rejected, family, label, labeler, gold_chosen, gold_rejected,
    source}."""
    records = []
    for info, a, b, source in pairs:
        record = {"prompt": info.text, "family": info.family, "source": source}
        record.update(mix.label(info, a, b, rng))
        record["gold_chosen"] = gold_reward(info, record["chosen"])
        record["gold_rejected"] = gold_reward(info, record["rejected"])
        records.append(record)
    return records
