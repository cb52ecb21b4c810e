"""The card of a labelling: how far the AI labels can be trusted, written next to them.

Every figure compares the judge's averaged label p = P(first preferred) with a reference r = P(first
preferred) by someone else (gold: 1, ½ or 0; a human label: 1 or 0; a simulated labeler's sampled choice):

    agreement       over pairs where r ≠ ½: 1 when p and r pick the same side, ½ when p = ½, else 0
    soft_agreement  over the same pairs: p when r > ½, 1 − p when r < ½ (the label's mean weight on r's side)

and the position-bias rate is the share of pairs whose choice flips when A and B swap: the judge picks the
reply shown as A in both orders (or the one shown as B in both), i.e. (P_A,fwd − ½)·(P_A,swapped − ½) > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tether.files import write_json, write_text_atomic


def agreement_with(labels: Sequence[float], reference: Sequence[float | None]) -> dict:
    """{"value", "soft", "n"} of `labels` against `reference` (see the module docstring); None-s skipped."""
    hard = soft = 0.0
    n = 0
    for p, r in zip(labels, reference, strict=True):
        if r is None or r == 0.5:
            continue
        n += 1
        same_side = (p > 0.5) == (r > 0.5)
        hard += 0.5 if p == 0.5 else float(same_side)
        soft += p if r > 0.5 else 1.0 - p
    if n == 0:
        return {"value": None, "soft": None, "n": 0}
    return {"value": round(hard / n, 4), "soft": round(soft / n, 4), "n": n}


def position_bias_rate(forward: Sequence[float], swapped: Sequence[float]) -> dict:
    """{"value", "n"}: the share of pairs where the judge picks the same position in both orders."""
    n = len(forward)
    flips = sum(1 for f, s in zip(forward, swapped, strict=True) if (f - 0.5) * (s - 0.5) > 0)
    return {"value": round(flips / n, 4) if n else None, "n": n}


def card_text(card: dict) -> str:
    """The card in a few plain lines."""

    def fig(entry: dict | None) -> str:
        if not entry or entry.get("value") is None:
            return "not measured"
        return f"{entry['value']:.3f} (soft {entry['soft']:.3f}, n={entry['n']})"

    lines = [
        f"AI labels by {card['judge']} under constitution {card['constitution']!r}: {card['pairs']} pairs",
        f"  labels per second            {card['labels_per_second']:.3g}",
        f"  position-bias rate           {card['position_bias_rate']['value']}"
        f" (choice flips when A and B swap, n={card['position_bias_rate']['n']});"
        f" mean P(A) {card['mean_p_a']}",
        f"  agreement with human labels  {fig(card.get('agreement_with_human_labels'))}",
        f"  agreement with gold          {fig(card.get('agreement_with_gold'))}",
        f"  agreement with the lab's simulated labelers  {fig(card.get('agreement_with_lab_labelers'))}",
        f"  simulated labelers with gold (same pairs)    {fig(card.get('lab_labelers_with_gold'))}",
        f"  principles drawn: {', '.join(f'{k} {v}' for k, v in card['principles'].items())}",
    ]
    return "\n".join(lines) + "\n"


def write_card(out: str | Path, card: dict) -> None:
    """OUT/card.json and OUT/card.txt."""
    out = Path(out)
    write_json(out / "card.json", card)
    write_text_atomic(out / "card.txt", card_text(card))
