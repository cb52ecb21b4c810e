"""What every figure-writing script shares (benchmarks/readme_figures.py and the recipes' run.py): the
README's `<!-- figures:NAME -->` blocks, number formats, and the stamp (commit, date, machine, load average,
wall time) stored beside the runs behind a block.

    stamp = measured(out / "stamps" / "rm.json", make, smoke=False)   # runs make() once, then reuses
    text = replace_blocks(readme, {"hh-rm": table + "\\n\\n" + stamp_line(stamp, "recipes/hh-rlhf/run.py")})
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from tether.errors import TetherError

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- (/?)figures:([\w-]+) -->")
WIDTH = 110  # the README's line length for prose
# Every block name a script writes, so that a misspelt marker is named rather than silently skipped: the lab
# figures of benchmarks/readme_figures.py, then the recipes' (recipes/*/run.py), then the benchmarks'.
LAB_BLOCKS = ("default", "betas", "algo", "verify", "probe", "sweep")
RECIPE_BLOCKS = ("hh-rm", "hh-policies", "smollm2-probes", "rlvr", "sentiment")
BENCH_BLOCKS = ("vs-trl",)  # benchmarks/vs_trl.py
BLOCKS = LAB_BLOCKS + RECIPE_BLOCKS + BENCH_BLOCKS


# ------------------------------------------------------------------------------------------------- numbers


def num(x, digits: int = 3) -> str:
    """x to `digits` decimals with a typographic minus (Markdown prose and tables); None → '-'."""
    if x is None:
        return "-"
    return f"{x:.{digits}f}".replace("-", "−")


def wrap(text: str) -> str:
    """A prose paragraph in lines of at most WIDTH characters, as the README is written."""
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def md_rule(columns: int) -> str:
    return "|" + "---|" * columns


# --------------------------------------------------------------------------------------------- markers


def _markers(text: str, path: str) -> dict[str, tuple[int, int]]:
    """{name: (end of the opening marker, start of the closing one)}; every marker paired, in order, each
    name once and a known block (BLOCKS)."""
    found: dict[str, tuple[int, int]] = {}
    open_name, open_end = None, 0
    for m in MARKER.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        closing, name = m.group(1) == "/", m.group(2)
        if name not in BLOCKS:
            raise TetherError(f"{path}:{line}: unknown block {m.group(0)} (blocks: {', '.join(BLOCKS)})")
        if not closing:
            if open_name is not None:
                raise TetherError(f"{path}:{line}: {m.group(0)} inside the unclosed block {open_name!r}")
            if name in found:
                raise TetherError(f"{path}:{line}: a second {m.group(0)}")
            open_name, open_end = name, m.end()
        else:
            if open_name is None:
                raise TetherError(f"{path}:{line}: {m.group(0)} without its opening <!-- figures:{name} -->")
            if open_name != name:
                raise TetherError(f"{path}:{line}: {m.group(0)} while the block {open_name!r} is open")
            found[name], open_name = (open_end, m.start()), None
    if open_name is not None:
        close = f"<!-- /figures:{open_name} -->"
        raise TetherError(f"{path}: <!-- figures:{open_name} --> is never closed by {close}")
    return found


def check_markers(text: str, names, path: str) -> None:
    """Fail with one line unless `text` has a well-formed block for each of `names`."""
    found = _markers(text, path)
    missing = [n for n in names if n not in found]
    if missing:
        name = missing[0]
        raise TetherError(f"{path}: no block <!-- figures:{name} --> ... <!-- /figures:{name} -->")


def replace_blocks(text: str, blocks: dict[str, str], path: str = "README.md") -> str:
    """`text` with the content between each block's markers replaced by "\\n" + block + "\\n"."""
    check_markers(text, blocks, path)
    found = _markers(text, path)
    out, at = [], 0
    for name, (start, end) in sorted(found.items(), key=lambda item: item[1][0]):
        if name in blocks:
            out += [text[at:start], "\n", blocks[name].strip("\n"), "\n"]
            at = end
    return "".join(out) + text[at:]


def read_for_write(path: str, names) -> str:
    """The text of the file that --write will change, its markers checked first (before hours of runs)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TetherError(f"cannot read {path}: {e.strerror}") from None
    check_markers(text, names, path)
    return text


def write_blocks(path: str | Path, blocks: dict[str, str]) -> None:
    """Replace each block of `blocks` between its markers in the file at `path` (read_for_write's checks
    first), leaving the rest of the file as it was."""
    text = read_for_write(str(path), blocks)
    Path(path).write_text(replace_blocks(text, blocks, str(path)), encoding="utf-8")


def emit_blocks(blocks: dict[str, str], write: str | None, prog: str) -> None:
    """A figure script's output: the blocks written into the file `write` (write_blocks), or printed, each
    between its markers, when there is none."""
    if write:
        write_blocks(write, blocks)
        print(f"{prog}: wrote {', '.join(blocks)} into {write}", file=sys.stderr)
    else:
        for name, block in blocks.items():
            print(f"<!-- figures:{name} -->\n{block}\n<!-- /figures:{name} -->\n")


# ----------------------------------------------------------------------------------------------- stamps


def machine() -> tuple[int, str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return os.cpu_count() or 0, cpu


def commit() -> str:
    """`git rev-parse --short HEAD`, +dirty with uncommitted changes to tracked files."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def measured(path: Path, make: Callable[[], object], smoke: bool) -> dict:
    """Run `make()` unless `path` (the stamp) exists, then store and return the stamp of when it ran:
    {commit, date, cores, cpu, load_start, load_end, seconds, smoke}. A stamp of the other kind (smoke or
    full) in the same folder is refused: the two must not mix."""
    if path.is_file():
        stamp = json.loads(path.read_text())
        if stamp.get("smoke", False) != smoke:
            kind = "--smoke" if stamp.get("smoke") else "full"
            raise TetherError(f"{path.parent.parent} holds {kind} runs; choose another --out")
        return stamp
    load_start, start, when = os.getloadavg()[0], time.perf_counter(), time.gmtime()
    with contextlib.redirect_stdout(sys.stderr):  # the runs' progress lines: stdout holds the blocks
        make()
    cores, cpu = machine()
    stamp = {"commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", when), "cores": cores,
             "cpu": cpu, "load_start": load_start, "load_end": os.getloadavg()[0],
             "seconds": time.perf_counter() - start, "smoke": smoke}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def stamp_line(stamp: dict, script: str = "benchmarks/readme_figures.py") -> str:
    """The block's provenance: commit, date, machine, load average before and after, wall time."""
    smoke = " SMOKE SETTINGS (tiny lab and stages): not the README's figures." if stamp.get("smoke") else ""
    return wrap(
        f"_Generated by `{script}` at commit {stamp['commit']} on {stamp['date']}: "
        f"{stamp['cores']} cores ({stamp['cpu']}), load average {stamp['load_start']:.2f} at the start and "
        f"{stamp['load_end']:.2f} at the end, {stamp['seconds']:.0f} s.{smoke}_"
    )
