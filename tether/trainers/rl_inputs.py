"""What an RL run reads besides its config: the policy and its tokenizer, the prompt files (each checked whole
before any model loads), the tokenised prompts; and RUN/samples.jsonl, the policy's evaluation samples."""

from __future__ import annotations

import json
from pathlib import Path

from tether.data import load_prompts, set_template, tokenize_prompts
from tether.errors import TetherError
from tether.files import write_text_atomic
from tether.model_files import load_causal_lm, load_tokenizer
from tether.rewards import require_lab_prompts


def load_policy(cfg):
    """The model at cfg.policy (eval mode: no dropout, so π/π_old = 1 before an update) and its tokenizer."""
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.policy, cfg.trust_remote_code)
    set_template(tokenizer, cfg.data.template)
    return load_causal_lm(cfg.policy, cfg.dtype, cfg.trust_remote_code).eval(), tokenizer


def read_prompts(path: str, gold_scored: bool, columns: dict | None = None) -> list:
    """Every prompt of a file, checked (tether.data.load_prompts); when the gold reward scores them, each
    one must be a lab prompt (DataError at the first that is not), since the gold reward scores those only."""
    examples = load_prompts(path, columns)
    if gold_scored:
        why = "the gold reward scores lab prompts only (reward.source or a reward term is 'gold')"
        require_lab_prompts(examples, why)
    return examples


def load_prompt_items(path: str, examples: list, tokenizer, cfg):
    """The tokenised prompts `examples` of the file `path` (`read_prompts`)."""
    d = cfg.data
    items, _ = tokenize_prompts(examples, tokenizer, d.max_prompt_length, d.too_long, d.chat_template)
    if not items:
        raise TetherError(f"{path}: no prompts left after skipping")
    return items



def keep_samples_up_to(path: Path, iteration: int) -> None:
    """Keep the records of RUN/samples.jsonl from evaluations at or before `iteration` (a resumed run's)."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    write_text_atomic(path, "".join(ln + "\n" for ln in lines if json.loads(ln)["iteration"] <= iteration))


def append_samples(path: Path, iteration: int, step: int, samples) -> tuple[list[str], list[list]]:
    """Append one record per held-out prompt to `path` (RUN/samples.jsonl) — {"iteration", "step", "prompt",
    "completion" (the policy's), "reward" (the proxy: the training reward), "gold" (None off the lab), "kl"
    (the response's sequence KL from the base, nats)} from `samples` (tether.instruments.evaluate.Samples of
    the policy); returns (columns, rows) of the same records as a table for the trackers."""
    n = len(samples.responses)
    gold = samples.gold or [None] * n
    records = [
        {"iteration": iteration, "step": step, "prompt": p, "completion": c, "reward": r, "gold": g, "kl": k}
        for p, c, r, g, k in zip(samples.prompts, samples.responses, samples.proxy, gold, samples.kl,
                                 strict=True)
    ]
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    columns = ["iteration", "prompt", "completion", "reward", "gold", "kl"]
    rows = [[r["iteration"], r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"]),
             r["completion"], r["reward"], r["gold"], r["kl"]] for r in records]
    return columns, rows
