"""Datasets, tokenisation and collators: the one data path of lab and real data (preference pairs:
tether.preferences; the sources records are read from, JSONL, JSON, parquet, csv, `datasets` directories and
Hub datasets: tether.data_sources).

Records (TRL's standard and conversational formats):
- SFT: {"prompt", "completion"} (the completion a string, or a list of one assistant message) or
  {"messages": [{"role", "content"}, ...]} whose last message is the assistant's (the completion; the
  messages before it are the prompt, so only the last turn is trained).
- preferences: {"prompt", "chosen", "rejected"}, optionally a "label" and a margin column; read, tokenised
  and collated by tether.preferences with the readers and validators here.
- prompts: {"prompt"} (string or messages, not empty) plus any metadata (kept in `PromptExample.meta`).
A message's role is "system", "user" or "assistant", and a prompt never ends on an assistant turn (the
response to be trained or sampled follows it). Strings must be text a tokenizer can encode: a lone surrogate
escape ("\\ud800" without its low half) is refused.

Every problem raises `DataError(path, line, problem)`, so the message starts with `path:line:` (a table's
records: `path:row N:`).

Tokenisation: the prompt and the completion are tokenised separately and concatenated, then EOS is appended,
so the prompt's ids are exactly what a policy is conditioned on when it samples. A messages prompt goes
through the tokenizer's chat template when it has one (`chat_template="auto"`), a string prompt only when
asked (`"always"`); without a template, messages are rendered as "Role: content" paragraphs ending in
"Assistant:". Collators return input_ids, attention_mask and loss_mask (1 on completion tokens, EOS included).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tether.data_sources import decode_line as decode_line
from tether.data_sources import lone_surrogate_field as lone_surrogate_field
from tether.data_sources import read_jsonl as read_jsonl
from tether.data_sources import read_lines as read_lines
from tether.data_sources import read_records
from tether.errors import DataError, TetherError

log = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]  # text, or chat messages [{"role", "content"}, ...]
ROLES = ("system", "user", "assistant")


@dataclass
class SFTExample:
    prompt: Prompt
    completion: str
    path: str
    line: int


@dataclass
class PromptExample:
    prompt: Prompt
    meta: dict[str, Any]
    path: str
    line: int


# ------------------------------------------------------------------------------------------------ reading


def text_column(path, line, obj, key) -> str:
    """The string in column `key`; DataError when it is missing or not a string."""
    if key not in obj:
        raise DataError(path, line, f"missing column {key!r} (columns: {', '.join(sorted(obj))})")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(path, line, f"column {key!r} must be a string, got {type(value).__name__}")
    return value


def nonempty_text(path, line, obj, key) -> str:
    """`text_column`, refused when it is blank."""
    value = text_column(path, line, obj, key)
    if not value.strip():
        raise DataError(path, line, f"empty {key}")
    return value


def messages_column(path, line, value, key) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(path, line, f"column {key!r} must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise DataError(path, line, f"{key}[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            problem = f"{key}[{i}] has role {m['role']!r}; tether takes 'system', 'user' and 'assistant'"
            raise DataError(path, line, problem)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def check_prompt_end(path, line, prompt: Prompt) -> None:
    if isinstance(prompt, list) and prompt and prompt[-1]["role"] == "assistant":
        raise DataError(path, line, "the prompt ends on an assistant turn; the response follows a user or "
                        "system turn")


def prompt_column(path, line, obj) -> Prompt:
    """The "prompt" column: text, or a messages list that does not end on an assistant turn."""
    if "prompt" not in obj:
        raise DataError(path, line, f"missing column 'prompt' (columns: {', '.join(sorted(obj))})")
    if isinstance(obj["prompt"], list):
        prompt = messages_column(path, line, obj["prompt"], "prompt")
        check_prompt_end(path, line, prompt)
        return prompt
    return text_column(path, line, obj, "prompt")


def response_column(path, line, obj, key) -> str:
    """A response (a completion, chosen or rejected): non-empty text, or a list of one assistant message
    (TRL's conversational format) whose content is taken."""
    if not isinstance(obj.get(key), list):
        return nonempty_text(path, line, obj, key)
    msgs = messages_column(path, line, obj[key], key)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in msgs)
        raise DataError(path, line, f"column {key!r} must be one assistant message, got roles {roles}")
    if not msgs[0]["content"].strip():
        raise DataError(path, line, f"empty {key}")
    return msgs[0]["content"]


def load_sft(path: str | Path, columns: dict[str, str] | None = None,
             all_assistant_turns: bool = False) -> list[SFTExample]:
    """Demonstrations: prompt/completion or messages records from any source (tether.data_sources), its
    columns renamed by `columns` (tether's name -> the source's). A messages record gives its last assistant
    turn as the completion, or with `all_assistant_turns` one example per assistant turn that follows
    another message, the messages before it as the prompt (each turn trained once, on the conversation up to
    it)."""
    out = []
    for line, obj in read_records(path, columns):
        if "messages" in obj:
            msgs = messages_column(path, line, obj["messages"], "messages")
            last = msgs[-1]
            if last["role"] != "assistant":
                raise DataError(path, line, f"the last message must be the assistant's, got {last['role']!r}")
            turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and i > 0]
            for i in turns if all_assistant_turns else [len(msgs) - 1]:
                which = "last assistant message" if i == len(msgs) - 1 else f"assistant message {i + 1}"
                if not msgs[i]["content"].strip():
                    raise DataError(path, line, f"empty completion ({which})")
                check_prompt_end(path, line, msgs[:i])
                out.append(SFTExample(msgs[:i], msgs[i]["content"], str(path), line))
        elif "prompt" in obj or "completion" in obj:
            prompt = prompt_column(path, line, obj)
            completion = response_column(path, line, obj, "completion")
            out.append(SFTExample(prompt, completion, str(path), line))
        else:
            cols = ", ".join(sorted(obj))
            problem = f"missing columns: need 'prompt' and 'completion', or 'messages' (columns: {cols})"
            raise DataError(path, line, problem)
    return out


def load_prompts(path: str | Path, columns: dict[str, str] | None = None) -> list[PromptExample]:
    """Prompts for sampling (not empty) from any source, columns renamed as in `load_sft`; every other column
    is kept as metadata (e.g. for a gold reward)."""
    out = []
    for line, obj in read_records(path, columns):
        prompt = prompt_column(path, line, obj)
        if isinstance(prompt, str) and not prompt.strip():
            raise DataError(path, line, "empty prompt: nothing to sample a response to")
        meta = {k: v for k, v in obj.items() if k != "prompt"}
        out.append(PromptExample(prompt, meta, str(path), line))
    return out


# ------------------------------------------------------------------------------------------------ tokens


def eos_id(tokenizer) -> int:
    """The id that ends every completion and stops sampling: the chat template's end-of-turn token where the
    template ends an assistant turn with a special token other than EOS (e.g. `<end_of_turn>` where EOS is
    `<eos>`), so that a trained reply ends as the template's turns do; otherwise the tokenizer's EOS.
    Worked out once per chat template (kept on the tokenizer)."""
    if tokenizer.eos_token_id is None:
        raise TetherError("the tokenizer has no EOS token; tether needs one to end completions")
    template = getattr(tokenizer, "chat_template", None)
    known = getattr(tokenizer, "_tether_end_of_turn", None)
    if known is None or known[0] != template:
        known = (template, end_of_turn_id(tokenizer) if template else None)
        tokenizer._tether_end_of_turn = known
    return known[1] if known[1] is not None else int(tokenizer.eos_token_id)


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant turn's text, when it is not EOS;
    None when it is EOS, is not a special token, or the template cannot render a two-turn chat."""
    mark = "TETHERMARK"
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": mark}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception:  # a template with rules of its own (roles, a system turn): keep EOS
        return None
    if mark not in text:
        return None
    after = tokenizer(text[text.index(mark) + len(mark):], add_special_tokens=False)["input_ids"]
    if not after or after[0] == tokenizer.eos_token_id or after[0] not in tokenizer.all_special_ids:
        return None
    return int(after[0])


def pad_id(tokenizer) -> int:
    """The pad id, falling back to EOS (padding is masked out, so its value never matters)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos_id(tokenizer)


def render_plain(messages: list[dict[str, str]]) -> str:
    """A template-free rendering of messages: "Role: content" paragraphs, then "Assistant:"."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


def set_template(tokenizer, template) -> None:
    """Give `tokenizer` the run's data.template (tether.config.TemplateConfig): its file's text in place of
    the chat template, then one `{%- set name = value -%}` line per kwargs entry at the top, so that the
    tokenizer saved with the trained model renders as training did. Values are written as JSON literals,
    which Jinja reads as the same booleans, numbers and strings. No change without either setting."""
    text = Path(template.file).read_text(encoding="utf-8") if template.file else tokenizer.chat_template
    if template.kwargs:
        if not text:
            raise TetherError("data.template.kwargs: the tokenizer has no chat template to give them to "
                              "(set data.template.file)")
        text = "".join(f"{{%- set {k} = {json.dumps(v)} -%}}\n" for k, v in template.kwargs.items()) + text
    if text != tokenizer.chat_template:
        tokenizer.chat_template = text


def encode_prompt(tokenizer, prompt: Prompt, chat_template: str = "auto") -> list[int]:
    """Prompt ids, with the tokenizer's special tokens (e.g. BOS) and the chat template where it applies."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    use = chat_template == "always" or (chat_template == "auto" and isinstance(prompt, list) and has_template)
    if use:
        if not has_template:
            raise TetherError("chat_template is 'always' but the tokenizer has no chat template")
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # the template has its specials
    text = render_plain(prompt) if isinstance(prompt, list) else prompt
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if ids and ids[-1] == tokenizer.eos_token_id:  # a post-processor that appends EOS to every text
        ids = ids[:-1]
    return ids


def encode_nonempty_prompt(tokenizer, ex, chat_template: str) -> list[int]:
    """`encode_prompt`, with BOS standing in for a prompt that has no tokens (the first response token needs
    a position to be predicted from); DataError when the tokenizer has no BOS either."""
    ids = encode_prompt(tokenizer, ex.prompt, chat_template)
    if ids:
        return ids
    if tokenizer.bos_token_id is None:
        raise DataError(ex.path, ex.line, "the prompt has no tokens and the tokenizer no BOS to stand in")
    return [int(tokenizer.bos_token_id)]


def encode_completion(tokenizer, text: str) -> list[int]:
    """Completion ids without special tokens, then EOS."""
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], eos_id(tokenizer)]


@dataclass
class SFTTokens:
    prompt_ids: list[int]
    completion_ids: list[int]  # EOS included (unless the completion was cut at max_length)


@dataclass
class PromptTokens:
    prompt_ids: list[int]
    example: PromptExample


@dataclass
class Skips:
    """Counts of records dropped (opt-in) or cut while tokenising, for the log and metrics."""

    skipped: int = 0
    truncated: int = 0
    first: list[str] = field(default_factory=list)  # "path:line" of the first few skipped records

    def add_skip(self, path, line):
        self.skipped += 1
        if len(self.first) < 3:
            self.first.append(f"{path}:{line}")

    def report(self, what: str) -> None:
        if self.skipped:
            log.warning("skipped %d %s (too long), first at %s", self.skipped, what, ", ".join(self.first))
        if self.truncated:
            log.warning("cut %d %s to fit the maximum length", self.truncated, what)


def check_prompt_length(ex, n: int, limit: int, too_long: str, skips: Skips, what: str) -> bool:
    """True to keep the record; raises in 'error' mode, counts in 'skip' mode."""
    if n < limit:
        return True
    if too_long == "skip":
        skips.add_skip(ex.path, ex.line)
        return False
    problem = f"prompt is {n} tokens, leaving no room for {what} in max_length {limit}"
    raise DataError(ex.path, ex.line, problem + " (drop the record or opt in to skipping: too_long=skip)")


def tokenize_sft(
    examples: Sequence[SFTExample], tokenizer, max_length: int, too_long: str = "error",
    chat_template: str = "auto",
) -> tuple[list[SFTTokens], Skips]:
    """Prompt and completion ids per example; completions are cut so that the total fits max_length."""
    out, skips = [], Skips()
    for ex in examples:
        p = encode_nonempty_prompt(tokenizer, ex, chat_template)
        c = encode_completion(tokenizer, ex.completion)
        if not check_prompt_length(ex, len(p), max_length, too_long, skips, "a completion"):
            continue
        if len(p) + len(c) > max_length:
            c = c[: max_length - len(p)]
            skips.truncated += 1
        out.append(SFTTokens(p, c))
    skips.report("SFT records")
    return out, skips


def tokenize_prompts(
    examples: Sequence[PromptExample], tokenizer, max_prompt_length: int, too_long: str = "error",
    chat_template: str = "auto",
) -> tuple[list[PromptTokens], Skips]:
    """Prompt ids; a prompt longer than max_prompt_length is an error, a counted skip, or
    (too_long="truncate") cut from the left, keeping the end that the response follows."""
    out, skips = [], Skips()
    for ex in examples:
        p = encode_nonempty_prompt(tokenizer, ex, chat_template)
        if len(p) > max_prompt_length:
            if too_long == "truncate":
                p = p[-max_prompt_length:]
                skips.truncated += 1
            elif too_long == "skip":
                skips.add_skip(ex.path, ex.line)
                continue
            else:
                raise DataError(ex.path, ex.line, f"prompt is {len(p)} tokens, longer than max_prompt_length "
                                f"{max_prompt_length} (opt in with too_long=skip or too_long=truncate)")
        out.append(PromptTokens(p, ex))
    skips.report("prompts")
    return out, skips


# ------------------------------------------------------------------------------------------------ batches


def pad(seqs: Sequence[Sequence[int]], pad_value: int, side: str = "right") -> tuple[torch.Tensor, ...]:
    """Pad id lists to one length: (ids, mask), both (B, T) long; mask is 1 on real tokens."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_value, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        sl = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def collate_completions(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_value: int,
    side: str = "right",
) -> dict[str, torch.Tensor]:
    """Rows prompt + completion: input_ids, attention_mask and loss_mask (1 on completion tokens), (B, T)."""
    ids, attn = pad([[*p, *c] for p, c in zip(prompts, completions, strict=True)], pad_value, side)
    flags, _ = pad([[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions, strict=True)], 0, side)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": flags}


def collate_sft(items: Sequence[SFTTokens], pad_value: int, side: str = "right") -> dict[str, torch.Tensor]:
    """An SFT batch: input_ids, attention_mask, loss_mask, each (B, T)."""
    prompts, completions = [x.prompt_ids for x in items], [x.completion_ids for x in items]
    return collate_completions(prompts, completions, pad_value, side)


def collate_prompts(items: Sequence[PromptTokens], pad_value: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts for sampling: input_ids and attention_mask, (B, P)."""
    ids, mask = pad([x.prompt_ids for x in items], pad_value, side="left")
    return {"input_ids": ids, "attention_mask": mask}


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, (B, T) → (B, T): a left-padded row starts at 0 at its first
    real token, exactly as it would unpadded (padding positions get 0; they are masked anyway)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp(min=0)
