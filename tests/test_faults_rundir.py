"""Fault injection, run directories (issue 21, items 2-4 and 8's failed start): every command that writes to
`--out` refuses a directory it did not write, never deletes a file it did not write, takes an exclusive lock,
and a start that failed leaves a directory that a fresh run and `--resume` both accept.

Each refusal is `refused(...)`: exit code 2, one stderr line naming the problem, every file that was there
byte for byte as it was; `unchanged(...)` adds that nothing was written into a directory that is not
tether's. Accepting paths stop at a "sentinel" (a function the command calls right after it claimed the
directory, patched to raise), so no model is trained where a claim is all that is tested.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fault_helpers import refused, run_tether
from plumbing_helpers import sft_overrides, sft_setup, write_jsonl, write_model_dir
from test_dpo import overrides as dpo_overrides
from test_dpo import reversal_pairs

from tether.errors import TetherError

ROOT = Path(__file__).resolve().parent.parent
MARKER, LOCK = ".tether-run.json", ".tether-lock"
FOREIGN = r"is not empty and was not written by tether"
SENTINEL = "sentinel: the command went past its run directory"


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def users_dir(d: Path, **files: str) -> Path:
    """A directory of the user's with these files (name -> text)."""
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {"notes.md": "my notes\n"}).items():
        (d / name).write_text(text)
    return d


def refused_untouched(capsys, argv, match, d: Path) -> str:
    """`refused`, and not a file added to the directory `d` either (no config.yaml, lock or marker)."""
    before = listing(d)
    line = refused(capsys, [str(a) for a in argv], match, keep=[d])
    assert listing(d) == before
    return line


def made_by(kind: str, d: Path) -> Path:
    """A directory that tether `kind` created (its marker), with one file in it."""
    from tether import rundir

    with rundir.claim(d, kind):
        (d / "written.txt").write_text(kind)
    return d


def sentinel(monkeypatch, target: str) -> None:
    def stop(*args, **kwargs):
        raise TetherError(SENTINEL)

    monkeypatch.setattr(target, stop)


@pytest.fixture(scope="module")
def dpo_paths(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dpo-data")
    return {
        "policy": write_model_dir(tmp / "policy", seed=0),
        "train": write_jsonl(tmp / "train.jsonl", reversal_pairs(16, seed=1)),
        "test": write_jsonl(tmp / "test.jsonl", reversal_pairs(8, seed=2)),
    }


@pytest.fixture(scope="module")
def sft_paths(tmp_path_factory):
    return sft_setup(tmp_path_factory.mktemp("sft-data"), n_train=16, n_test=4)


def dpo(out, paths, *more) -> list[str]:
    return ["dpo", "--out", str(out), *more, *dpo_overrides(paths)]


def sft(out, paths, *more, **train) -> list[str]:
    return ["sft", "--out", str(out), *more, *sft_overrides(paths, **train)]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """RUN/adapter of a LoRA model over a tiny base (B = 0: the merge is the base, a valid merge)."""
    from transformers import AutoModelForCausalLM

    from tether import lora
    from tether.config import LoRAConfig

    tmp = tmp_path_factory.mktemp("lora")
    base = write_model_dir(tmp / "base")
    model = AutoModelForCausalLM.from_pretrained(base)
    model = lora.add_adapters(model, LoRAConfig(r=2, alpha=4), "causal", base)
    run = tmp / "run"
    run.mkdir()
    from plumbing_helpers import tiny_tokenizer

    lora.save_lora_final(model, tiny_tokenizer(), run)
    return run / "adapter"


@pytest.fixture
def fake_lab(tmp_path):
    """A directory `open_lab` accepts (its card): enough for `tether run` to reach its stages."""
    from tether.lab.build import WORLD_VERSION

    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "card.json").write_text(json.dumps({"world": WORLD_VERSION}))
    return lab


# ------------------------------------------------------------------------------------------------ merge


def test_merge_refuses_a_directory_holding_a_users_file(adapter, tmp_path, capsys):
    """Issue 21.2: `tether merge ADAPTER --out DIR` deleted an existing DIR and everything in it."""
    out = users_dir(tmp_path / "mine")
    refused_untouched(capsys, ["merge", adapter, "--out", out], FOREIGN + " merge", out)


def test_merge_out_through_dotdot_refuses_the_directory_it_names(adapter, tmp_path, capsys):
    """Issue 21.2: `--out a/b/..` removed everything inside `a`. It names `a`, which is the user's."""
    a = users_dir(tmp_path / "a", **{"keep.txt": "precious\n"})
    (a / "b").mkdir()
    line = refused_untouched(capsys, ["merge", adapter, "--out", a / "b" / ".."], FOREIGN, a)
    assert str(a.resolve()) in line  # the message says which directory `a/b/..` is


def test_merge_refuses_a_training_run(adapter, tmp_path, capsys):
    run = made_by("sft", tmp_path / "run")
    refused_untouched(capsys, ["merge", adapter, "--out", run], r"holds the output of tether sft", run)


def test_merge_again_replaces_only_what_the_first_merge_wrote(adapter, tmp_path, capsys):
    """Merging into its own earlier output is allowed; a note the user added there survives, and the model
    files are the new merge's (the first merge's are gone, not left beside them)."""
    out = tmp_path / "merged"
    assert run_tether(["merge", str(adapter), "--out", str(out)], capsys)[0] == 0
    first = set(os.listdir(out))
    (out / "notes.md").write_text("my notes\n")
    (out / "model.safetensors").write_bytes(b"stale")  # what the second merge must replace
    assert run_tether(["merge", str(adapter), "--out", str(out)], capsys)[0] == 0
    assert (out / "notes.md").read_text() == "my notes\n"
    assert set(os.listdir(out)) == first | {"notes.md"}
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # the stale weights were replaced


# ------------------------------------------------------------------------------------------------ run


def test_run_resume_keeps_a_users_folder_named_like_a_stage(fake_lab, tmp_path, capsys):
    """Issue 21.3: `mkdir -p d/sft; echo notes > d/sft/notes.md; tether run --out d --resume` lost notes.md
    (the stage folder was rmtree'd as one that "stopped before its first checkpoint")."""
    d = tmp_path / "d"
    users_dir(d / "sft")
    refused_untouched(capsys, ["run", "--out", d, "--resume", "--lab", fake_lab, "--no-progress"],
                      FOREIGN + " run", d)


def test_run_resume_refuses_a_stage_folder_it_did_not_write(fake_lab, tmp_path, capsys):
    """Inside tether's own run directory, a stage-named folder of the user's is still not deleted."""
    d = made_by("run", tmp_path / "d")
    users_dir(d / "sft")
    refused(capsys, ["run", "--out", str(d), "--resume", "--lab", str(fake_lab), "--no-progress"],
            FOREIGN + " sft", keep=[d])
    assert (d / "sft" / "notes.md").read_text() == "my notes\n"


def test_run_refuses_a_users_directory(fake_lab, tmp_path, capsys):
    d = users_dir(tmp_path / "d")
    refused_untouched(capsys, ["run", "--out", d, "--lab", fake_lab, "--no-progress"], FOREIGN + " run", d)


def test_run_that_failed_at_start_is_started_again_in_place(fake_lab, tmp_path, capsys, monkeypatch):
    """A `tether run` directory holding only its start-up file (config.yaml) is not "a run" yet: a fresh
    `tether run --out` takes it (before: "already holds a run")."""
    sentinel(monkeypatch, "tether.pipeline.shared_stages")
    d = tmp_path / "d"
    argv = ["run", "--out", str(d), "--lab", str(fake_lab), "--no-progress"]
    refused(capsys, argv, SENTINEL)  # the first start dies after config.yaml
    assert (d / "config.yaml").is_file()
    refused(capsys, argv, SENTINEL)  # and a fresh start goes past the directory again


# ------------------------------------------------------------------------------------------------ eval


def eval_argv(out, sft_paths, tmp_path) -> list[str]:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a b"}])
    model = str(sft_paths["model"])
    return ["eval", "--policy", model, "--base", model, "--prompts", str(prompts), "--out", str(out)]


def test_eval_refuses_a_summary_it_did_not_write(sft_paths, tmp_path, capsys):
    """Issue 21.3: `tether eval --out DIR` overwrote an existing summary."""
    out = users_dir(tmp_path / "results", **{"summary.json": '{"mine": 1}\n'})
    refused_untouched(capsys, eval_argv(out, sft_paths, tmp_path), FOREIGN + " eval", out)


def test_eval_refuses_a_training_run(sft_paths, tmp_path, capsys):
    run = made_by("dpo", tmp_path / "run")
    refused_untouched(capsys, eval_argv(run, sft_paths, tmp_path), r"holds the output of tether dpo", run)


def test_eval_writes_again_into_its_own_output(sft_paths, tmp_path, capsys, monkeypatch):
    out = made_by("eval", tmp_path / "eval")
    sentinel(monkeypatch, "tether.instruments.eval_dirs._load")
    refused(capsys, eval_argv(out, sft_paths, tmp_path), SENTINEL)


# ------------------------------------------------------------------------------------------------ stages


def test_dpo_resume_refuses_a_users_directory(dpo_paths, tmp_path, capsys):
    """Issue 21.3: `tether dpo --out userdir --resume` wrote into a user directory (config.yaml, then
    "nothing to resume")."""
    d = users_dir(tmp_path / "userdir")
    refused_untouched(capsys, dpo(d, dpo_paths, "--resume"), FOREIGN + " dpo", d)


def test_dpo_refuses_a_users_directory(dpo_paths, tmp_path, capsys):
    d = users_dir(tmp_path / "userdir")
    refused_untouched(capsys, dpo(d, dpo_paths), FOREIGN + " dpo", d)


def test_dpo_resume_refuses_another_stages_run(dpo_paths, tmp_path, capsys):
    run = made_by("sft", tmp_path / "run")
    refused_untouched(capsys, dpo(run, dpo_paths, "--resume"), r"holds the output of tether sft", run)


def test_out_that_is_a_file_is_refused(dpo_paths, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("not a directory\n")
    refused(capsys, dpo(f, dpo_paths), r"is a file, not a directory", keep=[f])


def test_out_below_a_file_is_one_line(dpo_paths, tmp_path, capsys):
    """`--out FILE/run`: the directory cannot be made; one line, not a traceback from deep in the loop."""
    f = tmp_path / "file"
    f.write_text("not a directory\n")
    refused(capsys, dpo(f / "run", dpo_paths), r"cannot write to .*file/run: Not a directory", keep=[f])


def test_resume_of_a_missing_directory_is_refused(dpo_paths, tmp_path, capsys):
    refused(capsys, dpo(tmp_path / "nothing", dpo_paths, "--resume"), r"cannot resume: .* does not exist")
    assert not (tmp_path / "nothing").exists()


def test_failed_start_on_bad_data_leaves_nothing(dpo_paths, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    out = tmp_path / "new" / "run"
    refused(capsys, [*dpo(out, dpo_paths), f"data.train={bad}"], r"bad\.jsonl:1")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------------ the lock


def holder(out: Path, kind: str) -> subprocess.Popen:
    """Another process that holds tether's claim on `out` (as a running `tether KIND --out OUT` would)
    until its stdin closes."""
    code = ("import sys; from tether.rundir import claim\n"
            f"with claim({str(out)!r}, {kind!r}):\n    print('held', flush=True); sys.stdin.read()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_dpo_on_the_same_directory_is_refused(dpo_paths, tmp_path, capsys):
    """Issue 21.4: two `tether dpo --out same/dir` at once both ran. The first holds the lock; the second is
    refused, naming the first's pid, and the first's files stay as they are."""
    out = tmp_path / "same"
    first = holder(out, "dpo")
    try:
        line = refused(capsys, dpo(out, dpo_paths), rf"in use .*pid {first.pid}\b", keep=[out])
        assert "tether dpo" in line
    finally:
        first.stdin.close()
        first.wait(timeout=30)
    assert not (out / LOCK).exists()  # the first released it on exit


def write_lock(d: Path, pid: int, host: str | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "kind": "dpo", "since": "2025-01-01T00:00:00"}
    (d / LOCK).write_text(json.dumps(record))


def test_a_lock_file_of_a_live_process_refuses(dpo_paths, tmp_path, capsys):
    """A lock file naming a process that runs (here a child that sleeps) is respected even where the
    file system's own lock did not reach (e.g. a copy of the file, another mount)."""
    out = tmp_path / "run"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(out, alive.pid)
        refused(capsys, dpo(out, dpo_paths), rf"in use .*pid {alive.pid}\b", keep=[out])
    finally:
        alive.kill()
        alive.wait()


def test_a_stale_lock_is_taken_over_and_said_so(dpo_paths, tmp_path, capsys, caplog, monkeypatch):
    """A lock left by a process that is gone (killed: it could not remove its file) is reported in one line
    and taken over: nothing else can hold it, since its pid is not running on this host."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    write_lock(out, dead.pid)
    sentinel(monkeypatch, "tether.trainers.dpo.load_tokenizer")
    with caplog.at_level("WARNING"):
        refused(capsys, dpo(out, dpo_paths), SENTINEL)
    stale = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(stale) == 1 and f"pid {dead.pid}" in stale[0] and "\n" not in stale[0]
    assert not (out / LOCK).exists()


def test_a_lock_from_another_host_is_not_taken_over(dpo_paths, tmp_path, capsys):
    """This machine cannot tell whether a process on another host still runs: refused, and the line says
    which file to delete once that run is known to be over."""
    out = tmp_path / "run"
    write_lock(out, 12345, host="elsewhere.example")
    refused(capsys, dpo(out, dpo_paths), rf"elsewhere\.example.*delete .*{LOCK}", keep=[out])


# -------------------------------------------------------------------------------------------- failed starts


def test_a_start_that_died_before_its_first_checkpoint_is_accepted_both_ways(sft_paths, tmp_path, capsys,
                                                                              monkeypatch):
    """Issue 21.8: a start that failed after config.yaml and a few metric rows, before its first checkpoint,
    left a directory refused by a fresh run ("already holds a run") and by --resume ("nothing to resume").
    Now both start it again in place: the metrics are those of a clean run (the dead start's rows gone)."""
    from tether.trainers.base import Loop

    def die(self, extra=None):
        raise TetherError("no space left on device")

    clean = tmp_path / "clean"
    assert run_tether(sft(clean, sft_paths, max_steps=4, save_every=2), capsys)[0] == 0
    rows = (clean / "metrics.jsonl").read_text().count("\n")
    for mode in ([], ["--resume"]):
        out = tmp_path / f"died{len(mode)}"
        monkeypatch.setattr(Loop, "save", die)
        refused(capsys, sft(out, sft_paths, max_steps=4, save_every=2), "no space left")
        monkeypatch.undo()
        assert (out / "config.yaml").is_file() and (out / "metrics.jsonl").is_file()
        (out / "notes.md").write_text("mine\n")
        assert run_tether(sft(out, sft_paths, *mode, max_steps=4, save_every=2), capsys)[0] == 0
        assert (out / "metrics.jsonl").read_text().count("\n") == rows
        assert (out / "notes.md").read_text() == "mine\n"


def test_resume_of_a_finished_run_without_checkpoints_is_refused(sft_paths, tmp_path, capsys):
    """save_every=0: a finished run has no checkpoint; --resume has nothing to continue and a fresh run
    would overwrite its results: both refused, nothing changed."""
    out = tmp_path / "run"
    assert run_tether(sft(out, sft_paths, max_steps=2, save_every=0), capsys)[0] == 0
    refused(capsys, sft(out, sft_paths, "--resume", max_steps=2, save_every=0), "nothing to resume",
            keep=[out])
    refused(capsys, sft(out, sft_paths, max_steps=2, save_every=0), "already holds a run", keep=[out])


def test_a_run_made_before_markers_still_resumes(sft_paths, tmp_path, capsys):
    """A run directory from before run markers (config.yaml with tether's provenance and the stage's keys,
    metrics, checkpoints) resumes, also one whose config.yaml lacks a key added since (here `lora`); no marker
    is added to it."""
    import shutil

    import yaml

    out = tmp_path / "old"
    assert run_tether(sft(out, sft_paths, max_steps=4, save_every=2), capsys)[0] == 0
    (out / MARKER).unlink()
    doc = yaml.safe_load((out / "config.yaml").read_text())
    del doc["lora"]
    (out / "config.yaml").write_text(yaml.safe_dump(doc))
    shutil.rmtree(out / "checkpoints" / "step-4")
    shutil.rmtree(out / "model")
    (out / "summary.json").unlink()
    assert run_tether(sft(out, sft_paths, "--resume", max_steps=4, save_every=2), capsys)[0] == 0
    assert (out / "summary.json").is_file() and not (out / MARKER).exists()


def test_a_run_made_before_markers_is_not_taken_for_another_stage(sft_paths, dpo_paths, tmp_path, capsys):
    """An SFT config's keys are all reward-model keys too (RM = SFT + center_coef): the stage whose config
    fits most closely owns the directory, so `tether rm --resume` refuses an old SFT run (and DPO too)."""
    out = tmp_path / "old"
    assert run_tether(sft(out, sft_paths, max_steps=2, save_every=2), capsys)[0] == 0
    (out / MARKER).unlink()
    rm = ["rm", "--out", out, "--resume", f"model={sft_paths['model']}", f"data.train={dpo_paths['train']}"]
    refused_untouched(capsys, rm, FOREIGN + " rm", out)
    refused_untouched(capsys, dpo(out, dpo_paths, "--resume"), FOREIGN + " dpo", out)


# -------------------------------------------------------------------------------------------- other writers


def test_data_import_refuses_a_users_directory(tmp_path, capsys):
    """Also the directory the input file is in: its train.jsonl is the user's."""
    record = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: no"}
    raw = users_dir(tmp_path / "raw", **{"train.jsonl": json.dumps(record) + "\n"})
    argv = ["data", "import", "hh-rlhf", raw / "train.jsonl", "--out", raw]
    refused_untouched(capsys, argv, FOREIGN + " data import", raw)


def test_lab_build_refuses_a_users_directory(tmp_path, capsys):
    d = users_dir(tmp_path / "lab", **{"card.json": "{}\n"})
    argv = ["lab", "build", "--out", d, "--quiet", "sft_train=8", "sft_test=2", "prefs_train=8",
            "prefs_test=2", "prompts_train=4", "prompts_test=2", "pretrain_steps=1", "hidden_size=16"]
    refused_untouched(capsys, argv, FOREIGN + " lab build", d)


def test_lab_compare_refuses_a_users_directory(fake_lab, sft_paths, tmp_path, capsys):
    d = users_dir(tmp_path / "pairs", **{"summary.json": "{}\n"})
    argv = ["lab", "compare", "--lab", fake_lab, "--policy", sft_paths["model"], "--out", d, "--prompts", "2"]
    refused_untouched(capsys, argv, FOREIGN + " lab compare", d)


def test_cai_label_refuses_a_users_directory(dpo_paths, tmp_path, capsys):
    d = users_dir(tmp_path / "labels", **{"summary.json": "{}\n"})
    argv = ["cai", "label", "--judge", "lab", "--pairs", dpo_paths["test"], "--out", d]
    refused_untouched(capsys, argv, FOREIGN + " cai label", d)


def test_cai_revise_refuses_a_users_directory(sft_paths, tmp_path, capsys):
    d = users_dir(tmp_path / "revised", **{"sft.jsonl": "{}\n"})
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a b"}])
    argv = ["cai", "revise", "--critic", "lab", "--prompts", prompts, "--policy", sft_paths["model"],
            "--out", d]
    refused_untouched(capsys, argv, FOREIGN + " cai revise", d)


def test_sweep_refuses_a_users_directory(fake_lab, tmp_path, capsys):
    d = users_dir(tmp_path / "sweep")
    argv = ["sweep", "--betas", "0.1", "--out", d, "--lab", fake_lab, "--no-progress"]
    refused_untouched(capsys, argv, FOREIGN + " sweep", d)


def test_sweep_refuses_a_run_directory(fake_lab, tmp_path, capsys):
    d = made_by("run", tmp_path / "run")
    argv = ["sweep", "--betas", "0.1", "--out", d, "--lab", fake_lab, "--no-progress"]
    refused_untouched(capsys, argv, r"holds the output of tether run", d)


# ------------------------------------------------------------------------------------------------ the module


def test_claim_releases_its_lock_and_leaves_nothing_when_the_work_fails_at_once(tmp_path):
    """A claim that created the directory and whose work failed before writing anything removes the
    directory again (a failed start leaves nothing); one whose work wrote a file keeps it, lock released."""
    from tether import rundir

    out = tmp_path / "a" / "run"
    with pytest.raises(TetherError, match="boom"), rundir.claim(out, "dpo"):
        assert json.loads((out / MARKER).read_text())["kind"] == "dpo"
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
        raise TetherError("boom")
    assert not out.exists()
    with pytest.raises(TetherError, match="boom"), rundir.claim(out, "dpo"):
        (out / "config.yaml").write_text("x: 1\n")
        raise TetherError("boom")
    assert sorted(os.listdir(out)) == [MARKER, "config.yaml"]


def test_a_claim_being_made_is_not_a_foreign_directory(tmp_path):
    """With several processes the others check the directory while the main one marks it: its lock file and
    the marker's temporary file (written, then renamed) are the claim's own, not a user's files."""
    from tether import rundir

    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("")
    (out / f".{MARKER}.tmp").write_text("{")
    assert rundir.check(out, "dpo") is True
    (out / "notes.md").write_text("mine\n")
    with pytest.raises(TetherError, match=FOREIGN):
        rundir.check(out, "dpo")
