"""The constitution loader: the shipped file loads; a malformed one fails in one line naming its line."""

import pytest

from tether.cai import load_constitution
from tether.errors import TetherError

GOOD = """\
name: t
template: "{prompt} (A) {first} (B) {second} {question}"
principles:
  - name: harmless
    critique: what is harmful?
    revision: remove it.
    comparison: Which is less harmful?
    lab_focus: {safety: 1.0}
lab_rater:
  temperature: 0.2
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_and_minimal_constitutions_load(tmp_path):
    con = load_constitution()
    assert [p.name for p in con.principles] == ["harmless", "helpful", "honest", "careful-and-kind"]
    assert all(p.critique and p.revision and p.comparison for p in con.principles)
    small = load_constitution(write(tmp_path, GOOD))
    assert small.principles[0].lab_focus == {"safety": 1.0}
    assert small.lab_rater.temperature == 0.2 and small.answers == ("A", "B")
    assert small.question(small.principles[0], "p", "x", "y") == "p (A) x (B) y Which is less harmful?"


@pytest.mark.parametrize(
    "old, new, line, words",
    [
        ("    comparison: Which is less harmful?\n", "", 4, "missing 'comparison'"),  # the mapping's line
        ("    revision: remove it.\n", "    revision: x\n    color: red\n", 7, "unknown key 'color'"),
        ("{safety: 1.0}", "{safty: 1.0}", 8, "unknown key 'safty'"),
        ("temperature: 0.2", "temperature: hot", 10, "finite number"),
        ("temperature: 0.2", "temperature: -1", 10, ">= 0"),
        (" {question}\"", "\"", 2, "{question}"),
        ("    critique: what is harmful?\n", "    critique: [a, b]\n", 5, "single value"),
        ("    critique: what is harmful?\n", "    critique: ''\n", 5, "non-empty string"),
        ("    revision: remove it.\n", "    revision: a: b\n", 6, "not valid YAML"),
    ],
)
def test_malformed_files_name_their_line(tmp_path, old, new, line, words):
    """Each edit breaks one node of GOOD; the error starts with FILE:LINE of that node (lines counted by hand
    in GOOD above, 1-based) and says what is wrong, on one line."""
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(TetherError) as e:
        load_constitution(path)
    message = str(e.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert words in message and "\n" not in message


def test_duplicate_principles_and_empty_lists_are_rejected(tmp_path):
    doubled = GOOD.replace("lab_rater:", GOOD[GOOD.index("  - name"):GOOD.index("lab_rater:")] + "lab_rater:")
    with pytest.raises(TetherError, match=r":9: duplicate principle name 'harmless'"):
        load_constitution(write(tmp_path, doubled))
    with pytest.raises(TetherError, match=r":3: principles must be a non-empty list"):
        empty = 'name: t\ntemplate: "{prompt}{first}{second}{question}"\nprinciples: []\n'
        load_constitution(write(tmp_path, empty))
    with pytest.raises(TetherError, match="cannot read"):
        load_constitution(tmp_path / "absent.yaml")
