"""`build_lab`: the stage-0 model, the data sets and the card, written to one directory.

    DIR/pretrained/                    the base model and tokenizer (HF from_pretrained)
    DIR/data/sft.{train,test}.jsonl    {"prompt", "completion", "family"}
    DIR/data/prefs.{train,test}.jsonl  {"prompt", "chosen", "rejected", "family", "label", "labeler",
                                        "gold_chosen", "gold_rejected", "source"}
    DIR/data/prompts.{train,test}.jsonl {"prompt", "family", "kind", "answer", "belief", "question", "topic",
                                        "harmful"}
    DIR/lab.yaml                       the resolved config
    DIR/card.json                      counts, labeler-gold agreement, bias effects, gold means, model facts
    DIR/timings.json                   wall seconds per stage (the only file that differs between runs)

Same seed and config -> byte-identical data files, lab.yaml and card.json on the same machine and library
versions. Each data set draws from its own random stream, so changing one size does not change the others.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tether import rundir
from tether.errors import TetherError
from tether.files import fsync_dir, write_text_atomic
from tether.lab.base_model import draw_prompts, pretrain, sample_texts, save_model
from tether.lab.behaviours import habit, respond
from tether.lab.config import LabConfig
from tether.lab.gold import gold_reward
from tether.lab.jsonl import dumps, write_jsonl
from tether.lab.labelers import agreement, bias_effects
from tether.lab.pairs import label_pairs, make_pairs
from tether.lab.world import FAMILIES

WORLD_VERSION = "tether-lab/1"  # bump when the world or the gold reward changes
SPLITS = ("train", "test")
DATA_FILES = tuple(f"{kind}.{split}.jsonl" for kind in ("sft", "prefs", "prompts") for split in SPLITS)


@dataclass
class LabPaths:
    """Where everything of a built lab lives."""

    root: Path

    @property
    def pretrained(self) -> Path:
        return self.root / "pretrained"

    @property
    def card(self) -> Path:
        return self.root / "card.json"

    @property
    def config(self) -> Path:
        return self.root / "lab.yaml"

    def data(self, kind: str, split: str) -> Path:
        """E.g. data("prefs", "test") -> DIR/data/prefs.test.jsonl."""
        return self.root / "data" / f"{kind}.{split}.jsonl"


def open_lab(lab_dir: str | Path) -> LabPaths:
    """The paths of a built lab; TetherError if it is missing or from another world version."""
    paths = LabPaths(Path(lab_dir))
    try:
        card = json.loads(paths.card.read_text())
    except (OSError, json.JSONDecodeError):
        raise TetherError(
            f"{lab_dir}: not a built lab (no readable card.json); run `tether lab build`"
        ) from None
    if card.get("world") != WORLD_VERSION:
        raise TetherError(f"{lab_dir}: lab world {card.get('world')!r}, this tether has {WORLD_VERSION!r}")
    return paths


@dataclass
class LabBuild:
    """What `build_lab` returns."""

    paths: LabPaths
    card: dict
    timings: dict[str, float]


def _split(records: list, n_train: int) -> dict[str, list]:
    return {"train": records[:n_train], "test": records[n_train:]}


def _counts(records: list[dict]) -> dict[str, int]:
    counts = Counter(r["family"] for r in records)
    return {"all": len(records), **{f: counts.get(f, 0) for f in FAMILIES}}


def _mean_by_family(pairs: list[tuple[str, float]]) -> dict[str, float | None]:
    groups = defaultdict(list)
    for family, value in pairs:
        groups[family].append(value)
        groups["all"].append(value)
    return {
        k: round(sum(v) / len(v), 4) if v else None for k, v in ((k, groups[k]) for k in ("all", *FAMILIES))
    }


LAB_ENTRIES = ("pretrained", "data", "lab.yaml", "card.json", "timings.json")
LAB_DATA = {f"{kind}.{split}.jsonl" for kind in ("sft", "prefs", "prompts") for split in ("train", "test")}


def built_lab_layout(path: Path) -> bool:
    """A lab directory from before tether.rundir's markers (or its build interrupted): only the lab's entries,
    card.json (if there) a lab's card, data/ holding only the lab's files, and card.json, lab.yaml or data/
    among them (pretrained/ alone may be a user's model)."""
    names = {p.name for p in path.iterdir()} - set(rundir.CLAIM_FILES)
    if not (names <= set(LAB_ENTRIES) and names & {"card.json", "lab.yaml", "data"}):
        return False
    if "card.json" in names:
        try:
            card = json.loads((path / "card.json").read_text())
        except (OSError, ValueError):
            return False
        if not (isinstance(card, dict) and "world" in card):
            return False
    data = path / "data"
    return not data.is_dir() or {p.name for p in data.iterdir()} <= LAB_DATA


@rundir.claiming("lab build", "out_dir", built_lab_layout)
def build_lab(
    out_dir: str | Path, config: LabConfig | None = None, seed: int = 0, progress: bool = True
) -> LabBuild:
    """Build the lab into `out_dir`: new, or an earlier lab build's (tether.rundir), whose files are
    overwritten. Every file is written atomically and card.json last: a build that stops midway leaves no
    card, so `open_lab` refuses the directory rather than mix an old lab's files with new ones."""
    config = config or LabConfig()
    config.validate()
    paths = LabPaths(Path(out_dir))
    (paths.root / "data").mkdir(parents=True, exist_ok=True)
    paths.card.unlink(missing_ok=True)
    fsync_dir(paths.root)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    # Demonstrations and prompts need no model.
    rng = random.Random(f"{seed}-sft")
    infos = draw_prompts(rng, config, config.sft_train + config.sft_test)
    sft = []
    for i in infos:
        flaws = (habit(i),) if rng.random() < config.sft_habit_share else ()  # a demonstrator's lapse
        completion = respond(rng, i, flaws, config.max_response_words)
        sft.append({"prompt": i.text, "completion": completion, "family": i.family})
    rng = random.Random(f"{seed}-prompts")
    prompts = [
        {"prompt": i.text, **i.metadata()}
        for i in draw_prompts(rng, config, config.prompts_train + config.prompts_test)
    ]
    timings["data"] = time.perf_counter() - start

    t = time.perf_counter()
    model, tokenizer, losses = pretrain(config, seed, progress)
    save_model(model, tokenizer, paths.pretrained)
    timings["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    calls = iter(range(1, 1_000_000))

    def sampler(texts: list[str]) -> list[str]:
        return sample_texts(
            model,
            tokenizer,
            texts,
            config.max_response_words,
            config.sample_temperature,
            seed=seed * 1000 + next(calls),
        )

    rng = random.Random(f"{seed}-prefs")
    n_prefs = config.prefs_train + config.prefs_test
    pair_prompts = draw_prompts(rng, config, n_prefs + n_prefs // 20 + 5)  # spare prompts for dropped ties
    pairs = make_pairs(
        rng, pair_prompts, config.pair_mix, config.pair_good_share, sampler, config.max_response_words
    )[:n_prefs]
    prefs = label_pairs(rng, pairs, config.labeler_mix())
    test_infos = draw_prompts(random.Random(f"{seed}-base-samples"), config, max(config.prompts_test, 200))
    base_samples = sampler([i.text for i in test_infos])
    timings["prefs"] = time.perf_counter() - t

    sets = {
        "sft": _split(sft, config.sft_train),
        "prefs": _split(prefs, config.prefs_train),
        "prompts": _split(prompts, config.prompts_train),
    }
    for kind, splits in sets.items():
        for split, records in splits.items():
            write_jsonl(paths.data(kind, split), records)
    write_text_atomic(paths.config, config.to_yaml())

    card = {
        "world": WORLD_VERSION,
        "seed": seed,
        "counts": {
            f"{kind}.{split}": _counts(records)
            for kind, splits in sets.items()
            for split, records in splits.items()
        },
        "agreement": {
            "overall": agreement(prefs),
            "per_family": {f: agreement([r for r in prefs if r["family"] == f]) for f in FAMILIES},
            "per_labeler": {
                c.name: agreement([r for r in prefs if r["labeler"] == c.name]) for c in config.labelers
            },
            "per_source": {
                s: agreement([r for r in prefs if r["source"] == s])
                for s in ("model", "mixed", "noisy", "contrast", "synthetic")
            },
            "label_consistency": round(
                sum(max(r["label"], 1 - r["label"]) for r in prefs) / max(1, len(prefs)), 4
            ),
        },
        "bias_effects": bias_effects(prefs),
        "gold_means": {
            "demonstrations": _mean_by_family(
                [(r["family"], gold_reward(r["prompt"], r["completion"])) for r in sft]
            ),
            "pretrained_samples": _mean_by_family(
                [(i.family, gold_reward(i, s)) for i, s in zip(test_infos, base_samples, strict=True)]
            ),
            "chosen": _mean_by_family([(r["family"], r["gold_chosen"]) for r in prefs]),
            "rejected": _mean_by_family([(r["family"], r["gold_rejected"]) for r in prefs]),
        },
        "model": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "pretrain_loss_first": round(losses[0], 4),
            "pretrain_loss_last": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        },
    }
    timings["total"] = time.perf_counter() - start
    timings = {k: round(v, 2) for k, v in timings.items()}
    write_text_atomic(paths.root / "timings.json", dumps(timings) + "\n")
    write_text_atomic(paths.card, json.dumps(card, sort_keys=True, indent=2) + "\n")  # last: the lab is built
    return LabBuild(paths, card, timings)
