"""The rows of a run's summary for people, shared by the terminal table and report.html
(tether/instruments/report.py) and summary.md (tether/instruments/report_md.py)."""

from __future__ import annotations

import math


def num(x, digits: int = 3) -> str:
    """A value as table text: "-" for none, floats to `digits` places, inf/nan and the rest as str()."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _value(inst: dict) -> str:
    if isinstance(inst.get("value"), bool):  # a verdict (reward_hacking): true = flagged
        return "flagged" if inst["value"] else "clear"
    value = num(inst.get("value"))
    if inst.get("unit") and inst.get("value") is not None:
        value += f" {inst['unit']}"
    return value


def instrument_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(name, value, detail, verdict) for each instrument, in the summary's order."""
    rows = []
    for name, inst in summary["instruments"].items():
        detail = []
        if inst.get("value") is None and "reason" in inst:
            detail.append(f"not measured: {inst['reason']}")
        if "base" in inst and not isinstance(inst["base"], str):
            of = f" (n={inst['base_n']})" if "base_n" in inst else ""
            detail.append(f"base {num(inst['base'])}{of}")
        if "stderr" in inst:
            detail.append(f"± {num(inst['stderr'])} (stderr)")
        if inst.get("ci95"):
            lo, hi = inst["ci95"]
            detail.append(f"95% CI [{num(lo)}, {num(hi)}]")
        if inst.get("difference_ci95"):
            lo, hi = inst["difference_ci95"]
            detail.append(f"policy − base {inst['change']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]")
        if inst.get("source"):
            detail.append(inst["source"])
        if inst.get("distinct_2") is not None:
            detail.append(f"distinct-2 {num(inst['distinct_2'])} (base {num(inst.get('base_distinct_2'))})")
        if "beta" in inst:
            detail.append(f"beta {num(inst['beta'], 4)}, beta/scale {num(inst.get('beta_over_scale'))}")
        if "judge" in inst:
            detail.append(f"judge {inst['judge']}")
        if "threshold_rule" in inst:
            detail.append(f"pass: {inst['threshold_rule']}")
        elif "no_change" in inst and "difference_ci95" not in inst:
            detail.append(f"no change {num(inst['no_change'], 2)}")
        elif "threshold" in inst:
            detail.append(f"threshold {num(inst['threshold'], 2)}")
        if isinstance(inst.get("reasons"), list):
            detail.append(f"{len(inst['reasons'])} reason(s) below")
        if "n" in inst:
            detail.append(f"n={inst['n'] if inst['n'] is not None else '-'}")
        verdict = "" if "pass" not in inst else ("PASS" if inst["pass"] else "FAIL")
        verdict = inst.get("verdict", verdict)  # better / no measurable difference / worse, where measured
        rows.append((name, _value(inst), ", ".join(detail), verdict))
    return rows


def verdict_reasons(summary: dict) -> list[str]:
    """The reward-hacking verdict's reasons (empty when there is no verdict or it is clear)."""
    return list((summary["instruments"].get("reward_hacking") or {}).get("reasons") or [])


def sample_rows(samples: list[dict] | None, per_group: int = 3) -> list[tuple[str, str, str, str]]:
    """(group, prompt, base, policy) for the first `per_group` samples of each group: a sample's "group" (e.g.
    a probe set), else its lab family, else "all"."""
    from tether.rewards import is_lab_prompt

    groups: dict[str, list] = {}
    for s in samples or []:
        group = s.get("group", "all")
        if "group" not in s and is_lab_prompt(s["prompt"]):
            from tether.lab import parse_prompt

            group = parse_prompt(s["prompt"]).family
        if len(groups.setdefault(group, [])) < per_group:
            groups[group].append((group, str(s["prompt"]), s["base"], s["policy"]))
    return [row for rows in groups.values() for row in rows]


def reward_rows(summary: dict) -> list[tuple[str, str, str]]:
    rows = []
    for kind in ("gold", "proxy"):
        pol, base = summary["rewards"]["policy"].get(kind), summary["rewards"]["base"].get(kind)
        if pol is not None or base is not None:
            rows.append((f"{kind} reward", num(pol), num(base)))
    return rows
