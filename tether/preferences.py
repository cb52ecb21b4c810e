"""Preference pairs, the data of the reward model and of DPO: read, validate, tokenise and collate.

    pairs = load_pairs("prefs.jsonl", tokenizer, max_length=512, soft_labels=True, margin_field="strength")
    batch = collate_pairs(pairs[:8], pad_id(tokenizer))   # 16 rows: the 8 chosen, then the 8 rejected

A record is {"prompt", "chosen", "rejected"} from any source (tether.data_sources): prompt as in tether.data
(text or messages), chosen and rejected non-empty strings or lists of one assistant message (TRL's
conversational format). Without a "prompt" column, chosen and rejected are whole conversations (TRL's implicit
prompt): the prompt is the messages they share from the start, each response its last message, an assistant
turn. Asked for, a record also carries its "label", P(chosen ≻ rejected) in [0, 1] (soft labels),
and a margin, a finite number in a column the caller names (Llama 2's preference strength, subtracted from
r_chosen − r_rejected by the reward model's loss); otherwise the label is 1 (a sure preference) and the margin
0. Each file is read once, and a pair's label and margin stay with it through tokenising and skipping.

A pair whose chosen and rejected are the same text states no preference (its loss is log 2 whatever the
model): such ties are counted, reported once and left out; a file of ties only is an error. Every problem is
a `DataError` whose message starts with `path:line:`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from tether.data import (
    Prompt,
    Skips,
    check_prompt_end,
    check_prompt_length,
    collate_completions,
    encode_completion,
    encode_nonempty_prompt,
    messages_column,
    prompt_column,
    read_records,
    response_column,
)
from tether.errors import DataError

log = logging.getLogger("tether.data")  # the logger of every data notice, which callers may quieten at once


@dataclass
class PreferenceExample:
    prompt: Prompt
    chosen: str
    rejected: str
    path: str
    line: int
    label: float = 1.0  # P(chosen ≻ rejected); 1 is a sure preference
    margin: float = 0.0  # subtracted from r_chosen − r_rejected by the reward model's loss


@dataclass
class PairTokens:
    """A tokenised pair with its label and margin."""

    prompt_ids: list[int]
    chosen_ids: list[int]  # EOS included (unless the response was cut at max_length)
    rejected_ids: list[int]
    label: float = 1.0
    margin: float = 0.0


def number_column(path, line, obj, key: str) -> float:
    """The finite number in column `key` (not a boolean); DataError when it is missing or not one."""
    if key not in obj:
        raise DataError(path, line, f"missing column {key!r} (columns: {', '.join(sorted(obj))})")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(path, line, f"column {key!r} must be a finite number, got {value!r}")
    return float(value)


def implicit_prompt(path, line, obj) -> tuple[Prompt, str, str]:
    """(prompt, chosen, rejected) of a pair without a "prompt" column whose chosen and rejected are message
    lists (TRL's implicit prompt): the prompt is their longest common prefix of messages, and after it each
    must hold exactly one assistant message, its response."""
    chosen = messages_column(path, line, obj["chosen"], "chosen")
    rejected = messages_column(path, line, obj["rejected"], "rejected")
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    for key, msgs in (("chosen", chosen), ("rejected", rejected)):
        if len(msgs) != n + 1 or msgs[-1]["role"] != "assistant":
            raise DataError(path, line, f"{key} must be the messages it shares with the other response, then "
                            "one assistant message (no 'prompt' column: the prompt is what they share)")
        if not msgs[-1]["content"].strip():
            raise DataError(path, line, f"empty {key}")
    if n == 0:
        raise DataError(path, line, "chosen and rejected share no messages and there is no 'prompt' column: "
                        "no prompt to condition on")
    check_prompt_end(path, line, chosen[:n])
    return chosen[:n], chosen[-1]["content"], rejected[-1]["content"]


def load_preferences(
    path: str | Path, soft_labels: bool = False, margin_field: str | None = None,
    columns: dict[str, str] | None = None,
) -> list[PreferenceExample]:
    """Preference pairs from any source, columns renamed by `columns` (tether's name -> the source's): prompt
    (text or messages), chosen, rejected, and with `soft_labels` the "label" column, with `margin_field` that
    column. Ties (chosen == rejected) are left out with one warning that counts them; DataError when every
    pair is one."""
    out = []
    for line, obj in read_records(path, columns):
        conversations = isinstance(obj.get("chosen"), list) and isinstance(obj.get("rejected"), list)
        if "prompt" not in obj and conversations:
            prompt, chosen, rejected = implicit_prompt(path, line, obj)
        else:
            prompt = prompt_column(path, line, obj)
            chosen = response_column(path, line, obj, "chosen")
            rejected = response_column(path, line, obj, "rejected")
        label = number_column(path, line, obj, "label") if soft_labels else 1.0
        if not 0.0 <= label <= 1.0:
            raise DataError(path, line, f"column 'label' must be a probability in [0, 1], got {label}")
        margin = number_column(path, line, obj, margin_field) if margin_field else 0.0
        out.append(PreferenceExample(prompt, chosen, rejected, str(path), line, label, margin))
    ties = [ex.line for ex in out if ex.chosen == ex.rejected]
    if len(ties) == len(out):
        raise DataError(path, None, f"every pair ({len(out)}) has chosen == rejected: no preference to learn")
    if ties:
        log.warning("%s: %d of %d pairs have chosen == rejected (first at %s:%s); left out: a tie states no "
                    "preference (its loss is log 2 whatever the model)", path, len(ties), len(out), path,
                    ties[0])
    return [ex for ex in out if ex.chosen != ex.rejected]


def tokenize_preferences(
    examples: Sequence[PreferenceExample], tokenizer, max_length: int, too_long: str = "error",
    chat_template: str = "auto", what: str = "preference pairs",
) -> tuple[list[PairTokens], Skips]:
    """Prompt, chosen and rejected ids per pair, with its label and margin; responses are cut so that prompt +
    response fits. The skip and cut counts are reported once, as `what`."""
    out, skips = [], Skips()
    for ex in examples:
        p = encode_nonempty_prompt(tokenizer, ex, chat_template)
        if not check_prompt_length(ex, len(p), max_length, too_long, skips, "a response"):
            continue
        room = max_length - len(p)
        chosen, rejected = encode_completion(tokenizer, ex.chosen), encode_completion(tokenizer, ex.rejected)
        if len(chosen) > room or len(rejected) > room:
            skips.truncated += 1
        out.append(PairTokens(p, chosen[:room], rejected[:room], ex.label, ex.margin))
    skips.report(what)
    return out, skips


def load_pairs(
    path: str | Path, tokenizer, max_length: int, too_long: str = "error", chat_template: str = "auto",
    soft_labels: bool = False, margin_field: str | None = None, columns: dict[str, str] | None = None,
) -> list[PairTokens]:
    """Read, validate (errors name file:line) and tokenise a preference file in one pass: `load_preferences`
    then `tokenize_preferences`, the skip/cut counts reported once for the file."""
    examples = load_preferences(path, soft_labels, margin_field, columns)
    pairs, _ = tokenize_preferences(examples, tokenizer, max_length, too_long, chat_template,
                                    what=f"preference pairs of {path}")
    return pairs


def pair_shape(pair: PairTokens) -> tuple[int, int]:
    """(rows, tokens per row) of a pair in `collate_pairs`: two rows as long as prompt + its longer side."""
    return 2, len(pair.prompt_ids) + max(len(pair.chosen_ids), len(pair.rejected_ids))


def collate_pairs(items: Sequence[PairTokens], pad_value: int, side: str = "right") -> dict[str, Tensor]:
    """A preference batch of 2B rows, the B chosen rows first, then the B rejected rows in the same order."""
    prompts = [x.prompt_ids for x in items] * 2
    responses = [x.chosen_ids for x in items] + [x.rejected_ids for x in items]
    return collate_completions(prompts, responses, pad_value, side)
