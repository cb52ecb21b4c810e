"""Fault injection, checkpoints (issue 21, items 1 and 8): damaged checkpoints, a model directory without its
config, DPO's cached reference log-probs, disk-full and read-only saves, kills during a save.

Every run is a tiny SFT run through the command (`tether sft`, in this process): 6 optimizer steps of 8
examples from 16, a checkpoint every 2 steps and the last 2 kept, so a finished run holds checkpoints/step-4
and step-6.
On CPU in float32 a run resumed from any checkpoint ends with weights bit-identical to the uninterrupted
run's; that is the independent reference every recovery below is compared with.

Faults are injected where tether's writes leave Python: `open` (trainer state, RNG states, the marker,
tokenizer files), transformers' safetensors writer (the weights) and `os.mkdir` (the temporary directory).
A read-only directory is simulated with EROFS / EACCES from those points, because the tests may run as root,
whom chmod does not stop.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from fault_helpers import refused, run_tether
from group_helpers import grpo_config
from plumbing_helpers import (
    WORDS,
    sft_overrides,
    sft_setup,
    tiny_model,
    tiny_tokenizer,
    write_jsonl,
    write_model_dir,
)
from ppo_helpers import ppo_setup
from safetensors.torch import load_file

from tether.config import DPOConfig, load_config
from tether.errors import TetherError
from tether.model_files import load_causal_lm
from tether.trainers import checkpoint as ckpt
from tether.trainers import dpo
from tether.trainers.base import load_module
from tether.trainers.grpo import train_grpo
from tether.trainers.metrics import read_metrics

STEPS = {"max_steps": 6, "save_every": 2, "keep_last": 2, "batch_size": 8, "micro_batch_size": 8}


# ------------------------------------------------------------------------------------------------ helpers


def sft(paths, out: Path, *more: str, **train) -> list[str]:
    return ["sft", "--out", str(out), *sft_overrides(paths, **{**STEPS, **train}), *more]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run) if r["kind"] == "train"]


def steps_of(run: Path) -> list[int]:
    return [s for s, _ in ckpt.list_checkpoints(run / "checkpoints")]


def unfinished_copy(ref: Path, dest: Path) -> Path:
    """A copy of a finished run as if it had been killed after its last checkpoint (no model, no summary)."""
    shutil.copytree(ref, dest)
    shutil.rmtree(dest / "model")
    (dest / "summary.json").unlink()
    return dest


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_safetensors_bit(path: Path) -> None:
    """Flip one bit in the middle of the tensor data (past the 8-byte length and the JSON header), so the
    header still parses and the file loads, with one weight changed."""
    data = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", data[:8])[0]
    data[start + (len(data) - start) // 2] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGE = {
    "no_config": lambda d: (d / "config.json").unlink(),
    "no_weights": lambda d: (d / "model.safetensors").unlink(),
    "truncated_weights": lambda d: truncate(d / "model.safetensors"),
    "truncated_state": lambda d: truncate(d / ckpt.STATE_FILE),
    "truncated_rng": lambda d: truncate(d / "rng-0.pt"),
    "bit_flip": lambda d: flip_safetensors_bit(d / "model.safetensors"),
}


def warnings_about(caplog, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and word in r.getMessage()]


class _FullFile:
    """A file open for writing on a full (or read-only) disk: the open succeeded, every write fails."""

    def __init__(self, f, err: int):
        self._f, self._err = f, err

    def __getattr__(self, name):
        return getattr(self._f, name)

    def write(self, data):
        raise OSError(self._err, os.strerror(self._err), self._f.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fail_writes(monkeypatch, match, err: int = errno.ENOSPC) -> None:
    """Files opened for writing through Python (`open`, `Path.open`) whose path satisfies `match` fail with
    OSError(err) at their first write."""
    real = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and isinstance(file, str | os.PathLike) and match(Path(file)):
            return _FullFile(f, err)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def fail_weights(monkeypatch, match, err: int = errno.ENOSPC) -> None:
    """transformers' safetensors writer fails as it does on a full disk: half a file, then SafetensorError
    naming the OS error."""
    from safetensors import SafetensorError

    real = transformers.modeling_utils.safe_save_file

    def fake(tensors, filename, *args, **kwargs):
        if match(Path(filename)):
            Path(filename).write_bytes(b"\0" * 100)
            raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(err)} (os error {err})")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fake)


def fail_mkdir(monkeypatch, match, err: int = errno.ENOSPC) -> None:
    real = os.mkdir

    def fake(path, *args, **kwargs):
        if match(Path(path)):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", fake)


def in_save_of(step: int, name: str | None = None):
    """A path predicate: the file `name` (any file when None) of step `step`'s temporary checkpoint."""
    return lambda p: any(part == f".tmp-step-{step}" for part in p.parts) and (name is None or p.name == name)


class Killed(BaseException):
    """Stands for SIGKILL: nothing tether catches, no cleanup beyond what a real kill would leave."""


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return sft_setup(tmp_path_factory.mktemp("data"), n_train=16, n_test=4)


@pytest.fixture(scope="module")
def reference(paths, tmp_path_factory):
    """The uninterrupted run: 6 steps, checkpoints step-4 and step-6 kept."""
    out = tmp_path_factory.mktemp("ref") / "run"
    code, _, err = run_tether(sft(paths, out), _NoCapture())
    assert code == 0, err
    assert steps_of(out) == [4, 6]
    return out


class _NoCapture:
    """`run_tether` wants capsys; a module fixture has none, and nothing here needs the output."""

    def readouterr(self):
        return "", ""


@pytest.fixture(scope="module")
def from_intact_step4(reference, tmp_path_factory):
    """The reference resumed from its intact step-4 (--resume-from): what a fallback to step-4 must equal."""
    out = unfinished_copy(reference, tmp_path_factory.mktemp("intact") / "run")
    code, _, err = run_tether(["sft", "--out", str(out), "--resume-from", str(out / "checkpoints/step-4")],
                              _NoCapture())
    assert code == 0, err
    return out


# ------------------------------------------------------------------------------------------------ item 1


def test_a_model_directory_without_config_json_is_an_error_not_a_default_model(tmp_path, monkeypatch):
    """Before: `type(module).from_pretrained(dir)` built a default LlamaConfig (7 B parameters) when
    config.json was missing. Now the loader refuses the directory first; building any model is a failure."""
    model = tiny_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built from a directory without config.json")

    monkeypatch.setattr(type(model), "from_pretrained", no_model)
    with pytest.raises(TetherError, match=r"config\.json"):
        load_module(model, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(
    damage, reference, from_intact_step4, tmp_path, capsys, caplog
):
    """step-6 damaged → `--resume` says so in one warning and continues from step-4; the final weights are
    bit-identical to the uninterrupted run's and to a run resumed from the intact step-4, the metrics hold
    steps 1..6 once each, the damaged step-6 is moved to damaged-step-6 and replaced by the one the resumed
    run writes."""
    run = unfinished_copy(reference, tmp_path / "run")
    DAMAGE[damage](run / "checkpoints" / "step-6")
    caplog.set_level(logging.WARNING)
    code, _, err = run_tether(["sft", "--out", str(run), "--resume"], capsys)
    assert code == 0, err
    said = warnings_about(caplog, "step-6")
    assert len(said) == 1 and "step-4" in said[0] and "\n" not in said[0], said
    assert same_weights(run, reference) and same_weights(run, from_intact_step4)
    assert train_steps(run) == [1, 2, 3, 4, 5, 6]
    assert steps_of(run) == [4, 6] and ckpt.verify(run / "checkpoints" / "step-6") is None
    assert (run / "checkpoints" / "damaged-step-6").is_dir()  # kept for inspection, not deleted


def test_no_checkpoint_that_verifies_is_one_line_and_nothing_is_touched(reference, tmp_path, capsys):
    run = unfinished_copy(reference, tmp_path / "run")
    truncate(run / "checkpoints" / "step-6" / "model.safetensors")
    flip_safetensors_bit(run / "checkpoints" / "step-4" / "model.safetensors")
    refused(capsys, ["sft", "--out", str(run), "--resume"], r"no checkpoint .*verifies.*step-6.*step-4",
            keep=[run])


def test_resume_from_a_named_damaged_checkpoint_is_refused_without_fallback(reference, tmp_path, capsys):
    """--resume-from names one checkpoint: a bit flip in it is an error naming the file, not a fallback."""
    run = unfinished_copy(reference, tmp_path / "run")
    flip_safetensors_bit(run / "checkpoints" / "step-6" / "model.safetensors")
    refused(capsys, ["sft", "--out", str(run), "--resume-from", str(run / "checkpoints" / "step-6")],
            r"step-6.*model\.safetensors", keep=[run])


def test_the_marker_records_every_file_with_its_size_and_sha256(reference):
    """The manifest in COMPLETE, checked against hashlib run here over every other file of the checkpoint."""
    step = reference / "checkpoints" / "step-6"
    manifest = json.loads((step / ckpt.MARKER).read_text())["files"]
    files = {p.relative_to(step).as_posix(): p for p in step.rglob("*") if p.is_file()}
    del files[ckpt.MARKER]
    assert set(manifest) == set(files) and {"config.json", "model.safetensors", ckpt.STATE_FILE} <= set(files)
    for rel, p in files.items():
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        assert manifest[rel] == {"bytes": p.stat().st_size, "sha256": digest}


def _as_old(step: Path) -> None:
    """What tether wrote before manifests: the marker holds `ok`."""
    (step / ckpt.MARKER).write_text("ok\n")


def test_an_old_checkpoint_without_a_manifest_still_loads_and_says_it_is_unverified(
    reference, tmp_path, capsys, caplog
):
    run = unfinished_copy(reference, tmp_path / "run")
    for s in (4, 6):
        _as_old(run / "checkpoints" / f"step-{s}")
    caplog.set_level(logging.WARNING)
    code, _, err = run_tether(["sft", "--out", str(run), "--resume"], capsys)
    assert code == 0, err
    said = warnings_about(caplog, "step-6")
    assert len(said) == 1 and "unverified" in said[0], said
    assert same_weights(run, reference) and train_steps(run) == [1, 2, 3, 4, 5, 6]


def test_an_old_checkpoint_that_does_not_load_falls_back_to_the_one_before(
    reference, tmp_path, capsys, caplog
):
    run = unfinished_copy(reference, tmp_path / "run")
    for s in (4, 6):
        _as_old(run / "checkpoints" / f"step-{s}")
    truncate(run / "checkpoints" / "step-6" / ckpt.STATE_FILE)
    caplog.set_level(logging.WARNING)
    code, _, err = run_tether(["sft", "--out", str(run), "--resume"], capsys)
    assert code == 0, err
    assert any("step-4" in m for m in warnings_about(caplog, "step-6"))
    assert same_weights(run, reference) and train_steps(run) == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------------ DPO cache


@pytest.fixture(scope="module")
def dpo_parts(tmp_path_factory):
    """A tiny policy, 8 preference pairs over the plumbing words, the DPO config and the reference model."""
    d = tmp_path_factory.mktemp("dpo")
    rows = [{"prompt": " ".join(WORDS[i : i + 2]), "chosen": " ".join(WORDS[i + 2 : i + 4]),
             "rejected": " ".join(WORDS[i + 4 : i + 6])} for i in range(6)]
    train = write_jsonl(d / "pairs.jsonl", rows)
    policy = write_model_dir(d / "policy")
    cfg = load_config(DPOConfig, None, [f"policy={policy}", f"data.train={train}", "data.max_length=16",
                                        "train.batch_size=6", "train.micro_batch_size=3",
                                        "train.progress=false"])
    return cfg, tiny_tokenizer(), load_causal_lm(policy).eval()


def _attach(cfg, tokenizer, reference, run: Path) -> list[tuple[float, float]]:
    pairs = dpo.load_dpo_pairs(cfg.data.train, tokenizer, cfg.data)
    dpo.attach_reference(cfg, run, reference, {"train": pairs}, 0, "cpu")
    return [p.ref for p in pairs]


def _flip_tensor_bit(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit inside `tensor`'s stored bytes (torch stores them uncompressed in its zip)."""
    data, raw = bytearray(path.read_bytes()), tensor.numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0
    data[at + len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "bit_flip"])
def test_a_damaged_dpo_reference_cache_is_computed_again(damage, dpo_parts, tmp_path, caplog):
    """RUN/ref_logprobs.pt is a cache: damaged, it is recomputed (with a warning) to exactly the values of
    the first computation, never read as it is."""
    cfg, tokenizer, reference = dpo_parts
    first = _attach(cfg, tokenizer, reference, tmp_path)
    cache = tmp_path / dpo.REF_CACHE
    if damage == "truncated":
        truncate(cache)
    else:
        _flip_tensor_bit(cache, torch.load(cache, weights_only=True)["train"])
    caplog.set_level(logging.WARNING)
    assert _attach(cfg, tokenizer, reference, tmp_path) == first
    assert len(warnings_about(caplog, dpo.REF_CACHE)) == 1
    assert torch.load(cache, weights_only=True)["train"].tolist() == [list(r) for r in first]


def test_a_dpo_reference_cache_that_cannot_be_written_is_one_line_and_leaves_nothing(
    dpo_parts, tmp_path, capsys, monkeypatch
):
    cfg, _, _ = dpo_parts
    run = tmp_path / "run"
    argv = ["dpo", "--out", str(run), f"policy={cfg.policy}", f"data.train={cfg.data.train}",
            "data.max_length=16", "train.batch_size=6", "train.micro_batch_size=3", "train.max_steps=1",
            "train.progress=false"]
    fail_writes(monkeypatch, lambda p: "ref_logprobs" in p.name)
    refused(capsys, argv, r"ref_logprobs\.pt.*No space left on device", keep=[Path(cfg.policy)])
    assert not run.exists() or not any(run.iterdir())
    monkeypatch.undo()
    assert run_tether(argv, capsys)[0] == 0


# ------------------------------------------------------------------------------------------------ item 8


FAILED_SAVES = {
    "mkdir_readonly": (fail_mkdir, lambda p: p.name == ".tmp-step-4", errno.EROFS, "Read-only file system"),
    "mkdir_denied": (fail_mkdir, lambda p: p.name == ".tmp-step-4", errno.EACCES, "Permission denied"),
    "weights_full": (fail_weights, in_save_of(4), errno.ENOSPC, "No space left on device"),
    "state_full": (fail_writes, in_save_of(4, ckpt.STATE_FILE), errno.ENOSPC, "No space left on device"),
    "rng_full": (fail_writes, in_save_of(4, "rng-0.pt"), errno.ENOSPC, "No space left on device"),
    "marker_full": (fail_writes, in_save_of(4, ckpt.MARKER), errno.ENOSPC, "No space left on device"),
}


@pytest.mark.parametrize("case", sorted(FAILED_SAVES))
def test_a_save_that_fails_ends_with_one_line_and_resume_then_finishes(
    case, paths, reference, tmp_path, capsys, monkeypatch
):
    """The save of step-4 fails: one line naming the checkpoint and the OS error, step-2 intact (its files
    verify), no step-4 and no temporary directory; `--resume` then ends bit-identical to the reference."""
    inject, match, err, text = FAILED_SAVES[case]
    run = tmp_path / "run"
    inject(monkeypatch, match, err)
    refused(capsys, sft(paths, run), rf"step-4.*{text}")
    monkeypatch.undo()
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2"]
    assert ckpt.verify(checkpoints / "step-2") is None
    assert run_tether(["sft", "--out", str(run), "--resume"], capsys)[0] == 0
    assert same_weights(run, reference) and train_steps(run) == [1, 2, 3, 4, 5, 6]


def _disk_holds(monkeypatch, n: int) -> None:
    """A disk with room for `n` checkpoints: making a temporary checkpoint directory while `n` checkpoint
    directories (complete or temporary) are there fails with ENOSPC."""
    real = os.mkdir

    def fake(path, *args, **kwargs):
        p = Path(path)
        if p.name.startswith(".tmp-step-"):
            held = [q for q in p.parent.iterdir() if q.name.startswith(("step-", ".tmp-step-"))]
            if len(held) >= n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(p))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", fake)


def test_resume_after_disk_full_prunes_before_saving(paths, reference, tmp_path, capsys, monkeypatch):
    """The issue's case: the disk fills while step-6 is saved (keep_last 2). The save fails with one line;
    with room for two checkpoints, `--resume` succeeds because the oldest checkpoint is pruned before each
    save (before the fix it was pruned after, so the third directory never fit), and the run ends
    bit-identical to the reference."""
    run = tmp_path / "run"
    fail_mkdir(monkeypatch, lambda p: p.name == ".tmp-step-6")
    refused(capsys, sft(paths, run), r"step-6.*No space left on device")
    monkeypatch.undo()
    assert steps_of(run) == [4]  # step-2 was pruned before the save, as keep_last 2 allows
    _disk_holds(monkeypatch, 2)
    assert run_tether(["sft", "--out", str(run), "--resume"], capsys)[0] == 0
    assert same_weights(run, reference) and steps_of(run) == [4, 6]


def test_pruning_before_a_save_never_removes_the_only_good_checkpoint(paths, tmp_path, capsys, monkeypatch):
    """keep_last 1 on a disk with room for one: step-4 cannot be written without first deleting step-2, the
    only checkpoint, so step-2 stays and the save fails with one line."""
    run = tmp_path / "run"
    _disk_holds(monkeypatch, 1)
    refused(capsys, sft(paths, run, keep_last=1), r"step-4.*No space left on device")
    assert steps_of(run) == [2] and ckpt.verify(run / "checkpoints" / "step-2") is None


def test_a_kill_during_the_first_checkpoint_leaves_a_run_that_resume_accepts(
    paths, reference, tmp_path, capsys, monkeypatch
):
    """Killed while step-2's trainer state is written: no checkpoint looks complete, and `--resume` starts
    from step 0 (saying so) instead of refusing both ways; it ends bit-identical to the reference."""
    run = tmp_path / "run"
    real = torch.save

    def killed_in_first_save(obj, f, *args, **kwargs):
        name = Path(f if isinstance(f, str | os.PathLike) else f.name)
        if name.name == ckpt.STATE_FILE and name.parent.name == ".tmp-step-2":
            raise Killed
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", killed_in_first_save)
    with pytest.raises(Killed):
        run_tether(sft(paths, run), capsys)
    monkeypatch.undo()
    assert ckpt.list_checkpoints(run / "checkpoints") == [] and (run / "checkpoints" / ".tmp-step-2").is_dir()
    code, _, err = run_tether(["sft", "--out", str(run), "--resume"], capsys)
    assert code == 0, err
    assert same_weights(run, reference) and train_steps(run) == [1, 2, 3, 4, 5, 6]


def test_an_rl_run_killed_during_its_first_checkpoint_resumes_from_iteration_0(tmp_path, monkeypatch):
    """The same for the RL trainers' own loop (GRPO, 4 iterations, a checkpoint every 2): killed inside the
    first save, `resume=True` starts again from iteration 0 and ends with the uninterrupted run's weights."""
    paths = ppo_setup(tmp_path / "data")
    cfg = grpo_config(paths, save_every=2)
    uninterrupted = train_grpo(cfg, tmp_path / "uninterrupted")
    run, real = tmp_path / "run", torch.save

    def killed_in_first_save(obj, f, *args, **kwargs):
        name = Path(f if isinstance(f, str | os.PathLike) else f.name)
        if name.name == ckpt.STATE_FILE and name.parent.name.startswith(".tmp-step-"):
            raise Killed
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", killed_in_first_save)
    with pytest.raises(Killed):
        train_grpo(cfg, run)
    monkeypatch.undo()
    assert ckpt.list_checkpoints(run / "checkpoints") == []
    train_grpo(cfg, run, resume=True)
    wa, wb = weights(run), weights(uninterrupted)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["iteration"] for r in read_metrics(run) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_a_kill_between_the_renames_of_a_replaced_checkpoint_keeps_it(reference, tmp_path):
    """Saving a step that already has a checkpoint moves the old one to .old-step-N, then renames the new one
    in. Killed between the two renames, the next start must put the old one back, not delete it."""
    run = unfinished_copy(reference, tmp_path / "run")
    checkpoints = run / "checkpoints"
    os.replace(checkpoints / "step-6", checkpoints / ".old-step-6")
    ckpt.clean_partial(checkpoints)
    assert steps_of(run) == [4, 6] and ckpt.verify(checkpoints / "step-6") is None


def test_a_final_model_that_cannot_be_written_is_one_line_and_resume_finishes(
    paths, reference, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    fail_weights(monkeypatch, lambda p: p.parent.name == ".tmp-model")
    refused(capsys, sft(paths, run), r"model.*No space left on device")
    monkeypatch.undo()
    assert not (run / ".tmp-model").exists() and not (run / "model").exists() and steps_of(run) == [4, 6]
    assert run_tether(["sft", "--out", str(run), "--resume"], capsys)[0] == 0
    assert same_weights(run, reference)


def test_a_metrics_line_the_disk_refuses_is_one_line(paths, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    fail_writes(monkeypatch, lambda p: p.name == "metrics.jsonl")
    refused(capsys, sft(paths, run), r"No space left on device.*metrics\.jsonl")


def test_resume_in_a_read_only_run_directory_is_one_line_and_changes_nothing(
    reference, tmp_path, capsys, monkeypatch
):
    run = unfinished_copy(reference, tmp_path / "run")
    inside = lambda p: run in p.parents  # noqa: E731
    fail_writes(monkeypatch, inside, errno.EROFS)
    fail_mkdir(monkeypatch, inside, errno.EROFS)
    refused(capsys, ["sft", "--out", str(run), "--resume"], r"Read-only file system", keep=[run])
