"""summary.md: the report as Markdown for the terminal (`cat RUN/summary.md`, or any Markdown viewer)."""

from __future__ import annotations

from tether.instruments.report_rows import instrument_rows, num, reward_rows, sample_rows, verdict_reasons


def md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]


def summary_markdown(summary: dict, title: str, samples: list[dict] | None = None) -> str:
    """Instruments with verdicts, the reward-hacking reasons, mean rewards and a few samples per family."""
    lines = [f"# {title}", "", "## Instruments", ""]
    lines += md_table(["instrument", "value", "detail", "verdict"], instrument_rows(summary))
    reasons = verdict_reasons(summary)
    if reasons:
        lines += ["", "## Reward hacking", ""] + [f"- {r}" for r in reasons]
    rewards = reward_rows(summary)
    if rewards:
        lines += ["", "## Mean reward on held-out prompts", ""]
        lines += md_table(["", "policy", "base"], rewards)
    lines += ["", f"beta {num(summary.get('beta'), 4)}, wall time {num(summary.get('wall_seconds'), 1)} s"]
    gens = sample_rows(samples, per_group=1)
    if gens:
        lines += ["", "## Sample generations", ""]
        lines += md_table(["family", "prompt", "base", "policy"], gens)
    return "\n".join(lines) + "\n"
