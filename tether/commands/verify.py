"""Check that each optimiser reaches the closed-form optimum π* ∝ π_ref·exp(r/β) on a task small enough to
enumerate (40 responses, a tiny Llama), through the real trainers, with exact KLs. Exit code 1 when a
target is missed.

Example: tether verify --json
Targets: KL(π‖π*) ≤ 0.005 nats for ppo and rloo with each kl.estimator (k1, token_kl), ≤ 0.02 for dpo and
grpo_kl_in_reward; the paper's grpo within 0.05 nats of its own predicted fixed point (its gap to π*
reported); IPO reported without a target; limits from a perturbed start: β = 0.01 puts ≥ 0.95 on the
best response, β = 100 ends within 0.02 nats of π*.
--quick runs a shorter rloo only (20-30 s on 2 cores; target 0.02 nats). Progress lines go to stderr.
--workers N trains N runs at once (default 2; each run is seeded and one thread: N changes no KL).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="a shorter rloo only, no limits")
    parser.add_argument("--out", help="keep the run directories here (default: a deleted temporary one)")
    parser.add_argument("--workers", type=int, default=2,
                        help="runs trained at once, each in its own process on one thread (default 2)")


def _target(entry: dict) -> str:
    t = entry.get("target")
    if not t:
        return "-"
    return ", ".join(f"{k} {'<=' if k.startswith('kl') else '>='} {v:g}" for k, v in t.items())


def _verdict(entry: dict) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[entry.get("pass")]


def _row(name: str, e: dict) -> str:
    kl_opt, reward, kl_ref = e["kl_to_optimum"], e["expected_reward"], e["kl_to_reference"]
    return f"{name:<18} {kl_opt:>11.4f} {reward:>7.4f} {kl_ref:>11.4f}"


def to_table(result: dict) -> str:
    o = result["optimum"]
    lines = [
        f"beta = {result['beta']:g}, {o['responses']} responses; pi*: E[r] = {o['expected_reward']:.4f}, "
        f"KL(pi*||ref) = {o['kl_to_reference']:.4f}; the start (ref): "
        f"E[r] = {o['reference_expected_reward']:.4f}, KL(ref||pi*) = {o['reference_kl_to_optimum']:.4f}",
        "",
        f"{'algorithm':<18} {'KL(pi||pi*)':>11} {'E[r]':>7} {'KL(pi||ref)':>11} {'seconds':>7}  target",
    ]
    for name, e in result["algorithms"].items():
        lines.append(_row(name, e) + f" {e['seconds']:>7.1f}  {_target(e)}: {_verdict(e)}")
        if "prediction" in e:
            beta_eff = f", beta_eff = {e['beta_eff']:.3f}" if "beta_eff" in e else ""
            lines.append(_row("  predicted", e["prediction"])
                         + f" {'':>7}  KL(pi||predicted) = {e['kl_to_prediction']:.4f}{beta_eff}")
    if result["limits"]:
        lines += ["", "limits (from the perturbed start, against the reference):"]
        for name, e in result["limits"].items():
            lines.append(
                f"{name:<18} {e['algorithm']}: start KL(pi||ref) = {e['start_kl_to_reference']:.3f}, "
                f"pi(best) {e['start_best_probability']:.4f} -> {e['best_probability']:.4f}, "
                f"KL(pi||pi*) = {e['kl_to_optimum']:.4f}, {e['seconds']:.1f} s  {_target(e)} / {_verdict(e)}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from tether.verify import failures, verify

    def progress(name: str, entry: dict) -> None:
        print(f"verify: {name}: {entry['seconds']:.1f} s, {_verdict(entry)}", file=sys.stderr, flush=True)

    result = verify(quick=args.quick, out=args.out, progress=progress, workers=args.workers)
    print(json.dumps(result, indent=2) if args.json else to_table(result))
    missed = failures(result)
    for line in missed:
        print(f"tether verify: target missed: {line}", file=sys.stderr)
    return 1 if missed else 0
