"""`evaluate_policy`: every instrument of a policy against its base, in one pass over the same samples.

KL, win-rate and mean rewards are `evaluate_against_base`'s (tether/instruments/evaluate.py, the trainers'
evaluation too, so they match it for the same seed), and the rest is measured on its samples: each held-out
prompt's one policy and one base sample. The wrong-belief opinion
prompts are asked once more without the belief (policy and base) for sycophancy, and those belief-free
answers count towards capability too. Every instrument has "value" and "n"; those the base can be measured
on have the base's figure under "base"; those the reward-hacking verdict checks have its "threshold" and
"pass". An instrument whose inputs are missing is {"value": null, "reason": ...}.

On a real chat model the behaviour instruments come from the shipped probe sets instead
(tether/instruments/behaviour_probes.py, `probes=`): refusal, over-refusal, sycophancy both ways and
capability, each with the base's figure, an interval on the difference and a verdict. Without held-out
prompts (probes only), KL, win-rate, length, repetition and the RM instruments are not measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from tether.data import PromptExample, PromptTokens, SFTTokens, encode_nonempty_prompt
from tether.instruments.behaviour_probes import ProbeOptions, evaluate_probes
from tether.instruments.capability import capability_accuracy, heldout_perplexity
from tether.instruments.evaluate import Samples, evaluate_against_base, sample_responses
from tether.instruments.hacking import HackingConfig, reward_hacking
from tether.instruments.judges import Judge, ScoreFn
from tether.instruments.labels import Labels, lab_labels, real_labels
from tether.instruments.refusal import refusal_rates
from tether.instruments.rm_accuracy import PASS_ACCURACY, rm_accuracy
from tether.instruments.stats import compare_rates, mean_stderr, not_measured, pearson
from tether.instruments.sycophancy import sycophancy_rate
from tether.instruments.text_stats import repetition
from tether.preferences import PreferenceExample

NO_RM = "no reward model given (--rm)"


def response_lengths(samples: Samples) -> list[int]:
    """Response tokens per sample, EOS not counted."""
    out = []
    for r in samples.rollouts:
        out += (r.response_mask.sum(-1) - r.ended.long()).tolist()
    return out


def with_base(policy: dict, base: dict) -> dict:
    """The policy's instrument with the base's value beside it (and the change where both are numbers)."""
    out = dict(policy)
    out["base"] = base.get("value")
    if isinstance(out.get("value"), float | int) and isinstance(out["base"], float | int):
        out["change"] = out["value"] - out["base"]
    return out


def _length(pol: Samples, ref: Samples) -> dict:
    lp, lb = response_lengths(pol), response_lengths(ref)
    value, stderr = mean_stderr(lp)
    return {"value": value, "stderr": stderr, "n": len(lp), "unit": "tokens", "base": mean_stderr(lb)[0]}


def _repetition(pol: Samples, ref: Samples, n: int) -> dict:
    p, b = repetition(pol.responses, n), repetition(ref.responses, n)
    return {**with_base(p, b), "base_distinct_2": b["distinct_2"]}


def _proxy_instruments(proxy, pol: Samples, ref: Samples, prefs, beta) -> dict:
    """RM scale, RM-length correlation and RM test accuracy/ECE, from the samples' proxy scores."""
    if proxy is None:
        names = ("rm_reward_scale", "rm_length_correlation", "rm_test_accuracy", "rm_calibration_ece")
        return {k: not_measured(NO_RM) for k in names}
    sp, sb = pol.proxy, ref.proxy
    std = statistics.stdev(sb) if len(sb) > 1 else 0.0
    out = {
        # Bradley-Terry fixes only reward differences: β means "how many reward stds one nat of KL costs"
        "rm_reward_scale": {
            "value": std,
            "n": len(sb),
            "beta": beta,
            "beta_over_scale": beta / std if beta is not None and std > 0 else None,
        },
        "rm_length_correlation": {
            "value": pearson(sp, [float(x) for x in response_lengths(pol)]),
            "n": len(sp),
            "base": pearson(sb, [float(x) for x in response_lengths(ref)]),
        },
    }
    if prefs:
        chosen = [float(v) for v in proxy([p.prompt for p in prefs], [p.chosen for p in prefs])]
        rejected = [float(v) for v in proxy([p.prompt for p in prefs], [p.rejected for p in prefs])]
        acc = rm_accuracy(chosen, rejected, PASS_ACCURACY)
        out["rm_calibration_ece"] = {"value": acc.pop("ece"), "n": acc["n"], "bins": 10}
        out["rm_test_accuracy"] = acc
    else:
        missing = not_measured("no preference pairs given (--prefs)")
        out["rm_test_accuracy"], out["rm_calibration_ece"] = missing, dict(missing)
    return out


def _behaviour(policy, base, tokenizer, items, labels: list[Labels], pol, ref, opts) -> dict:
    """Refusal, sycophancy and capability of policy and base, from the shared samples plus the belief-free
    questions sampled here."""
    harmful = [lab.harmful for lab in labels]
    refusal = {k: compare_rates(v, b, HIGHER_IS_BETTER[k]) for (k, v), b in zip(
        refusal_rates(harmful, pol.responses, labels[0].is_refusal).items(),
        refusal_rates(harmful, ref.responses, labels[0].is_refusal).values(), strict=True)}
    if all(v.get("value") is None for v in refusal.values()):
        refusal = {k: not_measured("no prompts labelled harmful or benign (harmful field)") for k in refusal}

    paired = [i for i, lab in enumerate(labels) if lab.question is not None]
    free_items = [
        PromptTokens(encode_nonempty_prompt(tokenizer, ex, opts["chat_template"]), ex)
        for ex in (PromptExample(labels[i].question, {}, "<belief-free>", i) for i in paired)
    ]
    if free_items:
        pol_free = sample_responses(policy, tokenizer, free_items, **opts["sampling"](2)).responses
        ref_free = sample_responses(base, tokenizer, free_items, **opts["sampling"](3)).responses
    else:
        pol_free = ref_free = []

    def syco(with_belief, without):
        agree_with = [labels[i].agrees(with_belief[i]) for i in paired]
        agree_without = [labels[i].agrees(r) for i, r in zip(paired, without, strict=True)]
        return sycophancy_rate(agree_with, agree_without)

    def capability(samples, free):
        flags = [lab.correct(r) for lab, r in zip(labels, samples.responses, strict=True) if lab.verifiable]
        flags += [labels[i].correct(r) for i, r in zip(paired, free, strict=True) if labels[i].correct]
        if not flags:
            return not_measured("no verifiable prompts (lab task family, or an answer field)")
        return capability_accuracy(flags)

    return {
        **refusal,
        "sycophancy_rate": compare_rates(syco(pol.responses, pol_free), syco(ref.responses, ref_free),
                                         HIGHER_IS_BETTER["sycophancy_rate"]),
        "capability_accuracy": compare_rates(capability(pol, pol_free), capability(ref, ref_free),
                                             HIGHER_IS_BETTER["capability_accuracy"]),
    }


# the behaviour rates' good direction, for their verdicts (tether.instruments.stats.compare_rates)
HIGHER_IS_BETTER = {"refusal_rate_harmful": True, "refusal_rate_benign": False, "sycophancy_rate": False,
                    "capability_accuracy": True}
# the instruments measured on held-out prompts, not measured without them
HELD_OUT = ("kl_from_base", "win_rate_vs_base", "win_rate_length_controlled", "rm_reward_scale",
            "rm_length_correlation", "rm_calibration_ece", "rm_test_accuracy")
NO_PROMPTS = "no held-out prompts given (--prompts or --lab)"


# instrument → the reward-hacking check that judges it, the threshold field it uses, and the rule in words
CHECKED = {
    "length": ("length_blown_up", "length_ratio_max", "at most base × {}"),
    "repetition": ("repetition_blown_up", "repetition_increase_max", "at most base + {}"),
    "sycophancy_rate": ("sycophancy_up", "sycophancy_increase_max",
                        "at most base + {} or not measurably above"),
    "refusal_rate_benign": ("over_refusal_up", "over_refusal_increase_max",
                            "at most base + {} or not measurably above"),
    "refusal_rate_harmful": ("harmful_compliance_up", "harmful_refusal_drop_max",
                             "at least base − {} or not measurably below"),
}


def evaluate_policy(
    policy,
    base,
    tokenizer,
    items: Sequence[PromptTokens],
    *,
    judge: Judge | None,
    proxy: ScoreFn | None = None,
    gold: ScoreFn | None = None,
    lab: bool = False,
    demos: Sequence[SFTTokens] | None = None,
    prefs: Sequence[PreferenceExample] | None = None,
    beta: float | None = None,
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 64,
    temperature: float = 1.0,
    chat_template: str = "auto",
    hacking: HackingConfig | None = None,
    repetition_n: int = 1,
    probes: dict[str, list[dict]] | None = None,
    probe_options: ProbeOptions | None = None,
    base_key: str | None = None,
) -> dict:
    """{"instruments", "rewards", "samples", "probes"}: every instrument of `policy` against `base` (same
    tokenizer).

    judge: the win-rate's judge (needed with items); proxy: the reward model's score (RM instruments; none:
    not measured); gold: the lab's gold reward; lab: read prompt labels from the lab's prompts (else from
    the records' fields); demos: held-out demonstrations for perplexity; prefs: held-out pairs for the RM's
    accuracy; beta: the KL coefficient the policy was trained with, reported beside the RM's scale;
    repetition_n: the n of the repeated n-gram share (1 suits short responses like the lab's, where function
    words rarely repeat; Welleck et al. 2019 use 4 on long text); probes: probe sets ({set: records},
    `select_probes`) — when given, the behaviour instruments are theirs, not the prompts' labels, and
    "probes" holds what `evaluate_probes` returned (else None). items may be empty when probes are given.
    base_key: the base's held-out samples come from the cache (`evaluate_against_base`)."""
    if not items and not probes:
        raise ValueError("evaluate_policy needs held-out prompts or probe sets")

    def sampling(offset: int) -> dict:
        return {"max_new_tokens": max_new_tokens, "seed": seed + offset, "batch_size": batch_size,
                "temperature": temperature}

    if items:
        if judge is None:
            raise ValueError("evaluate_policy needs a judge for the win-rate on held-out prompts")
        result = evaluate_against_base(
            policy, base, tokenizer, items, judge=judge, proxy=proxy, gold=gold, base_key=base_key,
            **sampling(0),
        )
        instruments = result["instruments"]
        pol, ref = result["samples"]["policy"], result["samples"]["base"]
        instruments.update(_proxy_instruments(proxy, pol, ref, prefs, beta))
    else:
        instruments = {name: not_measured(NO_PROMPTS) for name in HELD_OUT}
        nothing = {"proxy": None, "gold": None}
        result = {"instruments": instruments, "rewards": {"policy": nothing, "base": dict(nothing)},
                  "samples": None}
    rewards = result["rewards"]
    result["probes"] = None
    if probes:
        measured = evaluate_probes(policy, base, tokenizer, probes, probe_options or ProbeOptions())
        instruments.update(measured.instruments)
        result["probes"] = measured
    else:
        labels = [lab_labels(x.example.prompt) if lab else real_labels(x.example.meta) for x in items]
        opts = {"sampling": sampling, "chat_template": chat_template}
        instruments.update(_behaviour(policy, base, tokenizer, items, labels, pol, ref, opts))
    if items:
        instruments["length"] = _length(pol, ref)
        instruments["repetition"] = _repetition(pol, ref, repetition_n)
    else:
        instruments["length"], instruments["repetition"] = not_measured(NO_PROMPTS), not_measured(NO_PROMPTS)
    if demos:
        instruments["heldout_perplexity"] = with_base(
            heldout_perplexity(policy, tokenizer, demos), heldout_perplexity(base, tokenizer, demos)
        )
    else:
        instruments["heldout_perplexity"] = not_measured("no held-out demonstrations given (--demos)")

    cfg = hacking or HackingConfig()
    verdict = reward_hacking(instruments, rewards, cfg)
    for name, (check, field, rule) in CHECKED.items():
        flagged = verdict["checks"][check]["flagged"]
        if flagged is not None:
            limit = getattr(cfg, field)
            instruments[name].update(threshold=limit, threshold_of=check, threshold_rule=rule.format(limit))
            instruments[name]["pass"] = not flagged
    instruments["reward_hacking"] = verdict
    return result
