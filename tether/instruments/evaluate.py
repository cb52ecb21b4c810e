"""Evaluate a policy against its base on held-out prompts: samples, KL-from-base, win-rate, mean rewards.

"base" is the model the policy started from and is held to by the KL (π_SFT in the InstructGPT pipeline).
Each held-out prompt gets one policy sample and one base sample (temperature 1, top-p 1: the models'
own distributions), so the win-rate compares like with like and the KL is that of the trained policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tether.data import PromptTokens, collate_prompts, eos_id, pad_id
from tether.instruments.judges import Judge, ScoreFn
from tether.instruments.kl import kl_from_base
from tether.instruments.stats import mean_stderr
from tether.instruments.win_rate import win_rate
from tether.rollout import Rollout, decode_responses, sample


@dataclass
class Samples:
    """Responses of one model to a list of prompts, as rollouts (tokens) and decoded text."""

    prompts: list  # the prompts as given in the data (text or messages)
    rollouts: list[Rollout]
    responses: list[str]


@torch.no_grad()
def sample_responses(
    model,
    tokenizer,
    items: Sequence[PromptTokens],
    *,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> Samples:
    """One sample per prompt, in batches, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    rollouts, responses = [], []
    for start in range(0, len(items), batch_size):
        batch = collate_prompts(items[start : start + batch_size], pad_id(tokenizer))
        r = sample(
            model,
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            max_new_tokens=max_new_tokens,
            eos_token_id=eos_id(tokenizer),
            pad_token_id=pad_id(tokenizer),
            temperature=temperature,
            top_p=top_p,
            generator=generator,
        )
        rollouts.append(r)
        responses += decode_responses(tokenizer, r)
    return Samples([x.example.prompt for x in items], rollouts, responses)


def _mean(score: ScoreFn | None, samples: Samples) -> float | None:
    if score is None:
        return None
    values = [float(v) for v in score(samples.prompts, samples.responses)]
    return mean_stderr(values)[0]


# Evaluation samples use their own seeds, apart from the training ones, and a fixed sampling batch, so that
# every trainer (whatever its rollout batch) draws the same base samples for the same seed: base figures are
# then comparable between PPO, GRPO, RLOO and DPO runs.
EVAL_SEED_OFFSET = 7919
EVAL_BATCH_SIZE = 64


def evaluate_against_base(
    policy,
    base,
    tokenizer,
    items: Sequence[PromptTokens],
    *,
    judge: Judge,
    proxy: ScoreFn | None = None,
    gold: ScoreFn | None = None,
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """{"instruments": {"kl_from_base", "win_rate_vs_base"}, "rewards": {"policy"/"base": {"proxy", "gold"}},
    "samples": {"policy", "base"}}: KL from policy samples (closed-form token KL summed per response), the
    judge's win-rate of policy over base samples, and mean proxy (e.g. reward model) and gold rewards."""
    pol = sample_responses(
        policy, tokenizer, items, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size
    )
    ref = sample_responses(
        base, tokenizer, items, max_new_tokens=max_new_tokens, seed=seed + 1, batch_size=batch_size
    )
    instruments = {
        "kl_from_base": kl_from_base(policy, base, pol.rollouts),
        "win_rate_vs_base": win_rate(judge, pol.prompts, pol.responses, ref.responses),
    }
    rewards = {
        "policy": {"proxy": _mean(proxy, pol), "gold": _mean(gold, pol)},
        "base": {"proxy": _mean(proxy, ref), "gold": _mean(gold, ref)},
    }
    return {"instruments": instruments, "rewards": rewards, "samples": {"policy": pol, "base": ref}}


def evaluate_judged(
    policy,
    base,
    tokenizer,
    items: Sequence[PromptTokens],
    *,
    proxy: ScoreFn | None,
    max_new_tokens: int,
    seed: int,
) -> dict:
    """`evaluate_against_base` as every trainer and `tether run` call it: the lab's gold reward judges when
    every prompt is a lab prompt (and is reported as `gold`), else the proxy reward judges; samples are
    seeded with seed + EVAL_SEED_OFFSET in batches of EVAL_BATCH_SIZE. Returns the result without the
    samples."""
    from tether.instruments.judges import GoldJudge, ScoreJudge
    from tether.rewards import gold, is_lab_prompt

    lab = all(is_lab_prompt(x.example.prompt) for x in items)
    if not lab and proxy is None:
        raise ValueError("prompts outside the lab need a proxy reward to judge the win-rate")
    result = evaluate_against_base(
        policy,
        base,
        tokenizer,
        items,
        judge=GoldJudge() if lab else ScoreJudge(proxy, "proxy"),
        proxy=proxy,
        gold=(lambda p, r: gold(p, r).tolist()) if lab else None,
        max_new_tokens=max_new_tokens,
        seed=seed + EVAL_SEED_OFFSET,
        batch_size=EVAL_BATCH_SIZE,
    )
    result.pop("samples")
    return result

