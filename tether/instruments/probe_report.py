"""The probe's results for people: a terminal table and a self-contained report.html (trace as inline SVG).

Both read the payload `tether rm probe` writes to probe.json: {"candidates": [...], "bars": {"data",
"gold"}, "steps", "seconds", "found", ...}.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from tether.files import write_text_atomic
from tether.instruments.report import svg_line_plot


def _num(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else " / ".join(m["content"] for m in prompt)


def candidate_rows(payload: dict, top: int | None = None) -> list[tuple[str, ...]]:
    """(rank, prompt, response, rm score, gold, biases, flaws, verdict) for the `top` best candidates."""
    rows = []
    for i, c in enumerate(payload["candidates"][:top], 1):
        verdict = "ADVERSARIAL" if c.get("adversarial") else ("above data" if c.get("beats_data") else "")
        rows.append((str(i), _prompt_text(c["prompt"]), c["response"], _num(c["rm_score"]), _num(c["gold"]),
                     ", ".join(c["biases"]) or "-", ", ".join(c.get("flaws") or []) or "-", verdict))
    return rows


HEADER = ("#", "prompt", "response", "rm", "gold", "biases", "gold flaws", "verdict")


def bar_lines(payload: dict) -> list[str]:
    bars = payload["bars"]
    out = []
    if bars.get("data"):
        d = bars["data"]
        out.append(f"best data RM score {_num(d['value'])} (of {d['n']} responses in {d['source']})")
    if bars.get("gold"):
        g = bars["gold"]
        out.append(f"gold bar {_num(g['value'])} (mean gold of {g['source']}, n={g['n']})")
    out.append(f"{payload['found']} of {len(payload['candidates'])} candidates adversarial; "
               f"{payload['steps']} steps in {payload['seconds']:.1f} s, "
               f"{payload['evaluated']} sequences scored")
    if payload.get("seconds_to_beat_data") is not None:
        out.append(f"first response above the best data score after {payload['seconds_to_beat_data']:.1f} s")
    return out


def probe_table(payload: dict, top: int = 10, width: int = 48) -> str:
    """Plain-text table of the best candidates, long cells cut to `width` characters."""
    def cut(s: str) -> str:
        return s if len(s) <= width else s[: width - 1] + "…"

    rows = [HEADER, *(tuple(cut(x) for x in r) for r in candidate_rows(payload, top))]
    widths = [max(len(r[j]) for r in rows) for j in range(len(HEADER))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([*lines, "", *bar_lines(payload)])


def write_probe_report(path: str | Path, payload: dict, title: str = "tether rm probe") -> Path:
    """report.html: the method, the bars, every candidate in a table, the search trace, the raw payload."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(x)}</td>" for x in r) + "</tr>" for r in candidate_rows(payload)
    )
    bars = "".join(f"<li>{esc(line)}</li>" for line in bar_lines(payload))
    trace = payload.get("trace") or []
    plot = svg_line_plot(list(range(1, len(trace) + 1)), trace, "mean RM score of the chains by step")
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:4px 8px;text-align:left;
vertical-align:top}}tr:nth-child(even){{background:#f4f4f4}}</style></head>
<body><h1>{esc(title)}</h1>
<p>{esc(payload.get("method", ""))}</p>
<ul>{bars}</ul>
<h2>Adversarial responses</h2>
<p>ADVERSARIAL: RM score above the best data response's and (lab) gold reward below the gold bar.
biases: the lab biases the response leans on (length, repetition, agreement, refusal); gold flaws: every
gold-reward rule it loses on.</p>
<table><tr>{head}</tr>{body}</table>
<h2>Search</h2>{plot}
<h2>probe.json</h2><pre>{esc(json.dumps(payload, indent=2))}</pre>
</body></html>
"""
    return write_text_atomic(path, doc)
