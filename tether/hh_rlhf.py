"""Anthropic's HH-RLHF preference data in tether's formats (Bai et al. 2022, "Training a Helpful and
Harmless Assistant with Reinforcement Learning from Human Feedback").

    summary = import_hh_rlhf("harmless-base/test.jsonl.gz", "data/hh", test_fraction=0.2, seed=0)
    pairs = tether.preferences.load_preferences("data/hh/train.jsonl")

Each HH record is {"chosen": transcript, "rejected": transcript}, a transcript being "\\n\\nHuman: ..." and
"\\n\\nAssistant: ..." turns; the two transcripts share every turn but the last Assistant one. A record
becomes one preference pair:

    {"prompt": [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...],   # the shared turns
     "chosen": the last Assistant turn of "chosen", "rejected": that of "rejected", "source": "FILE:LINE"}

(turn texts stripped of surrounding whitespace). A record that does not fit — bad JSON, a missing or
non-string key, text before the first turn, two turns of one role in a row, no Assistant turn last, different
shared turns, an empty or identical response — stops the import with an error naming FILE:LINE, or with
skip_bad is left out and counted by reason in summary.json.

The train/test split is by prompt, not by record, so the same conversation never lands on both sides: the
distinct prompts are shuffled with random.Random(seed) and taken into the test split until it holds
round(test_fraction × pairs) pairs (at least one prompt's when the fraction is above 0 and there are two
prompts or more, so a small file never gets an empty test split). DIR/prompts.jsonl lists the test
split's distinct prompts once each ({"prompt": messages}, plus "harmful": true when asked, for the
refusal instrument, which counts only prompts with a harmful label).
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

from tether import rundir
from tether.data import decode_line, lone_surrogate_field, read_lines
from tether.errors import DataError, TetherError
from tether.files import write_json, write_text_atomic

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


class BadRecord(Exception):
    """A record that cannot become a pair; the message is the reason (the summary's key when skipped), and
    `detail` what the error adds when the record is not skipped."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.detail = detail


def parse_turns(transcript: str) -> list[dict[str, str]]:
    """The messages of one transcript: [{"role": "user" | "assistant", "content": stripped text}, ...]."""
    pieces = _TURN.split(transcript)  # [text before the first turn, role, text, role, text, ...]
    if pieces[0].strip():
        raise BadRecord("text before the first Human/Assistant turn")
    pairs = zip(pieces[1::2], pieces[2::2], strict=True)
    turns = [{"role": _ROLES[role], "content": text.strip()} for role, text in pairs]
    if any(a["role"] == b["role"] for a, b in itertools.pairwise(turns)):
        raise BadRecord("two Human or two Assistant turns in a row")
    return turns


def to_pair(record) -> dict:
    """{"prompt", "chosen", "rejected"} of one HH record; BadRecord when it does not fit."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    for key in ("chosen", "rejected"):
        if not isinstance(record.get(key), str):
            raise BadRecord(f"missing or non-string {key!r}")
    chosen, rejected = parse_turns(record["chosen"]), parse_turns(record["rejected"])
    for turns in (chosen, rejected):
        if not turns or turns[-1]["role"] != "assistant":
            raise BadRecord("a transcript does not end with an Assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise BadRecord("chosen and rejected differ before the last Assistant turn")
    if not chosen[:-1] or chosen[0]["role"] != "user":
        raise BadRecord("no Human turn before the responses")
    a, b = chosen[-1]["content"], rejected[-1]["content"]
    if not a or not b:
        raise BadRecord("an empty response")
    if a == b:
        raise BadRecord("chosen and rejected responses are identical")
    return {"prompt": chosen[:-1], "chosen": a, "rejected": b}


def read_pairs(path: str | Path, skip_bad: bool = False) -> tuple[list[dict], Counter, list[str]]:
    """(pairs with their "source", skipped count per reason, the first few skipped as "FILE:LINE: reason")."""
    path = Path(path)
    pairs, skipped, examples = [], Counter(), []
    for line_no, raw in read_lines(path):  # gzip or not, by the file's first bytes
        try:
            try:
                text = decode_line(path, line_no, raw)
            except DataError as e:
                raise BadRecord("not UTF-8 text", f": {e.problem.partition(' (')[0]}") from None
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise BadRecord(f"malformed JSON ({e.msg})") from None
            field = lone_surrogate_field(record) if isinstance(record, dict) else None
            if field is not None:
                raise BadRecord(f"lone surrogate in {field}")
            pairs.append({**to_pair(record), "source": f"{path.name}:{line_no}"})
        except BadRecord as e:
            if not skip_bad:
                problem = f"{e}{e.detail} (--skip-bad leaves such records out)"
                raise DataError(path, line_no, problem) from None
            skipped[str(e)] += 1
            if len(examples) < 10:
                examples.append(f"{path}:{line_no}: {e}")
    if not pairs:
        raise DataError(path, None, "no usable records")
    return pairs, skipped, examples


def split_by_prompt(pairs: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) with every pair of one prompt on the same side; file order kept within each side."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(json.dumps(p["prompt"], sort_keys=True), []).append(i)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    want, test_ids = round(test_fraction * len(pairs)), set()
    if test_fraction > 0 and len(keys) > 1:
        want = max(want, 1)
    for k in keys:
        if len(test_ids) >= want:
            break
        test_ids.update(groups[k])
    train = [p for i, p in enumerate(pairs) if i not in test_ids]
    test = [p for i, p in enumerate(pairs) if i in test_ids]
    return train, test


def distinct_prompts(pairs: list[dict], harmful: bool | None = None) -> list[dict]:
    seen, out = set(), []
    for p in pairs:
        key = json.dumps(p["prompt"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"prompt": p["prompt"], **({} if harmful is None else {"harmful": harmful})})
    return out


@rundir.claiming("data import", "out", rundir.holds_only(
    ("train.jsonl", "test.jsonl", "prompts.jsonl", "summary.json"), lambda s: "distinct_prompts" in s))
def import_hh_rlhf(
    path: str | Path,
    out: str | Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    skip_bad: bool = False,
    harmful: bool | None = None,
) -> dict:
    """Write OUT/train.jsonl, test.jsonl, prompts.jsonl and summary.json (last); returns the summary.

    harmful: a label written into every prompts.jsonl record (true for the red-team "harmless" splits, whose
    prompts were written to elicit harm); None leaves it out. Nothing is written when the input is bad.
    """
    if not 0 <= test_fraction < 1:
        raise TetherError(f"test_fraction must be in [0, 1), got {test_fraction}")
    pairs, skipped, examples = read_pairs(path, skip_bad)
    train, test = split_by_prompt(pairs, test_fraction, seed)
    prompts = distinct_prompts(test, harmful)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test), ("prompts", prompts)):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_text_atomic(out / f"{name}.jsonl", text)
    summary = {
        "source": str(path), "pairs": len(pairs), "train": len(train), "test": len(test),
        "test_prompts": len(prompts), "distinct_prompts": len(distinct_prompts(pairs)),
        "test_fraction": test_fraction, "seed": seed, "harmful_label": harmful,
        "skipped": sum(skipped.values()), "skipped_by_reason": dict(skipped.most_common()),
        "skipped_examples": examples,
    }
    write_json(out / "summary.json", summary)
    return summary
