"""What an adversarial response is measured against: the best the data scores, and the gold a policy earns.

- data bar: the highest reward-model score of any response in a data file (demonstrations, or the chosen
  side of preference pairs), each scored with its own prompt. A searched response above it is scored beyond
  anything the data supports.
- gold bar (lab): the mean gold reward of a policy's samples (e.g. the SFT model's) on lab prompts, or,
  without a policy, the data responses' own mean gold reward. A response below it is worse than what
  training starts from.
"""

from __future__ import annotations

from pathlib import Path

from tether.data import load_sft
from tether.errors import DataError
from tether.preferences import load_preferences
from tether.reward_model import score_texts


def data_responses(path: str | Path, limit: int | None = None) -> tuple[list, list[str]]:
    """(prompts, responses) of an SFT file (completions) or a preference file (the chosen responses)."""
    try:
        records = [(r.prompt, r.completion) for r in load_sft(path)]
    except DataError:
        records = [(r.prompt, r.chosen) for r in load_preferences(path)]
    records = records[:limit]
    return [p for p, _ in records], [r for _, r in records]


def data_bar(model, tokenizer, path: str | Path, limit: int | None = None) -> dict:
    """{"value": the best RM score in the file, "response", "prompt", "mean", "n", "max_words", "source"}."""
    prompts, responses = data_responses(path, limit)
    scores = score_texts(model, tokenizer, prompts, responses, batch_size=256)
    best = max(range(len(scores)), key=scores.__getitem__)
    return {
        "value": scores[best],
        "prompt": prompts[best],
        "response": responses[best],
        "mean": sum(scores) / len(scores),
        "n": len(scores),
        "max_words": max(len(r.split()) for r in responses),
        "source": str(path),
    }


def data_mean_gold(path: str | Path, limit: int | None = None) -> dict:
    """{"value": the data responses' mean gold reward, "n", "source"}; lab data only."""
    from tether.rewards import gold

    prompts, responses = data_responses(path, limit)
    values = gold(prompts, responses)
    return {"value": float(values.mean()), "n": len(prompts), "source": f"data {path}"}


def policy_mean_gold(
    policy_dir: str | Path, prompts_path: str | Path, *, max_prompts: int = 200, max_new_tokens: int = 24,
    seed: int = 0,
) -> dict:
    """{"value": the mean gold reward of one sample per prompt from the policy in `policy_dir`
    (temperature 1), "n", "source"}; lab prompts only."""
    from tether.data import load_prompts, tokenize_prompts
    from tether.instruments.evaluate import sample_responses
    from tether.model_files import load_causal_lm, load_tokenizer
    from tether.rewards import gold

    policy = load_causal_lm(policy_dir).eval()
    tokenizer = load_tokenizer(policy_dir)
    items, _ = tokenize_prompts(load_prompts(prompts_path)[:max_prompts], tokenizer, 256, too_long="skip")
    samples = sample_responses(policy, tokenizer, items, max_new_tokens=max_new_tokens, seed=seed)
    values = gold(samples.prompts, samples.responses)
    return {"value": float(values.mean()), "n": len(items), "source": f"samples of {policy_dir}"}
