"""`rollout.engine`: hf always runs; vllm only with the vllm package and a CUDA GPU, else one clear line at
start-up (before anything is loaded or written). The vLLM sampling path itself is checked against a stand-in
of the engine, and on the real one where it can run, in tests/test_rollout_vllm.py."""

import importlib.util

import pytest
import torch
from ppo_helpers import ppo_setup

from tether.cli import main as tether_main
from tether.errors import TetherError
from tether.rollout_vllm import check_engine


def pretend(monkeypatch, vllm: bool, gpu: bool) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if vllm else None) if name == "vllm" else real(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)


def test_hf_is_always_available():
    check_engine("hf")


@pytest.mark.parametrize(("vllm", "gpu", "problem"), [
    (False, True, "needs the vllm package"),
    (False, False, "needs the vllm package"),
    (True, False, "needs a CUDA GPU"),
])
def test_vllm_without_its_package_or_a_gpu_is_refused(monkeypatch, vllm, gpu, problem):
    pretend(monkeypatch, vllm, gpu)
    with pytest.raises(TetherError, match=problem):
        check_engine("vllm")


def test_the_missing_package_error_names_the_extra(monkeypatch):
    """vLLM is an optional extra of tether (pyproject.toml), so the line says how to install it."""
    pretend(monkeypatch, vllm=False, gpu=True)
    with pytest.raises(TetherError, match=r"pip install 'tether\[vllm\]'"):
        check_engine("vllm")


def test_vllm_with_both_is_accepted(monkeypatch):
    pretend(monkeypatch, vllm=True, gpu=True)
    check_engine("vllm")


def test_an_unknown_engine_is_refused():
    with pytest.raises(TetherError, match="'hf' or 'vllm'"):
        check_engine("sglang")


@pytest.mark.parametrize("stage", ["ppo", "grpo", "rloo"])
def test_the_command_stops_at_start_up_with_one_line(tmp_path, capsys, stage):
    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM can run here")
    paths = ppo_setup(tmp_path)
    capsys.readouterr()  # the set-up's own output
    out = tmp_path / "run"
    argv = [stage, "--out", str(out), f"policy={paths['policy']}", f"data.train={paths['train']}",
            "reward.source=ppo_helpers:count_a", "rollout.engine=vllm"]
    assert tether_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rollout.engine=vllm needs" in err[0], err
    assert not out.exists()
