"""Print the KL-regularised optimum π* ∝ prior·exp(reward/β) for one prompt and one or more β.

Example (the lesson's worked example): tether optimal-policy --prior 0.6 0.4 --reward 1 0 --beta 0.5
gives π* = 0.9172 / 0.0828 (4 decimals of the exact values). The lesson prints 0.9173 / 0.0827 because
it rounds before dividing: with e² ≈ 7.39 the weights are 4.434 and 0.4, and 4.434/4.834 = 0.91725.
"""

from __future__ import annotations

import argparse
import json
import math

from tether.errors import TetherError
from tether.theory import OptimalPolicy, optimal_policies


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prior", type=_number, nargs="+", required=True, help="reference probabilities p(y)"
    )
    parser.add_argument(
        "--reward", type=_number, nargs="+", required=True, help="reward r(y) of each response"
    )
    parser.add_argument(
        "--beta", type=_number, nargs="+", required=True, help="KL coefficient(s) β ≥ 0; 0 and inf allowed"
    )
    parser.add_argument("--names", nargs="+", help="response names (default y1, y2, ...)")
    parser.add_argument("--normalize", action="store_true", help="rescale a prior that does not sum to 1")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _json_number(x: float):
    """JSON has no infinities: write them as the strings "inf" / "-inf"."""
    return ("inf" if x > 0 else "-inf") if math.isinf(x) else x


def to_json(results: list[OptimalPolicy]) -> str:
    rows = []
    for res in results:
        row = {k: (v if k == "policy" else _json_number(v)) for k, v in res.as_dict().items()}
        rows.append(row)
    return json.dumps({"results": rows}, indent=2)


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def to_table(results: list[OptimalPolicy], prior, reward, names) -> str:
    width = max(8, *(len(n) for n in names))
    lines = []
    for res in results:
        lines.append(f"beta = {res.beta:g}")
        lines.append(f"  {'response':<{width}} {'prior':>8} {'reward':>8} {'pi*':>8}")
        for name, p, r, pi in zip(names, prior, reward, res.policy.tolist(), strict=True):
            lines.append(f"  {name:<{width}} {p:>8.4f} {r:>8.4f} {pi:>8.4f}")
        z = math.exp(res.log_partition) if res.log_partition < 709 else math.inf
        lines.append(
            f"  Z = {_fmt(z)}   log Z = {_fmt(res.log_partition)}   beta*log Z = {_fmt(res.soft_value)}   "
            f"E[r] = {_fmt(res.expected_reward)}   KL = {_fmt(res.kl_to_prior)} nats   "
            f"objective = {_fmt(res.objective)}"
        )
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def run(args: argparse.Namespace) -> int:
    names = args.names or [f"y{i + 1}" for i in range(len(args.prior))]
    if len(names) != len(args.prior):
        raise TetherError(f"--names has {len(names)} entries but --prior has {len(args.prior)}")
    try:
        results = optimal_policies(args.prior, args.reward, args.beta, normalize=args.normalize)
    except ValueError as e:  # tether.theory is pure math and raises ValueError; here it is the user's input
        raise TetherError(str(e)) from None
    if args.normalize:
        total = sum(args.prior)
        args.prior = [p / total for p in args.prior]
    print(to_json(results) if args.json else to_table(results, args.prior, args.reward, names))
    return 0
