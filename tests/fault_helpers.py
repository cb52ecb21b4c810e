"""The fault-injection suite's one check (tests/test_faults_*.py): a tether command run in-process on bad
input must exit non-zero with one line on stderr that names the problem, and leave every file that was
there before byte for byte as it was.

    refused(capsys, ["dpo", "--out", str(run)], r"train\\.lr", keep=[tmp_path])
"""

from __future__ import annotations

import re
from pathlib import Path

from tether.cli import main


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under `roots` (a file counts as itself) with its bytes."""
    out = {}
    for root in map(Path, roots):
        if root.is_file():
            out[root] = root.read_bytes()
        elif root.is_dir():
            out.update({p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    return out


def run_tether(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `tether ARGV` run in this process (argparse's exits included)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, argv: list[str], match: str, keep: list[Path] = (), code: int = 2) -> str:
    """Run `tether ARGV`; assert exit `code`, exactly one stderr line matching the regex `match`, and every
    file under `keep` unchanged (none removed, none altered). Returns the line."""
    before = snapshot(*keep)
    got, _, err = run_tether(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, f"exit {got}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert re.search(match, lines[0]), f"{lines[0]!r} does not match {match!r}"
    after = snapshot(*keep)
    assert set(before) <= set(after), f"removed: {sorted(map(str, set(before) - set(after)))}"
    changed = [str(p) for p in before if before[p] != after[p]]
    assert not changed, f"changed: {changed}"
    return lines[0]
