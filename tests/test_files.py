"""Atomic result files: the new content replaces the old in one rename, and no temporary file stays."""

import json
import os
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
    """If writing the new text fails midway, the old file is still whole (the rename never happened) and
    the temporary file is gone."""
    path = tmp_path / "summary.json"
    write_json(path, {"done": True})
    with mock.patch("os.fsync", side_effect=OSError("disk full")), pytest.raises(OSError):
        write_text_atomic(path, "{ half")
    assert json.loads(path.read_text()) == {"done": True}
    # a text that cannot be encoded fails inside the write itself, after the temporary file was opened
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "{ half \ud800")
    assert json.loads(path.read_text()) == {"done": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_line_ends_are_written_as_given_and_the_rename_is_synced(tmp_path, monkeypatch):
    """"a\nb\n" is 4 bytes on every platform; the directory is fsynced after the rename (the last fsync
    is on the directory's inode, once the new file is in place)."""
    synced = []
    real = os.fsync

    def record(fd):
        synced.append((os.fstat(fd).st_ino, (tmp_path / "x.txt").exists()))
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    write_text_atomic(tmp_path / "x.txt", "a\nb\n")
    assert (tmp_path / "x.txt").read_bytes() == b"a\nb\n"
    assert synced[-1] == (tmp_path.stat().st_ino, True)
