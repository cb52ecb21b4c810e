"""The one evaluator of a policy against its base on held-out prompts: samples, KL-from-base, win-rate and
mean rewards, for every caller (the RL trainers' evaluation, `tether eval`, `tether run`).

"base" is the model the policy started from and is held to by the KL (π_SFT in the InstructGPT pipeline).
Each held-out prompt gets one policy sample and one base sample (temperature 1 by default, top-p 1: the
models' own distributions; both at the same temperature T when another is asked, the KL then that of the
temperature-T distributions), so the win-rate compares like with like and the KL is that of the trained
policy.
`choose_judge` decides who judges the win-rate and which gold reward is reported, from a `gold` setting
(auto | lab | none | module:function, tether.rewards.gold_source); `evaluate_judged` is both together, as the
trainers call it; tether/instruments/policy.py adds the other instruments on the same samples.

The proxy and gold scores are functions (prompts, responses, [columns]): they receive those of the prompt
file's other columns that they name, or all with **columns (the samples carry them), as the RL stages'
reward functions do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tether.data import PromptTokens, collate_prompts, eos_id, pad_id
from tether.errors import TetherError
from tether.functions import columns_taken
from tether.instruments.judges import Judge, ScoreFn, ScoreJudge
from tether.instruments.kl import kl_entry, response_kls
from tether.instruments.length_controlled import length_controlled_win_rate
from tether.instruments.sample_cache import load_rollouts, samples_key, store_rollouts
from tether.instruments.stats import mean_stderr
from tether.instruments.win_rate import win_rate_of
from tether.rewards import columns_of
from tether.rollout import Rollout, decode_responses, sample


@dataclass
class Samples:
    """Responses of one model to a list of prompts, as rollouts (tokens) and decoded text."""

    prompts: list  # the prompts as given in the data (text or messages)
    rollouts: list[Rollout]
    responses: list[str]
    columns: dict[str, list] = field(default_factory=dict)  # the prompts' other columns (rewards.columns_of)
    proxy: list[float] | None = None  # the proxy reward of each response (`evaluate_against_base`)
    gold: list[float] | None = None  # the gold reward of each response
    kl: list[float] | None = None  # each policy response's sequence KL(π‖π_base), closed form (nats)


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
    rollouts = []
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
    return samples_of(tokenizer, items, rollouts)


def samples_of(tokenizer, items: Sequence[PromptTokens], rollouts: list[Rollout]) -> Samples:
    """The Samples of `rollouts` (in the order of `items`): prompts, decoded responses and columns."""
    examples = [x.example for x in items]
    responses = [text for r in rollouts for text in decode_responses(tokenizer, r)]
    return Samples([ex.prompt for ex in examples], rollouts, responses, columns_of(examples))


def _scores(score: ScoreFn | None, samples: Samples) -> list[float] | None:
    """Each response's score, with the columns of its prompt that the score function takes (as a reward
    function gets them: all with **columns, those it names, none for (prompts, responses)); None without
    a score."""
    if score is None:
        return None
    columns = columns_taken(score, samples.columns)
    return [float(v) for v in score(samples.prompts, samples.responses, **columns)]


def _mean(scores: list[float] | None) -> float | None:
    return None if scores is None else mean_stderr(scores)[0]


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
    temperature: float = 1.0,
    base_key: str | None = None,
) -> dict:
    """{"instruments": {"kl_from_base", "win_rate_vs_base", "win_rate_length_controlled"}, "rewards":
    {"policy"/"base": {"proxy", "gold"}}, "samples": {"policy", "base"}}: KL from policy samples (closed-form
    token KL summed per response), the judge's win-rate of policy over base samples, raw and at equal length
    in characters (tether/instruments/length_controlled.py), and mean proxy (e.g. reward model) and gold
    rewards (None without that score). Policy samples are seeded with `seed`, base samples with seed + 1;
    the samples carry each response's proxy and gold scores, the policy's also its KL from the base. Both
    models are sampled at `temperature` (> 0). With `base_key` (what the base was made from, e.g. its
    directory's model_files.dir_sha256), the base samples come from tether/instruments/sample_cache.py's
    cache when it holds them, and go there when not."""
    if not temperature > 0:
        raise ValueError(f"the evaluation samples at a temperature > 0 (the KL needs samples), got "
                         f"{temperature}")
    opts = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "temperature": temperature}
    pol = sample_responses(policy, tokenizer, items, seed=seed, **opts)
    ref_opts = {**opts, "seed": seed + 1}
    cached, key = None, None
    if base_key is not None:
        param = next(base.parameters())
        key = samples_key(f"{base_key}|{param.dtype}|{param.device}", items, ref_opts)
        cached = load_rollouts(key)
    if cached is not None:
        ref = samples_of(tokenizer, items, cached)
    else:
        ref = sample_responses(base, tokenizer, items, **ref_opts)
        if key is not None:
            store_rollouts(key, ref.rollouts)
    closed, k1 = response_kls(policy, base, pol.rollouts)
    pol.kl = closed
    for s in (pol, ref):
        s.proxy, s.gold = _scores(proxy, s), _scores(gold, s)
    if isinstance(judge, ScoreJudge) and proxy is not None and judge.score is proxy:
        prefs = judge.compare(pol.proxy, ref.proxy)  # the proxy judges: its scores are computed once
    elif isinstance(judge, ScoreJudge) and gold is not None and judge.score is gold:
        prefs = judge.compare(pol.gold, ref.gold)  # a gold function judges (with the prompts' columns)
    else:
        prefs = judge.prefer(pol.prompts, pol.responses, ref.responses)
    lc = length_controlled_win_rate(prefs, [len(r) for r in pol.responses], [len(r) for r in ref.responses])
    instruments = {
        "kl_from_base": kl_entry(closed, k1),
        "win_rate_vs_base": win_rate_of(prefs, judge.name),
        "win_rate_length_controlled": {**lc, "judge": judge.name},
    }
    rewards = {
        "policy": {"proxy": _mean(pol.proxy), "gold": _mean(pol.gold)},
        "base": {"proxy": _mean(ref.proxy), "gold": _mean(ref.gold)},
    }
    return {"instruments": instruments, "rewards": rewards, "samples": {"policy": pol, "base": ref}}


def choose_judge(
    gold: str,
    items: Sequence[PromptTokens],
    proxy: ScoreFn | None,
    *,
    proxy_name: str = "proxy",
    judge: Judge | None = None,
    hint: str = "",
) -> tuple[Judge, ScoreFn | None]:
    """(the win-rate's judge, the gold score or None): the gold reward that
    tether.rewards.gold_source(gold, prompts) names judges and is reported (the lab's, judge "gold"; a
    'module:function', judge named by it, 1 / ½ / 0 as its scores compare); a given `judge` (e.g. an LLM
    judge) judges whatever `gold` says; else the proxy judges (1 / ½ / 0), named `proxy_name`. TetherError
    when nothing can judge (`hint` says what to give)."""
    from tether.instruments.judges import GoldJudge
    from tether.rewards import gold_scorer, gold_source

    source = gold_source(gold, [x.example for x in items])
    gold_fn = gold_scorer(source)
    if judge is not None:
        return judge, gold_fn
    if source == "gold":
        return GoldJudge(), gold_fn
    if source is not None:
        return ScoreJudge(gold_fn, source, soft=False), gold_fn
    if proxy is None:
        why = "gold is 'none'" if gold == "none" else "the prompts are not all lab prompts"
        raise TetherError(f"{why}: the win-rate needs a proxy reward or a judge to judge it{hint}")
    return ScoreJudge(proxy, proxy_name, soft=False), gold_fn


def evaluate_judged(
    policy,
    base,
    tokenizer,
    items: Sequence[PromptTokens],
    *,
    proxy: ScoreFn | None,
    max_new_tokens: int,
    seed: int,
    gold: str = "auto",
    keep_samples: bool = False,
    temperature: float = 1.0,
    base_key: str | None = None,
) -> dict:
    """`evaluate_against_base` as the RL trainers call it: judged as `choose_judge` decides from `gold`
    (auto | lab | none | module:function: a gold reward judges and is reported, else the proxy judges);
    samples are seeded with seed + EVAL_SEED_OFFSET in batches of EVAL_BATCH_SIZE, the base's cached under
    `base_key` when given. Returns the result without the samples unless `keep_samples`."""
    judge, gold_fn = choose_judge(gold, items, proxy)
    result = evaluate_against_base(
        policy,
        base,
        tokenizer,
        items,
        judge=judge,
        proxy=proxy,
        gold=gold_fn,
        max_new_tokens=max_new_tokens,
        seed=seed + EVAL_SEED_OFFSET,
        batch_size=EVAL_BATCH_SIZE,
        temperature=temperature,
        base_key=base_key,
    )
    if not keep_samples:
        result.pop("samples")
    return result
