"""RL-CAI's labelling step: pairs of replies labelled by a constitutional judge, with a card.

    from tether.cai import label_and_write, load_constitution, load_judge, pairs_from_file
    judge = load_judge("lab", load_constitution())
    card = label_and_write(judge, pairs_from_file("prefs.jsonl"), "runs/cai")

Pairs come from a policy's own samples (`sample_pairs`, Bai et al. 2022 sec. 4.1: two samples per prompt) or
from a preference file (`pairs_from_file`, shown in a seeded random order so the human choice is not always
first). Each becomes a preference record {"prompt", "chosen", "rejected", "label"}: chosen is the side the
judge prefers and `label` its probability (P(chosen preferred) ≥ ½; ½ on a tie), for `tether rm` with
data.use_soft_labels=true or `tether dpo`. On lab prompts the records also carry `gold_chosen`,
`gold_rejected` and `family`, and the card compares the labels with gold and with the lab's simulated
labelers on the same pairs.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tether.cai.card import agreement_with, position_bias_rate, write_card
from tether.cai.judges import ConstitutionJudge
from tether.files import write_text_atomic
from tether.lab.jsonl import dumps
from tether.preferences import load_preferences


@dataclass
class Pair:
    prompt: object  # text or chat messages
    first: str
    second: str
    human: float | None = None  # 1.0: a human preferred `first`; 0.0: `second`; None: no human label
    source: str = "policy"
    columns: dict = field(default_factory=dict)  # the prompt record's other columns (for a reward function)


def pairs_from_file(path: str | Path, seed: int = 0, limit: int | None = None) -> list[Pair]:
    """The file's {"prompt", "chosen", "rejected"} pairs, each side shown first with probability ½."""
    rng = random.Random(f"{seed}-pair-order")
    out = []
    for ex in load_preferences(path)[:limit]:
        flip = rng.random() < 0.5
        first, second = (ex.rejected, ex.chosen) if flip else (ex.chosen, ex.rejected)
        out.append(Pair(ex.prompt, first, second, 0.0 if flip else 1.0, "file"))
    return out


def sample_replies(model, tokenizer, prompts, samples: int = 1, seed: int = 0, max_new_tokens: int = 64,
                   temperature: float = 1.0, max_prompt_length: int = 1024) -> tuple[list, list[list[str]]]:
    """(the prompts as given, `samples` lists of one reply per prompt) from the policy, for prompts given as
    tether.data.PromptExample; a prompt longer than `max_prompt_length` tokens keeps its end."""
    from tether.data import tokenize_prompts
    from tether.instruments.evaluate import sample_responses

    items, _ = tokenize_prompts(prompts, tokenizer, max_prompt_length, too_long="truncate")
    drawn = [
        sample_responses(model, tokenizer, items, max_new_tokens=max_new_tokens, seed=seed * 1000 + k,
                         temperature=temperature).responses
        for k in range(samples)
    ]
    return [x.example.prompt for x in items], drawn


def sample_pairs(model, tokenizer, prompts, samples: int = 2, seed: int = 0, max_new_tokens: int = 64,
                 temperature: float = 1.0) -> tuple[list[Pair], int]:
    """(pairs, prompts dropped): `samples` replies per prompt (tether.data.PromptExample) from the policy
    (`sample_replies`); the first two that differ in text form the pair, which keeps the prompt record's
    other columns; a prompt whose samples are all the same, or empty, is dropped."""
    given, drawn = sample_replies(model, tokenizer, prompts, samples, seed, max_new_tokens, temperature)
    pairs, dropped = [], 0
    for i, prompt in enumerate(given):
        replies = [d[i] for d in drawn if d[i].strip()]
        other = next((r for r in replies[1:] if r != replies[0]), None) if replies else None
        if other is None:
            dropped += 1
        else:
            pairs.append(Pair(prompt, replies[0], other, columns=prompts[i].meta))
    return pairs, dropped


def _lab_infos(pairs: list[Pair]):
    """The parsed lab prompts, or None when any prompt is not a lab prompt."""
    from tether.lab import parse_prompt

    try:
        return [parse_prompt(p.prompt) for p in pairs]
    except (ValueError, TypeError, AttributeError):
        return None


def label_pairs(judge: ConstitutionJudge, pairs: list[Pair], lab_labelers=None, seed: int = 0,
                ) -> tuple[list[dict], dict]:
    """(preference records, card). `lab_labelers` (a tether.lab.LabelerMix): on lab prompts, also label
    the pairs with the lab's simulated labelers to compare against."""
    if not pairs:
        from tether.errors import TetherError

        raise TetherError("no pairs to label")
    prompts = [p.prompt for p in pairs]
    first, second = [p.first for p in pairs], [p.second for p in pairs]
    start = time.perf_counter()
    forward, swapped, principles = judge.orders(prompts, first, second)
    seconds = time.perf_counter() - start
    labels = [0.5 * (f + 1.0 - s) for f, s in zip(forward, swapped, strict=True)]

    records = []
    for pair, p, principle in zip(pairs, labels, principles, strict=True):
        chosen, rejected = (pair.first, pair.second) if p >= 0.5 else (pair.second, pair.first)
        records.append({"prompt": pair.prompt, "chosen": chosen, "rejected": rejected,
                        "label": round(max(p, 1.0 - p), 6), "principle": principle.name,
                        "judge": judge.name, "source": pair.source})
    card = {
        "judge": judge.name,
        "constitution": judge.constitution.name,
        "pairs": len(pairs),
        "ties": sum(1 for p in labels if p == 0.5),
        "judge_seconds": round(seconds, 3),
        "labels_per_second": float(f"{len(pairs) / max(seconds, 1e-9):.4g}"),
        "position_bias_rate": position_bias_rate(forward, swapped),
        "mean_p_a": round(sum(forward + swapped) / (2 * len(pairs)), 4),  # ½ when no letter is favoured
        "principles": dict(Counter(p.name for p in principles)),
        "agreement_with_human_labels": agreement_with(labels, [p.human for p in pairs]),
    }
    infos = _lab_infos(pairs)
    if infos is not None:
        _add_lab_figures(card, records, infos, pairs, labels, lab_labelers, seed)
    return records, card


def _add_lab_figures(card, records, infos, pairs, labels, lab_labelers, seed) -> None:
    from tether.instruments.judges import GoldJudge
    from tether.lab import gold_reward

    for record, info in zip(records, infos, strict=True):
        record["family"] = info.family
        record["gold_chosen"] = gold_reward(info, record["chosen"])
        record["gold_rejected"] = gold_reward(info, record["rejected"])
    gold = GoldJudge().prefer(infos, [p.first for p in pairs], [p.second for p in pairs])  # 1, ½ or 0
    card["agreement_with_gold"] = agreement_with(labels, gold)
    families = sorted({i.family for i in infos})
    rows = list(zip(labels, gold, infos, strict=True))
    card["agreement_with_gold_per_family"] = {
        f: agreement_with([x for x, _, i in rows if i.family == f],
                          [g for _, g, i in rows if i.family == f])["value"]
        for f in families
    }
    if lab_labelers is not None:
        rng = random.Random(f"{seed}-cai-lab-labelers")
        human = [1.0 if lab_labelers.pick(rng).compare(i, p.first, p.second, rng)[0] else 0.0
                 for i, p in zip(infos, pairs, strict=True)]
        card["agreement_with_lab_labelers"] = agreement_with(labels, human)
        card["lab_labelers_with_gold"] = agreement_with(human, gold)


def write_labels(out: str | Path, records: list[dict], card: dict, name: str = "prefs.jsonl") -> Path:
    """OUT/<name> (the preference records), then OUT/card.json and OUT/card.txt."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = write_text_atomic(out / name, "".join(dumps(r) + "\n" for r in records))
    write_card(out, card)
    return path


def label_and_write(judge: ConstitutionJudge, pairs: list[Pair], out: str | Path, lab_labelers=None,
                    seed: int = 0) -> dict:
    """`label_pairs`, then `write_labels`; returns the card."""
    records, card = label_pairs(judge, pairs, lab_labelers, seed)
    write_labels(out, records, card)
    return card
