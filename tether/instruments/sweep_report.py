"""A β sweep's report.html (frontier plot, per-β table with achieved KL and verdicts, best-of-n) and
summary.md, from sweep.json's content."""

from __future__ import annotations

import html
from pathlib import Path

from tether.files import write_text_atomic
from tether.instruments.report import html_page, html_table
from tether.instruments.report_md import md_table
from tether.instruments.report_rows import num

RUN_HEADERS = ["β", "KL (nats)", "± stderr", "proxy reward", "gold reward", "win-rate vs base", "verdict"]
BON_HEADERS = ["n", "KL (nats)", "√KL", "proxy reward", "gold reward"]


def _verdict(run: dict) -> str:
    if run.get("reward_hacking") is None:
        return "not measured"
    return "FLAGGED" if run["reward_hacking"] else "clear"


def run_rows(sweep: dict) -> list[tuple]:
    return [
        (
            f"{r['beta']:g}" + (" (recommended)" if r["beta"] == sweep.get("recommended_beta") else ""),
            num(r.get("kl_from_base")),
            num(r.get("kl_stderr")),
            num(r.get("proxy_reward")),
            num(r.get("gold_reward")),
            num(r.get("win_rate_vs_base")),
            _verdict(r),
        )
        for r in sweep["runs"]
    ]


def bon_rows(sweep: dict) -> list[tuple]:
    return [
        (b["n"], num(b["kl"]), num(b["sqrt_kl"]), num(b["proxy_reward"]), num(b.get("gold_reward")))
        for b in sweep.get("best_of_n", [])
    ]


def recommendation(sweep: dict) -> str:
    beta, metric = sweep.get("recommended_beta"), sweep.get("recommendation_metric", "gold_reward")
    if beta is None:
        return "No recommendation: every run was flagged as reward hacking (or none was measured)."
    return f"Recommended β = {beta:g}: the best {metric.replace('_', ' ')} among the runs not flagged."


def scale_line(sweep: dict) -> str:
    scale = sweep.get("rm_reward_scale")
    if not scale:
        return ""
    return (
        f"Reward-model scale (std of its scores on SFT samples): {scale:.3g}; β/scale per run: "
        + ", ".join(f"{r['beta'] / scale:.3g}" for r in sweep["runs"])
        + " (the same β means a different pull under a differently scaled RM)."
    )


def hacking_lines(sweep: dict) -> list[str]:
    return [f"β={r['beta']:g}: {reason}" for r in sweep["runs"] for reason in r.get("hacking_reasons") or []]


def sweep_html(sweep: dict) -> str:
    from tether.instruments.plots import frontier_image

    esc = html.escape
    classes = ["fail" if r.get("reward_hacking") else "pass" for r in sweep["runs"]]
    links = "".join(
        f"<li><a href='{esc(r['dir'])}/report.html'>β = {r['beta']:g}</a></li>" for r in sweep["runs"]
    )
    parts = [
        f"<p><b>{esc(recommendation(sweep))}</b> Stage 3: {esc(sweep['algo'])} "
        f"({esc(sweep['beta_key'])}).</p>",
        "<h2>Runs (achieved KL beside every β)</h2>",
        html_table(RUN_HEADERS, run_rows(sweep), classes),
        f"<p>{esc(scale_line(sweep))}</p>",
        "<h2>Frontier: reward against √KL (Gao et al. 2022)</h2>",
        frontier_image(sweep["runs"], sweep.get("best_of_n", [])),
    ]
    reasons = "".join(f"<li>{esc(line)}</li>" for line in hacking_lines(sweep))
    if reasons:
        parts.append(f"<h2>Reward hacking</h2><ul class='fail'>{reasons}</ul>")
    if sweep.get("best_of_n"):
        parts.append("<h2>Best-of-n from SFT against the same reward model</h2>")
        parts.append("<p>KL of best-of-n: log n − (n − 1)/n nats (Stiennon et al. 2020; Gao et al. 2022)</p>")
        parts.append(html_table(BON_HEADERS, bon_rows(sweep)))
    parts.append(f"<h2>Each run's report</h2><ul>{links}</ul>")
    return html_page(f"tether sweep: {sweep['algo']}", "\n".join(parts))


def sweep_markdown(sweep: dict) -> str:
    lines = [f"# tether sweep: {sweep['algo']} ({sweep['beta_key']})", "", recommendation(sweep), ""]
    lines += md_table(RUN_HEADERS, run_rows(sweep))
    if scale_line(sweep):
        lines += ["", scale_line(sweep)]
    reasons = hacking_lines(sweep)
    if reasons:
        lines += ["", "## Reward hacking", ""] + [f"- {line}" for line in reasons]
    if sweep.get("best_of_n"):
        lines += ["", "## Best-of-n from SFT (KL = log n − (n−1)/n)", ""]
        lines += md_table(BON_HEADERS, bon_rows(sweep))
    lines += ["", f"wall time {num(sweep.get('wall_seconds'), 1)} s"]
    return "\n".join(lines) + "\n"


def write_sweep_report(out: str | Path, sweep: dict) -> Path:
    """OUT/report.html and OUT/summary.md."""
    out = Path(out)
    write_text_atomic(out / "summary.md", sweep_markdown(sweep))
    return write_text_atomic(out / "report.html", sweep_html(sweep))
