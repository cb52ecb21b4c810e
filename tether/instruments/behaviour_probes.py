"""The shipped probe sets (tether/instruments/probes) asked of a policy and of its base, and the behaviour
instruments they give on a real chat model: refusal of harmful requests, over-refusal of benign ones,
sycophancy in both directions and capability, each with n, its 95% interval, the base's figure and an
interval on the difference (tether.instruments.stats.compare_rates).

    probes = select_probes(max_items=None, seed=0)      # a fixed-seed subsample of each set
    measured = evaluate_probes(policy, base, tokenizer, probes, ProbeOptions())
    measured.instruments["sycophancy_rate"], measured.rows, measured.generated_tokens

Each prompt is sent as one user message, so the tokenizer's chat template applies where it has one
(tether.data.encode_prompt). Answers come from the project's one sampler (tether.rollout via
`sample_responses`), greedy by default (temperature 0), so a model's answers do not depend on the seed;
with a temperature > 0 the policy is sampled with `seed` and the base with seed + 1. How each set is read:

    harmful, over_refusal   looks_like_refusal (tether/instruments/refusal.py)
    sycophancy              each item asked plainly, with the wrong belief and with the right one;
                            replies read by read_claim, rates by flip_rates (instruments/sycophancy.py)
    capability              score_capability: exact match or a regex (tether/instruments/probes)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tether.data import PromptExample, PromptTokens, encode_nonempty_prompt
from tether.instruments.evaluate import sample_responses
from tether.instruments.probes import NAMES, VERSION, load_probes, score_capability
from tether.instruments.refusal import looks_like_refusal
from tether.instruments.stats import compare_rates, proportion
from tether.instruments.sycophancy import flip_rates, read_claim

# Items drawn from each set by default: about 650 prompts per model (sycophancy asks each item 3 times),
# sized so that a 135M model answers policy and base on 2 CPU cores in minutes (see ProbeOptions).
DEFAULT_ITEMS = {"sycophancy": 100, "over_refusal": 100, "harmful": 100, "capability": 150}
# the prompts each item is asked as: (field of the record, what the user stated in it)
ASKED = {
    "sycophancy": (("question", None), ("prompt", "belief"), ("right_belief_prompt", "answer")),
    "over_refusal": (("prompt", None),),
    "harmful": (("prompt", None),),
    "capability": (("prompt", None),),
}


@dataclass
class ProbeOptions:
    """How the probe sets are asked."""

    max_new_tokens: int = 48
    """Reply tokens per probe prompt: refusals and short answers show in the opening."""
    temperature: float = 0.0
    """0: greedy. Above 0 the answers are sampled (policy with seed, base with seed + 1)."""
    seed: int = 0
    batch_size: int = 64
    chat_template: str = "auto"


@dataclass
class ProbeResult:
    """The behaviour instruments, one row per asked prompt (for probes.jsonl) and the tokens generated."""

    instruments: dict
    rows: list[dict]
    generated_tokens: dict = field(default_factory=dict)  # {"policy": n, "base": n}
    items: dict = field(default_factory=dict)  # {set: items asked}


def select_probes(max_items: int | None = None, seed: int = 0) -> dict[str, list[dict]]:
    """{set: records}: at most `max_items` of each set (default DEFAULT_ITEMS), a subsample drawn with
    random.Random(f"{seed}:{set}") and kept in file order; a whole set when it has no more."""
    out = {}
    for name in NAMES:
        records = load_probes(name)
        k = min(len(records), DEFAULT_ITEMS[name] if max_items is None else max_items)
        picked = sorted(random.Random(f"{seed}:{name}").sample(range(len(records)), k))
        out[name] = [records[i] for i in picked]
    return out


def _ask(model, tokenizer, name: str, records: list[dict], key: str, opts: ProbeOptions, seed: int):
    """The model's replies to records[i][key], each as one user message; and the reply tokens generated."""
    items = []
    for line, r in enumerate(records, 1):
        ex = PromptExample([{"role": "user", "content": r[key]}], r, f"probes/{name}.jsonl", line)
        items.append(PromptTokens(encode_nonempty_prompt(tokenizer, ex, opts.chat_template), ex))
    s = sample_responses(model, tokenizer, items, max_new_tokens=opts.max_new_tokens, seed=seed,
                         batch_size=opts.batch_size, temperature=opts.temperature)
    return s.responses, sum(int(r.response_mask.sum()) for r in s.rollouts)


def probe_answers(model, tokenizer, probes: dict[str, list[dict]], opts: ProbeOptions, seed: int):
    """({(set, field): replies}, reply tokens generated) of one model; each (set, field) its own seed."""
    answers, tokens = {}, 0
    for i, (name, key) in enumerate((n, k) for n in probes for k, _ in ASKED[n]):
        if probes[name]:
            answers[(name, key)], t = _ask(model, tokenizer, name, probes[name], key, opts, seed + 1000 * i)
            tokens += t
    return answers, tokens


def _readings(probes: dict[str, list[dict]], answers: dict) -> dict:
    """Per set and field, each reply's reading: refused (bool), the claim (answer/belief/None) or right."""
    out = {}
    for name, records in probes.items():
        for key, stated in ASKED[name]:
            replies = answers.get((name, key), [])
            if name in ("harmful", "over_refusal"):
                out[(name, key)] = [looks_like_refusal(a) for a in replies]
            elif name == "capability":
                out[(name, key)] = [score_capability(r, a) for r, a in zip(records, replies, strict=True)]
            else:
                out[(name, key)] = [read_claim(a, r["answer"], r["belief"], stated)
                                    for r, a in zip(records, replies, strict=True)]
    return out


def _rates(probes: dict[str, list[dict]], read: dict) -> dict:
    """The behaviour rates of one model from its readings (not measured for a set with no items)."""
    none = {"value": None, "n": 0}
    out = {}
    for inst, name in (("refusal_rate_harmful", "harmful"), ("refusal_rate_benign", "over_refusal"),
                       ("capability_accuracy", "capability")):
        out[inst] = proportion(read[(name, "prompt")]) if probes.get(name) else none
    if probes.get("sycophancy"):
        out.update(flip_rates(*(read[("sycophancy", k)] for k, _ in ASKED["sycophancy"])))
    else:
        out["sycophancy_rate"] = out["sycophancy_to_right_belief"] = none
    return out


# instrument → (probe set, higher is better: True / False / None for a figure without a good direction)
DIRECTION = {
    "refusal_rate_harmful": ("harmful", True),
    "refusal_rate_benign": ("over_refusal", False),
    "sycophancy_rate": ("sycophancy", False),
    "sycophancy_to_right_belief": ("sycophancy", None),
    "capability_accuracy": ("capability", True),
}


def probe_instruments(probes: dict[str, list[dict]], policy_answers: dict, base_answers: dict,
                      opts: ProbeOptions) -> tuple[dict, list[dict]]:
    """(instruments, rows): each behaviour rate of the policy compared with the base's (compare_rates, in
    the direction of DIRECTION), and one row per asked prompt with both replies and their readings."""
    pol_read, base_read = _readings(probes, policy_answers), _readings(probes, base_answers)
    pol, base = _rates(probes, pol_read), _rates(probes, base_read)
    decoding = "greedy" if opts.temperature == 0 else f"sampled at temperature {opts.temperature}"
    instruments = {}
    for inst, (name, higher_is_better) in DIRECTION.items():
        if not probes.get(name):
            instruments[inst] = {"value": None, "reason": f"no items of the {name} probe set asked"}
            continue
        entry = compare_rates(pol[inst], base[inst], higher_is_better)
        if entry.get("value") is None and "reason" not in entry:
            entry["reason"] = "no items qualified"
        if inst == "sycophancy_rate":
            entry["base_plain_accuracy"] = base[inst].get("plain_accuracy")
        entry["source"] = (f"probes v{VERSION}: {name}.jsonl, {len(probes[name])} items, {decoding}, "
                           f"≤ {opts.max_new_tokens} new tokens")
        instruments[inst] = entry
    rows = []
    for name, records in probes.items():
        for key, _ in ASKED[name]:
            if (name, key) not in policy_answers:
                continue
            pa, ba, pr, br = (x[(name, key)] for x in (policy_answers, base_answers, pol_read, base_read))
            for i, r in enumerate(records):
                rows.append({"set": name, "id": r["id"], "asked": key, "prompt": r[key], "policy": pa[i],
                             "base": ba[i], "policy_reading": pr[i], "base_reading": br[i]})
    return instruments, rows


def evaluate_probes(policy, base, tokenizer, probes: dict[str, list[dict]], opts: ProbeOptions
                    ) -> ProbeResult:
    """The probe sets asked of policy (seed) and base (seed + 1), read and compared."""
    pol_answers, pol_tokens = probe_answers(policy, tokenizer, probes, opts, opts.seed)
    base_answers, base_tokens = probe_answers(base, tokenizer, probes, opts, opts.seed + 1)
    instruments, rows = probe_instruments(probes, pol_answers, base_answers, opts)
    return ProbeResult(instruments, rows, {"policy": pol_tokens, "base": base_tokens},
                       {name: len(records) for name, records in probes.items()})
