"""The run's verdict for people: a terminal table, a self-contained report.html (plots as embedded PNG,
tether/instruments/plots.py) and summary.md beside it (tether/instruments/report_md.py); both take their rows
from tether/instruments/report_rows.py."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from tether.files import write_text_atomic
from tether.instruments.report_md import summary_markdown
from tether.instruments.report_rows import instrument_rows, num, reward_rows, sample_rows, verdict_reasons

# a verdict cell → its colour class in report.html
VERDICT_CLASS = {"PASS": "pass", "FAIL": "fail", "better": "pass", "worse": "fail"}


def terminal_table(summary: dict) -> str:
    rows = instrument_rows(summary)
    w0 = max(len("instrument"), *(len(r[0]) for r in rows))
    w1 = max(len("value"), *(len(r[1]) for r in rows))
    w2 = max(len("detail"), *(len(r[2]) for r in rows))
    lines = [f"{'instrument':<{w0}}  {'value':>{w1}}  {'detail':<{w2}}  verdict"]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows]
    rewards = reward_rows(summary)
    if rewards:
        lines.append("")
        lines.append(f"{'mean reward':<{w0}}  {'policy':>{w1}}  base")
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rewards]
    reasons = verdict_reasons(summary)
    if reasons:
        lines.append("")
        lines += [f"reward hacking: {r}" for r in reasons]
    lines.append("")
    lines.append(f"beta {num(summary.get('beta'), 4)}   wall time {num(summary.get('wall_seconds'), 1)} s")
    return "\n".join(lines)


def svg_line_plot(xs: list[float], ys: list[float], title: str, width: int = 420, height: int = 180) -> str:
    """A minimal line plot as an SVG string (no plotting library needed)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
    if len(pts) < 2:
        return f"<p>{html.escape(title)}: not enough points</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 30

    def sx(x):
        return pad + (x - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    t = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{t}">'
        f'<text x="{pad}" y="16" font-size="13">{t}</text>'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="2" y="{sy(y1) + 4:.1f}" font-size="10">{y1:.3g}</text>'
        f'<text x="2" y="{sy(y0) + 4:.1f}" font-size="10">{y0:.3g}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="10" text-anchor="end">{x1:.0f}</text>'
        f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{path}"/></svg>'
    )


def metric_series(metrics: list[dict], key: str, x_key: str = "step") -> tuple[list, list]:
    rows = [m for m in metrics if key in m and m.get(x_key) is not None]
    return [m[x_key] for m in rows], [m[key] for m in rows]


# (metrics key, title) of the training curves: RL trainers log per iteration, DPO per step
RL_CURVES = (
    ("reward", "proxy reward"),
    ("gold", "gold reward"),
    ("kl", "KL from SFT (nats)"),
    ("beta", "β"),
    ("response_length", "response length (tokens)"),
    ("entropy", "entropy (nats/token)"),
)
DPO_CURVES = (("loss", "loss"), ("margin", "reward margin"), ("accuracy", "preference accuracy"))


def training_curves(metrics: list[dict], algo: str) -> tuple[dict[str, tuple[list, list]], str]:
    """({title: (xs, ys)}, x label) of a stage's train records (metrics.jsonl), the keys it logged."""
    train = [m for m in metrics if m.get("kind", "train") == "train"]
    keys, x_key = (DPO_CURVES, "step") if algo == "dpo" else (RL_CURVES, "iteration")
    curves = {}
    for key, title in keys:
        xs, ys = metric_series(train, key, x_key=x_key)
        if xs:
            curves[f"{algo.upper()} {title}"] = (xs, ys)
    return curves, x_key


def html_table(headers: list[str], rows: list[tuple], classes: list[str] | None = None) -> str:
    """An escaped HTML table; `classes` (one per row) marks a row's last cell (pass/fail colours)."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = [f"<td>{esc(str(c))}</td>" for c in row]
        if classes and classes[i]:
            cells[-1] = f"<td class='{classes[i]}'>{esc(str(row[-1]))}</td>"
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px 10px;
text-align:left;vertical-align:top}.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}img{margin:4px}"""


def html_page(title: str, body: str) -> str:
    esc = html.escape
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )


def report_body(summary: dict, curves: dict | None, samples: list[dict] | None, x_label: str) -> str:
    """The sections of a run's report: instruments, verdict, rewards, curves, samples, raw summary."""
    from tether.instruments.plots import curve_images

    esc = html.escape
    rows = instrument_rows(summary)
    parts = [
        "<h2>Instruments</h2>",
        html_table(["instrument", "value", "detail", "verdict"], rows,
                   [VERDICT_CLASS.get(r[3], "") for r in rows]),
    ]
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict_reasons(summary))
    if reasons:
        parts.append(f"<h2>Reward hacking</h2><ul class='fail'>{reasons}</ul>")
    parts.append("<h2>Mean reward on held-out prompts</h2>")
    parts.append(html_table(["", "policy", "base"], reward_rows(summary)))
    beta, wall = num(summary.get("beta"), 4), num(summary.get("wall_seconds"), 1)
    parts.append(f"<p>beta = {esc(beta)}, wall time {esc(wall)} s</p>")
    images = curve_images(curves or {}, x_label)
    if images:
        parts.append(f"<h2>Training curves</h2>{images}")
    gens = sample_rows(samples)
    if gens:
        parts.append("<h2>Sample generations (base and policy, same prompt)</h2>")
        parts.append(html_table(["family", "prompt", "base", "policy"], gens))
    parts.append(f"<h2>summary.json</h2><pre>{esc(json.dumps(summary, indent=2))}</pre>")
    return "\n".join(parts)


def write_report(
    path: str | Path,
    summary: dict,
    curves: dict[str, tuple[list, list]] | None = None,
    title: str = "tether run",
    samples: list[dict] | None = None,
    x_label: str = "iteration",
) -> Path:
    """Self-contained report.html — the instruments table with verdicts and the reward-hacking reasons,
    mean rewards, training curves (PNG), sample generations of base and policy side by side per family
    ({"prompt", "base", "policy"} records), the raw summary — and summary.md beside it."""
    path = Path(path)
    write_text_atomic(path.with_name("summary.md"), summary_markdown(summary, title, samples))
    return write_text_atomic(path, html_page(title, report_body(summary, curves, samples, x_label)))
