"""Best-of-n against a reward model: the reference curve of a β sweep.

Sample n responses from the base (SFT) model per prompt and keep the one the reward model scores highest.
Its KL from the base has a closed form, KL_bon(n) = log n − (n − 1)/n nats (Stiennon et al. 2020, as used
by Gao et al. 2022, "Scaling laws for reward model overoptimization"; exact when the RM never ties, an
upper bound otherwise — Beirami et al. 2024), so the curve of proxy and gold reward against √KL_bon shows
how far optimising the RM alone goes before the gold reward turns down.

Each prompt is sampled N = max(ns) times once; the value for every n ≤ N is the exact expectation over all
n-subsets of those N samples (the sample ranked i-th lowest by the RM is a subset's best with probability
C(i−1, n−1)/C(N, n)), which has far less variance than drawing one subset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tether.instruments.evaluate import sample_responses
from tether.instruments.judges import ScoreFn
from tether.instruments.stats import mean_stderr

DEFAULT_NS = (1, 2, 4, 8, 16, 32, 64)


def best_of_n_kl(n: int) -> float:
    """KL(π_bon‖π_base) in nats for best-of-n sampling: log n − (n − 1)/n (0 for n = 1)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_expectation(proxy: Sequence[float], other: Sequence[float], n: int) -> tuple[float, float]:
    """(E[proxy], E[other]) of the proxy-best sample of a uniformly random n-subset of the N samples."""
    size = len(proxy)
    if not 1 <= n <= size:
        raise ValueError(f"n must be in [1, {size}], got {n}")
    order = sorted(range(size), key=lambda i: proxy[i])  # ascending proxy score
    total = math.comb(size, n)
    p = o = 0.0
    for rank, i in enumerate(order):  # rank 0-based: the best of a subset with prob C(rank, n−1)/C(N, n)
        w = math.comb(rank, n - 1) / total
        p += w * proxy[i]
        o += w * other[i]
    return p, o


def best_of_n_curve(
    model,
    tokenizer,
    items: Sequence,
    proxy: ScoreFn,
    gold: ScoreFn | None,
    *,
    ns: Sequence[int] = DEFAULT_NS,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 256,
) -> list[dict]:
    """[{"n", "kl", "sqrt_kl", "proxy_reward", "gold_reward", "gold_stderr", "prompts", "samples_per_prompt"}]
    for each n: mean over the prompts (tokenised `PromptTokens`) of best-of-n from `model` scored by
    `proxy`; gold_stderr is the standard error of the gold mean over the prompts (each prompt's value the
    exact expectation over its samples, so it counts the spread between prompts, not the draw of the N)."""
    big = max(ns)
    repeated = [x for x in items for _ in range(big)]
    samples = sample_responses(
        model, tokenizer, repeated, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size
    )
    proxy_scores, gold_scores = [], []
    for start in range(0, len(repeated), batch_size):
        prompts = samples.prompts[start : start + batch_size]
        responses = samples.responses[start : start + batch_size]
        proxy_scores += [float(v) for v in proxy(prompts, responses)]
        gold_scores += [float(v) for v in gold(prompts, responses)] if gold else [0.0] * len(prompts)
    out = []
    for n in ns:
        per_prompt = [
            best_of_n_expectation(proxy_scores[k : k + big], gold_scores[k : k + big], n)
            for k in range(0, len(repeated), big)
        ]
        kl = best_of_n_kl(n)
        gold_mean, gold_stderr = mean_stderr([g for _, g in per_prompt]) if gold else (None, None)
        out.append(
            {
                "n": n,
                "kl": kl,
                "sqrt_kl": math.sqrt(kl),
                "proxy_reward": sum(p for p, _ in per_prompt) / len(per_prompt),
                "gold_reward": gold_mean,
                "gold_stderr": gold_stderr,
                "prompts": len(per_prompt),
                "samples_per_prompt": big,
            }
        )
    return out


def best_of_n_dirs(
    model_dir,
    rm_dir,
    prompts_path,
    *,
    gold: str | None,
    ns: Sequence[int] = DEFAULT_NS,
    max_prompts: int,
    max_new_tokens: int,
    seed: int,
    max_prompt_length: int = 256,
) -> list[dict]:
    """`best_of_n_curve` of the model in `model_dir` against the reward model in `rm_dir` on the first
    `max_prompts` prompts of `prompts_path` (too long ones skipped), the gold reward a reward spec
    (tether.rewards.load_reward: "gold", "module:function") or None."""
    from tether.data import load_prompts, tokenize_prompts
    from tether.model_files import load_causal_lm, load_tokenizer
    from tether.rewards import load_reward

    model = load_causal_lm(model_dir).eval().requires_grad_(False)
    tokenizer = load_tokenizer(model_dir)
    examples = load_prompts(prompts_path)[:max_prompts]
    items, _ = tokenize_prompts(examples, tokenizer, max_prompt_length, too_long="skip")
    rm = load_reward(str(rm_dir))
    gold_fn = load_reward(gold) if gold else None
    return best_of_n_curve(
        model,
        tokenizer,
        items,
        lambda p, r: rm(p, r).tolist(),
        (lambda p, r: gold_fn(p, r).tolist()) if gold_fn else None,
        ns=ns,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
