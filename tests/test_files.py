"""Atomic result files: the new content replaces the old in one rename, and no temporary file stays."""

import json
from unittest import mock

import pytest

from tether.files import write_json, write_text_atomic


def test_write_json_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1})
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    """If writing the new text fails midway, the old file is still whole (the rename never happened)."""
    path = tmp_path / "summary.json"
    write_json(path, {"done": True})
    with mock.patch("os.fsync", side_effect=OSError("disk full")), pytest.raises(OSError):
        write_text_atomic(path, "{ half")
    assert json.loads(path.read_text()) == {"done": True}
