"""Report plots as embedded PNG images (matplotlib on the Agg backend: no display, no files on disk).

    img = curve_images({"reward": ([1, 2, 3], [0.1, 0.4, 0.5])})   # '<img src="data:image/png;base64,...">'
"""

from __future__ import annotations

import base64
import html
import io
import math


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported anywhere: never needs a display
    import matplotlib.pyplot as plt

    return plt


def figure_img(fig, alt: str) -> str:
    """The figure as an <img> tag holding the PNG inline (a data URI), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _finite(xs, ys) -> tuple[list, list]:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if isinstance(y, int | float) and math.isfinite(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def curve_images(curves: dict[str, tuple[list, list]], x_label: str = "iteration") -> str:
    """One small line plot per named curve; curves with fewer than two finite points are left out."""
    plt = _pyplot()
    out = []
    for name, (xs, ys) in curves.items():
        xs, ys = _finite(xs, ys)
        if len(xs) < 2:
            continue
        fig, ax = plt.subplots(figsize=(4.2, 2.6))
        ax.plot(xs, ys, color="#1f6feb", linewidth=1.4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x_label, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        out.append(figure_img(fig, name))
    return "".join(out)


def frontier_image(runs: list[dict], best_of_n: list[dict], x_label: str = "√KL from base (√nats)") -> str:
    """Proxy and gold reward against √KL (Gao et al. 2022, "Scaling laws for reward model
    overoptimization", Fig. 1): the RL runs as points labelled by β, best-of-n as the reference curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for key, colour, label in (("proxy_reward", "#1f6feb", "proxy (RM)"), ("gold_reward", "#cf222e", "gold")):
        bon = [(math.sqrt(max(b["kl"], 0.0)), b[key]) for b in best_of_n if b.get(key) is not None]
        if bon:
            ax.plot(*zip(*bon, strict=True), "--", color=colour, alpha=0.6, label=f"best-of-n {label}")
        pts = sorted(
            (math.sqrt(max(r["kl_from_base"], 0.0)), r[key], r["beta"], r.get("reward_hacking"))
            for r in runs
            if r.get(key) is not None and r.get("kl_from_base") is not None
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=colour, label=f"RL {label}")
            for x, y, beta, flagged in pts:
                ax.annotate(f"β={beta:g}" + (" ✗" if flagged else ""), (x, y), fontsize=7,
                            textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean reward on held-out prompts")
    ax.set_title("reward against √KL (✗: flagged as reward hacking)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_img(fig, "frontier: proxy and gold reward against sqrt KL")
